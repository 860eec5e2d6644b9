//! Operations on the server as a whole: the online backup.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::access::{Verb, audited};
use super::{Context, Core};
use crate::error::{Error, Result};
use crate::store::BackupProgress;

/// The admin use cases.
pub struct Admin {
    core: Arc<Core>,
}

/// A backup under way: its progress, and its outcome (the last progress, done, with the totals).
pub struct BackupRun {
    pub progress: watch::Receiver<BackupProgress>,
    pub outcome: JoinHandle<Result<BackupProgress>>,
}

impl Admin {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Admin { core }
    }

    /// Starts a backup of the whole store into `to`, an absolute path on the server's machine
    /// (a new or empty directory, outside the data directory). With authentication on it needs
    /// the admin role on every namespace. Dropping the returned progress receiver abandons the
    /// backup (what it wrote is removed).
    pub async fn backup(&self, ctx: &Context, to: &str) -> Result<BackupRun> {
        self.core.allow_on_server(ctx, Verb::Backup)?;
        let path = backup_path(to)?;
        let (report, progress) = watch::channel(BackupProgress::default());
        let store = self.core.store.clone();
        let outcome = tokio::spawn(async move { store.backup(&path, report).await });
        audited(ctx, Verb::Backup, to, "*", Ok(())).map(|()| BackupRun { progress, outcome })
    }
}

/// The backup directory of a request: an absolute path (the server's working directory means
/// nothing to a client).
fn backup_path(to: &str) -> Result<PathBuf> {
    if to.is_empty() {
        return Err(Error::invalid(
            "to is empty: give the absolute path of a new or empty directory on the server",
        ));
    }
    if to.contains('\0') {
        return Err(Error::invalid("to contains a NUL character"));
    }
    let path = PathBuf::from(to);
    if !path.is_absolute() {
        return Err(Error::invalid(format!(
            "to {to:?} is not an absolute path: give the absolute path of a new or empty \
             directory on the server"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_path_must_be_absolute() {
        assert!(backup_path("/var/backups/runledger-1").is_ok());
        for bad in ["", "relative/dir", "./x", "/a\0b"] {
            let err = backup_path(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err:?}");
        }
    }
}
