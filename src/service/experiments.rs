//! Experiment use cases, including the per-namespace default experiment.

use super::Ledger;
use super::validate::{MAX_ID_BYTES, check_lookup_id, check_text};
use crate::api::{Experiment, ListExperimentsRequest, ListExperimentsResponse, experiment, run};
use crate::error::{Error, Result};
use crate::query::page::{self, PageRequest, Source};
use crate::store::{Counts, Order, Store, Txn};
use crate::wkt::Timestamp;

/// Name of the experiment that runs created without one go to.
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

struct ExperimentSource<'a> {
    store: &'a Store,
    namespace: Option<String>,
}

impl Source for ExperimentSource<'_> {
    type Item = Experiment;

    fn scan(
        &self,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Experiment>> + '_> {
        Box::new(
            self.store
                .scan_experiments(self.namespace.as_deref(), order, after),
        )
    }

    fn counts(&self) -> Result<Counts> {
        self.store.experiment_counts(self.namespace.as_deref())
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("experiment {id:?} not found"))
}

impl Ledger {
    /// The namespace's default experiment, created on first use. An experiment already named
    /// "Default" in the namespace is adopted rather than duplicated.
    pub(super) fn default_experiment(
        &self,
        txn: &mut Txn<'_>,
        namespace: &str,
        now: Timestamp,
    ) -> Result<Experiment> {
        if let Some(id) = txn.default_experiment_id(namespace)?
            && let Some(existing) = txn.experiment(&id)?
        {
            return Ok(existing);
        }
        if let Some(id) = txn.experiment_id_by_name(namespace, DEFAULT_EXPERIMENT_NAME)?
            && let Some(existing) = txn.experiment(&id)?
        {
            txn.set_default_experiment(namespace, &id);
            return Ok(existing);
        }
        let created = Experiment {
            experiment_id: uuid::Uuid::new_v4().to_string(),
            display_name: DEFAULT_EXPERIMENT_NAME.to_owned(),
            description: "Runs created without an experiment are grouped here.".to_owned(),
            created_at: Some(now),
            namespace: namespace.to_owned(),
            storage_state: experiment::StorageState::Available as i32,
            last_run_created_at: None,
        };
        txn.put_experiment(None, &created);
        txn.set_default_experiment(namespace, &created.experiment_id);
        Ok(created)
    }

    pub async fn create_experiment(&self, input: Experiment) -> Result<Experiment> {
        check_text(
            "experiment.display_name",
            &input.display_name,
            true,
            self.limits.max_name_bytes,
        )?;
        check_text(
            "experiment.description",
            &input.description,
            false,
            self.limits.max_description_bytes,
        )?;
        check_text(
            "experiment.namespace",
            &input.namespace,
            false,
            MAX_ID_BYTES,
        )?;
        let (ticket, created) = 'txn: {
            let mut txn = self.store.begin();
            if let Some(id) = txn.experiment_id_by_name(&input.namespace, &input.display_name)? {
                // As for runs: the existing experiment may not be durable yet; say it exists
                // only once it is.
                let message = format!(
                    "an experiment named {:?} already exists in namespace {:?} (id {id:?})",
                    input.display_name, input.namespace
                );
                break 'txn (txn.settled(), Err(Error::AlreadyExists(message)));
            }
            let created = Experiment {
                experiment_id: uuid::Uuid::new_v4().to_string(),
                display_name: input.display_name,
                description: input.description,
                created_at: Some(Timestamp::now()),
                namespace: input.namespace,
                storage_state: experiment::StorageState::Available as i32,
                last_run_created_at: None,
            };
            txn.put_experiment(None, &created);
            (txn.commit()?, Ok(created))
        };
        self.durable(ticket).await?;
        created
    }

    pub fn get_experiment(&self, experiment_id: &str) -> Result<Experiment> {
        check_lookup_id("experiment_id", experiment_id)?;
        self.store
            .get_experiment(experiment_id)?
            .ok_or_else(|| not_found(experiment_id))
    }

    pub fn list_experiments(
        &self,
        request: &ListExperimentsRequest,
    ) -> Result<ListExperimentsResponse> {
        check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
        let namespace = (!request.namespace.is_empty()).then(|| request.namespace.clone());
        let scope = match &namespace {
            Some(ns) => format!("namespace:{ns}"),
            None => "all".to_owned(),
        };
        let source = ExperimentSource {
            store: &self.store,
            namespace,
        };
        let page = page::list(
            &source,
            &PageRequest {
                scope,
                page_size: request.page_size,
                sort_by: &request.sort_by,
                filter: &request.filter,
                page_token: &request.page_token,
            },
            &self.token_key,
            &self.limits.query,
        )?;
        Ok(ListExperimentsResponse {
            experiments: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        })
    }

    /// Runs `change` on the latest stored experiment under the writer lock; `change` makes its
    /// writes through the transaction and says whether there is anything to commit.
    async fn write_experiment(
        &self,
        experiment_id: &str,
        change: impl FnOnce(&mut Txn<'_>, &Experiment) -> Result<bool>,
    ) -> Result<()> {
        check_lookup_id("experiment_id", experiment_id)?;
        let ticket = {
            let mut txn = self.store.begin();
            let old = txn
                .experiment(experiment_id)?
                .ok_or_else(|| not_found(experiment_id))?;
            if !change(&mut txn, &old)? {
                // Nothing to write, but the answer confirms a state that must be durable too.
                txn.settled()
            } else {
                txn.commit()?
            }
        };
        self.durable(ticket).await
    }

    /// Archives the experiment and all its runs in one atomic write.
    pub async fn archive_experiment(&self, experiment_id: &str) -> Result<()> {
        self.write_experiment(experiment_id, |txn, old| {
            let archived_run = run::StorageState::Archived as i32;
            for run_id in txn.run_ids_of_experiment(&old.experiment_id)? {
                if let Some(old_run) = txn.run(&run_id)?
                    && old_run.storage_state != archived_run
                {
                    let mut archived = old_run.clone();
                    archived.storage_state = archived_run;
                    txn.put_run(Some(&old_run), &archived);
                }
            }
            let mut new = old.clone();
            new.storage_state = experiment::StorageState::Archived as i32;
            txn.put_experiment(Some(old), &new);
            Ok(true)
        })
        .await
    }

    /// Makes the experiment available again; its runs keep their storage state.
    pub async fn unarchive_experiment(&self, experiment_id: &str) -> Result<()> {
        self.write_experiment(experiment_id, |txn, old| {
            let available = experiment::StorageState::Available as i32;
            if old.storage_state == available {
                return Ok(false);
            }
            let mut new = old.clone();
            new.storage_state = available;
            txn.put_experiment(Some(old), &new);
            Ok(true)
        })
        .await
    }

    /// Deletes the experiment and all its runs in one atomic write. A namespace's default
    /// experiment cannot be deleted.
    pub async fn delete_experiment(&self, experiment_id: &str) -> Result<()> {
        self.write_experiment(experiment_id, |txn, old| {
            if txn.default_experiment_id(&old.namespace)?.as_deref() == Some(experiment_id) {
                return Err(Error::FailedPrecondition(format!(
                    "experiment {experiment_id:?} is the default experiment of namespace {:?} and \
                     cannot be deleted",
                    old.namespace
                )));
            }
            for run_id in txn.run_ids_of_experiment(experiment_id)? {
                if let Some(old_run) = txn.run(&run_id)? {
                    txn.delete_run(&old_run);
                }
            }
            txn.delete_experiment(old);
            Ok(true)
        })
        .await
    }
}
