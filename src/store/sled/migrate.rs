//! Format migrations, run in place when a store is opened (and by `runledger migrate`).
//!
//! **Format 1 → 2** (spec blobs, the state / name / finished_at run indexes, counters per
//! (state, storage_state), last_run_created_at under its own key):
//! 1. The format marker becomes 2 and the setting `S migration` records where the migration is,
//!    in one batch: from then on a runledger that only knows format 1 refuses the dir instead of
//!    misreading it, and this one knows to carry on.
//! 2. Runs are converted in key order, [`CHUNK`] at a time, each chunk in one atomic batch
//!    together with the progress setting (the last run key converted): each run's spec moves to
//!    its blob (retained in the same batch), and its new index entries are written. A chunk is
//!    either wholly done, progress included, or not at all, so a crash anywhere resumes at the
//!    first run not converted, converting none twice.
//! 3. One last batch replaces every counter with its per-(state, storage_state) form (recounted
//!    from the records), moves each experiment's last_run_created_at to its own key, and removes
//!    the progress setting: the migration is done.
//!
//! Each batch is flushed before the next starts, so progress on disk never runs ahead of the
//! data it describes.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::check::open_offline;
use super::format::{DATA_FORMAT, FORMAT_SETTING, read_format};
use super::keys::{self, RunIndexed};
use super::{
    Counts, KeyRead, KeyWrite, codec, experiment_counter_key, run_counter_key, specs, storage,
};
use crate::api::{Experiment, Run};
use crate::error::{Error, Result};
use crate::store::split_spec;

/// Runs converted per atomic batch, by default.
pub const CHUNK: usize = 2_000;

/// How `runledger migrate` runs.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Runs converted per atomic batch.
    pub chunk: usize,
    /// For crash tests: abort the process (as a kill would stop it) once this many chunks are
    /// on disk.
    pub abort_after_chunks: Option<usize>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            chunk: CHUNK,
            abort_after_chunks: None,
        }
    }
}
/// The setting that says a migration is under way: `2:` then the last run key converted
/// (nothing yet: `2:` alone).
pub(super) const MIGRATION_SETTING: &str = "migration";

/// What `runledger migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// The format the dir was in, and is in now.
    pub from: u32,
    pub to: u32,
    /// Runs converted by this call (a resumed migration counts only its own).
    pub runs: u64,
    pub experiments: u64,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "already at data format {}: nothing to migrate", self.to)
        } else {
            write!(
                f,
                "migrated from data format {} to {}: {} runs and {} experiments converted",
                self.from, self.to, self.runs, self.experiments
            )
        }
    }
}

/// Migrates the data dir `dir` offline (`runledger migrate`).
pub fn migrate_data_dir(dir: &Path, options: &MigrateOptions) -> Result<MigrationReport> {
    let (db, tree) = open_offline(dir)?;
    super::format::ensure_format(&tree)?;
    migrate(&db, &tree, options)
}

/// Brings the tree to [`DATA_FORMAT`], resuming a migration a crash interrupted.
pub(super) fn migrate(
    db: &sled::Db,
    tree: &sled::Tree,
    options: &MigrateOptions,
) -> Result<MigrationReport> {
    let format = read_format(tree)?.unwrap_or(DATA_FORMAT);
    let progress = tree
        .get(keys::setting(MIGRATION_SETTING))
        .map_err(storage)?;
    let mut report = MigrationReport {
        from: format,
        to: DATA_FORMAT,
        ..Default::default()
    };
    let mut after = match (format, progress) {
        (DATA_FORMAT, None) => {
            report.from = DATA_FORMAT;
            return Ok(report);
        }
        (1, None) => {
            let mut batch = sled::Batch::default();
            batch.insert(
                keys::setting(FORMAT_SETTING),
                DATA_FORMAT.to_string().as_bytes(),
            );
            batch.insert(keys::setting(MIGRATION_SETTING), b"2:".to_vec());
            tree.apply_batch(batch).map_err(storage)?;
            db.flush().map_err(storage)?;
            None
        }
        (DATA_FORMAT, Some(progress)) => {
            report.from = 1;
            let last = progress.strip_prefix(b"2:").ok_or_else(|| {
                Error::internal(format!(
                    "the migration progress marker is damaged ({:?})",
                    String::from_utf8_lossy(&progress)
                ))
            })?;
            (!last.is_empty()).then(|| last.to_vec())
        }
        (other, _) => {
            return Err(Error::internal(format!(
                "cannot migrate data format {other} to {DATA_FORMAT}"
            )));
        }
    };
    tracing::info!("migrating the data dir to data format {DATA_FORMAT}");
    let mut chunks = 0;
    loop {
        let (converted, last) = convert_chunk(tree, after.as_deref(), options.chunk.max(1))?;
        db.flush().map_err(storage)?;
        chunks += 1;
        if options.abort_after_chunks == Some(chunks) {
            std::process::abort();
        }
        report.runs += converted as u64;
        match last {
            Some(last) => after = Some(last),
            None => break,
        }
        if report.runs % 100_000 < options.chunk as u64 {
            tracing::info!("migration: {} runs converted", report.runs);
        }
    }
    report.experiments = finish(tree)?;
    db.flush().map_err(storage)?;
    tracing::info!("migration done: {report}");
    Ok(report)
}

/// A chunk's writes, read through to the tree (a spec may be retained twice in one chunk).
struct ChunkBatch<'a> {
    tree: &'a sled::Tree,
    overlay: BTreeMap<Vec<u8>, Option<sled::IVec>>,
}

impl KeyRead for ChunkBatch<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        match self.overlay.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.tree.get(key).map_err(storage),
        }
    }
}

impl KeyWrite for ChunkBatch<'_> {
    fn put(&mut self, key: Vec<u8>, value: sled::IVec) {
        self.overlay.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }
}

/// Converts up to `size` runs after the run key `after`, in one batch with the progress;
/// returns how many, and the last key converted (None: no run was left).
fn convert_chunk(
    tree: &sled::Tree,
    after: Option<&[u8]>,
    size: usize,
) -> Result<(usize, Option<Vec<u8>>)> {
    let start = match after {
        Some(after) => {
            let mut from = after.to_vec();
            from.push(0);
            from
        }
        None => vec![keys::RUN],
    };
    let mut chunk = ChunkBatch {
        tree,
        overlay: BTreeMap::new(),
    };
    let mut last = None;
    let mut converted = 0;
    for entry in tree.range(start..vec![keys::RUN + 1]).take(size) {
        let (key, record) = entry.map_err(storage)?;
        let run_id = String::from_utf8_lossy(&key[1..]).into_owned();
        let run = codec::decode::<Run>(&record).map_err(|e| {
            Error::DataLoss(format!(
                "cannot migrate: the record of run {run_id:?} cannot be decoded ({e}); restore \
                 the data dir from a backup or remove the run with a runledger of format 1"
            ))
        })?;
        let (body, spec) = split_spec(&run);
        let value = match &spec {
            Some(blob) => {
                specs::retain(&mut chunk, blob)?;
                codec::encode_referencing(&body, &blob.digest)
            }
            None => codec::encode(&run),
        };
        chunk.put(key.to_vec(), value.into());
        // Format 1 had the creation entries; the rest are new.
        for entry in keys::run_entries(&RunIndexed::of(&run)) {
            if !matches!(
                entry[0],
                keys::ALL_RUNS | keys::RUNS_BY_EXPERIMENT | keys::RUNS_BY_NAMESPACE
            ) {
                chunk.put(entry, sled::IVec::default());
            }
        }
        last = Some(key.to_vec());
        converted += 1;
    }
    let Some(last) = last else {
        return Ok((0, None));
    };
    let mut batch = sled::Batch::default();
    for (key, value) in chunk.overlay {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    let mut progress = b"2:".to_vec();
    progress.extend_from_slice(&last);
    batch.insert(keys::setting(MIGRATION_SETTING), progress);
    tree.apply_batch(batch).map_err(storage)?;
    Ok((converted, Some(last)))
}

/// The last step: counters recounted, last_run_created_at moved out of experiment records,
/// progress removed, in one batch. Returns the experiments converted.
fn finish(tree: &sled::Tree) -> Result<u64> {
    let mut counters: BTreeMap<Vec<u8>, Counts> = BTreeMap::new();
    for entry in tree.scan_prefix([keys::RUN]).values() {
        let record = entry.map_err(storage)?;
        let (_, body) = codec::split(&record).map_err(Error::internal)?;
        let run = Run::decode(body).map_err(|e| Error::internal(e.to_string()))?;
        for scope in RunIndexed::of(&run).scopes() {
            counters
                .entry(run_counter_key(&scope)?)
                .or_default()
                .add((run.state, run.storage_state), 1)?;
        }
    }
    let mut batch = sled::Batch::default();
    let mut experiments = 0;
    for entry in tree.scan_prefix([keys::EXPERIMENT]) {
        let (key, record) = entry.map_err(storage)?;
        let mut e = codec::decode::<Experiment>(&record).map_err(|err| {
            Error::DataLoss(format!(
                "cannot migrate: experiment record {:?} cannot be decoded ({err})",
                String::from_utf8_lossy(&key[1..])
            ))
        })?;
        for ns in [None, Some(e.namespace.as_str())] {
            counters
                .entry(experiment_counter_key(ns))
                .or_default()
                .add((0, e.storage_state), 1)?;
        }
        if let Some(last) = e.last_run_created_at.take() {
            batch.insert(
                keys::record(keys::LAST_RUN_CREATED, &e.experiment_id),
                keys::encode_time(&last).to_vec(),
            );
            batch.insert(key, codec::encode(&e));
        }
        experiments += 1;
    }
    for key in tree.scan_prefix([keys::COUNTER]).keys() {
        let key = key.map_err(storage)?;
        if !counters.contains_key(key.as_ref()) {
            batch.remove(key);
        }
    }
    for (key, counts) in counters {
        batch.insert(key, counts.encode());
    }
    batch.remove(keys::setting(MIGRATION_SETTING));
    tree.apply_batch(batch).map_err(storage)?;
    Ok(experiments)
}
