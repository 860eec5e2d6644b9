//! Transactions: a write in progress under the writer lock. Every index entry and counter change
//! is derived here from (old record, new record), and everything is applied with one atomic sled
//! batch on commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::MutexGuard;

use super::{
    Counts, EncodedRun, Order, RunScope, Store, codec, damaged_or_migrated, decode_experiment,
    experiment_counter_key, experiment_scope_prefix, keys, storage, utf8,
};
use crate::api::{Experiment, Run, RunEvent, experiment, run, run_event};
use crate::error::{Error, Result};

/// Identifies a committed write, to wait for its durability.
#[derive(Debug, Clone, Copy)]
#[must_use = "wait for the write to be durable before acknowledging it"]
pub struct CommitTicket(pub(super) u64);

/// A write in progress. Reads see the transaction's own changes; nothing is visible to others
/// until [`Txn::commit`].
pub struct Txn<'a> {
    store: &'a Store,
    guard: MutexGuard<'a, u64>,
    batch: sled::Batch,
    overlay: HashMap<Vec<u8>, Option<sled::IVec>>,
    /// Counter deltas (total, archived) by counter key.
    counters: BTreeMap<Vec<u8>, (i64, i64)>,
    events: Vec<RunEvent>,
}

impl<'a> Txn<'a> {
    pub(super) fn new(store: &'a Store, guard: MutexGuard<'a, u64>) -> Txn<'a> {
        Txn {
            store,
            guard,
            batch: sled::Batch::default(),
            overlay: HashMap::new(),
            counters: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        match self.overlay.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.raw(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) {
        // One shared buffer for the batch and the overlay (a run record is kilobytes).
        let value = value.into();
        self.batch.insert(key.clone(), value.clone());
        self.overlay.insert(key, Some(value));
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

    pub fn run(&self, run_id: &str) -> Result<Option<Run>> {
        Ok(self
            .get(&keys::record(keys::RUN, run_id))?
            .map(|bytes| damaged_or_migrated(run_id, &bytes)))
    }

    pub fn experiment(&self, experiment_id: &str) -> Result<Option<Experiment>> {
        self.get(&keys::record(keys::EXPERIMENT, experiment_id))?
            .map(|bytes| decode_experiment(experiment_id, &bytes))
            .transpose()
    }

    pub fn experiment_id_by_name(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        self.get(&keys::experiment_name(namespace, name))?
            .map(|b| utf8(&b))
            .transpose()
    }

    pub fn default_experiment_id(&self, namespace: &str) -> Result<Option<String>> {
        self.get(&keys::default_experiment(namespace))?
            .map(|b| utf8(&b))
            .transpose()
    }

    /// Ids of an experiment's committed runs (consistent: no other writer runs meanwhile).
    pub fn run_ids_of_experiment(&self, experiment_id: &str) -> Result<Vec<String>> {
        self.store
            .scan_index(
                RunScope::Experiment(experiment_id.to_owned()).index_prefix(),
                Order::Ascending,
                None,
            )
            .collect()
    }

    /// Stores `new` (created when `old` is None), keeping indexes and counters in step, and
    /// queues the matching change event. Returns the stored encoding (to send without encoding
    /// the run again).
    pub fn put_run(&mut self, old: Option<&Run>, new: &Run) -> EncodedRun {
        let created = new.created_at.unwrap_or_default();
        if let Some(old) = old {
            let old_created = old.created_at.unwrap_or_default();
            if old.experiment_id != new.experiment_id
                || old.namespace != new.namespace
                || old_created != created
            {
                self.unindex_run(old);
                self.index_run(new);
            } else {
                let delta = is_archived_run(new) as i64 - is_archived_run(old) as i64;
                if delta != 0 {
                    for scope in RunScope::of_run(new) {
                        self.count(scope.counter_key(), 0, delta);
                    }
                }
            }
        } else {
            self.index_run(new);
        }
        let record = sled::IVec::from(codec::encode(new));
        self.put(keys::record(keys::RUN, &new.run_id), record.clone());
        let kind = if old.is_some() {
            run_event::Type::Updated
        } else {
            run_event::Type::Created
        };
        self.event(kind, new);
        EncodedRun::from_record(record).unwrap_or_else(|| EncodedRun::from_run(new))
    }

    /// Queues a change event, unless nobody watches: copying a run (its pipeline spec) for no
    /// reader was a tenth of a create. A watcher that subscribes while this write commits may
    /// miss it, as it would had the write landed just before it subscribed.
    fn event(&mut self, kind: run_event::Type, run: &Run) {
        if self.store.commit.has_subscribers() {
            self.events.push(RunEvent {
                r#type: kind as i32,
                run: Some(run.clone()),
            });
        }
    }

    pub fn delete_run(&mut self, old: &Run) {
        self.unindex_run(old);
        self.remove(keys::record(keys::RUN, &old.run_id));
        self.event(run_event::Type::Deleted, old);
    }

    fn index_run(&mut self, run: &Run) {
        let created = run.created_at.unwrap_or_default();
        let archived = is_archived_run(run) as i64;
        for scope in RunScope::of_run(run) {
            self.put(
                keys::scope_entry(&scope.index_prefix(), &created, &run.run_id),
                Vec::new(),
            );
            self.count(scope.counter_key(), 1, archived);
        }
    }

    fn unindex_run(&mut self, run: &Run) {
        let created = run.created_at.unwrap_or_default();
        let archived = is_archived_run(run) as i64;
        for scope in RunScope::of_run(run) {
            self.remove(keys::scope_entry(
                &scope.index_prefix(),
                &created,
                &run.run_id,
            ));
            self.count(scope.counter_key(), -1, -archived);
        }
    }

    /// Stores `new` (created when `old` is None) with its name and scope indexes.
    pub fn put_experiment(&mut self, old: Option<&Experiment>, new: &Experiment) {
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

    pub fn delete_experiment(&mut self, old: &Experiment) {
        self.unindex_experiment(old);
        self.remove(keys::record(keys::EXPERIMENT, &old.experiment_id));
        let default_key = keys::default_experiment(&old.namespace);
        if self.get(&default_key).ok().flatten().as_deref() == Some(old.experiment_id.as_bytes()) {
            self.remove(default_key);
        }
    }

    pub fn set_default_experiment(&mut self, namespace: &str, experiment_id: &str) {
        self.put(
            keys::default_experiment(namespace),
            experiment_id.as_bytes().to_vec(),
        );
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

    /// Ends a transaction that writes nothing, with a ticket for the last committed write:
    /// waiting on it makes everything this transaction read durable, so an answer built from
    /// those reads (a no-op success, ALREADY_EXISTS) never acknowledges what a crash could
    /// take back.
    pub fn settled(self) -> CommitTicket {
        CommitTicket(*self.guard)
    }

    /// Applies every change atomically. The returned ticket says when it is durable.
    pub fn commit(mut self) -> Result<CommitTicket> {
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
        let batch = std::mem::take(&mut self.batch);
        self.store.tree.apply_batch(batch).map_err(storage)?;
        *self.guard += 1;
        let seq = *self.guard;
        self.store
            .commit
            .committed(seq, std::mem::take(&mut self.events));
        Ok(CommitTicket(seq))
    }
}

fn apply_delta(value: u64, delta: i64) -> Result<u64> {
    value
        .checked_add_signed(delta)
        .ok_or_else(|| Error::internal("a counter would go below zero: the store's counters are inconsistent (run `runledger check`)"))
}

pub(super) fn is_archived_run(run: &Run) -> bool {
    run.storage_state == run::StorageState::Archived as i32
}

pub(super) fn is_archived_experiment(e: &Experiment) -> bool {
    e.storage_state == experiment::StorageState::Archived as i32
}
