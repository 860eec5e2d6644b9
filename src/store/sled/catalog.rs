//! What pipelines, pipeline versions and recurring runs share in the sled backend: listing a
//! creation-ordered index of records of one kind, reading those records (a damaged one is
//! handed out with its id and an `error` saying why, as runs are), and the dispatch of their
//! ops and expectations from [`Txn`] (`pipelines.rs`, `recurring.rs`).

use std::marker::PhantomData;

use super::codec::Digest;
use super::keys;
use super::list::{self, Direction, Source};
use super::txn::Txn;
use super::{Inner, KeyRead, KeyWrite, codec, revision, specs};
use crate::error::{Error, Result};
use crate::query::{Field, FieldValue, ListQuery, Page, Record, Tally};
use crate::store::{Expectation, Op, SpecBlob, Stored};
use crate::wkt::{StructBytes, Timestamp};

/// The one counter group of pipelines, versions and recurring runs: they have no run state, and
/// nothing of theirs is archived.
pub(super) const GROUP: (i32, i32) = (0, 0);

/// A record kind kept under one key prefix.
pub(super) trait CatalogRecord: crate::store::CatalogRecord {
    /// The prefix of its records (`I`, `V`, `J`).
    const PREFIX: u8;
}

/// `record` as stored: its encoding, referencing its spec blob when it has one, and that blob
/// (the caller keeps its use count, [`specs::replace`]).
pub(super) fn encode<T: CatalogRecord>(record: &T) -> (Vec<u8>, Option<SpecBlob>) {
    let mut body = record.clone();
    match body.take_spec() {
        Some(spec) => {
            let blob = SpecBlob::of(spec.protobuf().clone());
            let value = codec::encode_referencing(&body.encode_to_vec(), &blob.digest);
            (value, Some(blob))
        }
        None => (codec::encode(record), None),
    }
}

/// Decodes a stored record of `T` without its spec (enough for its index entries).
pub(super) fn decode<T: CatalogRecord>(id: &str, record: &[u8]) -> Result<T> {
    codec::decode::<T>(record).map_err(|e| {
        Error::DataLoss(format!(
            "the stored record of {} {id:?} cannot be read: {e}",
            T::KIND
        ))
    })
}

/// Decodes a stored record of `T` with its spec, for a write that changes it and keeps the spec.
pub(super) fn decode_whole<T: CatalogRecord>(
    kv: &impl KeyRead,
    id: &str,
    record: &[u8],
) -> Result<T> {
    let mut value = decode::<T>(id, record)?;
    if let Some(digest) = spec_of(record) {
        let spec = specs::load(kv, &digest)?.ok_or_else(|| {
            Error::DataLoss(format!(
                "the pipeline spec {} of {} {id:?} is missing: run `runledger check --repair`",
                specs::show(&digest),
                T::KIND
            ))
        })?;
        value.set_spec(StructBytes::from_protobuf(spec));
    }
    Ok(value)
}

/// The spec blob a stored record references.
pub(super) fn spec_of(record: &[u8]) -> Option<Digest> {
    codec::split(record).ok().and_then(|(digest, _)| digest)
}

/// The stored record `id` of kind `T`, decoded with its spec; a damaged one (or one whose spec
/// blob is missing) as [`CatalogRecord::damaged`] with an error saying why.
pub(super) fn stored<T: CatalogRecord>(
    kv: &impl KeyRead,
    id: &str,
    record: sled::IVec,
) -> Result<Stored<T>> {
    let value = match codec::decode::<T>(&record) {
        Err(e) => T::damaged(id, crate::store::data_loss::<T>(id, e)),
        Ok(mut value) => {
            if let Some(digest) = spec_of(&record) {
                match specs::load(kv, &digest)? {
                    Some(spec) => value.set_spec(StructBytes::from_protobuf(spec)),
                    None => value.set_error(crate::store::data_loss::<T>(
                        id,
                        format!(
                            "its pipeline spec {} is missing (run `runledger check --repair`)",
                            specs::show(&digest)
                        ),
                    )),
                }
            }
            value
        }
    };
    Ok(Stored {
        value,
        revision: revision(record),
    })
}

impl Txn<'_> {
    /// Writes `record` under `key`, moving its spec reference from the one the `old` stored
    /// value held (if any) to its own, in this batch.
    pub(super) fn put_catalog<T: CatalogRecord>(
        &mut self,
        key: Vec<u8>,
        old: Option<&[u8]>,
        record: &T,
    ) -> Result<()> {
        let (value, blob) = encode(record);
        specs::replace(self, old.and_then(spec_of).as_ref(), blob.as_ref())?;
        self.put(key, value);
        Ok(())
    }

    /// Removes the stored value under `key` (`old`), releasing the spec it references.
    pub(super) fn remove_catalog(&mut self, key: Vec<u8>, old: &[u8]) -> Result<()> {
        if let Some(digest) = spec_of(old) {
            specs::release(self, &digest)?;
        }
        self.remove(key);
        Ok(())
    }
}

/// Whether a stored value is a record that cannot be decoded.
pub(super) fn is_damaged<T: CatalogRecord>(record: &[u8]) -> bool {
    codec::decode::<T>(record).is_err()
}

impl Inner {
    /// The record `id` of kind `T`.
    pub(super) fn catalog_record<T: CatalogRecord>(&self, id: &str) -> Result<Option<Stored<T>>> {
        self.raw(&keys::record(T::PREFIX, id))?
            .map(|record| stored(self, id, record))
            .transpose()
    }

    /// The record a name entry (`key` → id) points at.
    pub(super) fn named_record<T: CatalogRecord>(&self, key: &[u8]) -> Result<Option<Stored<T>>> {
        match self.raw(key)? {
            Some(id) => self.catalog_record(&super::utf8(&id)?),
            None => Ok(None),
        }
    }

    /// The last record of a creation-ordered index.
    pub(super) fn newest_in<T: CatalogRecord>(&self, prefix: Vec<u8>) -> Result<Option<Stored<T>>> {
        match list::scan_index(self, prefix, Direction::Descending, None).next() {
            Some(id) => self.catalog_record(&id?),
            None => Ok(None),
        }
    }

    /// One page of the records of kind `T` in the index under `prefix`, counted by `counter`.
    pub(super) fn list_catalog<T: CatalogRecord>(
        &self,
        prefix: Vec<u8>,
        counter: Vec<u8>,
        query: &ListQuery,
    ) -> Result<Page<Stored<T>>> {
        let source = CatalogSource::<T> {
            inner: self,
            prefix,
            counter,
            kind: PhantomData,
        };
        list::list(&source, query)
    }
}

/// Where listing reads records of kind `T`: one creation-ordered index.
struct CatalogSource<'a, T> {
    inner: &'a Inner,
    prefix: Vec<u8>,
    counter: Vec<u8>,
    kind: PhantomData<T>,
}

impl<T: CatalogRecord> Source for CatalogSource<'_, T> {
    type Item = Stored<T>;

    fn scan(
        &self,
        direction: Direction,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Stored<T>>> + '_> {
        Box::new(
            list::scan_index(self.inner, self.prefix.clone(), direction, after).filter_map(
                move |entry| match entry {
                    Ok(id) => match self.inner.raw(&keys::record(T::PREFIX, &id)) {
                        Ok(Some(record)) => Some(stored(self.inner, &id, record)),
                        // Deleted while the scan runs.
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    },
                    Err(e) => Some(Err(e)),
                },
            ),
        )
    }

    fn tally(&self) -> Result<Tally> {
        Ok(self.inner.counts(&self.counter)?.tally(false))
    }
}

/// A stored record is filtered and sorted on its value.
impl<T: CatalogRecord> Record for Stored<T> {
    const KIND: &'static str = T::KIND;
    const FIELDS: &'static [(&'static str, Field)] = T::FIELDS;
    const TAGGED: bool = T::TAGGED;

    fn tag(&self, key: &str) -> Option<&str> {
        self.value.tag(key)
    }

    fn id(&self) -> &str {
        self.value.id()
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.value.created_at()
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        self.value.field(field)
    }
}

impl Txn<'_> {
    /// Applies an op of pipelines, versions or recurring runs.
    pub(super) fn apply_catalog(&mut self, op: Op) -> Result<()> {
        match op {
            Op::PutPipeline { pipeline, replaces } => self.put_pipeline(pipeline, replaces),
            Op::DeletePipeline {
                pipeline_id,
                replaces,
            } => self.delete_pipeline(&pipeline_id, &replaces),
            Op::PutPipelineVersion { version, replaces } => {
                self.put_pipeline_version(*version, replaces)
            }
            Op::DeletePipelineVersion {
                pipeline_version_id,
                replaces,
            } => self.delete_pipeline_version(&pipeline_version_id, &replaces),
            Op::PutRecurringRun { record, replaces } => self.put_recurring_run(*record, replaces),
            Op::DeleteRecurringRun {
                recurring_run_id,
                replaces,
            } => self.delete_recurring_run(&recurring_run_id, &replaces),
            Op::DisableRecurringRunsOf { experiment_id, at } => {
                self.disable_recurring_runs_of(&experiment_id, at)
            }
            Op::DeleteRecurringRunsOf { experiment_id } => {
                self.delete_recurring_runs_of(&experiment_id)
            }
            _ => Err(Error::internal(
                "a run or experiment op was handed to the catalog",
            )),
        }
    }

    /// Checks an expectation about pipelines or versions.
    pub(super) fn check_catalog(&self, expectation: Expectation) -> Result<()> {
        match expectation {
            Expectation::PipelineExists(id) => {
                if self.get(&keys::record(keys::PIPELINE, &id))?.is_none() {
                    return Err(super::txn::conflict(format!("pipeline {id:?} was deleted")));
                }
            }
            Expectation::PipelineVersionExists(id) => {
                if self
                    .get(&keys::record(keys::PIPELINE_VERSION, &id))?
                    .is_none()
                {
                    return Err(super::txn::conflict(format!(
                        "pipeline version {id:?} was deleted"
                    )));
                }
            }
            Expectation::NoPipelineVersions(id) => {
                let prefix = super::pipelines::versions_prefix(&id);
                let any = list::scan_index(self.inner, prefix, Direction::Ascending, None).next();
                if any.transpose()?.is_some() {
                    return Err(super::txn::conflict(format!(
                        "pipeline {id:?} has versions"
                    )));
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

    /// Ids in a committed creation-ordered index (consistent: no other writer runs meanwhile).
    pub(super) fn ids_in(&self, prefix: Vec<u8>) -> Result<Vec<String>> {
        list::scan_index(self.inner, prefix, Direction::Ascending, None).collect()
    }
}
