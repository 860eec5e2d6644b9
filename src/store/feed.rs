//! The run change feed: every committed change of a run, numbered in commit order, published
//! once durable. Backends assign the sequence numbers and publish; watchers subscribe from the
//! live end or resume after a sequence number still inside the retained window.
//!
//! Writers never wait for watchers: live changes go through one bounded broadcast buffer, and a
//! subscriber that falls further behind than it holds is told so (and should list again). A
//! backend that learns it cannot publish some changes at all (they were gone before it read
//! them) says so with [`ChangeFeed::publish_gap`], which ends every subscription the same way.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::{self, error::RecvError};

use super::{ObserverSlot, StoredRun};
use crate::error::{Error, Result};
use crate::query::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// One committed change of one run.
#[derive(Debug, Clone)]
pub struct Change {
    /// Position in the feed: increases by one with every change, in commit order.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The run after the change (before it, for a deletion).
    pub run: StoredRun,
    /// The run's experiment and namespace, to tell watchers' scopes apart without decoding it.
    pub experiment_id: String,
    pub namespace: String,
}

impl Change {
    pub fn is_in(&self, scope: &Scope) -> bool {
        scope.covers(self.run.run_id(), &self.experiment_id, &self.namespace)
    }
}

pub struct ChangeFeed {
    state: Mutex<Retained>,
    live: broadcast::Sender<Item>,
    retain: usize,
    observer: ObserverSlot,
}

/// What the live buffer carries.
#[derive(Clone)]
enum Item {
    Change(Arc<Change>),
    /// Changes up to `next - 1` will never be published: subscribers missed `missed` of them.
    Gap {
        missed: u64,
    },
}

struct Retained {
    changes: VecDeque<Arc<Change>>,
    /// Sequence number of the last change published.
    last: u64,
}

impl ChangeFeed {
    /// A feed whose live buffer holds `buffer` changes, retaining the last `retain` for
    /// subscribers that resume; `last` is the sequence number published before this feed.
    pub fn new(buffer: usize, retain: usize, last: u64) -> ChangeFeed {
        ChangeFeed {
            state: Mutex::new(Retained {
                changes: VecDeque::new(),
                last,
            }),
            live: broadcast::Sender::new(buffer.max(1)),
            retain,
            observer: ObserverSlot::default(),
        }
    }

    /// Publishes changes, in commit order (their sequence numbers must increase).
    pub fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        let mut state = lock(&self.state);
        for change in changes {
            debug_assert!(change.seq > state.last, "changes published out of order");
            state.last = change.seq;
            let change = Arc::new(change);
            if self.retain > 0 {
                if state.changes.len() == self.retain {
                    state.changes.pop_front();
                }
                state.changes.push_back(change.clone());
            }
            // No receiver is fine: nobody watches.
            let _ = self.live.send(Item::Change(change));
        }
    }

    /// Says that the changes before `next` that were not published never will be: the feed
    /// continues at `next`, every current subscriber is ended (it missed changes), and no
    /// subscriber can resume from before `next`.
    pub fn publish_gap(&self, next: u64) {
        let mut state = lock(&self.state);
        if next <= state.last + 1 {
            return;
        }
        let missed = next - state.last - 1;
        state.last = next - 1;
        state.changes.clear();
        let _ = self.live.send(Item::Gap { missed });
    }

    /// Where the feed (and its backend) reports lagging watchers.
    pub fn observer(&self) -> &ObserverSlot {
        &self.observer
    }

    /// Sequence number of the last change published.
    pub fn last_seq(&self) -> u64 {
        lock(&self.state).last
    }

    /// Subscribes from the live end, or from just after `after`.
    pub fn subscribe(&self, after: Option<u64>) -> Result<Subscription> {
        // Under the lock, so that nothing is published between the replay and the live part.
        let state = lock(&self.state);
        let live = self.live.subscribe();
        let replay = match after {
            None => VecDeque::new(),
            Some(after) if after > state.last => {
                return Err(Error::invalid(format!(
                    "resume point {after} is ahead of this server's last change {}; list the \
                     runs again, then watch from now",
                    state.last
                )));
            }
            Some(after) => {
                let oldest = state.changes.front().map_or(state.last + 1, |c| c.seq);
                if after + 1 < oldest {
                    return Err(Error::ResourceExhausted(format!(
                        "the changes after {after} are no longer retained (the oldest kept is \
                         {oldest}); list the runs again, then watch from now"
                    )));
                }
                state
                    .changes
                    .iter()
                    .filter(|c| c.seq > after)
                    .cloned()
                    .collect()
            }
        };
        Ok(Subscription {
            replay,
            live,
            observer: self.observer.clone(),
        })
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

/// A subscriber's view of the feed.
pub struct Subscription {
    replay: VecDeque<Arc<Change>>,
    live: broadcast::Receiver<Item>,
    observer: ObserverSlot,
}

impl Subscription {
    /// The next change; None when the feed is gone. After an error (the subscriber fell behind)
    /// the subscription is over.
    pub async fn next(&mut self) -> Option<Result<Arc<Change>>> {
        if let Some(change) = self.replay.pop_front() {
            return Some(Ok(change));
        }
        match self.live.recv().await {
            Ok(Item::Change(change)) => Some(Ok(change)),
            Ok(Item::Gap { missed }) => Some(Err(Error::ResourceExhausted(format!(
                "this watcher missed {missed} changes the server could not read in time and was \
                 stopped; list the runs again, then watch again"
            )))),
            Err(RecvError::Lagged(missed)) => {
                if let Some(observer) = self.observer.get() {
                    observer.watcher_lagged(missed);
                }
                Some(Err(Error::ResourceExhausted(format!(
                    "this watcher fell {missed} events behind and was stopped; list the runs again, \
                 then watch again"
                ))))
            }
            Err(RecvError::Closed) => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::store::Revision;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            kind: ChangeKind::Updated,
            run: StoredRun::new(
                format!("r{seq}"),
                Revision::new(bytes::Bytes::new()),
                bytes::Bytes::new(),
                None,
            ),
            experiment_id: String::new(),
            namespace: String::new(),
        }
    }

    fn seqs(sub: &mut Subscription) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(Some(Ok(c))) = sub.next().now_or_never() {
            out.push(c.seq);
        }
        out
    }

    #[test]
    fn a_subscriber_resumes_after_a_retained_change_without_gaps_or_repeats() {
        let feed = ChangeFeed::new(16, 4, 0);
        feed.publish((1..=6).map(change));
        let mut sub = feed.subscribe(Some(3)).unwrap();
        feed.publish([change(7)]);
        assert_eq!(seqs(&mut sub), vec![4, 5, 6, 7]);
        let mut live = feed.subscribe(None).unwrap();
        feed.publish([change(8)]);
        assert_eq!(seqs(&mut live), vec![8]);
        assert_eq!(
            seqs(&mut feed.subscribe(Some(8)).unwrap()),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_resume_point_outside_the_window_is_refused() {
        let feed = ChangeFeed::new(16, 2, 0);
        feed.publish((1..=5).map(change));
        let err = feed.subscribe(Some(2)).err().unwrap();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
        assert!(feed.subscribe(Some(3)).is_ok());
        let err = feed.subscribe(Some(9)).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn a_subscriber_that_falls_behind_the_buffer_is_told_so() {
        let feed = ChangeFeed::new(2, 0, 0);
        let mut sub = feed.subscribe(None).unwrap();
        feed.publish((1..=5).map(change));
        let first = sub.next().now_or_never().flatten().unwrap();
        assert!(matches!(first, Err(Error::ResourceExhausted(_))));
    }

    #[test]
    fn a_gap_ends_every_subscriber_and_blocks_resuming_before_it() {
        let feed = ChangeFeed::new(16, 8, 0);
        feed.publish((1..=3).map(change));
        let mut sub = feed.subscribe(None).unwrap();
        feed.publish_gap(7);
        assert!(matches!(
            sub.next().now_or_never().flatten(),
            Some(Err(Error::ResourceExhausted(_)))
        ));
        assert_eq!(feed.last_seq(), 6);
        let err = feed.subscribe(Some(3)).err().unwrap();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
        feed.publish([change(7)]);
        assert_eq!(seqs(&mut feed.subscribe(Some(6)).unwrap()), vec![7]);
        // A gap that skips nothing is no gap.
        let mut live = feed.subscribe(None).unwrap();
        feed.publish_gap(8);
        assert!(live.next().now_or_never().is_none());
    }

    #[derive(Default)]
    struct Lagged(std::sync::Mutex<Vec<u64>>);

    impl crate::store::StoreObserver for Lagged {
        fn flushed(&self, _writes: u64, _seconds: f64) {}
        fn watcher_lagged(&self, changes: u64) {
            self.0.lock().unwrap().push(changes);
        }
    }

    #[test]
    fn the_observer_learns_how_many_changes_a_lagging_watcher_missed() {
        let feed = ChangeFeed::new(2, 0, 0);
        let observer = Arc::new(Lagged::default());
        assert!(feed.observer().set(observer.clone()));
        assert!(
            !feed.observer().set(Arc::new(Lagged::default())),
            "set once"
        );
        let mut behind = feed.subscribe(None).unwrap();
        let mut keeping_up = feed.subscribe(None).unwrap();
        for seq in 1..=5 {
            feed.publish([change(seq)]);
            assert_eq!(seqs(&mut keeping_up), vec![seq]);
        }
        // The buffer holds the last 2 of 5: the slow one missed 3, the other none.
        assert!(matches!(
            behind.next().now_or_never().flatten(),
            Some(Err(Error::ResourceExhausted(_)))
        ));
        assert_eq!(*observer.0.lock().unwrap(), vec![3]);
    }
}
