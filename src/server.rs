//! Wiring: serve the core's services: register the gRPC services (runs, experiments, pipelines,
//! recurring runs, health, reflection v1 and v1alpha) and the HTTP router, start the scheduler,
//! serve them on already-bound listeners, and shut everything down on one signal.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::api::experiment_service_server::ExperimentServiceServer;
use crate::api::pipeline_service_server::PipelineServiceServer;
use crate::api::recurring_run_service_server::RecurringRunServiceServer;
use crate::api::run_service_server::RunServiceServer;
use crate::error::{Error, Result};
use crate::grpc::{GrpcApi, RunRoutes};
use crate::service::Services;
use crate::transport::Listener;

/// The descriptor set of every served proto file (with source comments and the google.api.http
/// options), as reflection serves it and `runledger descriptor` prints it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runledger_descriptor.bin"));

/// Transport settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Largest HTTP request body accepted, in bytes (larger: 413).
    pub max_http_body_bytes: usize,
    /// Authentication (`--auth-config`); None: off, every caller is anonymous and allowed.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Connection and request limits, timeouts and load shedding ([`crate::transport::limits`]).
    pub limits: crate::transport::Limits,
    /// TLS on both ports (`--tls-cert`, `--tls-key`, `--tls-client-ca`); None: plaintext.
    pub tls: Option<Arc<crate::transport::tls::Tls>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message_bytes: 16 * 1024 * 1024,
            max_http_body_bytes: 16 * 1024 * 1024,
            auth: None,
            limits: crate::transport::Limits::default(),
            tls: None,
        }
    }
}

/// The already-bound sockets the server answers on (with TLS when `ServerOptions::tls` is set).
pub struct Listeners {
    /// gRPC (HTTP/2).
    pub grpc: TcpListener,
    /// The JSON/HTTP API (HTTP/1.1 and HTTP/2).
    pub http: TcpListener,
}

/// How often the store's health is checked for gRPC health.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A health check that takes longer than this counts as failed.
const HEALTH_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Keeps gRPC health in step with the store until the server stops:
/// - while the store cannot serve at all (its database is unreachable), the server as a whole
///   (`""`) and every API service are NOT_SERVING;
/// - while it serves reads but refuses writes (a full disk), the services that write
///   (`write_services`) are NOT_SERVING and `""` stays SERVING: reads are answered, and
///   restarting the process (what a liveness probe would do) frees no space;
/// - SERVING again, by itself, once the store recovers.
///
/// Sets the statuses of now before it returns (so the first health check finds them) and
/// follows changes in a task of its own.
async fn report_store_health(
    services: Arc<Services>,
    health: tonic_health::server::HealthReporter,
    write_services: Vec<&'static str>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use crate::store::Writable;
    use tonic_health::ServingStatus;
    let report = move |reachable: bool, can_write: bool| {
        let (health, write_services) = (health.clone(), write_services.clone());
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        async move {
            health.set_service_status("", status(reachable)).await;
            for name in write_services {
                health
                    .set_service_status(name, status(reachable && can_write))
                    .await;
            }
        }
    };
    let mut writable = Some(services.store().writable());
    let mut can_write = writable
        .as_mut()
        .is_some_and(|w| matches!(*w.borrow_and_update(), Writable::Yes));
    let mut reachable = true;
    report(reachable, can_write).await;
    tokio::spawn(async move {
        loop {
            let before = (reachable, can_write);
            tokio::select! {
                () = tokio::time::sleep(HEALTH_EVERY) => {
                    let checked =
                        tokio::time::timeout(HEALTH_LIMIT, services.store().check_health()).await;
                    reachable = matches!(checked, Ok(Ok(())));
                    if reachable != before.0 {
                        match checked {
                            Ok(Ok(())) => tracing::info!("the store serves again: health SERVING"),
                            Ok(Err(e)) => tracing::warn!(
                                error = %e,
                                "the store cannot serve: health NOT_SERVING"
                            ),
                            Err(_) => tracing::warn!(
                                "the store's health check took over {} s: health NOT_SERVING",
                                HEALTH_LIMIT.as_secs()
                            ),
                        }
                    }
                }
                changed = async {
                    match writable.as_mut() {
                        Some(w) => w.changed().await.map(|()| w),
                        None => std::future::pending().await,
                    }
                } => match changed {
                    Ok(w) => can_write = matches!(*w.borrow_and_update(), Writable::Yes),
                    // The store let go of its sender: it stays as last seen.
                    Err(_) => writable = None,
                },
                () = async {
                    let _ = stopping.wait_for(|stop| *stop).await;
                } => return,
            }
            if (reachable, can_write) != before {
                report(reachable, can_write).await;
            }
        }
    });
}

/// Serves gRPC and HTTP until `shutdown` completes, then ends watch streams, lets in-flight calls
/// finish on both and flushes the store. If either server fails, the other is stopped too.
pub async fn run(
    services: Arc<Services>,
    listeners: Listeners,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if options.auth.is_some() {
        services.require_principals();
    }
    // Identifies every request on both ports (one layer, applied to each server once).
    let identify = crate::auth::IdentifyLayer::new(options.auth.clone());
    // Both ports share the request slots; each bounds its own connections.
    let limiter = crate::transport::limits::Limiter::new(options.limits.clone());
    let (grpc_port, http_port) = (limiter.port(), limiter.port());
    let api = GrpcApi::new(services.clone());
    let limit = options.max_message_bytes;
    let runs = RunServiceServer::new(api.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let runs = RunRoutes::new(services.clone(), runs, limit);
    let experiments = ExperimentServiceServer::new(api.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let pipelines = PipelineServiceServer::new(api.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let recurring_runs = RecurringRunServiceServer::new(api)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let admin = crate::admin_api::admin_server::AdminServer::new(crate::admin::AdminApi::new(
        services.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    let write_services = [
        <RunServiceServer<GrpcApi> as tonic::server::NamedService>::NAME,
        <ExperimentServiceServer<GrpcApi> as tonic::server::NamedService>::NAME,
        <PipelineServiceServer<GrpcApi> as tonic::server::NamedService>::NAME,
        <RecurringRunServiceServer<GrpcApi> as tonic::server::NamedService>::NAME,
    ];

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::internal)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(Error::internal)?;

    let scheduler = crate::scheduler::spawn(services.clone());

    // One signal for both servers: set when `shutdown` completes or when either server fails.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let trigger = stop.clone();
    // Watch streams never end by themselves: end them first, or graceful shutdown would wait
    // for them forever.
    let closing = services.clone();
    let mut failed = stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down: finishing in-flight calls"),
            _ = failed.wait_for(|stop| *stop) => {}
        }
        closing.close_watches();
        trigger.send_replace(true);
    });
    let signal = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    report_store_health(
        services.clone(),
        health.clone(),
        write_services.to_vec(),
        stopping.clone(),
    )
    .await;

    let metrics = crate::metrics::Metrics::new();
    metrics.observe_transport(
        limiter.clone(),
        vec![
            ("grpc", grpc_port.connections().clone()),
            ("http", http_port.connections().clone()),
        ],
    );
    if !services.store().observe(metrics.clone()) {
        tracing::debug!("the store reports no commit or watcher events to the metrics");
    }
    let http_router = crate::metrics::instrument(
        crate::http::router(services.clone(), options.max_http_body_bytes)
            .merge(crate::metrics::router(metrics.clone(), services.clone())),
        metrics.clone(),
    );
    // The JSON API is served on the gRPC port too (one port is enough behind a load balancer);
    // tonic routes gRPC paths to its services and everything else to the JSON router.
    let json_on_grpc_port = tonic::service::Routes::from(http_router.clone());
    let http_router = http_router.layer(identify.clone()).layer(http_port.layer());
    let http = async {
        let result = axum::serve(
            http_port.bound(Listener::new(listeners.http, options.tls.clone())),
            http_router.into_make_service_with_connect_info::<crate::transport::Peer>(),
        )
        .with_graceful_shutdown(signal(stopping.clone()))
        .await
        .map_err(|e| Error::internal(format!("HTTP server failed: {e}")));
        if result.is_err() {
            stop.send_replace(true);
        }
        result
    };

    let grpc = async {
        let result = Server::builder()
            // HTTP/1.1 for JSON clients; gRPC still negotiates HTTP/2.
            .accept_http1(true)
            .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
            // Outermost, so it sees the status codes as finally sent.
            .layer(crate::metrics::GrpcMetricsLayer::new(metrics.clone()))
            .layer(grpc_port.layer())
            .layer(tower::util::MapResponseLayer::new(
                crate::error::grpc::fix_bad_request_codes,
            ))
            .layer(identify)
            .add_routes(json_on_grpc_port)
            .add_service(runs)
            .add_service(experiments)
            .add_service(pipelines)
            .add_service(recurring_runs)
            .add_service(admin)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(
                grpc_port
                    .bound(Listener::new(listeners.grpc, options.tls.clone()))
                    .into_incoming(),
                signal(stopping.clone()),
            )
            .await
            .map_err(|e| Error::internal(format!("gRPC server failed: {e}")));
        if result.is_err() {
            stop.send_replace(true);
        }
        result
    };
    let (grpc_result, http_result) = tokio::join!(grpc, http);
    drop(stop);
    // Stopped by the same signal as the watches; its last write ends before the store closes.
    let _ = scheduler.await;
    // Flush what was acknowledged even when a server failed.
    let closed = services.store().close().await;
    grpc_result?;
    http_result?;
    closed?;
    tracing::info!("store flushed; bye");
    Ok(())
}
