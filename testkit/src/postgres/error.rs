//! The one error type of the kit.

use std::fmt;

/// What the caller can do about it decides the variant: install PostgreSQL, fix the call, or read
/// the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// This machine cannot run a cluster: the server programs (or, as root, the unprivileged
    /// user to run them as) are not installed. Tests skip on this outside CI.
    Unavailable {
        /// What was looked for and not found.
        missing: String,
    },
    /// The call itself was wrong: a database name PostgreSQL would not take, `start_again` on a
    /// running cluster, `kill` on a stopped one.
    InvalidArgument { message: String },
    /// A step failed on an installation that looked complete.
    Failed {
        /// What the kit was doing, e.g. "initdb" or "waiting for the server to accept connections".
        step: String,
        /// What went wrong, with the program's own output when there was some.
        detail: String,
        /// The last lines of the server's log, empty when the server had not been started yet.
        log_tail: String,
    },
}

impl Error {
    pub(crate) fn failed(step: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Failed {
            step: step.into(),
            detail: detail.into(),
            log_tail: String::new(),
        }
    }

    /// The same error with the server log's tail attached (only to `Failed`, the only variant
    /// the server can explain).
    pub(crate) fn with_log_tail(self, tail: String) -> Error {
        match self {
            Error::Failed { step, detail, .. } => Error::Failed {
                step,
                detail,
                log_tail: tail,
            },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable { missing } => write!(
                f,
                "PostgreSQL is not installed ({missing}); install the server with \
                 `apt-get install -y postgresql` (as root, Debian/Ubuntu) or run \
                 .ci/install-postgres.sh"
            ),
            Error::InvalidArgument { message } => f.write_str(message),
            Error::Failed {
                step,
                detail,
                log_tail,
            } => {
                write!(f, "PostgreSQL test cluster: {step} failed: {detail}")?;
                if !log_tail.is_empty() {
                    write!(f, "\n--- end of the server log ---\n{log_tail}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}
