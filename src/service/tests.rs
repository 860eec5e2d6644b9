//! The services on a real store with an injected clock and id source, and a store decorator that
//! makes another writer win the race before a chosen number of writes, to see the
//! compare-and-set retries from the inside.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use super::*;
use crate::api::{ReportRunStateRequest, Run, RuntimeState, run};
use crate::error::Error;
use crate::query::{ListQuery, Page, Scope, Tally};
use crate::store::{self, DataDirOptions, Op, Stored, StoredRun, Subscription, Write, Written};
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

/// A store whose next `races` writes each lose to another writer: just before the write goes
/// through, the run it names is changed behind its back (its description), so the real store
/// answers Conflict.
struct Racing {
    inner: Arc<dyn Store>,
    races: AtomicUsize,
    writes: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Racing {
    async fn run(&self, run_id: &str) -> crate::error::Result<Option<StoredRun>> {
        self.inner.run(run_id).await
    }
    async fn experiment(
        &self,
        id: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::Experiment>>> {
        self.inner.experiment(id).await
    }
    async fn experiment_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::Experiment>>> {
        self.inner.experiment_named(namespace, name).await
    }
    async fn default_experiment(&self, namespace: &str) -> crate::error::Result<Option<String>> {
        self.inner.default_experiment(namespace).await
    }
    async fn list_runs(&self, query: ListQuery) -> crate::error::Result<Page<StoredRun>> {
        self.inner.list_runs(query).await
    }
    async fn list_experiments(
        &self,
        query: ListQuery,
    ) -> crate::error::Result<Page<Stored<crate::api::Experiment>>> {
        self.inner.list_experiments(query).await
    }
    async fn run_tally(&self, scope: &Scope) -> crate::error::Result<Tally> {
        self.inner.run_tally(scope).await
    }
    async fn namespaces(&self) -> crate::error::Result<Vec<String>> {
        self.inner.namespaces().await
    }
    async fn write(&self, write: Write) -> crate::error::Result<Written> {
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
                    && let Some(current) = self.inner.run(&run.run_id).await?
                {
                    let mut other = current.decode();
                    other.description.push('+');
                    self.inner
                        .write(Write::new(vec![Op::PutRun {
                            run: Box::new(other),
                            replaces: Some(current.revision().clone()),
                        }]))
                        .await?;
                }
            }
        }
        self.inner.write(write).await
    }
    async fn settle(&self) -> crate::error::Result<()> {
        self.inner.settle().await
    }
    fn subscribe(&self, after: Option<u64>) -> crate::error::Result<Subscription> {
        self.inner.subscribe(after)
    }
    async fn token_key(&self) -> crate::error::Result<Vec<u8>> {
        self.inner.token_key().await
    }
    async fn close(&self) -> crate::error::Result<()> {
        self.inner.close().await
    }
    async fn pipeline(
        &self,
        id: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::Pipeline>>> {
        self.inner.pipeline(id).await
    }
    async fn pipeline_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::Pipeline>>> {
        self.inner.pipeline_named(namespace, name).await
    }
    async fn list_pipelines(
        &self,
        query: ListQuery,
    ) -> crate::error::Result<Page<Stored<crate::api::Pipeline>>> {
        self.inner.list_pipelines(query).await
    }
    async fn pipeline_namespaces(&self) -> crate::error::Result<Vec<String>> {
        self.inner.pipeline_namespaces().await
    }
    async fn pipeline_version(
        &self,
        id: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::PipelineVersion>>> {
        self.inner.pipeline_version(id).await
    }
    async fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::PipelineVersion>>> {
        self.inner.pipeline_version_named(pipeline_id, name).await
    }
    async fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> crate::error::Result<Option<Stored<crate::api::PipelineVersion>>> {
        self.inner.latest_pipeline_version(pipeline_id).await
    }
    async fn list_pipeline_versions(
        &self,
        query: ListQuery,
    ) -> crate::error::Result<Page<Stored<crate::api::PipelineVersion>>> {
        self.inner.list_pipeline_versions(query).await
    }
    async fn recurring_run(
        &self,
        id: &str,
    ) -> crate::error::Result<Option<Stored<store::RecurringRunRecord>>> {
        self.inner.recurring_run(id).await
    }
    async fn list_recurring_runs(
        &self,
        query: ListQuery,
    ) -> crate::error::Result<Page<Stored<store::RecurringRunRecord>>> {
        self.inner.list_recurring_runs(query).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> crate::error::Result<bool> {
        self.inner.acquire_lease(name, holder, now, until).await
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
    let racing = Arc::new(Racing {
        inner,
        races: AtomicUsize::new(0),
        writes: AtomicUsize::new(0),
    });
    let clock = Arc::new(FakeClock(AtomicI64::new(1_000)));
    let services = Services::with_sources(
        racing.clone(),
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
