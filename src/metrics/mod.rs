//! Prometheus metrics: the one registry and every metric, served as `GET /metrics` (OpenMetrics
//! text, which Prometheus scrapes as is). Adapters never touch a metric: the HTTP router is
//! wrapped by [`http::track`] (axum middleware), the gRPC server by [`grpc::GrpcMetricsLayer`]
//! (a tower layer), and gauges that describe the store (runs by state per namespace, open
//! watchers) are computed at scrape time from the store's counters, without scans.

pub mod grpc;
pub mod http;

pub use grpc::GrpcMetricsLayer;
pub use http::instrument;

use std::sync::Arc;

use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::RuntimeState;
use crate::api::run::StorageState;
use crate::query::Scope;
use crate::service::Services;
use crate::store::StoreObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethod {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRoute {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    pub state: String,
    pub storage_state: String,
}

fn latency() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// Every metric of the process, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub(crate) grpc_requests: Family<GrpcLabels, Counter>,
    pub(crate) grpc_duration: Family<GrpcMethod, Histogram, fn() -> Histogram>,
    pub(crate) grpc_in_flight: Family<GrpcMethod, Gauge>,
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    pub(crate) http_duration: Family<HttpRoute, Histogram, fn() -> Histogram>,
    pub(crate) http_in_flight: Gauge,
    runs: Family<RunLabels, Gauge>,
    watchers: Gauge,
    events_dropped: Counter,
    commit_batch: Histogram,
    flush_duration: Histogram,
    store_bytes: Gauge,
    /// One scrape at a time: the store gauges are cleared and refilled before encoding.
    scrape: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("runledger");
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls finished, by full method and status code",
            grpc_requests.clone(),
        );
        let grpc_duration: Family<GrpcMethod, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency (streaming calls: until the stream ends), by full method",
            grpc_duration.clone(),
        );
        let grpc_in_flight = Family::<GrpcMethod, Gauge>::default();
        registry.register(
            "grpc_requests_in_flight",
            "gRPC calls in progress (open streams included), by full method",
            grpc_in_flight.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration: Family<HttpRoute, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "HTTP latency until the response head, by route template and method",
            http_duration.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests in progress",
            http_in_flight.clone(),
        );
        let runs = Family::<RunLabels, Gauge>::default();
        registry.register(
            "runs",
            "Runs stored, by namespace, runtime state and storage state (from the store's counters)",
            runs.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "watchers_open",
            "Open run watches (gRPC WatchRuns and HTTP runs:watch)",
            watchers.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "watch_events_dropped",
            "Changes a lagging watcher missed when it was ended (it must list again)",
            events_dropped.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_commit_batch_writes",
            "Writes made durable by one group-commit flush",
            commit_batch.clone(),
        );
        let flush_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_flush_duration_seconds",
            "Latency of one group-commit flush (fsync) to disk",
            flush_duration.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_size_bytes",
            "Bytes the store takes on disk (read at scrape time)",
            store_bytes.clone(),
        );
        Arc::new(Metrics {
            registry,
            events_dropped,
            commit_batch,
            flush_duration,
            store_bytes,
            grpc_requests,
            grpc_duration,
            grpc_in_flight,
            http_requests,
            http_duration,
            http_in_flight,
            runs,
            watchers,
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// The text exposition, with the store gauges read now.
    pub async fn render(&self, services: &Services) -> crate::error::Result<String> {
        let _one = self.scrape.lock().await;
        let store = services.store();
        if let Some(bytes) = store.size_on_disk().await? {
            self.store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let namespaces = store.namespaces().await?;
        self.runs.clear();
        for namespace in namespaces {
            let tally = store
                .run_tally(&Scope::Namespace(namespace.clone()))
                .await?;
            for group in tally.groups {
                let state = group
                    .state
                    .and_then(|s| RuntimeState::try_from(s).ok())
                    .map_or("UNKNOWN", |s| s.as_str_name());
                let storage = StorageState::try_from(group.storage_state)
                    .map_or("UNKNOWN", |s| s.as_str_name());
                self.runs
                    .get_or_create(&RunLabels {
                        namespace: namespace.clone(),
                        state: state.to_owned(),
                        storage_state: storage.to_owned(),
                    })
                    .inc_by(group.count as i64);
            }
        }
        self.watchers.set(services.watcher_count() as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(crate::error::Error::internal)?;
        Ok(text)
    }
}

impl StoreObserver for Metrics {
    fn flushed(&self, writes: u64, seconds: f64) {
        self.commit_batch.observe(writes as f64);
        self.flush_duration.observe(seconds);
    }

    fn watcher_lagged(&self, changes: u64) {
        self.events_dropped.inc_by(changes);
    }
}

/// `GET /metrics`, to merge into the HTTP router.
pub fn router(metrics: Arc<Metrics>, services: Arc<Services>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |parts: ::http::request::Parts| async move {
            // With auth on, only a caller who may read every namespace sees their counts.
            let allowed = crate::http::context_of(&parts.extensions, &services).and_then(|ctx| {
                services
                    .allow_metrics(&ctx)
                    .map_err(crate::error::http::ApiError::from)
            });
            if let Err(e) = allowed {
                return e.into_response();
            }
            match metrics.render(&services).await {
                Ok(text) => (
                    [(
                        ::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response(),
                Err(e) => crate::error::http::ApiError::from(e).into_response(),
            }
        }),
    )
}
