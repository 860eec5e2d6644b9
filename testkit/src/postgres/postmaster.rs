//! The running server: spawning the postmaster, knowing when it is ready, ending it.
//!
//! The postmaster is spawned as a child of the test process instead of through `pg_ctl start`,
//! because pg_ctl daemonises it and leaves reaping to PID 1. On this project's machines PID 1
//! reaps late, and a SIGKILLed postmaster that is still a zombie keeps `postmaster.pid` "alive":
//! the next start fails with `lock file "postmaster.pid" already exists`. As our child it is
//! reaped the moment it dies. Readiness is read from `postmaster.pid` exactly as `pg_ctl -w` does.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use super::account::ServerUser;
use super::binaries::Binaries;
use super::error::Error;
use super::workdir::WorkDir;

const POLL: Duration = Duration::from_millis(10);

/// The line of `postmaster.pid` that holds the server's status (PG 10+), counted from 0.
const STATUS_LINE: usize = 7;

#[derive(Debug)]
pub(crate) struct Postmaster {
    child: Child,
}

impl Postmaster {
    /// Starts `postgres -D <data>` with its output appended to the server log. The settings
    /// (port, addresses, socket) come from the data directory's configuration.
    pub(crate) fn spawn(
        binaries: &Binaries,
        user: &ServerUser,
        dir: &WorkDir,
    ) -> Result<Postmaster, Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.log())
            .map_err(|e| {
                Error::failed(
                    "starting the server",
                    format!("could not open {}: {e}", dir.log().display()),
                )
            })?;
        let log_err = log.try_clone().map_err(|e| {
            Error::failed(
                "starting the server",
                format!("could not share the log: {e}"),
            )
        })?;
        let data = dir.data();
        let mut cmd = user.command(&binaries.program("postgres"), &data);
        cmd.arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for the test run must not reach the
            // server before the cluster's owner decides how to stop it.
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            Error::failed(
                "starting the server",
                format!(
                    "could not run {}: {e}",
                    binaries.program("postgres").display()
                ),
            )
        })?;
        Ok(Postmaster { child })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until this postmaster reports "ready" in its pid file. A pid file left by a killed
    /// predecessor also says "ready", so the pid in it must be this child's.
    pub(crate) fn wait_ready(&mut self, data: &Path, limit: Duration) -> Result<(), Error> {
        let step = "waiting for the server to accept connections";
        let deadline = Instant::now() + limit;
        let pid_file = data.join("postmaster.pid");
        let own_pid = self.pid().to_string();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::failed(
                    step,
                    format!("postgres exited with {status} before it was ready"),
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.first() == Some(&own_pid.as_str())
                    && lines.get(STATUS_LINE).map(|s| s.trim()) == Some("ready")
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.end(libc::SIGKILL, Duration::from_secs(5));
                return Err(Error::failed(
                    step,
                    format!(
                        "not ready within {} s; the server was killed",
                        limit.as_secs()
                    ),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` and waits up to `patience` for the postmaster to exit, then SIGKILLs it.
    /// Returns whether it exited on the signal alone. Either way it has been reaped.
    ///
    /// SIGINT is PostgreSQL's fast shutdown (clean, rolls back open transactions), SIGQUIT its
    /// immediate shutdown (no checkpoint, crash recovery on next start).
    pub(crate) fn end(&mut self, signal: libc::c_int, patience: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        send_signal(self.pid(), signal);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; a process that is gone gives ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Every process whose working directory is `data`: the postmaster, its backends and its
/// auxiliary processes all chdir there, and nothing else of ours does.
pub(crate) fn processes_in(data: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            (cwd == data).then_some(pid)
        })
        .collect()
}

/// Waits up to `patience` for the processes of `data` to go (backends exit by themselves once
/// the postmaster is gone), then SIGKILLs what is left. Returns the pids that had to be killed.
pub(crate) fn end_stragglers(data: &Path, patience: Duration) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    loop {
        let left = processes_in(data);
        if left.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            for pid in &left {
                send_signal(*pid, libc::SIGKILL);
            }
            // A SIGKILLed process can take a moment to leave /proc's cwd behind.
            let settle = Instant::now() + Duration::from_secs(5);
            while !processes_in(data).is_empty() && Instant::now() < settle {
                thread::sleep(POLL);
            }
            return left;
        }
        thread::sleep(POLL);
    }
}
