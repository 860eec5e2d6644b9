//! Errors over HTTP: a status, the gRPC code it stands for and a message, written as KFP's
//! gateway writes them: `{"code": <gRPC code>, "message": "...", "details": []}` with
//! `Content-Type: application/json`. Also the rejections that happen before the core is called
//! (unknown route, wrong method, body too large, unreadable body).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

use super::{Error, http_status_for};

/// An HTTP error reply.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Code,
    message: String,
    /// Sent as `WWW-Authenticate` (a 401 says which scheme to use).
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error whose HTTP status follows KFP's mapping of its gRPC code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(http_status_for(code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(Code::NotFound, message)
    }

    /// 405 for a route that exists with other methods.
    pub fn method_not_allowed(method: &axum::http::Method, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: Code::Unimplemented,
            message: format!("{method} is not allowed on {path}"),
            challenge: None,
        }
    }

    /// 413 for a body over the configured limit.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Code::ResourceExhausted,
            message: format!("request body is larger than the limit of {limit} bytes"),
            challenge: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        err.log_if_internal();
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code: err.grpc_code(),
            challenge: matches!(err, Error::Unauthenticated(_)).then_some("Bearer"),
            message: err.message().to_owned(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i32,
    message: &'a str,
    details: [(); 0],
}

impl ApiError {
    /// The JSON body: `{"code": <gRPC code>, "message": "...", "details": []}`.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            code: self.code as i32,
            message: &self.message,
            details: [],
        };
        // Serializing two plain fields cannot fail; fall back to a fixed body all the same.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"code":13,"message":"cannot encode the error","details":[]}"#.to_vec()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bytes = self.body();
        let mut response = json_response(self.status, bytes);
        if let Some(scheme) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        response
    }
}

/// A JSON body with `status`.
pub fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
