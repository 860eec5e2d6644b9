//! Exactly once across kill -9: the real `runledger` binary schedules a recurring run every
//! second and is killed with SIGKILL (at moments when it is backfilling the seconds it was
//! down, among others) and restarted, four times. Afterwards every scheduled second from the
//! first to the tenth has exactly one run (no duplicate, no gap), and `runledger check` passes.
//! Bounded: ten runs, about twenty seconds; 127.0.0.1 only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runledger::api::pipeline_service_client::PipelineServiceClient;
use runledger::api::recurring_run_service_client::RecurringRunServiceClient;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use tonic::transport::{Channel, Endpoint};

/// Runs the recurring run may have unfinished (they stay PENDING): the test's total.
const RUNS: i64 = 10;
/// Kill the server as soon as it has created this many runs.
const KILL_AT: [usize; 4] = [1, 3, 5, 7];
/// The longest wait for anything (a start, a run), whatever the machine's load.
const PATIENCE: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `runledger serve` child process, killed with SIGKILL when dropped.
struct ServerProcess {
    child: Child,
    channel: Channel,
}

impl ServerProcess {
    async fn start(dir: &Path) -> ServerProcess {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(["serve", "--grpc-addr", &grpc, "--http-addr", &http])
            .args(["--log-level", "error"])
            .arg("--data-dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start runledger serve");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("poll child") {
                panic!("runledger serve exited during startup: {status}");
            }
            let connected = Endpoint::from_shared(format!("http://{grpc}"))
                .expect("endpoint")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await;
            if let Ok(channel) = connected {
                return ServerProcess { child, channel };
            }
            assert!(Instant::now() < deadline, "runledger serve did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn runs(&self) -> RunServiceClient<Channel> {
        RunServiceClient::new(self.channel.clone())
    }

    fn kill(mut self) {
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

/// The runs of the recurring run, by scheduled time.
async fn runs_of(server: &ServerProcess, recurring_run_id: &str) -> Vec<Run> {
    let filter = format!(
        r#"{{"predicates":[{{"key":"recurring_run_id","operation":"EQUALS","string_value":"{recurring_run_id}"}}]}}"#
    );
    let page = server
        .runs()
        .list_runs(ListRunsRequest {
            filter,
            sort_by: "scheduled_at".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list runs")
        .into_inner();
    page.runs
}

/// Waits until the recurring run has at least `count` runs.
async fn wait_for(server: &ServerProcess, recurring_run_id: &str, count: usize) -> Vec<Run> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let runs = runs_of(server, recurring_run_id).await;
        if runs.len() >= count {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "{} runs, expected {count}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

fn spec() -> runledger::wkt::StructBytes {
    let tree: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": "every-second"},
        "root": {"dag": {"tasks": {}}},
    }))
    .unwrap();
    tree.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheduled_time_gets_exactly_one_run_across_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path()).await;
    let mut pipelines = PipelineServiceClient::new(server.channel.clone());
    let pipeline = pipelines
        .create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(Pipeline {
                name: "every-second".into(),
                ..Default::default()
            }),
            pipeline_version: Some(PipelineVersion {
                pipeline_spec: Some(spec()),
                ..Default::default()
            }),
        })
        .await
        .expect("create pipeline")
        .into_inner();
    let recurring = RecurringRunServiceClient::new(server.channel.clone())
        .create_recurring_run(CreateRecurringRunRequest {
            recurring_run: Some(RecurringRun {
                display_name: "every second".into(),
                max_concurrency: RUNS,
                mode: recurring_run::Mode::Enable as i32,
                trigger: Some(Trigger {
                    trigger: Some(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                        interval_second: 1,
                        ..Default::default()
                    })),
                }),
                pipeline_source: Some(recurring_run::PipelineSource::PipelineVersionReference(
                    PipelineVersionReference {
                        pipeline_id: pipeline.pipeline_id.clone(),
                        pipeline_version_id: String::new(),
                    },
                )),
                ..Default::default()
            }),
        })
        .await
        .expect("create recurring run")
        .into_inner();
    let id = recurring.recurring_run_id.clone();
    let first = recurring.created_at.expect("created_at").seconds + 1;

    for count in KILL_AT {
        wait_for(&server, &id, count).await;
        server.kill();
        check_data_dir(dir.path());
        server = ServerProcess::start(dir.path()).await;
    }
    let runs = wait_for(&server, &id, RUNS as usize).await;
    // Nothing more comes: the ten are unfinished, max_concurrency is ten.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs_later = runs_of(&server, &id).await;
    assert_eq!(
        runs_later.len(),
        runs.len(),
        "more runs than max_concurrency"
    );

    let seconds: Vec<i64> = runs
        .iter()
        .map(|r| r.scheduled_at.expect("scheduled_at").seconds)
        .collect();
    assert_eq!(
        seconds,
        (first..first + RUNS).collect::<Vec<_>>(),
        "each scheduled second once, none missing"
    );
    let mut indexes: Vec<i64> = runs
        .iter()
        .map(|r| {
            let mut parts = r.display_name.rsplit('-');
            parts.next();
            parts.next().and_then(|i| i.parse().ok()).expect("an index")
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, (1..=RUNS).collect::<Vec<_>>());
    for run in &runs {
        let reference = match &run.pipeline_source {
            Some(run::PipelineSource::PipelineVersionReference(r)) => r,
            other => panic!("not a version reference: {other:?}"),
        };
        assert_eq!(reference.pipeline_id, pipeline.pipeline_id);
        assert!(!reference.pipeline_version_id.is_empty());
    }
    server.kill();
    check_data_dir(dir.path());
}
