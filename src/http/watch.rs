//! WatchRuns over HTTP: `GET /apis/v2beta1/runs:watch?run_id=|experiment_id=|namespace=` as
//! Server-Sent Events, for browsers and `curl -N`, over the same [`RunWatch`] as the gRPC stream.
//!
//! Each change is one event: `event:` the RunEvent type (`CREATED`, `UPDATED`, `DELETED`),
//! `data:` the RunEvent as the REST API writes it (`{"type": "UPDATED", "run": {...},
//! "sequence": "42"}`) and `id:` its sequence number. A client that reconnects with
//! `Last-Event-ID` (what EventSource sends by itself) or `?resume_after=` receives every change it
//! missed that the server still retains, or, when some are gone, a 429 JSON error telling it to
//! list again. A stream that fails (its watcher fell behind the event buffer) ends with one
//! `event: error` whose data is the `{code, message, details}` error body; a bad scope or too
//! many watchers is refused before the stream starts, as a normal JSON error. The stream ends
//! when the server shuts down. A comment line every 15 s keeps idle proxies from closing the
//! connection.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::json;
use super::{Caller, HttpState};
use crate::api::{RunEvent, WatchRunsRequest, run_event};
use crate::error::Error;
use crate::error::http::ApiError;
use crate::service::{RunWatch, run_event as event_of};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn watch_runs(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut request: WatchRunsRequest = json::from_query(query.as_deref())?;
    if let Some(last) = headers.get("last-event-id") {
        // What a reconnecting EventSource sends: the id of the last event it received.
        request.resume_after = last
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Last-Event-ID {last:?} is not an event id this server sent (a sequence \
                     number)"
                ))
            })?;
    }
    // Subscribe before answering: once a client has the response headers, no change is missed.
    let watch = state.services.runs.watch(&ctx, &request).await?;
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
    futures::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        match watch.next().await? {
            Ok(change) => match sse_event(&event_of(&change)) {
                Ok(sse) => Some((Ok(sse), Some(watch))),
                Err(e) => Some((Ok(error_event(&e)), None)),
            },
            // The watch is over after an error (the watcher fell behind): say why, then end.
            Err(e) => Some((Ok(error_event(&e)), None)),
        }
    })
}

fn sse_event(event: &RunEvent) -> Result<Event, Error> {
    let kind = run_event::Type::try_from(event.r#type)
        .unwrap_or(run_event::Type::Unspecified)
        .as_str_name();
    let data = json::encode(event)
        .map_err(|e| Error::internal(format!("cannot encode a watch event: {e}")))?;
    Ok(Event::default()
        .event(kind)
        .id(event.sequence.to_string())
        .data(data))
}

/// The final `event: error`, with the same body as a JSON error reply.
fn error_event(err: &Error) -> Event {
    let body = ApiError::from(err.clone()).body();
    Event::default()
        .event("error")
        .data(String::from_utf8_lossy(&body))
}
