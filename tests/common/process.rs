//! The real `runledger` binary as a child process: `serve` on free loopback ports, killed with
//! SIGKILL when dropped; and one-shot commands with their output.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use tonic::transport::{Channel, Endpoint};

/// Attempts (100 ms apart) to reach a starting server before giving up.
const START_ATTEMPTS: u32 = 300;

pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub http_url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl ServerProcess {
    /// `runledger serve` with `args` (the store flags) on free ports, once it answers.
    pub async fn start(args: &[&str]) -> ServerProcess {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(["serve", "--grpc-addr", &grpc, "--http-addr", &http])
            .args(["--log-level", "error"])
            .args(args)
            .env_remove("RUNLEDGER_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start runledger serve");
        let mut server = ServerProcess {
            child,
            url: format!("http://{grpc}"),
            http_url: format!("http://{http}"),
        };
        server.wait_until_serving().await;
        server
    }

    async fn wait_until_serving(&mut self) {
        for _ in 0..START_ATTEMPTS {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("runledger serve exited during startup: {status}");
            }
            if let Ok(mut client) = self.client().await
                && client.list_runs(ListRunsRequest::default()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("runledger serve did not answer on {}", self.url);
    }

    pub async fn client(&self) -> Result<RunServiceClient<Channel>, tonic::transport::Error> {
        let channel = Endpoint::from_shared(self.url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?;
        Ok(RunServiceClient::new(channel))
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `runledger args...` to completion (with `stdin` as its input, if given), without the
/// caller's RUNLEDGER_DATABASE_URL.
pub fn runledger(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_runledger"))
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
