//! Stores opened directly (no server), for the suites that test the store interface itself
//! (`store_conformance.rs`, `pipelines_store.rs`): one opener per backend, each returning None
//! when its component is not on this machine (and having said so).

use std::sync::Arc;

use runledger::store::{self, DataDirOptions, Durability, Store};

/// A backend under test, and whatever keeps it alive (a temp dir).
pub struct Backend {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

/// A fresh data dir.
pub async fn sled(_case: &str) -> Option<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = DataDirOptions {
        durability: Durability::Durable,
        event_buffer: 256,
        event_retain: 64,
        ..Default::default()
    };
    let store = store::open_data_dir(dir.path(), options).expect("open");
    Some(Backend {
        store,
        _guard: Box::new(dir),
    })
}

/// A database of its own in the test binary's PostgreSQL cluster (skipped, loudly, when the
/// machine has no PostgreSQL and CI is not set).
pub async fn postgres(case: &str) -> Option<Backend> {
    let case = case.to_owned();
    let url = tokio::task::spawn_blocking(move || {
        let cluster = runledger_testkit::postgres::shared_or_skip(&case)?;
        let name: String = case.chars().take(60).collect();
        Some(cluster.create_database(&name).expect("create database"))
    })
    .await
    .expect("create database")?;
    let options = store::PostgresOptions {
        pool_size: 4,
        event_buffer: 256,
        event_retain: 64,
        ..Default::default()
    };
    let store = store::open(&store::Location::Database { url, options })
        .await
        .expect("open");
    Some(Backend {
        store,
        _guard: Box::new(()),
    })
}
