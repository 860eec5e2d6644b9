//! A guard process that cleans up a cluster whose owner died without dropping it.
//!
//! `Drop` covers a test that returns or panics, but not a test binary that is killed, aborts,
//! or simply exits while a cluster sits in a `static` (statics are never dropped, and
//! [`shared`](super::shared) is one). So each cluster gets a small `sh` that blocks reading a
//! pipe whose only writer is the test process. When the test process ends, however it ends, the
//! kernel closes the writer, `read` returns, and the guard stops the server and removes the
//! directory. A normal `Drop` cleans up itself and then kills the guard.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use super::account::ServerUser;
use super::binaries::Binaries;
use super::error::Error;
use super::workdir::WorkDir;

/// Runs as the server's user (so pg_ctl agrees to run and may signal the postmaster; that user
/// owns the whole directory, so it may also remove it). Arguments: pg_ctl, data dir, root dir.
/// Signals that a terminal sends to the test run are ignored: the guard's job starts then.
const SCRIPT: &str = r#"trap '' INT HUP TERM QUIT
read -r _ignored
"$1" stop -D "$2" -m immediate -w -t 30 >/dev/null 2>&1
rm -rf -- "$3"
"#;

#[derive(Debug)]
pub(crate) struct Watchdog {
    guard: Child,
}

impl Watchdog {
    pub(crate) fn start(
        binaries: &Binaries,
        user: &ServerUser,
        dir: &WorkDir,
    ) -> Result<Watchdog, Error> {
        let mut cmd = user.command(Path::new("/bin/sh"), Path::new("/"));
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("runledger-testkit-watchdog")
            .arg(binaries.program("pg_ctl"))
            .arg(dir.data())
            .arg(dir.root())
            // The write end stays in this process only (std opens it close-on-exec, so no other
            // child inherits it); the guard writes nothing anywhere a caller waits on.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let guard = cmd.spawn().map_err(|e| {
            Error::failed(
                "starting the cleanup guard",
                format!("could not run /bin/sh: {e}"),
            )
        })?;
        Ok(Watchdog { guard })
    }

    /// Ends the guard without letting it act: the caller has cleaned up already.
    pub(crate) fn dismiss(&mut self) {
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}
