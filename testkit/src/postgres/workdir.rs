//! The cluster's private directory: the data directory, the Unix socket and the server log.
//!
//! Layout of `<tmp>/runledger-pg-<pid>-<n>/`:
//! - `data/`: what initdb creates. Every server process has it as its working directory, which
//!   is how stray processes of this cluster are recognised.
//! - `server.log`: the postmaster's stdout and stderr, appended across restarts.
//! - `.s.PGSQL.<port>`: the Unix socket. The directory itself is the socket directory, which
//!   keeps the socket path short of the 107-byte limit.

use std::fs::{DirBuilder, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::account::ServerUser;
use super::error::Error;

/// Distinguishes the clusters of one process; the pid distinguishes processes.
static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// How much of the log an error quotes.
const LOG_TAIL_LINES: usize = 30;
const LOG_TAIL_BYTES: u64 = 16 * 1024;

#[derive(Debug)]
pub(crate) struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Creates a fresh directory that `user` owns and can reach.
    ///
    /// `std::env::temp_dir()` (TMPDIR) comes first; when the server user cannot walk into it,
    /// for instance TMPDIR under root's 0700 home, `/tmp` is tried.
    pub(crate) fn create(user: &ServerUser) -> Result<WorkDir, Error> {
        let mut rejected = Vec::new();
        for base in [std::env::temp_dir(), PathBuf::from("/tmp")] {
            let Ok(base) = std::fs::canonicalize(&base) else {
                rejected.push(format!("{} does not exist", base.display()));
                continue;
            };
            if !user.can_reach(&base) {
                rejected.push(format!(
                    "{} cannot be reached by {} (a directory on the way lacks the search bit)",
                    base.display(),
                    user.describe()
                ));
                continue;
            }
            let root = create_unique(&base)?;
            user.hand_over(&root).map_err(|e| {
                let _ = std::fs::remove_dir(&root);
                Error::failed(
                    "creating the cluster directory",
                    format!(
                        "could not give {} to {}: {e}",
                        root.display(),
                        user.describe()
                    ),
                )
            })?;
            return Ok(WorkDir { root });
        }
        Err(Error::failed(
            "creating the cluster directory",
            format!(
                "no temporary directory is usable: {}; set TMPDIR to a directory every user can \
                 enter, such as /tmp",
                rejected.join("; ")
            ),
        ))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The last lines of the server log, for error messages; empty when there is no log yet.
    pub(crate) fn log_tail(&self) -> String {
        read_tail(&self.log()).unwrap_or_default()
    }

    /// The log's current length, to read only what a later start wrote.
    pub(crate) fn log_len(&self) -> u64 {
        std::fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0)
    }

    /// What the log gained since it was `offset` bytes long.
    pub(crate) fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log())
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    pub(crate) fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn create_unique(base: &Path) -> Result<PathBuf, Error> {
    let pid = std::process::id();
    let mut last_error = None;
    // A directory of the same name can be left by an earlier process with the same pid that
    // was killed before its watchdog ran; skip over such names.
    for _ in 0..1000 {
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let root = base.join(format!("runledger-pg-{pid}-{n}"));
        match DirBuilder::new().mode(0o700).create(&root) {
            Ok(()) => return Ok(root),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(Error::failed(
                    "creating the cluster directory",
                    format!("could not create {}: {e}", root.display()),
                ));
            }
        }
    }
    Err(Error::failed(
        "creating the cluster directory",
        format!(
            "every name tried in {} exists: {last_error:?}",
            base.display()
        ),
    ))
}

fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    Ok(lines[start..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_work_dirs_of_one_process_are_distinct_and_removable() {
        let first = WorkDir::create(&ServerUser::Current).expect("first");
        let second = WorkDir::create(&ServerUser::Current).expect("second");
        assert_ne!(first.root(), second.root());
        assert!(first.root().is_dir() && second.root().is_dir());
        first.remove().expect("remove first");
        second.remove().expect("remove second");
        assert!(!first.root().exists() && !second.root().exists());
    }

    #[test]
    fn the_log_tail_keeps_only_the_last_lines() {
        let dir = WorkDir::create(&ServerUser::Current).expect("dir");
        let log: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(dir.log(), log).expect("write log");
        let tail = dir.log_tail();
        dir.remove().expect("remove");
        assert!(tail.starts_with("line 71\n"), "{tail}");
        assert!(tail.ends_with("line 100"), "{tail}");
    }
}
