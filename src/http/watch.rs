//! WatchRuns over HTTP: `GET /apis/v2beta1/runs:watch?run_id=|experiment_id=|namespace=` as
//! Server-Sent Events, for browsers and `curl -N`, over the same [`RunWatch`] as the gRPC stream.
//!
//! Each change is one event: `event:` the RunEvent type (`CREATED`, `UPDATED`, `DELETED`),
//! `data:` the RunEvent as the REST API writes it (`{"type": "UPDATED", "run": {...}}`) and `id:`
//! a counter of this stream's events. A stream that fails (its watcher fell behind the event
//! buffer) ends with one `event: error` whose data is the `{code, message, details}` error body;
//! a bad scope or too many watchers is refused before the stream starts, as a normal JSON error.
//! The stream ends when the server shuts down. A comment line every 15 s keeps idle proxies
//! from closing the connection.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;
use tonic::Code;

use super::HttpState;
use super::json::{self, ApiError};
use crate::api::{RunEvent, WatchRunsRequest, run_event};
use crate::error::Error;
use crate::service::RunWatch;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn watch_runs(
    State(state): State<HttpState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request: WatchRunsRequest = json::from_query(query.as_deref())?;
    if let Some(last) = headers.get("last-event-id") {
        // Resuming needs event ids that outlive a stream (the store's sequence numbers); until
        // then a reconnecting client starts afresh and should list again.
        tracing::debug!(last_event_id = ?last, "watch: resume is not supported yet");
    }
    // Subscribe before answering: once a client has the response headers, no change is missed.
    let watch = state.ledger.watch_runs(&request)?;
    let mut response = Sse::new(events(watch))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Tells a buffering reverse proxy (nginx) to pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The watch's events as SSE events, until the server shuts down or the watch fails.
fn events(watch: RunWatch) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some((watch, 0u64)), |state| async move {
        let (mut watch, sent) = state?;
        match watch.next().await? {
            Ok(event) => {
                let id = sent + 1;
                match run_event(&event, id) {
                    Ok(sse) => Some((Ok(sse), Some((watch, id)))),
                    Err(e) => Some((Ok(error_event(&e)), None)),
                }
            }
            // The watch is over after an error (the watcher fell behind): say why, then end.
            Err(e) => Some((Ok(error_event(&e)), None)),
        }
    })
}

fn run_event(event: &RunEvent, id: u64) -> Result<Event, Error> {
    let kind = run_event::Type::try_from(event.r#type)
        .unwrap_or(run_event::Type::Unspecified)
        .as_str_name();
    let data = json::encode(event)
        .map_err(|e| Error::internal(format!("cannot encode a watch event: {e}")))?;
    Ok(Event::default().event(kind).id(id.to_string()).data(data))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i32,
    message: &'a str,
    details: [(); 0],
}

/// The final `event: error`, with the same body as a JSON error reply.
fn error_event(err: &Error) -> Event {
    if let Error::Internal(msg) = err {
        tracing::error!(error = %msg, "watch stream failed");
    }
    let body = ErrorBody {
        code: err.grpc_code() as i32,
        message: err.message(),
        details: [],
    };
    let data = serde_json::to_string(&body).unwrap_or_else(|_| {
        format!(
            r#"{{"code":{},"message":"the watch failed","details":[]}}"#,
            Code::Internal as i32
        )
    });
    Event::default().event("error").data(data)
}
