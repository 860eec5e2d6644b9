//! The one error type of the core, and its two mappings: to gRPC status codes and to HTTP
//! statuses. Both live here, side by side, so they cannot drift apart (a test checks they agree
//! with SPEC §3's table).

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
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
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
            Error::Aborted(_) => Code::Aborted,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Aborted(m)
            | Error::ResourceExhausted(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m,
        }
    }
}

/// The HTTP status KFP's gateway uses for a gRPC code (SPEC §3); codes not in the table map to
/// 500.
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

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if let Error::Internal(msg) = &err {
            tracing::error!(error = %msg, "internal error");
        }
        tonic::Status::new(err.grpc_code(), err.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_mapping_follows_the_spec_table() {
        // SPEC §3: 3→400, 5→404, 6→409, 7→403, 9→400, 10→409, 8→429, 13→500, 14→503, 16→401,
        // 4→504, 12→501.
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
    fn every_core_error_maps_to_its_grpc_code() {
        let cases = [
            (Error::invalid("x"), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (Error::Aborted("x".into()), Code::Aborted),
            (
                Error::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::internal("x"), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err.clone()).code(), code, "{err:?}");
        }
    }
}
