//! Proto3 JSON in and out: request messages assembled from the path, the query string and the
//! body (read by the generated pbjson impls, which reject unknown fields), and responses written
//! by the same impls. Errors are written by [`crate::error::http`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::HttpState;
use crate::api::*;
use crate::error::Error;
use crate::error::http::{ApiError, json_response};

/// A message written as proto3 JSON with `200 OK`.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let encoded = serde_json::to_value(&self.0).and_then(|mut value| {
            integral_numbers_as_integers(&mut value);
            serde_json::to_vec(&value)
        });
        match encoded {
            Ok(bytes) => json_response(StatusCode::OK, bytes),
            Err(e) => ApiError::from(Error::internal(format!("cannot encode the response: {e}")))
                .into_response(),
        }
    }
}

/// A message as the same compact proto3 JSON text `Json` replies with (whole numbers as
/// integers); for bodies written piecewise, such as the watch stream's events.
pub fn encode<T: Serialize>(message: &T) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(message)?;
    integral_numbers_as_integers(&mut value);
    serde_json::to_string(&value)
}

/// Writes `3.0` as `3`, as KFP's gateway (Go protojson) does for every whole double: a
/// `google.protobuf.Value` number is a double, which pbjson prints with a fraction, so a run
/// parameter sent as `3` would come back as `3.0` and reach Python as a float. (Going through
/// `serde_json::Value` also sorts object keys; JSON objects are unordered, and this makes
/// Struct key order stable, which pbjson's HashMap does not.)
fn integral_numbers_as_integers(value: &mut Value) {
    // Integers beyond 2^53 are not exact in a double; leave those as they are.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() <= EXACT
            {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// The result of a core call as an HTTP reply.
pub fn reply<T: Serialize>(result: crate::error::Result<T>) -> Result<Json<T>, ApiError> {
    result.map(Json).map_err(ApiError::from)
}

/// The raw request body, read up to the configured limit; over it → 413 with a JSON error body.
pub struct Body(pub Bytes);

impl FromRequest<HttpState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::payload_too_large(state.max_body_bytes))
            }
            Err(rejection) => Err(ApiError::invalid(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

impl Body {
    /// Whether the body carries nothing but whitespace (an action POST without a body).
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }
}

/// Reads a message from a JSON body; a blank body is `{}`. Errors name the field and the place.
pub fn decode_body<T: DeserializeOwned>(body: &Body, what: &str) -> Result<T, ApiError> {
    let bytes: &[u8] = if body.is_blank() { b"{}" } else { &body.0 };
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let message = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        ApiError::invalid(format!(
            "invalid {what} in the request body: {}",
            describe(&e)
        ))
    })?;
    reader
        .end()
        .map_err(|e| ApiError::invalid(format!("invalid {what} in the request body: {e}")))?;
    Ok(message)
}

/// The error with the field it is about, when there is one (a syntax error has none).
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.inner();
    let mut message = match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON: {inner}"),
        Category::Data if path == "." || path.is_empty() => inner.to_string(),
        Category::Data => format!("field {path}: {inner}"),
    };
    if message.contains("duplicate field") {
        // pbjson names the field in lowerCamel whichever spelling was sent.
        message.push_str(
            " (a field may appear once, in one spelling; of a oneof such as the run's \
             pipeline_id / pipeline_spec / pipeline_version_reference, give only one member)",
        );
    }
    message
}

/// A request message from the query string: proto or lowerCamel names, each value decoded once
/// (`+` is a space), empty values unset, a name given twice → 400, unknown names → 400.
pub fn from_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    let mut fields = Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if value.is_empty() {
            continue;
        }
        if fields.contains_key(key.as_ref()) {
            return Err(ApiError::invalid(format!(
                "query parameter {key} is given more than once"
            )));
        }
        fields.insert(key.into_owned(), Value::String(value.into_owned()));
    }
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(
        |e: serde_path_to_error::Error<serde_json::Error>| {
            ApiError::invalid(format!("invalid query parameter: {}", describe(&e)))
        },
    )
}

/// A request message whose id is in the path (`/runs/{run_id}...`).
pub trait PathId {
    /// The proto name of the id field.
    const FIELD: &'static str;
    fn id_mut(&mut self) -> &mut String;
}

macro_rules! path_id {
    ($field:ident: $($message:ty),+) => {
        $(impl PathId for $message {
            const FIELD: &'static str = stringify!($field);
            fn id_mut(&mut self) -> &mut String {
                &mut self.$field
            }
        })+
    };
}

path_id!(run_id: GetRunRequest, DeleteRunRequest, ArchiveRunRequest, UnarchiveRunRequest,
    TerminateRunRequest, RetryRunRequest, ReportRunStateRequest);
path_id!(experiment_id: GetExperimentRequest, DeleteExperimentRequest, ArchiveExperimentRequest,
    UnarchiveExperimentRequest);
path_id!(pipeline_id: GetPipelineRequest, DeletePipelineRequest, ListPipelineVersionsRequest);
path_id!(recurring_run_id: GetRecurringRunRequest, DeleteRecurringRunRequest,
    EnableRecurringRunRequest, DisableRecurringRunRequest);

/// A request message for a route with a path id: read from the query string, or from the body
/// when one is sent (the whole request as JSON; a blank body is none). The path fills the id; an
/// id also given in the query or body must be the same.
pub fn with_path_id<T: DeserializeOwned + PathId>(
    query: Option<&str>,
    body: Option<&Body>,
    id: &str,
) -> Result<T, ApiError> {
    let body = body.filter(|b| !b.is_blank());
    let has_query = query.is_some_and(|q| !q.is_empty());
    let mut request: T = match body {
        Some(_) if has_query => {
            return Err(ApiError::invalid(
                "send the request's fields either in the query string or in the body, not both",
            ));
        }
        Some(body) => decode_body(body, "request")?,
        None => from_query(query)?,
    };
    set_path_id(T::FIELD, request.id_mut(), id)?;
    Ok(request)
}

/// Fills the request field `name` with the id from the path; an id also given in the request
/// must be the same.
pub fn set_path_id(name: &str, field: &mut String, id: &str) -> Result<(), ApiError> {
    if !field.is_empty() && field != id {
        return Err(ApiError::invalid(format!(
            "{name} {field:?} in the request differs from the one in the path ({id:?})"
        )));
    }
    id.clone_into(field);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_struct_numbers_lose_their_fraction() {
        let mut value = json!({"a": 3.0, "b": [1.5, -2.0, 1e300], "c": "3.0", "d": 7});
        integral_numbers_as_integers(&mut value);
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":3,"b":[1.5,-2,1e+300],"c":"3.0","d":7}"#
        );
    }
}
