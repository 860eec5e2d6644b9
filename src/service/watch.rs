//! WatchRuns: change events for a scope, pushed as they commit.
//!
//! Every watcher reads the store's change feed (bounded: `--event-buffer`). Writers never wait
//! for watchers; a watcher that falls more than the buffer behind is ended with
//! RESOURCE_EXHAUSTED and should list again, then watch again. A watcher that reconnects can
//! resume after the last sequence number it saw, within the changes the feed retains.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::access::Verb;
use super::validate::check_lookup_id;
use super::{Context, Runs};
use crate::api::{RunEvent, WatchRunsRequest, run_event};
use crate::error::{Error, Result};
use crate::query::Scope;
use crate::store::{Change, ChangeKind, Subscription};

/// The scope a WatchRuns request names: at most one of run, experiment, namespace.
fn watch_scope(request: &WatchRunsRequest) -> Result<Scope> {
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
        Scope::Run(request.run_id.clone())
    } else if !request.experiment_id.is_empty() {
        check_lookup_id("experiment_id", &request.experiment_id)?;
        Scope::Experiment(request.experiment_id.clone())
    } else if !request.namespace.is_empty() {
        check_lookup_id("namespace", &request.namespace)?;
        Scope::Namespace(request.namespace.clone())
    } else {
        Scope::All
    })
}

/// One watcher's subscription; dropping it frees its slot.
pub struct RunWatch {
    scope: Scope,
    /// Only changes in namespaces the watcher may read pass (checked per change, so a scope
    /// can never carry another namespace's runs).
    ctx: Context,
    core: Arc<super::Core>,
    changes: Subscription,
    closing: tokio::sync::watch::Receiver<bool>,
    slots: Arc<AtomicUsize>,
}

impl RunWatch {
    /// The next change in scope; None when the server shuts down. After an error (the watcher
    /// fell behind) the watch is over.
    pub async fn next(&mut self) -> Option<Result<Arc<Change>>> {
        loop {
            let received = tokio::select! {
                received = self.changes.next() => received?,
                _ = self.closing.wait_for(|closing| *closing) => return None,
            };
            match received {
                Ok(change)
                    if change.is_in(&self.scope)
                        && self.core.can_read(&self.ctx, &change.namespace) =>
                {
                    return Some(Ok(change));
                }
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A change as WatchRuns sends it.
pub fn run_event(change: &Change) -> RunEvent {
    let kind = match change.kind {
        ChangeKind::Created => run_event::Type::Created,
        ChangeKind::Updated => run_event::Type::Updated,
        ChangeKind::Deleted => run_event::Type::Deleted,
    };
    RunEvent {
        r#type: kind as i32,
        run: Some(change.run.decode()),
        sequence: change.seq,
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runs {
    /// With authentication on, a watched run or experiment must exist and be readable (its
    /// namespace decides); a namespace needs a grant on it, everything a `*` grant.
    async fn allow_watch(&self, ctx: &Context, scope: &Scope) -> Result<()> {
        if !self.core.multi_user() {
            return Ok(());
        }
        let core = &self.core;
        match scope {
            Scope::All => core.allow_everywhere(ctx, Verb::WatchRuns),
            Scope::Namespace(ns) => core.allow_in_namespace(ctx, Verb::WatchRuns, "", ns),
            Scope::Run(id) => {
                let missing = || Error::NotFound(format!("run {id:?} not found"));
                let stored = core.store.run(id).await?.ok_or_else(missing)?;
                core.allow_on_record(ctx, Verb::WatchRuns, id, &stored.namespace(), missing)
            }
            Scope::Experiment(id) => {
                let experiment = core.experiment(id).await?.value;
                core.allow_on_record(ctx, Verb::WatchRuns, id, &experiment.namespace, || {
                    Error::NotFound(format!("experiment {id:?} not found"))
                })
            }
            Scope::Pipeline(_) => Err(Error::internal("a watch has no pipeline scope")),
        }
    }

    /// Starts a watch. Changes committed from now on (or after `request.resume_after`, while
    /// retained), in scope, arrive in commit order.
    pub async fn watch(&self, ctx: &Context, request: &WatchRunsRequest) -> Result<RunWatch> {
        let scope = watch_scope(request)?;
        self.allow_watch(ctx, &scope).await?;
        let after = (request.resume_after != 0).then_some(request.resume_after);
        let changes = self.core.store.subscribe(after)?;
        let max = self.core.limits.max_watchers;
        let taken = self.core.watchers.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            self.core.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::ResourceExhausted(format!(
                "{max} WatchRuns streams are open, the most this server accepts (--max-watchers)"
            )));
        }
        Ok(RunWatch {
            scope,
            ctx: ctx.clone(),
            core: self.core.clone(),
            changes,
            closing: self.core.closing.subscribe(),
            slots: self.core.watchers.clone(),
        })
    }
}
