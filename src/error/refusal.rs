//! Answers the transport gives on its own, instead of calling the core: a request shed under
//! load, a gRPC call whose deadline passed, a request the client was too slow to send. Each is
//! written in the protocol the request came in — a trailers-only gRPC status for gRPC calls, the
//! JSON error body (with the variant's HTTP status) for everything else — so a client sees the
//! same code it would get from the core.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::Error;
use super::http::ApiError;

/// Whether a request is a gRPC call (by its content type, as tonic routes it).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// `err` as a whole response to a request of the given protocol. `retry_after` tells the
/// client when to try again: `retry-after` (whole seconds, at least 1) on both protocols, and
/// for gRPC also `grpc-retry-pushback-ms`, which gRPC clients with a retry policy honour.
pub fn refusal(err: Error, grpc: bool, retry_after: Option<Duration>) -> http::Response<Bytes> {
    let mut response = if grpc {
        // into_http writes content-type, grpc-status and grpc-message: a trailers-only answer.
        tonic::Status::from(err).into_http::<Bytes>()
    } else {
        let reply = ApiError::from(err);
        let mut response = http::Response::new(Bytes::from(reply.body()));
        *response.status_mut() = reply.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    if let Some(after) = retry_after {
        let headers = response.headers_mut();
        let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        if grpc {
            let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(millis));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_refusal_is_a_trailers_only_status_with_pushback() {
        let response = refusal(
            Error::Overloaded("busy".into()),
            true,
            Some(Duration::from_millis(1500)),
        );
        let headers = response.headers();
        assert_eq!(response.status(), 200);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(headers["grpc-message"], "busy");
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["grpc-retry-pushback-ms"], "1500");
        assert!(response.body().is_empty());
    }

    #[test]
    fn an_http_refusal_has_the_variants_status_and_the_json_body() {
        let response = refusal(
            Error::Overloaded("busy".into()),
            false,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(!response.headers().contains_key("grpc-retry-pushback-ms"));
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["code"], 14);
        assert_eq!(body["message"], "busy");

        let slow = refusal(Error::RequestTimeout("slow".into()), false, None);
        assert_eq!(slow.status(), 408);
        assert!(!slow.headers().contains_key("retry-after"));
        let late = refusal(Error::DeadlineExceeded("late".into()), true, None);
        assert_eq!(late.headers()["grpc-status"], "4");
    }
}
