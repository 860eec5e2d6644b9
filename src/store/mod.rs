//! The store: the only code that knows sled.
//!
//! Its interface is record-level (get a run, scan a scope in creation order, read a counter,
//! change records in a transaction), so another backend can replace it without touching the
//! core or the API layers. Every change goes through a [`Txn`]: it holds the writer lock, reads
//! the old records, derives every index and counter change from (old, new) and applies them all
//! with one atomic sled batch, so a crash at any instant leaves records, indexes and counters
//! consistent. Writes are serialised by that lock (sled serialises multi-key atomic writes
//! anyway); reads never take it.

mod check;
mod codec;
mod commit;
mod encoded;
pub mod keys;
mod startup;
mod txn;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

#[doc(hidden)]
pub use check::edit_offline;
pub use check::{CheckReport, RepairReport, check_data_dir, repair_data_dir};
pub use commit::Durability;
use commit::GroupCommit;
pub use encoded::{EncodedRun, ListedRun};
pub use startup::{DATA_FORMAT, STARTUP_FULL_CHECK_KEYS};
pub use txn::{CommitTicket, Txn};
use txn::{is_archived_experiment, is_archived_run};

use crate::api::{Experiment, Run, RunEvent};
use crate::error::{Error, Result};
use crate::wkt::Timestamp;

/// Which runs a scan or a counter covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunScope {
    All,
    Experiment(String),
    Namespace(String),
}

impl RunScope {
    fn index_prefix(&self) -> Vec<u8> {
        match self {
            RunScope::All => keys::scope_prefix(keys::ALL_RUNS, None),
            RunScope::Experiment(id) => keys::scope_prefix(keys::RUNS_BY_EXPERIMENT, Some(id)),
            RunScope::Namespace(ns) => keys::scope_prefix(keys::RUNS_BY_NAMESPACE, Some(ns)),
        }
    }

    fn counter_key(&self) -> Vec<u8> {
        match self {
            RunScope::All => keys::counter(b'a', None),
            RunScope::Experiment(id) => keys::counter(b'x', Some(id)),
            RunScope::Namespace(ns) => keys::counter(b'n', Some(ns)),
        }
    }

    /// The three scopes a run belongs to.
    fn of_run(run: &Run) -> [RunScope; 3] {
        [
            RunScope::All,
            RunScope::Experiment(run.experiment_id.clone()),
            RunScope::Namespace(run.namespace.clone()),
        ]
    }
}

/// Which experiments a scan or a counter covers: all, or one namespace's.
fn experiment_scope_prefix(namespace: Option<&str>) -> Vec<u8> {
    match namespace {
        None => keys::scope_prefix(keys::ALL_EXPERIMENTS, None),
        Some(ns) => keys::scope_prefix(keys::EXPERIMENTS_BY_NAMESPACE, Some(ns)),
    }
}

fn experiment_counter_key(namespace: Option<&str>) -> Vec<u8> {
    match namespace {
        None => keys::counter(b'e', None),
        Some(ns) => keys::counter(b'p', Some(ns)),
    }
}

/// How many records a scope holds, and how many of them are archived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub archived: u64,
}

impl Counts {
    fn decode(bytes: &[u8]) -> Result<Counts> {
        let total = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        let archived = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        match (total, archived) {
            (Some(total), Some(archived)) if bytes.len() == 16 => Ok(Counts { total, archived }),
            _ => Err(Error::internal("corrupt counter value")),
        }
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.total.to_be_bytes());
        out[8..].copy_from_slice(&self.archived.to_be_bytes());
        out
    }
}

/// Scan direction over a creation-ordered index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Size of the change-event buffer that WatchRuns subscribers read from.
    pub event_buffer: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Durable,
            event_buffer: 1024,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Guards read-modify-write; holds the last committed sequence number.
    writer: Mutex<u64>,
    commit: Arc<GroupCommit>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The one sled tree everything lives in.
const TREE: &str = "ledger";

/// The sled settings every opener of a data dir must share (sled refuses to open a database with
/// a different compression setting than it was created with).
///
/// Values are compressed (zstd) on disk: a run's pipeline_spec compresses ~20×, and without it
/// sled 0.34's log grew to ~33 KB per 5 KB run, 33 GB at 1M runs, where its segment bookkeeping
/// stalled reads (BENCHMARKS.md). With it: 1.5 GB at 1M runs, and reads keep answering.
fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new().path(dir).use_compression(true)
}

fn storage(e: sled::Error) -> Error {
    Error::Internal(format!("storage error: {e}"))
}

impl Store {
    /// Opens (or creates) the store in `dir`. Refuses a store written by a newer runledger, and
    /// one that fails the startup check (see `startup.rs`): the error names `runledger check`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Arc<Store>> {
        let flush_every_ms = match options.durability {
            Durability::Durable => None,
            Durability::Buffered { flush_every_ms } => Some(flush_every_ms.max(1)),
        };
        let db = sled_config(dir)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(flush_every_ms)
            .open()
            .map_err(|e| {
                Error::Unavailable(format!("cannot open data dir {}: {e}", dir.display()))
            })?;
        let tree = db.open_tree(TREE).map_err(storage)?;
        startup::ensure_format(&tree)?;
        startup::at_startup(&tree, dir)?;
        db.flush().map_err(storage)?;
        let commit = GroupCommit::new(options.durability, options.event_buffer);
        let store = Arc::new(Store {
            db: db.clone(),
            tree,
            writer: Mutex::new(0),
            commit: commit.clone(),
            flusher: Mutex::new(None),
        });
        if options.durability == Durability::Durable {
            let handle = std::thread::Builder::new()
                .name("runledger-flusher".into())
                .spawn(move || commit.run_flusher(&db))
                .map_err(|e| Error::internal(format!("cannot start the flusher thread: {e}")))?;
            *lock(&store.flusher) = Some(handle);
        }
        Ok(store)
    }

    pub fn durability(&self) -> Durability {
        self.commit.mode()
    }

    /// Starts a write: takes the writer lock until the returned transaction is committed or
    /// dropped. Never hold it across an `.await`.
    pub fn begin(&self) -> Txn<'_> {
        Txn::new(self, lock(&self.writer))
    }

    /// Waits until the write `ticket` is durable (per the store's durability mode).
    pub async fn wait_durable(&self, ticket: CommitTicket) -> Result<()> {
        self.commit.wait(ticket.0).await
    }

    /// Subscribes to run change events, published in commit order once durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunEvent>> {
        self.commit.subscribe()
    }

    /// Flushes everything to disk and stops the flusher; for shutdown.
    pub fn close(&self) -> Result<()> {
        self.commit.shutdown();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
        self.db.flush().map_err(storage)?;
        Ok(())
    }

    fn raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree.get(key).map_err(storage)
    }

    pub fn get_run(&self, run_id: &str) -> Result<Option<Run>> {
        Ok(self
            .raw(&keys::record(keys::RUN, run_id))?
            .map(|bytes| damaged_or_migrated(run_id, &bytes)))
    }

    /// A run's encoding as stored, to send without decoding it.
    pub fn get_run_encoded(&self, run_id: &str) -> Result<Option<EncodedRun>> {
        Ok(self.raw(&keys::record(keys::RUN, run_id))?.map(|record| {
            EncodedRun::from_record(record.clone())
                .unwrap_or_else(|| EncodedRun::from_run(&damaged_or_migrated(run_id, &record)))
        }))
    }

    pub fn get_experiment(&self, experiment_id: &str) -> Result<Option<Experiment>> {
        self.raw(&keys::record(keys::EXPERIMENT, experiment_id))?
            .map(|bytes| decode_experiment(experiment_id, &bytes))
            .transpose()
    }

    pub fn experiment_id_by_name(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        self.raw(&keys::experiment_name(namespace, name))?
            .map(|b| utf8(&b))
            .transpose()
    }

    pub fn run_counts(&self, scope: &RunScope) -> Result<Counts> {
        self.counts(&scope.counter_key())
    }

    pub fn experiment_counts(&self, namespace: Option<&str>) -> Result<Counts> {
        self.counts(&experiment_counter_key(namespace))
    }

    fn counts(&self, key: &[u8]) -> Result<Counts> {
        self.raw(key)?
            .map_or(Ok(Counts::default()), |b| Counts::decode(&b))
    }

    /// A scope's runs in creation order, starting after `after` (created_at, run_id) when given,
    /// with only the fields listing filters and sorts on decoded and each run's encoding kept to
    /// send as is. Runs deleted while the scan runs are skipped.
    pub fn scan_listed_runs(
        &self,
        scope: &RunScope,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> impl Iterator<Item = Result<ListedRun>> + '_ {
        self.scan_index(scope.index_prefix(), order, after)
            .filter_map(move |entry| match entry {
                Ok(id) => match self.raw(&keys::record(keys::RUN, &id)) {
                    Ok(Some(record)) => Some(Ok(ListedRun::from_record(&id, record))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                },
                Err(e) => Some(Err(e)),
            })
    }

    /// A namespace's (or every) experiments in creation order, starting after `after`.
    pub fn scan_experiments(
        &self,
        namespace: Option<&str>,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> impl Iterator<Item = Result<Experiment>> + '_ {
        self.scan_index(experiment_scope_prefix(namespace), order, after)
            .filter_map(move |entry| match entry {
                Ok(id) => self.get_experiment(&id).transpose(),
                Err(e) => Some(Err(e)),
            })
    }

    /// The ids in a creation-ordered index under `prefix`, strictly after `after`.
    fn scan_index(
        &self,
        prefix: Vec<u8>,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        let start = after.map(|(created, id)| keys::scope_entry(&prefix, &created, id));
        let mut end = prefix.clone();
        // Every key of the scope is `prefix ++ 12 time bytes ++ id`; 0xff.. past the time bytes
        // bounds them all.
        end.extend_from_slice(&[0xff; 13]);
        let iter = match (order, start) {
            (_, None) => self.tree.range(prefix.clone()..end),
            (Order::Ascending, Some(start)) => {
                let mut from = start;
                from.push(0); // strictly after
                self.tree.range(from..end)
            }
            (Order::Descending, Some(start)) => self.tree.range(prefix.clone()..start),
        };
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::Ascending => Box::new(iter),
            Order::Descending => Box::new(iter.rev()),
        };
        let prefix_len = prefix.len();
        iter.map(move |entry| {
            let (key, _) = entry.map_err(storage)?;
            let rest = key.get(prefix_len..).unwrap_or_default();
            keys::split_scope_entry(rest)
                .map(|(_, id)| id.to_owned())
                .ok_or_else(|| Error::internal("corrupt index entry"))
        })
    }

    /// The secret that signs page tokens; created on first use and kept in the store so tokens
    /// stay valid across restarts.
    pub fn token_key(&self) -> Result<Vec<u8>> {
        let key = keys::setting("page-token-key");
        if let Some(existing) = self.raw(&key)? {
            return Ok(existing.to_vec());
        }
        let _guard = lock(&self.writer);
        if let Some(existing) = self.raw(&key)? {
            return Ok(existing.to_vec());
        }
        let secret: [u8; 32] = rand::random();
        self.tree.insert(key, &secret[..]).map_err(storage)?;
        self.db.flush().map_err(storage)?;
        Ok(secret.to_vec())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.commit.shutdown();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
    }
}

/// A stored run record, decoded. One that cannot be decoded is still returned (and listed), with
/// its id and `error` saying why, so one damaged record does not make a whole scope unreadable.
fn damaged_or_migrated(run_id: &str, bytes: &[u8]) -> Run {
    codec::decode::<Run>(bytes).unwrap_or_else(|e| damaged_run(run_id, e))
}

/// A run record's protobuf (without the version byte), decoded the same forgiving way.
fn decode_body(run_id: &str, body: &[u8]) -> Run {
    use prost::Message;
    Run::decode(body).unwrap_or_else(|e| damaged_run(run_id, e.to_string()))
}

fn damaged_run(run_id: &str, e: String) -> Run {
    Run {
        run_id: run_id.to_owned(),
        error: Some(crate::proto::google::rpc::Status {
            code: tonic::Code::DataLoss as i32,
            message: format!("the stored record of run {run_id:?} cannot be read: {e}"),
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

fn decode_experiment(experiment_id: &str, bytes: &[u8]) -> Result<Experiment> {
    codec::decode::<Experiment>(bytes).map_err(|e| {
        Error::Internal(format!(
            "the stored record of experiment {experiment_id:?} cannot be read: {e}"
        ))
    })
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::internal("corrupt id in an index value"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
