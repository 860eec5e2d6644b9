//! Applying a [`Write`]: under the writer lock, every op's expectation is checked against the
//! committed records (and the ops before it), every index entry and counter change is derived
//! from (old record, new record), and everything is applied with one atomic sled batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use super::encoded::stored_run;
use super::list::Direction;
use super::{
    Counts, Inner, WriterState, codec, decode_experiment, experiment_counter_key,
    experiment_scope_prefix, keys, lock, run_counter_key, run_index_prefix, storage, utf8,
};
use crate::api::{Experiment, Run, experiment, run};
use crate::error::{Error, Result};
use crate::query::Scope;
use crate::store::feed::{Change, ChangeKind};
use crate::store::{Expectation, Op, Revision, StoredRun, Write, Written};

/// Applies `write` atomically; returns the commit's number (to wait for its durability) and what
/// it stored. A write whose expectations fail changes nothing and is a Conflict.
pub(super) fn apply(inner: &Inner, write: Write) -> Result<(u64, Written)> {
    let mut txn = Txn::new(inner, lock(&inner.writer));
    let mut written = Written::default();
    for op in write.ops {
        txn.apply(op, &mut written)?;
    }
    let seq = txn.commit()?;
    Ok((seq, written))
}

fn conflict(what: String) -> Error {
    Error::Conflict(format!("{what}; nothing was written"))
}

/// A write in progress. Reads see the transaction's own changes; nothing is visible to others
/// until [`Txn::commit`].
struct Txn<'a> {
    inner: &'a Inner,
    guard: MutexGuard<'a, WriterState>,
    batch: sled::Batch,
    overlay: HashMap<Vec<u8>, Option<sled::IVec>>,
    /// Counter deltas (total, archived) by counter key.
    counters: BTreeMap<Vec<u8>, (i64, i64)>,
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

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        match self.overlay.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.inner.raw(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) -> sled::IVec {
        // One shared buffer for the batch and the overlay (a run record is kilobytes).
        let value = value.into();
        self.batch.insert(key.clone(), value.clone());
        self.overlay.insert(key, Some(value.clone()));
        value
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key.clone());
        self.overlay.insert(key, None);
    }

    fn count(&mut self, key: Vec<u8>, total: i64, archived: i64) {
        let entry = self.counters.entry(key).or_default();
        entry.0 += total;
        entry.1 += archived;
    }

    /// The record under `key` if it is exactly `expected` (None: absent), else a Conflict
    /// naming `what`.
    fn expect(
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
                let old = old.map(|record| stored_run(&run.run_id, record).decode());
                let stored = self.put_run(old.as_ref(), &run)?;
                written.runs.push(stored);
            }
            Op::DeleteRun { run_id, replaces } => {
                let key = keys::record(keys::RUN, &run_id);
                let old = self.expect(&key, Some(&replaces), || {
                    format!("run {run_id:?} changed or was deleted since it was read")
                })?;
                if let Some(record) = old {
                    self.delete_run(stored_run(&run_id, record))?;
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
                        self.delete_run(stored_run(&run_id, record))?;
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
                    let old = stored_run(&run_id, record).decode();
                    if old.storage_state != archived {
                        let new = Run {
                            storage_state: archived,
                            ..old.clone()
                        };
                        self.put_run(Some(&old), &new)?;
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
        }
        Ok(())
    }

    /// Ids of an experiment's committed runs (consistent: no other writer runs meanwhile).
    fn run_ids_of_experiment(&self, experiment_id: &str) -> Result<Vec<String>> {
        let prefix = run_index_prefix(&Scope::Experiment(experiment_id.to_owned()))?;
        super::list::scan_index(self.inner, prefix, Direction::Ascending, None).collect()
    }

    /// Stores `new` (created when `old` is None), keeping indexes and counters in step, raising
    /// its experiment's last_run_created_at when it is new, and queueing the change.
    fn put_run(&mut self, old: Option<&Run>, new: &Run) -> Result<StoredRun> {
        let created = new.created_at.unwrap_or_default();
        match old {
            Some(old) => {
                let old_created = old.created_at.unwrap_or_default();
                if old.experiment_id != new.experiment_id
                    || old.namespace != new.namespace
                    || old_created != created
                {
                    self.unindex_run(old)?;
                    self.index_run(new)?;
                } else {
                    let delta = is_archived_run(new) as i64 - is_archived_run(old) as i64;
                    if delta != 0 {
                        for scope in Scope::of_run(new) {
                            self.count(run_counter_key(&scope)?, 0, delta);
                        }
                    }
                }
            }
            None => {
                self.index_run(new)?;
                self.raise_last_run_created_at(&new.experiment_id, created)?;
            }
        }
        let record = self.put(keys::record(keys::RUN, &new.run_id), codec::encode(new));
        let stored = stored_run(&new.run_id, record);
        let kind = if old.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        };
        self.change(kind, stored.clone(), new);
        Ok(stored)
    }

    fn raise_last_run_created_at(
        &mut self,
        experiment_id: &str,
        created: crate::wkt::Timestamp,
    ) -> Result<()> {
        let key = keys::record(keys::EXPERIMENT, experiment_id);
        let Some(record) = self.get(&key)? else {
            return Err(conflict(format!(
                "experiment {experiment_id:?} does not exist"
            )));
        };
        let old = decode_experiment(experiment_id, &record)?;
        if old.last_run_created_at.is_none_or(|last| last < created) {
            let new = Experiment {
                last_run_created_at: Some(created),
                ..old.clone()
            };
            self.put_experiment(Some(&old), &new);
        }
        Ok(())
    }

    fn delete_run(&mut self, old: StoredRun) -> Result<()> {
        let run = old.decode();
        self.unindex_run(&run)?;
        self.remove(keys::record(keys::RUN, old.run_id()));
        self.change(ChangeKind::Deleted, old, &run);
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

    fn index_run(&mut self, run: &Run) -> Result<()> {
        let created = run.created_at.unwrap_or_default();
        let archived = is_archived_run(run) as i64;
        for scope in Scope::of_run(run) {
            self.put(
                keys::scope_entry(&run_index_prefix(&scope)?, &created, &run.run_id),
                Vec::new(),
            );
            self.count(run_counter_key(&scope)?, 1, archived);
        }
        Ok(())
    }

    fn unindex_run(&mut self, run: &Run) -> Result<()> {
        let created = run.created_at.unwrap_or_default();
        let archived = is_archived_run(run) as i64;
        for scope in Scope::of_run(run) {
            self.remove(keys::scope_entry(
                &run_index_prefix(&scope)?,
                &created,
                &run.run_id,
            ));
            self.count(run_counter_key(&scope)?, -1, -archived);
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
                    let delta =
                        is_archived_experiment(new) as i64 - is_archived_experiment(old) as i64;
                    if delta != 0 {
                        for ns in [None, Some(new.namespace.as_str())] {
                            self.count(experiment_counter_key(ns), 0, delta);
                        }
                    }
                }
            }
            None => self.index_experiment(new),
        }
        self.put(
            keys::record(keys::EXPERIMENT, &new.experiment_id),
            codec::encode(new),
        );
    }

    fn delete_experiment(&mut self, old: &Experiment) -> Result<()> {
        self.unindex_experiment(old);
        self.remove(keys::record(keys::EXPERIMENT, &old.experiment_id));
        let default_key = keys::default_experiment(&old.namespace);
        if self.get(&default_key)?.as_deref() == Some(old.experiment_id.as_bytes()) {
            self.remove(default_key);
        }
        Ok(())
    }

    fn index_experiment(&mut self, e: &Experiment) {
        let created = e.created_at.unwrap_or_default();
        let archived = is_archived_experiment(e) as i64;
        self.put(
            keys::experiment_name(&e.namespace, &e.display_name),
            e.experiment_id.as_bytes().to_vec(),
        );
        for ns in [None, Some(e.namespace.as_str())] {
            self.put(
                keys::scope_entry(&experiment_scope_prefix(ns), &created, &e.experiment_id),
                Vec::new(),
            );
            self.count(experiment_counter_key(ns), 1, archived);
        }
    }

    fn unindex_experiment(&mut self, e: &Experiment) {
        let created = e.created_at.unwrap_or_default();
        let archived = is_archived_experiment(e) as i64;
        self.remove(keys::experiment_name(&e.namespace, &e.display_name));
        for ns in [None, Some(e.namespace.as_str())] {
            self.remove(keys::scope_entry(
                &experiment_scope_prefix(ns),
                &created,
                &e.experiment_id,
            ));
            self.count(experiment_counter_key(ns), -1, -archived);
        }
    }

    /// Applies every change atomically; returns the commit's number.
    fn commit(mut self) -> Result<u64> {
        let counters = std::mem::take(&mut self.counters);
        for (key, (total, archived)) in counters {
            let current = self
                .get(&key)?
                .map_or(Ok(Counts::default()), |b| Counts::decode(&b))?;
            let next = Counts {
                total: apply_delta(current.total, total)?,
                archived: apply_delta(current.archived, archived)?,
            };
            if next == Counts::default() {
                self.remove(key);
            } else {
                self.put(key, &next.encode()[..]);
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
        // A running backup keeps what these keys held before (its point in time).
        self.inner
            .recorder
            .before_write(self.overlay.keys().map(Vec::as_slice), |key| {
                self.inner.raw(key)
            })?;
        let batch = std::mem::take(&mut self.batch);
        self.inner.tree.apply_batch(batch).map_err(storage)?;
        self.guard.commit += 1;
        let seq = self.guard.commit;
        self.inner.committed.store(seq, Ordering::Release);
        self.inner.commit.committed(seq, changes);
        Ok(seq)
    }
}

fn apply_delta(value: u64, delta: i64) -> Result<u64> {
    value.checked_add_signed(delta).ok_or_else(|| {
        Error::internal(
            "a counter would go below zero: the store's counters are inconsistent (run \
             `runledger check`)",
        )
    })
}

pub(super) fn is_archived_run(run: &Run) -> bool {
    run.storage_state == run::StorageState::Archived as i32
}

pub(super) fn is_archived_experiment(e: &Experiment) -> bool {
    e.storage_state == experiment::StorageState::Archived as i32
}
