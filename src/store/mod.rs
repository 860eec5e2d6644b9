//! The store interface: what the service may ask of any backend, over records and queries.
//!
//! A backend keeps runs and experiments and answers reads, list queries ([`ListQuery`] →
//! [`Page`]) and counters; it applies a [`Write`] (several [`Op`]s) atomically and, when
//! `write` returns, durably; and it publishes every committed run change, in commit order, on
//! its change feed ([`feed`]). Writes are compare-and-set: an op that replaces a record names
//! the [`Revision`] it read, and the whole write fails with [`Error::Conflict`] (changing
//! nothing) when any record changed since, so the service retries against the latest state and
//! no update is ever lost, whichever process or thread made the other change.
//!
//! Each backend owns its own indexes, counters and whatever else makes queries cheap; none of
//! that is visible here. Derived data the backend maintains on its own: an experiment's
//! `last_run_created_at` (raised by every new run in it), a namespace's default-experiment
//! pointer being cleared when that experiment is deleted, counters.
//!
//! Backends: [`sled`] (embedded, the default) and [`postgres`] (several stateless replicas on
//! one database). [`open`] is the one place that picks one; nothing above this module knows
//! which runs. `tests/store_conformance.rs` is the behaviour suite every backend must pass.

mod catalog;
pub mod feed;
mod intercept;
mod observe;
pub mod portable;
pub mod postgres;
mod record;
mod schedule;
pub mod sled;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::postgres::{PostgresOptions, check_database, migrate as migrate_database};
pub use self::sled::{
    CheckReport, DataDirOptions, Durability, MigrateOptions, MigrationReport, RepairReport,
};
pub use catalog::{CatalogRecord, data_loss};
pub use feed::{Change, ChangeKind, Subscription};
pub use intercept::{Intercepted, WriteInterceptor};
pub use observe::{ObserverSlot, StoreObserver};
pub use record::{Revision, SpecBlob, Stored, StoredRun, split_spec};
pub use schedule::{RecurringRunRecord, ScheduleState};

use crate::api::{Experiment, Pipeline, PipelineVersion, Run};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Page, Scope, Tally};
use crate::wkt::Timestamp;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A run as stored, or None.
    async fn run(&self, run_id: &str) -> Result<Option<StoredRun>>;
    async fn experiment(&self, experiment_id: &str) -> Result<Option<Stored<Experiment>>>;
    /// The experiment named `display_name` in `namespace` (names are unique per namespace).
    async fn experiment_named(
        &self,
        namespace: &str,
        display_name: &str,
    ) -> Result<Option<Stored<Experiment>>>;
    /// The id of `namespace`'s default experiment, once one was set.
    async fn default_experiment(&self, namespace: &str) -> Result<Option<String>>;
    /// One page of runs (scope All, Namespace or Experiment).
    async fn list_runs(&self, query: ListQuery) -> Result<Page<StoredRun>>;
    /// One page of experiments (scope All or Namespace).
    async fn list_experiments(&self, query: ListQuery) -> Result<Page<Stored<Experiment>>>;
    /// How many runs a scope holds, by state and storage state.
    async fn run_tally(&self, scope: &Scope) -> Result<Tally>;
    /// Every namespace that holds runs, in order.
    async fn namespaces(&self) -> Result<Vec<String>>;
    /// Applies every op of `write` atomically, or none (a failed expectation: Conflict).
    /// Returns once the write is durable, as the store's durability mode defines it, with the
    /// stored form of every run the write put, in op order.
    async fn write(&self, write: Write) -> Result<Written>;
    /// Waits until every write committed so far is durable: an answer that confirms a state
    /// without writing (a no-op, ALREADY_EXISTS) must not acknowledge what a crash could undo.
    async fn settle(&self) -> Result<()>;
    /// The run change feed, from the live end, or from just after sequence number `after` when
    /// that is still retained (else ResourceExhausted telling the client to list again).
    fn subscribe(&self, after: Option<u64>) -> Result<Subscription>;
    /// The secret that signs page tokens, the same for every process serving this store and
    /// across restarts.
    async fn token_key(&self) -> Result<Vec<u8>>;
    /// Makes everything durable and stops background work; for shutdown. Later calls fail.
    async fn close(&self) -> Result<()>;
    /// Reports the backend's group commits and lagging watchers to `observer` from now on
    /// (the first observer set stays; false if one was set before). Default: nothing to report.
    fn observe(&self, _observer: Arc<dyn StoreObserver>) -> bool {
        false
    }
    /// Bytes the store takes on disk, if the backend knows it cheaply.
    async fn size_on_disk(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Whether the store can serve now (a networked backend: its database answers); the
    /// server reports it on gRPC health. Default: always.
    async fn check_health(&self) -> Result<()> {
        Ok(())
    }

    // ---- Pipelines, pipeline versions, recurring runs and the scheduler's lease ----
    //
    // Names are unique per scope: a pipeline's `name` within its namespace, a version's `name`
    // within its pipeline (a put that would take a used name is a Conflict). A version is
    // handed out with its pipeline_spec.

    async fn pipeline(&self, pipeline_id: &str) -> Result<Option<Stored<Pipeline>>>;
    /// The pipeline named `name` in `namespace`.
    async fn pipeline_named(&self, namespace: &str, name: &str)
    -> Result<Option<Stored<Pipeline>>>;
    /// One page of pipelines (scope Namespace; "" is the shared pipelines).
    async fn list_pipelines(&self, query: ListQuery) -> Result<Page<Stored<Pipeline>>>;
    /// Every namespace that holds pipelines ("" for the shared ones), in order: with
    /// [`Store::list_pipelines`], every pipeline (an export reads them so).
    async fn pipeline_namespaces(&self) -> Result<Vec<String>>;
    async fn pipeline_version(&self, version_id: &str) -> Result<Option<Stored<PipelineVersion>>>;
    /// The version named `name` of pipeline `pipeline_id`.
    async fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> Result<Option<Stored<PipelineVersion>>>;
    /// The pipeline's latest version: the last in (created_at, pipeline_version_id) order.
    async fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> Result<Option<Stored<PipelineVersion>>>;
    /// One page of a pipeline's versions (scope Pipeline).
    async fn list_pipeline_versions(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<PipelineVersion>>>;
    async fn recurring_run(
        &self,
        recurring_run_id: &str,
    ) -> Result<Option<Stored<RecurringRunRecord>>>;
    /// One page of recurring runs (scope All, Namespace or Experiment).
    async fn list_recurring_runs(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<RecurringRunRecord>>>;
    /// Takes or renews the lease `name` for `holder` until `until`, unless another holder's
    /// lease is still valid at `now`: then false, and nothing changes. Only the lease's holder
    /// (the one scheduler of a store) acts; a backend that several processes share makes this
    /// atomic across them.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool>;
    /// Whether the store takes writes now, and the error writes get while it does not (a full
    /// disk, a storage error); follows every change. Reads are answered either way. Default:
    /// always writable.
    fn writable(&self) -> tokio::sync::watch::Receiver<Writable> {
        tokio::sync::watch::channel(Writable::Yes).1
    }
    /// Writes a consistent copy of the whole store (one point in time) into `to`, a new or empty
    /// directory, while the store keeps serving, and checks it; reports progress on `progress`
    /// and stops (removing what it wrote) when every receiver of it is gone. Default: this
    /// backend has no online backup (FAILED_PRECONDITION, pointing at its own tools).
    async fn backup(
        &self,
        _to: &Path,
        _progress: tokio::sync::watch::Sender<BackupProgress>,
    ) -> Result<BackupProgress> {
        Err(Error::FailedPrecondition(
            "this store has no online backup; use its own backup tools".into(),
        ))
    }
}

/// How far a backup is; the last one has `done` and the totals (see [`Store::backup`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupProgress {
    /// Keys (records, index entries, counters, settings) and their bytes copied so far.
    pub keys: u64,
    pub bytes: u64,
    /// The copy is complete and checked.
    pub done: bool,
    /// Runs and experiments in the backup (when done).
    pub runs: u64,
    pub experiments: u64,
    /// Keys that writes changed while the copy was made (copied as they were at its start).
    pub changed_during: u64,
}

/// Whether a store takes writes (see [`Store::writable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writable {
    Yes,
    /// Writes are refused with this error until the store recovers by itself.
    No(Error),
}

/// Changes applied together, atomically.
#[derive(Debug, Clone, Default)]
pub struct Write {
    pub ops: Vec<Op>,
}

impl Write {
    pub fn new(ops: Vec<Op>) -> Write {
        Write { ops }
    }
}

/// One change (or one expectation) of a [`Write`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Stores `run`: a new run when `replaces` is None (Conflict if one with its id exists),
    /// otherwise replacing exactly that revision.
    PutRun {
        run: Box<Run>,
        replaces: Option<Revision>,
    },
    /// Removes a run, which must still be at `replaces`.
    DeleteRun { run_id: String, replaces: Revision },
    /// Stores `experiment`: a new one when `replaces` is None (Conflict if its id exists or its
    /// name is taken in its namespace), otherwise replacing exactly that revision.
    PutExperiment {
        experiment: Experiment,
        replaces: Option<Revision>,
    },
    /// Removes an experiment, which must still be at `replaces`, and every run in it.
    DeleteExperiment {
        experiment_id: String,
        replaces: Revision,
    },
    /// Sets the storage state of every run of the experiment to ARCHIVED.
    ArchiveRunsOf { experiment_id: String },
    /// Makes `experiment_id` its namespace's default experiment; Conflict if one is set.
    SetDefaultExperiment {
        namespace: String,
        experiment_id: String,
    },
    /// Changes nothing; Conflict unless it holds when the write commits.
    Expect(Expectation),

    // ---- Pipelines, pipeline versions and recurring runs ----
    /// Stores a pipeline: a new one when `replaces` is None (Conflict if its id exists or its
    /// name is taken in its namespace), otherwise replacing exactly that revision.
    PutPipeline {
        pipeline: Pipeline,
        replaces: Option<Revision>,
    },
    /// Removes a pipeline, which must still be at `replaces`, and every version of it.
    DeletePipeline {
        pipeline_id: String,
        replaces: Revision,
    },
    /// Stores a version (with its pipeline_spec): a new one when `replaces` is None (Conflict
    /// if its id exists or its name is taken in its pipeline), otherwise replacing exactly that
    /// revision. Writers pair a new version with `Expect(PipelineExists)`.
    PutPipelineVersion {
        version: Box<PipelineVersion>,
        replaces: Option<Revision>,
    },
    /// Removes a version, which must still be at `replaces`.
    DeletePipelineVersion {
        pipeline_version_id: String,
        replaces: Revision,
    },
    /// Stores a recurring run: a new one when `replaces` is None (Conflict if its id exists),
    /// otherwise replacing exactly that revision.
    PutRecurringRun {
        record: Box<RecurringRunRecord>,
        replaces: Option<Revision>,
    },
    /// Removes a recurring run, which must still be at `replaces`.
    DeleteRecurringRun {
        recurring_run_id: String,
        replaces: Revision,
    },
    /// Disables every enabled recurring run of the experiment, with `updated_at` = `at`
    /// (archiving an experiment does).
    DisableRecurringRunsOf {
        experiment_id: String,
        at: Timestamp,
    },
    /// Removes every recurring run of the experiment (deleting an experiment does).
    DeleteRecurringRunsOf { experiment_id: String },
}

/// A condition a write depends on without changing it.
#[derive(Debug, Clone)]
pub enum Expectation {
    /// The experiment exists (at any revision).
    ExperimentExists(String),
    /// The experiment is still at this revision.
    Experiment { id: String, revision: Revision },
    /// The namespace's default experiment is this one (None: not set).
    DefaultExperiment {
        namespace: String,
        experiment_id: Option<String>,
    },
    /// The pipeline exists (at any revision).
    PipelineExists(String),
    /// The pipeline has no version.
    NoPipelineVersions(String),
    /// The pipeline version exists (at any revision).
    PipelineVersionExists(String),
}

/// What a committed write stored.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The stored form of each run a `PutRun` op wrote, in op order.
    pub runs: Vec<StoredRun>,
}

/// Where a store is, with the options of its backend.
#[derive(Debug, Clone)]
pub enum Location {
    /// The embedded store in a data directory.
    DataDir {
        dir: PathBuf,
        options: DataDirOptions,
    },
    /// A PostgreSQL database (`postgres://...`), shared by any number of replicas.
    Database {
        url: String,
        options: PostgresOptions,
    },
}

impl std::fmt::Display for Location {
    /// Where the store is, for logs (a database URL without its password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::DataDir { dir, .. } => write!(f, "data dir {}", dir.display()),
            Location::Database { url, .. } => match postgres::DatabaseUrl::parse(url) {
                Ok(db) => write!(f, "database {db}"),
                Err(_) => f.write_str("database (invalid URL)"),
            },
        }
    }
}

/// Opens the store at `location`: the one place that picks the backend.
pub async fn open(location: &Location) -> Result<Arc<dyn Store>> {
    match location {
        Location::DataDir { dir, options } => open_data_dir(dir, options.clone()),
        Location::Database { url, options } => {
            Ok(self::postgres::PgStore::open(url, options.clone()).await?)
        }
    }
}

/// Opens (or creates) the embedded store in `dir`.
pub fn open_data_dir(dir: &Path, options: DataDirOptions) -> Result<Arc<dyn Store>> {
    Ok(self::sled::SledStore::open(dir, options)?)
}

/// Checks the embedded store in `dir` offline (`runledger check`).
pub fn check_data_dir(dir: &Path) -> Result<CheckReport> {
    self::sled::check_data_dir(dir)
}

/// Migrates the embedded store in `dir` offline to this build's data format (`runledger
/// migrate`); opening it does the same.
pub fn migrate_data_dir(dir: &Path, options: &MigrateOptions) -> Result<MigrationReport> {
    self::sled::migrate_data_dir(dir, options)
}

/// Rebuilds the derived entries of the embedded store in `dir` offline (`runledger check
/// --repair`).
pub fn repair_data_dir(dir: &Path) -> Result<RepairReport> {
    self::sled::repair_data_dir(dir)
}
