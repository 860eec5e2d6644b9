//! HTTP request metrics: one axum middleware around the whole router, labelled by route
//! template (`/apis/v2beta1/runs/:tail`, never the raw path, so labels stay few). The template
//! is only known after routing, so [`remember_route`] (a route layer) copies axum's
//! `MatchedPath` into the response for [`track`] to read; a request no route matched is labelled
//! `unmatched`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;

use super::{HttpLabels, HttpRoute, Metrics};

/// The route template a response answered, carried from the route layer to [`track`].
#[derive(Clone)]
struct Route(String);

/// Route layer: records which template matched.
pub async fn remember_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| colon_params(p.as_str()));
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// `/runs/{tail}` as `/runs/:tail`: braces inside label values are valid exposition, but
/// common scrapers and parsers (prometheus-parse among them) cut the label set at the first `}`.
fn colon_params(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// Outer middleware: counts every request (404s included), its latency and in-flight calls.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    // gRPC calls on the gRPC port reach this router only when no gRPC service knows their path;
    // they are the gRPC layer's to count.
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return next.run(request).await;
    }
    // Extension methods are one series, not one per name a client makes up.
    let method = match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => request.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let started = Instant::now();
    let in_flight = InFlight::enter(&metrics.http_in_flight);
    let response = next.run(request).await;
    drop(in_flight);
    let route = response
        .extensions()
        .get::<Route>()
        .map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    metrics
        .http_duration
        .get_or_create(&HttpRoute {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// `router` with every request counted.
pub fn instrument(router: axum::Router, metrics: Arc<Metrics>) -> axum::Router {
    router
        .route_layer(axum::middleware::from_fn(remember_route))
        .layer(axum::middleware::from_fn_with_state(metrics, track))
}

/// Counts a request in flight until dropped: also when the client goes away mid-request and
/// the handler is cancelled.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
