//! Applying a [`Write`] in one PostgreSQL transaction (READ COMMITTED, explicit row locks).
//!
//! Each op locks what it reads and checks its expectation against the latest committed row
//! (`SELECT ... FOR UPDATE`, or a statement whose WHERE names the revision), so a stale
//! revision is a Conflict however many replicas write. Derived data is accumulated while the
//! ops run and applied at the end, in a fixed order, each part sorted: experiments'
//! last_run_created_at, spec reference counts, scope counters, then the change log under the
//! single `change_seq` row, and COMMIT. Taking those shared rows last and in one order keeps
//! their locks short and makes them deadlock-free; taking `change_seq` last of all makes the
//! change log's order the commit order. BEGIN goes out with the first op's first statement and
//! COMMIT with the derived data's statements, so a write's shared rows stay locked for about
//! one round trip. The write is acknowledged once COMMIT returned and its commit is durable.

mod catalog;
mod commit;

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use prost::Message;
use tokio_postgres::error::SqlState;

use super::Shared;
use super::error::from_db;
use super::rows::{self, ExperimentRow, RunRow};
use crate::api::{Experiment, Run, run};
use crate::error::{Error, Result};
use crate::store::{Expectation, Op, Revision, SpecBlob, Write, Written};

/// A change to append to the log at commit.
struct Pending {
    kind: i16,
    run_id: Vec<u8>,
    experiment_id: Vec<u8>,
    namespace: Vec<u8>,
    revision: i64,
    record: Vec<u8>,
    spec_digest: Option<Vec<u8>>,
}

pub const CREATED: i16 = 1;
pub const UPDATED: i16 = 2;
pub const DELETED: i16 = 3;

/// A counter row: (kind, key, state, storage_state).
type CountKey = (i8, Vec<u8>, Vec<u8>, Vec<u8>);

/// What the run-level columns of a stored run were, as counters and specs need them.
struct OldRun {
    experiment_id: Vec<u8>,
    namespace: Vec<u8>,
    state: Vec<u8>,
    storage_state: Vec<u8>,
    spec_digest: Option<Vec<u8>>,
}

/// Applies `write`; returns what it stored and the last change-log sequence number it wrote.
pub async fn apply(inner: &Shared, write: Write) -> Result<(Written, Option<u64>)> {
    let open = InTransaction(Some(inner.client().await?));
    let mut txn = Txn {
        client: open.client(),
        inner,
        counts: BTreeMap::new(),
        specs: BTreeMap::new(),
        raises: BTreeMap::new(),
        changes: Vec::new(),
        written: Written::default(),
        ended: false,
    };
    let result = txn.run(write).await;
    let ended = txn.ended;
    let (written, last) = match result {
        Ok(done) => done,
        Err(e) => {
            let client = open.client();
            if ended || client.batch_execute("ROLLBACK").await.is_ok() {
                // Back to the pool.
                drop(open.ended());
            }
            return Err(e);
        }
    };
    let client = open.ended();
    inner.durable(&client).await.map_err(|e| match e {
        Error::Unavailable(m) => Error::Unavailable(format!(
            "{m} (after COMMIT, before the write was known to be durable: it may or may not \
             have been applied)"
        )),
        other => other,
    })?;
    Ok((written, last))
}

/// A pooled connection inside a transaction this module opened. Dropped before the
/// transaction ended (the call was cancelled, or COMMIT's outcome is unknown), the connection
/// leaves the pool and is closed, which makes the server roll the transaction back: it never
/// goes back to the pool in the middle of one.
struct InTransaction(Option<Object>);

impl InTransaction {
    fn client(&self) -> &Object {
        self.0
            .as_ref()
            .expect("the connection is held until the transaction ends")
    }

    /// The transaction ended (committed or rolled back): the connection may be reused.
    fn ended(mut self) -> Object {
        self.0
            .take()
            .expect("the connection is held until the transaction ends")
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}

struct Txn<'a> {
    client: &'a Object,
    inner: &'a Shared,
    counts: BTreeMap<CountKey, i64>,
    /// Reference count changes by spec digest, with the bytes of specs that gained one.
    specs: BTreeMap<[u8; 32], (i64, Option<bytes::Bytes>)>,
    /// The latest new run's creation time per experiment.
    raises: BTreeMap<Vec<u8>, (i64, i32)>,
    changes: Vec<Pending>,
    written: Written,
    /// Whether the server ended the transaction (its COMMIT was answered).
    ended: bool,
}

fn conflict(what: String) -> Error {
    Error::Conflict(format!("{what}; nothing was written"))
}

impl Txn<'_> {
    /// BEGIN, every op, then the end of the write (see `commit.rs`).
    async fn run(&mut self, write: Write) -> Result<(Written, Option<u64>)> {
        let mut ops = write.ops.into_iter();
        let client = self.client;
        if let Some(first) = ops.next() {
            // Sent before the op's first statement, without waiting for its answer.
            let (began, applied) = futures::join!(client.batch_execute("BEGIN"), self.apply(first));
            began.map_err(|e| self.err(e))?;
            applied?;
        } else {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| self.err(e))?;
        }
        for op in ops {
            self.apply(op).await?;
        }
        self.commit().await
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        from_db(&self.inner.db, e)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.try_query(sql, params).await.map_err(|e| self.err(e))
    }

    /// [`Txn::query`] with the database's error as it is, for callers that tell SQLSTATEs
    /// apart.
    async fn try_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.client.prepare_cached(sql).await?;
        self.client.query(&statement, params).await
    }

    /// Runs a statement whose foreign key names an experiment: a violation means it is gone.
    async fn query_naming_experiment(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        experiment_id: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        match self.try_query(sql, params).await {
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Err(conflict(format!(
                "experiment {experiment_id:?} does not exist"
            ))),
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// Serializes the writes that set or expect a namespace's default experiment (an absent
    /// pointer cannot be row-locked), until COMMIT.
    async fn lock_default_of(&self, namespace: &str) -> Result<()> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest([b"default-experiment:", namespace.as_bytes()].concat());
        let key = i64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        self.query("SELECT pg_advisory_xact_lock($1)", &[&key])
            .await
            .map(drop)
    }

    async fn apply(&mut self, op: Op) -> Result<()> {
        match op {
            Op::PutRun {
                run,
                replaces: None,
            } => self.create_run(&run).await,
            Op::PutRun {
                run,
                replaces: Some(revision),
            } => self.replace_run(&run, &revision).await,
            Op::DeleteRun { run_id, replaces } => self.delete_run(&run_id, &replaces).await,
            Op::PutExperiment {
                experiment,
                replaces: None,
            } => self.create_experiment(&experiment).await,
            Op::PutExperiment {
                experiment,
                replaces: Some(revision),
            } => self.replace_experiment(&experiment, &revision).await,
            Op::DeleteExperiment {
                experiment_id,
                replaces,
            } => self.delete_experiment(&experiment_id, &replaces).await,
            Op::ArchiveRunsOf { experiment_id } => self.archive_runs_of(&experiment_id).await,
            Op::SetDefaultExperiment {
                namespace,
                experiment_id,
            } => self.set_default(&namespace, &experiment_id).await,
            Op::Expect(expectation) => self.expect(expectation).await,
            catalog => self.apply_catalog(catalog).await,
        }
    }

    async fn create_run(&mut self, run: &Run) -> Result<()> {
        let row = RunRow::of(run);
        let sql = format!(
            "INSERT INTO runs ({}, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, nextval('revisions')) \
             ON CONFLICT (run_id) DO NOTHING RETURNING revision",
            rows::RUN_COLUMNS
        );
        let inserted = self
            .query_naming_experiment(&sql, &row.params(), &run.experiment_id)
            .await?;
        let Some(inserted) = inserted.first() else {
            return Err(conflict(format!(
                "a run with run_id {:?} exists",
                run.run_id
            )));
        };
        let revision: i64 = inserted.get(0);
        let raise = self
            .raises
            .entry(row.experiment_id.clone())
            .or_insert(row.created);
        *raise = (*raise).max(row.created);
        self.count_run(
            &row.experiment_id,
            &row.namespace,
            &row.state,
            &row.storage_state,
            1,
        );
        self.ref_spec(row.spec.as_ref(), 1);
        self.written.runs.push(row.stored(&run.run_id, revision));
        self.change(CREATED, &row, revision);
        Ok(())
    }

    async fn replace_run(&mut self, run: &Run, replaces: &Revision) -> Result<()> {
        let row = RunRow::of(run);
        let old = self
            .lock_run(&row.run_id, replaces, || {
                format!("run {:?} changed since it was read", run.run_id)
            })
            .await?;
        let sql = "UPDATE runs SET experiment_id = $2, namespace = $3, display_name = $4, \
                   description = $5, pipeline_id = $6, service_account = $7, \
                   recurring_run_id = $8, created_s = $9, created_ns = $10, scheduled_s = $11, \
                   scheduled_ns = $12, finished_s = $13, finished_ns = $14, state = $15, \
                   storage_state = $16, record = $17, spec_digest = $18, \
                   pipeline_version_id = $19, \
                   revision = nextval('revisions') WHERE run_id = $1 RETURNING revision";
        let updated = self
            .query_naming_experiment(sql, &row.params(), &run.experiment_id)
            .await?;
        let revision: i64 = updated
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::internal("a locked run row vanished"))?;
        self.count_run(
            &old.experiment_id,
            &old.namespace,
            &old.state,
            &old.storage_state,
            -1,
        );
        self.count_run(
            &row.experiment_id,
            &row.namespace,
            &row.state,
            &row.storage_state,
            1,
        );
        if old.spec_digest.as_deref() != row.digest() {
            self.unref_spec(old.spec_digest.as_deref());
            self.ref_spec(row.spec.as_ref(), 1);
        }
        self.written.runs.push(row.stored(&run.run_id, revision));
        self.change(UPDATED, &row, revision);
        Ok(())
    }

    /// Locks run `run_id` and checks it is at `expected`.
    async fn lock_run(
        &self,
        run_id: &[u8],
        expected: &Revision,
        what: impl FnOnce() -> String,
    ) -> Result<OldRun> {
        let rows = self
            .query(
                "SELECT revision, experiment_id, namespace, state, storage_state, spec_digest \
                 FROM runs WHERE run_id = $1 FOR UPDATE",
                &[&run_id],
            )
            .await?;
        match rows.first() {
            Some(row) if Some(row.get::<_, i64>(0)) == rows::revision_number(expected) => {
                Ok(OldRun {
                    experiment_id: row.get(1),
                    namespace: row.get(2),
                    state: row.get(3),
                    storage_state: row.get(4),
                    spec_digest: row.get(5),
                })
            }
            _ => Err(conflict(what())),
        }
    }

    async fn delete_run(&mut self, run_id: &str, replaces: &Revision) -> Result<()> {
        let Some(revision) = rows::revision_number(replaces) else {
            return Err(conflict(format!(
                "run {run_id:?} changed since it was read"
            )));
        };
        let rows = self
            .query(
                "DELETE FROM runs WHERE run_id = $1 AND revision = $2 RETURNING experiment_id, \
                 namespace, state, storage_state, spec_digest, record",
                &[&run_id.as_bytes(), &revision],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(conflict(format!(
                "run {run_id:?} changed or was deleted since it was read"
            )));
        };
        self.forget_run(run_id.as_bytes().to_vec(), revision, row);
        Ok(())
    }

    /// Counts, specs and the change of a deleted run, from its RETURNING row (experiment_id,
    /// namespace, state, storage_state, spec_digest, record).
    fn forget_run(&mut self, run_id: Vec<u8>, revision: i64, row: &tokio_postgres::Row) {
        let experiment_id: Vec<u8> = row.get(0);
        let namespace: Vec<u8> = row.get(1);
        let state: Vec<u8> = row.get(2);
        let storage_state: Vec<u8> = row.get(3);
        let spec_digest: Option<Vec<u8>> = row.get(4);
        self.count_run(&experiment_id, &namespace, &state, &storage_state, -1);
        self.unref_spec(spec_digest.as_deref());
        self.changes.push(Pending {
            kind: DELETED,
            run_id,
            experiment_id,
            namespace,
            revision,
            record: row.get(5),
            spec_digest,
        });
    }

    async fn create_experiment(&mut self, e: &Experiment) -> Result<()> {
        let row = ExperimentRow::of(e);
        let sql = format!(
            "INSERT INTO experiments ({}, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, nextval('revisions')) ON CONFLICT DO NOTHING RETURNING revision",
            rows::EXPERIMENT_COLUMNS
        );
        if self.query(&sql, &row.params()).await?.is_empty() {
            let taken = self
                .query(
                    "SELECT 1 FROM experiments WHERE experiment_id = $1",
                    &[&row.experiment_id],
                )
                .await?;
            return Err(conflict(if taken.is_empty() {
                format!(
                    "an experiment named {:?} exists in namespace {:?}",
                    e.display_name, e.namespace
                )
            } else {
                format!("an experiment with id {:?} exists", e.experiment_id)
            }));
        }
        self.count_experiment(&row.namespace, &row.storage_state, 1);
        Ok(())
    }

    /// Locks experiment `id` and checks it is at `expected`; returns its namespace and
    /// storage_state.
    async fn lock_experiment(
        &self,
        id: &str,
        expected: &Revision,
        what: impl FnOnce() -> String,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let rows = self
            .query(
                "SELECT revision, namespace, storage_state FROM experiments \
                 WHERE experiment_id = $1 FOR UPDATE",
                &[&id.as_bytes()],
            )
            .await?;
        match rows.first() {
            Some(row) if Some(row.get::<_, i64>(0)) == rows::revision_number(expected) => {
                Ok((row.get(1), row.get(2)))
            }
            _ => Err(conflict(what())),
        }
    }

    async fn replace_experiment(&mut self, e: &Experiment, replaces: &Revision) -> Result<()> {
        let row = ExperimentRow::of(e);
        let (old_namespace, old_storage) = self
            .lock_experiment(&e.experiment_id, replaces, || {
                format!("experiment {:?} changed since it was read", e.experiment_id)
            })
            .await?;
        // last_run_created_at stays the backend's (its column); the rest is the client's.
        let result = self
            .try_query(
                "UPDATE experiments SET namespace = $2, display_name = $3, description = $4, \
                 created_s = $5, created_ns = $6, storage_state = $7, record = $8, \
                 revision = nextval('revisions') WHERE experiment_id = $1",
                &[
                    &row.experiment_id,
                    &row.namespace,
                    &row.display_name,
                    &row.description,
                    &row.created.0,
                    &row.created.1,
                    &row.storage_state,
                    &row.record,
                ],
            )
            .await;
        match result {
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(conflict(format!(
                    "an experiment named {:?} exists in namespace {:?}",
                    e.display_name, e.namespace
                )));
            }
            other => other.map_err(|e| self.err(e))?,
        };
        self.count_experiment(&old_namespace, &old_storage, -1);
        self.count_experiment(&row.namespace, &row.storage_state, 1);
        Ok(())
    }

    async fn delete_experiment(&mut self, id: &str, replaces: &Revision) -> Result<()> {
        // Locking the experiment first keeps new runs out of it (their foreign key check waits
        // for this transaction), so the DELETE below sees every run it holds.
        let (namespace, storage) = self
            .lock_experiment(id, replaces, || {
                format!("experiment {id:?} changed or was deleted since it was read")
            })
            .await?;
        let runs = self
            .query(
                "DELETE FROM runs WHERE experiment_id = $1 RETURNING experiment_id, namespace, \
                 state, storage_state, spec_digest, record, run_id, revision",
                &[&id.as_bytes()],
            )
            .await?;
        let mut runs: Vec<_> = runs.iter().collect();
        runs.sort_by_key(|r| r.get::<_, Vec<u8>>(6));
        for row in runs {
            self.forget_run(row.get(6), row.get(7), row);
        }
        self.query(
            "DELETE FROM experiments WHERE experiment_id = $1",
            &[&id.as_bytes()],
        )
        .await?;
        self.count_experiment(&namespace, &storage, -1);
        Ok(())
    }

    async fn archive_runs_of(&mut self, experiment_id: &str) -> Result<()> {
        let archived = run::StorageState::Archived;
        let archived_name = archived.as_str_name().as_bytes();
        // Waits for runs being created in the experiment and keeps new ones out until COMMIT,
        // so every run it holds is archived.
        self.query(
            "SELECT 1 FROM experiments WHERE experiment_id = $1 FOR UPDATE",
            &[&experiment_id.as_bytes()],
        )
        .await?;
        let rows = self
            .query(
                "SELECT run_id, record, spec_digest, namespace, state, storage_state FROM runs \
                 WHERE experiment_id = $1 AND storage_state <> $2 ORDER BY run_id FOR UPDATE",
                &[&experiment_id.as_bytes(), &archived_name],
            )
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let run_id: Vec<u8> = row.get(0);
            let record: &[u8] = row.get(1);
            let mut run = Run::decode(record).map_err(|e| {
                Error::DataLoss(format!(
                    "the stored record of run {:?} cannot be read: {e}",
                    String::from_utf8_lossy(&run_id)
                ))
            })?;
            run.storage_state = archived as i32;
            ids.push(run_id);
            records.push(run.encode_to_vec());
        }
        let updated = self
            .query(
                "UPDATE runs SET storage_state = $1, record = t.record, \
                 revision = nextval('revisions') \
                 FROM unnest($2::bytea[], $3::bytea[]) AS t(run_id, record) \
                 WHERE runs.run_id = t.run_id RETURNING runs.run_id, runs.revision",
                &[&archived_name, &ids, &records],
            )
            .await?;
        let revisions: BTreeMap<Vec<u8>, i64> =
            updated.iter().map(|r| (r.get(0), r.get(1))).collect();
        let experiment = experiment_id.as_bytes();
        for ((row, run_id), record) in rows.iter().zip(ids).zip(records) {
            let namespace: Vec<u8> = row.get(3);
            let state: Vec<u8> = row.get(4);
            let old_storage: Vec<u8> = row.get(5);
            let revision = *revisions
                .get(&run_id)
                .ok_or_else(|| Error::internal("a locked run row vanished"))?;
            self.count_run(experiment, &namespace, &state, &old_storage, -1);
            self.count_run(experiment, &namespace, &state, archived_name, 1);
            self.changes.push(Pending {
                kind: UPDATED,
                run_id,
                experiment_id: experiment.to_vec(),
                namespace,
                revision,
                record,
                spec_digest: row.get(2),
            });
        }
        Ok(())
    }

    async fn set_default(&mut self, namespace: &str, experiment_id: &str) -> Result<()> {
        self.lock_default_of(namespace).await?;
        let inserted = self
            .query_naming_experiment(
                "INSERT INTO default_experiments (namespace, experiment_id) VALUES ($1, $2) \
                 ON CONFLICT (namespace) DO NOTHING RETURNING 1",
                &[&namespace.as_bytes(), &experiment_id.as_bytes()],
                experiment_id,
            )
            .await?;
        if inserted.is_empty() {
            return Err(conflict(format!(
                "namespace {namespace:?} has a default experiment"
            )));
        }
        Ok(())
    }

    /// Checks an expectation and locks what it read until COMMIT, so it still holds then.
    async fn expect(&mut self, expectation: Expectation) -> Result<()> {
        match expectation {
            Expectation::ExperimentExists(id) => {
                let rows = self
                    .query(
                        "SELECT 1 FROM experiments WHERE experiment_id = $1 FOR KEY SHARE",
                        &[&id.as_bytes()],
                    )
                    .await?;
                if rows.is_empty() {
                    return Err(conflict(format!("experiment {id:?} was deleted")));
                }
            }
            Expectation::Experiment { id, revision } => {
                let rows = self
                    .query(
                        "SELECT revision FROM experiments WHERE experiment_id = $1 FOR SHARE",
                        &[&id.as_bytes()],
                    )
                    .await?;
                let current = rows.first().map(|r| r.get::<_, i64>(0));
                if current.is_none() || current != rows::revision_number(&revision) {
                    return Err(conflict(format!(
                        "experiment {id:?} changed since it was read"
                    )));
                }
            }
            Expectation::DefaultExperiment {
                namespace,
                experiment_id,
            } => {
                self.lock_default_of(&namespace).await?;
                let rows = self
                    .query(
                        "SELECT experiment_id FROM default_experiments WHERE namespace = $1",
                        &[&namespace.as_bytes()],
                    )
                    .await?;
                let current = rows
                    .first()
                    .map(|r| rows::utf8(r.get(0), "experiment_id"))
                    .transpose()?;
                if current != experiment_id {
                    return Err(conflict(format!(
                        "the default experiment of namespace {namespace:?} changed"
                    )));
                }
            }
            catalog => self.expect_catalog(catalog).await?,
        }
        Ok(())
    }

    fn count_run(
        &mut self,
        experiment_id: &[u8],
        namespace: &[u8],
        state: &[u8],
        storage: &[u8],
        delta: i64,
    ) {
        for (kind, key) in [(b'a', &[][..]), (b'x', experiment_id), (b'n', namespace)] {
            *self
                .counts
                .entry((kind as i8, key.to_vec(), state.to_vec(), storage.to_vec()))
                .or_default() += delta;
        }
    }

    fn count_experiment(&mut self, namespace: &[u8], storage: &[u8], delta: i64) {
        for (kind, key) in [(b'e', &[][..]), (b'p', namespace)] {
            *self
                .counts
                .entry((kind as i8, key.to_vec(), Vec::new(), storage.to_vec()))
                .or_default() += delta;
        }
    }

    fn ref_spec(&mut self, spec: Option<&SpecBlob>, delta: i64) {
        if let Some(spec) = spec {
            let entry = self.specs.entry(spec.digest).or_default();
            entry.0 += delta;
            entry.1 = Some(spec.bytes.clone());
        }
    }

    fn unref_spec(&mut self, digest: Option<&[u8]>) {
        if let Some(digest) = digest.and_then(|d| <[u8; 32]>::try_from(d).ok()) {
            self.specs.entry(digest).or_default().0 -= 1;
        }
    }

    fn change(&mut self, kind: i16, row: &RunRow, revision: i64) {
        self.changes.push(Pending {
            kind,
            run_id: row.run_id.clone(),
            experiment_id: row.experiment_id.clone(),
            namespace: row.namespace.clone(),
            revision,
            record: row.record.clone(),
            spec_digest: row.digest().map(<[u8]>::to_vec),
        });
    }
}
