//! Staying useful when the disk fills up or a write fails.
//!
//! sled's IO errors are sticky: after one, every later write on that `Db` fails, and so do some
//! reads (those that make sled rewrite a page). So when a write, a flush or a read meets a storage
//! error ([`Health::failed`]):
//! 1. writes are refused at once, before they touch sled: `disk full: ...` (RESOURCE_EXHAUSTED,
//!    HTTP 507) for a full disk or quota, UNAVAILABLE for other IO errors; the server turns the
//!    write services' health NOT_SERVING ([`crate::store::Writable`]);
//! 2. the monitor thread reopens the store in place ([`Live::reopen`]): writers waiting for a
//!    flush are told it failed, in-flight calls on the old `Db` finish (a write is one atomic
//!    batch: none is half-applied), the old `Db` is dropped (sled locks the data dir) and opened
//!    again, so every read works. Nothing else keeps the old `Db`: the writer thread, the reader
//!    threads and the scan pool take it from [`Live`] for one call and let go before they
//!    answer; calls that come meanwhile wait for the new one (bounded). On a completely full disk sled cannot open, so the store keeps a
//!    ballast file ([`BALLAST_FILE`]) in the data dir and deletes it first;
//! 3. writes resume by themselves once the filesystem has room again: the reserve, the ballast
//!    (recreated first) and a little headroom.
//!
//! The free-space reserve (`--min-free-disk-mb`, [`Health::claim`]): a write is refused before it
//! is applied when the filesystem's free space, less what the writes in flight may still take,
//! would fall below the reserve, so sled rarely meets a full disk at all, and such a refused
//! write certainly did not happen. The monitor also looks
//! every [`CHECK_EVERY`], so health turns NOT_SERVING (and back) without waiting for a write.
//!
//! **sled 0.34 cannot always recover in place.** A value written out of line (a leaf page over
//! ~128 KiB, which large pipeline specs make) goes to a file of its own; when that write fails,
//! sled leaves the log reservation it took unfinished, and every later flush of that `Db` waits
//! for it forever (and holds sled's process-wide lock while waiting). So every step of the reopen
//! is bounded: a flusher or an in-flight call that does not finish, or a probe flush that does
//! not return, means the `Db` is **wedged**. The store then keeps serving reads from it (it is
//! never dropped or flushed again: both would hang), refuses writes with a message saying a
//! restart is needed, and stays NOT_SERVING; acknowledged writes are on disk and a restart
//! recovers them. The reserve, counted together with the writes in flight
//! ([`Health::claim`]), is what keeps the disk from filling under sled in the first place.
//!
//! Acknowledged writes are never lost: a write is acknowledged only after its flush succeeded.
//! A write whose flush failed is answered `disk full` and not acknowledged; a flush can fail half
//! way, so such a write may still be found after the reopen (as after a crash before the
//! answer). The change feed follows the store: changes of writes that did reach the disk are
//! published after the reopen, in order, and sequence numbers continue after the highest ever
//! assigned, so none is reused.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{DataDirOptions, Inner};
use crate::error::{Error, Result};
use crate::store::Writable;
use crate::store::feed::{Change, ChangeFeed};

/// The ballast file in the data dir, deleted when the disk is full so the store can reopen.
pub const BALLAST_FILE: &str = "runledger-ballast";
/// How often the monitor looks at free space (and retries a reopen).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Free space wanted beyond the reserve and the ballast before writes resume after a failure.
const HEADROOM: u64 = 1024 * 1024;
/// Time after a storage failure before writes are tried again (a failing disk is not hammered).
const BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for in-flight calls on the old `Db` (and for sled to let go of its lock); a
/// step that takes longer means the `Db` is wedged.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// Prefix of the messages of storage errors other than a full disk.
const STORAGE_ERROR: &str = "storage error";

/// A sled error as the store's error: a full disk or quota is StorageFull, any other IO error
/// Unavailable (both mean the store may need a reopen), the rest Internal.
pub(super) fn classify(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) if is_full(&io) => {
            Error::StorageFull(format!("disk full: {}", full_cause(&io)))
        }
        sled::Error::Io(io) => Error::Unavailable(format!("{STORAGE_ERROR}: {io}")),
        other => Error::Internal(format!("{STORAGE_ERROR}: {other}")),
    }
}

/// The error of a group-commit flush that failed: the writes it covered are not acknowledged.
pub(super) fn unflushed(e: sled::Error) -> Error {
    let cause = match &e {
        sled::Error::Io(io) if is_full(io) => full_cause(io).to_owned(),
        sled::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    let what = format!(
        "the write could not be flushed to disk ({cause}) and is not acknowledged; it may still \
         be found once the store has recovered, so read it back before retrying a create \
         without a run_id"
    );
    match classify(e) {
        Error::StorageFull(_) => Error::StorageFull(format!("disk full: {what}")),
        _ => Error::Unavailable(format!("{STORAGE_ERROR}: {what}")),
    }
}

/// Whether an error means the `Db` met a storage failure (and needs reopening).
fn is_storage_failure(e: &Error) -> bool {
    match e {
        Error::StorageFull(_) => true,
        Error::Unavailable(m) => m.starts_with(STORAGE_ERROR),
        _ => false,
    }
}

fn is_full(e: &io::Error) -> bool {
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return true;
    }
    // sled hands its sticky error out as a copy that keeps the kind, not the OS code.
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// What a full-disk error says (sled's sticky copy of it prints as a debug dump).
fn full_cause(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::QuotaExceeded || e.to_string().contains("quota") {
        "disk quota exceeded"
    } else {
        "no space left on the device"
    }
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: statvfs writes only into the zeroed struct we pass; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(u64::MAX)
    }
}

/// Whether the store takes writes, and what the monitor should do next.
#[derive(Debug, Clone)]
enum State {
    Writable,
    /// Free space is below the reserve (nothing failed).
    BelowReserve {
        free: u64,
    },
    /// A storage operation failed; `reopened` once the store was opened again.
    Failed {
        full: bool,
        cause: String,
        at: Instant,
        reopened: bool,
    },
    /// The failed `Db` cannot be flushed or closed any more: reads only, until a restart.
    Wedged {
        full: bool,
        cause: String,
    },
    Closed,
}

/// The store's write health, shared by the writers, the flusher and the monitor.
pub(super) struct Health {
    dir: PathBuf,
    reserve: u64,
    ballast: u64,
    state: Mutex<State>,
    /// Reads the free space of the data dir's filesystem ([`free_bytes`]; tests give their own).
    free_space: fn(&Path) -> io::Result<u64>,
    /// Bytes the writes in flight may still add to the disk (see [`Health::claim`]).
    in_flight: std::sync::atomic::AtomicU64,
    /// Wakes the monitor early (a failure, shutdown).
    wake: Condvar,
    writable: watch::Sender<Writable>,
}

impl Health {
    pub(super) fn new(dir: &Path, options: &DataDirOptions) -> Arc<Health> {
        Arc::new(Health {
            dir: dir.to_path_buf(),
            reserve: options.min_free_bytes,
            ballast: options.ballast_bytes,
            state: Mutex::new(State::Writable),
            free_space: free_bytes,
            in_flight: Default::default(),
            wake: Condvar::new(),
            writable: watch::Sender::new(Writable::Yes),
        })
    }

    /// Free bytes on the data dir's filesystem (as much as can be, when it cannot be read).
    fn free(&self) -> u64 {
        (self.free_space)(&self.dir).unwrap_or(u64::MAX)
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Writable> {
        self.writable.subscribe()
    }

    fn set(&self, state: &mut MutexGuard<'_, State>, next: State) {
        **state = next;
        let writable = match self.refusal(state) {
            None => Writable::Yes,
            Some(error) => Writable::No(error),
        };
        let closing = matches!(**state, State::Closed);
        self.writable.send_if_modified(|current| {
            let changed = *current != writable;
            if changed && !closing {
                match &writable {
                    Writable::Yes => tracing::info!("the store takes writes again"),
                    Writable::No(e) => tracing::warn!(error = %e, "the store refuses writes"),
                }
            }
            if changed {
                *current = writable;
            }
            changed
        });
    }

    /// Why writes are refused in `state` (None: they are not).
    fn refusal(&self, state: &State) -> Option<Error> {
        const RESUME: &str = "reads keep working; writes resume by themselves once space is freed";
        match state {
            State::Writable => None,
            State::BelowReserve { free } => Some(Error::StorageFull(format!(
                "disk full: {} MiB free on the data directory's filesystem, below the {} MiB \
                 reserve (--min-free-disk-mb); the write was not applied. {RESUME}",
                free / (1024 * 1024),
                self.reserve / (1024 * 1024)
            ))),
            State::Failed {
                full: true, cause, ..
            } => Some(Error::StorageFull(format!(
                "disk full: writes are refused until space is freed on the data directory's \
                 filesystem (a write failed: {cause}); the write was not applied. {RESUME}"
            ))),
            State::Failed { cause, .. } => Some(Error::Unavailable(format!(
                "{STORAGE_ERROR}: writes are refused until the store recovers (a write failed: \
                 {cause}); the write was not applied, reads keep working"
            ))),
            State::Wedged { full, cause } => {
                let what = if *full { "disk full" } else { STORAGE_ERROR };
                let message = format!(
                    "{what}: writes are refused until runledger is restarted (a write failed: \
                     {cause}, and the embedded database cannot take writes again without a \
                     restart); the write was not applied. Reads keep working; every \
                     acknowledged write is on disk. Free space, then restart the server"
                );
                Some(if *full {
                    Error::StorageFull(message)
                } else {
                    Error::Unavailable(message)
                })
            }
            State::Closed => Some(Error::Unavailable("the store is closed".into())),
        }
    }

    /// Lets a write of about `bytes` go ahead, or refuses it before it is applied: after a
    /// storage failure, or when free space less what the writes in flight may still take would
    /// fall below the reserve. The claim counts the write as in flight until it is dropped
    /// (once the write is durable, or failed).
    pub(super) fn claim(self: &Arc<Self>, bytes: u64) -> Result<Claim> {
        use std::sync::atomic::Ordering;
        let mut state = lock(&self.state);
        if matches!(*state, State::Writable | State::BelowReserve { .. }) && self.reserve > 0 {
            let free = self.free();
            let pending = self.in_flight.load(Ordering::Acquire);
            let next = if free < self.reserve.saturating_add(pending).saturating_add(bytes) {
                State::BelowReserve { free }
            } else {
                State::Writable
            };
            if !matches!((&*state, &next), (State::Writable, State::Writable)) {
                self.set(&mut state, next);
            }
        }
        if let Some(error) = self.refusal(&state) {
            return Err(error);
        }
        self.in_flight.fetch_add(bytes, Ordering::AcqRel);
        Ok(Claim {
            health: self.clone(),
            bytes,
        })
    }

    /// The error writes get after a storage failure (None: no failure, perhaps below the
    /// reserve).
    pub(super) fn failure(&self) -> Option<Error> {
        let state = lock(&self.state);
        match &*state {
            State::Failed { .. } | State::Wedged { .. } => self.refusal(&state),
            _ => None,
        }
    }

    /// Whether the store is wedged (see the module docs): nothing may flush it any more.
    pub(super) fn is_wedged(&self) -> bool {
        matches!(*lock(&self.state), State::Wedged { .. })
    }

    /// Records a storage failure (from a write, a flush or a read) and wakes the monitor to
    /// reopen the store. Errors that are not storage failures are ignored.
    pub(super) fn failed(&self, error: &Error) {
        if !is_storage_failure(error) {
            return;
        }
        let mut state = lock(&self.state);
        if matches!(
            *state,
            State::Closed
                | State::Wedged { .. }
                | State::Failed {
                    reopened: false,
                    ..
                }
        ) {
            return;
        }
        tracing::error!(error = %error, "the store met a storage error; reopening it");
        let next = State::Failed {
            full: matches!(error, Error::StorageFull(_)),
            cause: error.message().to_owned(),
            at: Instant::now(),
            reopened: false,
        };
        self.set(&mut state, next);
        self.wake.notify_all();
    }

    pub(super) fn close(&self) {
        let mut state = lock(&self.state);
        self.set(&mut state, State::Closed);
        self.wake.notify_all();
    }

    fn ballast_path(&self) -> PathBuf {
        self.dir.join(BALLAST_FILE)
    }

    fn has_ballast(&self) -> bool {
        self.ballast == 0
            || std::fs::metadata(self.ballast_path()).is_ok_and(|m| m.len() >= self.ballast)
    }

    /// Creates the ballast file when it is missing and there is room for it beyond the reserve.
    fn ensure_ballast(&self, free: u64) -> bool {
        if self.has_ballast() {
            return true;
        }
        if free < self.reserve.saturating_add(self.ballast) {
            return false;
        }
        match allocate(&self.ballast_path(), self.ballast) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the ballast file");
                let _ = std::fs::remove_file(self.ballast_path());
                false
            }
        }
    }

    fn remove_ballast(&self) {
        match std::fs::remove_file(self.ballast_path()) {
            Ok(()) => tracing::warn!("deleted the ballast file to make room for reopening"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete the ballast file"),
        }
    }
}

/// A write's share of the reserve while it is in flight (see [`Health::claim`]).
pub(super) struct Claim {
    health: Arc<Health>,
    bytes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.health
            .in_flight
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What a write may add to the disk, roughly: its records twice (sled's log and a rewritten
/// page) and a kilobyte per op for index entries and counters.
pub(super) fn estimate(write: &crate::store::Write) -> u64 {
    use crate::store::Op;
    use prost::Message;
    write
        .ops
        .iter()
        .map(|op| {
            let record = match op {
                Op::PutRun { run, .. } => run.encoded_len(),
                Op::PutExperiment { experiment, .. } => experiment.encoded_len(),
                _ => 0,
            };
            2 * record as u64 + 1024
        })
        .sum()
}

/// Allocates `bytes` for a new file at `path` (really allocated, not sparse).
fn allocate(path: &Path, bytes: u64) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(bytes).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: the descriptor is open for writing for the duration of the call.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => return file.sync_all(),
            libc::EOPNOTSUPP | libc::EINVAL => {}
            code => return Err(io::Error::from_raw_os_error(code)),
        }
    }
    let zeros = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

/// What a reopen carries over from the old `Db` until a new one is open.
#[derive(Default)]
pub(super) struct Carry {
    /// The highest change sequence number ever assigned.
    last_change: u64,
    /// Changes of writes whose flush failed, in order: published if they reached the disk.
    pending: Vec<(u64, Vec<Change>)>,
}

/// The store's current `Db` (replaced by a reopen), and what outlives it.
pub(super) struct Live {
    dir: PathBuf,
    recorder: Arc<super::backup::Recorder>,
    options: DataDirOptions,
    pub(super) feed: Arc<ChangeFeed>,
    pub(super) health: Arc<Health>,
    current: RwLock<Option<Arc<Inner>>>,
    /// Signalled when a reopen puts a `Db` in place.
    reopened: Condvar,
    reopening: Mutex<()>,
    carry: Mutex<Option<Carry>>,
    monitor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Live {
    /// The live store over `inner`, with its monitor thread started.
    pub(super) fn start(
        dir: &Path,
        options: DataDirOptions,
        feed: Arc<ChangeFeed>,
        health: Arc<Health>,
        recorder: Arc<super::backup::Recorder>,
        inner: Arc<Inner>,
    ) -> Result<Arc<Live>> {
        let free = free_bytes(dir).unwrap_or(u64::MAX);
        if !health.ensure_ballast(free) {
            tracing::warn!(
                "no room for the {} byte ballast file in {}: on a full disk the store may not be \
                 able to reopen until space is freed",
                health.ballast,
                dir.display()
            );
        }
        let live = Arc::new(Live {
            dir: dir.to_path_buf(),
            recorder,
            options,
            feed,
            health,
            current: RwLock::new(Some(inner)),
            reopened: Condvar::new(),
            reopening: Mutex::new(()),
            carry: Mutex::new(None),
            monitor: Mutex::new(None),
        });
        let weak = Arc::downgrade(&live);
        let health = live.health.clone();
        let handle = std::thread::Builder::new()
            .name("runledger-disk".into())
            .spawn(move || monitor(&weak, &health))
            .map_err(|e| Error::internal(format!("cannot start the store monitor thread: {e}")))?;
        *lock(&live.monitor) = Some(handle);
        let _ = live.health.claim(0);
        Ok(live)
    }

    /// The data directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current `Db`, without waiting: Unavailable while a reopen is in progress.
    pub(super) fn current(&self) -> Result<Arc<Inner>> {
        read(&self.current).clone().ok_or_else(reopening)
    }

    /// The current `Db`, waiting for a reopen in progress (on the store's own threads only).
    pub(super) fn current_or_wait(&self) -> Result<Arc<Inner>> {
        if let Some(inner) = read(&self.current).clone() {
            return Ok(inner);
        }
        let deadline = Instant::now() + REOPEN_WAIT;
        let mut guard = lock(&self.reopening);
        loop {
            if let Some(inner) = read(&self.current).clone() {
                return Ok(inner);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(reopening());
            }
            guard = self
                .reopened
                .wait_timeout(guard, left.min(CHECK_EVERY))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Runs `f` on the current `Db` (waiting for a reopen in progress); a storage failure it
    /// meets is reported. Only sled's own errors may reach here as StorageFull or "storage
    /// error": a refusal ([`Health::claim`]) must be made outside, or it would be taken for a
    /// failure.
    pub(super) fn with<T>(&self, f: impl FnOnce(&Arc<Inner>) -> Result<T>) -> Result<T> {
        let inner = self.current_or_wait()?;
        let result = f(&inner);
        if let Err(e) = &result {
            self.health.failed(e);
        }
        result
    }

    /// Makes everything durable and stops the background threads, for shutdown; later writes
    /// are refused. Every wait is bounded: a wedged `Db` is left unflushed (what was
    /// acknowledged is on disk already) and never dropped.
    pub(super) fn close(&self) -> Result<()> {
        let wedged = || {
            Error::Unavailable(
                "the store was not flushed on close: the embedded database is wedged after a \
                 failed write (see the log); acknowledged writes are on disk"
                    .into(),
            )
        };
        let was_wedged = self.health.is_wedged();
        self.health.close();
        if let Some(handle) = lock(&self.monitor).take() {
            let _ = handle.join();
        }
        // A reopen that was under way may have found the Db wedged meanwhile.
        if was_wedged || self.health.is_wedged() {
            return Err(wedged());
        }
        let inner = self.current_or_wait()?;
        let flushed = if inner.stop_flusher_within(REOPEN_WAIT) {
            flush_within(&inner.db, REOPEN_WAIT)
        } else {
            None
        };
        match flushed {
            Some(result) => result.map(drop).map_err(super::storage),
            None => {
                std::mem::forget(inner);
                Err(wedged())
            }
        }
    }

    /// One look: reopen after a failure, resume writes when there is room, notice a shrinking
    /// reserve.
    fn tick(&self) {
        let state = lock(&self.health.state).clone();
        let free = || self.health.free();
        match state {
            State::Failed {
                reopened: false,
                full,
                ..
            } => {
                if full {
                    self.health.remove_ballast();
                }
                match self.reopen() {
                    Ok(()) => {
                        let mut state = lock(&self.health.state);
                        if let State::Failed { reopened, .. } = &mut *state {
                            *reopened = true;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reopen the store yet; retrying"),
                }
            }
            State::Failed {
                reopened: true, at, ..
            } if at.elapsed() >= BACKOFF => {
                let free = free();
                let missing = if self.health.has_ballast() {
                    0
                } else {
                    self.health.ballast
                };
                let wanted = self.health.reserve + HEADROOM + missing;
                if free >= wanted && self.health.ensure_ballast(free) {
                    let mut state = lock(&self.health.state);
                    if matches!(*state, State::Failed { reopened: true, .. }) {
                        self.health.set(&mut state, State::Writable);
                    }
                }
            }
            State::Writable | State::BelowReserve { .. } => {
                let free = free();
                self.health.ensure_ballast(free);
                // A claim of nothing re-reads the free space and moves between the two states.
                let _ = self.health.claim(0);
            }
            State::Failed { .. } | State::Wedged { .. } | State::Closed => {}
        }
    }

    /// Replaces the broken `Db` with a newly opened one, or finds it wedged (see the module
    /// docs).
    fn reopen(&self) -> Result<()> {
        let _reopening = lock(&self.reopening);
        let old = write(&self.current).take();
        if let Some(old) = old {
            let error = self
                .health
                .refusal(&lock(&self.health.state))
                .unwrap_or_else(reopening);
            // Writers waiting for a flush are answered; the flusher stops.
            old.commit.abandon(error);
            let released = old.stop_flusher_within(REOPEN_WAIT)
                && until(REOPEN_WAIT, || Arc::strong_count(&old) == 1)
                && flushes_within(&old.db, REOPEN_WAIT);
            if !released {
                self.wedge(old);
                return Ok(());
            }
            // Nobody else holds it now: no write is half-applied, every change it assigned is
            // counted.
            let carry = Carry {
                last_change: lock(&old.writer).change,
                pending: old.commit.take_pending(),
            };
            drop(old);
            *lock(&self.carry) = Some(carry);
        }
        let carry = lock(&self.carry).take().unwrap_or_default();
        let opened =
            open_until_unlocked(&self.dir, &self.options).and_then(|(db, tree, on_disk)| {
                carry.publish_persisted(&self.feed, on_disk);
                Inner::start(
                    db,
                    tree,
                    on_disk.max(carry.last_change),
                    &self.options,
                    self.feed.clone(),
                    self.health.clone(),
                    self.recorder.clone(),
                )
            });
        match opened {
            Ok(inner) => {
                *write(&self.current) = Some(inner);
                self.reopened.notify_all();
                tracing::info!("the store was reopened");
                Ok(())
            }
            Err(e) => {
                *lock(&self.carry) = Some(carry);
                Err(e)
            }
        }
    }

    /// Keeps serving reads from a `Db` that can no longer be flushed (see the module docs).
    fn wedge(&self, old: Arc<Inner>) {
        // Dropping it would flush it, which cannot finish: it lives until the process ends.
        std::mem::forget(old.clone());
        *write(&self.current) = Some(old);
        self.reopened.notify_all();
        let mut state = lock(&self.health.state);
        let (full, cause) = match &*state {
            State::Failed { full, cause, .. } => (*full, cause.clone()),
            _ => (false, "unknown".to_owned()),
        };
        tracing::error!(
            cause,
            "the embedded database cannot finish a failed write and cannot be reopened in \
             place; reads keep working, writes need a restart of runledger (after freeing space)"
        );
        self.health.set(&mut state, State::Wedged { full, cause });
    }
}

/// Whether `holds` became true within `wait` (looked at every few milliseconds).
fn until(wait: Duration, mut holds: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !holds() {
        if started.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Whether a flush of `db` returns within `wait` (an error is fine: a failed `Db` says so at
/// once). A flush that does not return is left behind on its own thread.
fn flushes_within(db: &sled::Db, wait: Duration) -> bool {
    flush_within(db, wait).is_some()
}

/// A flush of `db`, unless it does not return within `wait` (None: it is left behind on its
/// own thread).
fn flush_within(db: &sled::Db, wait: Duration) -> Option<sled::Result<usize>> {
    let db = db.clone();
    let (done, returned) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runledger-flush-probe".into())
        .spawn(move || {
            let flushed = db.flush();
            // Let go before answering: the caller may drop the last handle next, and the data
            // dir's lock must be free when it has.
            drop(db);
            let _ = done.send(flushed);
        })
        .ok()?;
    returned.recv_timeout(wait).ok()
}

impl Inner {
    /// Stops the group-commit flusher, waiting at most `wait` for its thread (false: it is stuck
    /// in a flush, and is left behind).
    fn stop_flusher_within(&self, wait: Duration) -> bool {
        self.commit.shutdown();
        let Some(handle) = lock(&self.flusher).take() else {
            return true;
        };
        if until(wait, || handle.is_finished()) {
            let _ = handle.join();
            true
        } else {
            false
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // The monitor holds only a weak reference; it ends at its next look.
        self.health.close();
    }
}

fn reopening() -> Error {
    Error::Unavailable(
        "the store is being reopened after a storage error; retry in a moment".into(),
    )
}

/// The monitor thread: a look every CHECK_EVERY, or at once when woken by a failure.
fn monitor(live: &Weak<Live>, health: &Health) {
    loop {
        {
            let state = lock(&health.state);
            if matches!(*state, State::Closed) {
                return;
            }
            let idle = !matches!(
                *state,
                State::Failed {
                    reopened: false,
                    ..
                }
            );
            if idle {
                let (state, _) = health
                    .wake
                    .wait_timeout(state, CHECK_EVERY)
                    .unwrap_or_else(|p| p.into_inner());
                if matches!(*state, State::Closed) {
                    return;
                }
            }
        }
        let Some(live) = live.upgrade() else {
            return;
        };
        live.tick();
        if matches!(
            *lock(&health.state),
            State::Failed {
                reopened: false,
                ..
            }
        ) {
            // A reopen that failed is retried at the next look, not in a loop.
            let state = lock(&health.state);
            let _ = health.wake.wait_timeout(state, CHECK_EVERY);
        }
    }
}

impl Carry {
    /// Publishes, in order, the carried changes that reached the disk (sequence number at most
    /// `on_disk`); the rest never happened.
    pub(super) fn publish_persisted(&self, feed: &ChangeFeed, on_disk: u64) {
        let published = feed.last_seq();
        for (_, changes) in &self.pending {
            let persisted: Vec<Change> = changes
                .iter()
                .filter(|c| c.seq > published && c.seq <= on_disk)
                .cloned()
                .collect();
            if !persisted.is_empty() {
                tracing::warn!(
                    changes = persisted.len(),
                    "writes whose flush failed reached the disk; publishing their changes"
                );
                feed.publish(persisted);
            }
        }
        if on_disk < published {
            tracing::error!(
                lost = published - on_disk,
                "changes acknowledged before they were durable (--durability buffered) were lost \
                 with the failed flush"
            );
        }
    }
}

/// Opens sled again once the old handle has let go of the data dir's lock (its IO threads may
/// hold it a moment after the drop).
fn open_until_unlocked(
    dir: &Path,
    options: &DataDirOptions,
) -> Result<(sled::Db, sled::Tree, u64)> {
    let started = Instant::now();
    loop {
        match super::open_sled(dir, options) {
            Err(e)
                if e.message().contains("could not acquire lock")
                    && started.elapsed() < REOPEN_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_storage_full_and_other_io_errors_are_unavailable() {
        let full = classify(sled::Error::Io(io::Error::from_raw_os_error(28)));
        assert!(matches!(&full, Error::StorageFull(m) if m.starts_with("disk full: ")));
        // sled's sticky copy keeps only the kind.
        let copied = classify(sled::Error::Io(io::Error::new(
            io::ErrorKind::StorageFull,
            "Os { code: 28 }",
        )));
        assert!(matches!(copied, Error::StorageFull(_)));
        let eio = classify(sled::Error::Io(io::Error::from_raw_os_error(5)));
        assert!(is_storage_failure(&eio), "{eio:?}");
        assert!(matches!(eio, Error::Unavailable(_)));
        let bug = classify(sled::Error::Unsupported("x".into()));
        assert!(!is_storage_failure(&bug));
        let flush = unflushed(sled::Error::Io(io::Error::from_raw_os_error(28)));
        assert!(
            matches!(&flush, Error::StorageFull(m) if m.contains("not acknowledged")),
            "{flush:?}"
        );
    }

    #[test]
    fn a_failure_refuses_writes_until_resumed_and_tells_the_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let options = DataDirOptions {
            min_free_bytes: 0,
            ballast_bytes: 0,
            ..Default::default()
        };
        let health = Health::new(dir.path(), &options);
        let mut watching = health.subscribe();
        assert!(health.claim(10).is_ok());
        health.failed(&Error::internal("not a storage failure"));
        assert!(health.claim(10).is_ok());
        health.failed(&classify(sled::Error::Io(io::Error::from_raw_os_error(28))));
        let refused = health.claim(10).err().unwrap();
        assert!(
            matches!(&refused, Error::StorageFull(m) if m.contains("not applied")),
            "{refused:?}"
        );
        assert!(watching.has_changed().unwrap());
        assert!(matches!(
            &*watching.borrow_and_update(),
            Writable::No(Error::StorageFull(_))
        ));
        let mut state = lock(&health.state);
        health.set(&mut state, State::Writable);
        drop(state);
        assert!(health.claim(10).is_ok());
        assert_eq!(*watching.borrow_and_update(), Writable::Yes);
    }

    #[test]
    fn below_the_reserve_writes_are_refused_before_they_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let options = DataDirOptions {
            min_free_bytes: u64::MAX,
            ballast_bytes: 0,
            ..Default::default()
        };
        let health = Health::new(dir.path(), &options);
        let refused = health.claim(10).err().unwrap();
        assert!(
            matches!(&refused, Error::StorageFull(m) if m.contains("--min-free-disk-mb")),
            "{refused:?}"
        );
    }

    #[test]
    fn writes_in_flight_count_against_the_reserve_until_they_are_done() {
        let options = DataDirOptions {
            // A filesystem with 100 MiB free: room for one 30 MiB write beyond 60, not two.
            min_free_bytes: 60 * 1024 * 1024,
            ballast_bytes: 0,
            ..Default::default()
        };
        let mut health = Health::new(Path::new("."), &options);
        Arc::get_mut(&mut health).unwrap().free_space = |_| Ok(100 * 1024 * 1024);
        let first = health
            .claim(30 * 1024 * 1024)
            .expect("the first write fits");
        let second = health.claim(30 * 1024 * 1024);
        assert!(second.is_err(), "two would cross the reserve");
        drop(first);
        let third = health.claim(30 * 1024 * 1024);
        assert!(third.is_ok(), "once the first is done");
    }

    #[test]
    fn the_ballast_is_allocated_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let options = DataDirOptions {
            min_free_bytes: 0,
            ballast_bytes: 256 * 1024,
            ..Default::default()
        };
        let health = Health::new(dir.path(), &options);
        assert!(!health.has_ballast());
        assert!(health.ensure_ballast(u64::MAX));
        assert_eq!(
            std::fs::metadata(dir.path().join(BALLAST_FILE))
                .unwrap()
                .len(),
            256 * 1024
        );
        health.remove_ballast();
        assert!(!health.has_ballast());
    }
}
