//! The PostgreSQL backend: several stateless runledger processes (replicas) on one database.
//! The only code that knows PostgreSQL.
//!
//! Everything that must hold across replicas holds in the database: records and their
//! revisions (compare-and-set by row locks, see [`txn`]), unique names and the default
//! experiment of a namespace (unique keys), the page-token key (`settings`), counters, and the
//! change log WatchRuns follows ([`changes`]). A replica keeps only a connection pool, a
//! statement cache and its in-process copy of the change feed.
//!
//! Schema (created and upgraded by [`migrate`], embedded SQL in `migrations/`):
//!
//! | table | holds |
//! |---|---|
//! | `runs` | one row per run: hot fields as columns, `record` (the Run without its spec, protobuf), `spec_digest` |
//! | `specs` | each distinct pipeline spec once: SHA-256, bytes, reference count |
//! | `experiments` | one row per experiment: hot fields, `last_run_s/ns`, `record` (protobuf) |
//! | `default_experiments` | namespace → its default experiment |
//! | `catalog` | pipelines, pipeline versions, recurring runs: `kind`, hot fields, `record`, `spec_digest` ([`catalog`]) |
//! | `catalog_tags` | the tags of pipelines and versions, for `tags.KEY` filters |
//! | `leases` | the scheduler's lease: holder and expiry |
//! | `counts` | records per scope (and, for runs, per (state, storage_state)): total_size without COUNT |
//! | `changes`, `change_seq` | the change log, numbered in commit order |
//! | `settings` | the page-token signing key |
//! | `schema_migrations` | the versions applied |
//!
//! Writes are acknowledged once committed and durable: the pool's transactions commit with
//! `synchronous_commit = off` (so the rows every write takes last are not held through an
//! fsync), then each write waits for a flush that covers its commit ([`Shared::durable`]), one
//! many writers share. The change follower publishes only what such a flush covers. A database that cannot be reached makes calls fail with UNAVAILABLE naming it; the
//! pool opens new connections once it is back.

mod catalog;
mod changes;
mod check;
mod check_catalog;
pub mod connect;
mod error;
mod list;
pub mod migrate;
mod rows;
mod txn;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, OnceCell, watch};

pub use check::{CheckReport, check_database};
pub use connect::DatabaseUrl;
pub use migrate::{Migrated, migrate};

use self::catalog::CatalogKind;
use self::error::{from_db, from_pool};
use self::list::Table;
use super::feed::ChangeFeed;
use super::{RecurringRunRecord, Store, Stored, StoredRun, Subscription, Write, Written};
use crate::api::{Experiment, Pipeline, PipelineVersion};
use crate::error::{Error, Result};
use crate::query::filter::Filter;
use crate::query::{ListQuery, Page, Scope, Tally, TallyGroup};
use crate::wkt::Timestamp;

/// How a replica uses the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections this process holds (the change follower holds one more).
    pub pool_size: usize,
    /// Changes buffered for this replica's watchers; a watcher further behind is stopped.
    pub event_buffer: usize,
    /// Changes this replica keeps for watchers that resume after a sequence number.
    pub event_retain: usize,
    /// Changes the database's log keeps (at least `event_retain`): how far a replica that lost
    /// the database can fall behind and still deliver every change once it is back.
    pub log_retain: u64,
    /// How often the change follower reads the log when no notification woke it.
    pub poll_interval: Duration,
    /// How often the change log is trimmed to `log_retain` (and specs no run holds removed).
    pub prune_every: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            event_buffer: 1024,
            event_retain: 1024,
            log_retain: 10_000,
            poll_interval: Duration::from_secs(1),
            prune_every: Duration::from_secs(30),
        }
    }
}

/// The store on a PostgreSQL database.
pub struct PgStore {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the store's calls and its change follower share.
pub(crate) struct Shared {
    db: DatabaseUrl,
    pool: Pool,
    options: PostgresOptions,
    feed: Arc<ChangeFeed>,
    /// The last sequence number the follower published on `feed`.
    published: watch::Sender<u64>,
    /// Wakes the follower (a write of this replica committed changes).
    wake: Notify,
    token_key: OnceCell<Vec<u8>>,
    closed: AtomicBool,
}

/// A client from the pool, as the rest of the backend uses it.
type Client = deadpool_postgres::Object;

impl Shared {
    async fn client(&self) -> Result<Client> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable(format!(
                "the store on {} is closed (the server is shutting down)",
                self.db
            )));
        }
        self.pool.get().await.map_err(|e| from_pool(&self.db, e))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| from_db(&self.db, e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| from_db(&self.db, e))
    }

    /// See [`durable`].
    async fn durable(&self, client: &tokio_postgres::Client) -> Result<()> {
        durable(&self.db, client).await
    }

    async fn query_built(&self, sql: &list::Sql) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        client
            .query_typed(&sql.text, &sql.params())
            .await
            .map_err(|e| from_db(&self.db, e))
    }
}

/// Waits until every transaction committed so far, on any connection, is durable: the pool
/// commits without waiting for the WAL flush, and this commits one more transaction with
/// synchronous_commit on. Its commit record comes after all of theirs, so once it is flushed
/// (and replicated to synchronous standbys, when there are some) so are they. Concurrent
/// callers share flushes (PostgreSQL's group commit). PostgreSQL flushes at commit only for a
/// transaction that wrote WAL: the barrier writes an empty logical message (prefix
/// `runledger-durable`; logical decoding consumers ignore unknown ones).
async fn durable(db: &DatabaseUrl, client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit TO on; \
             SELECT pg_logical_emit_message(true, 'runledger-durable', ''); COMMIT",
        )
        .await
        .map_err(|e| from_db(db, e))
}

impl PgStore {
    /// Connects to the database at `url`, brings its schema up to date (under an advisory
    /// lock, so replicas starting together apply each migration once) and starts following
    /// its change log.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Arc<PgStore>> {
        let db = DatabaseUrl::parse(url)?;
        let migrated = migrate(&db).await?;
        if !migrated.applied.is_empty() {
            tracing::info!(database = %db, "{migrated}");
        }
        let pool = db.pool(options.pool_size)?;
        let options = PostgresOptions {
            log_retain: options.log_retain.max(options.event_retain as u64),
            ..options
        };
        // The log's newest changes, for watchers that resume: flushed first, since they may
        // have been committed without waiting for it.
        let (last, retained) = {
            let client = pool.get().await.map_err(|e| from_pool(&db, e))?;
            durable(&db, &client).await?;
            changes::tail(&client, &db, options.event_retain).await?
        };
        let feed = Arc::new(ChangeFeed::new(
            options.event_buffer,
            options.event_retain,
            retained.first().map_or(last, |c| c.seq - 1),
        ));
        feed.publish(retained);
        let shared = Shared {
            db,
            pool,
            options,
            feed,
            published: watch::channel(last).0,
            wake: Notify::new(),
            token_key: OnceCell::new(),
            closed: AtomicBool::new(false),
        };
        let shared = Arc::new(shared);
        let (stop, stopped) = watch::channel(false);
        let follower = tokio::spawn(changes::follow(shared.clone(), stopped));
        Ok(Arc::new(PgStore {
            shared,
            stop,
            follower: std::sync::Mutex::new(Some(follower)),
        }))
    }

    /// The scope's counters, with each group's state and storage_state as stored.
    async fn counters(
        &self,
        table: Table,
        scope: &Scope,
    ) -> Result<Vec<(TallyGroup, list::Group)>> {
        let ((kind, key), with_state) = match table {
            Table::Runs => (run_counter(scope)?, true),
            Table::Experiments => (experiment_counter(scope)?, false),
            Table::Catalog(code) => {
                let (kind, key) = catalog::scope_counter(code, scope)?;
                ((kind as i8, key), false)
            }
        };
        let rows = self
            .shared
            .query(
                "SELECT state, storage_state, n FROM counts \
                 WHERE kind = $1 AND key = $2 AND n > 0",
                &[&kind, &key],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let (state, storage_state): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
                let group = TallyGroup {
                    state: with_state.then(|| rows::state_number(&state)),
                    storage_state: rows::storage_number(&storage_state),
                    count: row.get::<_, i64>(2) as u64,
                };
                (group, (state, storage_state))
            })
            .collect())
    }

    /// total_size: from the counters when they tell it, else a COUNT of scope and filter.
    async fn count(
        &self,
        table: Table,
        scope: &Scope,
        filter: &Filter,
        tally: &Tally,
    ) -> Result<u64> {
        if let Some(total) = filter.count_from(tally) {
            return Ok(total);
        }
        let sql = list::count(table, scope, filter)?;
        let rows = self.shared.query_built(&sql).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn list<T>(
        &self,
        table: Table,
        query: &ListQuery,
        read: impl Fn(&tokio_postgres::Row) -> Result<(String, T)>,
    ) -> Result<Page<T>> {
        let total = |counters: Vec<(TallyGroup, list::Group)>| async move {
            let tally = Tally {
                groups: counters.into_iter().map(|(group, _)| group).collect(),
            };
            self.count(table, &query.scope, &query.filter, &tally).await
        };
        let ((sql, sort_at), counters) = if table == Table::Runs && query.filter.tests_group() {
            // The page depends on which groups the scope has: counters first.
            let counters = self.counters(table, &query.scope).await?;
            let groups: Option<Vec<list::Group>> =
                counters.iter().all(|(g, _)| g.state.is_some()).then(|| {
                    counters
                        .iter()
                        .filter(|(group, _)| query.filter.admits_group(group))
                        .map(|(_, stored)| stored.clone())
                        .collect()
                });
            (list::page(table, query, groups.as_deref())?, Some(counters))
        } else {
            (list::page(table, query, None)?, None)
        };
        let (rows, total_size) = tokio::try_join!(self.shared.query_built(&sql), async {
            match counters {
                Some(counters) => total(counters).await,
                None => total(self.counters(table, &query.scope).await?).await,
            }
        })?;
        let more = rows.len() > query.page_size;
        let mut items = Vec::with_capacity(rows.len().min(query.page_size));
        let mut next = None;
        for row in rows.iter().take(query.page_size) {
            let (id, item) = read(row)?;
            if more && items.len() + 1 == query.page_size {
                next = Some(list::position(table, query, row, sort_at, &id)?);
            }
            items.push(item);
        }
        Ok(Page {
            items,
            total_size,
            next,
        })
    }
}

fn run_counter(scope: &Scope) -> Result<(i8, Vec<u8>)> {
    Ok(match scope {
        Scope::All => (b'a' as i8, Vec::new()),
        Scope::Experiment(id) => (b'x' as i8, id.as_bytes().to_vec()),
        Scope::Namespace(ns) => (b'n' as i8, ns.as_bytes().to_vec()),
        Scope::Run(_) | Scope::Pipeline(_) => {
            return Err(Error::internal(format!(
                "runs are not counted per {scope:?}"
            )));
        }
    })
}

fn experiment_counter(scope: &Scope) -> Result<(i8, Vec<u8>)> {
    Ok(match scope {
        Scope::All => (b'e' as i8, Vec::new()),
        Scope::Namespace(ns) => (b'p' as i8, ns.as_bytes().to_vec()),
        other => {
            return Err(Error::internal(format!(
                "experiments are not counted per {other:?}"
            )));
        }
    })
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn run(&self, run_id: &str) -> Result<Option<StoredRun>> {
        let sql = format!(
            "SELECT {} FROM runs r \
             WHERE r.run_id = $1",
            rows::RUN_READ_COLUMNS
        );
        let rows = self.shared.query(&sql, &[&run_id.as_bytes()]).await?;
        rows.first().map(rows::run_from_row).transpose()
    }

    async fn experiment(&self, experiment_id: &str) -> Result<Option<Stored<Experiment>>> {
        let sql = format!(
            "SELECT {} FROM experiments WHERE experiment_id = $1",
            rows::EXPERIMENT_READ_COLUMNS
        );
        let rows = self
            .shared
            .query(&sql, &[&experiment_id.as_bytes()])
            .await?;
        rows.first().map(rows::experiment_from_row).transpose()
    }

    async fn experiment_named(
        &self,
        namespace: &str,
        display_name: &str,
    ) -> Result<Option<Stored<Experiment>>> {
        let sql = format!(
            "SELECT {} FROM experiments WHERE namespace = $1 AND display_name = $2",
            rows::EXPERIMENT_READ_COLUMNS
        );
        let rows = self
            .shared
            .query(&sql, &[&namespace.as_bytes(), &display_name.as_bytes()])
            .await?;
        rows.first().map(rows::experiment_from_row).transpose()
    }

    async fn default_experiment(&self, namespace: &str) -> Result<Option<String>> {
        let rows = self
            .shared
            .query(
                "SELECT experiment_id FROM default_experiments WHERE namespace = $1",
                &[&namespace.as_bytes()],
            )
            .await?;
        rows.first()
            .map(|r| rows::utf8(r.get(0), "experiment_id"))
            .transpose()
    }

    async fn list_runs(&self, query: ListQuery) -> Result<Page<StoredRun>> {
        self.list(Table::Runs, &query, |row| {
            let run = rows::run_from_row(row)?;
            Ok((run.run_id().to_owned(), run))
        })
        .await
    }

    async fn list_experiments(&self, query: ListQuery) -> Result<Page<Stored<Experiment>>> {
        self.list(Table::Experiments, &query, |row| {
            let e = rows::experiment_from_row(row)?;
            Ok((e.value.experiment_id.clone(), e))
        })
        .await
    }

    async fn run_tally(&self, scope: &Scope) -> Result<Tally> {
        let counters = self.counters(Table::Runs, scope).await?;
        Ok(Tally {
            groups: counters.into_iter().map(|(group, _)| group).collect(),
        })
    }

    async fn namespaces(&self) -> Result<Vec<String>> {
        let rows = self
            .shared
            .query(
                "SELECT DISTINCT key FROM counts WHERE kind = 'n' AND n > 0 ORDER BY key",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| rows::utf8(r.get(0), "namespace"))
            .collect()
    }

    async fn write(&self, write: Write) -> Result<Written> {
        let (written, last) = txn::apply(&self.shared, write).await?;
        if let Some(last) = last {
            // Acknowledge once this replica's own watchers have the change too, so a client
            // that writes and then watches here never sees its own write arrive late.
            self.shared.wake.notify_one();
            let mut published = self.shared.published.subscribe();
            let caught_up = published.wait_for(|p| *p >= last);
            if tokio::time::timeout(Duration::from_secs(2), caught_up)
                .await
                .is_err()
            {
                tracing::debug!(
                    seq = last,
                    "the change follower is behind; acknowledging anyway"
                );
            }
        }
        Ok(written)
    }

    async fn settle(&self) -> Result<()> {
        // A read may have seen a commit whose WAL is not flushed yet.
        let client = self.shared.client().await?;
        self.shared.durable(&client).await
    }

    fn subscribe(&self, after: Option<u64>) -> Result<Subscription> {
        self.shared.feed.subscribe(after)
    }

    async fn token_key(&self) -> Result<Vec<u8>> {
        self.shared
            .token_key
            .get_or_try_init(|| async {
                // The first replica to ask creates it; every other one reads that one.
                let candidate: [u8; 32] = rand::random();
                self.shared
                    .query(
                        "INSERT INTO settings (name, value) VALUES ('page-token-key', $1) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&&candidate[..]],
                    )
                    .await?;
                let rows = self
                    .shared
                    .query(
                        "SELECT value FROM settings WHERE name = 'page-token-key'",
                        &[],
                    )
                    .await?;
                rows.first()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .ok_or_else(|| Error::internal("the page-token key vanished"))
            })
            .await
            .cloned()
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        self.shared.pool.close();
        Ok(())
    }

    fn observe(&self, observer: Arc<dyn crate::store::StoreObserver>) -> bool {
        self.shared.feed.observer().set(observer)
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        let rows = self
            .shared
            .query("SELECT pg_database_size(current_database())", &[])
            .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn check_health(&self) -> Result<()> {
        self.shared.query("SELECT 1", &[]).await.map(drop)
    }

    /// `runledger backup` copies a data dir; a database is backed up with its own tools.
    async fn backup(
        &self,
        _to: &std::path::Path,
        _progress: tokio::sync::watch::Sender<crate::store::BackupProgress>,
    ) -> Result<crate::store::BackupProgress> {
        Err(Error::FailedPrecondition(
            "this server keeps its data in PostgreSQL, which runledger backup does not copy: \
             back the database up with pg_dump (or PostgreSQL's continuous archiving), or take a \
             portable copy with `runledger export --database-url ...`"
                .into(),
        ))
    }

    async fn pipeline(&self, pipeline_id: &str) -> Result<Option<Stored<Pipeline>>> {
        self.catalog_one("r.id = $1", "", &[&pipeline_id.as_bytes()])
            .await
    }

    async fn pipeline_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<Pipeline>>> {
        self.catalog_one(
            "r.namespace = $1 AND r.name = $2",
            "",
            &[&namespace.as_bytes(), &name.as_bytes()],
        )
        .await
    }

    async fn list_pipelines(&self, query: ListQuery) -> Result<Page<Stored<Pipeline>>> {
        self.list_catalog(&query).await
    }

    async fn pipeline_namespaces(&self) -> Result<Vec<String>> {
        let rows = self
            .shared
            .query(
                "SELECT key FROM counts WHERE kind = 'i' AND n > 0 ORDER BY key",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| rows::utf8(r.get(0), "namespace"))
            .collect()
    }

    async fn pipeline_version(&self, version_id: &str) -> Result<Option<Stored<PipelineVersion>>> {
        self.catalog_one("r.id = $1", "", &[&version_id.as_bytes()])
            .await
    }

    async fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.catalog_one(
            "r.pipeline_id = $1 AND r.name = $2",
            "",
            &[&pipeline_id.as_bytes(), &name.as_bytes()],
        )
        .await
    }

    async fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.catalog_one(
            "r.pipeline_id = $1",
            "ORDER BY r.created_s DESC, r.created_ns DESC, r.id DESC",
            &[&pipeline_id.as_bytes()],
        )
        .await
    }

    async fn list_pipeline_versions(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<PipelineVersion>>> {
        self.list_catalog(&query).await
    }

    async fn recurring_run(
        &self,
        recurring_run_id: &str,
    ) -> Result<Option<Stored<RecurringRunRecord>>> {
        self.catalog_one("r.id = $1", "", &[&recurring_run_id.as_bytes()])
            .await
    }

    async fn list_recurring_runs(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<RecurringRunRecord>>> {
        self.list_catalog(&query).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool> {
        let (name, holder, until_s, until_ns, now_s, now_ns) =
            catalog::lease_params(name, holder, now, until);
        let rows = self
            .shared
            .query(
                catalog::ACQUIRE_LEASE,
                &[&name, &holder, &until_s, &until_ns, &now_s, &now_ns],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

impl PgStore {
    /// The record of kind `T` that `condition` selects, the first in `order`.
    async fn catalog_one<T: CatalogKind>(
        &self,
        condition: &str,
        order: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Stored<T>>> {
        let sql = catalog::select_one(T::CODE, condition, order);
        let rows = self.shared.query(&sql, params).await?;
        rows.first().map(catalog::stored_from_row::<T>).transpose()
    }

    async fn list_catalog<T: CatalogKind>(&self, query: &ListQuery) -> Result<Page<Stored<T>>> {
        self.list(Table::Catalog(T::CODE), query, |row| {
            let record = catalog::stored_from_row::<T>(row)?;
            Ok((record.value.id().to_owned(), record))
        })
        .await
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
