//! Crash test: the real `runledger` binary under concurrent CreateRun / ReportRunState load is
//! killed with SIGKILL at several points. After each kill, `runledger check` must pass on the
//! data dir, and a server restarted on it must hold every acknowledged run with at least its
//! acknowledged state. Bounded: a few rounds of a few hundred writes, 127.0.0.1 only.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

const CLIENTS: usize = 6;
const ROUNDS: usize = 5;
/// Attempts (100 ms apart) to reach a starting server before giving up.
const START_ATTEMPTS: u32 = 300;

/// A `runledger serve` child process, killed with SIGKILL when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    async fn start(dir: &Path) -> ServerProcess {
        // Pick a free port by binding :0 first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(["serve", "--grpc-addr", &addr, "--log-level", "error"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--durability", "durable"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start runledger serve");
        let mut server = ServerProcess {
            child,
            url: format!("http://{addr}"),
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

    async fn client(&self) -> Result<RunServiceClient<Channel>, tonic::transport::Error> {
        let channel = Endpoint::from_shared(self.url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?;
        Ok(RunServiceClient::new(channel))
    }

    /// SIGKILL, and reap the process.
    fn kill(&mut self) {
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

/// How far along the PENDING → RUNNING → SUCCEEDED path a state is.
fn rank(state: i32) -> usize {
    [
        RuntimeState::Pending,
        RuntimeState::Running,
        RuntimeState::Succeeded,
    ]
    .iter()
    .position(|s| *s as i32 == state)
    .unwrap_or_else(|| panic!("unexpected state {state}"))
}

/// Acknowledged writes: run_id → the latest state the server acknowledged.
#[derive(Default)]
struct Acks {
    states: Mutex<HashMap<String, i32>>,
    count: AtomicUsize,
    /// Ack count at which the killer fires, and its signal.
    kill_at: AtomicUsize,
    reached: Notify,
    stop: AtomicBool,
}

impl Acks {
    fn record(&self, run_id: &str, state: i32) {
        self.states.lock().unwrap().insert(run_id.to_owned(), state);
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.kill_at.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }
}

/// One client: create a run, report RUNNING, report SUCCEEDED, next run; until an error (the
/// server is gone) or the stop flag.
async fn drive(mut client: RunServiceClient<Channel>, acks: Arc<Acks>, round: usize, id: usize) {
    for i in 0.. {
        if acks.stop.load(Ordering::SeqCst) {
            return;
        }
        let run_id = format!("r{round}-c{id}-{i}");
        let created = client
            .create_run(CreateRunRequest {
                run: Some(Run {
                    run_id: run_id.clone(),
                    display_name: format!("crash {run_id}"),
                    pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        match created {
            Ok(run) => acks.record(&run_id, run.into_inner().state),
            Err(_) => return,
        }
        for state in [RuntimeState::Running, RuntimeState::Succeeded] {
            let reported = client
                .report_run_state(ReportRunStateRequest {
                    run_id: run_id.clone(),
                    state: state as i32,
                    ..Default::default()
                })
                .await;
            match reported {
                Ok(run) => acks.record(&run_id, run.into_inner().state),
                Err(_) => return,
            }
        }
    }
}

fn check_data_dir(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .arg("check")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run runledger check");
    assert!(
        out.status.success(),
        "runledger check failed after a kill:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every acknowledged run exists, with its acknowledged state in its history and a current
/// state no earlier than it.
async fn verify(server: &ServerProcess, acked: &HashMap<String, i32>) {
    let mut client = server.client().await.expect("connect after restart");
    for (run_id, state) in acked {
        let run = client
            .get_run(GetRunRequest {
                run_id: run_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged run {run_id} lost: {e}"))
            .into_inner();
        assert!(
            run.state_history.iter().any(|s| s.state == *state),
            "run {run_id}: acknowledged state {state} missing from its history {:?}",
            run.state_history
        );
        assert!(
            rank(run.state) >= rank(*state),
            "run {run_id} went back from acknowledged state {state} to {}",
            run.state
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_the_store_stays_consistent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all_acked: HashMap<String, i32> = HashMap::new();
    let mut server = ServerProcess::start(dir.path()).await;
    for round in 0..ROUNDS {
        // Kill at a different point each round.
        let kill_at = 40 + 120 * round;
        let acks = Arc::new(Acks::default());
        acks.kill_at.store(kill_at, Ordering::SeqCst);
        let mut clients = Vec::new();
        for id in 0..CLIENTS {
            let client = server.client().await.expect("connect");
            clients.push(tokio::spawn(drive(client, acks.clone(), round, id)));
        }
        acks.reached.notified().await;
        server.kill();
        acks.stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.expect("client task");
        }
        let acked = std::mem::take(&mut *acks.states.lock().unwrap());
        assert!(
            acked.len() >= kill_at / 3,
            "round {round}: load did not run"
        );
        all_acked.extend(acked);

        check_data_dir(dir.path());
        server = ServerProcess::start(dir.path()).await;
        verify(&server, &all_acked).await;
    }
    server.kill();
    check_data_dir(dir.path());
}
