//! Recurring runs and the scheduler's lease in the sled backend: records (`J`, with the
//! schedule state), creation-ordered indexes (`G` every one, `H` per experiment, `Y` per
//! namespace) and counters, changed with their record in the write's one batch; leases (`L`).

use super::catalog::{CatalogRecord, GROUP, decode, decode_whole};
use super::keys;
use super::txn::Txn;
use super::{Inner, KeyRead, KeyWrite, codec, lock, storage};
use crate::api::{RecurringRun, recurring_run};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Page, Scope};
use crate::store::{RecurringRunRecord, Revision, Stored};
use crate::wkt::Timestamp;

impl CatalogRecord for RecurringRunRecord {
    const PREFIX: u8 = keys::RECURRING_RUN;
}

/// The creation-ordered index and the counter of a recurring-run scope.
pub(super) fn scope_keys(scope: &Scope) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok(match scope {
        Scope::All => (
            keys::scope_prefix(keys::ALL_RECURRING_RUNS, None),
            keys::counter(b'g', None),
        ),
        Scope::Experiment(id) => (
            keys::scope_prefix(keys::RECURRING_RUNS_BY_EXPERIMENT, Some(id)),
            keys::counter(b'h', Some(id)),
        ),
        Scope::Namespace(ns) => (
            keys::scope_prefix(keys::RECURRING_RUNS_BY_NAMESPACE, Some(ns)),
            keys::counter(b'y', Some(ns)),
        ),
        other => {
            return Err(Error::internal(format!(
                "recurring runs are not indexed by {other:?}"
            )));
        }
    })
}

/// The scopes a recurring run is indexed and counted in.
pub(super) fn scopes_of(r: &RecurringRun) -> [Scope; 3] {
    [
        Scope::All,
        Scope::Experiment(r.experiment_id.clone()),
        Scope::Namespace(r.namespace.clone()),
    ]
}

impl Inner {
    pub(super) fn list_recurring_runs(
        &self,
        query: &ListQuery,
    ) -> Result<Page<Stored<RecurringRunRecord>>> {
        let (prefix, counter) = scope_keys(&query.scope)?;
        self.list_catalog(prefix, counter, query)
    }

    /// Takes or renews a lease under the writer lock, so that deciding and writing are one step.
    /// Flushed with the next write or flush: losing it in a crash only lets the next process
    /// take it at once, which is what a crash should allow anyway.
    pub(super) fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool> {
        let key = keys::record(keys::LEASE, name);
        let _guard = lock(&self.writer);
        if let Some(current) = self.raw(&key)?
            && let Some((current_holder, expires)) = decode_lease(&current)
            && current_holder != holder
            && expires > now
        {
            return Ok(false);
        }
        self.tree
            .insert(key, encode_lease(holder, &until))
            .map_err(storage)?;
        Ok(true)
    }
}

/// `u16 BE length, holder, 12 time bytes`.
pub(super) fn encode_lease(holder: &str, until: &Timestamp) -> Vec<u8> {
    let holder = &holder.as_bytes()[..holder.len().min(keys::MAX_KEY_PART)];
    let mut value = Vec::with_capacity(2 + holder.len() + 12);
    value.extend_from_slice(&(holder.len() as u16).to_be_bytes());
    value.extend_from_slice(holder);
    value.extend_from_slice(&keys::encode_time(until));
    value
}

/// (holder, expiry) of a lease value; None when it is malformed.
pub(super) fn decode_lease(value: &[u8]) -> Option<(&str, Timestamp)> {
    let len = u16::from_be_bytes(value.get(..2)?.try_into().ok()?) as usize;
    let holder = std::str::from_utf8(value.get(2..2 + len)?).ok()?;
    let rest = value.get(2 + len..)?;
    (rest.len() == 12).then_some(())?;
    Some((holder, keys::decode_time(rest)?))
}

/// The index entries of a recurring run.
pub(super) fn index_entries(r: &RecurringRun) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let created = r.created_at.unwrap_or_default();
    scopes_of(r)
        .iter()
        .map(|scope| {
            let (prefix, counter) = scope_keys(scope)?;
            Ok((
                keys::scope_entry(&prefix, &created, &r.recurring_run_id),
                counter,
            ))
        })
        .collect()
}

impl Txn<'_> {
    pub(super) fn put_recurring_run(
        &mut self,
        new: RecurringRunRecord,
        replaces: Option<Revision>,
    ) -> Result<()> {
        let id = new.id().to_owned();
        let key = keys::record(keys::RECURRING_RUN, &id);
        let old = self.expect(&key, replaces.as_ref(), || match &replaces {
            None => format!("a recurring run with id {id:?} exists"),
            Some(_) => format!("recurring run {id:?} changed since it was read"),
        })?;
        if let Some(old) = &old {
            let old = decode::<RecurringRunRecord>(&id, old)?;
            self.unindex_recurring_run(&old.recurring_run)?;
        }
        self.index_recurring_run(&new.recurring_run)?;
        self.put_catalog(key, old.as_deref(), &new)
    }

    pub(super) fn delete_recurring_run(&mut self, id: &str, replaces: &Revision) -> Result<()> {
        let key = keys::record(keys::RECURRING_RUN, id);
        let old = self.expect(&key, Some(replaces), || {
            format!("recurring run {id:?} changed or was deleted since it was read")
        })?;
        if let Some(record) = old {
            self.remove_recurring_run(id, &record)?;
        }
        Ok(())
    }

    pub(super) fn disable_recurring_runs_of(
        &mut self,
        experiment_id: &str,
        at: Timestamp,
    ) -> Result<()> {
        let (prefix, _) = scope_keys(&Scope::Experiment(experiment_id.to_owned()))?;
        for id in self.ids_in(prefix)? {
            let key = keys::record(keys::RECURRING_RUN, &id);
            let Some(record) = self.get(&key)? else {
                continue;
            };
            let old = record;
            let mut record = decode_whole::<RecurringRunRecord>(self, &id, &old)?;
            let r = &mut record.recurring_run;
            if r.status == recurring_run::Status::Disabled as i32 {
                continue;
            }
            r.status = recurring_run::Status::Disabled as i32;
            r.mode = recurring_run::Mode::Disable as i32;
            r.updated_at = Some(at);
            // Neither its scopes nor its creation time change: its index entries stay.
            self.put_catalog(key, Some(&old), &record)?;
        }
        Ok(())
    }

    pub(super) fn delete_recurring_runs_of(&mut self, experiment_id: &str) -> Result<()> {
        let (prefix, _) = scope_keys(&Scope::Experiment(experiment_id.to_owned()))?;
        for id in self.ids_in(prefix)? {
            if let Some(record) = self.get(&keys::record(keys::RECURRING_RUN, &id))? {
                self.remove_recurring_run(&id, &record)?;
            }
        }
        Ok(())
    }

    fn remove_recurring_run(&mut self, id: &str, record: &[u8]) -> Result<()> {
        // A damaged record has no known index entries: `runledger check` finds them.
        if let Ok(old) = codec::decode::<RecurringRunRecord>(record) {
            self.unindex_recurring_run(&old.recurring_run)?;
        }
        self.remove_catalog(keys::record(keys::RECURRING_RUN, id), record)
    }

    fn index_recurring_run(&mut self, r: &RecurringRun) -> Result<()> {
        for (entry, counter) in index_entries(r)? {
            self.put(entry, Vec::new());
            self.count(counter, GROUP, 1);
        }
        Ok(())
    }

    fn unindex_recurring_run(&mut self, r: &RecurringRun) -> Result<()> {
        for (entry, counter) in index_entries(r)? {
            self.remove(entry);
            self.count(counter, GROUP, -1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip_and_reject_garbage() {
        let until = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let value = encode_lease("host-1/42", &until);
        assert_eq!(decode_lease(&value), Some(("host-1/42", until)));
        assert_eq!(decode_lease(&value[..value.len() - 1]), None);
        assert_eq!(decode_lease(&[0, 9, b'x']), None);
    }
}
