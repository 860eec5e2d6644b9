//! The transport-free core: one service per resource ([`Runs`], [`Experiments`], [`Pipelines`],
//! [`RecurringRuns`]), one method per use case, each taking the call's [`Context`]. Validation,
//! defaults, the state machine and every business rule live here; the gRPC and HTTP adapters
//! only convert, build the context and call, so whatever is checked here covers every transport
//! path.
//!
//! Writes read the records they change, decide, and write back naming the revisions they read
//! (compare-and-set, see [`crate::store`]); a write that lost a race is retried against the
//! latest state, up to [`MAX_ATTEMPTS`] times.

/// Evaluates `$attempt`, an `async` block that reads the latest records, decides and writes,
/// again while its write loses a race (Conflict), at most [`MAX_ATTEMPTS`] times; then the call
/// is ABORTED naming `$what` (evaluated only then).
macro_rules! until_not_outraced {
    ($what:expr, $attempt:expr $(,)?) => {{
        let mut outcome = None;
        for _ in 0..$crate::service::MAX_ATTEMPTS {
            outcome = $crate::service::unless_conflict($attempt.await);
            if outcome.is_some() {
                break;
            }
        }
        outcome.unwrap_or_else(|| Err($crate::service::contended(&$what)))
    }};
}

pub mod access;
mod context;
pub mod cron;
mod experiments;
pub mod lifecycle;
mod listing;
mod pipeline_spec;
mod pipelines;
mod recurring_runs;
mod runs;
pub mod timetable;
mod validate;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

pub use context::{Clock, Context, IdSource, Principal, RandomIds, SystemClock};
pub use experiments::{DEFAULT_EXPERIMENT_NAME, Experiments};
pub use pipelines::{Pipelines, Upload};
pub use recurring_runs::{Next, RecurringRuns, scheduled_run_id, scheduled_run_name};
pub use runs::{RunPage, Runs};
pub use validate::Limits;
pub use watch::{RunWatch, run_event};

use crate::error::{Error, Result};
use crate::store::Store;

/// Times a compare-and-set write is tried before the call answers ABORTED.
pub const MAX_ATTEMPTS: usize = 64;

/// Every service, over one store.
pub struct Services {
    pub runs: Runs,
    pub experiments: Experiments,
    pub pipelines: Pipelines,
    pub recurring_runs: RecurringRuns,
    core: Arc<Core>,
}

/// What the services share.
struct Core {
    store: Arc<dyn Store>,
    limits: Limits,
    /// Signs page tokens.
    token_key: Vec<u8>,
    /// Open WatchRuns streams, against `limits.max_watchers`.
    watchers: Arc<AtomicUsize>,
    /// Set on shutdown: ends every watch stream.
    closing: tokio::sync::watch::Sender<bool>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    /// Set when authentication is on: every call must then name an authenticated principal.
    multi_user: AtomicBool,
    /// Wakes the scheduler when a recurring run was created or enabled.
    scheduler_wakeup: Arc<tokio::sync::Notify>,
}

impl Services {
    /// The services over `store`, on the wall clock with random ids.
    pub async fn new(store: Arc<dyn Store>, limits: Limits) -> Result<Arc<Services>> {
        Services::with_sources(store, limits, Arc::new(SystemClock), Arc::new(RandomIds)).await
    }

    /// The services with their own clock and id source (what [`Services::context`] hands out).
    pub async fn with_sources(
        store: Arc<dyn Store>,
        limits: Limits,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Arc<Services>> {
        let token_key = store.token_key().await?;
        let core = Arc::new(Core {
            store,
            limits,
            token_key,
            watchers: Arc::new(AtomicUsize::new(0)),
            closing: tokio::sync::watch::Sender::new(false),
            clock,
            ids,
            multi_user: AtomicBool::new(false),
            scheduler_wakeup: Arc::new(tokio::sync::Notify::new()),
        });
        Ok(Arc::new(Services {
            runs: Runs::new(core.clone()),
            experiments: Experiments::new(core.clone()),
            pipelines: Pipelines::new(core.clone()),
            recurring_runs: RecurringRuns::new(core.clone()),
            core,
        }))
    }

    /// The context of a call made by `principal`.
    pub fn context(&self, principal: Principal) -> Context {
        Context {
            principal,
            clock: self.core.clock.clone(),
            ids: self.core.ids.clone(),
        }
    }

    /// Turns authorization on: from now on a call without an authenticated principal is
    /// UNAUTHENTICATED and every call is checked against its principal's grants.
    pub fn require_principals(&self) {
        self.core
            .multi_user
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the caller may read the metrics (with auth on: a grant on every namespace).
    pub fn allow_metrics(&self, ctx: &Context) -> Result<()> {
        self.core.allow_metrics(ctx)
    }

    /// Whether authentication is on (what `/apis/v2beta1/healthz` reports as `multi_user`).
    pub fn multi_user(&self) -> bool {
        self.core.multi_user()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.core.store
    }

    /// Number of open WatchRuns streams.
    pub fn watcher_count(&self) -> usize {
        self.core
            .watchers
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends every watch stream (and stops the scheduler); for shutdown.
    pub fn close_watches(&self) {
        self.core.closing.send_replace(true);
    }

    /// Set once the server shuts down (what [`Services::close_watches`] sets).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.core.closing.subscribe()
    }

    /// Notified when a recurring run is created or enabled: the scheduler should look again.
    pub fn scheduler_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.core.scheduler_wakeup.clone()
    }
}

/// A compare-and-set write's result with a lost race told apart: None means "read again".
fn unless_conflict<T>(result: Result<T>) -> Option<Result<T>> {
    match result {
        Err(Error::Conflict(_)) => None,
        other => Some(other),
    }
}

/// The answer when every attempt lost its race.
fn contended(what: &str) -> Error {
    Error::Aborted(format!(
        "{what} changed {MAX_ATTEMPTS} times while this call was being applied; try again"
    ))
}

#[cfg(test)]
mod tests;
