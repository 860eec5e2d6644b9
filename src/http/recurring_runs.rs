//! KFP's recurring-run routes (`/apis/v2beta1/recurringruns`, with the `:enable` and
//! `:disable` actions).

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{Method, Uri};
use axum::response::Response;
use axum::routing::get;

use super::json::{self, Body, Json, reply};
use super::{Caller, HttpState, Tail, empty_reply, plain_id, split_action};
use crate::api::*;
use crate::error::http::ApiError;

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/apis/v2beta1/recurringruns",
            get(list_recurring_runs).post(create_recurring_run),
        )
        .route(
            "/apis/v2beta1/recurringruns/{tail}",
            get(get_recurring_run)
                .delete(delete_recurring_run)
                .post(recurring_run_action),
        )
}

async fn create_recurring_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<RecurringRun>, ApiError> {
    // The body is the RecurringRun itself (`body: "recurring_run"`), the request's only field.
    let _query: CreateRecurringRunRequest = json::from_query(query.as_deref())?;
    let input: RecurringRun = json::decode_body(&body, "RecurringRun")?;
    reply(state.services.recurring_runs.create(&ctx, input).await)
}

async fn list_recurring_runs(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListRecurringRunsResponse>, ApiError> {
    let request: ListRecurringRunsRequest = json::from_query(query.as_deref())?;
    reply(state.services.recurring_runs.list(&ctx, &request).await)
}

async fn get_recurring_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Json<RecurringRun>, ApiError> {
    let id = plain_id(&tail, &method, &uri)?;
    let request: GetRecurringRunRequest = json::with_path_id(query.as_deref(), None, id)?;
    reply(
        state
            .services
            .recurring_runs
            .get(&ctx, &request.recurring_run_id)
            .await,
    )
}

async fn delete_recurring_run(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = plain_id(&tail, &method, &uri)?;
    // propagation_policy is accepted and changes nothing: runs outlive their recurring run.
    let request: DeleteRecurringRunRequest = json::with_path_id(query.as_deref(), None, id)?;
    empty_reply(
        state
            .services
            .recurring_runs
            .delete(&ctx, &request.recurring_run_id)
            .await,
    )
}

/// `POST /recurringruns/{id}:enable` or `:disable` (empty body or the request message).
async fn recurring_run_action(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Tail(tail): Tail,
    RawQuery(query): RawQuery,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, verb) = split_action(&tail, &uri)?;
    let query = query.as_deref();
    let body = Some(&body);
    let recurring_runs = &state.services.recurring_runs;
    match verb {
        "enable" => {
            let request: EnableRecurringRunRequest = json::with_path_id(query, body, id)?;
            empty_reply(recurring_runs.enable(&ctx, &request.recurring_run_id).await)
        }
        "disable" => {
            let request: DisableRecurringRunRequest = json::with_path_id(query, body, id)?;
            empty_reply(
                recurring_runs
                    .disable(&ctx, &request.recurring_run_id)
                    .await,
            )
        }
        other => Err(ApiError::not_found(format!(
            "no recurring run action {other:?}: expected enable or disable"
        ))),
    }
}
