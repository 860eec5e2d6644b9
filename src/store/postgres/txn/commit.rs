//! The end of a write: the derived data accumulated by the ops (experiments'
//! last_run_created_at, spec reference counts, scope counters), the change log append under
//! the single `change_seq` row, and COMMIT. Its statements are sent together, in this fixed
//! order, each part sorted, so that every writer takes these shared rows in one order and holds
//! them for about one round trip (see the module above).

use std::collections::BTreeMap;

use super::{CountKey, Pending, Txn};
use crate::error::{Error, Result};
use crate::store::Written;

impl Txn<'_> {
    /// Applies the derived data, appends the changes and commits, all sent at once (prepared
    /// first, so that they run in the order sent); the statements refuse, in SQL, a result
    /// that must not be (a counter below zero, a spec that is not stored), which makes the
    /// COMMIT behind them a rollback.
    pub(super) async fn commit(&mut self) -> Result<(Written, Option<u64>)> {
        let raise = self.prepare(RAISE_LAST_RUN).await?;
        let add_spec = self.prepare(ADD_SPEC_REFS).await?;
        let drop_spec = self.prepare(DROP_SPEC_REFS).await?;
        let count = self.prepare(COUNT).await?;
        let append = self.prepare(APPEND_CHANGES).await?;

        let raises = std::mem::take(&mut self.raises);
        let specs: Vec<([u8; 32], i64, Option<bytes::Bytes>)> = std::mem::take(&mut self.specs)
            .into_iter()
            .filter(|(_, (delta, _))| *delta != 0)
            .map(|(digest, (delta, bytes))| (digest, delta, bytes))
            .collect();
        let counts = Counts::of(std::mem::take(&mut self.counts));
        let changes = Changes::of(std::mem::take(&mut self.changes));

        let client = self.client;
        type Sent<'a> = futures::future::BoxFuture<
            'a,
            std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
        >;
        let mut sent: Vec<Sent<'_>> = Vec::new();
        for (experiment_id, (seconds, nanos)) in &raises {
            let raise = &raise;
            sent.push(Box::pin(async move {
                client.query(raise, &[experiment_id, seconds, nanos]).await
            }));
        }
        for (digest, delta, bytes) in &specs {
            let (add_spec, drop_spec) = (&add_spec, &drop_spec);
            sent.push(Box::pin(async move {
                let digest = &digest[..];
                match bytes {
                    Some(bytes) if *delta > 0 => {
                        client.query(add_spec, &[&digest, &&bytes[..], delta]).await
                    }
                    _ => client.query(drop_spec, &[&digest, delta]).await,
                }
            }));
        }
        if !counts.kinds.is_empty() {
            let (count, counts) = (&count, &counts);
            sent.push(Box::pin(async move {
                client.query(count, &counts.params()).await
            }));
        }
        let appended = changes.n > 0;
        if appended {
            let (append, changes) = (&append, &changes);
            sent.push(Box::pin(async move {
                client.query(append, &changes.params()).await
            }));
        }
        sent.push(Box::pin(async move {
            client.batch_execute("COMMIT").await.map(|()| Vec::new())
        }));
        // Every one runs to its answer, so that COMMIT's tells whether the transaction ended.
        let mut results = futures::future::join_all(sent).await;
        let committed = results.pop().unwrap_or_else(|| Ok(Vec::new()));
        self.ended = committed.is_ok();
        // The first failure is the cause; the statements after it failed because of it (and
        // COMMIT rolled back).
        if let Some(failed) = results.iter_mut().find(|r| r.is_err()) {
            let e = std::mem::replace(failed, Ok(Vec::new())).err();
            return Err(e.map_or_else(|| Error::internal("a failed statement"), |e| self.err(e)));
        }
        if let Err(e) = committed {
            return Err(match self.err(e) {
                Error::Unavailable(m) => Error::Unavailable(format!(
                    "{m} (while committing: the write may or may not have been applied)"
                )),
                other => other,
            });
        }
        let last = match results.last().filter(|_| appended) {
            Some(Ok(rows)) => Some(
                rows.first()
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .ok_or_else(|| Error::internal("the change_seq row is missing"))?,
            ),
            _ => None,
        };
        Ok((std::mem::take(&mut self.written), last))
    }

    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        self.client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.err(e))
    }
}

/// Raises an experiment's last_run_created_at ($1 id, $2 seconds, $3 nanos), never lowers it.
const RAISE_LAST_RUN: &str = "UPDATE experiments SET last_run_s = $2, last_run_ns = $3 \
     WHERE experiment_id = $1 AND (last_run_s, last_run_ns) < ($2, $3)";

/// Adds $3 references to spec $1 (bytes $2), storing it if it is new. Another writer may store
/// it meanwhile: the upsert settles either way.
const ADD_SPEC_REFS: &str = "INSERT INTO specs (digest, bytes, refs) VALUES ($1, $2, $3) \
     ON CONFLICT (digest) DO UPDATE SET refs = specs.refs + excluded.refs RETURNING refs";

/// Adds $2 (negative) references to spec $1, which must be stored.
const DROP_SPEC_REFS: &str = "WITH d AS (UPDATE specs SET refs = refs + $2 WHERE digest = $1 \
     RETURNING refs) \
     SELECT runledger_fail('a run names the spec ' || encode($1, 'hex') || ', which is not \
     stored: the store is inconsistent (run `runledger check --database-url ...`)') \
     WHERE NOT EXISTS (SELECT 1 FROM d)";

/// Adds deltas to counters (one row per counter, sorted, so writers lock them in one order);
/// none may go below zero.
const COUNT: &str = "WITH c AS (INSERT INTO counts (kind, key, state, storage_state, n) \
     SELECT * FROM unnest($1::\"char\"[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[]) \
     ON CONFLICT (kind, key, state, storage_state) DO UPDATE SET n = counts.n + excluded.n \
     RETURNING n) \
     SELECT runledger_fail('a counter would go below zero: the store''s counters are \
     inconsistent (run `runledger check --database-url ...`)') FROM c WHERE n < 0 LIMIT 1";

/// Numbers $1 changes after the log's last one and appends them, holding `change_seq` until
/// COMMIT (so the log's order is the commit order); NOTIFYs every replica's follower on commit.
/// Returns the last number.
const APPEND_CHANGES: &str = "WITH s AS (UPDATE change_seq SET last = last + $1 RETURNING last), \
     appended AS (INSERT INTO changes (seq, kind, run_id, experiment_id, namespace, revision, \
         record, spec_digest) \
       SELECT s.last - $1 + t.ord, t.kind, t.run_id, t.experiment_id, t.namespace, t.revision, \
         t.record, t.spec_digest \
       FROM s, unnest($2::int2[], $3::bytea[], $4::bytea[], $5::bytea[], $6::int8[], \
         $7::bytea[], $8::bytea[]) WITH ORDINALITY \
         AS t(kind, run_id, experiment_id, namespace, revision, record, spec_digest, ord)) \
     SELECT last, pg_notify($9, last::text) FROM s";

/// Counter deltas as the parameters of [`COUNT`].
struct Counts {
    kinds: Vec<i8>,
    keys: Vec<Vec<u8>>,
    states: Vec<Vec<u8>>,
    storages: Vec<Vec<u8>>,
    deltas: Vec<i64>,
}

impl Counts {
    fn of(counts: BTreeMap<CountKey, i64>) -> Counts {
        let mut out = Counts {
            kinds: Vec::new(),
            keys: Vec::new(),
            states: Vec::new(),
            storages: Vec::new(),
            deltas: Vec::new(),
        };
        for ((kind, key, state, storage), delta) in counts {
            if delta != 0 {
                out.kinds.push(kind);
                out.keys.push(key);
                out.states.push(state);
                out.storages.push(storage);
                out.deltas.push(delta);
            }
        }
        out
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.kinds,
            &self.keys,
            &self.states,
            &self.storages,
            &self.deltas,
        ]
    }
}

/// Pending changes as the parameters of [`APPEND_CHANGES`].
struct Changes {
    n: i64,
    kinds: Vec<i16>,
    ids: Vec<Vec<u8>>,
    experiments: Vec<Vec<u8>>,
    namespaces: Vec<Vec<u8>>,
    revisions: Vec<i64>,
    records: Vec<Vec<u8>>,
    digests: Vec<Option<Vec<u8>>>,
}

impl Changes {
    fn of(changes: Vec<Pending>) -> Changes {
        let mut out = Changes {
            n: changes.len() as i64,
            kinds: Vec::new(),
            ids: Vec::new(),
            experiments: Vec::new(),
            namespaces: Vec::new(),
            revisions: Vec::new(),
            records: Vec::new(),
            digests: Vec::new(),
        };
        for c in changes {
            out.kinds.push(c.kind);
            out.ids.push(c.run_id);
            out.experiments.push(c.experiment_id);
            out.namespaces.push(c.namespace);
            out.revisions.push(c.revision);
            out.records.push(c.record);
            out.digests.push(c.spec_digest);
        }
        out
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.n,
            &self.kinds,
            &self.ids,
            &self.experiments,
            &self.namespaces,
            &self.revisions,
            &self.records,
            &self.digests,
            &crate::store::postgres::changes::CHANNEL,
        ]
    }
}
