//! The services on a real store with an injected clock and id source, and a store decorator that
//! makes another writer win the race before a chosen number of writes, to see the
//! compare-and-set retries from the inside.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use super::*;
use crate::api::{ReportRunStateRequest, Run, RuntimeState, run};
use crate::error::Error;
use crate::store::{self, DataDirOptions, Intercepted, Op, Write, WriteInterceptor, Written};
use crate::wkt::Timestamp;

/// A clock that says what it is told.
struct FakeClock(AtomicI64);

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp {
            seconds: self.0.load(Ordering::SeqCst),
            nanos: 0,
        }
    }
}

/// Ids `id-1`, `id-2`, …
#[derive(Default)]
struct CountingIds(AtomicUsize);

impl IdSource for CountingIds {
    fn new_id(&self) -> String {
        format!("id-{}", self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// Writes of which the next `races` each lose to another writer: just before the write goes
/// through, the run it names is changed behind its back (its description), so the real store
/// answers Conflict.
#[derive(Default)]
struct Racing {
    races: AtomicUsize,
    writes: AtomicUsize,
}

#[async_trait::async_trait]
impl WriteInterceptor for Racing {
    async fn write(&self, inner: &dyn Store, write: Write) -> crate::error::Result<Written> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let race = self
            .races
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if race {
            for op in &write.ops {
                if let Op::PutRun {
                    run,
                    replaces: Some(_),
                } = op
                    && let Some(current) = inner.run(&run.run_id).await?
                {
                    let mut other = current.decode();
                    other.description.push('+');
                    inner
                        .write(Write::new(vec![Op::PutRun {
                            run: Box::new(other),
                            replaces: Some(current.revision().clone()),
                        }]))
                        .await?;
                }
            }
        }
        inner.write(write).await
    }
}

struct Fixture {
    services: Arc<Services>,
    clock: Arc<FakeClock>,
    racing: Arc<Racing>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = store::open_data_dir(dir.path(), DataDirOptions::default()).expect("store");
    let racing = Arc::new(Racing::default());
    let clock = Arc::new(FakeClock(AtomicI64::new(1_000)));
    let services = Services::with_sources(
        Intercepted::new(inner, racing.clone()),
        Limits::default(),
        clock.clone(),
        Arc::new(CountingIds::default()),
    )
    .await
    .expect("services");
    Fixture {
        services,
        clock,
        racing,
        _dir: dir,
    }
}

fn new_run() -> Run {
    Run {
        display_name: "r".into(),
        pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
        ..Default::default()
    }
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

#[tokio::test]
async fn a_create_takes_its_ids_and_times_from_the_context() {
    let f = fixture().await;
    let ctx = f.services.context(Principal::Anonymous);
    let run = f
        .services
        .runs
        .create(&ctx, new_run())
        .await
        .unwrap()
        .decode();
    // id-1 is the run, id-2 the namespace's new default experiment.
    assert_eq!(run.run_id, "id-1");
    assert_eq!(run.experiment_id, "id-2");
    assert_eq!(run.created_at, at(1_000));
    assert_eq!(run.scheduled_at, at(1_000));
    assert_eq!(run.state_history[0].update_time, at(1_000));

    f.clock.0.store(1_060, Ordering::SeqCst);
    let report = ReportRunStateRequest {
        run_id: run.run_id.clone(),
        state: RuntimeState::Running as i32,
        ..Default::default()
    };
    let running = f
        .services
        .runs
        .report_state(&ctx, report)
        .await
        .unwrap()
        .decode();
    assert_eq!(running.state_history[1].update_time, at(1_060));
    f.clock.0.store(1_100, Ordering::SeqCst);
    f.services.runs.terminate(&ctx, &run.run_id).await.unwrap();
    let canceling = f
        .services
        .runs
        .get(&ctx, &run.run_id)
        .await
        .unwrap()
        .decode();
    assert_eq!(canceling.state, RuntimeState::Canceling as i32);
    assert_eq!(canceling.state_history[2].update_time, at(1_100));
}

#[tokio::test]
async fn a_report_that_loses_a_race_is_applied_to_the_latest_record() {
    let f = fixture().await;
    let ctx = f.services.context(Principal::Anonymous);
    let run = f
        .services
        .runs
        .create(&ctx, new_run())
        .await
        .unwrap()
        .decode();
    f.racing.races.store(3, Ordering::SeqCst);
    let writes_before = f.racing.writes.load(Ordering::SeqCst);
    let report = ReportRunStateRequest {
        run_id: run.run_id.clone(),
        state: RuntimeState::Running as i32,
        ..Default::default()
    };
    let after = f
        .services
        .runs
        .report_state(&ctx, report)
        .await
        .unwrap()
        .decode();
    assert_eq!(after.state, RuntimeState::Running as i32);
    // Three lost races, one write that went through; the other writer's changes are kept.
    assert_eq!(f.racing.writes.load(Ordering::SeqCst) - writes_before, 4);
    assert_eq!(after.description, "+++");
    assert_eq!(
        after.state_history.len(),
        2,
        "the report is in history once"
    );
}

#[tokio::test]
async fn a_call_that_loses_every_race_is_aborted_and_changes_nothing_of_its_own() {
    let f = fixture().await;
    let ctx = f.services.context(Principal::Anonymous);
    let run = f
        .services
        .runs
        .create(&ctx, new_run())
        .await
        .unwrap()
        .decode();
    f.racing.races.store(usize::MAX, Ordering::SeqCst);
    let err = f
        .services
        .runs
        .archive(&ctx, &run.run_id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Aborted(_)), "{err:?}");
    assert!(err.message().contains("try again"), "{err}");
    f.racing.races.store(0, Ordering::SeqCst);
    let stored = f
        .services
        .runs
        .get(&ctx, &run.run_id)
        .await
        .unwrap()
        .decode();
    assert_eq!(stored.storage_state, run::StorageState::Available as i32);
    assert_eq!(
        stored.description.len(),
        MAX_ATTEMPTS,
        "the other writer won every time"
    );
}
