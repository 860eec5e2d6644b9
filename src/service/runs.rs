//! Run use cases: create, read, list, archive, delete, and the lifecycle reports.

use super::Ledger;
use super::lifecycle;
use super::validate::{self, MAX_ID_BYTES, check_lookup_id, check_text};
use crate::api::{
    ListRunsRequest, ListRunsResponse, ReportRunStateRequest, Run, RuntimeState, RuntimeStatus,
    experiment, run,
};
use crate::error::{Error, Result};
use crate::query::page::{self, PageRequest, Source};
use crate::store::{Counts, EncodedRun, ListedRun, Order, RunScope, Store, Txn};
use crate::wkt::Timestamp;

/// The scope of a run listing, read through the store.
struct RunSource<'a> {
    store: &'a Store,
    scope: RunScope,
}

impl Source for RunSource<'_> {
    type Item = ListedRun;

    fn scan(
        &self,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<ListedRun>> + '_> {
        Box::new(self.store.scan_listed_runs(&self.scope, order, after))
    }

    fn counts(&self) -> Result<Counts> {
        self.store.run_counts(&self.scope)
    }
}

/// One page of ListRuns, runs as stored.
pub struct RunPage {
    pub runs: Vec<ListedRun>,
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

impl Ledger {
    pub async fn create_run(&self, input: Run) -> Result<Run> {
        self.create_run_stored(input).await.map(|(run, _)| run)
    }

    /// CreateRun answering with the stored encoding of the new run.
    pub async fn create_run_encoded(&self, input: Run) -> Result<EncodedRun> {
        self.create_run_stored(input)
            .await
            .map(|(_, encoded)| encoded)
    }

    async fn create_run_stored(&self, input: Run) -> Result<(Run, EncodedRun)> {
        self.check_new_run(&input)?;
        let now = Timestamp::now();
        let run_id = if input.run_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            input.run_id.clone()
        };
        let (ticket, run) = 'txn: {
            let mut txn = self.store.begin();
            if txn.run(&run_id)?.is_some() {
                // A client retrying a create takes this as "it is there": make sure it is on
                // disk before saying so (its first create may not be acknowledged yet).
                break 'txn (txn.settled(), Err(run_id));
            }
            let experiment = if input.experiment_id.is_empty() {
                self.default_experiment(&mut txn, &input.namespace, now)?
            } else {
                txn.experiment(&input.experiment_id)?.ok_or_else(|| {
                    Error::NotFound(format!("experiment {:?} not found", input.experiment_id))
                })?
            };
            if !input.namespace.is_empty() && input.namespace != experiment.namespace {
                return Err(Error::invalid(format!(
                    "run.namespace {:?} differs from the namespace {:?} of experiment {:?}; a run \
                     belongs to its experiment's namespace (leave namespace empty)",
                    input.namespace, experiment.namespace, experiment.experiment_id
                )));
            }
            let run = Run {
                experiment_id: experiment.experiment_id.clone(),
                run_id,
                display_name: input.display_name,
                storage_state: run::StorageState::Available as i32,
                description: input.description,
                pipeline_source: input.pipeline_source,
                runtime_config: input.runtime_config,
                service_account: input.service_account,
                created_at: Some(now),
                scheduled_at: Some(input.scheduled_at.unwrap_or(now)),
                finished_at: None,
                state: RuntimeState::Pending as i32,
                error: None,
                runtime_details: None,
                recurring_run_id: input.recurring_run_id,
                state_history: vec![RuntimeStatus {
                    update_time: Some(now),
                    state: RuntimeState::Pending as i32,
                    error: None,
                }],
                namespace: experiment.namespace.clone(),
            };
            let encoded = txn.put_run(None, &run);
            let mut updated = experiment.clone();
            updated.last_run_created_at = Some(now);
            txn.put_experiment(Some(&experiment), &updated);
            (txn.commit()?, Ok((run, encoded)))
        };
        self.durable(ticket).await?;
        run.map_err(|run_id| {
            Error::AlreadyExists(format!("a run with run_id {run_id:?} already exists"))
        })
    }

    fn check_new_run(&self, run: &Run) -> Result<()> {
        let limits = &self.limits;
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
            Some(run::PipelineSource::PipelineSpec(_)) => true,
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

    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        check_lookup_id("run_id", run_id)?;
        self.store
            .get_run(run_id)?
            .ok_or_else(|| run_not_found(run_id))
    }

    /// GetRun without decoding the stored run: its encoding, to send as is.
    pub fn get_run_encoded(&self, run_id: &str) -> Result<EncodedRun> {
        check_lookup_id("run_id", run_id)?;
        self.store
            .get_run_encoded(run_id)?
            .ok_or_else(|| run_not_found(run_id))
    }

    pub fn list_runs(&self, request: &ListRunsRequest) -> Result<ListRunsResponse> {
        let page = self.list_runs_encoded(request)?;
        Ok(ListRunsResponse {
            runs: page
                .runs
                .iter()
                .map(|r| r.encoded.decode(&r.summary.run_id))
                .collect(),
            total_size: page.total_size,
            next_page_token: page.next_page_token,
        })
    }

    /// ListRuns with each run's stored encoding, to send without decoding the runs.
    pub fn list_runs_encoded(&self, request: &ListRunsRequest) -> Result<RunPage> {
        let (scope, scope_name) = if !request.experiment_id.is_empty() {
            check_lookup_id("experiment_id", &request.experiment_id)?;
            if self.store.get_experiment(&request.experiment_id)?.is_none() {
                return Err(Error::NotFound(format!(
                    "experiment {:?} not found",
                    request.experiment_id
                )));
            }
            (
                RunScope::Experiment(request.experiment_id.clone()),
                format!("experiment:{}", request.experiment_id),
            )
        } else if !request.namespace.is_empty() {
            check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
            (
                RunScope::Namespace(request.namespace.clone()),
                format!("namespace:{}", request.namespace),
            )
        } else {
            (RunScope::All, "all".to_owned())
        };
        let source = RunSource {
            store: &self.store,
            scope,
        };
        let page = page::list(
            &source,
            &PageRequest {
                scope: scope_name,
                page_size: request.page_size,
                sort_by: &request.sort_by,
                filter: &request.filter,
                page_token: &request.page_token,
            },
            &self.token_key,
            &self.limits.query,
        )?;
        Ok(RunPage {
            runs: page.items,
            total_size: page.total_size,
            next_page_token: page.next_page_token,
        })
    }

    /// Applies `change` to the latest stored record of a run, under the writer lock, and
    /// stores the result if `change` says it changed anything.
    async fn update_run(
        &self,
        run_id: &str,
        change: impl FnOnce(&Txn<'_>, &mut Run) -> Result<bool>,
    ) -> Result<Run> {
        self.update_run_stored(run_id, change)
            .await
            .map(|(run, _)| run)
    }

    /// [`Ledger::update_run`], also returning the stored encoding (None when nothing changed).
    async fn update_run_stored(
        &self,
        run_id: &str,
        change: impl FnOnce(&Txn<'_>, &mut Run) -> Result<bool>,
    ) -> Result<(Run, Option<EncodedRun>)> {
        check_lookup_id("run_id", run_id)?;
        let (ticket, run) = 'txn: {
            let mut txn = self.store.begin();
            let old = txn.run(run_id)?.ok_or_else(|| run_not_found(run_id))?;
            let mut new = old.clone();
            if !change(&txn, &mut new)? {
                // Nothing to write, but the answer acknowledges a state that another caller's
                // write may have produced a moment ago: it must be durable too.
                break 'txn (txn.settled(), (new, None));
            }
            let encoded = txn.put_run(Some(&old), &new);
            (txn.commit()?, (new, Some(encoded)))
        };
        self.durable(ticket).await?;
        Ok(run)
    }

    pub async fn archive_run(&self, run_id: &str) -> Result<()> {
        self.update_run(run_id, |_, run| {
            let archived = run::StorageState::Archived as i32;
            let changed = run.storage_state != archived;
            run.storage_state = archived;
            Ok(changed)
        })
        .await
        .map(drop)
    }

    pub async fn unarchive_run(&self, run_id: &str) -> Result<()> {
        self.update_run(run_id, |txn, run| {
            let available = run::StorageState::Available as i32;
            if run.storage_state == available {
                return Ok(false);
            }
            let experiment_archived = txn
                .experiment(&run.experiment_id)?
                .is_some_and(|e| e.storage_state == experiment::StorageState::Archived as i32);
            if experiment_archived {
                return Err(Error::FailedPrecondition(format!(
                    "run {:?} cannot be unarchived while its experiment {:?} is archived; \
                     unarchive the experiment first",
                    run.run_id, run.experiment_id
                )));
            }
            run.storage_state = available;
            Ok(true)
        })
        .await
        .map(drop)
    }

    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        check_lookup_id("run_id", run_id)?;
        let ticket = {
            let mut txn = self.store.begin();
            let old = txn.run(run_id)?.ok_or_else(|| run_not_found(run_id))?;
            txn.delete_run(&old);
            txn.commit()?
        };
        self.durable(ticket).await
    }

    /// Moves a run to the reported state (SPEC §5).
    pub async fn report_run_state(&self, request: ReportRunStateRequest) -> Result<Run> {
        self.report_run_state_stored(request)
            .await
            .map(|(run, _)| run)
    }

    /// ReportRunState answering with the stored encoding of the run.
    pub async fn report_run_state_encoded(
        &self,
        request: ReportRunStateRequest,
    ) -> Result<EncodedRun> {
        let (run, encoded) = self.report_run_state_stored(request).await?;
        Ok(encoded.unwrap_or_else(|| EncodedRun::from_run(&run)))
    }

    async fn report_run_state_stored(
        &self,
        request: ReportRunStateRequest,
    ) -> Result<(Run, Option<EncodedRun>)> {
        let state = reported_state("state", request.state)?;
        let expected = match request.expected_state {
            0 => None,
            value => Some(reported_state("expected_state", value)?),
        };
        validate::check_timestamp("update_time", &request.update_time)?;
        let at = request.update_time.unwrap_or_else(Timestamp::now);
        self.update_run_stored(&request.run_id, |_, run| {
            let current = RuntimeState::try_from(run.state).unwrap_or(RuntimeState::Unspecified);
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
            if let Some(details) = request.runtime_details {
                run.runtime_details = Some(details);
            }
            if state == current {
                if let Some(error) = request.error {
                    run.error = Some(error);
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
            enter_state(run, state, at, request.error);
            Ok(true)
        })
        .await
    }

    pub async fn terminate_run(&self, run_id: &str) -> Result<()> {
        self.update_run(run_id, |_, run| {
            let current = RuntimeState::try_from(run.state).unwrap_or(RuntimeState::Unspecified);
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
            enter_state(run, target, Timestamp::now(), None);
            Ok(true)
        })
        .await
        .map(drop)
    }

    pub async fn retry_run(&self, run_id: &str) -> Result<()> {
        self.update_run(run_id, |_, run| {
            let current = RuntimeState::try_from(run.state).unwrap_or(RuntimeState::Unspecified);
            if !lifecycle::can_retry(current) {
                return Err(Error::FailedPrecondition(format!(
                    "run {:?} is {}; only FAILED or CANCELED runs can be retried",
                    run.run_id,
                    state_name(run.state)
                )));
            }
            run.finished_at = None;
            run.error = None;
            enter_state(run, RuntimeState::Pending, Timestamp::now(), None);
            Ok(true)
        })
        .await
        .map(drop)
    }
}
