//! The catalog's part of `runledger check --database-url`: every catalog row's columns, tags,
//! spec reference and counters agree with its record, and every version's pipeline exists.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{CatalogKind, CatalogRow, PIPELINE, PIPELINE_VERSION, RECURRING_RUN};
use super::check::{Check, lossy};
use crate::api::{Pipeline, PipelineVersion};
use crate::store::RecurringRunRecord;

/// The columns a catalog row is checked with, in [`CatalogCheck::row`]'s order.
pub const CHECKED_COLUMNS: &str = "r.kind, r.id, r.namespace, r.experiment_id, r.pipeline_id, \
     r.pipeline_version_id, r.name, r.display_name, r.description, r.service_account, r.status, \
     r.created_s, r.created_ns, r.updated_s, r.updated_ns, r.record, r.spec_digest, \
     (SELECT s.bytes FROM specs s WHERE s.digest = r.spec_digest), \
     ARRAY(SELECT t.key FROM catalog_tags t WHERE t.kind = r.kind AND t.id = r.id ORDER BY t.key), \
     ARRAY(SELECT t.value FROM catalog_tags t WHERE t.kind = r.kind AND t.id = r.id ORDER BY t.key)";

/// What the catalog rows must agree with once all are read.
#[derive(Default)]
pub struct CatalogCheck {
    pipelines: BTreeSet<Vec<u8>>,
    /// (version id, its pipeline id).
    versions: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CatalogCheck {
    /// One row ([`CHECKED_COLUMNS`]).
    pub fn row(&mut self, check: &mut Check, row: &tokio_postgres::Row) {
        let kind: i8 = row.get(0);
        let id: Vec<u8> = row.get(1);
        let actual = CatalogRow {
            kind,
            id: id.clone(),
            namespace: row.get(2),
            experiment_id: row.get(3),
            pipeline_id: row.get(4),
            pipeline_version_id: row.get(5),
            name: row.get(6),
            display_name: row.get(7),
            description: row.get(8),
            service_account: row.get(9),
            status: row.get(10),
            created: (row.get(11), row.get(12)),
            updated: (row.get(13), row.get(14)),
            record: row.get(15),
            spec: None,
            spec_digest: row.get(16),
        };
        let spec: Option<Vec<u8>> = row.get(17);
        let keys: Vec<Vec<u8>> = row.get(18);
        let values: Vec<Vec<u8>> = row.get(19);
        let tags: BTreeMap<Vec<u8>, Vec<u8>> = keys.into_iter().zip(values).collect();
        let found = match kind as u8 {
            PIPELINE => {
                self.pipelines.insert(id.clone());
                compare::<Pipeline>(check, &actual, spec, &tags)
            }
            PIPELINE_VERSION => {
                self.versions.push((id.clone(), actual.pipeline_id.clone()));
                compare::<PipelineVersion>(check, &actual, spec, &tags)
            }
            RECURRING_RUN => compare::<RecurringRunRecord>(check, &actual, spec, &tags),
            other => {
                check.problem(format!(
                    "catalog row {:?} has an unknown kind {:?}",
                    lossy(&id),
                    other as char
                ));
                return;
            }
        };
        // Counted as its record says, or as its columns say when it cannot be read.
        let counted = found.as_ref().unwrap_or(&actual);
        for (counter, key) in counted.counters() {
            check.count((counter as i8, key, Vec::new(), Vec::new()));
        }
        if let Some(digest) = &counted.spec_digest {
            check.reference(digest);
        }
    }

    /// What can only be told once every row was read.
    pub fn finish(self, check: &mut Check) {
        for (version, pipeline) in &self.versions {
            if !self.pipelines.contains(pipeline) {
                check.problem(format!(
                    "pipeline version {:?}: its pipeline {:?} does not exist",
                    lossy(version),
                    lossy(pipeline)
                ));
            }
        }
    }
}

/// Compares a row with the row its record makes; returns that row (None: the record cannot be
/// read).
fn compare<T: CatalogKind>(
    check: &mut Check,
    actual: &CatalogRow,
    spec: Option<Vec<u8>>,
    tags: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Option<CatalogRow> {
    let name = format!("{} {:?}", T::KIND, lossy(&actual.id));
    let mut value = match T::decode(&actual.record[..]) {
        Ok(value) => value,
        Err(e) => {
            check.problem(format!("{name}: the record cannot be decoded: {e}"));
            return None;
        }
    };
    if super::catalog::split(&value).1.is_some() {
        check.problem(format!(
            "{name}: the record holds its spec instead of the specs table"
        ));
    }
    match (&actual.spec_digest, spec) {
        (Some(digest), None) => check.problem(format!(
            "{name}: its spec {} is missing",
            super::rows::hex(digest)
        )),
        (_, Some(spec)) => value.set_spec(crate::wkt::StructBytes::from_protobuf(spec.into())),
        (None, None) => {}
    }
    let expected = CatalogRow::of(&value);
    let stored_tags: BTreeMap<Vec<u8>, Vec<u8>> = value
        .tags()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (column, differs) in [
        ("id", expected.id != actual.id),
        ("namespace", expected.namespace != actual.namespace),
        (
            "experiment_id",
            expected.experiment_id != actual.experiment_id,
        ),
        ("pipeline_id", expected.pipeline_id != actual.pipeline_id),
        (
            "pipeline_version_id",
            expected.pipeline_version_id != actual.pipeline_version_id,
        ),
        ("name", expected.name != actual.name),
        ("display_name", expected.display_name != actual.display_name),
        ("description", expected.description != actual.description),
        (
            "service_account",
            expected.service_account != actual.service_account,
        ),
        ("status", expected.status != actual.status),
        ("created_at", expected.created != actual.created),
        ("updated_at", expected.updated != actual.updated),
        ("spec_digest", expected.spec_digest != actual.spec_digest),
        ("tags", stored_tags != *tags),
    ] {
        if differs {
            check.problem(format!("{name}: column {column} disagrees with the record"));
        }
    }
    Some(expected)
}
