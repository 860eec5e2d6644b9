//! Run use cases: create, read, list, archive, delete, and the lifecycle reports.

use std::sync::Arc;

use super::access::{Verb, audited};
use super::lifecycle;
use super::validate::{self, MAX_ID_BYTES, check_lookup_id, check_struct_bytes, check_text};
use super::{Context, Core, MAX_ATTEMPTS, contended, unless_conflict};
use crate::api::{
    ListRunsRequest, PipelineVersionReference, ReportRunStateRequest, Run, RuntimeState,
    RuntimeStatus, experiment, run,
};
use crate::error::{Error, Result};
use crate::query::{ListQuery, ListRequest, Scope};
use crate::store::{Expectation, Op, StoredRun, Write, Written};
use crate::wkt::Timestamp;

/// Runs: create, read, list, archive, delete, and the lifecycle.
pub struct Runs {
    pub(super) core: Arc<Core>,
}

/// One page of ListRuns, runs as stored.
pub struct RunPage {
    pub runs: Vec<StoredRun>,
    pub total_size: i32,
    pub next_page_token: String,
}

fn run_not_found(run_id: &str) -> Error {
    Error::NotFound(format!("run {run_id:?} not found"))
}

fn state_name(state: i32) -> String {
    RuntimeState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("unknown state {state}"))
}

/// A reported state: a known, set RuntimeState.
fn reported_state(field: &str, value: i32) -> Result<RuntimeState> {
    match RuntimeState::try_from(value) {
        Ok(RuntimeState::Unspecified) => Err(Error::invalid(format!("{field} is required"))),
        Ok(state) => Ok(state),
        Err(_) => Err(Error::invalid(format!(
            "{field} {value} is not a RuntimeState value (1 to 8)"
        ))),
    }
}

fn current_state(run: &Run) -> RuntimeState {
    RuntimeState::try_from(run.state).unwrap_or(RuntimeState::Unspecified)
}

/// Moves `run` into `state` at `at`: one history entry, finished_at on entering a terminal
/// state.
fn enter_state(
    run: &mut Run,
    state: RuntimeState,
    at: Timestamp,
    error: Option<crate::proto::google::rpc::Status>,
) {
    run.state = state as i32;
    run.state_history.push(RuntimeStatus {
        update_time: Some(at),
        state: state as i32,
        error,
    });
    if lifecycle::is_terminal(state) {
        run.finished_at = Some(at);
    }
}

/// The one run a write put.
fn put_run(written: Written) -> Result<StoredRun> {
    written
        .runs
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("the store did not return the run it wrote"))
}

impl Runs {
    pub(super) fn new(core: Arc<Core>) -> Runs {
        Runs { core }
    }

    pub async fn create(&self, ctx: &Context, input: Run) -> Result<StoredRun> {
        self.check_new_run(&input)?;
        // A run goes to its experiment's namespace, or to the given one's default experiment.
        let namespace = if input.experiment_id.is_empty() {
            self.core
                .allow_in_namespace(ctx, Verb::CreateRun, &input.run_id, &input.namespace)?;
            input.namespace.clone()
        } else {
            let experiment = self.core.experiment(&input.experiment_id).await?.value;
            self.core.allow_on_record(
                ctx,
                Verb::CreateRun,
                &input.experiment_id,
                &experiment.namespace,
                || Error::NotFound(format!("experiment {:?} not found", input.experiment_id)),
            )?;
            experiment.namespace
        };
        let requested = input.run_id.clone();
        let result = self.create_allowed(ctx, input).await;
        let run_id = result
            .as_ref()
            .map_or(requested.as_str(), |run| run.run_id());
        audited(ctx, Verb::CreateRun, run_id, &namespace, result.clone())
    }

    async fn create_allowed(&self, ctx: &Context, input: Run) -> Result<StoredRun> {
        let now = ctx.now();
        let run_id = if input.run_id.is_empty() {
            ctx.new_id()
        } else {
            input.run_id.clone()
        };
        let store = &self.core.store;
        for _ in 0..MAX_ATTEMPTS {
            if store.run(&run_id).await?.is_some() {
                // A client retrying a create takes this as "it is there": make sure it is on
                // disk before saying so (its first create may not be acknowledged yet).
                store.settle().await?;
                return Err(Error::AlreadyExists(format!(
                    "a run with run_id {run_id:?} already exists"
                )));
            }
            let ops = self.new_run_ops(ctx, &input, &run_id, now).await?;
            if let Some(result) = unless_conflict(store.write(Write::new(ops)).await) {
                return result.and_then(put_run);
            }
        }
        Err(contended(&format!("run {run_id:?} or its experiment")))
    }

    /// The ops that create run `run_id` from `input` at `now`: what its experiment needs (it
    /// still exists; or the namespace's default experiment is created or adopted), that the
    /// pipeline version it names still exists, and the run itself. A version reference is
    /// resolved here: NOT_FOUND when the version (or with only a pipeline id, any version of
    /// the pipeline) is missing; the stored run names both ids of the version that ran.
    pub(super) async fn new_run_ops(
        &self,
        ctx: &Context,
        input: &Run,
        run_id: &str,
        now: Timestamp,
    ) -> Result<Vec<Op>> {
        let (experiment, mut ops) = self
            .core
            .experiment_for_new(ctx, "run", &input.experiment_id, &input.namespace)
            .await?;
        let pipeline_source = match &input.pipeline_source {
            Some(run::PipelineSource::PipelineVersionReference(reference)) => {
                let version = self
                    .core
                    .referenced_version(ctx, "run.pipeline_version_reference", reference)
                    .await?
                    .value;
                ops.push(Op::Expect(Expectation::PipelineVersionExists(
                    version.pipeline_version_id.clone(),
                )));
                Some(run::PipelineSource::PipelineVersionReference(
                    PipelineVersionReference {
                        pipeline_id: version.pipeline_id,
                        pipeline_version_id: version.pipeline_version_id,
                    },
                ))
            }
            other => other.clone(),
        };
        let run = Run {
            experiment_id: experiment.experiment_id.clone(),
            run_id: run_id.to_owned(),
            display_name: input.display_name.clone(),
            storage_state: run::StorageState::Available as i32,
            description: input.description.clone(),
            pipeline_source,
            runtime_config: input.runtime_config.clone(),
            service_account: input.service_account.clone(),
            created_at: Some(now),
            scheduled_at: Some(input.scheduled_at.unwrap_or(now)),
            finished_at: None,
            state: RuntimeState::Pending as i32,
            error: None,
            runtime_details: None,
            recurring_run_id: input.recurring_run_id.clone(),
            state_history: vec![RuntimeStatus {
                update_time: Some(now),
                state: RuntimeState::Pending as i32,
                error: None,
            }],
            namespace: experiment.namespace.clone(),
        };
        ops.push(Op::PutRun {
            run: Box::new(run),
            replaces: None,
        });
        Ok(ops)
    }

    fn check_new_run(&self, run: &Run) -> Result<()> {
        let limits = &self.core.limits;
        check_text(
            "run.display_name",
            &run.display_name,
            true,
            limits.max_name_bytes,
        )?;
        check_text(
            "run.description",
            &run.description,
            false,
            limits.max_description_bytes,
        )?;
        if !run.run_id.is_empty() {
            validate::check_run_id(&run.run_id)?;
        }
        for (field, value) in [
            ("run.experiment_id", &run.experiment_id),
            ("run.namespace", &run.namespace),
            ("run.service_account", &run.service_account),
            ("run.recurring_run_id", &run.recurring_run_id),
        ] {
            check_text(field, value, false, MAX_ID_BYTES)?;
        }
        let source_given = match &run.pipeline_source {
            Some(run::PipelineSource::PipelineId(id)) => !id.is_empty(),
            Some(run::PipelineSource::PipelineSpec(spec)) => {
                check_struct_bytes("run.pipeline_spec", spec)?;
                true
            }
            Some(run::PipelineSource::PipelineVersionReference(r)) => {
                !r.pipeline_id.is_empty() || !r.pipeline_version_id.is_empty()
            }
            None => false,
        };
        if !source_given {
            return Err(Error::invalid(
                "run.pipeline_source is required: give exactly one of pipeline_id, pipeline_spec \
                 or pipeline_version_reference",
            ));
        }
        validate::check_timestamp("run.scheduled_at", &run.scheduled_at)?;
        if let Some(config) = &run.runtime_config
            && config.parameters.len() > limits.max_parameters
        {
            return Err(Error::invalid(format!(
                "run.runtime_config.parameters has {} entries; at most {} are accepted",
                config.parameters.len(),
                limits.max_parameters
            )));
        }
        Ok(())
    }

    pub async fn get(&self, ctx: &Context, run_id: &str) -> Result<StoredRun> {
        check_lookup_id("run_id", run_id)?;
        let stored = self
            .core
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| run_not_found(run_id))?;
        if self.core.multi_user() {
            self.allow_on_run(ctx, Verb::GetRun, &stored)?;
        }
        Ok(stored)
    }

    /// Allows `verb` on a stored run (NOT_FOUND, as if missing, when the caller cannot read
    /// it). Returns its namespace.
    fn allow_on_run(&self, ctx: &Context, verb: Verb, stored: &StoredRun) -> Result<String> {
        let namespace = stored.namespace();
        self.core
            .allow_on_record(ctx, verb, stored.run_id(), &namespace, || {
                run_not_found(stored.run_id())
            })?;
        Ok(namespace)
    }

    pub async fn list(&self, ctx: &Context, request: &ListRunsRequest) -> Result<RunPage> {
        let scope = if !request.experiment_id.is_empty() {
            let id = &request.experiment_id;
            let experiment = self.core.experiment(id).await?.value;
            self.core
                .allow_on_record(ctx, Verb::ListRuns, id, &experiment.namespace, || {
                    Error::NotFound(format!("experiment {id:?} not found"))
                })?;
            Scope::Experiment(request.experiment_id.clone())
        } else if !request.namespace.is_empty() {
            check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
            self.core
                .allow_in_namespace(ctx, Verb::ListRuns, "", &request.namespace)?;
            Scope::Namespace(request.namespace.clone())
        } else {
            self.core.allow_everywhere(ctx, Verb::ListRuns)?;
            Scope::All
        };
        let key = &self.core.token_key;
        let query = ListQuery::parse::<Run>(
            &ListRequest {
                scope,
                page_size: request.page_size,
                sort_by: &request.sort_by,
                filter: &request.filter,
                page_token: &request.page_token,
            },
            key,
            &self.core.limits.query,
        )?;
        let page = self.core.store.list_runs(query.clone()).await?;
        Ok(RunPage {
            next_page_token: query.next_page_token(&page, key),
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
            runs: page.items,
        })
    }

    /// Applies `change` to the latest stored record of a run and stores the result, if
    /// `change` says it changed anything. Retried against the latest record when another write
    /// got there first.
    async fn update(
        &self,
        ctx: &Context,
        verb: Verb,
        run_id: &str,
        change: impl FnMut(&mut Run) -> Result<bool>,
    ) -> Result<StoredRun> {
        check_lookup_id("run_id", run_id)?;
        let mut namespace = None;
        let result = self
            .update_allowed(ctx, verb, run_id, &mut namespace, change)
            .await;
        match namespace {
            // Audited once allowed; a denial was audited where it was decided.
            Some(ns) => audited(ctx, verb, run_id, &ns, result),
            None => result,
        }
    }

    async fn update_allowed(
        &self,
        ctx: &Context,
        verb: Verb,
        run_id: &str,
        namespace: &mut Option<String>,
        mut change: impl FnMut(&mut Run) -> Result<bool>,
    ) -> Result<StoredRun> {
        let store = &self.core.store;
        for _ in 0..MAX_ATTEMPTS {
            let stored = store
                .run(run_id)
                .await?
                .ok_or_else(|| run_not_found(run_id))?;
            *namespace = Some(self.allow_on_run(ctx, verb, &stored)?);
            let mut run = stored.decode();
            if !change(&mut run)? {
                // Nothing to write, but the answer acknowledges a state that another caller's
                // write may have produced a moment ago: it must be durable too.
                store.settle().await?;
                return Ok(stored);
            }
            let write = Write::new(vec![Op::PutRun {
                run: Box::new(run),
                replaces: Some(stored.revision().clone()),
            }]);
            if let Some(result) = unless_conflict(store.write(write).await) {
                return result.and_then(put_run);
            }
        }
        Err(contended(&format!("run {run_id:?}")))
    }

    pub async fn archive(&self, ctx: &Context, run_id: &str) -> Result<()> {
        self.update(ctx, Verb::ArchiveRun, run_id, |run| {
            let archived = run::StorageState::Archived as i32;
            let changed = run.storage_state != archived;
            run.storage_state = archived;
            Ok(changed)
        })
        .await
        .map(drop)
    }

    /// Makes the run available again, unless its experiment is archived.
    pub async fn unarchive(&self, ctx: &Context, run_id: &str) -> Result<()> {
        check_lookup_id("run_id", run_id)?;
        let mut namespace = None;
        let result = self.unarchive_allowed(ctx, run_id, &mut namespace).await;
        match namespace {
            Some(ns) => audited(ctx, Verb::UnarchiveRun, run_id, &ns, result),
            None => result,
        }
    }

    async fn unarchive_allowed(
        &self,
        ctx: &Context,
        run_id: &str,
        namespace: &mut Option<String>,
    ) -> Result<()> {
        let store = &self.core.store;
        let available = run::StorageState::Available as i32;
        for _ in 0..MAX_ATTEMPTS {
            let stored = store
                .run(run_id)
                .await?
                .ok_or_else(|| run_not_found(run_id))?;
            *namespace = Some(self.allow_on_run(ctx, Verb::UnarchiveRun, &stored)?);
            let mut run = stored.decode();
            if run.storage_state == available {
                return store.settle().await;
            }
            let experiment = store.experiment(&run.experiment_id).await?;
            if let Some(e) = &experiment
                && e.value.storage_state == experiment::StorageState::Archived as i32
            {
                return Err(Error::FailedPrecondition(format!(
                    "run {:?} cannot be unarchived while its experiment {:?} is archived; \
                     unarchive the experiment first",
                    run.run_id, run.experiment_id
                )));
            }
            let mut ops = Vec::new();
            if let Some(e) = experiment {
                // Not archived meanwhile.
                ops.push(Op::Expect(Expectation::Experiment {
                    id: e.value.experiment_id,
                    revision: e.revision,
                }));
            }
            run.storage_state = available;
            ops.push(Op::PutRun {
                run: Box::new(run),
                replaces: Some(stored.revision().clone()),
            });
            if let Some(result) = unless_conflict(store.write(Write::new(ops)).await) {
                return result.map(drop);
            }
        }
        Err(contended(&format!("run {run_id:?}")))
    }

    pub async fn delete(&self, ctx: &Context, run_id: &str) -> Result<()> {
        check_lookup_id("run_id", run_id)?;
        let mut namespace = None;
        let result = self.delete_allowed(ctx, run_id, &mut namespace).await;
        match namespace {
            Some(ns) => audited(ctx, Verb::DeleteRun, run_id, &ns, result),
            None => result,
        }
    }

    async fn delete_allowed(
        &self,
        ctx: &Context,
        run_id: &str,
        namespace: &mut Option<String>,
    ) -> Result<()> {
        let store = &self.core.store;
        for _ in 0..MAX_ATTEMPTS {
            let stored = store
                .run(run_id)
                .await?
                .ok_or_else(|| run_not_found(run_id))?;
            *namespace = Some(self.allow_on_run(ctx, Verb::DeleteRun, &stored)?);
            let write = Write::new(vec![Op::DeleteRun {
                run_id: run_id.to_owned(),
                replaces: stored.revision().clone(),
            }]);
            if let Some(result) = unless_conflict(store.write(write).await) {
                return result.map(drop);
            }
        }
        Err(contended(&format!("run {run_id:?}")))
    }

    /// Moves a run to the reported state, following the lifecycle's transitions.
    pub async fn report_state(
        &self,
        ctx: &Context,
        request: ReportRunStateRequest,
    ) -> Result<StoredRun> {
        let state = reported_state("state", request.state)?;
        let expected = match request.expected_state {
            0 => None,
            value => Some(reported_state("expected_state", value)?),
        };
        validate::check_timestamp("update_time", &request.update_time)?;
        let at = request.update_time.unwrap_or_else(|| ctx.now());
        self.update(ctx, Verb::ReportRunState, &request.run_id, |run| {
            let current = current_state(run);
            if let Some(expected) = expected
                && expected != current
            {
                return Err(Error::Aborted(format!(
                    "run {:?} is in state {}, not the expected {}",
                    run.run_id,
                    state_name(run.state),
                    expected.as_str_name()
                )));
            }
            let details_given = request.runtime_details.is_some() || request.error.is_some();
            if let Some(details) = &request.runtime_details {
                run.runtime_details = Some(details.clone());
            }
            if state == current {
                if let Some(error) = &request.error {
                    run.error = Some(error.clone());
                }
                return Ok(details_given);
            }
            if !lifecycle::can_transition(current, state) {
                return Err(Error::FailedPrecondition(format!(
                    "run {:?} cannot move from {} to {}{}",
                    run.run_id,
                    state_name(run.state),
                    state.as_str_name(),
                    if lifecycle::is_terminal(current) {
                        " (it is finished; RetryRun restarts FAILED or CANCELED runs)"
                    } else {
                        ""
                    }
                )));
            }
            if request.error.is_some() {
                run.error = request.error.clone();
            }
            enter_state(run, state, at, request.error.clone());
            Ok(true)
        })
        .await
    }

    pub async fn terminate(&self, ctx: &Context, run_id: &str) -> Result<()> {
        let now = ctx.now();
        self.update(ctx, Verb::TerminateRun, run_id, |run| {
            let current = current_state(run);
            let target = lifecycle::terminate_target(current).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "run {:?} is {}; only PENDING, RUNNING, PAUSED or CANCELING runs can be terminated",
                    run.run_id,
                    state_name(run.state)
                ))
            })?;
            if target == current {
                return Ok(false);
            }
            enter_state(run, target, now, None);
            Ok(true)
        })
        .await
        .map(drop)
    }

    pub async fn retry(&self, ctx: &Context, run_id: &str) -> Result<()> {
        let now = ctx.now();
        self.update(ctx, Verb::RetryRun, run_id, |run| {
            if !lifecycle::can_retry(current_state(run)) {
                return Err(Error::FailedPrecondition(format!(
                    "run {:?} is {}; only FAILED or CANCELED runs can be retried",
                    run.run_id,
                    state_name(run.state)
                )));
            }
            run.finished_at = None;
            run.error = None;
            enter_state(run, RuntimeState::Pending, now, None);
            Ok(true)
        })
        .await
        .map(drop)
    }
}
