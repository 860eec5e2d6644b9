//! A store that hands every call to another store, except writes, which go through a
//! [`WriteInterceptor`] first: for tests that stage a lost race, a crash at a chosen write or a
//! slow flush, and for an embedder that gates or audits writes, without repeating every method
//! of [`Store`].

use std::path::Path;
use std::sync::Arc;

use super::{
    BackupProgress, RecurringRunRecord, Store, StoreObserver, Stored, StoredRun, Subscription,
    Writable, Write, Written,
};
use crate::api::{Experiment, Pipeline, PipelineVersion};
use crate::error::Result;
use crate::query::{ListQuery, Page, Scope, Tally};
use crate::wkt::Timestamp;

/// What happens to each write of an [`Intercepted`] store.
#[async_trait::async_trait]
pub trait WriteInterceptor: Send + Sync + 'static {
    /// Handles `write`; `inner.write(write)` lets it through to the wrapped store.
    async fn write(&self, inner: &dyn Store, write: Write) -> Result<Written>;
}

/// An interceptor shared with whoever watches it (a test's counters).
#[async_trait::async_trait]
impl<T: WriteInterceptor> WriteInterceptor for Arc<T> {
    async fn write(&self, inner: &dyn Store, write: Write) -> Result<Written> {
        T::write(self, inner, write).await
    }
}

/// `inner`, with its writes going through `interceptor`.
pub struct Intercepted<I> {
    inner: Arc<dyn Store>,
    interceptor: I,
}

impl<I: WriteInterceptor> Intercepted<I> {
    pub fn new(inner: Arc<dyn Store>, interceptor: I) -> Arc<Intercepted<I>> {
        Arc::new(Intercepted { inner, interceptor })
    }
}

#[async_trait::async_trait]
impl<I: WriteInterceptor> Store for Intercepted<I> {
    async fn write(&self, write: Write) -> Result<Written> {
        self.interceptor.write(self.inner.as_ref(), write).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<StoredRun>> {
        self.inner.run(run_id).await
    }
    async fn experiment(&self, experiment_id: &str) -> Result<Option<Stored<Experiment>>> {
        self.inner.experiment(experiment_id).await
    }
    async fn experiment_named(
        &self,
        namespace: &str,
        display_name: &str,
    ) -> Result<Option<Stored<Experiment>>> {
        self.inner.experiment_named(namespace, display_name).await
    }
    async fn default_experiment(&self, namespace: &str) -> Result<Option<String>> {
        self.inner.default_experiment(namespace).await
    }
    async fn list_runs(&self, query: ListQuery) -> Result<Page<StoredRun>> {
        self.inner.list_runs(query).await
    }
    async fn list_experiments(&self, query: ListQuery) -> Result<Page<Stored<Experiment>>> {
        self.inner.list_experiments(query).await
    }
    async fn run_tally(&self, scope: &Scope) -> Result<Tally> {
        self.inner.run_tally(scope).await
    }
    async fn namespaces(&self) -> Result<Vec<String>> {
        self.inner.namespaces().await
    }
    async fn settle(&self) -> Result<()> {
        self.inner.settle().await
    }
    fn subscribe(&self, after: Option<u64>) -> Result<Subscription> {
        self.inner.subscribe(after)
    }
    async fn token_key(&self) -> Result<Vec<u8>> {
        self.inner.token_key().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    fn observe(&self, observer: Arc<dyn StoreObserver>) -> bool {
        self.inner.observe(observer)
    }
    async fn size_on_disk(&self) -> Result<Option<u64>> {
        self.inner.size_on_disk().await
    }
    async fn check_health(&self) -> Result<()> {
        self.inner.check_health().await
    }
    async fn pipeline(&self, pipeline_id: &str) -> Result<Option<Stored<Pipeline>>> {
        self.inner.pipeline(pipeline_id).await
    }
    async fn pipeline_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored<Pipeline>>> {
        self.inner.pipeline_named(namespace, name).await
    }
    async fn list_pipelines(&self, query: ListQuery) -> Result<Page<Stored<Pipeline>>> {
        self.inner.list_pipelines(query).await
    }
    async fn pipeline_namespaces(&self) -> Result<Vec<String>> {
        self.inner.pipeline_namespaces().await
    }
    async fn pipeline_version(&self, version_id: &str) -> Result<Option<Stored<PipelineVersion>>> {
        self.inner.pipeline_version(version_id).await
    }
    async fn pipeline_version_named(
        &self,
        pipeline_id: &str,
        name: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.inner.pipeline_version_named(pipeline_id, name).await
    }
    async fn latest_pipeline_version(
        &self,
        pipeline_id: &str,
    ) -> Result<Option<Stored<PipelineVersion>>> {
        self.inner.latest_pipeline_version(pipeline_id).await
    }
    async fn list_pipeline_versions(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<PipelineVersion>>> {
        self.inner.list_pipeline_versions(query).await
    }
    async fn recurring_run(
        &self,
        recurring_run_id: &str,
    ) -> Result<Option<Stored<RecurringRunRecord>>> {
        self.inner.recurring_run(recurring_run_id).await
    }
    async fn list_recurring_runs(
        &self,
        query: ListQuery,
    ) -> Result<Page<Stored<RecurringRunRecord>>> {
        self.inner.list_recurring_runs(query).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool> {
        self.inner.acquire_lease(name, holder, now, until).await
    }
    fn writable(&self) -> tokio::sync::watch::Receiver<Writable> {
        self.inner.writable()
    }
    async fn backup(
        &self,
        to: &Path,
        progress: tokio::sync::watch::Sender<BackupProgress>,
    ) -> Result<BackupProgress> {
        self.inner.backup(to, progress).await
    }
}
