//! Online backup: a consistent copy of the store, as it was at one instant, written into a new
//! sled data directory while the store keeps serving.
//!
//! sled has no snapshots, and an iterator sees writes made while it runs. So the backup takes its
//! point in time T0 under the writer lock (no write is half-applied) and from then on every write
//! first records, under the same lock, the values its keys had before it ([`Recorder`]); then the
//! whole tree is copied without any lock. Whatever the copy saw of later writes is undone at the
//! end: the recorded values (or absences) of every key changed since T0 are written over the
//! copy, which is then exactly the store at T0. Writers wait for the writer lock only twice, for
//! a moment; a write during the backup costs a read of its keys' old values. The copy is checked
//! (`runledger check`'s scan) before the backup reports success.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::reopen::Live;
use super::{Inner, TREE, WriterState, check, lock, sled_config, storage};
use crate::error::{Error, Result};
use crate::store::BackupProgress;

/// Keys copied per batch into the backup, and the most bytes per batch.
const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The values keys had at the backup's point in time, for every key written since (None: the
/// key did not exist). Writers call [`Recorder::before_write`] under the writer lock.
#[derive(Default)]
pub(super) struct Recorder {
    /// A backup is running (read without the lock on every write).
    running: AtomicBool,
    images: Mutex<Option<HashMap<Vec<u8>, Option<sled::IVec>>>>,
}

impl Recorder {
    /// Records what `keys` hold before a write changes them, if a backup is running (only the
    /// first change of a key since the backup began matters). Call under the writer lock.
    pub(super) fn before_write<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        read: impl Fn(&[u8]) -> Result<Option<sled::IVec>>,
    ) -> Result<()> {
        if !self.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut images = lock(&self.images);
        let Some(images) = images.as_mut() else {
            return Ok(());
        };
        for key in keys {
            if !images.contains_key(key) {
                images.insert(key.to_vec(), read(key)?);
            }
        }
        Ok(())
    }

    /// Starts recording: the backup's point in time. One backup at a time.
    fn begin<'a>(&'a self, writer: &Mutex<WriterState>) -> Result<Recording<'a>> {
        let _writes = lock(writer);
        let mut images = lock(&self.images);
        if images.is_some() {
            return Err(Error::FailedPrecondition(
                "another backup is running; one runs at a time".into(),
            ));
        }
        *images = Some(HashMap::new());
        self.running.store(true, Ordering::Release);
        Ok(Recording { recorder: self })
    }
}

/// A running recording; dropping it (an abandoned backup) stops it.
struct Recording<'a> {
    recorder: &'a Recorder,
}

impl Recording<'_> {
    /// Stops recording and hands over what was recorded.
    fn finish(self, writer: &Mutex<WriterState>) -> HashMap<Vec<u8>, Option<sled::IVec>> {
        let _writes = lock(writer);
        self.take()
    }

    fn take(&self) -> HashMap<Vec<u8>, Option<sled::IVec>> {
        self.recorder.running.store(false, Ordering::Release);
        lock(&self.recorder.images).take().unwrap_or_default()
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        self.take();
    }
}

/// Backs the store up into `to` (see the module docs), reporting on `progress`. What it wrote is
/// removed when it fails or is abandoned (every receiver of `progress` gone).
pub(super) fn run(
    live: &Live,
    to: &Path,
    progress: &watch::Sender<BackupProgress>,
) -> Result<BackupProgress> {
    let inner = live.current_or_wait()?;
    let created = prepare(to, live.dir())?;
    let copied = copy(live, &inner, to, progress);
    if copied.is_err() {
        remove(to, created);
    }
    copied
}

/// Makes `to` ready: a new directory, or an existing empty one outside the data directory.
/// Returns whether it was created.
fn prepare(to: &Path, data_dir: &Path) -> Result<bool> {
    let shown = to.display();
    if let Ok(data_dir) = data_dir.canonicalize()
        && nearest_existing(to).is_some_and(|p| p.starts_with(&data_dir))
    {
        return Err(Error::FailedPrecondition(format!(
            "the backup directory {shown} is inside the data directory {}; give one outside it",
            data_dir.display()
        )));
    }
    match std::fs::metadata(to) {
        Ok(meta) if !meta.is_dir() => Err(Error::FailedPrecondition(format!(
            "{shown} exists and is not a directory; give a new or an empty directory"
        ))),
        Ok(_) => {
            let mut entries = std::fs::read_dir(to).map_err(|e| {
                Error::FailedPrecondition(format!("cannot read the backup directory {shown}: {e}"))
            })?;
            if entries.next().is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "the backup directory {shown} exists and is not empty; give a new or an \
                     empty directory"
                )));
            }
            Ok(false)
        }
        Err(_) => {
            std::fs::create_dir_all(to).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "cannot create the backup directory {shown}: {e}"
                ))
            })?;
            Ok(true)
        }
    }
}

/// `path` resolved through its nearest existing ancestor (symbolic links followed).
fn nearest_existing(path: &Path) -> Option<std::path::PathBuf> {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(found) = at.canonicalize() {
            return Some(rest.iter().rev().fold(found, |p, part| p.join(part)));
        }
        rest.push(at.file_name()?.to_owned());
        at = at.parent()?;
    }
}

/// Removes what a failed backup wrote: the directory if it made it, else its contents.
fn remove(to: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(to);
    } else if let Ok(entries) = std::fs::read_dir(to) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// An error writing the backup (not the store's own error: it must not be taken for one).
fn destination(to: &Path, e: sled::Error) -> Error {
    match storage(e) {
        Error::StorageFull(cause) => Error::StorageFull(format!(
            "{cause}: the backup directory {}'s filesystem is full; the partial backup was \
             removed",
            to.display()
        )),
        other => Error::FailedPrecondition(format!(
            "cannot write the backup to {}: {}",
            to.display(),
            other.message()
        )),
    }
}

fn copy(
    live: &Live,
    inner: &Inner,
    to: &Path,
    progress: &watch::Sender<BackupProgress>,
) -> Result<BackupProgress> {
    let recording = inner.recorder.begin(&inner.writer)?;
    let db = sled_config(to)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .map_err(|e| destination(to, e))?;
    let tree = db.open_tree(TREE).map_err(|e| destination(to, e))?;
    let mut done = BackupProgress::default();
    progress.send_replace(done.clone());
    let mut batch = Batch::default();
    for entry in inner.tree.iter() {
        let (key, value) = entry.map_err(storage)?;
        done.keys += 1;
        done.bytes += (key.len() + value.len()) as u64;
        batch.insert(key, value);
        if batch.full() {
            batch.apply(&tree, to)?;
            if progress.is_closed() {
                return Err(Error::Aborted(
                    "the backup was abandoned (its caller went away); what it wrote was removed"
                        .into(),
                ));
            }
            if let Some(error) = live.health.failure() {
                return Err(Error::Unavailable(format!(
                    "the store met a storage error during the backup ({}); what it wrote was \
                     removed, try again",
                    error.message()
                )));
            }
            progress.send_replace(done.clone());
        }
    }
    batch.apply(&tree, to)?;
    // Undo what the copy saw of writes made after the point in time.
    let images = recording.finish(&inner.writer);
    done.changed_during = images.len() as u64;
    for (key, before) in images {
        match before {
            Some(value) => batch.insert(key.into(), value),
            None => batch.remove(key),
        }
        if batch.full() {
            batch.apply(&tree, to)?;
        }
    }
    batch.apply(&tree, to)?;
    db.flush().map_err(|e| destination(to, e))?;
    let report = check::Scan::run(&tree)?.report;
    if !report.is_consistent() {
        return Err(Error::Internal(format!(
            "the backup written to {} failed its check and was removed: {report}",
            to.display()
        )));
    }
    done.runs = report.runs;
    done.experiments = report.experiments;
    done.done = true;
    Ok(done)
}

/// Keys waiting to be written into the backup.
#[derive(Default)]
struct Batch {
    batch: sled::Batch,
    keys: usize,
    bytes: usize,
}

impl Batch {
    fn insert(&mut self, key: sled::IVec, value: sled::IVec) {
        self.keys += 1;
        self.bytes += key.len() + value.len();
        self.batch.insert(key, value);
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.keys += 1;
        self.batch.remove(key);
    }

    fn full(&self) -> bool {
        self.keys >= BATCH_KEYS || self.bytes >= BATCH_BYTES
    }

    fn apply(&mut self, tree: &sled::Tree, to: &Path) -> Result<()> {
        if self.keys == 0 {
            return Ok(());
        }
        let batch = std::mem::take(self);
        tree.apply_batch(batch.batch)
            .map_err(|e| destination(to, e))
    }
}

/// Whether the recorder is idle (for tests of the store).
#[cfg(test)]
fn idle(recorder: &Recorder) -> bool {
    !recorder.running.load(Ordering::Acquire) && lock(&recorder.images).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_value_of_a_key_since_the_start_is_kept_and_recording_ends_with_the_backup() {
        let recorder = Recorder::default();
        let writer = Mutex::new(WriterState {
            commit: 0,
            change: 0,
        });
        // Not running: nothing is read.
        recorder
            .before_write([&b"k"[..]], |_| panic!("read while idle"))
            .unwrap();
        let recording = recorder.begin(&writer).unwrap();
        assert!(recorder.begin(&writer).is_err(), "one backup at a time");
        recorder
            .before_write([&b"k"[..], &b"new"[..]], |k| {
                Ok((k == b"k").then(|| sled::IVec::from(&b"v0"[..])))
            })
            .unwrap();
        recorder
            .before_write([&b"k"[..]], |_| Ok(Some(sled::IVec::from(&b"v1"[..]))))
            .unwrap();
        let images = recording.finish(&writer);
        assert_eq!(images[&b"k"[..]], Some(sled::IVec::from(&b"v0"[..])));
        assert_eq!(images[&b"new"[..]], None);
        assert!(idle(&recorder));
        // An abandoned backup stops recording too.
        drop(recorder.begin(&writer).unwrap());
        assert!(idle(&recorder));
    }

    #[test]
    fn a_destination_must_be_new_or_empty_and_outside_the_data_directory() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(prepare(&root.path().join("new/deeper"), &data).unwrap());
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(!prepare(&empty, &data).unwrap());
        std::fs::write(empty.join("x"), b"x").unwrap();
        let err = prepare(&empty, &data).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("not empty")),
            "{err:?}"
        );
        let err = prepare(&empty.join("x"), &data).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("not a directory")),
            "{err:?}"
        );
        let err = prepare(&data.join("backup"), &data).unwrap_err();
        assert!(
            matches!(&err, Error::FailedPrecondition(m) if m.contains("inside the data")),
            "{err:?}"
        );
        remove(&empty, false);
        assert!(empty.exists() && std::fs::read_dir(&empty).unwrap().next().is_none());
    }
}
