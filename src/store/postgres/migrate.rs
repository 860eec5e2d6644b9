//! Versioned schema migrations, embedded in the binary and applied in order, each in its own
//! transaction with its version recorded in `schema_migrations`. Applied by `runledger migrate`
//! and by every server at startup. Replicas starting at once serialize on a session-level
//! advisory lock, so exactly one applies a migration and the others find it done. A database
//! migrated by a newer runledger (a version this binary does not know) is refused.

use super::connect::DatabaseUrl;
use super::error::from_db;
use crate::error::{Error, Result};

/// (version, description, SQL), in order. Versions only ever grow; a released migration is
/// never edited.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "runs, experiments, specs, counters, change log",
        include_str!("migrations/0001_initial.sql"),
    ),
    (
        2,
        "pipelines, pipeline versions, recurring runs, tags, leases",
        include_str!("migrations/0002_catalog.sql"),
    ),
];

/// The advisory lock key migrations hold (an arbitrary constant: "runledgr" in ASCII).
const MIGRATION_LOCK: i64 = 0x72756e6c65646772;

/// The schema version this binary writes.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _, _)| *v)
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version found before.
    pub from: i32,
    /// The versions applied, with their descriptions.
    pub applied: Vec<(i32, String)>,
}

impl Migrated {
    pub fn to(&self) -> i32 {
        self.applied.last().map_or(self.from, |(v, _)| *v)
    }
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.applied.is_empty() {
            return write!(
                f,
                "schema is at version {}, the latest: nothing to do",
                self.from
            );
        }
        for (version, description) in &self.applied {
            writeln!(f, "applied migration {version}: {description}")?;
        }
        write!(f, "schema is at version {} (was {})", self.to(), self.from)
    }
}

/// Brings the database's schema to [`latest`].
pub async fn migrate(db: &DatabaseUrl) -> Result<Migrated> {
    let mut client = db.connect_spawned().await?;
    let err = |e| from_db(db, e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let result = apply(db, &mut client).await;
    // The lock is the session's: it would go with the connection anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

/// The schema version the database is at (0: none), without changing anything.
pub async fn current_version(client: &tokio_postgres::Client, db: &DatabaseUrl) -> Result<i32> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| from_db(db, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(|e| from_db(db, e))?
        .get(0);
    Ok(version.unwrap_or(0))
}

/// Refuses a schema newer than this binary knows, and one older than it needs.
pub fn ensure_current(db: &DatabaseUrl, version: i32) -> Result<()> {
    refuse_newer(db, version)?;
    if version < latest() {
        return Err(Error::FailedPrecondition(format!(
            "the database {db} is at schema version {version}; this runledger needs {}: run \
             `runledger migrate --database-url ...`",
            latest()
        )));
    }
    Ok(())
}

fn refuse_newer(db: &DatabaseUrl, version: i32) -> Result<()> {
    if version > latest() {
        return Err(Error::FailedPrecondition(format!(
            "the database {db} is at schema version {version}, written by a newer runledger; \
             this one knows versions up to {}: upgrade runledger",
            latest()
        )));
    }
    Ok(())
}

async fn apply(db: &DatabaseUrl, client: &mut tokio_postgres::Client) -> Result<Migrated> {
    let err = |e| from_db(db, e);
    // Without the NOTICE "already exists, skipping" on every start.
    client
        .batch_execute(
            "SET client_min_messages TO warning;
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(err)?;
    let from = current_version(client, db).await?;
    refuse_newer(db, from)?;
    let mut applied = Vec::new();
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > from) {
        let tx = client.transaction().await.map_err(err)?;
        tx.batch_execute(sql).await.map_err(|e| {
            let inner = from_db(db, e);
            Error::Internal(format!(
                "migration {version} ({description}) failed, nothing of it was applied: {}",
                inner.message()
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        tracing::info!(database = %db, version, description, "applied schema migration");
        applied.push((*version, (*description).to_owned()));
    }
    Ok(Migrated { from, applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one_without_gaps() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
