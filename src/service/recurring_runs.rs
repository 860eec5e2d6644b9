//! Recurring-run use cases (create, get, list, enable, disable, delete) and the step the
//! scheduler takes for each one: create the runs that are due.
//!
//! A recurring run lives in an experiment (empty experiment_id: the namespace's "Default") and
//! its namespace. Archiving the experiment disables its recurring runs (as in KFP); deleting the
//! experiment deletes them, with its runs [ours: KFP leaves them behind, still scheduling into
//! a deleted experiment].
//!
//! Exactly once: a due run and the advanced schedule are written together, in one atomic write
//! that names the revision of the recurring run it read, and the run's id is derived from the
//! recurring run's id and the scheduled time. A crash before the write leaves the schedule where
//! it was, so the time is due again after a restart; a lost race (another scheduler, an enable or
//! disable) rereads; a run that exists already is never created twice.

use std::sync::Arc;

use prost::Message;

use super::access::{Verb, audited, audited_on};
use super::timetable::Timetable;
use super::validate::{self, MAX_ID_BYTES, check_lookup_id, check_struct_bytes, check_text};
use super::{Context, Core, MAX_ATTEMPTS, Runs, contended, lifecycle};
use crate::api::{
    ListRecurringRunsRequest, ListRecurringRunsResponse, PipelineVersionReference, RecurringRun,
    Run, RuntimeState, recurring_run, run,
};
use crate::error::{Error, Result};
use crate::query::{ListRequest, Scope};
use crate::store::{Expectation, Op, RecurringRunRecord, ScheduleState, Stored, StoredRun, Write};
use crate::wkt::Timestamp;

/// max_concurrency's range (KFP's).
const CONCURRENCY: std::ops::RangeInclusive<i64> = 1..=10;

/// Runs one call to [`RecurringRuns::schedule_due`] creates at most, so that one recurring run
/// with a long backlog does not hold up the others.
const MAX_RUNS_PER_STEP: usize = 100;

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("recurring run {id:?} not found"))
}

/// When the scheduler should look at a recurring run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Its next run is due at this time.
    At(Timestamp),
    /// A run is due but max_concurrency of its runs are unfinished: when one finishes.
    Blocked,
    /// Not while it stays as it is (disabled, deleted, or its schedule has ended).
    Never,
    /// It has more runs due now (a backlog longer than one step).
    Now,
}

/// Recurring runs: the API's use cases and the scheduler's step.
pub struct RecurringRuns {
    core: Arc<Core>,
    runs: Runs,
}

impl RecurringRuns {
    pub(super) fn new(core: Arc<Core>) -> RecurringRuns {
        RecurringRuns {
            runs: Runs::new(core.clone()),
            core,
        }
    }

    async fn stored(&self, id: &str) -> Result<Stored<RecurringRunRecord>> {
        check_lookup_id("recurring_run_id", id)?;
        self.core
            .store
            .recurring_run(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    fn check_new(&self, r: &RecurringRun) -> Result<Timetable> {
        let limits = &self.core.limits;
        check_text(
            "recurring_run.display_name",
            &r.display_name,
            true,
            limits.max_name_bytes,
        )?;
        check_text(
            "recurring_run.description",
            &r.description,
            false,
            limits.max_description_bytes,
        )?;
        for (field, value) in [
            ("recurring_run.experiment_id", &r.experiment_id),
            ("recurring_run.namespace", &r.namespace),
            ("recurring_run.service_account", &r.service_account),
        ] {
            check_text(field, value, false, MAX_ID_BYTES)?;
        }
        if !CONCURRENCY.contains(&r.max_concurrency) {
            return Err(Error::invalid(format!(
                "recurring_run.max_concurrency must be 1 to 10 (how many of its runs may be \
                 unfinished at once), not {}",
                r.max_concurrency
            )));
        }
        if let Some(config) = &r.runtime_config
            && config.parameters.len() > limits.max_parameters
        {
            return Err(Error::invalid(format!(
                "recurring_run.runtime_config.parameters has {} entries; at most {} are accepted",
                config.parameters.len(),
                limits.max_parameters
            )));
        }
        #[allow(deprecated)]
        let source_given = match &r.pipeline_source {
            Some(recurring_run::PipelineSource::PipelineVersionId(id)) => !id.is_empty(),
            Some(recurring_run::PipelineSource::PipelineSpec(spec)) => {
                check_struct_bytes("recurring_run.pipeline_spec", spec)?;
                true
            }
            Some(recurring_run::PipelineSource::PipelineVersionReference(r)) => {
                !r.pipeline_id.is_empty() || !r.pipeline_version_id.is_empty()
            }
            None => false,
        };
        if !source_given {
            return Err(Error::invalid(
                "recurring_run.pipeline_source is required: give exactly one of \
                 pipeline_version_reference, pipeline_spec or pipeline_version_id",
            ));
        }
        let timetable = Timetable::of(r).map_err(Error::invalid)?;
        for (field, value) in [
            ("start_time", timetable.start()),
            ("end_time", timetable.end()),
        ] {
            validate::check_timestamp(&format!("recurring_run.trigger.{field}"), &value)?;
        }
        if let (Some(start), Some(end)) = (timetable.start(), timetable.end())
            && end < start
        {
            return Err(Error::invalid(format!(
                "recurring_run.trigger ends ({end}) before it starts ({start})"
            )));
        }
        Ok(timetable)
    }

    /// Creates a recurring run. Its pipeline is checked now: a version reference must name a
    /// version (NOT_FOUND otherwise); a reference to a pipeline alone (the latest version at
    /// each run) needs the pipeline to have a version.
    pub async fn create(&self, ctx: &Context, input: RecurringRun) -> Result<RecurringRun> {
        let now = ctx.now();
        let mut candidate = RecurringRun {
            created_at: Some(now),
            ..input.clone()
        };
        let timetable = self.check_new(&candidate)?;
        if timetable.next(None, now).is_none() && timetable.end().is_none() {
            return Err(Error::invalid(
                "recurring_run.trigger.cron_schedule.cron matches no time within five years",
            ));
        }
        let namespace = if input.experiment_id.is_empty() {
            self.core.allow_in_namespace(
                ctx,
                Verb::CreateRecurringRun,
                &input.display_name,
                &input.namespace,
            )?;
            input.namespace.clone()
        } else {
            let experiment = self.core.experiment(&input.experiment_id).await?.value;
            self.core.allow_on_record(
                ctx,
                Verb::CreateRecurringRun,
                &input.experiment_id,
                &experiment.namespace,
                || Error::NotFound(format!("experiment {:?} not found", input.experiment_id)),
            )?;
            experiment.namespace
        };
        candidate.recurring_run_id = ctx.new_id();
        let id = candidate.recurring_run_id.clone();
        let result = self.create_allowed(ctx, candidate).await;
        if result.is_ok() {
            self.core.scheduler_wakeup.notify_one();
        }
        audited(ctx, Verb::CreateRecurringRun, &id, &namespace, result)
    }

    async fn create_allowed(&self, ctx: &Context, input: RecurringRun) -> Result<RecurringRun> {
        let store = &self.core.store;
        #[allow(deprecated)]
        let pipeline_source = match input.pipeline_source.clone() {
            Some(recurring_run::PipelineSource::PipelineVersionId(version_id)) => Some(
                recurring_run::PipelineSource::PipelineVersionReference(PipelineVersionReference {
                    pipeline_id: String::new(),
                    pipeline_version_id: version_id,
                }),
            ),
            other => other,
        };
        until_not_outraced!("the recurring run's experiment", async {
            let (experiment, mut ops) = self
                .core
                .experiment_for_new(ctx, "recurring_run", &input.experiment_id, &input.namespace)
                .await?;
            let pipeline_source = match &pipeline_source {
                Some(recurring_run::PipelineSource::PipelineVersionReference(reference)) => {
                    let field = "recurring_run.pipeline_version_reference";
                    let version = self
                        .core
                        .referenced_version(ctx, field, reference)
                        .await?
                        .value;
                    let pinned = !reference.pipeline_version_id.is_empty();
                    ops.push(Op::Expect(if pinned {
                        Expectation::PipelineVersionExists(version.pipeline_version_id.clone())
                    } else {
                        Expectation::PipelineExists(version.pipeline_id.clone())
                    }));
                    Some(recurring_run::PipelineSource::PipelineVersionReference(
                        PipelineVersionReference {
                            pipeline_id: version.pipeline_id,
                            // Empty: the pipeline's latest version when each run is created.
                            pipeline_version_id: if pinned {
                                version.pipeline_version_id
                            } else {
                                String::new()
                            },
                        },
                    ))
                }
                other => other.clone(),
            };
            let enabled = input.mode == recurring_run::Mode::Enable as i32;
            let recurring_run = RecurringRun {
                pipeline_source,
                experiment_id: experiment.experiment_id.clone(),
                namespace: experiment.namespace.clone(),
                updated_at: input.created_at,
                ..with_status(input.clone(), enabled)
            };
            ops.push(Op::PutRecurringRun {
                record: Box::new(RecurringRunRecord {
                    recurring_run: recurring_run.clone(),
                    schedule: ScheduleState::default(),
                }),
                replaces: None,
            });
            store.write(Write::new(ops)).await.map(|_| recurring_run)
        })
    }

    pub async fn get(&self, ctx: &Context, id: &str) -> Result<RecurringRun> {
        let stored = self.stored(id).await?;
        let r = stored.value.recurring_run;
        self.core
            .allow_on_record(ctx, Verb::GetRecurringRun, id, &r.namespace, || {
                not_found(id)
            })?;
        Ok(r)
    }

    /// Lists the recurring runs of an experiment, a namespace, or every one.
    pub async fn list(
        &self,
        ctx: &Context,
        request: &ListRecurringRunsRequest,
    ) -> Result<ListRecurringRunsResponse> {
        let scope = if !request.experiment_id.is_empty() {
            let id = &request.experiment_id;
            let experiment = self.core.experiment(id).await?.value;
            self.core.allow_on_record(
                ctx,
                Verb::ListRecurringRuns,
                id,
                &experiment.namespace,
                || Error::NotFound(format!("experiment {id:?} not found")),
            )?;
            Scope::Experiment(id.clone())
        } else if !request.namespace.is_empty() {
            check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
            self.core
                .allow_in_namespace(ctx, Verb::ListRecurringRuns, "", &request.namespace)?;
            Scope::Namespace(request.namespace.clone())
        } else {
            self.core.allow_everywhere(ctx, Verb::ListRecurringRuns)?;
            Scope::All
        };
        let store = &self.core.store;
        let listed = self
            .core
            .list_page::<RecurringRun, _, _>(
                &ListRequest {
                    scope,
                    page_size: request.page_size,
                    sort_by: &request.sort_by,
                    filter: &request.filter,
                    page_token: &request.page_token,
                },
                |query| store.list_recurring_runs(query),
            )
            .await?;
        Ok(ListRecurringRunsResponse {
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
            recurring_runs: listed
                .items
                .into_iter()
                .map(|r| r.value.recurring_run)
                .collect(),
        })
    }

    /// Starts scheduling again (and clears an error the scheduler recorded).
    pub async fn enable(&self, ctx: &Context, id: &str) -> Result<()> {
        self.set_enabled(ctx, Verb::EnableRecurringRun, id, true)
            .await?;
        self.core.scheduler_wakeup.notify_one();
        Ok(())
    }

    pub async fn disable(&self, ctx: &Context, id: &str) -> Result<()> {
        self.set_enabled(ctx, Verb::DisableRecurringRun, id, false)
            .await
    }

    async fn set_enabled(&self, ctx: &Context, verb: Verb, id: &str, enabled: bool) -> Result<()> {
        let store = &self.core.store;
        let mut namespace = None;
        let result = until_not_outraced!(format!("recurring run {id:?}"), async {
            let current = self.stored(id).await?;
            let r = &current.value.recurring_run;
            self.core
                .allow_on_record(ctx, verb, id, &r.namespace, || not_found(id))?;
            namespace = Some(r.namespace.clone());
            if r.status == status_of(enabled) as i32 && (!enabled || r.error.is_none()) {
                // Nothing to write; the state it confirms must be durable.
                return store.settle().await;
            }
            let mut record = current.value.clone();
            record.recurring_run = RecurringRun {
                updated_at: Some(ctx.now()),
                error: None,
                ..with_status(record.recurring_run, enabled)
            };
            let write = Write::new(vec![Op::PutRecurringRun {
                record: Box::new(record),
                replaces: Some(current.revision),
            }]);
            store.write(write).await.map(drop)
        });
        audited_on(ctx, verb, id, namespace, result)
    }

    /// Deletes a recurring run; the runs it created stay.
    pub async fn delete(&self, ctx: &Context, id: &str) -> Result<()> {
        let mut namespace = None;
        let result = until_not_outraced!(format!("recurring run {id:?}"), async {
            let current = self.stored(id).await?;
            let r = &current.value.recurring_run;
            self.core
                .allow_on_record(ctx, Verb::DeleteRecurringRun, id, &r.namespace, || {
                    not_found(id)
                })?;
            namespace = Some(r.namespace.clone());
            let write = Write::new(vec![Op::DeleteRecurringRun {
                recurring_run_id: id.to_owned(),
                replaces: current.revision,
            }]);
            self.core.store.write(write).await.map(drop)
        });
        audited_on(ctx, Verb::DeleteRecurringRun, id, namespace, result)
    }

    /// The scheduler's step for one recurring run, as of the clock's now: creates each run that
    /// is due (oldest first, while fewer than max_concurrency of its runs are unfinished, at
    /// most a bounded number per call) and says when to look again.
    pub async fn schedule_due(&self, ctx: &Context, id: &str) -> Result<Next> {
        let store = &self.core.store;
        let mut created = 0;
        let mut lost_races = 0;
        loop {
            let Some(current) = store.recurring_run(id).await? else {
                return Ok(Next::Never);
            };
            let r = &current.value.recurring_run;
            if r.status != recurring_run::Status::Enabled as i32 {
                return Ok(Next::Never);
            }
            let timetable = match Timetable::of(r) {
                Ok(timetable) => timetable,
                Err(e) => {
                    self.stop(ctx, current, Error::invalid(e)).await?;
                    return Ok(Next::Never);
                }
            };
            let now = ctx.now();
            let schedule = &current.value.schedule;
            let Some(at) = timetable.next(schedule.last_scheduled_at, now) else {
                return Ok(Next::Never);
            };
            if at > now {
                return Ok(Next::At(at));
            }
            if created == MAX_RUNS_PER_STEP {
                return Ok(Next::Now);
            }
            let mut unfinished = self.unfinished(&schedule.unfinished_runs).await?;
            if unfinished.len() as i64 >= r.max_concurrency {
                return Ok(Next::Blocked);
            }
            let run_id = scheduled_run_id(id, at);
            let index = schedule.runs_created + 1;
            let mut ops = if store.run(&run_id).await?.is_some() {
                // Created by an earlier attempt whose schedule did not advance: advance it.
                Vec::new()
            } else {
                let input = scheduled_run(r, &run_id, at, index);
                match self.runs.new_run_ops(ctx, &input, &run_id, now).await {
                    Ok(ops) => ops,
                    Err(e @ (Error::NotFound(_) | Error::InvalidArgument(_))) => {
                        self.stop(ctx, current, e).await?;
                        return Ok(Next::Never);
                    }
                    Err(e) => return Err(e),
                }
            };
            unfinished.push(run_id.clone());
            let mut record = current.value.clone();
            record.schedule = ScheduleState {
                last_scheduled_at: Some(at),
                runs_created: index,
                unfinished_runs: unfinished,
            };
            ops.push(Op::PutRecurringRun {
                record: Box::new(record),
                replaces: Some(current.revision.clone()),
            });
            match store.write(Write::new(ops)).await {
                Ok(_) => {
                    created += 1;
                    tracing::info!(
                        recurring_run = id,
                        run = run_id,
                        scheduled_at = %at,
                        "scheduler: created a run"
                    );
                }
                // Changed meanwhile (enabled, disabled, deleted, or another scheduler moved
                // on): read it again.
                Err(Error::Conflict(_)) if lost_races < MAX_ATTEMPTS => lost_races += 1,
                Err(Error::Conflict(_)) => return Err(contended(&format!("recurring run {id:?}"))),
                Err(e) => return Err(e),
            }
        }
    }

    /// Of `runs`, those that exist and have not finished.
    async fn unfinished(&self, runs: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(runs.len());
        for run_id in runs {
            if let Some(stored) = self.core.store.run(run_id).await?
                && !lifecycle::is_terminal(state_of(&stored))
            {
                out.push(run_id.clone());
            }
        }
        Ok(out)
    }

    /// Disables a recurring run whose runs cannot be created, with the reason as its error.
    async fn stop(
        &self,
        ctx: &Context,
        current: Stored<RecurringRunRecord>,
        reason: Error,
    ) -> Result<()> {
        let id = current.value.id().to_owned();
        tracing::warn!(recurring_run = id, error = %reason, "scheduler: disabling a recurring run whose runs cannot be created");
        let mut record = current.value;
        record.recurring_run = RecurringRun {
            updated_at: Some(ctx.now()),
            error: Some(crate::proto::google::rpc::Status {
                code: reason.grpc_code() as i32,
                message: format!(
                    "the scheduler disabled this recurring run: its next run cannot be created: {}",
                    reason.message()
                ),
                details: Vec::new(),
            }),
            ..with_status(record.recurring_run, false)
        };
        let write = Write::new(vec![Op::PutRecurringRun {
            record: Box::new(record),
            replaces: Some(current.revision),
        }]);
        match self.core.store.write(write).await {
            // Changed meanwhile: the next look decides again.
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn status_of(enabled: bool) -> recurring_run::Status {
    if enabled {
        recurring_run::Status::Enabled
    } else {
        recurring_run::Status::Disabled
    }
}

/// `r` enabled or disabled: status and mode agree (as KFP reports them).
fn with_status(r: RecurringRun, enabled: bool) -> RecurringRun {
    RecurringRun {
        status: status_of(enabled) as i32,
        mode: if enabled {
            recurring_run::Mode::Enable
        } else {
            recurring_run::Mode::Disable
        } as i32,
        ..r
    }
}

/// A stored run's state, read without decoding the rest of it.
fn state_of(stored: &StoredRun) -> RuntimeState {
    /// Only Run.state (field 13); prost skips every other field.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RunState {
        #[prost(int32, tag = "13")]
        state: i32,
    }
    RunState::decode(stored.record())
        .ok()
        .and_then(|s| RuntimeState::try_from(s.state).ok())
        .unwrap_or(RuntimeState::Unspecified)
}

/// The id of the run scheduled at `at`: a name-based (v5) UUID of the recurring run's id and
/// the time, so that every attempt to create it names the same run.
pub fn scheduled_run_id(recurring_run_id: &str, at: Timestamp) -> String {
    /// runledger's namespace for scheduled run ids (a fixed, random UUID).
    const SCHEDULED_RUNS: uuid::Uuid =
        uuid::Uuid::from_u128(0x3f0d_5c1e_8b7a_4e2f_9d61_2a4c_7e93_b805);
    let name = format!("{recurring_run_id}/{}.{:09}", at.seconds, at.nanos);
    uuid::Uuid::new_v5(&SCHEDULED_RUNS, name.as_bytes()).to_string()
}

/// The run a recurring run creates for `at`, its `index`-th.
fn scheduled_run(r: &RecurringRun, run_id: &str, at: Timestamp, index: i64) -> Run {
    #[allow(deprecated)]
    let pipeline_source = match &r.pipeline_source {
        Some(recurring_run::PipelineSource::PipelineSpec(spec)) => {
            Some(run::PipelineSource::PipelineSpec(spec.clone()))
        }
        Some(recurring_run::PipelineSource::PipelineVersionReference(reference)) => Some(
            run::PipelineSource::PipelineVersionReference(reference.clone()),
        ),
        Some(recurring_run::PipelineSource::PipelineVersionId(id)) => Some(
            run::PipelineSource::PipelineVersionReference(PipelineVersionReference {
                pipeline_id: String::new(),
                pipeline_version_id: id.clone(),
            }),
        ),
        None => None,
    };
    Run {
        run_id: run_id.to_owned(),
        display_name: scheduled_run_name(r, index),
        experiment_id: r.experiment_id.clone(),
        namespace: r.namespace.clone(),
        pipeline_source,
        runtime_config: r.runtime_config.clone(),
        service_account: r.service_account.clone(),
        scheduled_at: Some(at),
        recurring_run_id: r.recurring_run_id.clone(),
        ..Default::default()
    }
}

/// The display name KFP gives the `index`-th run of a recurring run: its ScheduledWorkflow's
/// name (the display name lowercased, cut to `[a-z0-9-]` and 25 characters, "job-" when
/// nothing is left, plus five characters that Kubernetes picks at random and runledger derives
/// from the recurring run's id), then `-index-`, then the FNV-1a hash of what comes before.
pub fn scheduled_run_name(r: &RecurringRun, index: i64) -> String {
    use sha2::Digest;
    const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut base: String = r
        .display_name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(25)
        .collect();
    if base.is_empty() {
        base = "job-".to_owned();
    }
    let digest = sha2::Sha256::digest(r.recurring_run_id.as_bytes());
    base.extend(
        digest[..5]
            .iter()
            .map(|b| GENERATED[*b as usize % GENERATED.len()] as char),
    );
    let resource = format!("{base}-{index}");
    format!("{resource}-{}", fnv1a(resource.as_bytes()))
}

/// 32-bit FNV-1a, as Go's hash/fnv New32a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_run_ids_depend_on_the_recurring_run_and_the_time_only() {
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let later = Timestamp {
            seconds: 1_700_000_060,
            nanos: 0,
        };
        assert_eq!(scheduled_run_id("rr", t), scheduled_run_id("rr", t));
        assert_ne!(scheduled_run_id("rr", t), scheduled_run_id("rr", later));
        assert_ne!(scheduled_run_id("rr", t), scheduled_run_id("rr2", t));
        assert!(super::validate::check_run_id(&scheduled_run_id("rr", t)).is_ok());
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn scheduled_run_names_follow_kfp() {
        let r = RecurringRun {
            recurring_run_id: "4a1e".into(),
            display_name: "! HaVe ä £unky name, and a long one too".into(),
            ..Default::default()
        };
        let name = scheduled_run_name(&r, 3);
        let (resource, hash) = name.rsplit_once('-').unwrap();
        assert!(resource.starts_with("haveunkynameandalongoneto"), "{name}");
        assert_eq!(resource.len(), 25 + 5 + 2, "{name}");
        assert!(resource.ends_with("-3"), "{name}");
        assert_eq!(hash, fnv1a(resource.as_bytes()).to_string());
        // Stable for one recurring run, different for another.
        assert_eq!(scheduled_run_name(&r, 3), name);
        let other = RecurringRun {
            recurring_run_id: "other".into(),
            ..r.clone()
        };
        assert_ne!(scheduled_run_name(&other, 3), name);
        let unnamed = RecurringRun {
            display_name: "!!!".into(),
            ..r
        };
        assert!(scheduled_run_name(&unnamed, 1).starts_with("job-"));
    }
}
