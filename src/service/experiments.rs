//! Experiment use cases, including the per-namespace default experiment.

use std::sync::Arc;

use super::access::{Verb, audited};
use super::validate::{MAX_ID_BYTES, check_lookup_id, check_text};
use super::{Context, Core, MAX_ATTEMPTS, contended, unless_conflict};
use crate::api::{Experiment, ListExperimentsRequest, ListExperimentsResponse, experiment};
use crate::error::{Error, Result};
use crate::query::{ListQuery, ListRequest, Scope};
use crate::store::{Expectation, Op, Stored, Write};

/// Name of the experiment that runs created without one go to.
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("experiment {id:?} not found"))
}

/// Experiments: create, read, list, archive, delete.
pub struct Experiments {
    core: Arc<Core>,
}

impl Core {
    /// The namespace's default experiment, and the ops a write that uses it must carry: the
    /// expectation that it still exists, or what creates or adopts it. An experiment already
    /// named "Default" in the namespace is adopted rather than duplicated.
    pub(super) async fn default_experiment(
        &self,
        ctx: &Context,
        namespace: &str,
    ) -> Result<(Experiment, Vec<Op>)> {
        if let Some(id) = self.store.default_experiment(namespace).await?
            && let Some(existing) = self.store.experiment(&id).await?
        {
            return Ok((
                existing.value,
                vec![Op::Expect(Expectation::ExperimentExists(id))],
            ));
        }
        let set_default = |id: &str| Op::SetDefaultExperiment {
            namespace: namespace.to_owned(),
            experiment_id: id.to_owned(),
        };
        if let Some(existing) = self
            .store
            .experiment_named(namespace, DEFAULT_EXPERIMENT_NAME)
            .await?
        {
            let id = existing.value.experiment_id.clone();
            let ops = vec![
                set_default(&id),
                Op::Expect(Expectation::ExperimentExists(id)),
            ];
            return Ok((existing.value, ops));
        }
        let created = Experiment {
            experiment_id: ctx.new_id(),
            display_name: DEFAULT_EXPERIMENT_NAME.to_owned(),
            description: "Runs created without an experiment are grouped here.".to_owned(),
            created_at: Some(ctx.now()),
            namespace: namespace.to_owned(),
            storage_state: experiment::StorageState::Available as i32,
            last_run_created_at: None,
        };
        let ops = vec![
            Op::PutExperiment {
                experiment: created.clone(),
                replaces: None,
            },
            set_default(&created.experiment_id),
        ];
        Ok((created, ops))
    }

    /// The experiment a new `kind` ("run", "recurring_run") goes to, and the ops its write must
    /// carry: `experiment_id` (NOT_FOUND when unknown), or else the namespace's default
    /// experiment. A non-empty `namespace` other than the experiment's is INVALID_ARGUMENT.
    pub(super) async fn experiment_for_new(
        &self,
        ctx: &Context,
        kind: &str,
        experiment_id: &str,
        namespace: &str,
    ) -> Result<(Experiment, Vec<Op>)> {
        let (experiment, ops) = if experiment_id.is_empty() {
            self.default_experiment(ctx, namespace).await?
        } else {
            let experiment = self.experiment(experiment_id).await?.value;
            let id = experiment.experiment_id.clone();
            (
                experiment,
                vec![Op::Expect(Expectation::ExperimentExists(id))],
            )
        };
        if !namespace.is_empty() && namespace != experiment.namespace {
            return Err(Error::invalid(format!(
                "{kind}.namespace {namespace:?} differs from the namespace {:?} of experiment \
                 {:?}; a {} belongs to its experiment's namespace (leave namespace empty)",
                experiment.namespace,
                experiment.experiment_id,
                kind.replace('_', " ")
            )));
        }
        Ok((experiment, ops))
    }

    pub(super) async fn experiment(&self, experiment_id: &str) -> Result<Stored<Experiment>> {
        check_lookup_id("experiment_id", experiment_id)?;
        self.store
            .experiment(experiment_id)
            .await?
            .ok_or_else(|| not_found(experiment_id))
    }
}

impl Experiments {
    pub(super) fn new(core: Arc<Core>) -> Experiments {
        Experiments { core }
    }

    pub async fn create(&self, ctx: &Context, input: Experiment) -> Result<Experiment> {
        let limits = &self.core.limits;
        check_text(
            "experiment.display_name",
            &input.display_name,
            true,
            limits.max_name_bytes,
        )?;
        check_text(
            "experiment.description",
            &input.description,
            false,
            limits.max_description_bytes,
        )?;
        check_text(
            "experiment.namespace",
            &input.namespace,
            false,
            MAX_ID_BYTES,
        )?;
        self.core.allow_in_namespace(
            ctx,
            Verb::CreateExperiment,
            &input.display_name,
            &input.namespace,
        )?;
        let namespace = input.namespace.clone();
        let result = self.create_allowed(ctx, input).await;
        let id = result
            .as_ref()
            .map_or("", |e| e.experiment_id.as_str())
            .to_owned();
        audited(ctx, Verb::CreateExperiment, &id, &namespace, result)
    }

    async fn create_allowed(&self, ctx: &Context, input: Experiment) -> Result<Experiment> {
        let created = Experiment {
            experiment_id: ctx.new_id(),
            display_name: input.display_name,
            description: input.description,
            created_at: Some(ctx.now()),
            namespace: input.namespace,
            storage_state: experiment::StorageState::Available as i32,
            last_run_created_at: None,
        };
        let store = &self.core.store;
        for _ in 0..MAX_ATTEMPTS {
            if let Some(existing) = store
                .experiment_named(&created.namespace, &created.display_name)
                .await?
            {
                // The existing experiment may not be durable yet; say it exists only once it is.
                store.settle().await?;
                return Err(Error::AlreadyExists(format!(
                    "an experiment named {:?} already exists in namespace {:?} (id {:?})",
                    created.display_name, created.namespace, existing.value.experiment_id
                )));
            }
            let write = Write::new(vec![Op::PutExperiment {
                experiment: created.clone(),
                replaces: None,
            }]);
            if let Some(result) = unless_conflict(store.write(write).await) {
                return result.map(|_| created);
            }
        }
        Err(contended("the experiment's name"))
    }

    pub async fn get(&self, ctx: &Context, experiment_id: &str) -> Result<Experiment> {
        let experiment = self.core.experiment(experiment_id).await?.value;
        self.core.allow_on_record(
            ctx,
            Verb::GetExperiment,
            experiment_id,
            &experiment.namespace,
            || not_found(experiment_id),
        )?;
        Ok(experiment)
    }

    pub async fn list(
        &self,
        ctx: &Context,
        request: &ListExperimentsRequest,
    ) -> Result<ListExperimentsResponse> {
        check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
        let scope = if request.namespace.is_empty() {
            self.core.allow_everywhere(ctx, Verb::ListExperiments)?;
            Scope::All
        } else {
            self.core
                .allow_in_namespace(ctx, Verb::ListExperiments, "", &request.namespace)?;
            Scope::Namespace(request.namespace.clone())
        };
        let query = ListQuery::parse::<Experiment>(
            &ListRequest {
                scope,
                page_size: request.page_size,
                sort_by: &request.sort_by,
                filter: &request.filter,
                page_token: &request.page_token,
            },
            &self.core.token_key,
            &self.core.limits.query,
        )?;
        let page = self.core.store.list_experiments(query.clone()).await?;
        Ok(ListExperimentsResponse {
            next_page_token: query.next_page_token(&page, &self.core.token_key),
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
            experiments: page.items.into_iter().map(|e| e.value).collect(),
        })
    }

    /// Reads the experiment, lets `plan` decide the ops (None: nothing to write) and writes them,
    /// against the latest record until the write is not outraced.
    async fn change(&self, ctx: &Context, experiment_id: &str, change: Change) -> Result<()> {
        let mut namespace = None;
        let result = self
            .change_allowed(ctx, experiment_id, change, &mut namespace)
            .await;
        match namespace {
            Some(ns) => audited(ctx, change.verb(), experiment_id, &ns, result),
            None => result,
        }
    }

    async fn change_allowed(
        &self,
        ctx: &Context,
        experiment_id: &str,
        change: Change,
        namespace: &mut Option<String>,
    ) -> Result<()> {
        let store = &self.core.store;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.core.experiment(experiment_id).await?;
            let ns = &current.value.namespace;
            self.core
                .allow_on_record(ctx, change.verb(), experiment_id, ns, || {
                    not_found(experiment_id)
                })?;
            *namespace = Some(ns.clone());
            let Some(ops) = change.ops(&self.core, &current, ctx.now()).await? else {
                // Nothing to write, but the answer confirms a state that must be durable too.
                return store.settle().await;
            };
            if let Some(result) = unless_conflict(store.write(Write::new(ops)).await) {
                return result.map(drop);
            }
        }
        Err(contended(&format!("experiment {experiment_id:?}")))
    }

    /// Archives the experiment and all its runs in one atomic write.
    pub async fn archive(&self, ctx: &Context, experiment_id: &str) -> Result<()> {
        self.change(ctx, experiment_id, Change::Archive).await
    }

    /// Makes the experiment available again; its runs keep their storage state.
    pub async fn unarchive(&self, ctx: &Context, experiment_id: &str) -> Result<()> {
        self.change(ctx, experiment_id, Change::Unarchive).await
    }

    /// Deletes the experiment and all its runs in one atomic write. A namespace's default
    /// experiment cannot be deleted.
    pub async fn delete(&self, ctx: &Context, experiment_id: &str) -> Result<()> {
        self.change(ctx, experiment_id, Change::Delete).await
    }
}

/// A change of an experiment.
#[derive(Clone, Copy)]
enum Change {
    Archive,
    Unarchive,
    Delete,
}

impl Change {
    fn verb(self) -> Verb {
        match self {
            Change::Archive => Verb::ArchiveExperiment,
            Change::Unarchive => Verb::UnarchiveExperiment,
            Change::Delete => Verb::DeleteExperiment,
        }
    }

    /// What the change writes, given the experiment's current record (None: nothing). Archiving
    /// also archives its runs and disables its recurring runs (as KFP does); deleting deletes
    /// both.
    async fn ops(
        self,
        core: &Core,
        current: &Stored<Experiment>,
        now: crate::wkt::Timestamp,
    ) -> Result<Option<Vec<Op>>> {
        let e = &current.value;
        let with_storage_state = |state: experiment::StorageState| Op::PutExperiment {
            experiment: Experiment {
                storage_state: state as i32,
                ..e.clone()
            },
            replaces: Some(current.revision.clone()),
        };
        Ok(match self {
            Change::Archive => Some(vec![
                Op::ArchiveRunsOf {
                    experiment_id: e.experiment_id.clone(),
                },
                Op::DisableRecurringRunsOf {
                    experiment_id: e.experiment_id.clone(),
                    at: now,
                },
                with_storage_state(experiment::StorageState::Archived),
            ]),
            Change::Unarchive => {
                let available = experiment::StorageState::Available;
                (e.storage_state != available as i32).then(|| vec![with_storage_state(available)])
            }
            Change::Delete => {
                let default = core.store.default_experiment(&e.namespace).await?;
                if default.as_deref() == Some(e.experiment_id.as_str()) {
                    return Err(Error::FailedPrecondition(format!(
                        "experiment {:?} is the default experiment of namespace {:?} and \
                         cannot be deleted",
                        e.experiment_id, e.namespace
                    )));
                }
                Some(vec![
                    // Not made the default meanwhile (a run created without an experiment can
                    // adopt one named "Default").
                    Op::Expect(Expectation::DefaultExperiment {
                        namespace: e.namespace.clone(),
                        experiment_id: default,
                    }),
                    Op::DeleteRecurringRunsOf {
                        experiment_id: e.experiment_id.clone(),
                    },
                    Op::DeleteExperiment {
                        experiment_id: e.experiment_id.clone(),
                        replaces: current.revision.clone(),
                    },
                ])
            }
        })
    }
}
