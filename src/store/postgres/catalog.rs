//! Pipelines, pipeline versions and recurring runs (the catalog) in PostgreSQL: one `catalog`
//! table holds the three kinds (schema in `migrations/0002_catalog.sql`), each record beside
//! its hot columns, written from the same [`Record::field`] values lists compare. This module
//! maps records to rows and back and answers the reads; `txn/catalog.rs` writes them.
//!
//! A version's pipeline spec (or a recurring run's inline one) is kept apart, in `specs` with
//! the runs' (one copy per distinct spec, its reference count counting every record holding
//! it). Tags are in the record and, for filters on `tags.KEY`, in `catalog_tags`. Scope counters are rows of `counts`: `i` a
//! namespace's pipelines, `v` a pipeline's versions, `g` every recurring run, `h` an
//! experiment's, `y` a namespace's.

use bytes::Bytes;
use tokio_postgres::Row;

use super::rows::{self, revision, text, time_of, utf8};
use crate::api::{Pipeline, PipelineVersion};
use crate::error::{Error, Result};
use crate::query::{Field, Record, Scope};
use crate::store::{CatalogRecord, RecurringRunRecord, SpecBlob, Stored, data_loss};
use crate::wkt::{StructBytes, Timestamp};

/// The `kind` of pipelines, versions and recurring runs in `catalog` (and `catalog_tags`).
pub const PIPELINE: u8 = b'i';
pub const PIPELINE_VERSION: u8 = b'v';
pub const RECURRING_RUN: u8 = b'j';

/// A record kind kept in `catalog`.
pub trait CatalogKind: CatalogRecord {
    /// Its `kind` code.
    const CODE: u8;

    /// What a put that takes a used name is told.
    fn name_taken(&self) -> String {
        format!("{} {:?} takes a name in use", Self::KIND, self.id())
    }
}

impl CatalogKind for Pipeline {
    const CODE: u8 = PIPELINE;

    fn name_taken(&self) -> String {
        format!(
            "a pipeline named {:?} exists in namespace {:?}",
            self.name, self.namespace
        )
    }
}

impl CatalogKind for PipelineVersion {
    const CODE: u8 = PIPELINE_VERSION;

    fn name_taken(&self) -> String {
        format!(
            "pipeline {:?} has a version named {:?}",
            self.pipeline_id, self.name
        )
    }
}

impl CatalogKind for RecurringRunRecord {
    const CODE: u8 = RECURRING_RUN;
}

/// A record without its pipeline spec (as stored in `record`), and the spec.
pub fn split<T: CatalogRecord>(value: &T) -> (Vec<u8>, Option<SpecBlob>) {
    let mut body = value.clone();
    let spec = body.take_spec();
    (
        body.encode_to_vec(),
        spec.map(|spec| SpecBlob::of(spec.protobuf().clone())),
    )
}

/// The name of a kind code, for messages.
pub fn kind_name(code: u8) -> &'static str {
    match code {
        PIPELINE => Pipeline::KIND,
        PIPELINE_VERSION => PipelineVersion::KIND,
        _ => RecurringRunRecord::KIND,
    }
}

/// The counters (`counts` kind, key) a record of kind `code` is counted in, from its columns.
pub fn counters(
    code: u8,
    namespace: &[u8],
    experiment_id: &[u8],
    pipeline_id: &[u8],
) -> Vec<(u8, Vec<u8>)> {
    match code {
        PIPELINE => vec![(b'i', namespace.to_vec())],
        PIPELINE_VERSION => vec![(b'v', pipeline_id.to_vec())],
        _ => vec![
            (b'g', Vec::new()),
            (b'h', experiment_id.to_vec()),
            (b'y', namespace.to_vec()),
        ],
    }
}

/// The counter of a listing scope of kind `code`.
pub fn scope_counter(code: u8, scope: &Scope) -> Result<(u8, Vec<u8>)> {
    Ok(match (code, scope) {
        (PIPELINE, Scope::Namespace(ns)) => (b'i', ns.as_bytes().to_vec()),
        (PIPELINE_VERSION, Scope::Pipeline(id)) => (b'v', id.as_bytes().to_vec()),
        (RECURRING_RUN, Scope::All) => (b'g', Vec::new()),
        (RECURRING_RUN, Scope::Experiment(id)) => (b'h', id.as_bytes().to_vec()),
        (RECURRING_RUN, Scope::Namespace(ns)) => (b'y', ns.as_bytes().to_vec()),
        (code, scope) => {
            return Err(Error::internal(format!(
                "{}s are not listed by {scope:?}",
                kind_name(code)
            )));
        }
    })
}

/// A catalog record as its columns (in [`CATALOG_COLUMNS`] order, without the revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRow {
    pub kind: i8,
    pub id: Vec<u8>,
    pub namespace: Vec<u8>,
    pub experiment_id: Vec<u8>,
    pub pipeline_id: Vec<u8>,
    pub pipeline_version_id: Vec<u8>,
    pub name: Vec<u8>,
    pub display_name: Vec<u8>,
    pub description: Vec<u8>,
    pub service_account: Vec<u8>,
    pub status: Vec<u8>,
    pub created: (i64, i32),
    pub updated: (i64, i32),
    pub record: Vec<u8>,
    pub spec: Option<SpecBlob>,
    pub spec_digest: Option<Vec<u8>>,
}

/// The columns an INSERT of a [`CatalogRow`] names, in its parameters' order ($1..$17).
pub const CATALOG_COLUMNS: &str = "kind, id, namespace, experiment_id, pipeline_id, \
     pipeline_version_id, name, display_name, description, service_account, status, created_s, \
     created_ns, updated_s, updated_ns, record, spec_digest";

impl CatalogRow {
    pub fn of<T: CatalogKind>(value: &T) -> CatalogRow {
        let (record, spec) = split(value);
        CatalogRow {
            kind: T::CODE as i8,
            id: value.id().as_bytes().to_vec(),
            namespace: text(value, Field::Namespace),
            experiment_id: text(value, Field::ExperimentId),
            pipeline_id: text(value, Field::PipelineId),
            pipeline_version_id: text(value, Field::PipelineVersionId),
            name: text(value, Field::Name),
            display_name: text(value, Field::DisplayName),
            description: text(value, Field::Description),
            service_account: text(value, Field::ServiceAccount),
            status: text(value, Field::Status),
            created: time_of(value, Field::CreatedAt),
            updated: time_of(value, Field::UpdatedAt),
            record,
            spec_digest: spec.as_ref().map(|s| s.digest.to_vec()),
            spec,
        }
    }

    /// The parameters $1..$17 of [`CATALOG_COLUMNS`].
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 17] {
        [
            &self.kind,
            &self.id,
            &self.namespace,
            &self.experiment_id,
            &self.pipeline_id,
            &self.pipeline_version_id,
            &self.name,
            &self.display_name,
            &self.description,
            &self.service_account,
            &self.status,
            &self.created.0,
            &self.created.1,
            &self.updated.0,
            &self.updated.1,
            &self.record,
            &self.spec_digest,
        ]
    }

    pub fn counters(&self) -> Vec<(u8, Vec<u8>)> {
        counters(
            self.kind as u8,
            &self.namespace,
            &self.experiment_id,
            &self.pipeline_id,
        )
    }
}

/// The columns a catalog row `r` is read with, for [`stored_from_row`]; the spec's bytes come
/// from a subquery, as a run's do.
pub const CATALOG_READ_COLUMNS: &str = "r.id, r.revision, r.record, r.spec_digest, \
     (SELECT s.bytes FROM specs s WHERE s.digest = r.spec_digest)";

/// A stored record from its row ([`CATALOG_READ_COLUMNS`]). One that cannot be decoded, or
/// whose spec is missing, is handed out with its id and an `error` saying why, as runs are.
pub fn stored_from_row<T: CatalogKind>(row: &Row) -> Result<Stored<T>> {
    let id = utf8(row.get(0), "id")?;
    let record: &[u8] = row.get(2);
    let digest: Option<Vec<u8>> = row.get(3);
    let spec: Option<Vec<u8>> = row.get(4);
    let value = match (T::decode(record), digest, spec) {
        (Err(e), _, _) => T::damaged(&id, data_loss::<T>(&id, e)),
        (Ok(_), Some(digest), None) => T::damaged(
            &id,
            data_loss::<T>(
                &id,
                format!(
                    "its pipeline spec (SHA-256 {}) is missing",
                    rows::hex(&digest)
                ),
            ),
        ),
        (Ok(mut value), _, Some(spec)) => {
            value.set_spec(StructBytes::from_protobuf(Bytes::from(spec)));
            value
        }
        (Ok(value), None, None) => value,
    };
    Ok(Stored {
        value,
        revision: revision(row.get(1)),
    })
}

/// The statement reading one record of kind `code` that `condition` selects ($1, $2 its
/// parameters), the last in `order` when several match.
pub fn select_one(code: u8, condition: &str, order: &str) -> String {
    format!(
        "SELECT {CATALOG_READ_COLUMNS} FROM catalog r WHERE r.kind = '{}' AND {condition} \
         {order} LIMIT 1",
        code as char
    )
}

/// Takes or renews lease `name` for `holder` until `until`, unless another holder's lease is
/// valid at `now`; one statement, so replicas racing for it serialize on its row.
pub const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, until_s, until_ns) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
     until_s = excluded.until_s, until_ns = excluded.until_ns \
     WHERE leases.holder = excluded.holder OR (leases.until_s, leases.until_ns) <= ($5, $6) \
     RETURNING 1";

/// The parameters of [`ACQUIRE_LEASE`].
pub fn lease_params(
    name: &str,
    holder: &str,
    now: Timestamp,
    until: Timestamp,
) -> (Vec<u8>, Vec<u8>, i64, i32, i64, i32) {
    (
        name.as_bytes().to_vec(),
        holder.as_bytes().to_vec(),
        until.seconds,
        until.nanos,
        now.seconds,
        now.nanos,
    )
}
