//! CreateRun throughput, durable vs buffered, side by side: a real gRPC server (in this process,
//! on 127.0.0.1:0, fresh temp data dir per mode) and CLIENTS concurrent tonic clients creating
//! runs for SECONDS in each mode.
//!
//!     cargo run --release --example durability_throughput -- [CLIENTS] [SECONDS]
//!
//! Defaults: 64 clients, 10 seconds per mode. Prints one line per mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use runledger::server::{self, ServerOptions};
use runledger::service::{Ledger, Limits};
use runledger::store::{Durability, Store, StoreOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (name, durability) in [
        ("durable", Durability::Durable),
        (
            "buffered (flush every 500 ms)",
            Durability::Buffered {
                flush_every_ms: 500,
            },
        ),
    ] {
        let (done, errors, p50, p99) =
            runtime.block_on(measure(durability, clients, Duration::from_secs(seconds)));
        println!(
            "{name:>30}: {done:>7} CreateRun in {seconds} s = {:>7.0}/s, p50 {p50:?}, p99 {p99:?}, \
             {errors} errors ({clients} clients)",
            done as f64 / seconds as f64
        );
    }
}

async fn measure(
    durability: Durability,
    clients: usize,
    length: Duration,
) -> (u64, u64, Duration, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability,
            ..Default::default()
        },
    )
    .expect("open store");
    let ledger = Arc::new(Ledger::new(store, Limits::default()).expect("ledger"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = tokio::spawn(server::run(
        ledger,
        server::Listeners {
            grpc: listener,
            http,
        },
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = url.clone();
        let (done, errors) = (done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = RunServiceClient::connect(url).await.expect("connect");
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = client
                    .create_run(CreateRunRequest {
                        run: Some(Run {
                            display_name: format!("bench {c}"),
                            pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
                latencies.push(started.elapsed());
                match result {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let _ = stop.send(());
    let _ = server.await;
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        at(0.5),
        at(0.99),
    )
}
