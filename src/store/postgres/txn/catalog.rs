//! The ops and expectations of pipelines, pipeline versions and recurring runs, inside a
//! write's transaction: the same rules as the embedded store's (unique names, compare-and-set
//! on a revision, a pipeline's deletion taking its versions, the experiment-wide ops on
//! recurring runs), with row locks so they hold across replicas. Counters and spec references
//! go to the write's derived data, applied at COMMIT with the runs' (see the module above).

use prost::Message;
use tokio_postgres::error::SqlState;

use super::{Txn, conflict};
use crate::api::{Pipeline, PipelineVersion, recurring_run};
use crate::error::{Error, Result};
use crate::store::postgres::catalog::{
    self, CATALOG_COLUMNS, CatalogKind, CatalogRow, PIPELINE, PIPELINE_VERSION, RECURRING_RUN,
};
use crate::store::postgres::rows;
use crate::store::{Expectation, Op, RecurringRunRecord, Revision};
use crate::wkt::Timestamp;

/// What a deleted or replaced catalog row was, as counters, specs and tags need it.
struct OldRow {
    namespace: Vec<u8>,
    experiment_id: Vec<u8>,
    pipeline_id: Vec<u8>,
    spec_digest: Option<Vec<u8>>,
}

/// The columns [`OldRow`] is read from, in its order.
const OLD_COLUMNS: &str = "namespace, experiment_id, pipeline_id, spec_digest";

impl OldRow {
    fn of(row: &tokio_postgres::Row, first: usize) -> OldRow {
        OldRow {
            namespace: row.get(first),
            experiment_id: row.get(first + 1),
            pipeline_id: row.get(first + 2),
            spec_digest: row.get(first + 3),
        }
    }
}

impl Txn<'_> {
    /// Applies an op of pipelines, versions or recurring runs.
    pub(super) async fn apply_catalog(&mut self, op: Op) -> Result<()> {
        match op {
            Op::PutPipeline { pipeline, replaces } => self.put(&pipeline, replaces).await,
            Op::DeletePipeline {
                pipeline_id,
                replaces,
            } => self.delete_pipeline(&pipeline_id, &replaces).await,
            Op::PutPipelineVersion { version, replaces } => self.put(&*version, replaces).await,
            Op::DeletePipelineVersion {
                pipeline_version_id,
                replaces,
            } => {
                self.delete::<PipelineVersion>(&pipeline_version_id, &replaces)
                    .await
            }
            Op::PutRecurringRun { record, replaces } => self.put(&*record, replaces).await,
            Op::DeleteRecurringRun {
                recurring_run_id,
                replaces,
            } => {
                self.delete::<RecurringRunRecord>(&recurring_run_id, &replaces)
                    .await
            }
            Op::DisableRecurringRunsOf { experiment_id, at } => {
                self.disable_recurring_runs_of(&experiment_id, at).await
            }
            Op::DeleteRecurringRunsOf { experiment_id } => {
                let deleted = self
                    .query(
                        &format!(
                            "DELETE FROM catalog WHERE kind = 'j' AND experiment_id = $1 \
                             RETURNING id, {OLD_COLUMNS}"
                        ),
                        &[&experiment_id.as_bytes()],
                    )
                    .await?;
                self.forget_rows(RECURRING_RUN, &deleted);
                Ok(())
            }
            _ => Err(Error::internal(
                "a run or experiment op was handed to the catalog",
            )),
        }
    }

    /// Stores `value`: new (`replaces` None) or replacing exactly that revision.
    async fn put<T: CatalogKind>(&mut self, value: &T, replaces: Option<Revision>) -> Result<()> {
        let row = CatalogRow::of(value);
        let id = value.id();
        let old = match &replaces {
            None => {
                let sql = format!(
                    "INSERT INTO catalog ({CATALOG_COLUMNS}, revision) VALUES ($1, $2, $3, $4, \
                     $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     nextval('revisions')) ON CONFLICT DO NOTHING RETURNING revision"
                );
                if self.query(&sql, &row.params()).await?.is_empty() {
                    let exists = self
                        .query(
                            "SELECT 1 FROM catalog WHERE kind = $1 AND id = $2",
                            &[&row.kind, &row.id],
                        )
                        .await?;
                    return Err(conflict(if exists.is_empty() {
                        value.name_taken()
                    } else {
                        format!("a {} with id {id:?} exists", T::KIND)
                    }));
                }
                None
            }
            Some(revision) => {
                let old = self
                    .lock::<T>(id, revision, || {
                        format!("{} {id:?} changed since it was read", T::KIND)
                    })
                    .await?;
                let result = self
                    .try_query(
                        "UPDATE catalog SET namespace = $3, experiment_id = $4, pipeline_id = $5, \
                         pipeline_version_id = $6, name = $7, display_name = $8, \
                         description = $9, service_account = $10, status = $11, created_s = $12, \
                         created_ns = $13, updated_s = $14, updated_ns = $15, record = $16, \
                         spec_digest = $17, revision = nextval('revisions') \
                         WHERE kind = $1 AND id = $2",
                        &row.params(),
                    )
                    .await;
                match result {
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        return Err(conflict(value.name_taken()));
                    }
                    other => other.map_err(|e| self.err(e))?,
                };
                Some(old)
            }
        };
        if let Some(old) = &old {
            self.forget(T::CODE, old);
            self.query(
                "DELETE FROM catalog_tags WHERE kind = $1 AND id = $2",
                &[&row.kind, &row.id],
            )
            .await?;
        }
        for (counter, key) in row.counters() {
            self.count_catalog(counter, key, 1);
        }
        self.ref_spec(row.spec.as_ref(), 1);
        let tags = value.tags();
        if !tags.is_empty() {
            let keys: Vec<&[u8]> = tags.iter().map(|(k, _)| k.as_bytes()).collect();
            let values: Vec<&[u8]> = tags.iter().map(|(_, v)| v.as_bytes()).collect();
            self.query(
                "INSERT INTO catalog_tags (kind, id, key, value) \
                 SELECT $1, $2, t.key, t.value FROM unnest($3::bytea[], $4::bytea[]) AS t(key, value)",
                &[&row.kind, &row.id, &keys, &values],
            )
            .await?;
        }
        Ok(())
    }

    /// Locks record `id` of kind `T` and checks it is at `expected`.
    async fn lock<T: CatalogKind>(
        &self,
        id: &str,
        expected: &Revision,
        what: impl FnOnce() -> String,
    ) -> Result<OldRow> {
        let rows = self
            .query(
                &format!(
                    "SELECT revision, {OLD_COLUMNS} FROM catalog WHERE kind = $1 AND id = $2 \
                     FOR UPDATE"
                ),
                &[&(T::CODE as i8), &id.as_bytes()],
            )
            .await?;
        match rows.first() {
            Some(row) if Some(row.get::<_, i64>(0)) == rows::revision_number(expected) => {
                Ok(OldRow::of(row, 1))
            }
            _ => Err(conflict(what())),
        }
    }

    /// Removes record `id` of kind `T`, which must still be at `replaces`.
    async fn delete<T: CatalogKind>(&mut self, id: &str, replaces: &Revision) -> Result<()> {
        let gone = || {
            format!(
                "{} {id:?} changed or was deleted since it was read",
                T::KIND
            )
        };
        let Some(revision) = rows::revision_number(replaces) else {
            return Err(conflict(gone()));
        };
        let deleted = self
            .query(
                &format!(
                    "DELETE FROM catalog WHERE kind = $1 AND id = $2 AND revision = $3 \
                     RETURNING id, {OLD_COLUMNS}"
                ),
                &[&(T::CODE as i8), &id.as_bytes(), &revision],
            )
            .await?;
        if deleted.is_empty() {
            return Err(conflict(gone()));
        }
        self.forget_rows(T::CODE, &deleted);
        Ok(())
    }

    /// Removes a pipeline, which must still be at `replaces`, and every version of it.
    async fn delete_pipeline(&mut self, id: &str, replaces: &Revision) -> Result<()> {
        // Locked first: a version being created waits (its PipelineExists holds a key-share
        // lock), so the DELETE below sees every version the pipeline has.
        self.lock::<Pipeline>(id, replaces, || {
            format!("pipeline {id:?} changed or was deleted since it was read")
        })
        .await?;
        let versions = self
            .query(
                &format!(
                    "DELETE FROM catalog WHERE kind = 'v' AND pipeline_id = $1 \
                     RETURNING id, {OLD_COLUMNS}"
                ),
                &[&id.as_bytes()],
            )
            .await?;
        self.forget_rows(PIPELINE_VERSION, &versions);
        let deleted = self
            .query(
                &format!(
                    "DELETE FROM catalog WHERE kind = 'i' AND id = $1 RETURNING id, {OLD_COLUMNS}"
                ),
                &[&id.as_bytes()],
            )
            .await?;
        self.forget_rows(PIPELINE, &deleted);
        Ok(())
    }

    /// Counters and spec references of deleted rows (`id`, then [`OLD_COLUMNS`]); their tags
    /// went with them (a cascading foreign key).
    fn forget_rows(&mut self, code: u8, deleted: &[tokio_postgres::Row]) {
        for row in deleted {
            self.forget(code, &OldRow::of(row, 1));
        }
    }

    fn forget(&mut self, code: u8, old: &OldRow) {
        for (counter, key) in
            catalog::counters(code, &old.namespace, &old.experiment_id, &old.pipeline_id)
        {
            self.count_catalog(counter, key, -1);
        }
        self.unref_spec(old.spec_digest.as_deref());
    }

    fn count_catalog(&mut self, counter: u8, key: Vec<u8>, delta: i64) {
        *self
            .counts
            .entry((counter as i8, key, Vec::new(), Vec::new()))
            .or_default() += delta;
    }

    /// Disables every enabled recurring run of the experiment, with `updated_at` = `at`.
    async fn disable_recurring_runs_of(
        &mut self,
        experiment_id: &str,
        at: Timestamp,
    ) -> Result<()> {
        let disabled = recurring_run::Status::Disabled;
        let rows = self
            .query(
                "SELECT id, record FROM catalog WHERE kind = 'j' AND experiment_id = $1 \
                 AND status <> $2 ORDER BY id FOR UPDATE",
                &[
                    &experiment_id.as_bytes(),
                    &disabled.as_str_name().as_bytes(),
                ],
            )
            .await?;
        for row in &rows {
            let id = rows::utf8(row.get(0), "recurring_run_id")?;
            let record: &[u8] = row.get(1);
            let mut record = RecurringRunRecord::decode(record).map_err(|e| {
                Error::DataLoss(format!(
                    "the stored record of recurring run {id:?} cannot be read: {e}"
                ))
            })?;
            let r = &mut record.recurring_run;
            r.status = disabled as i32;
            r.mode = recurring_run::Mode::Disable as i32;
            r.updated_at = Some(at);
            // Neither its scopes nor its spec change: counters stay.
            let new = CatalogRow::of(&record);
            self.query(
                "UPDATE catalog SET status = $3, updated_s = $4, updated_ns = $5, record = $6, \
                 revision = nextval('revisions') WHERE kind = $1 AND id = $2",
                &[
                    &new.kind,
                    &new.id,
                    &new.status,
                    &new.updated.0,
                    &new.updated.1,
                    &new.record,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Checks an expectation about pipelines or versions and locks what it read until COMMIT.
    pub(super) async fn expect_catalog(&mut self, expectation: Expectation) -> Result<()> {
        let exists = |code: u8, lock: &'static str| {
            format!(
                "SELECT 1 FROM catalog WHERE kind = '{}' AND id = $1 {lock}",
                code as char
            )
        };
        match expectation {
            Expectation::PipelineExists(id) => {
                let rows = self
                    .query(&exists(PIPELINE, "FOR KEY SHARE"), &[&id.as_bytes()])
                    .await?;
                if rows.is_empty() {
                    return Err(conflict(format!("pipeline {id:?} was deleted")));
                }
            }
            Expectation::PipelineVersionExists(id) => {
                let rows = self
                    .query(
                        &exists(PIPELINE_VERSION, "FOR KEY SHARE"),
                        &[&id.as_bytes()],
                    )
                    .await?;
                if rows.is_empty() {
                    return Err(conflict(format!("pipeline version {id:?} was deleted")));
                }
            }
            Expectation::NoPipelineVersions(id) => {
                // Keeps new versions out until COMMIT: their PipelineExists waits for this.
                self.query(&exists(PIPELINE, "FOR UPDATE"), &[&id.as_bytes()])
                    .await?;
                let rows = self
                    .query(
                        "SELECT 1 FROM catalog WHERE kind = 'v' AND pipeline_id = $1 LIMIT 1",
                        &[&id.as_bytes()],
                    )
                    .await?;
                if !rows.is_empty() {
                    return Err(conflict(format!("pipeline {id:?} has versions")));
                }
            }
            _ => {
                return Err(Error::internal(
                    "a run or experiment expectation was handed to the catalog",
                ));
            }
        }
        Ok(())
    }
}
