//! The PostgreSQL backend under faults: a replica killed with SIGKILL under concurrent load, the
//! database stopped and crashed mid-load (UNAVAILABLE naming it and health NOT_SERVING
//! meanwhile, then recovery), and the error paths of the binary: an unreachable database, a bad
//! URL, a schema from a newer runledger, `check` finding what disagrees. Every acknowledged
//! write must be there afterwards. Bounded: a few hundred writes, loopback only.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{ServerProcess, runledger};
use common::*;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use runledger::store::{self, Location};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const LONG: Duration = Duration::from_secs(60);

/// How far along PENDING → RUNNING → SUCCEEDED a state is.
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

/// What a load saw: acknowledged run states, and the codes of failed calls.
#[derive(Default)]
struct Load {
    acked: Mutex<HashMap<String, i32>>,
    count: AtomicUsize,
    errors: Mutex<Vec<(Code, String)>>,
    stop: AtomicBool,
}

impl Load {
    fn ack(&self, run_id: &str, state: i32) {
        self.acked.lock().unwrap().insert(run_id.to_owned(), state);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    async fn until(&self, count: usize, what: &str) {
        tokio::time::timeout(LONG, async {
            while self.count.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: fewer than {count} acknowledged writes in time"));
    }
}

/// One client: creates runs with ids of its own and takes each to SUCCEEDED, recording what was
/// acknowledged, until told to stop or (with `stop_on_error`) its server fails.
async fn client_loop(
    mut client: RunServiceClient<Channel>,
    name: String,
    load: Arc<Load>,
    stop_on_error: bool,
) {
    let mut n = 0;
    while !load.stop.load(Ordering::SeqCst) {
        n += 1;
        let run_id = format!("{name}-{n}");
        let mut run = new_run(&run_id);
        run.run_id = run_id.clone();
        let steps = [
            None,
            Some(RuntimeState::Running),
            Some(RuntimeState::Succeeded),
        ];
        for step in steps {
            let result = match step {
                None => client
                    .create_run(CreateRunRequest {
                        run: Some(run.clone()),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().state),
                Some(state) => client
                    .report_run_state(ReportRunStateRequest {
                        run_id: run_id.clone(),
                        state: state as i32,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().state),
            };
            match result {
                Ok(state) => load.ack(&run_id, state),
                Err(status) => {
                    load.errors
                        .lock()
                        .unwrap()
                        .push((status.code(), status.message().to_owned()));
                    if stop_on_error {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}

/// Every acknowledged run is there, at least as far along as acknowledged.
async fn assert_every_ack_present(client: &mut RunServiceClient<Channel>, load: &Load) {
    let acked = load.acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for (run_id, state) in acked {
        let stored = client
            .get_run(GetRunRequest {
                run_id: run_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("acknowledged run {run_id} is gone: {s:?}"))
            .into_inner();
        assert!(
            rank(stored.state) >= rank(state),
            "run {run_id} went back from {state} to {}",
            stored.state
        );
    }
}

fn assert_check_passes(url: &str) {
    let out = runledger(&["check", "--database-url", url], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("consistent"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_no_acknowledged_write() {
    let Some(location) = database_location("replica_killed_under_load").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let store = ["--database-url".as_ref(), url.as_ref()];
    let mut doomed = ServerProcess::start(dirs[0].path(), &store);
    let survivor = ServerProcess::start(dirs[1].path(), &store);
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for i in 0..6 {
        let (server, stop_on_error) = if i < 3 {
            (&doomed, true)
        } else {
            (&survivor, false)
        };
        let client = server.client().await.expect("connect");
        clients.push(tokio::spawn(client_loop(
            client,
            format!("c{i}"),
            load.clone(),
            stop_on_error,
        )));
    }
    load.until(90, "before the kill").await;
    doomed.kill();
    let killed_at = load.count.load(Ordering::SeqCst);
    load.until(killed_at + 30, "after the kill").await;
    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(LONG, client)
            .await
            .expect("clients stop")
            .expect("client");
    }
    assert_every_ack_present(&mut survivor.client().await.expect("connect"), &load).await;
    drop(survivor);
    assert_check_passes(&url);
}

async fn health(channel: Channel) -> Option<i32> {
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

async fn wait_health(server: &TestServer, want: ServingStatus) {
    tokio::time::timeout(LONG, async {
        while health(server.channel().await).await != Some(want as i32) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("health did not become {want:?}"));
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// A clean shutdown (pg_ctl stop -m fast).
    Stop,
    /// SIGKILL of the postmaster: crash recovery at the next start.
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_stopped_or_crashed_mid_load_is_unavailable_meanwhile_and_loses_nothing() {
    let test = "database_restart_mid_load";
    let Some(cluster) =
        tokio::task::spawn_blocking(move || runledger_testkit::postgres::cluster_or_skip(test))
            .await
            .expect("start a cluster")
    else {
        return;
    };
    let mut cluster = Some(cluster);
    let url = cluster
        .as_ref()
        .unwrap()
        .create_database("faults")
        .expect("database");
    let location = Location::Database {
        url: url.clone(),
        options: postgres_options(&Default::default()),
    };
    let server = TestServer::start_at_location(location.clone()).await;
    let replica = TestServer::start_at_location(location).await;
    let mut watch = replica
        .runs()
        .await
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(tokio::spawn(client_loop(
            server.runs().await,
            format!("c{i}"),
            load.clone(),
            false,
        )));
    }
    load.until(30, "before the first outage").await;
    let known = load.acked.lock().unwrap().keys().next().cloned().unwrap();
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    for outage in [Outage::Stop, Outage::Kill] {
        let mut pg = cluster.take().unwrap();
        let pg = tokio::task::spawn_blocking(move || {
            match outage {
                Outage::Stop => pg.stop().expect("stop"),
                Outage::Kill => pg.kill().expect("kill"),
            }
            pg
        })
        .await
        .expect("outage");

        // While it is down: UNAVAILABLE naming the database, on both APIs, and NOT_SERVING.
        let status = server
            .runs()
            .await
            .get_run(GetRunRequest {
                run_id: known.clone(),
                ..Default::default()
            })
            .await
            .expect_err("the database is down");
        assert_eq!(status.code(), Code::Unavailable, "{outage:?}: {status:?}");
        assert!(
            status
                .message()
                .contains(&format!("127.0.0.1:{port}/faults")),
            "{outage:?}: {}",
            status.message()
        );
        let http = common::rest::Http::new(&server)
            .get(&format!("/runs/{known}"))
            .await;
        http.expect_error(503, Code::Unavailable as i64);
        wait_health(&server, ServingStatus::NotServing).await;

        let before = load.count.load(Ordering::SeqCst);
        let pg = tokio::task::spawn_blocking(move || {
            let mut pg = pg;
            pg.start_again().expect("start again");
            pg
        })
        .await
        .expect("restart");
        cluster = Some(pg);
        wait_health(&server, ServingStatus::Serving).await;
        load.until(before + 30, &format!("after the {outage:?}"))
            .await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(LONG, client)
            .await
            .expect("clients stop")
            .expect("client");
    }

    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.iter().all(|(code, _)| *code == Code::Unavailable),
        "every failure during the outages is UNAVAILABLE: {errors:?}"
    );
    assert_every_ack_present(&mut replica.runs().await, &load).await;

    // The replica's change follower reconnected: a run created now reaches its watcher.
    let after = create_run(&mut server.runs().await, new_run("after the outages")).await;
    tokio::time::timeout(LONG, async {
        loop {
            let event = watch.message().await.expect("watch open").expect("event");
            if event.run.is_some_and(|r| r.run_id == after.run_id) {
                return;
            }
        }
    })
    .await
    .expect("the watcher sees a run created after the outages");
    drop((server, replica));
    assert_check_passes(&url);
}

#[test]
fn a_server_whose_database_is_unreachable_exits_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://ledger:s3cret@127.0.0.1:{port}/gone");
    let out = runledger(
        &[
            "serve",
            "--database-url",
            &url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/gone")) && stderr.contains("unreachable"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is never shown: {stderr}"
    );
}

#[test]
fn migrate_refuses_a_data_dir_flag_with_a_database_url() {
    let out = runledger(
        &[
            "migrate",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "--chunk-runs",
            "10",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--chunk-runs") && stderr.contains("--database-url"),
        "{stderr}"
    );
}

#[test]
fn a_bad_database_url_is_refused_naming_what_is_wrong() {
    for (url, needle) in [
        ("mysql://localhost/runs", "postgres://USER"),
        ("postgres://localhost/runs?sslmode=sometimes", "sslmode"),
        ("postgres://localhost/runs?colour=blue", "colour"),
    ] {
        for command in [&["migrate"][..], &["check"], &["export"]] {
            let mut args = command.to_vec();
            args.extend(["--database-url", url]);
            let out = runledger(&args, None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_runledger_is_refused() {
    let Some(location) = database_location("newer_schema").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let out = runledger(&["migrate", "--database-url", &url], None);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migration 1"));
    let out = runledger(&["migrate", "--database-url", &url], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    let client = sql(&url).await;
    client
        .execute(
            "INSERT INTO schema_migrations (version, description) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    for command in ["migrate", "check"] {
        let out = runledger(&[command, "--database-url", &url], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("version 999"), "{command}: {stderr}");
        assert!(stderr.contains("newer runledger"), "{command}: {stderr}");
    }
    let err = store::open(&location).await.err().expect("refused");
    assert!(err.message().contains("newer runledger"), "{err}");
}

#[tokio::test]
async fn check_finds_rows_that_disagree_with_their_records() {
    let Some(location) = database_location("check_finds_disagreement").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let server = TestServer::start_at_location(location).await;
    let mut runs = server.runs().await;
    let mut created = Vec::new();
    for i in 0..3 {
        let mut run = new_run(&format!("r{i}"));
        run.pipeline_source = Some(run::PipelineSource::PipelineSpec(
            pbjson_types::Struct::default().into(),
        ));
        created.push(create_run(&mut runs, run).await);
    }
    server.stop().await;
    assert_check_passes(&url);

    let client = sql(&url).await;
    client
        .batch_execute(
            "UPDATE counts SET n = n + 1 WHERE kind = 'a';
             UPDATE specs SET refs = 7;",
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE runs SET state = 'RUNNING' WHERE run_id = $1",
            &[&created[1].run_id.as_bytes()],
        )
        .await
        .unwrap();
    let out = runledger(&["check", "--database-url", &url], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in [
        "counter (every run, PENDING, AVAILABLE): 4, but 3 records".to_owned(),
        format!("run {:?}: column state disagrees", created[1].run_id),
        "reference count 7, but 3 runs, pipeline versions and recurring runs hold it".to_owned(),
    ] {
        assert!(stdout.contains(&needle), "{needle} in {stdout}");
    }
    let out = runledger(&["check", "--repair", "--database-url", &url], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repair"));
}

#[tokio::test]
async fn check_finds_pipelines_versions_and_recurring_runs_that_disagree_with_their_records() {
    let Some(location) = database_location("check_finds_catalog_disagreement").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let server = TestServer::start_at_location(location).await;
    let version = stored_version(&server).await;
    let mut experiments = server.experiments().await;
    let experiment = create_experiment(&mut experiments, "e", "").await;
    create_periodic_run(
        &server,
        &experiment.experiment_id,
        86400,
        1,
        recurring_run::Mode::Disable,
        version.clone(),
    )
    .await;
    server.stop().await;
    assert_check_passes(&url);

    let client = sql(&url).await;
    client
        .batch_execute(
            "UPDATE catalog SET display_name = 'renamed' WHERE kind = 'j';
             UPDATE counts SET n = n + 1 WHERE kind = 'g';
             INSERT INTO catalog_tags (kind, id, key, value)
                 SELECT kind, id, 'k', 'v' FROM catalog WHERE kind = 'v';
             UPDATE specs SET refs = 5;",
        )
        .await
        .unwrap();
    client
        .execute(
            "DELETE FROM catalog WHERE kind = 'i' AND id = $1",
            &[&version.pipeline_id.as_bytes()],
        )
        .await
        .unwrap();
    let out = runledger(&["check", "--database-url", &url], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in [
        "recurring run".to_owned(),
        "column display_name disagrees with the record".to_owned(),
        "counter (every recurring run): 2, but 1 records".to_owned(),
        format!(
            "pipeline version {:?}: column tags disagrees",
            version.pipeline_version_id
        ),
        format!(
            "pipeline version {:?}: its pipeline {:?} does not exist",
            version.pipeline_version_id, version.pipeline_id
        ),
        "counter (pipelines of namespace \"\"): 1, but 0 records".to_owned(),
        "reference count 5, but 1 runs, pipeline versions and recurring runs hold it".to_owned(),
    ] {
        assert!(stdout.contains(&needle), "{needle} in {stdout}");
    }
}

#[tokio::test]
async fn a_write_that_finds_derived_data_inconsistent_is_refused_whole() {
    let Some(location) = database_location("write_refused_on_inconsistency").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let server = TestServer::start_at_location(location).await;
    let mut runs = server.runs().await;
    let mut run = new_run("kept");
    run.pipeline_source = Some(run::PipelineSource::PipelineSpec(
        pbjson_types::Struct::default().into(),
    ));
    let run = create_run(&mut runs, run).await;
    let client = sql(&url).await;
    let delete = || {
        let mut runs = runs.clone();
        let run_id = run.run_id.clone();
        async move {
            runs.delete_run(DeleteRunRequest {
                run_id,
                ..Default::default()
            })
            .await
        }
    };
    // The spec it names is gone: its reference cannot be dropped.
    client.batch_execute("DELETE FROM specs").await.unwrap();
    let status = delete().await.expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().contains("which is not stored"),
        "{status:?}"
    );
    // A counter already at zero: it cannot go below.
    client
        .batch_execute(
            "INSERT INTO specs (digest, bytes, refs) SELECT spec_digest, '', 1 FROM runs;
             UPDATE counts SET n = 0 WHERE kind = 'a'",
        )
        .await
        .unwrap();
    let status = delete().await.expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("below zero"), "{status:?}");
    // Nothing of either write happened, and the server still serves.
    let kept = runs
        .get_run(GetRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the run is still there")
        .into_inner();
    assert_eq!(kept.run_id, run.run_id);
    create_run(&mut runs, new_run("still writable")).await;
}
