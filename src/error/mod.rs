//! The one error type of the core and every way it leaves the process: gRPC status codes
//! ([`grpc`]: also tonic's own rejections, fixed up), HTTP statuses and JSON bodies ([`http`]:
//! also axum's rejections, 405 and 413), and the answers the transport gives on its own in the
//! request's protocol ([`refusal`]: load shedding, deadlines). The mappings live here, side by
//! side, with a test that they agree for every variant, so they cannot drift apart.

pub mod grpc;
pub mod http;
pub mod refusal;

use tonic::Code;

/// What went wrong, by meaning. Messages name the field, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    /// A compare-and-set write found the record changed since it was read. The service retries
    /// such writes against the latest record; one that still loses after its retries reaches
    /// the client as ABORTED.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store cannot persist writes (disk full, write errors); reads still work. HTTP 507.
    #[error("{0}")]
    StorageFull(String),
    /// Missing or wrong credentials. The message never says whether a principal exists.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    /// The server is at its request limits and shed this call before doing any work: UNAVAILABLE
    /// (HTTP 503), which clients retry with backoff; the transport adds `retry-after`.
    #[error("{0}")]
    Overloaded(String),
    /// The call's own deadline (`grpc-timeout`) passed; its work was cancelled.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client did not send its request (the head or the body) within the server's read
    /// timeout. DEADLINE_EXCEEDED over gRPC; HTTP 408 Request Timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// Stored data that cannot be read back.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Aborted(_) | Error::Conflict(_) => Code::Aborted,
            Error::ResourceExhausted(_) | Error::StorageFull(_) => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) | Error::Overloaded(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) | Error::RequestTimeout(_) => Code::DeadlineExceeded,
            Error::DataLoss(_) => Code::DataLoss,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status for this error: KFP's mapping of its gRPC code, except a full disk, which
    /// is 507 Insufficient Storage (429 would tell the client to slow down, which does not help),
    /// and a request the client was too slow to send, 408 Request Timeout (504 would blame an
    /// upstream server).
    pub fn http_status(&self) -> u16 {
        match self {
            Error::StorageFull(_) => 507,
            Error::RequestTimeout(_) => 408,
            other => http_status_for(other.grpc_code()),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Aborted(m)
            | Error::Conflict(m)
            | Error::ResourceExhausted(m)
            | Error::StorageFull(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::Unavailable(m)
            | Error::Overloaded(m)
            | Error::DeadlineExceeded(m)
            | Error::RequestTimeout(m)
            | Error::DataLoss(m)
            | Error::Internal(m) => m,
        }
    }

    /// Logs what the client cannot act on (the server's own failures) once, where it leaves.
    fn log_if_internal(&self) {
        if let Error::Internal(msg) | Error::DataLoss(msg) = self {
            tracing::error!(error = %msg, "internal error");
        }
    }
}

/// The HTTP status KFP's gateway uses for a gRPC code; codes not in its table map to 500.
pub fn http_status_for(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant, with the gRPC code it must carry.
    fn every_variant() -> Vec<(Error, Code)> {
        let m = || "x".to_owned();
        vec![
            (Error::InvalidArgument(m()), Code::InvalidArgument),
            (Error::NotFound(m()), Code::NotFound),
            (Error::AlreadyExists(m()), Code::AlreadyExists),
            (Error::FailedPrecondition(m()), Code::FailedPrecondition),
            (Error::Aborted(m()), Code::Aborted),
            (Error::Conflict(m()), Code::Aborted),
            (Error::ResourceExhausted(m()), Code::ResourceExhausted),
            (Error::StorageFull(m()), Code::ResourceExhausted),
            (Error::Unauthenticated(m()), Code::Unauthenticated),
            (Error::PermissionDenied(m()), Code::PermissionDenied),
            (Error::Unavailable(m()), Code::Unavailable),
            (Error::Overloaded(m()), Code::Unavailable),
            (Error::DeadlineExceeded(m()), Code::DeadlineExceeded),
            (Error::RequestTimeout(m()), Code::DeadlineExceeded),
            (Error::DataLoss(m()), Code::DataLoss),
            (Error::Internal(m()), Code::Internal),
        ]
    }

    #[test]
    fn http_mapping_follows_kfps_table() {
        // 3→400, 5→404, 6→409, 7→403, 9→400, 10→409, 8→429, 13→500, 14→503, 16→401, 4→504,
        // 12→501.
        let table = [
            (3, 400),
            (5, 404),
            (6, 409),
            (7, 403),
            (9, 400),
            (10, 409),
            (8, 429),
            (13, 500),
            (14, 503),
            (16, 401),
            (4, 504),
            (12, 501),
        ];
        for (code, status) in table {
            assert_eq!(
                http_status_for(Code::from_i32(code)),
                status,
                "gRPC code {code}"
            );
        }
    }

    #[test]
    fn every_variant_leaves_with_the_same_meaning_over_grpc_and_http() {
        for (err, code) in every_variant() {
            let status = tonic::Status::from(err.clone());
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), err.message(), "{err:?}");
            let reply = http::ApiError::from(err.clone());
            assert_eq!(reply.code(), code, "{err:?} over HTTP");
            let expected = match err {
                Error::StorageFull(_) => 507,
                Error::RequestTimeout(_) => 408,
                _ => http_status_for(code),
            };
            assert_eq!(reply.status().as_u16(), expected, "{err:?} over HTTP");
            assert_eq!(err.http_status(), expected, "{err:?}");
        }
    }
}
