//! Wiring: build the core on an open store, register the gRPC services (runs, experiments,
//! health, reflection v1 and v1alpha), serve on already-bound listeners, and shut everything down
//! on one signal.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::api::experiment_service_server::ExperimentServiceServer;
use crate::api::run_service_server::RunServiceServer;
use crate::error::{Error, Result};
use crate::grpc::{GrpcApi, RunRoutes};
use crate::service::Ledger;

/// The descriptor set of every served proto file (with source comments and the google.api.http
/// options), as reflection serves it and `runledger descriptor` prints it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runledger_descriptor.bin"));

/// Transport settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// tonic reports an over-limit request as OUT_OF_RANGE; gRPC's convention (grpc-go, grpc-core)
/// and our contract is RESOURCE_EXHAUSTED.
fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("message length too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Accepted connections with TCP_NODELAY: tonic sets it only on listeners it binds itself, and
/// without it a multi-segment message waits for the peer's delayed ACK (~40 ms per call).
fn without_nagle(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Serves gRPC on `grpc` until `shutdown` completes, then ends watch streams, lets in-flight
/// calls finish and flushes the store.
pub async fn run(
    ledger: Arc<Ledger>,
    grpc: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let api = GrpcApi::new(ledger.clone());
    let limit = options.max_message_bytes;
    let runs = RunServiceServer::new(api.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let runs = RunRoutes::new(ledger.clone(), runs, limit);
    let experiments = ExperimentServiceServer::new(api)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RunServiceServer<GrpcApi>>().await;
    health
        .set_serving::<ExperimentServiceServer<GrpcApi>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::internal)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(Error::internal)?;

    // Watch streams never end by themselves: end them first, or graceful shutdown would wait
    // for them forever.
    let closing_ledger = ledger.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight calls");
        closing_ledger.close_watches();
    };

    Server::builder()
        .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted,
        ))
        .add_service(runs)
        .add_service(experiments)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(without_nagle(grpc), signal)
        .await
        .map_err(|e| Error::internal(format!("gRPC server failed: {e}")))?;

    ledger.store().close()?;
    tracing::info!("store flushed; bye");
    Ok(())
}
