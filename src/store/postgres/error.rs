//! What a database error means to a client. A database that cannot be reached, is starting or
//! shutting down, or dropped the connection is UNAVAILABLE (naming it), so clients retry; a
//! write that lost a race (a unique key, a deadlock, a serialization failure) is a Conflict, so
//! the service retries it against the latest state; a full disk is StorageFull.

use tokio_postgres::error::SqlState;

use super::connect::DatabaseUrl;
use crate::error::Error;

/// Maps an error of a statement run against `db`.
pub fn from_db(db: &DatabaseUrl, e: tokio_postgres::Error) -> Error {
    let Some(state) = e.code() else {
        // No SQLSTATE: the connection failed or closed under the statement.
        return unreachable(db, &e);
    };
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned());
    match state {
        s if *s == SqlState::UNIQUE_VIOLATION
            || *s == SqlState::FOREIGN_KEY_VIOLATION
            || *s == SqlState::T_R_SERIALIZATION_FAILURE
            || *s == SqlState::T_R_DEADLOCK_DETECTED
            || *s == SqlState::LOCK_NOT_AVAILABLE =>
        {
            Error::Conflict(format!("{message}; nothing was written"))
        }
        s if *s == SqlState::DISK_FULL => {
            Error::StorageFull(format!("the database {db} is out of disk space: {message}"))
        }
        s if s.code().starts_with("08")
            || s.code().starts_with("57P")
            || *s == SqlState::TOO_MANY_CONNECTIONS
            || *s == SqlState::OUT_OF_MEMORY
            || *s == SqlState::READ_ONLY_SQL_TRANSACTION
            || *s == SqlState::QUERY_CANCELED =>
        {
            Error::Unavailable(format!("the database {db} is unavailable: {message}"))
        }
        s => Error::Internal(format!(
            "the database {db} answered an error ({}): {message}",
            s.code()
        )),
    }
}

/// The database could not be reached (connect failed, or the connection broke).
pub fn unreachable(db: &DatabaseUrl, e: &tokio_postgres::Error) -> Error {
    Error::Unavailable(format!(
        "the database {db} is unreachable: {}",
        with_causes(e)
    ))
}

/// An error's message followed by its causes' (tokio-postgres keeps the useful part there).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Taking a pooled connection failed: the pool could not open one in time.
pub fn from_pool(db: &DatabaseUrl, e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => from_db(db, e),
        PoolError::Timeout(_) => Error::Unavailable(format!(
            "the database {db} is unreachable: no connection could be opened or freed in time"
        )),
        PoolError::Closed => Error::Unavailable(format!(
            "the store on {db} is closed (the server is shutting down)"
        )),
        other => Error::Unavailable(format!("the database {db} is unreachable: {other}")),
    }
}
