//! The `runledger serve` binary as a child process on 127.0.0.1:0: its addresses read from its
//! startup log line, its whole stderr kept for assertions, SIGHUP, and a kill when dropped; and
//! one-shot commands with their output. Neither sees the caller's RUNLEDGER_DATABASE_URL.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_runledger");

pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
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
    pub fn start(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> ServerProcess {
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
    pub fn start_with(
        command: &mut Command,
        dir: &std::path::Path,
        args: &[&std::ffi::OsStr],
    ) -> ServerProcess {
        let mut child = command
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--log-level", "info"])
            .args(args)
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
                // Logged before the addresses go out: a caller that reads the log as soon as
                // start returns finds the line that says where the server listens.
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
        let Ok((grpc, http)) = rx.recv_timeout(Duration::from_secs(60)) else {
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
        }
    }

    /// A gRPC client of its RunService.
    pub async fn client(
        &self,
    ) -> Result<
        runledger::api::run_service_client::RunServiceClient<tonic::transport::Channel>,
        tonic::transport::Error,
    > {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?;
        Ok(runledger::api::run_service_client::RunServiceClient::new(
            channel,
        ))
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
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
}

/// Runs `runledger args...` to completion (with `stdin` as its input, if given).
pub fn runledger(args: &[&str], stdin: Option<&[u8]>) -> Output {
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
