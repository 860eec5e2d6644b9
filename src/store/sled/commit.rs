//! Group commit. A write is applied to sled under the writer lock and gets a sequence number;
//! in durable mode it is acknowledged only once a flush that started after it has finished. One
//! flusher thread serves everyone: writers that arrive while a flush runs share the next one, so
//! N concurrent writers cost about one fsync, not N.
//!
//! Run changes (for WatchRuns) are queued with their write's number and published on the change
//! feed only once durable, in commit order, so a watcher never sees a change that a crash could
//! take back.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::reopen::{Health, unflushed};
use crate::error::{Error, Result};
use crate::store::feed::{Change, ChangeFeed};

/// Whether a write is acknowledged before or after it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fsync (group commit). The default.
    Durable,
    /// Acknowledge at once; sled flushes in the background every `flush_every_ms`.
    Buffered { flush_every_ms: u64 },
}

#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Every write up to this sequence number is on disk.
    durable: u64,
    /// Writes up to this number were in a flush that failed (or were abandoned), with the
    /// error their writers get.
    failed: Option<(u64, Error)>,
}

#[derive(Default)]
struct Requests {
    /// Highest sequence number a writer waits for.
    wanted: u64,
    /// Highest sequence number committed to sled (flushing now covers it).
    committed: u64,
    shutdown: bool,
    /// Changes waiting for their write to become durable.
    pending: VecDeque<(u64, Vec<Change>)>,
}

pub struct GroupCommit {
    mode: Durability,
    requests: Mutex<Requests>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
    feed: Arc<ChangeFeed>,
    /// Told when a flush fails (the store then refuses writes and reopens).
    health: Arc<Health>,
}

impl GroupCommit {
    /// Group commit publishing each write's changes on `feed` once durable.
    pub(super) fn new(mode: Durability, feed: Arc<ChangeFeed>, health: Arc<Health>) -> Arc<Self> {
        Arc::new(GroupCommit {
            mode,
            requests: Mutex::default(),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
            feed,
            health,
        })
    }

    /// Called under the writer lock right after sled applied write `seq`.
    pub fn committed(&self, seq: u64, events: Vec<Change>) {
        match self.mode {
            Durability::Buffered { .. } => self.publish(events),
            Durability::Durable => {
                let mut requests = lock(&self.requests);
                requests.committed = seq;
                if !events.is_empty() {
                    requests.pending.push_back((seq, events));
                }
            }
        }
    }

    /// Waits until write `seq` is durable (at once in buffered mode).
    pub async fn wait(&self, seq: u64) -> Result<()> {
        if self.mode != Durability::Durable {
            return Ok(());
        }
        {
            let mut requests = lock(&self.requests);
            // After shutdown the flusher may be gone: waiting would hang forever. (The server
            // closes the store only once every call has finished, so this is a safety net; the
            // final flush in `Store::close` still writes the change.)
            if requests.shutdown && self.handled() < seq {
                return Err(Error::Unavailable(
                    "the store is shutting down; the write was applied but is not known to be \
                     durable"
                        .into(),
                ));
            }
            if requests.wanted < seq {
                requests.wanted = seq;
                self.wake.notify_one();
            }
        }
        let mut rx = self.flushed.subscribe();
        let state = rx
            .wait_for(|f| f.durable >= seq || f.failed.as_ref().is_some_and(|(s, _)| *s >= seq))
            .await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        if state.durable >= seq {
            Ok(())
        } else {
            Err(state.failed.as_ref().map_or_else(
                || Error::internal("the write's flush failed"),
                |(_, e)| e.clone(),
            ))
        }
    }

    /// The flusher loop; runs on its own thread until `shutdown`.
    pub fn run_flusher(&self, db: &sled::Db) {
        loop {
            let (target, events) = {
                let mut requests = lock(&self.requests);
                loop {
                    if requests.wanted > self.handled() || requests.shutdown {
                        break;
                    }
                    requests = self.wake.wait(requests).unwrap_or_else(|p| p.into_inner());
                }
                if requests.shutdown && requests.wanted <= self.handled() {
                    return;
                }
                let target = requests.committed;
                let split = requests.pending.partition_point(|(s, _)| *s <= target);
                let events: Vec<_> = requests.pending.drain(..split).collect();
                (target, events)
            };
            let started = std::time::Instant::now();
            let flushed = db.flush();
            if let Some(observer) = self.feed.observer().get() {
                let writes = target.saturating_sub(self.handled());
                observer.flushed(writes, started.elapsed().as_secs_f64());
            }
            match flushed {
                Ok(_) => {
                    // Changes first, acknowledgements second: a client that subscribes after its
                    // write was acknowledged must not receive that write as news.
                    for (_, batch) in events {
                        self.publish(batch);
                    }
                    self.flushed
                        .send_modify(|f| f.durable = f.durable.max(target));
                }
                Err(e) => {
                    tracing::error!(error = %e, "flushing the store failed");
                    let error = unflushed(e);
                    self.health.failed(&error);
                    // Not published: these changes wait for the reopen to tell whether they
                    // reached the disk (kept in commit order, before the later writes').
                    let mut requests = lock(&self.requests);
                    for batch in events.into_iter().rev() {
                        requests.pending.push_front(batch);
                    }
                    drop(requests);
                    self.flushed
                        .send_modify(|f| f.failed = Some((target, error)));
                }
            }
        }
    }

    /// Highest sequence number whose flush has finished, successfully or not.
    fn handled(&self) -> u64 {
        let f = self.flushed.borrow();
        f.durable.max(f.failed.as_ref().map_or(0, |(s, _)| *s))
    }

    pub fn shutdown(&self) {
        lock(&self.requests).shutdown = true;
        self.wake.notify_all();
    }

    /// Gives up on every write not yet durable (the store is being reopened): their writers get
    /// `error`, and the flusher stops.
    pub(super) fn abandon(&self, error: Error) {
        let mut requests = lock(&self.requests);
        requests.shutdown = true;
        let last = requests.committed.max(requests.wanted);
        self.flushed.send_modify(|f| f.failed = Some((last, error)));
        self.wake.notify_all();
    }

    /// The changes of writes that never became durable, in commit order.
    pub(super) fn take_pending(&self) -> Vec<(u64, Vec<Change>)> {
        lock(&self.requests).pending.drain(..).collect()
    }

    fn publish(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            self.feed.publish(changes);
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data it guards
/// (sequence numbers, queues) is still consistent, so keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn feed() -> Arc<ChangeFeed> {
        Arc::new(ChangeFeed::new(8, 8, 0))
    }

    fn health() -> Arc<Health> {
        Health::new(std::path::Path::new("."), &Default::default())
    }

    #[test]
    fn a_wait_after_shutdown_answers_at_once_instead_of_hanging() {
        let commit = GroupCommit::new(Durability::Durable, feed(), health());
        commit.shutdown();
        commit.committed(1, Vec::new());
        let answer = commit.wait(1).now_or_never();
        assert!(
            matches!(answer, Some(Err(Error::Unavailable(_)))),
            "{answer:?}"
        );
    }

    #[test]
    fn buffered_writes_are_acknowledged_at_once() {
        let commit = GroupCommit::new(
            Durability::Buffered { flush_every_ms: 10 },
            feed(),
            health(),
        );
        commit.committed(1, Vec::new());
        assert_eq!(commit.wait(1).now_or_never(), Some(Ok(())));
    }

    #[test]
    fn abandoned_writes_get_the_error_and_keep_their_changes() {
        let commit = GroupCommit::new(Durability::Durable, feed(), health());
        commit.committed(1, Vec::new());
        commit.committed(2, Vec::new());
        commit.abandon(Error::StorageFull("disk full: x".into()));
        for seq in [1, 2] {
            let answer = commit.wait(seq).now_or_never();
            assert!(
                matches!(answer, Some(Err(Error::StorageFull(_)))),
                "{seq}: {answer:?}"
            );
        }
        assert!(commit.take_pending().is_empty());
    }
}
