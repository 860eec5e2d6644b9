//! The scheduler on a fake clock: the services over a real store (a temporary data dir, or a
//! database of the test binary's PostgreSQL: every test runs on both), a clock the test moves, and [`Scheduler::run_due`] called where the server's loop would wake.
//! Catch-up after downtime (across a restart), no_catchup, max_concurrency with unfinished
//! runs, disable / enable, end times, a deleted pipeline version, two schedulers racing, and a
//! crash on either side of the write that creates a run: each scheduled time gets exactly one
//! run. No test sleeps; the clock jumps.

mod common;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use runledger::api::*;
use runledger::error::{Error, Result};
use runledger::scheduler::Scheduler;
use runledger::service::{
    Clock, Context, Limits, Principal, RandomIds, Services, scheduled_run_id,
};
use runledger::store::{
    self, DataDirOptions, Intercepted, Location, Op, Store, StoredRun, Write, WriteInterceptor,
    Written,
};
use runledger::wkt::{StructBytes, Timestamp};
use runledger_testkit::every_backend;

/// 2026-03-01T10:00:00Z: the recurring runs below are created at this time.
const T0: i64 = 1_772_359_200;

struct FakeClock(AtomicI64);

impl FakeClock {
    fn set(&self, seconds: i64) {
        self.0.store(seconds, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        at(self.0.load(Ordering::SeqCst))
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// The services and a scheduler on `store`, on `clock`.
async fn services_on(store: Arc<dyn Store>, clock: &Arc<FakeClock>) -> (Arc<Services>, Scheduler) {
    let services =
        Services::with_sources(store, Limits::default(), clock.clone(), Arc::new(RandomIds))
            .await
            .expect("services");
    let scheduler = Scheduler::new(services.clone());
    (services, scheduler)
}

/// Opens the store at `location`; a data dir after waiting briefly for a previous opener's file
/// lock to go.
async fn open(location: &Location) -> Arc<dyn Store> {
    for _ in 0..100 {
        match store::open(location).await {
            Ok(store) => return store,
            Err(Error::Unavailable(_)) if matches!(location, Location::DataDir { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
    panic!("the data dir stayed locked");
}

struct Fixture {
    _dir: tempfile::TempDir,
    location: Location,
    clock: Arc<FakeClock>,
    services: Arc<Services>,
    scheduler: Scheduler,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = common::fresh_location(dir.path(), DataDirOptions::default()).await;
        let clock = Arc::new(FakeClock(AtomicI64::new(T0)));
        let (services, scheduler) = services_on(open(&location).await, &clock).await;
        Fixture {
            _dir: dir,
            location,
            clock,
            services,
            scheduler,
        }
    }

    /// Stops the services (the store flushed and closed) and starts new ones on the same store.
    async fn restart(self) -> Fixture {
        self.services.store().close().await.expect("close");
        let Fixture {
            _dir,
            location,
            clock,
            services,
            scheduler,
        } = self;
        drop((scheduler, services));
        let (services, scheduler) = services_on(open(&location).await, &clock).await;
        Fixture {
            _dir,
            location,
            clock,
            services,
            scheduler,
        }
    }

    fn ctx(&self) -> Context {
        self.services.context(Principal::Anonymous)
    }

    async fn create(&self, r: RecurringRun) -> RecurringRun {
        self.services
            .recurring_runs
            .create(&self.ctx(), r)
            .await
            .expect("create recurring run")
    }

    /// Runs the scheduler's pass at `seconds`; returns when it says to look again.
    async fn run_due_at(&self, seconds: i64) -> Option<Timestamp> {
        self.clock.set(seconds);
        self.scheduler.run_due().await.expect("scheduler pass")
    }

    /// The runs a recurring run created, by scheduled time.
    async fn runs_of(&self, recurring_run_id: &str) -> Vec<Run> {
        let filter = serde_json::json!({"predicates": [{
            "key": "recurring_run_id", "operation": "EQUALS", "string_value": recurring_run_id
        }]});
        let page = self
            .services
            .runs
            .list(
                &self.ctx(),
                &ListRunsRequest {
                    filter: filter.to_string(),
                    sort_by: "scheduled_at".into(),
                    page_size: 200,
                    ..Default::default()
                },
            )
            .await
            .expect("list runs");
        page.runs.iter().map(StoredRun::decode).collect()
    }

    async fn report(&self, run_id: &str, state: RuntimeState) {
        self.services
            .runs
            .report_state(
                &self.ctx(),
                ReportRunStateRequest {
                    run_id: run_id.to_owned(),
                    state: state as i32,
                    ..Default::default()
                },
            )
            .await
            .expect("report state");
    }

    async fn recurring(&self, id: &str) -> RecurringRun {
        self.services
            .recurring_runs
            .get(&self.ctx(), id)
            .await
            .expect("get recurring run")
    }
}

fn spec() -> StructBytes {
    let tree: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": "nightly"},
        "root": {"dag": {"tasks": {}}},
    }))
    .unwrap();
    tree.into()
}

fn periodic(name: &str, seconds: i64) -> RecurringRun {
    RecurringRun {
        display_name: name.to_owned(),
        max_concurrency: 10,
        mode: recurring_run::Mode::Enable as i32,
        trigger: Some(Trigger {
            trigger: Some(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                interval_second: seconds,
                ..Default::default()
            })),
        }),
        pipeline_source: Some(recurring_run::PipelineSource::PipelineSpec(spec())),
        ..Default::default()
    }
}

fn cron(name: &str, expr: &str) -> RecurringRun {
    RecurringRun {
        trigger: Some(Trigger {
            trigger: Some(trigger::Trigger::CronSchedule(CronSchedule {
                cron: expr.to_owned(),
                ..Default::default()
            })),
        }),
        ..periodic(name, 1)
    }
}

fn scheduled(runs: &[Run]) -> Vec<i64> {
    runs.iter()
        .map(|r| r.scheduled_at.expect("scheduled_at").seconds)
        .collect()
}

#[every_backend]
async fn nothing_is_created_before_the_first_time_and_the_pass_says_when_it_is() {
    let f = Fixture::new().await;
    let r = f.create(periodic("nightly", 60)).await;
    assert_eq!(f.run_due_at(T0 + 59).await, Some(at(T0 + 60)));
    assert!(f.runs_of(&r.recurring_run_id).await.is_empty());
    assert_eq!(f.run_due_at(T0 + 60).await, Some(at(T0 + 120)));
    let runs = f.runs_of(&r.recurring_run_id).await;
    assert_eq!(scheduled(&runs), [T0 + 60]);
    let run = &runs[0];
    assert_eq!(
        run.run_id,
        scheduled_run_id(&r.recurring_run_id, at(T0 + 60))
    );
    assert_eq!(run.experiment_id, r.experiment_id);
    assert_eq!(run.state, RuntimeState::Pending as i32);
    assert!(run.display_name.starts_with("nightly") && run.display_name.contains("-1-"));
    assert!(matches!(
        run.pipeline_source,
        Some(run::PipelineSource::PipelineSpec(_))
    ));
}

#[every_backend]
async fn catch_up_after_downtime_creates_every_missed_run_with_its_own_time() {
    let f = Fixture::new().await;
    let r = f.create(periodic("hourly", 60)).await;
    assert_eq!(f.run_due_at(T0 + 61).await, Some(at(T0 + 120)));
    // Down from T0 + 61 to T0 + 330, restarted on the same data dir.
    let f = f.restart().await;
    assert_eq!(f.run_due_at(T0 + 330).await, Some(at(T0 + 360)));
    let runs = f.runs_of(&r.recurring_run_id).await;
    assert_eq!(
        scheduled(&runs),
        [T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 300]
    );
    // Every backfilled run was created now; each has its own index in its name.
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(
            run.created_at.unwrap().seconds,
            if i == 0 { T0 + 61 } else { T0 + 330 }
        );
        assert!(
            run.display_name.contains(&format!("-{}-", i + 1)),
            "{}",
            run.display_name
        );
    }
}

#[every_backend]
async fn without_catch_up_only_the_latest_missed_time_gets_a_run() {
    let f = Fixture::new().await;
    let r = f
        .create(RecurringRun {
            no_catchup: true,
            ..periodic("latest", 60)
        })
        .await;
    assert_eq!(f.run_due_at(T0 + 330).await, Some(at(T0 + 360)));
    assert_eq!(scheduled(&f.runs_of(&r.recurring_run_id).await), [T0 + 300]);
    assert_eq!(f.run_due_at(T0 + 360).await, Some(at(T0 + 420)));
    assert_eq!(
        scheduled(&f.runs_of(&r.recurring_run_id).await),
        [T0 + 300, T0 + 360]
    );
}

#[every_backend]
async fn max_concurrency_waits_while_runs_are_unfinished() {
    let f = Fixture::new().await;
    let r = f
        .create(RecurringRun {
            max_concurrency: 2,
            ..periodic("bounded", 60)
        })
        .await;
    // Five times are due; two runs are created and nothing more while both are unfinished.
    assert_eq!(f.run_due_at(T0 + 330).await, None);
    let runs = f.runs_of(&r.recurring_run_id).await;
    assert_eq!(scheduled(&runs), [T0 + 60, T0 + 120]);
    f.report(&runs[0].run_id, RuntimeState::Running).await;
    f.report(&runs[1].run_id, RuntimeState::Paused).await;
    assert_eq!(f.run_due_at(T0 + 340).await, None);
    assert_eq!(f.runs_of(&r.recurring_run_id).await.len(), 2);

    // One finishes: the next missed time (not "now") gets the free slot.
    f.report(&runs[0].run_id, RuntimeState::Succeeded).await;
    f.run_due_at(T0 + 350).await;
    let runs = f.runs_of(&r.recurring_run_id).await;
    assert_eq!(scheduled(&runs), [T0 + 60, T0 + 120, T0 + 180]);

    // A failed run and a deleted one free their slots too.
    f.report(&runs[1].run_id, RuntimeState::Failed).await;
    f.services
        .runs
        .delete(&f.ctx(), &runs[2].run_id)
        .await
        .expect("delete run");
    f.run_due_at(T0 + 360).await;
    assert_eq!(
        scheduled(&f.runs_of(&r.recurring_run_id).await),
        [T0 + 60, T0 + 120, T0 + 240, T0 + 300]
    );
}

#[every_backend]
async fn a_disabled_recurring_run_creates_nothing_and_enabling_backfills() {
    let f = Fixture::new().await;
    let r = f.create(periodic("paused", 60)).await;
    let id = &r.recurring_run_id;
    f.clock.set(T0 + 30);
    f.services
        .recurring_runs
        .disable(&f.ctx(), id)
        .await
        .expect("disable");
    let disabled = f.recurring(id).await;
    assert_eq!(disabled.status, recurring_run::Status::Disabled as i32);
    assert_eq!(disabled.mode, recurring_run::Mode::Disable as i32);
    assert_eq!(disabled.updated_at, Some(at(T0 + 30)));
    assert_eq!(f.run_due_at(T0 + 200).await, None);
    assert!(f.runs_of(id).await.is_empty());

    f.services
        .recurring_runs
        .enable(&f.ctx(), id)
        .await
        .expect("enable");
    assert_eq!(f.run_due_at(T0 + 200).await, Some(at(T0 + 240)));
    assert_eq!(
        scheduled(&f.runs_of(id).await),
        [T0 + 60, T0 + 120, T0 + 180]
    );
}

#[every_backend]
async fn a_recurring_run_created_disabled_waits_for_enable() {
    let f = Fixture::new().await;
    let r = f
        .create(RecurringRun {
            mode: recurring_run::Mode::Disable as i32,
            ..periodic("later", 60)
        })
        .await;
    assert_eq!(r.status, recurring_run::Status::Disabled as i32);
    assert_eq!(f.run_due_at(T0 + 600).await, None);
    assert!(f.runs_of(&r.recurring_run_id).await.is_empty());
}

#[every_backend]
async fn a_cron_trigger_runs_at_its_times_until_its_end_time() {
    let f = Fixture::new().await;
    let mut quarterly = cron("quarterly", "0 */15 * * * *");
    if let Some(Trigger {
        trigger: Some(trigger::Trigger::CronSchedule(schedule)),
    }) = &mut quarterly.trigger
    {
        schedule.end_time = Some(at(T0 + 45 * 60));
    }
    let r = f.create(quarterly).await;
    assert_eq!(f.run_due_at(T0 + 3 * 3600).await, None);
    assert_eq!(
        scheduled(&f.runs_of(&r.recurring_run_id).await),
        [T0 + 15 * 60, T0 + 30 * 60, T0 + 45 * 60]
    );
}

#[every_backend]
async fn a_recurring_run_whose_version_was_deleted_is_disabled_with_the_reason() {
    let f = Fixture::new().await;
    let ctx = f.ctx();
    let (pipeline, version) = f
        .services
        .pipelines
        .create_with_version(
            &ctx,
            Pipeline {
                name: "p".into(),
                ..Default::default()
            },
            PipelineVersion {
                pipeline_spec: Some(spec()),
                ..Default::default()
            },
        )
        .await
        .expect("pipeline");
    let r = f
        .create(RecurringRun {
            pipeline_source: Some(recurring_run::PipelineSource::PipelineVersionReference(
                PipelineVersionReference {
                    pipeline_id: pipeline.pipeline_id.clone(),
                    pipeline_version_id: version.pipeline_version_id.clone(),
                },
            )),
            ..periodic("pinned", 60)
        })
        .await;
    f.run_due_at(T0 + 60).await;
    assert_eq!(f.runs_of(&r.recurring_run_id).await.len(), 1);
    f.services
        .pipelines
        .delete_version(&ctx, &pipeline.pipeline_id, &version.pipeline_version_id)
        .await
        .expect("delete version");
    assert_eq!(f.run_due_at(T0 + 120).await, None);
    assert_eq!(f.runs_of(&r.recurring_run_id).await.len(), 1);
    let stopped = f.recurring(&r.recurring_run_id).await;
    assert_eq!(stopped.status, recurring_run::Status::Disabled as i32);
    let error = stopped.error.expect("an error");
    assert_eq!(error.code, tonic::Code::NotFound as i32);
    assert!(
        error.message.contains(&version.pipeline_version_id),
        "{}",
        error.message
    );
}

#[every_backend]
async fn two_schedulers_on_one_store_create_each_run_once() {
    let f = Fixture::new().await;
    let r = f.create(periodic("contended", 10)).await;
    let other = Scheduler::new(f.services.clone());
    f.clock.set(T0 + 300);
    let (a, b) = tokio::join!(f.scheduler.run_due(), other.run_due());
    a.expect("first scheduler");
    b.expect("second scheduler");
    let runs = f.runs_of(&r.recurring_run_id).await;
    assert_eq!(
        scheduled(&runs),
        (1..=10).map(|i| T0 + 10 * i).collect::<Vec<_>>(),
        "max_concurrency 10 stops it at ten runs, each once"
    );
}

#[every_backend]
async fn only_one_scheduler_holds_the_lease_until_it_expires() {
    let f = Fixture::new().await;
    let store = f.services.store();
    assert!(
        store
            .acquire_lease("scheduler", "a", at(T0), at(T0 + 30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("scheduler", "b", at(T0 + 10), at(T0 + 40))
            .await
            .unwrap()
    );
    // The holder renews.
    assert!(
        store
            .acquire_lease("scheduler", "a", at(T0 + 20), at(T0 + 50))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("scheduler", "b", at(T0 + 49), at(T0 + 79))
            .await
            .unwrap()
    );
    // Expired: another takes it, and the first cannot renew.
    assert!(
        store
            .acquire_lease("scheduler", "b", at(T0 + 50), at(T0 + 80))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("scheduler", "a", at(T0 + 60), at(T0 + 90))
            .await
            .unwrap()
    );
}

/// What the faulty store does to the scheduler's first write that creates a run.
#[derive(Clone, Copy, PartialEq)]
enum Crash {
    /// The process dies before the write reaches the store.
    BeforeWrite,
    /// The write is durable, but the process dies before it hears so.
    AfterWrite,
}

/// A store that "crashes" at the scheduler's first write creating a run: from then on every
/// write fails, as nothing more would be written by a dead process.
struct Crashing {
    crash: Crash,
    crashed: Mutex<bool>,
    scheduler_writes: AtomicUsize,
}

impl Crashing {
    fn is_scheduler_write(write: &Write) -> bool {
        write.ops.iter().any(|op| matches!(op, Op::PutRun { .. }))
            && write.ops.iter().any(|op| {
                matches!(
                    op,
                    Op::PutRecurringRun {
                        replaces: Some(_),
                        ..
                    }
                )
            })
    }
}

#[async_trait::async_trait]
impl WriteInterceptor for Crashing {
    async fn write(&self, inner: &dyn Store, write: Write) -> Result<Written> {
        if *self.crashed.lock().unwrap() {
            return Err(Error::Unavailable("the process is dead".into()));
        }
        if !Self::is_scheduler_write(&write) {
            return inner.write(write).await;
        }
        self.scheduler_writes.fetch_add(1, Ordering::SeqCst);
        *self.crashed.lock().unwrap() = true;
        if self.crash == Crash::AfterWrite {
            inner.write(write).await?;
        }
        Err(Error::Unavailable("killed".into()))
    }
}

/// Creates a recurring run, lets the scheduler crash at its first run's write, restarts on the
/// data dir with a working store and lets the scheduler catch up.
async fn crash_and_restart(crash: Crash) -> Vec<Run> {
    let f = Fixture::new().await;
    let r = f.create(periodic("fragile", 60)).await;
    let id = r.recurring_run_id.clone();
    let crashing = Arc::new(Crashing {
        crash,
        crashed: Mutex::new(false),
        scheduler_writes: AtomicUsize::new(0),
    });
    let store = Intercepted::new(f.services.store().clone(), crashing.clone());
    let (dying, scheduler) = services_on(store, &f.clock).await;
    f.clock.set(T0 + 60);
    // The pass computes T0 + 60 as due and dies writing its run; it reports the failure.
    let _ = scheduler.run_due().await;
    assert_eq!(crashing.scheduler_writes.load(Ordering::SeqCst), 1);
    drop((scheduler, dying, crashing));

    let f = f.restart().await;
    f.run_due_at(T0 + 150).await;
    f.runs_of(&id).await
}

#[every_backend]
async fn a_crash_between_computing_a_time_and_creating_its_run_leaves_it_due() {
    let runs = crash_and_restart(Crash::BeforeWrite).await;
    // The time the dead scheduler computed gets its run after the restart, once.
    assert_eq!(scheduled(&runs), [T0 + 60, T0 + 120]);
    assert!(
        runs[0].display_name.contains("-1-"),
        "{}",
        runs[0].display_name
    );
}

#[every_backend]
async fn a_crash_after_the_run_was_written_creates_no_second_run() {
    let runs = crash_and_restart(Crash::AfterWrite).await;
    assert_eq!(scheduled(&runs), [T0 + 60, T0 + 120]);
    let ids: std::collections::BTreeSet<_> = runs.iter().map(|r| &r.run_id).collect();
    assert_eq!(ids.len(), 2);
}
