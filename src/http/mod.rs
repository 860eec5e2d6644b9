//! The JSON/HTTP adapter: KFP's v2beta1 REST routes over the same [`Services`] as the gRPC
//! adapter. Handlers only assemble the request message, call the core and write the reply;
//! no business rule lives here.
//!
//! Routes with a custom verb (`/runs/{run_id}:archive`) cannot be matched by axum in one segment
//! (a parameter followed by a literal), so `/runs/{tail}` is matched and split on its last `:`;
//! ids never contain `:` (run ids are `[A-Za-z0-9._-]`, experiment and recurring run ids are
//! UUIDs). Pipelines ([`pipelines`], with the multipart uploads) and recurring runs
//! ([`recurring_runs`]) have files of their own.

mod json;
mod pipelines;
mod recurring_runs;
mod watch;

/// A message as the compact proto3 JSON the REST API replies with (also used by the CLI).
pub use json::encode as proto_json;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::api::*;
use crate::error::http::ApiError;
use crate::service::{Context, Principal, Services};
use crate::store::StoredRun;
use json::{Body, Json, reply};

/// What every handler shares.
#[derive(Clone)]
pub struct HttpState {
    services: Arc<Services>,
    max_body_bytes: usize,
}

/// The HTTP API's routes, with request bodies limited to `max_body_bytes` (over it: 413).
pub fn router(services: Arc<Services>, max_body_bytes: usize) -> Router {
    let state = HttpState {
        services,
        max_body_bytes,
    };
    Router::new()
        .route("/apis/v2beta1/healthz", get(healthz))
        .route("/apis/v2beta1/runs", get(list_runs).post(create_run))
        .route("/apis/v2beta1/runs:watch", get(watch::watch_runs))
        .route(
            "/apis/v2beta1/runs/{tail}",
            get(get_run).delete(delete_run).post(run_action),
        )
        .route(
            "/apis/v2beta1/experiments",
            get(list_experiments).post(create_experiment),
        )
        .route(
            "/apis/v2beta1/experiments/{tail}",
            get(get_experiment)
                .delete(delete_experiment)
                .post(experiment_action),
        )
        .merge(pipelines::routes())
        .merge(recurring_runs::routes())
        .merge(crate::ui::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// One debug line per request: method, path with query, status.
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    tracing::debug!(%method, %uri, status = response.status().as_u16(), "http");
    response
}

/// Unknown route. On the gRPC port this router also answers for the gRPC services' unknown
/// paths, so a gRPC request gets gRPC's UNIMPLEMENTED rather than a JSON 404.
async fn no_route(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("unknown gRPC method {}", uri.path()))
            .into_http::<axum::body::Body>();
    }
    ApiError::not_found(format!("no route for {method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(&method, uri.path())
}

/// The context of a call: its principal is what the transport established for the request
/// (anonymous when nobody did).
struct Caller(Context);

impl FromRequestParts<HttpState> for Caller {
    /// 401 with `WWW-Authenticate: Bearer` when the identifying layer rejected the credentials.
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &HttpState,
    ) -> Result<Self, Self::Rejection> {
        context_of(&parts.extensions, &state.services).map(Caller)
    }
}

/// The context of a request with these extensions, or the 401 (with `WWW-Authenticate: Bearer`)
/// when the identifying layer rejected its credentials. For routes outside this router too
/// (`/metrics`).
pub fn context_of(extensions: &http::Extensions, services: &Services) -> Result<Context, ApiError> {
    if let Some(crate::auth::Rejected(e)) = extensions.get() {
        return Err(ApiError::from(e.clone()));
    }
    let principal = extensions.get::<Principal>().cloned().unwrap_or_default();
    Ok(services.context(principal))
}

fn decoded(result: crate::error::Result<StoredRun>) -> Result<Json<Run>, ApiError> {
    reply(result.map(|stored| stored.decode()))
}

#[derive(Serialize)]
struct Healthz {
    multi_user: bool,
    commit_sha: &'static str,
    tag_name: &'static str,
}

/// What the kfp SDK calls when a client is built; `multi_user` must be a JSON boolean.
async fn healthz(State(state): State<HttpState>) -> Json<Healthz> {
    Json(Healthz {
        multi_user: state.services.multi_user(),
        commit_sha: option_env!("RUNLEDGER_COMMIT_SHA").unwrap_or("unknown"),
        tag_name: env!("CARGO_PKG_VERSION"),
    })
}

/// The `{tail}` path segment, percent-decoded; one that is not UTF-8 is a JSON 400.
struct Tail(String);

impl<S: Send + Sync> FromRequestParts<S> for Tail {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(tail)) => Ok(Tail(tail)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

/// A `{tail}` that must be a plain id: with a `:verb` it names an action, which only POST has.
fn plain_id<'a>(tail: &'a str, method: &Method, uri: &Uri) -> Result<&'a str, ApiError> {
    if tail.contains(':') {
        return Err(ApiError::not_found(format!(
            "no route for {method} {}",
            uri.path()
        )));
    }
    Ok(tail)
}

/// Splits `{id}:{verb}` on the last `:`.
fn split_action<'a>(tail: &'a str, uri: &Uri) -> Result<(&'a str, &'a str), ApiError> {
    tail.rsplit_once(':').ok_or_else(|| {
        ApiError::not_found(format!(
            "no route for POST {}: expected an action such as {}:archive",
            uri.path(),
            uri.path()
        ))
    })
}

fn empty_reply(result: crate::error::Result<()>) -> Result<Response, ApiError> {
    result
        .map(|()| Json(pbjson_types::Empty {}).into_response())
        .map_err(ApiError::from)
}

async fn create_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Run>, ApiError> {
    // The body is the Run itself (`body: "run"`). The query may name only the request's other
    // field, the deprecated and ignored experiment_id; anything else is an unknown field (400).
    let _query: CreateRunRequest = json::from_query(query.as_deref())?;
    let run: Run = json::decode_body(&body, "Run")?;
    decoded(state.services.runs.create(&ctx, run).await)
}

async fn list_runs(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListRunsResponse>, ApiError> {
    let request: ListRunsRequest = json::from_query(query.as_deref())?;
    let page = state.services.runs.list(&ctx, &request).await;
    reply(page.map(|page| ListRunsResponse {
        runs: page.runs.iter().map(StoredRun::decode).collect(),
        total_size: page.total_size,
        next_page_token: page.next_page_token,
    }))
}

async fn get_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Json<Run>, ApiError> {
    let run_id = plain_id(&tail, &method, &uri)?;
    let request: GetRunRequest = json::with_path_id(query.as_deref(), None, run_id)?;
    decoded(state.services.runs.get(&ctx, &request.run_id).await)
}

async fn delete_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let run_id = plain_id(&tail, &method, &uri)?;
    let request: DeleteRunRequest = json::with_path_id(query.as_deref(), None, run_id)?;
    empty_reply(state.services.runs.delete(&ctx, &request.run_id).await)
}

/// `POST /runs/{run_id}:{verb}`: archive, unarchive, terminate, retry (empty body or the request
/// message) and reportState (the whole ReportRunStateRequest as the body).
async fn run_action(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let (run_id, verb) = split_action(&tail, &uri)?;
    let query = query.as_deref();
    let body = Some(&body);
    let runs = &state.services.runs;
    match verb {
        "archive" => {
            let request: ArchiveRunRequest = json::with_path_id(query, body, run_id)?;
            empty_reply(runs.archive(&ctx, &request.run_id).await)
        }
        "unarchive" => {
            let request: UnarchiveRunRequest = json::with_path_id(query, body, run_id)?;
            empty_reply(runs.unarchive(&ctx, &request.run_id).await)
        }
        "terminate" => {
            let request: TerminateRunRequest = json::with_path_id(query, body, run_id)?;
            empty_reply(runs.terminate(&ctx, &request.run_id).await)
        }
        "retry" => {
            let request: RetryRunRequest = json::with_path_id(query, body, run_id)?;
            empty_reply(runs.retry(&ctx, &request.run_id).await)
        }
        "reportState" => {
            let request: ReportRunStateRequest = json::with_path_id(query, body, run_id)?;
            decoded(runs.report_state(&ctx, request).await).map(IntoResponse::into_response)
        }
        other => Err(ApiError::not_found(format!(
            "no run action {other:?}: expected archive, unarchive, terminate, retry or reportState"
        ))),
    }
}

async fn create_experiment(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Experiment>, ApiError> {
    // The body is the Experiment itself (`body: "experiment"`); no other field exists.
    let _request: CreateExperimentRequest = json::from_query(query.as_deref())?;
    let experiment: Experiment = json::decode_body(&body, "Experiment")?;
    reply(state.services.experiments.create(&ctx, experiment).await)
}

async fn list_experiments(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListExperimentsResponse>, ApiError> {
    let request: ListExperimentsRequest = json::from_query(query.as_deref())?;
    reply(state.services.experiments.list(&ctx, &request).await)
}

async fn get_experiment(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Json<Experiment>, ApiError> {
    let experiment_id = plain_id(&tail, &method, &uri)?;
    let request: GetExperimentRequest = json::with_path_id(query.as_deref(), None, experiment_id)?;
    reply(
        state
            .services
            .experiments
            .get(&ctx, &request.experiment_id)
            .await,
    )
}

async fn delete_experiment(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let experiment_id = plain_id(&tail, &method, &uri)?;
    let request: DeleteExperimentRequest =
        json::with_path_id(query.as_deref(), None, experiment_id)?;
    empty_reply(
        state
            .services
            .experiments
            .delete(&ctx, &request.experiment_id)
            .await,
    )
}

/// `POST /experiments/{experiment_id}:{verb}`: archive or unarchive.
async fn experiment_action(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let (experiment_id, verb) = split_action(&tail, &uri)?;
    let query = query.as_deref();
    let body = Some(&body);
    let experiments = &state.services.experiments;
    match verb {
        "archive" => {
            let request: ArchiveExperimentRequest = json::with_path_id(query, body, experiment_id)?;
            empty_reply(experiments.archive(&ctx, &request.experiment_id).await)
        }
        "unarchive" => {
            let request: UnarchiveExperimentRequest =
                json::with_path_id(query, body, experiment_id)?;
            empty_reply(experiments.unarchive(&ctx, &request.experiment_id).await)
        }
        other => Err(ApiError::not_found(format!(
            "no experiment action {other:?}: expected archive or unarchive"
        ))),
    }
}
