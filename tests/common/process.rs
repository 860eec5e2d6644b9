//! The real `runledger` binary as a child process: `serve` on 127.0.0.1:0 with its addresses read
//! from its startup log line and its whole stderr kept for assertions, SIGHUP, SIGTERM, SIGKILL
//! and a restart on the same ports and data dir; and the offline subcommands (`check`, ...).
//! For tests that signal, kill, restart or run the server next to the client in another process.
//! Neither the server nor a subcommand sees the caller's RUNLEDGER_DATABASE_URL.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger::api::run_service_client::RunServiceClient;
use tonic::transport::{Channel, Endpoint};

pub const BIN: &str = env!("CARGO_BIN_EXE_runledger");

/// Longest wait for a starting server's startup line (opening a large or damaged data dir takes
/// a while on a loaded machine).
const START_WAIT: Duration = Duration::from_secs(120);

/// A `runledger serve` child process, killed with SIGKILL when dropped.
pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    /// The flags after the data dir, for a restart.
    args: Vec<OsString>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next().map(str::to_owned)
}

impl ServerProcess {
    /// `runledger serve` on 127.0.0.1:0 (both ports) with a data dir under `dir`, info logs and
    /// `args`; waits (bounded) for the line that says where it listens.
    pub fn start(dir: &Path, args: &[&OsStr]) -> ServerProcess {
        Self::start_with(
            Command::new(BIN)
                .args(["serve", "--grpc-addr", "127.0.0.1:0"])
                .args(["--http-addr", "127.0.0.1:0"]),
            dir,
            args,
        )
    }

    /// As [`ServerProcess::start`], with `command` (program and the arguments before the data
    /// dir) instead of the plain binary.
    pub fn start_with(command: &mut Command, dir: &Path, args: &[&OsStr]) -> ServerProcess {
        let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        Self::spawn(command, &dir.join("data"), args)
    }

    fn spawn(command: &mut Command, data_dir: &Path, args: Vec<OsString>) -> ServerProcess {
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", "info"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env_remove("RUNLEDGER_DATABASE_URL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runledger serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Kept before the addresses are announced: a test reads the log as soon as
                // start returns, and the startup line must be in it.
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let (Some(grpc), Some(http)) = (field(&line, "grpc"), field(&line, "http")) {
                    let _ = tx.send((grpc, http));
                }
            }
        });
        let Ok((grpc, http)) = rx.recv_timeout(START_WAIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not log its addresses; its log:\n{}",
                log.lock().unwrap()
            );
        };
        ServerProcess {
            child,
            log,
            grpc: grpc.parse().expect("gRPC address"),
            http: http.parse().expect("HTTP address"),
            data_dir: data_dir.to_path_buf(),
            args,
        }
    }

    /// SIGKILL, then a new server on the same data directory, ports and flags (clients keep
    /// their addresses). Blocks until it listens.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let again = Self::spawn(
            Command::new(BIN)
                .arg("serve")
                .arg("--grpc-addr")
                .arg(self.grpc.to_string())
                .arg("--http-addr")
                .arg(self.http.to_string()),
            &self.data_dir,
            std::mem::take(&mut self.args),
        );
        // The old child is reaped; dropping it again kills nothing.
        *self = again;
    }

    /// A gRPC client of its RunService.
    pub async fn client(&self) -> Result<RunServiceClient<Channel>, tonic::transport::Error> {
        Ok(RunServiceClient::new(self.channel().await?))
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn hangup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP");
    }

    /// Waits (bounded) until the server has logged `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        for _ in 0..600 {
            if self.log.lock().unwrap().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} in the log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
    }

    pub async fn runs(&self) -> RunServiceClient<Channel> {
        RunServiceClient::new(self.channel().await.expect("connect"))
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap the server");
    }

    /// SIGTERM, then waits up to `wait` for the process to exit; None if it did not (it is
    /// then killed).
    pub async fn terminate(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = std::time::Instant::now();
        while started.elapsed() < wait {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
    }
}

/// `runledger check --data-dir DIR`: whether it passed, and what it printed.
pub fn check(data_dir: &Path) -> (bool, String) {
    let out = runledger(
        &[
            "check".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
        ],
        None,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `runledger args...` to completion (with `stdin` as its input, if given).
pub fn runledger<S: AsRef<OsStr>>(args: &[S], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run runledger");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("runledger output")
}
