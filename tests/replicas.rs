//! Several runledger replicas on one PostgreSQL database behave as one server: what one writes
//! the other reads, lists (with the first one's page tokens) and watches; compare-and-set and
//! the default experiment hold across them; replicas starting together migrate once; one
//! replica's scheduler at a time creates a recurring run's runs, each scheduled time once.
//! In-process replicas (two stores, two pools, two servers) on a database of the test binary's
//! cluster; the process-level faults are in tests/postgres_faults.rs.

mod common;

use std::time::Duration;

use common::*;
use runledger::api::*;
use runledger::store::{self, Location};
use tokio::time::timeout;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

/// Two replicas on one fresh database (None: no PostgreSQL here).
async fn two_replicas(test: &'static str) -> Option<(TestServer, TestServer)> {
    let location = database_location(test).await?;
    let a = TestServer::start_at_location(location.clone()).await;
    let b = TestServer::start_at_location(location).await;
    Some((a, b))
}

async fn next_event(stream: &mut tonic::Streaming<RunEvent>) -> RunEvent {
    timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("an event")
}

#[tokio::test]
async fn a_run_created_on_one_replica_is_read_listed_and_watched_on_the_other() {
    let Some((a, b)) = two_replicas("created_on_one_replica").await else {
        return;
    };
    let mut watch = b
        .runs()
        .await
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch on B")
        .into_inner();
    let experiment = create_experiment(&mut a.experiments().await, "shared", "team").await;
    let mut on_a = a.runs().await;
    let mut created = Vec::new();
    for i in 0..5 {
        let mut run = new_run(&format!("run {i}"));
        run.experiment_id = experiment.experiment_id.clone();
        created.push(create_run(&mut on_a, run).await);
    }
    on_a.report_run_state(ReportRunStateRequest {
        run_id: created[0].run_id.clone(),
        state: RuntimeState::Running as i32,
        ..Default::default()
    })
    .await
    .expect("report on A");

    let mut on_b = b.runs().await;
    for run in &created[1..] {
        let got = on_b
            .get_run(GetRunRequest {
                run_id: run.run_id.clone(),
                ..Default::default()
            })
            .await
            .expect("get on B")
            .into_inner();
        assert_eq!(&got, run);
    }

    // A page token from A continues the listing on B.
    let first = on_a
        .list_runs(ListRunsRequest {
            experiment_id: experiment.experiment_id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list on A")
        .into_inner();
    assert_eq!(first.total_size, 5);
    let rest = list_all(
        &mut on_b,
        ListRunsRequest {
            experiment_id: experiment.experiment_id.clone(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = first.runs.iter().chain(&rest).map(|r| &r.run_id).collect();
    let expected: Vec<_> = created.iter().map(|r| &r.run_id).collect();
    assert_eq!(ids, expected);

    // B's watcher saw A's writes, in commit order.
    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(next_event(&mut watch).await);
    }
    let seen: Vec<(i32, String)> = events
        .iter()
        .map(|e| (e.r#type, e.run.as_ref().unwrap().run_id.clone()))
        .collect();
    let mut want: Vec<(i32, String)> = created
        .iter()
        .map(|r| (run_event::Type::Created as i32, r.run_id.clone()))
        .collect();
    want.push((run_event::Type::Updated as i32, created[0].run_id.clone()));
    assert_eq!(seen, want);
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(
        events[5].run.as_ref().unwrap().state,
        RuntimeState::Running as i32
    );

    // A watcher on A resumes where B's left off: sequence numbers are the database's.
    let mut resumed = on_a
        .watch_runs(WatchRunsRequest {
            resume_after: events[3].sequence,
            ..Default::default()
        })
        .await
        .expect("resume on A")
        .into_inner();
    for expected in &events[4..] {
        assert_eq!(next_event(&mut resumed).await.sequence, expected.sequence);
    }
}

#[tokio::test]
async fn reports_racing_through_two_replicas_lose_no_update() {
    let Some((a, b)) = two_replicas("reports_racing").await else {
        return;
    };
    let run = create_run(&mut a.runs().await, new_run("raced")).await;
    const CHANGES: usize = 40;
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { a.url() } else { b.url() };
        let run_id = run.run_id.clone();
        let applied = applied.clone();
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(server)
                .unwrap()
                .connect()
                .await
                .expect("connect");
            let mut client = run_service_client::RunServiceClient::new(channel);
            use std::sync::atomic::Ordering::SeqCst;
            while applied.load(SeqCst) < CHANGES {
                let current = client
                    .get_run(GetRunRequest {
                        run_id: run_id.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("get")
                    .into_inner()
                    .state;
                // RUNNING <-> PAUSED, each report naming the state it read.
                let next = if current == RuntimeState::Running as i32 {
                    RuntimeState::Paused
                } else {
                    RuntimeState::Running
                };
                let reported = client
                    .report_run_state(ReportRunStateRequest {
                        run_id: run_id.clone(),
                        state: next as i32,
                        expected_state: current,
                        ..Default::default()
                    })
                    .await;
                match reported {
                    Ok(_) => {
                        applied.fetch_add(1, SeqCst);
                    }
                    // Another report won the race: read again.
                    Err(status) if status.code() == Code::Aborted => {}
                    Err(status) => panic!("unexpected {status:?}"),
                }
            }
        }));
    }
    for task in tasks {
        timeout(Duration::from_secs(120), task)
            .await
            .expect("reports finish")
            .expect("reporter");
    }
    let applied = applied.load(std::sync::atomic::Ordering::SeqCst);
    let stored = b
        .runs()
        .await
        .get_run(GetRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    // PENDING, then one entry per applied report: none overwritten by a racing one.
    assert_eq!(stored.state_history.len(), 1 + applied);
    let states: Vec<i32> = stored.state_history.iter().map(|s| s.state).collect();
    assert!(
        states[1..].windows(2).all(|w| w[0] != w[1]),
        "every entry changes the state: {states:?}"
    );
}

#[tokio::test]
async fn runs_created_without_an_experiment_on_two_replicas_share_one_default_experiment() {
    let Some((a, b)) = two_replicas("default_experiment_race").await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { a.url() } else { b.url() };
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(server)
                .unwrap()
                .connect()
                .await
                .expect("connect");
            let mut client = run_service_client::RunServiceClient::new(channel);
            let mut run = new_run(&format!("racer {i}"));
            run.namespace = "race".into();
            create_run(&mut client, run).await
        }));
    }
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(timeout(WAIT, task).await.expect("create").expect("task"));
    }
    let experiments = a
        .experiments()
        .await
        .list_experiments(ListExperimentsRequest {
            namespace: "race".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(experiments.experiments.len(), 1, "{experiments:?}");
    let default = &experiments.experiments[0];
    assert_eq!(default.display_name, "Default");
    assert!(
        runs.iter()
            .all(|r| r.experiment_id == default.experiment_id)
    );
}

#[tokio::test]
async fn the_same_experiment_name_on_two_replicas_is_created_once() {
    let Some((a, b)) = two_replicas("experiment_name_race").await else {
        return;
    };
    let create = |server: String| async move {
        let channel = tonic::transport::Channel::from_shared(server)
            .unwrap()
            .connect()
            .await
            .expect("connect");
        experiment_service_client::ExperimentServiceClient::new(channel)
            .create_experiment(CreateExperimentRequest {
                experiment: Some(Experiment {
                    display_name: "once".into(),
                    namespace: "ns".into(),
                    ..Default::default()
                }),
            })
            .await
    };
    let (on_a, on_b) = tokio::join!(create(a.url()), create(b.url()));
    let codes = [&on_a, &on_b].map(|r| r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok));
    let mut sorted = codes;
    sorted.sort_by_key(|c| *c as i32);
    assert_eq!(sorted, [Code::Ok, Code::AlreadyExists], "{on_a:?} {on_b:?}");
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    let Some(location) = database_location("replicas_starting_together").await else {
        return;
    };
    let opened =
        futures::future::join_all((0..4).map(|_| async { store::open(&location).await })).await;
    let mut stores = Vec::new();
    for store in opened {
        stores.push(store.expect("every replica starts"));
    }
    let client = sql(database_url(&location)).await;
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("read migrations");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i32> = runledger::store::postgres::migrate::MIGRATIONS
        .iter()
        .map(|(v, _, _)| *v)
        .collect();
    assert_eq!(versions, expected);
    // And they share one page-token key.
    let mut keys = Vec::new();
    for store in &stores {
        keys.push(store.token_key().await.expect("key"));
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    for store in stores {
        store.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_replica_that_missed_pruned_changes_ends_its_watches_saying_so() {
    let Some(location) = database_location("missed_pruned_changes").await else {
        return;
    };
    let a = TestServer::start_at_location(location.clone()).await;
    let b = TestServer::start_at_location(location.clone()).await;
    let before = create_run(&mut a.runs().await, new_run("before")).await;
    let mut on_b = b.runs().await;
    let mut watch = on_b
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    // Five changes B will never read: as if they were committed and pruned while it was cut
    // off from the database.
    sql(database_url(&location))
        .await
        .batch_execute("UPDATE change_seq SET last = last + 5")
        .await
        .unwrap();
    create_run(&mut a.runs().await, new_run("after")).await;
    // (B may still deliver the run created before the watch started, having read it late.)
    let status = timeout(WAIT, async {
        loop {
            match watch.message().await {
                Ok(Some(event)) if event.run.as_ref().unwrap().run_id == before.run_id => {}
                Ok(other) => panic!("the watch goes on: {other:?}"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("an answer in time");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("missed 5 changes"), "{status:?}");
    // Resuming from before the gap is refused; a new watch works.
    let status = on_b
        .watch_runs(WatchRunsRequest {
            resume_after: 1,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let mut fresh = on_b
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch again")
        .into_inner();
    let third = create_run(&mut a.runs().await, new_run("third")).await;
    let event = next_event(&mut fresh).await;
    assert_eq!(event.run.unwrap().run_id, third.run_id);
}

#[tokio::test]
async fn the_change_log_and_specs_no_run_holds_are_trimmed() {
    let Some(Location::Database { url, .. }) = database_location("log_trimmed").await else {
        return;
    };
    let location = Location::Database {
        url,
        options: store::PostgresOptions {
            pool_size: 4,
            event_retain: 10,
            log_retain: 10,
            poll_interval: Duration::from_millis(50),
            prune_every: Duration::from_millis(50),
            ..Default::default()
        },
    };
    let server = TestServer::start_at_location(location.clone()).await;
    let mut runs = server.runs().await;
    let spec: pbjson_types::Struct =
        serde_json::from_value(serde_json::json!({"root": {"dag": {}}})).unwrap();
    let spec = run::PipelineSource::PipelineSpec(spec.into());
    let mut with_spec = Vec::new();
    for i in 0..12 {
        let mut run = new_run(&format!("with the spec {i}"));
        run.pipeline_source = Some(spec.clone());
        with_spec.push(create_run(&mut runs, run).await);
    }
    for run in &with_spec {
        runs.delete_run(DeleteRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
    }
    // Newer changes push the deletions (which name the spec) out of the retained log.
    for i in 0..12 {
        create_run(&mut runs, new_run(&format!("without {i}"))).await;
    }
    let db = sql(database_url(&location)).await;
    timeout(WAIT, async {
        loop {
            let row = db
                .query_one(
                    "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM specs)",
                    &[],
                )
                .await
                .unwrap();
            let (changes, specs): (i64, i64) = (row.get(0), row.get(1));
            if changes <= 10 && specs == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the log is trimmed to 10 changes and the spec released");
    // A watcher cannot resume from a trimmed change.
    let status = runs
        .watch_runs(WatchRunsRequest {
            resume_after: 2,
            ..Default::default()
        })
        .await
        .expect_err("trimmed");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    server.stop().await;
    let report = store::check_database(database_url(&location))
        .await
        .expect("check");
    assert!(report.is_consistent(), "{report}");
}

/// The runs a recurring run created so far, by scheduled time.
async fn runs_of(server: &TestServer, recurring_run_id: &str) -> Vec<Run> {
    let filter = serde_json::json!({"predicates": [{
        "key": "recurring_run_id", "operation": "EQUALS", "string_value": recurring_run_id
    }]});
    list_all(
        &mut server.runs().await,
        ListRunsRequest {
            filter: filter.to_string(),
            sort_by: "scheduled_at".into(),
            ..Default::default()
        },
    )
    .await
}

/// The scheduler lease's holder, as the database has it.
async fn lease_holder(db: &tokio_postgres::Client) -> Option<String> {
    db.query_opt("SELECT holder FROM leases WHERE name = 'scheduler'", &[])
        .await
        .expect("read the lease")
        .map(|row| String::from_utf8(row.get(0)).expect("a UTF-8 holder"))
}

/// Waits (bounded) until the recurring run has `count` runs; returns the lease holders seen
/// meanwhile, in order.
async fn wait_for_runs(
    server: &TestServer,
    db: &tokio_postgres::Client,
    recurring_run_id: &str,
    count: usize,
) -> Vec<String> {
    let mut holders: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(holder) = lease_holder(db).await
            && holders.last() != Some(&holder)
        {
            holders.push(holder);
        }
        let n = runs_of(server, recurring_run_id).await.len();
        if n >= count {
            return holders;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} runs of {count} after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_schedules_at_a_time_and_the_other_takes_over_each_time_once() {
    let Some(location) = database_location("one_scheduler_at_a_time").await else {
        return;
    };
    let url = database_url(&location).to_owned();
    let db = sql(&url).await;
    let a = TestServer::start_at_location(location.clone()).await;
    let b = TestServer::start_at_location(location).await;
    let version = stored_version(&a).await;
    let recurring = create_periodic_run(&a, "", 1, 10, recurring_run::Mode::Enable, version).await;
    let id = recurring.recurring_run_id;
    let first = recurring.created_at.expect("created_at").seconds + 1;

    // Both replicas run a scheduler; one holds the lease the whole time and schedules alone.
    let holders = wait_for_runs(&b, &db, &id, 5).await;
    assert_eq!(holders.len(), 1, "the lease changed hands: {holders:?}");

    // The replica that started first stops; whichever held the lease, the other one goes on
    // (once the lease has expired, if it was the stopped one's), creating the times it missed.
    a.stop().await;
    let after = wait_for_runs(&b, &db, &id, 10).await;
    assert!(
        after.len() <= 2,
        "the lease changed hands more than once: {after:?}"
    );

    let runs = runs_of(&b, &id).await;
    let seconds: Vec<i64> = runs
        .iter()
        .map(|r| r.scheduled_at.expect("scheduled_at").seconds)
        .collect();
    assert_eq!(
        seconds,
        (first..first + 10).collect::<Vec<_>>(),
        "each scheduled second has exactly one run"
    );
    let checked = common::process::runledger(&["check", "--database-url", &url], None);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
}
