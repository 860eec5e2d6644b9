//! WatchRuns across replicas: every replica follows the database's change log (the `changes`
//! table, numbered in commit order by [`super::txn`]) and republishes it on its own in-process
//! [`ChangeFeed`], which its watchers read.
//!
//! The follower holds a connection of its own with `LISTEN runledger_changes`: a commit that
//! appends changes NOTIFYs it, and it reads every row after the last one it published. It also
//! reads on a timer (the fallback poll: a notification can be lost with a dropped connection),
//! and at once when a write of this replica commits. When the database is unreachable it
//! reconnects with backoff and carries on from where it was, so nothing is missed while the
//! log still holds it. Rows it finds gone (pruned while it was away) end every current watch
//! with RESOURCE_EXHAUSTED, as a watcher that fell behind is told.
//!
//! Retention is bounded: every replica deletes rows more than `log_retain` behind the last one
//! from time to time, and the specs no run and no retained change holds.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_postgres::AsyncMessage;

use super::DatabaseUrl;
use super::error::from_db;
use super::{Shared, rows};
use crate::error::{Error, Result};
use crate::store::feed::{Change, ChangeKind};

/// The NOTIFY channel a commit with changes signals.
pub const CHANNEL: &str = "runledger_changes";

/// Rows read per query when catching up.
const BATCH: i64 = 500;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

const SELECT_CHANGES: &str = "SELECT c.seq, c.kind, c.run_id, c.experiment_id, c.namespace, \
     c.revision, c.record, c.spec_digest, s.bytes, pg_current_wal_insert_lsn()::text \
     FROM changes c LEFT JOIN specs s ON s.digest = c.spec_digest";

/// The last sequence number of the log, and its retained changes from `last - retain` on.
pub async fn tail(
    client: &tokio_postgres::Client,
    db: &DatabaseUrl,
    retain: usize,
) -> Result<(u64, Vec<Change>)> {
    let err = |e| from_db(db, e);
    let last: i64 = client
        .query_one("SELECT last FROM change_seq", &[])
        .await
        .map_err(err)?
        .get(0);
    let from = last.saturating_sub(retain as i64);
    let rows = client
        .query(
            &format!("{SELECT_CHANGES} WHERE c.seq > $1 AND c.seq <= $2 ORDER BY c.seq"),
            &[&from, &last],
        )
        .await
        .map_err(err)?;
    let changes = rows.iter().map(change).collect::<Result<Vec<_>>>()?;
    Ok((last as u64, changes))
}

fn change(row: &tokio_postgres::Row) -> Result<Change> {
    let seq: i64 = row.get(0);
    let kind = match row.get::<_, i16>(1) {
        super::txn::CREATED => ChangeKind::Created,
        super::txn::UPDATED => ChangeKind::Updated,
        super::txn::DELETED => ChangeKind::Deleted,
        other => {
            return Err(Error::DataLoss(format!(
                "change {seq} of the log has an unknown kind {other}"
            )));
        }
    };
    let digest: Option<Vec<u8>> = row.get(7);
    Ok(Change {
        seq: seq as u64,
        kind,
        run: rows::stored_run(
            rows::utf8(row.get(2), "run_id")?,
            row.get(5),
            row.get(6),
            digest.as_deref(),
            row.get(8),
        ),
        experiment_id: rows::utf8(row.get(3), "experiment_id")?,
        namespace: rows::utf8(row.get(4), "namespace")?,
    })
}

/// Follows the log until `stop` turns true.
pub async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    let mut down_since: Option<std::time::Instant> = None;
    let mut last_prune = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let session = session(&shared, &mut stop, &mut last_prune, &mut down_since);
        match session.await {
            Ok(()) => return,
            Err(e) => {
                if down_since.is_none() {
                    tracing::warn!(error = %e, "the change log follower lost the database; reconnecting");
                    down_since = Some(std::time::Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection's worth of following; Ok when stopped, Err when the connection failed.
async fn session(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    last_prune: &mut tokio::time::Instant,
    down_since: &mut Option<std::time::Instant>,
) -> Result<()> {
    let (client, mut connection) = shared.db.connect().await?;
    let notified = Arc::new(Notify::new());
    let driver = {
        let notified = notified.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // The connection is gone: wake the follower so its next read finds out.
            notified.notify_one();
        })
    };
    let _driver = AbortOnDrop(driver);
    // LISTEN before reading, so a commit between the read and the wait still wakes us.
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| from_db(&shared.db, e))?;
    let prepare = |sql: String| {
        let client = &client;
        async move {
            client
                .prepare(&sql)
                .await
                .map_err(|e| from_db(&shared.db, e))
        }
    };
    let statements = Statements {
        changes: prepare(format!(
            "{SELECT_CHANGES} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2"
        ))
        .await?,
        flushed: prepare(FLUSHED.to_owned()).await?,
    };
    loop {
        catch_up(shared, &client, &statements).await?;
        if let Some(since) = down_since.take() {
            tracing::info!(
                after_seconds = since.elapsed().as_secs_f64(),
                "the change log follower is connected again"
            );
        }
        if last_prune.elapsed() >= shared.options.prune_every {
            *last_prune = tokio::time::Instant::now();
            if let Err(e) = prune(shared).await {
                tracing::debug!(error = %e, "trimming the change log failed; trying later");
            }
        }
        tokio::select! {
            () = notified.notified() => {}
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// The follower's statements, prepared once per connection.
struct Statements {
    changes: tokio_postgres::Statement,
    flushed: tokio_postgres::Statement,
}

/// Whether the WAL is flushed up to $1 (an LSN as text).
const FLUSHED: &str = "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn";

/// Publishes every change after the last one published.
async fn catch_up(
    shared: &Shared,
    client: &tokio_postgres::Client,
    statements: &Statements,
) -> Result<()> {
    loop {
        let last = shared.feed.last_seq();
        let rows = client
            .query(&statements.changes, &[&(last as i64), &BATCH])
            .await
            .map_err(|e| from_db(&shared.db, e))?;
        let Some(read_at) = rows.last().map(|r| r.get::<_, String>(9)) else {
            return Ok(());
        };
        wait_flushed(shared, client, &statements.flushed, &read_at).await?;
        let mut changes = Vec::with_capacity(rows.len());
        let mut expected = last + 1;
        for row in &rows {
            let change = change(row)?;
            if change.seq != expected {
                // Pruned before this replica read them.
                shared.feed.publish(std::mem::take(&mut changes));
                shared.feed.publish_gap(change.seq);
                tracing::warn!(
                    missed = change.seq - expected,
                    "changes were pruned from the log before this replica read them; open \
                     watches were ended"
                );
            }
            expected = change.seq + 1;
            changes.push(change);
        }
        let full = rows.len() as i64 == BATCH;
        shared.feed.publish(changes);
        shared.published.send_replace(shared.feed.last_seq());
        if !full {
            return Ok(());
        }
    }
}

/// Waits until the WAL is flushed up to `lsn` (where it was when changes were read), so that
/// watchers hear of a change only once it is durable: its writer commits without waiting for
/// the flush and waits afterwards, so the flush is usually there or a moment away; if it is
/// not, the follower asks for one itself.
async fn wait_flushed(
    shared: &Shared,
    client: &tokio_postgres::Client,
    flushed: &tokio_postgres::Statement,
    lsn: &str,
) -> Result<()> {
    for pause_ms in [0, 2] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let flushed: bool = client
            .query_one(flushed, &[&lsn])
            .await
            .map_err(|e| from_db(&shared.db, e))?
            .get(0);
        if flushed {
            return Ok(());
        }
    }
    shared.durable(client).await
}

/// Deletes changes more than `log_retain` behind the last, then the specs nothing holds any
/// more. Several replicas doing it at once is harmless.
async fn prune(shared: &Shared) -> Result<()> {
    let mut client = shared.client().await?;
    let err = |e| from_db(&shared.db, e);
    client
        .execute(
            "DELETE FROM changes WHERE seq <= (SELECT last FROM change_seq) - $1",
            &[&(shared.options.log_retain as i64)],
        )
        .await
        .map_err(err)?;
    // REPEATABLE READ: a spec a concurrent write starts to use again (or names in a new
    // change) makes this fail with a serialization error instead of deleting it.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(err)?;
    tx.execute(
        "DELETE FROM specs s WHERE s.refs = 0 AND NOT EXISTS \
         (SELECT 1 FROM changes c WHERE c.spec_digest = s.digest)",
        &[],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
