//! The embedded backend: everything in one sled tree, the only code that knows sled.
//!
//! Keys are built so that one prefix is one scan (table in [`keys`]). A write takes the writer
//! lock, checks every expectation of the [`Write`] against the committed records, derives every
//! index entry and counter change from (old, new) and applies them all in one atomic sled batch
//! ([`txn`]), so a crash at any instant leaves records, indexes and counters consistent. It is
//! acknowledged once a flush that started after it has finished ([`commit`]: group commit).
//! Reads never take the lock. No sled call runs on the async worker threads: reads by key go to a
//! pool of reader threads, scans to a pool that grows with demand, writes to the writer thread,
//! so a long scan or a slow disk cannot hold up other calls (or Health/Check).
//!
//! The `Db` can be replaced while the store runs: after a storage error (a full disk) it is
//! reopened in place ([`reopen`]), so every thread reaches it through [`Live`] for one call at a
//! time and keeps no handle between calls.

mod backup;
mod catalog;
mod catalog_check;
mod check;
mod codec;
mod commit;
mod counts;
mod encoded;
mod format;
pub mod keys;
mod list;
pub mod migrate;
mod pipelines;
mod recurring;
mod reopen;
pub mod specs;
mod startup;
mod txn;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[doc(hidden)]
pub use check::edit_offline;
pub use check::{CheckReport, RepairReport, check_data_dir, repair_data_dir};
pub use codec::FORMAT_VERSION as RECORD_VERSION;
pub use commit::Durability;
pub use format::DATA_FORMAT;
pub use migrate::{MigrateOptions, MigrationReport, migrate_data_dir};
pub use reopen::{BALLAST_FILE, free_bytes};
pub use startup::STARTUP_FULL_CHECK_KEYS;

use commit::GroupCommit;
use counts::Counts;
use reopen::{Claim, Health, Live};

use super::feed::ChangeFeed;
use super::{RecurringRunRecord, Revision, Store, Stored, StoredRun, Subscription, Write, Written};
use crate::api::{Experiment, Pipeline, PipelineVersion};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Page, Scope, Tally};
use crate::wkt::Timestamp;

/// Options for opening a data directory.
#[derive(Debug, Clone)]
pub struct DataDirOptions {
    pub durability: Durability,
    /// Changes buffered for watchers; a watcher further behind is stopped.
    pub event_buffer: usize,
    /// Changes retained for watchers that resume after a sequence number.
    pub event_retain: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Writes are refused (before they are applied) while the data dir's filesystem has less
    /// free space than this (`--min-free-disk-mb`); 0: only a real full disk stops them.
    pub min_free_bytes: u64,
    /// Size of the ballast file kept in the data dir and deleted when the disk is full, so the
    /// store can reopen; 0: none.
    pub ballast_bytes: u64,
}

impl Default for DataDirOptions {
    fn default() -> Self {
        DataDirOptions {
            durability: Durability::Durable,
            event_buffer: 1024,
            event_retain: 1024,
            cache_bytes: 256 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
            ballast_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The embedded store on a data directory.
pub struct SledStore {
    /// The current sled handle (replaced when the store is reopened after a storage error).
    live: Arc<Live>,
    writer: Writer,
}

/// The writer thread: it applies writes one after another, in the order they were queued.
/// Concurrent writers queue instead of each taking a thread of the blocking pool to wait for the
/// writer lock there (64 concurrent creates kept ~64 threads waking and sleeping on the lock).
struct Writer {
    queue: Mutex<Option<std::sync::mpsc::Sender<WriteJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

type WriteJob = (Write, tokio::sync::oneshot::Sender<Result<Applied>>);

/// A write applied by the writer thread: the `Db` it went to (whose group commit makes it
/// durable), its commit ticket, what it wrote, and its share of the free-space reserve, held
/// until it is durable.
struct Applied {
    inner: Arc<Inner>,
    ticket: u64,
    written: Written,
    _claim: Claim,
}

impl Writer {
    /// The writer thread holds the [`Live`] store, never a `Db` between writes, so that a reopen
    /// can replace the `Db` between two writes.
    fn start(live: Arc<Live>) -> Result<Writer> {
        let (queue, jobs) = std::sync::mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new()
            .name("runledger-writer".into())
            .spawn(move || {
                yield_cpu_to_the_runtime();
                // Ends when the store is dropped (its sender with it).
                while let Ok((write, answer)) = jobs.recv() {
                    // The caller may have gone: the write stands, as any committed write.
                    let _ = answer.send(apply(&live, write));
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
        })
    }

    async fn apply(&self, write: Write) -> Result<Applied> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        lock(&self.queue)
            .as_ref()
            .and_then(|queue| queue.send((write, answer)).ok())
            .ok_or_else(|| Error::internal("the store's writer has stopped"))?;
        answered
            .await
            .map_err(|_| Error::internal("a store write was dropped without an answer"))?
    }
}

/// Applies `write` to the current `Db`, unless it must be refused before it is applied (a
/// storage failure, or free space below the reserve: [`Health::claim`]).
fn apply(live: &Live, write: Write) -> Result<Applied> {
    let claim = live.health.claim(reopen::estimate(&write))?;
    live.with(move |inner| {
        let (ticket, written) = txn::apply(inner, write)?;
        Ok(Applied {
            inner: inner.clone(),
            ticket,
            written,
            _claim: claim,
        })
    })
}

impl Drop for SledStore {
    /// Stops the writer thread and waits for it, so that the database is released when the
    /// store is (a reopen in the same process must not find it locked).
    fn drop(&mut self) {
        lock(&self.writer.queue).take();
        if let Some(thread) = lock(&self.writer.thread).take() {
            let _ = thread.join();
        }
    }
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Guards read-modify-write; holds the numbers of the last commit and the last change.
    writer: Mutex<WriterState>,
    /// The last commit's number, readable without the lock.
    committed: AtomicU64,
    commit: Arc<GroupCommit>,
    /// Records what writes overwrite while a backup runs (shared by every reopened `Db`).
    recorder: Arc<backup::Recorder>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct WriterState {
    commit: u64,
    change: u64,
}

/// The readers' pool, shared by every store of the process: twice as many threads as cores
/// (at least 4), so that one read of a slow disk does not hold up the others.
fn readers() -> &'static rayon::ThreadPool {
    static READERS: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    READERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores * 2).max(4))
            .thread_name(|i| format!("runledger-read-{i}"))
            .start_handler(|_| yield_cpu_to_the_runtime())
            .build()
            // Building fails only if a thread cannot be spawned, at the first read: the process
            // cannot serve without threads.
            .expect("cannot start the store's reader threads")
    })
}

/// Lowers the calling thread's CPU priority (nice +10), once per thread: store threads (readers,
/// the scan pool, the writer) yield the CPU to the async runtime's threads when both want it,
/// so under a saturating list load Health/Check and the transport keep answering promptly and
/// the store work waits instead. Only the CPU share changes; nothing waits on a lower-priority
/// thread while holding a lock the runtime needs.
fn yield_cpu_to_the_runtime() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    LOWERED.with(|lowered| {
        if !lowered.replace(true) {
            #[cfg(target_os = "linux")]
            // SAFETY: plain syscalls on this thread's own id; a failure only leaves the priority
            // as it was.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, STORE_NICE);
            }
        }
    });
}

/// The nice value of store threads (see [`yield_cpu_to_the_runtime`]).
const STORE_NICE: libc::c_int = 10;

/// The setting holding the last change's sequence number (u64 BE).
const CHANGE_SEQ: &str = "change-seq";

/// The one sled tree everything lives in.
const TREE: &str = "ledger";

/// The sled settings every opener of a data dir must share (sled refuses to open a database with
/// a different compression setting than it was created with).
///
/// Values are compressed (zstd) on disk: without it sled 0.34's log grew to ~33 KB per 5 KB run
/// (33 GB at 1M runs) where its segment bookkeeping stalled reads (BENCHMARKS.md). sled
/// compresses each page update on its own (with a zstd context kept per thread: `sled-zstd/`
/// replaces zstd 0.9, which made a new one for each): at level 1 (not sled's default 5) that
/// costs a fraction of the CPU and compresses these small updates nearly as well. The level is
/// not part of the stored format (any level decompresses).
fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .use_compression(true)
        .compression_factor(1)
}

fn storage(e: sled::Error) -> Error {
    reopen::classify(e)
}

/// Opens sled on `dir` with the tree everything lives in (format marker checked, written on a
/// new store); returns the last change sequence number stored.
fn open_sled(dir: &Path, options: &DataDirOptions) -> Result<(sled::Db, sled::Tree, u64)> {
    let flush_every_ms = match options.durability {
        Durability::Durable => None,
        Durability::Buffered { flush_every_ms } => Some(flush_every_ms.max(1)),
    };
    let db = sled_config(dir)
        .cache_capacity(options.cache_bytes)
        .flush_every_ms(flush_every_ms)
        .open()
        .map_err(|e| Error::Unavailable(format!("cannot open data dir {}: {e}", dir.display())))?;
    let tree = db.open_tree(TREE).map_err(storage)?;
    format::ensure_format(&tree)?;
    let last_change = tree
        .get(keys::setting(CHANGE_SEQ))
        .map_err(storage)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    Ok((db, tree, last_change))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Refuses a store written by a newer runledger, and
    /// one that fails the startup check (see `startup.rs`): the error names `runledger check`.
    pub fn open(dir: &Path, options: DataDirOptions) -> Result<Arc<SledStore>> {
        let (db, tree, last_change) = open_sled(dir, &options)?;
        migrate::migrate(&db, &tree, &migrate::MigrateOptions::default())?;
        startup::at_startup(&tree, dir)?;
        db.flush().map_err(storage)?;
        let feed = Arc::new(ChangeFeed::new(
            options.event_buffer,
            options.event_retain,
            last_change,
        ));
        let health = Health::new(dir, &options);
        let recorder = Arc::new(backup::Recorder::default());
        let inner = Inner::start(
            db,
            tree,
            last_change,
            &options,
            feed.clone(),
            health.clone(),
            recorder.clone(),
        )?;
        let live = Live::start(dir, options, feed, health, recorder, inner)?;
        let writer = Writer::start(live.clone())?;
        Ok(Arc::new(SledStore { live, writer }))
    }

    /// Runs `f`, work of unbounded length (a scan, a write that waits for the writer lock), on
    /// a pool that grows with demand, so that no amount of it holds up anything else. The
    /// `blocking` crate's pool rather than tokio's `spawn_blocking`: handing a call to it costs
    /// ~3 µs of CPU against ~11-16 µs (64 concurrent callers on 2 cores).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Inner>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let live = self.live.clone();
        blocking::unblock(move || {
            yield_cpu_to_the_runtime();
            live.with(f)
        })
        .await
    }

    /// Runs `f`, a read by key (a cache lookup, a page read and its decompression), on the
    /// readers' pool: fixed threads that wait for the next read by spinning a moment before they
    /// sleep, so that under load a handoff rarely needs a wake-up. A GetRun is ~25 µs of work;
    /// the growing pool's wake-ups added half of that again, these add next to nothing.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Inner>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let live = self.live.clone();
        let (answer, answered) = tokio::sync::oneshot::channel();
        readers().spawn(move || {
            let result = live.with(f);
            // Let go of the store before answering: once the last caller has its answer and
            // drops the store, the data dir must be free (a reopen in the same process would
            // otherwise race this thread, which runs at a lower priority, for sled's lock).
            drop(live);
            // The caller may have gone (its request was cancelled): nothing to tell.
            let _ = answer.send(result);
        });
        answered
            .await
            .map_err(|_| Error::internal("a store read was dropped without an answer"))?
    }
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn run(&self, run_id: &str) -> Result<Option<StoredRun>> {
        let run_id = run_id.to_owned();
        self.read(move |inner| inner.run(&run_id)).await
    }

    async fn experiment(&self, experiment_id: &str) -> Result<Option<Stored<Experiment>>> {
        let id = experiment_id.to_owned();
        self.read(move |inner| inner.experiment(&id)).await
    }

    async fn experiment_named(
        &self,
        namespace: &str,
        display_name: &str,
    ) -> Result<Option<Stored<Experiment>>> {
        let key = keys::experiment_name(namespace, display_name);
        self.read(move |inner| match inner.raw(&key)? {
            Some(id) => inner.experiment(&utf8(&id)?),
            None => Ok(None),
        })
        .await
    }

    async fn default_experiment(&self, namespace: &str) -> Result<Option<String>> {
        let key = keys::default_experiment(namespace);
        self.read(move |inner| inner.raw(&key)?.map(|id| utf8(&id)).transpose())
            .await
    }

    async fn list_runs(&self, query: ListQuery) -> Result<Page<StoredRun>> {
        if list::reads_a_page(&query, true) {
            self.read(move |inner| list::runs(inner, &query)).await
        } else {
            self.blocking(move |inner| list::runs(inner, &query)).await
        }
    }

    async fn list_experiments(&self, query: ListQuery) -> Result<Page<Stored<Experiment>>> {
        if list::reads_a_page(&query, false) {
            self.read(move |inner| list::experiments(inner, &query))
                .await
        } else {
            self.blocking(move |inner| list::experiments(inner, &query))
                .await
        }
    }

    async fn run_tally(&self, scope: &Scope) -> Result<Tally> {
        let key = run_counter_key(scope)?;
        self.read(move |inner| Ok(inner.counts(&key)?.tally(true)))
            .await
    }

    async fn namespaces(&self) -> Result<Vec<String>> {
        self.read(|inner| inner.namespaces()).await
    }

    async fn pipeline_namespaces(&self) -> Result<Vec<String>> {
        self.read(|inner| inner.counted_namespaces(b'w')).await
    }

    async fn write(&self, write: Write) -> Result<Written> {
        let applied = self.writer.apply(write).await?;
        applied.inner.commit.wait(applied.ticket).await?;
        Ok(applied.written)
    }

    async fn settle(&self) -> Result<()> {
        let inner = self.live.current()?;
        let last = inner.committed.load(Ordering::Acquire);
        inner.commit.wait(last).await
    }

    fn subscribe(&self, after: Option<u64>) -> Result<Subscription> {
        self.live.feed.subscribe(after)
    }

    fn observe(&self, observer: Arc<dyn crate::store::StoreObserver>) -> bool {
        self.live.feed.observer().set(observer)
    }

    fn writable(&self) -> tokio::sync::watch::Receiver<crate::store::Writable> {
        self.live.health.subscribe()
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        self.blocking(|inner| inner.db.size_on_disk().map(Some).map_err(storage))
            .await
    }

    async fn token_key(&self) -> Result<Vec<u8>> {
        self.blocking(|inner| inner.token_key()).await
    }

    async fn close(&self) -> Result<()> {
        let live = self.live.clone();
        blocking::unblock(move || live.close()).await
    }

    async fn backup(
        &self,
        to: &Path,
        progress: tokio::sync::watch::Sender<crate::store::BackupProgress>,
    ) -> Result<crate::store::BackupProgress> {
        let live = self.live.clone();
        let to = to.to_path_buf();
        blocking::unblock(move || {
            yield_cpu_to_the_runtime();
            backup::run(&live, &to, &progress)
        })
        .await
    }

    // Pipelines, versions, recurring runs and leases: pipelines.rs, recurring.rs, catalog.rs.

    async fn pipeline(&self, pipeline_id: &str) -> Result<Option<Stored<Pipeline>>> {
        let id = pipeline_id.to_owned();
        self.read(move |inner| inner.catalog_record(&id)).await
    }

    async fn pipeline_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<Pipeline>>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.read(move |inner| inner.pipeline_named(&namespace, &name))
            .await
    }

    async fn list_pipelines(&self, query: ListQuery) -> Result<Page<Stored<Pipeline>>> {
        self.blocking(move |inner| inner.list_pipelines(&query))
            .await
    }

    async fn pipeline_version(&self, version_id: &str) -> Result<Option<Stored<PipelineVersion>>> {
        let id = version_id.to_owned();
        self.read(move |inner| inner.catalog_record(&id)).await
    }

    async fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        let (pipeline_id, name) = (pipeline_id.to_owned(), name.to_owned());
        self.read(move |inner| inner.pipeline_version_named(&pipeline_id, &name))
            .await
    }

    async fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        let id = pipeline_id.to_owned();
        self.read(move |inner| inner.latest_pipeline_version(&id))
            .await
    }

    async fn list_pipeline_versions(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<PipelineVersion>>> {
        self.blocking(move |inner| inner.list_pipeline_versions(&query))
            .await
    }

    async fn recurring_run(
        &self,
        recurring_run_id: &str,
    ) -> Result<Option<Stored<RecurringRunRecord>>> {
        let id = recurring_run_id.to_owned();
        self.read(move |inner| inner.catalog_record(&id)).await
    }

    async fn list_recurring_runs(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<RecurringRunRecord>>> {
        self.blocking(move |inner| inner.list_recurring_runs(&query))
            .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: crate::wkt::Timestamp,
        until: crate::wkt::Timestamp,
    ) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.blocking(move |inner| inner.acquire_lease(&name, &holder, now, until))
            .await
    }
}

/// Reads by key: the committed tree, or a write's view of it (its own changes first).
pub trait KeyRead {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>>;
}

/// Changes queued in a write's atomic batch.
pub trait KeyWrite: KeyRead {
    fn put(&mut self, key: Vec<u8>, value: sled::IVec);
    fn remove(&mut self, key: Vec<u8>);
}

impl KeyRead for sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        sled::Tree::get(self, key).map_err(storage)
    }
}

impl KeyRead for Inner {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.raw(key)
    }
}

/// Every sled call of a running store goes through [`Inner`] on a reader or blocking-pool
/// thread, never on an async worker thread, where it would hold up every other request (a page
/// read from a slow disk, decompression, a long scan). Debug builds (every test) check it.
fn assert_off_runtime() {
    debug_assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "a store call on an async runtime thread"
    );
}

impl Inner {
    /// The store's state over an opened sled, writing change numbers after `last_change`, with
    /// its group commit (and flusher thread, in durable mode).
    fn start(
        db: sled::Db,
        tree: sled::Tree,
        last_change: u64,
        options: &DataDirOptions,
        feed: Arc<ChangeFeed>,
        health: Arc<Health>,
        recorder: Arc<backup::Recorder>,
    ) -> Result<Arc<Inner>> {
        let commit = GroupCommit::new(options.durability, feed, health);
        let inner = Arc::new(Inner {
            db: db.clone(),
            tree,
            writer: Mutex::new(WriterState {
                commit: 0,
                change: last_change,
            }),
            committed: AtomicU64::new(0),
            commit: commit.clone(),
            recorder,
            flusher: Mutex::new(None),
        });
        if options.durability == Durability::Durable {
            let handle = std::thread::Builder::new()
                .name("runledger-flusher".into())
                .spawn(move || commit.run_flusher(&db))
                .map_err(|e| Error::internal(format!("cannot start the flusher thread: {e}")))?;
            *lock(&inner.flusher) = Some(handle);
        }
        Ok(inner)
    }

    fn raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        assert_off_runtime();
        self.tree.get(key).map_err(storage)
    }

    fn run(&self, run_id: &str) -> Result<Option<StoredRun>> {
        self.raw(&keys::record(keys::RUN, run_id))?
            .map(|record| encoded::stored_run(self, run_id, record))
            .transpose()
    }

    fn experiment(&self, experiment_id: &str) -> Result<Option<Stored<Experiment>>> {
        self.raw(&keys::record(keys::EXPERIMENT, experiment_id))?
            .map(|record| stored_experiment(self, experiment_id, record))
            .transpose()
    }

    /// The namespaces with a run counter (a counter goes when its last run does).
    fn namespaces(&self) -> Result<Vec<String>> {
        self.counted_namespaces(b'n')
    }

    /// The namespaces with a counter of `kind` (`n` runs, `w` pipelines).
    pub(super) fn counted_namespaces(&self, kind: u8) -> Result<Vec<String>> {
        assert_off_runtime();
        let prefix = keys::counter(kind, None);
        self.tree
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                let key = key.map_err(storage)?;
                keys::parse_counter_part(&key[prefix.len()..])
                    .ok_or_else(|| Error::internal("corrupt namespace counter key"))
            })
            .collect()
    }

    fn counts(&self, key: &[u8]) -> Result<Counts> {
        self.raw(key)?
            .map_or(Ok(Counts::default()), |b| Counts::decode(&b))
    }

    /// The secret that signs page tokens; created on first use and kept in the store so tokens
    /// stay valid across restarts.
    fn token_key(&self) -> Result<Vec<u8>> {
        let key = keys::setting("page-token-key");
        if let Some(existing) = self.raw(&key)? {
            return Ok(existing.to_vec());
        }
        let _guard = lock(&self.writer);
        if let Some(existing) = self.raw(&key)? {
            return Ok(existing.to_vec());
        }
        let secret: [u8; 32] = rand::random();
        self.recorder
            .before_write([key.as_slice()], |k| self.raw(k))?;
        self.tree.insert(key, &secret[..]).map_err(storage)?;
        self.db.flush().map_err(storage)?;
        Ok(secret.to_vec())
    }

    fn stop_flusher(&self) {
        self.commit.shutdown();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_flusher();
    }
}

/// An experiment record and its revision (the stored bytes), with its last_run_created_at
/// (kept under its own key, so that a new run does not rewrite the record).
fn stored_experiment(
    kv: &impl KeyRead,
    experiment_id: &str,
    record: sled::IVec,
) -> Result<Stored<Experiment>> {
    let mut value = decode_experiment(experiment_id, &record)?;
    value.last_run_created_at = last_run_created_at(kv, experiment_id)?;
    Ok(Stored {
        value,
        revision: revision(record),
    })
}

/// The experiment's last_run_created_at (key `L`), None when it has no run yet.
fn last_run_created_at(kv: &impl KeyRead, experiment_id: &str) -> Result<Option<Timestamp>> {
    kv.get(&keys::record(keys::LAST_RUN_CREATED, experiment_id))?
        .map(|v| {
            keys::decode_time(&v).ok_or_else(|| {
                Error::internal(format!(
                    "the last_run_created_at of experiment {experiment_id:?} cannot be decoded: \
                     run `runledger check --repair`"
                ))
            })
        })
        .transpose()
}

/// A record's revision: its stored bytes (shared, not copied). Comparing them is exact, and
/// needs nothing stored beside the record.
fn revision(record: sled::IVec) -> Revision {
    Revision::new(bytes::Bytes::from_owner(record))
}

fn decode_experiment(experiment_id: &str, bytes: &[u8]) -> Result<Experiment> {
    codec::decode::<Experiment>(bytes).map_err(|e| {
        Error::DataLoss(format!(
            "the stored record of experiment {experiment_id:?} cannot be read: {e}"
        ))
    })
}

/// The creation-ordered index of a run scope.
fn run_index_prefix(scope: &Scope) -> Result<Vec<u8>> {
    Ok(match scope {
        Scope::All => keys::scope_prefix(keys::ALL_RUNS, None),
        Scope::Experiment(id) => keys::scope_prefix(keys::RUNS_BY_EXPERIMENT, Some(id)),
        Scope::Namespace(ns) => keys::scope_prefix(keys::RUNS_BY_NAMESPACE, Some(ns)),
        Scope::Run(_) | Scope::Pipeline(_) => return Err(unindexed(scope)),
    })
}

fn run_counter_key(scope: &Scope) -> Result<Vec<u8>> {
    Ok(match scope {
        Scope::All => keys::counter(b'a', None),
        Scope::Experiment(id) => keys::counter(b'x', Some(id)),
        Scope::Namespace(ns) => keys::counter(b'n', Some(ns)),
        Scope::Run(_) | Scope::Pipeline(_) => return Err(unindexed(scope)),
    })
}

fn unindexed(scope: &Scope) -> Error {
    Error::internal(format!("{scope:?} is not a scope the store indexes"))
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

/// The namespace of an experiment scope (None: every experiment).
fn experiment_scope(scope: &Scope) -> Result<Option<&str>> {
    match scope {
        Scope::All => Ok(None),
        Scope::Namespace(ns) => Ok(Some(ns)),
        other => Err(unindexed(other)),
    }
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::internal("corrupt id in an index value"))
}

/// A poisoned lock only means another thread panicked while holding it; the data it guards
/// (sequence numbers) is still consistent, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
