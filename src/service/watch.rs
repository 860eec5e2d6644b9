//! WatchRuns: change events for a scope, pushed as they commit.
//!
//! Every watcher reads the store's one broadcast buffer (bounded: `--event-buffer`). Writers never
//! wait for watchers; a watcher that falls more than the buffer behind is ended with
//! RESOURCE_EXHAUSTED and should list again, then watch again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::broadcast::{self, error::RecvError};

use super::Ledger;
use super::validate::check_lookup_id;
use crate::api::{RunEvent, WatchRunsRequest};
use crate::error::{Error, Result};

/// Which runs a watcher hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    All,
    Run(String),
    Experiment(String),
    Namespace(String),
}

impl WatchScope {
    pub fn from_request(request: &WatchRunsRequest) -> Result<WatchScope> {
        let given = [&request.run_id, &request.experiment_id, &request.namespace]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        if given > 1 {
            return Err(Error::invalid(
                "set at most one of run_id, experiment_id and namespace (none = every run)",
            ));
        }
        Ok(if !request.run_id.is_empty() {
            check_lookup_id("run_id", &request.run_id)?;
            WatchScope::Run(request.run_id.clone())
        } else if !request.experiment_id.is_empty() {
            check_lookup_id("experiment_id", &request.experiment_id)?;
            WatchScope::Experiment(request.experiment_id.clone())
        } else if !request.namespace.is_empty() {
            check_lookup_id("namespace", &request.namespace)?;
            WatchScope::Namespace(request.namespace.clone())
        } else {
            WatchScope::All
        })
    }

    fn covers(&self, event: &RunEvent) -> bool {
        let Some(run) = &event.run else { return false };
        match self {
            WatchScope::All => true,
            WatchScope::Run(id) => &run.run_id == id,
            WatchScope::Experiment(id) => &run.experiment_id == id,
            WatchScope::Namespace(ns) => &run.namespace == ns,
        }
    }
}

/// One watcher's subscription; dropping it frees its slot.
pub struct RunWatch {
    scope: WatchScope,
    events: broadcast::Receiver<Arc<RunEvent>>,
    closing: tokio::sync::watch::Receiver<bool>,
    slots: Arc<AtomicUsize>,
}

impl RunWatch {
    /// The next event in scope; None when the server shuts down.
    pub async fn next(&mut self) -> Option<Result<Arc<RunEvent>>> {
        loop {
            let received = tokio::select! {
                received = self.events.recv() => received,
                _ = self.closing.wait_for(|closing| *closing) => return None,
            };
            match received {
                Ok(event) if self.scope.covers(&event) => return Some(Ok(event)),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    return Some(Err(Error::ResourceExhausted(format!(
                        "this watcher fell {missed} events behind and was stopped; list the runs \
                         again, then watch again"
                    ))));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ledger {
    /// Starts a watch. Events committed from now on, in scope, arrive in commit order.
    pub fn watch_runs(&self, request: &WatchRunsRequest) -> Result<RunWatch> {
        let scope = WatchScope::from_request(request)?;
        let max = self.limits.max_watchers;
        let taken = self.watchers.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            self.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::ResourceExhausted(format!(
                "{max} WatchRuns streams are open, the most this server accepts (--max-watchers)"
            )));
        }
        Ok(RunWatch {
            scope,
            events: self.store.subscribe(),
            closing: self.closing.subscribe(),
            slots: self.watchers.clone(),
        })
    }

    /// Number of open WatchRuns streams.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// Ends every watch stream; for shutdown.
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }
}
