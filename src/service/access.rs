//! Authorization: what a principal may do in which namespace, decided in one place for every
//! transport. One table maps each role to the calls it allows ([`Verb::least_role`]: roles are
//! ordered, each allowing what the one below it does); grants give a principal a role in a
//! namespace or in every namespace (`*`). The empty namespace is a namespace like any other.
//!
//! Answers never leak what the caller cannot read: a run or experiment in a namespace the
//! caller may not read is NOT_FOUND with the same message as a missing one; one it may read but
//! not change is PERMISSION_DENIED naming the call and the namespace. Every denial and every
//! write leaves one line on the `runledger::audit` tracing target.
//!
//! Pipelines may be shared (namespace ""): every authenticated caller may read a shared pipeline
//! and its versions, without a grant; changing one needs a role in namespace "" (or `*`), like
//! any record of that namespace. The scheduler acts as [`Principal::Scheduler`], which is
//! allowed everything (the recurring run's creator was authorized when it was created).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Context, Core, Principal};
use crate::error::{Error, Result};

/// What a grant allows, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, list and watch.
    Viewer,
    /// A viewer that may also ReportRunState: the machine that runs pipelines.
    Executor,
    /// Every run, experiment, pipeline and recurring-run write, except deleting experiments.
    Editor,
    /// An editor that may also delete experiments (with all their runs and recurring runs).
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Executor => "executor",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// A call, as authorization and the audit log name it (the RPC's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    GetRun,
    ListRuns,
    WatchRuns,
    CreateRun,
    ArchiveRun,
    UnarchiveRun,
    DeleteRun,
    TerminateRun,
    RetryRun,
    ReportRunState,
    GetExperiment,
    ListExperiments,
    CreateExperiment,
    ArchiveExperiment,
    UnarchiveExperiment,
    DeleteExperiment,
    GetPipeline,
    ListPipelines,
    CreatePipeline,
    UpdatePipeline,
    DeletePipeline,
    GetPipelineVersion,
    ListPipelineVersions,
    CreatePipelineVersion,
    UpdatePipelineVersion,
    DeletePipelineVersion,
    GetRecurringRun,
    ListRecurringRuns,
    CreateRecurringRun,
    EnableRecurringRun,
    DisableRecurringRun,
    DeleteRecurringRun,
    /// `GET /metrics`: counts by namespace, so it reads every namespace.
    ReadMetrics,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::GetRun => "GetRun",
            Verb::ListRuns => "ListRuns",
            Verb::WatchRuns => "WatchRuns",
            Verb::CreateRun => "CreateRun",
            Verb::ArchiveRun => "ArchiveRun",
            Verb::UnarchiveRun => "UnarchiveRun",
            Verb::DeleteRun => "DeleteRun",
            Verb::TerminateRun => "TerminateRun",
            Verb::RetryRun => "RetryRun",
            Verb::ReportRunState => "ReportRunState",
            Verb::GetExperiment => "GetExperiment",
            Verb::ListExperiments => "ListExperiments",
            Verb::CreateExperiment => "CreateExperiment",
            Verb::ArchiveExperiment => "ArchiveExperiment",
            Verb::UnarchiveExperiment => "UnarchiveExperiment",
            Verb::DeleteExperiment => "DeleteExperiment",
            Verb::GetPipeline => "GetPipeline",
            Verb::ListPipelines => "ListPipelines",
            Verb::CreatePipeline => "CreatePipeline",
            Verb::UpdatePipeline => "UpdatePipeline",
            Verb::DeletePipeline => "DeletePipeline",
            Verb::GetPipelineVersion => "GetPipelineVersion",
            Verb::ListPipelineVersions => "ListPipelineVersions",
            Verb::CreatePipelineVersion => "CreatePipelineVersion",
            Verb::UpdatePipelineVersion => "UpdatePipelineVersion",
            Verb::DeletePipelineVersion => "DeletePipelineVersion",
            Verb::GetRecurringRun => "GetRecurringRun",
            Verb::ListRecurringRuns => "ListRecurringRuns",
            Verb::CreateRecurringRun => "CreateRecurringRun",
            Verb::EnableRecurringRun => "EnableRecurringRun",
            Verb::DisableRecurringRun => "DisableRecurringRun",
            Verb::DeleteRecurringRun => "DeleteRecurringRun",
            Verb::ReadMetrics => "ReadMetrics",
        }
    }

    /// The table: the least role that allows the call.
    pub fn least_role(self) -> Role {
        match self {
            Verb::GetRun
            | Verb::ListRuns
            | Verb::WatchRuns
            | Verb::GetExperiment
            | Verb::ListExperiments
            | Verb::GetPipeline
            | Verb::ListPipelines
            | Verb::GetPipelineVersion
            | Verb::ListPipelineVersions
            | Verb::GetRecurringRun
            | Verb::ListRecurringRuns
            | Verb::ReadMetrics => Role::Viewer,
            Verb::ReportRunState => Role::Executor,
            Verb::CreateRun
            | Verb::ArchiveRun
            | Verb::UnarchiveRun
            | Verb::DeleteRun
            | Verb::TerminateRun
            | Verb::RetryRun
            | Verb::CreateExperiment
            | Verb::ArchiveExperiment
            | Verb::UnarchiveExperiment
            | Verb::CreatePipeline
            | Verb::UpdatePipeline
            | Verb::DeletePipeline
            | Verb::CreatePipelineVersion
            | Verb::UpdatePipelineVersion
            | Verb::DeletePipelineVersion
            | Verb::CreateRecurringRun
            | Verb::EnableRecurringRun
            | Verb::DisableRecurringRun
            | Verb::DeleteRecurringRun => Role::Editor,
            Verb::DeleteExperiment => Role::Admin,
        }
    }
}

/// A principal's grants, resolved: its role in each namespace, and in every namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// The role a `namespace = "*"` grant gives.
    pub every: Option<Role>,
    pub namespaces: BTreeMap<String, Role>,
}

impl Grants {
    /// Adds a grant (`None`: every namespace); the highest role given for a namespace wins.
    pub fn add(&mut self, namespace: Option<&str>, role: Role) {
        let slot = match namespace {
            None => &mut self.every,
            Some(ns) => {
                let entry = self.namespaces.entry(ns.to_owned()).or_insert(role);
                *entry = (*entry).max(role);
                return;
            }
        };
        *slot = Some(slot.map_or(role, |r| r.max(role)));
    }

    pub fn role_in(&self, namespace: &str) -> Option<Role> {
        self.every.max(self.namespaces.get(namespace).copied())
    }

    pub fn allows(&self, verb: Verb, namespace: &str) -> bool {
        self.role_in(namespace)
            .is_some_and(|role| role >= verb.least_role())
    }
}

/// An authenticated caller: its name and what it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub grants: Grants,
}

impl Principal {
    /// The name audit lines give the caller.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Scheduler => "scheduler",
            Principal::User(identity) => &identity.name,
        }
    }
}

fn audit_denial(ctx: &Context, verb: Verb, resource: &str, namespace: &str, error: &Error) {
    tracing::info!(
        target: "runledger::audit",
        principal = ctx.principal.name(),
        rpc = verb.name(),
        resource,
        namespace,
        outcome = "denied",
        reason = error.message(),
    );
}

/// Logs a write's outcome on the audit target (when authentication is on) and passes the result on.
pub(super) fn audited<T>(
    ctx: &Context,
    verb: Verb,
    resource: &str,
    namespace: &str,
    result: Result<T>,
) -> Result<T> {
    // With authentication off there is nobody to name: no audit trail (and no log line per
    // write on the hot path).
    if ctx.principal == Principal::Anonymous {
        return result;
    }
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {:?}", e.grpc_code()),
    };
    tracing::info!(
        target: "runledger::audit",
        principal = ctx.principal.name(),
        rpc = verb.name(),
        resource,
        namespace,
        outcome,
    );
    result
}

/// [`audited`] for a call on a record: `namespace` is the record's once the call was allowed
/// (None: it failed before, and a denial was audited where it was decided).
pub(super) fn audited_on<T>(
    ctx: &Context,
    verb: Verb,
    resource: &str,
    namespace: Option<String>,
    result: Result<T>,
) -> Result<T> {
    match namespace {
        Some(ns) => audited(ctx, verb, resource, &ns, result),
        None => result,
    }
}

impl Core {
    /// Whether calls must carry an authenticated principal (auth is on).
    pub(super) fn multi_user(&self) -> bool {
        self.multi_user.load(Ordering::Acquire)
    }

    /// The caller's grants; None when authentication is off (everything is allowed).
    fn grants<'a>(&self, ctx: &'a Context) -> Result<Option<&'a Grants>> {
        match &ctx.principal {
            Principal::User(identity) => Ok(Some(&identity.grants)),
            Principal::Scheduler => Ok(None),
            // Only reachable when a request bypassed the identifying layer: refuse rather
            // than let a call through unchecked.
            Principal::Anonymous if self.multi_user() => Err(Error::Unauthenticated(
                "authentication required: send `authorization: Bearer <token>`".into(),
            )),
            Principal::Anonymous => Ok(None),
        }
    }

    /// Allows `verb` on the record `resource` in `namespace`. A record the caller cannot read
    /// answers `missing()`, exactly as if it did not exist.
    pub(super) fn allow_on_record(
        &self,
        ctx: &Context,
        verb: Verb,
        resource: &str,
        namespace: &str,
        missing: impl FnOnce() -> Error,
    ) -> Result<()> {
        let Some(grants) = self.grants(ctx)? else {
            return Ok(());
        };
        if grants.allows(verb, namespace) {
            return Ok(());
        }
        let error = if grants.allows(Verb::GetRun, namespace) {
            denied(ctx, verb, namespace)
        } else {
            missing()
        };
        audit_denial(ctx, verb, resource, namespace, &error);
        Err(error)
    }

    /// Allows `verb` in `namespace` as a whole (a create, a scoped list or watch).
    pub(super) fn allow_in_namespace(
        &self,
        ctx: &Context,
        verb: Verb,
        resource: &str,
        namespace: &str,
    ) -> Result<()> {
        let Some(grants) = self.grants(ctx)? else {
            return Ok(());
        };
        if grants.allows(verb, namespace) {
            return Ok(());
        }
        let error = denied(ctx, verb, namespace);
        audit_denial(ctx, verb, resource, namespace, &error);
        Err(error)
    }

    /// Allows `verb` across every namespace (an unscoped list or watch): needs a `*` grant.
    pub(super) fn allow_everywhere(&self, ctx: &Context, verb: Verb) -> Result<()> {
        let Some(grants) = self.grants(ctx)? else {
            return Ok(());
        };
        if grants.every.is_some_and(|role| role >= verb.least_role()) {
            return Ok(());
        }
        let error = Error::PermissionDenied(format!(
            "{} may not {} across every namespace (that needs a grant on namespace \"*\"); pass \
             a namespace",
            ctx.principal.name(),
            verb.name()
        ));
        audit_denial(ctx, verb, "", "*", &error);
        Err(error)
    }

    /// Allows reading a record shared with every namespace (a pipeline in namespace ""): any
    /// authenticated caller may.
    pub(super) fn allow_shared_read(&self, ctx: &Context) -> Result<()> {
        self.grants(ctx).map(drop)
    }

    /// Allows `GET /metrics`, whose labels name every namespace and count its runs: a grant on
    /// `*`, any role.
    pub(super) fn allow_metrics(&self, ctx: &Context) -> Result<()> {
        let Some(grants) = self.grants(ctx)? else {
            return Ok(());
        };
        if grants
            .every
            .is_some_and(|role| role >= Verb::ReadMetrics.least_role())
        {
            return Ok(());
        }
        let error = Error::PermissionDenied(format!(
            "{} may not read /metrics: it counts runs in every namespace, so it needs a grant on \
             namespace \"*\"",
            ctx.principal.name()
        ));
        audit_denial(ctx, Verb::ReadMetrics, "/metrics", "*", &error);
        Err(error)
    }

    /// Whether the caller may read records of `namespace` (filters watch streams).
    pub(super) fn can_read(&self, ctx: &Context, namespace: &str) -> bool {
        match self.grants(ctx) {
            Ok(Some(grants)) => grants.allows(Verb::GetRun, namespace),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

fn denied(ctx: &Context, verb: Verb, namespace: &str) -> Error {
    Error::PermissionDenied(format!(
        "{} may not {} in namespace {namespace:?}",
        ctx.principal.name(),
        verb.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_one_below_does_and_its_own_calls() {
        let mut grants = Grants::default();
        grants.add(Some("v"), Role::Viewer);
        grants.add(Some("x"), Role::Executor);
        grants.add(Some("e"), Role::Editor);
        grants.add(Some("a"), Role::Admin);
        assert!(grants.allows(Verb::ListRuns, "v"));
        assert!(!grants.allows(Verb::ReportRunState, "v"));
        assert!(grants.allows(Verb::ReportRunState, "x"));
        assert!(!grants.allows(Verb::DeleteRun, "x"));
        assert!(grants.allows(Verb::DeleteRun, "e"));
        assert!(!grants.allows(Verb::DeleteExperiment, "e"));
        assert!(grants.allows(Verb::DeleteExperiment, "a"));
        assert!(!grants.allows(Verb::GetRun, ""));
        assert!(!grants.allows(Verb::GetRun, "other"));
    }

    #[test]
    fn the_highest_of_a_namespace_grant_and_a_star_grant_wins() {
        let mut grants = Grants::default();
        grants.add(None, Role::Viewer);
        grants.add(Some("team"), Role::Editor);
        grants.add(Some("team"), Role::Viewer);
        assert_eq!(grants.role_in("team"), Some(Role::Editor));
        assert_eq!(grants.role_in(""), Some(Role::Viewer));
        assert!(grants.allows(Verb::ListRuns, "anything"));
        assert!(!grants.allows(Verb::CreateRun, "anything"));
    }
}
