//! The transport-free core: one function per use case. Validation, defaults, the state machine
//! and every business rule live here; the gRPC and HTTP adapters only convert and call.

mod experiments;
pub mod lifecycle;
mod runs;
mod validate;
mod watch;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use runs::RunPage;
pub use validate::Limits;
pub use watch::{RunWatch, WatchScope};

use crate::error::Result;
use crate::store::{CommitTicket, Store};

/// The run ledger: the store plus the rules.
pub struct Ledger {
    store: Arc<Store>,
    limits: Limits,
    /// Signs page tokens.
    token_key: Vec<u8>,
    /// Open WatchRuns streams, against `limits.max_watchers`.
    watchers: Arc<AtomicUsize>,
    /// Set on shutdown: ends every watch stream.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Ledger {
    pub fn new(store: Arc<Store>, limits: Limits) -> Result<Ledger> {
        let token_key = store.token_key()?;
        Ok(Ledger {
            store,
            limits,
            token_key,
            watchers: Arc::new(AtomicUsize::new(0)),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Acknowledges a committed write once it is durable.
    async fn durable(&self, ticket: CommitTicket) -> Result<()> {
        self.store.wait_durable(ticket).await
    }
}
