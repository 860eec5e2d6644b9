//! Applying a [`Write`]: under the writer lock, every op's expectation is checked against the
//! committed records (and the ops before it), every index entry, counter and spec reference
//! change is derived from (old record, new record), and everything is applied with one atomic
//! sled batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use prost::Message;

use super::codec::Digest;
use super::encoded::stored_run;
use super::keys::RunIndexed;
use super::list::Direction;
use super::{
    Counts, Inner, KeyRead, KeyWrite, WriterState, codec, decode_experiment,
    experiment_counter_key, experiment_scope_prefix, keys, lock, revision, run_counter_key,
    run_index_prefix, specs, storage, utf8,
};
use crate::api::{Experiment, Run, run};
use crate::error::{Error, Result};
use crate::query::Scope;
use crate::store::feed::{Change, ChangeKind};
use crate::store::{Expectation, Op, Revision, StoredRun, Write, Written, split_spec};

/// Applies `write` atomically; returns the commit's number (to wait for its durability) and what
/// it stored. A write whose expectations fail changes nothing and is a Conflict.
pub(super) fn apply(inner: &Inner, write: Write) -> Result<(u64, Written)> {
    super::assert_off_runtime();
    let mut txn = Txn::new(inner, lock(&inner.writer));
    let mut written = Written::default();
    for op in write.ops {
        txn.apply(op, &mut written)?;
    }
    let seq = txn.commit()?;
    Ok((seq, written))
}

pub(super) fn conflict(what: String) -> Error {
    Error::Conflict(format!("{what}; nothing was written"))
}

/// A write in progress. Reads see the transaction's own changes; nothing is visible to others
/// until [`Txn::commit`]. Pipelines, versions and recurring runs are applied in `catalog.rs`.
pub(super) struct Txn<'a> {
    pub(super) inner: &'a Inner,
    guard: MutexGuard<'a, WriterState>,
    batch: sled::Batch,
    overlay: HashMap<Vec<u8>, Option<sled::IVec>>,
    /// Counter deltas by counter key and (state, storage_state) group.
    counters: BTreeMap<Vec<u8>, BTreeMap<(i32, i32), i64>>,
    changes: Vec<Change>,
}

impl<'a> Txn<'a> {
    fn new(inner: &'a Inner, guard: MutexGuard<'a, WriterState>) -> Txn<'a> {
        Txn {
            inner,
            guard,
            batch: sled::Batch::default(),
            overlay: HashMap::new(),
            counters: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) -> sled::IVec {
        // One shared buffer for the batch and the overlay (a run record is kilobytes).
        let value = value.into();
        self.batch.insert(key.clone(), value.clone());
        self.overlay.insert(key, Some(value.clone()));
        value
    }

    pub(super) fn count(&mut self, key: Vec<u8>, group: (i32, i32), delta: i64) {
        *self
            .counters
            .entry(key)
            .or_default()
            .entry(group)
            .or_default() += delta;
    }

    /// The record under `key` if it is exactly `expected` (None: absent), else a Conflict
    /// naming `what`.
    pub(super) fn expect(
        &self,
        key: &[u8],
        expected: Option<&Revision>,
        what: impl FnOnce() -> String,
    ) -> Result<Option<sled::IVec>> {
        let current = self.get(key)?;
        let holds = match (&current, expected) {
            (None, None) => true,
            (Some(value), Some(revision)) => value.as_ref() == revision.as_bytes(),
            _ => false,
        };
        if holds {
            Ok(current)
        } else {
            Err(conflict(what()))
        }
    }

    fn apply(&mut self, op: Op, written: &mut Written) -> Result<()> {
        match op {
            Op::PutRun { run, replaces } => {
                let key = keys::record(keys::RUN, &run.run_id);
                let old = self.expect(&key, replaces.as_ref(), || match &replaces {
                    None => format!("a run with run_id {:?} exists", run.run_id),
                    Some(_) => format!("run {:?} changed since it was read", run.run_id),
                })?;
                let old = old.map(|record| OldRun::read(&run.run_id, &record));
                let stored = self.put_run(old.as_ref(), &run)?;
                written.runs.push(stored);
            }
            Op::DeleteRun { run_id, replaces } => {
                let key = keys::record(keys::RUN, &run_id);
                let old = self.expect(&key, Some(&replaces), || {
                    format!("run {run_id:?} changed or was deleted since it was read")
                })?;
                if let Some(record) = old {
                    self.delete_run(&run_id, record)?;
                }
            }
            Op::PutExperiment {
                experiment,
                replaces,
            } => {
                let key = keys::record(keys::EXPERIMENT, &experiment.experiment_id);
                let id = experiment.experiment_id.clone();
                let old = self.expect(&key, replaces.as_ref(), || match &replaces {
                    None => format!("an experiment with id {id:?} exists"),
                    Some(_) => format!("experiment {id:?} changed since it was read"),
                })?;
                let old = old
                    .map(|record| decode_experiment(&id, &record))
                    .transpose()?;
                let renamed = old.as_ref().is_none_or(|o| {
                    o.namespace != experiment.namespace || o.display_name != experiment.display_name
                });
                if renamed
                    && self
                        .get(&keys::experiment_name(
                            &experiment.namespace,
                            &experiment.display_name,
                        ))?
                        .is_some()
                {
                    return Err(conflict(format!(
                        "an experiment named {:?} exists in namespace {:?}",
                        experiment.display_name, experiment.namespace
                    )));
                }
                self.put_experiment(old.as_ref(), &experiment);
            }
            Op::DeleteExperiment {
                experiment_id,
                replaces,
            } => {
                let key = keys::record(keys::EXPERIMENT, &experiment_id);
                let old = self.expect(&key, Some(&replaces), || {
                    format!("experiment {experiment_id:?} changed or was deleted since it was read")
                })?;
                for run_id in self.run_ids_of_experiment(&experiment_id)? {
                    if let Some(record) = self.get(&keys::record(keys::RUN, &run_id))? {
                        self.delete_run(&run_id, record)?;
                    }
                }
                if let Some(record) = old {
                    let old = decode_experiment(&experiment_id, &record)?;
                    self.delete_experiment(&old)?;
                }
            }
            Op::ArchiveRunsOf { experiment_id } => {
                let archived = run::StorageState::Archived as i32;
                for run_id in self.run_ids_of_experiment(&experiment_id)? {
                    let Some(record) = self.get(&keys::record(keys::RUN, &run_id))? else {
                        continue;
                    };
                    let old = OldRun::read(&run_id, &record);
                    if old.run.storage_state != archived {
                        // Same spec: the record keeps its reference as it is.
                        let new = Run {
                            storage_state: archived,
                            ..old.run.clone()
                        };
                        // (A missing blob stays referenced, for `runledger check` to report.)
                        let spec = match &old.spec {
                            Some(digest) => {
                                Some((*digest, specs::load(self, digest)?.unwrap_or_default()))
                            }
                            None => None,
                        };
                        self.store_run(Some(&old), &new, new.encode_to_vec(), spec)?;
                    }
                }
            }
            Op::SetDefaultExperiment {
                namespace,
                experiment_id,
            } => {
                let key = keys::default_experiment(&namespace);
                self.expect(&key, None, || {
                    format!("namespace {namespace:?} has a default experiment")
                })?;
                self.put(key, experiment_id.into_bytes());
            }
            Op::Expect(expectation) => self.check(expectation)?,
            // Pipelines, versions and recurring runs (catalog.rs).
            other => self.apply_catalog(other)?,
        }
        Ok(())
    }

    fn check(&self, expectation: Expectation) -> Result<()> {
        match expectation {
            Expectation::ExperimentExists(id) => {
                if self.get(&keys::record(keys::EXPERIMENT, &id))?.is_none() {
                    return Err(conflict(format!("experiment {id:?} was deleted")));
                }
            }
            Expectation::Experiment { id, revision } => {
                self.expect(
                    &keys::record(keys::EXPERIMENT, &id),
                    Some(&revision),
                    || format!("experiment {id:?} changed since it was read"),
                )?;
            }
            Expectation::DefaultExperiment {
                namespace,
                experiment_id,
            } => {
                let current = self
                    .get(&keys::default_experiment(&namespace))?
                    .map(|id| utf8(&id))
                    .transpose()?;
                if current != experiment_id {
                    return Err(conflict(format!(
                        "the default experiment of namespace {namespace:?} changed"
                    )));
                }
            }
            // Pipelines and versions (catalog.rs).
            other => self.check_catalog(other)?,
        }
        Ok(())
    }

    /// Ids of an experiment's committed runs (consistent: no other writer runs meanwhile).
    fn run_ids_of_experiment(&self, experiment_id: &str) -> Result<Vec<String>> {
        let prefix = run_index_prefix(&Scope::Experiment(experiment_id.to_owned()))?;
        super::list::scan_index(self.inner, prefix, Direction::Ascending, None).collect()
    }

    /// Stores `new` (created when `old` is None), keeping indexes, counters and its spec's
    /// references in step, raising its experiment's last_run_created_at when it is new, and
    /// queueing the change.
    fn put_run(&mut self, old: Option<&OldRun>, new: &Run) -> Result<StoredRun> {
        let (body, spec) = split_spec(new);
        specs::replace(self, old.and_then(|o| o.spec.as_ref()), spec.as_ref())?;
        match spec {
            Some(spec) => self.store_run(old, new, body, Some((spec.digest, spec.bytes))),
            None => self.store_run(old, new, body, None),
        }
    }

    /// Writes the record of `new` (`body`: its encoding without the spec, which `spec`
    /// references by its digest; the caller keeps the spec's references) and everything derived
    /// from it.
    fn store_run(
        &mut self,
        old: Option<&OldRun>,
        new: &Run,
        body: Vec<u8>,
        spec: Option<(Digest, bytes::Bytes)>,
    ) -> Result<StoredRun> {
        let created = new.created_at.unwrap_or_default();
        self.reindex_run(
            old.map(|o| RunIndexed::of(&o.run)),
            Some(RunIndexed::of(new)),
        )?;
        if old.is_none() {
            self.raise_last_run_created_at(&new.experiment_id, created)?;
        }
        let value = match &spec {
            Some((digest, _)) => codec::encode_referencing(&body, digest),
            None => codec::encode_plain(&body),
        };
        let record = self.put(keys::record(keys::RUN, &new.run_id), value);
        let offset = codec::body_offset(&record).unwrap_or(1);
        let stored = StoredRun::new(
            new.run_id.clone(),
            revision(record.clone()),
            bytes::Bytes::from_owner(record).slice(offset..),
            spec.map(|(_, bytes)| bytes),
        );
        let kind = if old.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        };
        self.change(kind, stored.clone(), new);
        Ok(stored)
    }

    /// Raises the experiment's last_run_created_at (its own small key, so that the experiment
    /// record is not rewritten by every new run).
    fn raise_last_run_created_at(
        &mut self,
        experiment_id: &str,
        created: crate::wkt::Timestamp,
    ) -> Result<()> {
        if self
            .get(&keys::record(keys::EXPERIMENT, experiment_id))?
            .is_none()
        {
            return Err(conflict(format!(
                "experiment {experiment_id:?} does not exist"
            )));
        }
        let last = super::last_run_created_at(self, experiment_id)?;
        if last.is_none_or(|last| last < created) {
            self.put(
                keys::record(keys::LAST_RUN_CREATED, experiment_id),
                keys::encode_time(&created).to_vec(),
            );
        }
        Ok(())
    }

    fn delete_run(&mut self, run_id: &str, record: sled::IVec) -> Result<()> {
        // Read with its spec before the reference goes: the feed's change carries it.
        let stored = stored_run(self, run_id, record.clone())?;
        let old = OldRun::read(run_id, &record);
        self.reindex_run(Some(RunIndexed::of(&old.run)), None)?;
        if let Some(digest) = &old.spec {
            specs::release(self, digest)?;
        }
        self.remove(keys::record(keys::RUN, run_id));
        self.change(ChangeKind::Deleted, stored, &old.run);
        Ok(())
    }

    /// Queues the change of `run`; numbered on commit.
    fn change(&mut self, kind: ChangeKind, stored: StoredRun, run: &Run) {
        self.changes.push(Change {
            seq: 0,
            kind,
            run: stored,
            experiment_id: run.experiment_id.clone(),
            namespace: run.namespace.clone(),
        });
    }

    /// Moves a run's index entries and counter groups from `old` to `new` (None: absent),
    /// touching only the entries that differ.
    fn reindex_run(
        &mut self,
        old: Option<RunIndexed<'_>>,
        new: Option<RunIndexed<'_>>,
    ) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let entries = |run: &Option<RunIndexed<'_>>| -> BTreeSet<Vec<u8>> {
            run.as_ref()
                .map(keys::run_entries)
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let (before, after) = (entries(&old), entries(&new));
        for key in before.difference(&after) {
            self.remove(key.clone());
        }
        for key in after.difference(&before) {
            self.put(key.clone(), Vec::new());
        }
        for (run, delta) in [(&old, -1), (&new, 1)] {
            if let Some(run) = run {
                for scope in run.scopes() {
                    self.count(
                        run_counter_key(&scope)?,
                        (run.state, run.storage_state),
                        delta,
                    );
                }
            }
        }
        Ok(())
    }

    /// Stores `new` (created when `old` is None) with its name and scope indexes.
    fn put_experiment(&mut self, old: Option<&Experiment>, new: &Experiment) {
        match old {
            Some(old) => {
                if old.namespace != new.namespace
                    || old.display_name != new.display_name
                    || old.created_at != new.created_at
                {
                    self.unindex_experiment(old);
                    self.index_experiment(new);
                } else {
                    if old.storage_state != new.storage_state {
                        for ns in [None, Some(new.namespace.as_str())] {
                            let key = experiment_counter_key(ns);
                            self.count(key.clone(), (0, old.storage_state), -1);
                            self.count(key, (0, new.storage_state), 1);
                        }
                    }
                }
            }
            None => self.index_experiment(new),
        }
        // last_run_created_at lives under its own key, raised only by new runs.
        let record = Experiment {
            last_run_created_at: None,
            ..new.clone()
        };
        self.put(
            keys::record(keys::EXPERIMENT, &new.experiment_id),
            codec::encode(&record),
        );
    }

    fn delete_experiment(&mut self, old: &Experiment) -> Result<()> {
        self.unindex_experiment(old);
        self.remove(keys::record(keys::EXPERIMENT, &old.experiment_id));
        self.remove(keys::record(keys::LAST_RUN_CREATED, &old.experiment_id));
        let default_key = keys::default_experiment(&old.namespace);
        if self.get(&default_key)?.as_deref() == Some(old.experiment_id.as_bytes()) {
            self.remove(default_key);
        }
        Ok(())
    }

    fn index_experiment(&mut self, e: &Experiment) {
        let created = e.created_at.unwrap_or_default();
        self.put(
            keys::experiment_name(&e.namespace, &e.display_name),
            e.experiment_id.as_bytes().to_vec(),
        );
        for ns in [None, Some(e.namespace.as_str())] {
            self.put(
                keys::scope_entry(&experiment_scope_prefix(ns), &created, &e.experiment_id),
                Vec::new(),
            );
            self.count(experiment_counter_key(ns), (0, e.storage_state), 1);
        }
    }

    fn unindex_experiment(&mut self, e: &Experiment) {
        let created = e.created_at.unwrap_or_default();
        self.remove(keys::experiment_name(&e.namespace, &e.display_name));
        for ns in [None, Some(e.namespace.as_str())] {
            self.remove(keys::scope_entry(
                &experiment_scope_prefix(ns),
                &created,
                &e.experiment_id,
            ));
            self.count(experiment_counter_key(ns), (0, e.storage_state), -1);
        }
    }

    /// Applies every change atomically; returns the commit's number.
    fn commit(mut self) -> Result<u64> {
        let counters = std::mem::take(&mut self.counters);
        for (key, deltas) in counters {
            let mut counts = self
                .get(&key)?
                .map_or(Ok(Counts::default()), |b| Counts::decode(&b))?;
            let mut changed = false;
            for (group, delta) in deltas {
                if delta != 0 {
                    counts.add(group, delta)?;
                    changed = true;
                }
            }
            if !changed {
                continue;
            }
            if counts.is_empty() {
                self.remove(key);
            } else {
                self.put(key, counts.encode());
            }
        }
        let mut changes = std::mem::take(&mut self.changes);
        for change in &mut changes {
            self.guard.change += 1;
            change.seq = self.guard.change;
        }
        if !changes.is_empty() {
            // Sequence numbers keep growing across restarts, so a watcher's resume point from
            // before one is never mistaken for a later change.
            let last = self.guard.change;
            self.put(keys::setting(super::CHANGE_SEQ), &last.to_be_bytes()[..]);
        }
        let batch = std::mem::take(&mut self.batch);
        self.inner.tree.apply_batch(batch).map_err(storage)?;
        self.guard.commit += 1;
        let seq = self.guard.commit;
        self.inner.committed.store(seq, Ordering::Release);
        self.inner.commit.committed(seq, changes);
        Ok(seq)
    }
}

/// What a write needs of the record it replaces or removes: the run without its spec (for its
/// index entries) and the spec it references.
struct OldRun {
    run: Run,
    spec: Option<Digest>,
}

impl OldRun {
    /// A record that cannot be decoded is replaced as the run its error describes (its index
    /// entries, if any, are for `runledger check` to find).
    fn read(run_id: &str, record: &[u8]) -> OldRun {
        match codec::split(record) {
            Ok((spec, body)) => OldRun {
                run: Run::decode(body)
                    .unwrap_or_else(|e| crate::store::record::damaged_run(run_id, e)),
                spec,
            },
            Err(e) => OldRun {
                run: crate::store::record::damaged_run(run_id, e),
                spec: None,
            },
        }
    }
}

impl KeyRead for Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        match self.overlay.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.inner.raw(key),
        }
    }
}

impl KeyWrite for Txn<'_> {
    fn put(&mut self, key: Vec<u8>, value: sled::IVec) {
        Txn::put(self, key, value);
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key.clone());
        self.overlay.insert(key, None);
    }
}
