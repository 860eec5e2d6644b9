//! Running one PostgreSQL program to completion, never for longer than a limit.
//!
//! `Command::output` would wait forever on a hung initdb, and would also wait for every
//! grandchild holding the output pipes (initdb runs `postgres --boot` with its own pipes), so
//! the child is polled against a deadline and the pipes are drained by threads whose progress is
//! visible even when they never finish.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::error::Error;

/// Short enough that a 50 ms createdb is not stretched noticeably.
const POLL: Duration = Duration::from_millis(5);

/// How long to wait, after the child exited, for pipes that a grandchild may still hold.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How a program ended, with what it printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) success: bool,
    pub(crate) status: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// Both streams, for an error message.
    pub(crate) fn output(&self) -> String {
        let mut text = String::new();
        for part in [self.stdout.trim(), self.stderr.trim()] {
            if !part.is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part);
            }
        }
        text
    }

    /// Turns a non-zero exit into an error for `what`.
    pub(crate) fn require_success(self, what: &str) -> Result<Finished, Error> {
        if self.success {
            return Ok(self);
        }
        Err(Error::failed(
            what,
            format!("exited with {}: {}", self.status, self.output()),
        ))
    }
}

/// Runs `cmd` (its stdio is replaced) and waits at most `limit`; on timeout the child's whole
/// process group is killed, so a hung initdb takes its bootstrap postgres with it.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
) -> Result<Finished, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed(what, format!("could not run {:?}: {e}", cmd.get_program())))?;
    let stdout = Capture::start(child.stdout.take());
    let stderr = Capture::start(child.stderr.take());

    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_process_group(child.id());
                let _ = child.wait();
                return Err(Error::failed(
                    what,
                    format!(
                        "did not finish within {} s and was killed; output so far: {} {}",
                        limit.as_secs(),
                        stdout.text(),
                        stderr.text()
                    ),
                ));
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => return Err(Error::failed(what, format!("could not wait for it: {e}"))),
        }
    };

    let grace = Instant::now() + DRAIN_GRACE;
    stdout.wait_until(grace);
    stderr.wait_until(grace);
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        stdout: stdout.text(),
        stderr: stderr.text(),
    })
}

/// SIGKILL to every process in the group led by `pid` (spawned with `process_group(0)`).
fn kill_process_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; a group that is already gone gives ESRCH.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// One output pipe drained by a thread into a buffer that can be read at any time.
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: Receiver<()>,
}

impl Capture {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Capture {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (tell_done, done) = mpsc::channel();
        let sink = Arc::clone(&bytes);
        thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            }
            let _ = tell_done.send(());
        });
        Capture { bytes, done }
    }

    fn wait_until(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self.done.recv_timeout(left);
    }

    fn text(&self) -> String {
        let bytes = self
            .bytes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_outlives_its_limit_is_killed_and_reported() {
        let started = Instant::now();
        let error = run_bounded(
            Command::new("/bin/sh").args(["-c", "echo begun; sleep 30"]),
            "sleeper",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let message = error.to_string();
        assert!(message.contains("sleeper failed"), "{message}");
        assert!(message.contains("did not finish within"), "{message}");
        assert!(message.contains("begun"), "{message}");
    }

    #[test]
    fn a_failing_program_reports_its_status_and_both_streams() {
        let finished = run_bounded(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "failing",
            Duration::from_secs(10),
        )
        .expect("it runs");
        let message = finished.require_success("failing").unwrap_err().to_string();
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.contains("out\nerr"), "{message}");
    }

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_hold_up_the_result() {
        let started = Instant::now();
        let finished = run_bounded(
            Command::new("/bin/sh").args(["-c", "echo quick; sleep 5 & exit 0"]),
            "detacher",
            Duration::from_secs(10),
        )
        .expect("it runs");
        assert!(finished.success);
        assert_eq!(finished.stdout.trim(), "quick");
        // The backgrounded sleep keeps the pipe open for 5 s; the result must come after the
        // 2 s grace instead.
        assert!(
            started.elapsed() < Duration::from_millis(4500),
            "{:?}",
            started.elapsed()
        );
    }
}
