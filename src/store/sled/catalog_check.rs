//! `runledger check` for pipelines, versions, recurring runs and leases: their records (`I`,
//! `V`, `J`) are the truth; their name entries (`K`, `O`), creation indexes (`W`, `U`, `G`,
//! `H`, `Y`) and counters are recomputed from them with the functions the writer uses, and
//! compared. Also: every version's pipeline exists, every recurring run's experiment exists in
//! its namespace, every lease (`L`) is readable. Called from `check.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{CatalogRecord, GROUP, is_damaged, spec_of};
use super::check::show;
use super::codec::Digest;
use super::{Counts, codec, keys, pipelines, recurring, specs};
use crate::api::{Pipeline, PipelineVersion, RecurringRun};
use crate::error::{Error, Result};
use crate::query::Record;
use crate::store::RecurringRunRecord;

/// What the check found of these kinds.
#[derive(Default)]
pub(super) struct CatalogScan {
    pub(super) pipelines: u64,
    pub(super) versions: u64,
    pub(super) recurring_runs: u64,
    /// Records that cannot be decoded: a rebuild cannot know their entries.
    pub(super) undecodable: usize,
    decoded_pipelines: BTreeMap<String, Pipeline>,
    decoded_versions: BTreeMap<String, PipelineVersion>,
    decoded_recurring: BTreeMap<String, RecurringRun>,
    /// Derived entries found (key → value).
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    bad_leases: Vec<Vec<u8>>,
    problems: Vec<String>,
    /// The spec blob each version or recurring run references (record key → digest).
    spec_refs: BTreeMap<Vec<u8>, Digest>,
}

/// What repairing the derived entries takes: keys to remove, entries to (re)write.
pub(super) struct Repair {
    pub(super) remove: Vec<Vec<u8>>,
    pub(super) insert: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Whether `kind` (a key's first byte) is one of these kinds'.
pub(super) fn handles(kind: u8) -> bool {
    matches!(
        kind,
        keys::PIPELINE
            | keys::PIPELINE_NAME
            | keys::PIPELINES_BY_NAMESPACE
            | keys::PIPELINE_VERSION
            | keys::PIPELINE_VERSION_NAME
            | keys::VERSIONS_BY_PIPELINE
            | keys::RECURRING_RUN
            | keys::ALL_RECURRING_RUNS
            | keys::RECURRING_RUNS_BY_EXPERIMENT
            | keys::RECURRING_RUNS_BY_NAMESPACE
            | keys::LEASE
    )
}

impl CatalogScan {
    /// Visits one key of these kinds; returns true when it is an index entry (for the report).
    pub(super) fn visit(&mut self, key: &[u8], value: &[u8]) -> bool {
        let (kind, rest) = (key[0], &key[1..]);
        let id = String::from_utf8_lossy(rest).into_owned();
        match kind {
            keys::PIPELINE => {
                self.pipelines += 1;
                if let Some(p) = self.record::<Pipeline>(&id, value, |p| &p.pipeline_id) {
                    self.decoded_pipelines.insert(id, p);
                }
            }
            keys::PIPELINE_VERSION => {
                self.versions += 1;
                if let Some(v) =
                    self.record::<PipelineVersion>(&id, value, |v| &v.pipeline_version_id)
                {
                    self.decoded_versions.insert(id, v);
                }
            }
            keys::RECURRING_RUN => {
                self.recurring_runs += 1;
                if let Some(r) = self.record::<RecurringRunRecord>(&id, value, |r| r.id()) {
                    self.decoded_recurring.insert(id, r.recurring_run);
                }
            }
            keys::LEASE => {
                if recurring::decode_lease(value).is_none() {
                    self.problems.push(format!("lease {id:?} cannot be read"));
                    self.bad_leases.push(key.to_vec());
                }
            }
            _ => {
                self.entries.insert(key.to_vec(), value.to_vec());
                return true;
            }
        }
        false
    }

    fn record<T: CatalogRecord>(
        &mut self,
        id: &str,
        value: &[u8],
        own_id: impl Fn(&T) -> &str,
    ) -> Option<T> {
        if let Some(digest) = spec_of(value) {
            self.spec_refs.insert(keys::record(T::PREFIX, id), digest);
        }
        if is_damaged::<T>(value) {
            self.undecodable += 1;
            let e = codec::decode::<T>(value).err().unwrap_or_default();
            self.problems
                .push(format!("{} record {id:?} cannot be decoded: {e}", T::KIND));
            return None;
        }
        let record = codec::decode::<T>(value).ok()?;
        if own_id(&record) != id {
            self.problems.push(format!(
                "{} record under key {id:?} has id {:?}",
                T::KIND,
                own_id(&record)
            ));
        }
        Some(record)
    }

    /// The derived entries the records call for (key → value), and the problems of the records
    /// themselves (shared names, missing parents).
    fn expected(
        &self,
        experiment_namespace: &dyn Fn(&str) -> Option<String>,
    ) -> (BTreeMap<Vec<u8>, Vec<u8>>, Vec<String>) {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        // A name entry for `id`, unless an older record took the name.
        let name = |out: &mut BTreeMap<Vec<u8>, Vec<u8>>,
                    problems: &mut Vec<String>,
                    key: Vec<u8>,
                    id: &str,
                    what: String| {
            match out.get(&key) {
                Some(other) => {
                    problems.push(format!("{what} is used by {:?} and {id:?}", show(other)))
                }
                None => {
                    out.insert(key, id.as_bytes().to_vec());
                }
            }
        };
        for (id, p) in by_age(&self.decoded_pipelines, |p| p.created_at) {
            let (name_key, entry) = pipelines::pipeline_entries(p);
            name(
                &mut out,
                &mut problems,
                name_key,
                id,
                format!(
                    "the pipeline name {:?} in namespace {:?}",
                    p.name, p.namespace
                ),
            );
            out.insert(entry, Vec::new());
        }
        for (id, v) in by_age(&self.decoded_versions, |v| v.created_at) {
            let (name_key, entry) = pipelines::version_entries(v);
            name(
                &mut out,
                &mut problems,
                name_key,
                id,
                format!(
                    "the version name {:?} of pipeline {:?}",
                    v.name, v.pipeline_id
                ),
            );
            out.insert(entry, Vec::new());
            if !self.decoded_pipelines.contains_key(&v.pipeline_id) {
                problems.push(format!(
                    "pipeline version {id:?} belongs to pipeline {:?}, which does not exist",
                    v.pipeline_id
                ));
            }
        }
        for (id, r) in &self.decoded_recurring {
            for (entry, _) in recurring::index_entries(r).unwrap_or_default() {
                out.insert(entry, Vec::new());
            }
            match experiment_namespace(&r.experiment_id) {
                None => problems.push(format!(
                    "recurring run {id:?} belongs to experiment {:?}, which does not exist",
                    r.experiment_id
                )),
                Some(ns) if ns != r.namespace => problems.push(format!(
                    "recurring run {id:?} is in namespace {:?} but its experiment {:?} is in {ns:?}",
                    r.namespace, r.experiment_id
                )),
                Some(_) => {}
            }
        }
        (out, problems)
    }

    /// Adds the counters these records call for.
    pub(super) fn expect_counters(&self, counters: &mut BTreeMap<Vec<u8>, Counts>) {
        // Cannot overflow: one per record.
        let mut count = |key: Vec<u8>| {
            let _ = counters.entry(key).or_default().add(GROUP, 1);
        };
        for p in self.decoded_pipelines.values() {
            count(pipelines::pipelines_counter(&p.namespace));
        }
        for v in self.decoded_versions.values() {
            count(pipelines::versions_counter(&v.pipeline_id));
        }
        for r in self.decoded_recurring.values() {
            for (_, counter) in recurring::index_entries(r).unwrap_or_default() {
                count(counter);
            }
        }
    }

    /// The spec blobs these records reference, once per reference.
    pub(super) fn spec_refs(&self) -> impl Iterator<Item = &Digest> {
        self.spec_refs.values()
    }

    /// Records that reference a spec blob not in `blobs`.
    pub(super) fn lost_specs(&self, blobs: &BTreeSet<Digest>) -> Vec<String> {
        self.spec_refs
            .iter()
            .filter(|(_, digest)| !blobs.contains(*digest))
            .map(|(key, digest)| {
                format!(
                    "{} references pipeline spec {}, which is missing",
                    describe(key),
                    specs::show(digest)
                )
            })
            .collect()
    }

    /// The records that reference a spec blob not in `blobs`, rewritten without the reference
    /// and with an error saying the spec was lost (read from `tree`, which repair holds still).
    pub(super) fn without_lost_specs(
        &self,
        blobs: &BTreeSet<Digest>,
        tree: &sled::Tree,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for (key, digest) in &self.spec_refs {
            if blobs.contains(digest) {
                continue;
            }
            let Some(record) = tree.get(key).map_err(super::storage)? else {
                continue;
            };
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            let value = match key[0] {
                keys::PIPELINE_VERSION => rewrite::<PipelineVersion>(&id, &record, digest)?,
                keys::RECURRING_RUN => rewrite::<RecurringRunRecord>(&id, &record, digest)?,
                _ => continue,
            };
            out.push((key.clone(), value));
        }
        Ok(out)
    }

    /// Every problem found, given the experiments' namespaces.
    pub(super) fn problems(
        &self,
        experiment_namespace: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let (expected, mut problems) = self.expected(experiment_namespace);
        problems.splice(0..0, self.problems.iter().cloned());
        for (key, value) in &self.entries {
            match expected.get(key) {
                Some(want) if want == value => {}
                Some(want) => problems.push(format!(
                    "entry {:?} points at {:?}; the records say {:?}",
                    show(key),
                    show(value),
                    show(want)
                )),
                None => problems.push(format!(
                    "entry {:?} matches no pipeline, version or recurring run",
                    show(key)
                )),
            }
        }
        for key in expected.keys() {
            if !self.entries.contains_key(key) {
                problems.push(format!("entry {:?} is missing", show(key)));
            }
        }
        problems
    }

    /// The removals and insertions that make the derived entries what the records say.
    pub(super) fn repair(&self, experiment_namespace: &dyn Fn(&str) -> Option<String>) -> Repair {
        let (expected, _) = self.expected(experiment_namespace);
        let mut remove: Vec<Vec<u8>> = self
            .entries
            .keys()
            .filter(|key| !expected.contains_key(*key))
            .cloned()
            .collect();
        remove.extend(self.bad_leases.iter().cloned());
        let insert = expected
            .into_iter()
            .filter(|(key, value)| self.entries.get(key) != Some(value))
            .collect();
        Repair { remove, insert }
    }
}

/// A record key as people read it: "pipeline version \"id\"".
fn describe(key: &[u8]) -> String {
    let kind = match key[0] {
        keys::PIPELINE_VERSION => PipelineVersion::KIND,
        keys::RECURRING_RUN => RecurringRun::KIND,
        _ => "record",
    };
    format!("{kind} {:?}", String::from_utf8_lossy(&key[1..]))
}

/// A record of `T` re-encoded whole without its reference to the lost spec `digest`, its error
/// saying so.
fn rewrite<T: CatalogRecord>(id: &str, record: &[u8], digest: &Digest) -> Result<Vec<u8>> {
    let mut value = codec::decode::<T>(record)
        .map_err(|e| Error::internal(format!("{} {id:?} changed during repair: {e}", T::KIND)))?;
    value.set_error(specs::lost(T::KIND, digest));
    Ok(codec::encode(&value))
}

/// Records oldest first, so that when two share a name the older one keeps it.
fn by_age<T>(
    records: &BTreeMap<String, T>,
    created: impl Fn(&T) -> Option<crate::wkt::Timestamp>,
) -> Vec<(&String, &T)> {
    let mut sorted: Vec<_> = records.iter().collect();
    sorted.sort_by_key(|(id, r)| (created(r).unwrap_or_default(), *id));
    sorted
}
