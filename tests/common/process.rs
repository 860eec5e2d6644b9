//! The real `runledger` binary as a child process: `serve` on free loopback ports with a data
//! directory, and the offline subcommands (`check`, ...). For tests that kill, restart or run the
//! server next to the client in another process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use runledger::api::run_service_client::RunServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Attempts (100 ms apart) to reach a starting server before giving up.
const START_ATTEMPTS: u32 = 600;

/// A `runledger serve` child process, killed with SIGKILL when dropped.
pub struct ServerProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

impl ServerProcess {
    /// Starts `runledger serve` on `data_dir` with `args` added, and waits until it answers.
    pub async fn start(data_dir: &Path, args: &[&str]) -> ServerProcess {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        ServerProcess::start_on(data_dir, free_port(), free_port(), args).await
    }

    async fn start_on(
        data_dir: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        args: Vec<String>,
    ) -> ServerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .arg("serve")
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", "warn"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start runledger serve");
        let mut server = ServerProcess {
            child,
            grpc,
            http,
            data_dir: data_dir.to_path_buf(),
            args,
        };
        server.wait_until_serving().await;
        server
    }

    /// SIGKILL, then a new server on the same data directory, ports and flags.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        let again =
            ServerProcess::start_on(&self.data_dir, self.grpc, self.http, self.args.clone()).await;
        // The old child is reaped; dropping the struct it lived in kills nothing more.
        *self = again;
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

    async fn wait_until_serving(&mut self) {
        for _ in 0..START_ATTEMPTS {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("runledger serve exited during startup: {status}");
            }
            if let Ok(channel) = self.channel().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("runledger serve did not answer on {}", self.grpc);
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

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `runledger ARGS...` to completion.
pub fn runledger(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runledger")
}

/// `runledger check --data-dir DIR`: whether it passed, and what it printed.
pub fn check(data_dir: &Path) -> (bool, String) {
    let out = runledger(&[
        "check".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
