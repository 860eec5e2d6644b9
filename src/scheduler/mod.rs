//! The recurring-run scheduler: a task inside the server that creates the runs of enabled
//! recurring runs when they are due. What is due, and how a run is created exactly once, is the
//! service's ([`RecurringRuns::schedule_due`](crate::service::RecurringRuns::schedule_due));
//! this module decides when to look.
//!
//! It reads time from the services' clock (injectable: tests drive [`Scheduler::run_due`] on a
//! fake one) and looks again at the earliest due time, when a recurring run is created or
//! enabled, when a run of a recurring run finishes (a max_concurrency slot frees), and at least
//! every [`REFRESH`] (recurring runs changed by another process sharing the store).
//!
//! Only one scheduler acts per store: each holds the store's lease `scheduler` while it works
//! and renews it every pass; another process's scheduler waits until the lease expires. The
//! lease only saves duplicate work: runs are created exactly once even when two schedulers
//! overlap, because every run and the advanced schedule are one compare-and-set write.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::watch;

use crate::error::Result;
use crate::query::{ListQuery, Scope};
use crate::service::{Context, Next, Principal, Services};
use crate::store::ChangeKind;
use crate::wkt::Timestamp;

/// The longest the scheduler sleeps without looking (and renewing its lease).
pub const REFRESH: Duration = Duration::from_secs(10);

/// How long a lease lasts without renewal: a crashed scheduler's successor waits this long.
pub const LEASE: Duration = Duration::from_secs(30);

/// How soon a recurring run whose step failed (a storage error) is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The lease's name in the store.
const LEASE_NAME: &str = "scheduler";

/// Recurring runs read per page when looking at all of them.
const PAGE: usize = 500;

pub struct Scheduler {
    services: Arc<Services>,
    ctx: Context,
    /// This scheduler's name as a lease holder (unique per process).
    holder: String,
}

/// Starts the scheduler on `services`; it stops when the services shut down
/// ([`Services::close_watches`]).
pub fn spawn(services: Arc<Services>) -> tokio::task::JoinHandle<()> {
    let scheduler = Scheduler::new(services.clone());
    tokio::spawn(scheduler.run(services.closing()))
}

impl Scheduler {
    pub fn new(services: Arc<Services>) -> Scheduler {
        Scheduler {
            ctx: services.context(Principal::Scheduler),
            holder: format!("{}/{}", std::process::id(), uuid::Uuid::new_v4()),
            services,
        }
    }

    /// Creates every run that is due at the clock's now; returns the earliest time something
    /// is due next (None: nothing is scheduled, until a change). A recurring run whose step
    /// fails is logged and tried again soon; the others go on.
    pub async fn run_due(&self) -> Result<Option<Timestamp>> {
        let store = self.services.store();
        let mut earliest: Option<Timestamp> = None;
        let mut query = ListQuery {
            scope: Scope::All,
            sort: Default::default(),
            filter: Default::default(),
            after: None,
            page_size: PAGE,
        };
        loop {
            let page = store.list_recurring_runs(query.clone()).await?;
            for record in &page.items {
                let id = record.value.id();
                let next = match self
                    .services
                    .recurring_runs
                    .schedule_due(&self.ctx, id)
                    .await
                {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(recurring_run = id, error = %e, "scheduler: cannot schedule a recurring run; trying again soon");
                        Next::At(self.after(RETRY))
                    }
                };
                let at = match next {
                    Next::At(at) => at,
                    Next::Now => self.ctx.now(),
                    Next::Blocked | Next::Never => continue,
                };
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            match page.next {
                Some(after) => query.after = Some(after),
                None => return Ok(earliest),
            }
        }
    }

    /// The clock's now plus `d`.
    fn after(&self, d: Duration) -> Timestamp {
        let now = self.ctx.now();
        Timestamp {
            seconds: now.seconds.saturating_add(d.as_secs() as i64),
            nanos: now.nanos,
        }
    }

    /// Takes or renews the lease; false when another scheduler holds it.
    async fn lease(&self) -> Result<bool> {
        self.services
            .store()
            .acquire_lease(LEASE_NAME, &self.holder, self.ctx.now(), self.after(LEASE))
            .await
    }

    /// The scheduler's loop, until `closing` turns true.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let wakeup = self.services.scheduler_wakeup();
        let mut finished = FinishedRuns::new(&self.services);
        loop {
            if *closing.borrow() {
                return;
            }
            let next = match self.lease().await {
                Ok(true) => match self.run_due().await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler: cannot list recurring runs");
                        Some(self.after(RETRY))
                    }
                },
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: cannot take the lease");
                    None
                }
            };
            let sleep = next.map_or(REFRESH, |at| until(self.ctx.now(), at).min(REFRESH));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = wakeup.notified() => {}
                () = finished.next() => {}
                _ = closing.wait_for(|closing| *closing) => return,
            }
        }
    }
}

/// How long from `now` until `at` (zero when it has passed).
fn until(now: Timestamp, at: Timestamp) -> Duration {
    let nanos = (i128::from(at.seconds) - i128::from(now.seconds)) * 1_000_000_000
        + i128::from(at.nanos - now.nanos);
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Runs of recurring runs reaching a terminal state (or deleted), from the store's change feed:
/// a max_concurrency slot may have freed.
struct FinishedRuns {
    services: Arc<Services>,
    feed: Option<crate::store::Subscription>,
}

impl FinishedRuns {
    fn new(services: &Arc<Services>) -> FinishedRuns {
        FinishedRuns {
            feed: services.store().subscribe(None).ok(),
            services: services.clone(),
        }
    }

    /// Waits for the next such change. A watcher that fell behind subscribes again (the
    /// periodic refresh covers what it missed); without a feed, it waits forever.
    async fn next(&mut self) {
        /// Run.state and Run.recurring_run_id; prost skips every other field.
        #[derive(Clone, PartialEq, prost::Message)]
        struct RunRef {
            #[prost(int32, tag = "13")]
            state: i32,
            #[prost(string, tag = "16")]
            recurring_run_id: String,
        }
        loop {
            let Some(feed) = self.feed.as_mut() else {
                return std::future::pending().await;
            };
            match feed.next().await {
                Some(Ok(change)) => {
                    let Ok(run) = RunRef::decode(change.run.record()) else {
                        continue;
                    };
                    let finished = change.kind == ChangeKind::Deleted
                        || crate::api::RuntimeState::try_from(run.state)
                            .is_ok_and(crate::service::lifecycle::is_terminal);
                    if finished && !run.recurring_run_id.is_empty() {
                        return;
                    }
                }
                Some(Err(_)) | None => {
                    self.feed = self.services.store().subscribe(None).ok();
                    return;
                }
            }
        }
    }
}
