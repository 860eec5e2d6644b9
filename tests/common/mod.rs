//! Test harness: a real runledger server on 127.0.0.1:0 with a fresh store, and real tonic
//! clients.
//!
//! The store is a fresh data directory, or, inside a test written with
//! `#[runledger_testkit::every_backend]` and running its `postgres` instance, a fresh database
//! in the test binary's PostgreSQL cluster (one cluster per binary, one database per server a
//! test starts). Such a test is written once and runs on both backends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use runledger::api::experiment_service_client::ExperimentServiceClient;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use runledger::server::{self, Listeners, ServerOptions};
use runledger::service::{Limits, Services};
use runledger::store::{self, DataDirOptions, Location, PostgresOptions, Store};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The store backend a test instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// The backend of the test running on this task, and what it needs to make databases.
struct Current {
    backend: Backend,
    test: &'static str,
    databases: AtomicUsize,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// Runs one instance of an `#[every_backend]` test: `body` on `backend`. Without PostgreSQL on
/// the machine the postgres instance skips, saying so (and fails when CI=true).
pub async fn on_backend(
    backend: Backend,
    test: &'static str,
    body: impl std::future::Future<Output = ()>,
) {
    if backend == Backend::Postgres && !postgres_available(test).await {
        return;
    }
    let current = Current {
        backend,
        test,
        databases: AtomicUsize::new(0),
    };
    CURRENT.scope(current, body).await
}

/// The backend of the running test (sled outside `#[every_backend]` tests).
pub fn backend() -> Backend {
    CURRENT.try_with(|c| c.backend).unwrap_or(Backend::Sled)
}

/// Whether the test binary's PostgreSQL cluster runs (started by the first caller); false,
/// after saying so, on a machine without PostgreSQL (a panic when CI=true).
pub async fn postgres_available(test: &'static str) -> bool {
    tokio::task::spawn_blocking(move || runledger_testkit::postgres::shared_or_skip(test).is_some())
        .await
        .expect("start PostgreSQL")
}

/// A fresh database of the binary's cluster as a store location (None: no PostgreSQL here,
/// and the test should return).
pub async fn database_location(test: &'static str) -> Option<Location> {
    if !postgres_available(test).await {
        return None;
    }
    Some(Location::Database {
        url: new_database(test).await,
        options: postgres_options(&DataDirOptions::default()),
    })
}

/// The URL of a database location.
pub fn database_url(location: &Location) -> &str {
    match location {
        Location::Database { url, .. } => url,
        Location::DataDir { .. } => panic!("a database location was expected, not {location}"),
    }
}

/// A SQL session of its own on the database at `url`, to look at or tamper with what the
/// store wrote.
pub async fn sql(url: &str) -> tokio_postgres::Client {
    store::postgres::DatabaseUrl::parse(url)
        .expect("a database URL")
        .connect_spawned()
        .await
        .expect("connect to the database")
}

/// A new, empty database in the test binary's cluster, named after `test`.
pub async fn new_database(test: &str) -> String {
    use std::hash::{Hash, Hasher};
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    test.hash(&mut hasher);
    let prefix: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect();
    let name = format!(
        "{prefix}_{:08x}_{}",
        hasher.finish() as u32,
        SERIAL.fetch_add(1, Ordering::Relaxed)
    );
    let test = test.to_owned();
    tokio::task::spawn_blocking(move || {
        let cluster = runledger_testkit::postgres::shared_or_skip(&test)
            .expect("PostgreSQL is available (checked before the test started)");
        cluster
            .create_database(&name)
            .unwrap_or_else(|e| panic!("create database {name}: {e}"))
    })
    .await
    .expect("create database")
}

/// Where a server (or store) of the running test keeps its data: `dir` for sled, a new
/// database for PostgreSQL.
pub async fn fresh_location(dir: &Path, options: DataDirOptions) -> Location {
    match CURRENT.try_with(|c| {
        (
            c.backend,
            c.test,
            c.databases.fetch_add(1, Ordering::Relaxed),
        )
    }) {
        Ok((Backend::Postgres, test, n)) => Location::Database {
            url: new_database(&format!("{test}_{n}")).await,
            options: postgres_options(&options),
        },
        _ => Location::DataDir {
            dir: dir.to_path_buf(),
            options,
        },
    }
}

/// The PostgreSQL options matching a test's data-dir options (buffers), with a small pool.
pub fn postgres_options(options: &DataDirOptions) -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        event_buffer: options.event_buffer,
        event_retain: options.event_retain,
        ..PostgresOptions::default()
    }
}

pub struct TestServer {
    /// The gRPC address.
    pub addr: std::net::SocketAddr,
    /// The JSON/HTTP address.
    pub http_addr: std::net::SocketAddr,
    pub services: Arc<Services>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<runledger::error::Result<()>>>,
    data_dir: PathBuf,
    /// Where the store is (the data dir, or the test's database).
    pub location: Location,
    /// Keeps the temporary directory alive (and removes it at the end) when the server owns it.
    _temp: Option<Arc<tempfile::TempDir>>,
}

#[derive(Default)]
pub struct Config {
    pub store: DataDirOptions,
    pub limits: Limits,
    pub server: ServerOptions,
    /// Wraps the opened store before the services use it (a test double that delays or
    /// observes calls).
    pub wrap_store: Option<WrapStore>,
}

/// A function that wraps the opened store (see [`Config::wrap_store`]).
pub type WrapStore = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let location = fresh_location(temp.path(), config.store.clone()).await;
        let dir = temp.path().to_path_buf();
        Self::start_in(location, &dir, config, Some(temp)).await
    }

    /// Starts a server on an existing data directory, which `temp` keeps alive.
    pub async fn start_on(dir: &Path, temp: Arc<tempfile::TempDir>) -> TestServer {
        let location = Location::DataDir {
            dir: dir.to_path_buf(),
            options: DataDirOptions::default(),
        };
        Self::start_in(location, dir, Config::default(), Some(temp)).await
    }

    /// Starts a server on the data directory `dir`, which the caller keeps (and removes).
    pub async fn start_at(dir: &Path, config: Config) -> TestServer {
        let location = Location::DataDir {
            dir: dir.to_path_buf(),
            options: config.store.clone(),
        };
        Self::start_in(location, dir, config, None).await
    }

    /// Starts a server on the store at `location` (e.g. a second replica on a database).
    pub async fn start_at_location(location: Location) -> TestServer {
        Self::start_in(location, Path::new(""), Config::default(), None).await
    }

    async fn start_in(
        location: Location,
        dir: &Path,
        config: Config,
        temp: Option<Arc<tempfile::TempDir>>,
    ) -> TestServer {
        let mut store = store::open(&location).await.expect("open store");
        if let Some(wrap) = config.wrap_store {
            store = wrap(store);
        }
        let services = Services::new(store, config.limits).await.expect("services");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let http_addr = http.local_addr().expect("http addr");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::run(
            services.clone(),
            Listeners {
                grpc: listener,
                http,
            },
            config.server,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            http_addr,
            services,
            stop: Some(stop),
            task: Some(task),
            data_dir: dir.to_path_buf(),
            location,
            _temp: temp,
        }
    }

    /// Stops the server gracefully (in-flight calls finish, the store is flushed and closed).
    pub async fn stop(mut self) -> (PathBuf, Option<Arc<tempfile::TempDir>>) {
        self.shutdown().await;
        (self.data_dir.clone(), self._temp.take())
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
            // Connection tasks let go of the services a moment after the server returns; wait,
            // so that the store (and its data dir's lock) is free once stop returns.
            for _ in 0..1000 {
                if Arc::strong_count(&self.services) == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// Stops the server and starts a new one on the same store.
    pub async fn restart(self) -> TestServer {
        let location = self.location.clone();
        let (dir, temp) = self.stop().await;
        Self::start_in(location, &dir, Config::default(), temp).await
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The JSON/HTTP API's base URL (no trailing slash): `http_url() + "/apis/v2beta1/runs"`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn runs(&self) -> RunServiceClient<Channel> {
        RunServiceClient::new(self.channel().await)
    }

    pub async fn experiments(&self) -> ExperimentServiceClient<Channel> {
        ExperimentServiceClient::new(self.channel().await)
    }
}

/// A run ready to create: a name and a pipeline id.
pub fn new_run(name: &str) -> Run {
    Run {
        display_name: name.to_owned(),
        pipeline_source: Some(run::PipelineSource::PipelineId("pipeline-1".to_owned())),
        ..Default::default()
    }
}

pub async fn create_run(client: &mut RunServiceClient<Channel>, run: Run) -> Run {
    client
        .create_run(CreateRunRequest {
            run: Some(run),
            ..Default::default()
        })
        .await
        .expect("create run")
        .into_inner()
}

pub async fn create_experiment(
    client: &mut ExperimentServiceClient<Channel>,
    name: &str,
    namespace: &str,
) -> Experiment {
    client
        .create_experiment(CreateExperimentRequest {
            experiment: Some(Experiment {
                display_name: name.to_owned(),
                namespace: namespace.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .expect("create experiment")
        .into_inner()
}

/// A pipeline with one version, stored on `server` (runs that name a version are checked
/// against the stored one); its reference.
pub async fn stored_version(server: &TestServer) -> PipelineVersionReference {
    let spec: pbjson_types::Struct =
        serde_json::from_str(r#"{"pipelineInfo": {"name": "p"}, "root": {}}"#).unwrap();
    let mut pipelines =
        runledger::api::pipeline_service_client::PipelineServiceClient::new(server.channel().await);
    let pipeline = pipelines
        .create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(Pipeline {
                name: format!("p-{}", uuid::Uuid::new_v4()),
                ..Default::default()
            }),
            pipeline_version: Some(PipelineVersion {
                pipeline_spec: Some(spec.into()),
                ..Default::default()
            }),
        })
        .await
        .expect("create a pipeline and its version")
        .into_inner();
    let version = pipelines
        .list_pipeline_versions(ListPipelineVersionsRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list its versions")
        .into_inner()
        .pipeline_versions
        .remove(0);
    PipelineVersionReference {
        pipeline_id: pipeline.pipeline_id,
        pipeline_version_id: version.pipeline_version_id,
    }
}

/// Creates on `server` a recurring run of `version` every `interval_second` seconds, with at
/// most `max_concurrency` unfinished runs, in `experiment_id` ("": the default experiment),
/// enabled or not as `mode` says.
pub async fn create_periodic_run(
    server: &TestServer,
    experiment_id: &str,
    interval_second: i64,
    max_concurrency: i64,
    mode: recurring_run::Mode,
    version: PipelineVersionReference,
) -> RecurringRun {
    runledger::api::recurring_run_service_client::RecurringRunServiceClient::new(
        server.channel().await,
    )
    .create_recurring_run(CreateRecurringRunRequest {
        recurring_run: Some(RecurringRun {
            display_name: format!("every {interval_second} s"),
            experiment_id: experiment_id.to_owned(),
            mode: mode as i32,
            max_concurrency,
            trigger: Some(Trigger {
                trigger: Some(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                    interval_second,
                    ..Default::default()
                })),
            }),
            pipeline_source: Some(recurring_run::PipelineSource::PipelineVersionReference(
                version,
            )),
            ..Default::default()
        }),
    })
    .await
    .expect("create a recurring run")
    .into_inner()
}

/// Every run of a listing, following next_page_token to the end.
pub async fn list_all(
    client: &mut RunServiceClient<Channel>,
    mut request: ListRunsRequest,
) -> Vec<Run> {
    let mut runs = Vec::new();
    loop {
        let page = client
            .list_runs(request.clone())
            .await
            .expect("list runs")
            .into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return runs;
        }
        request.page_token = page.next_page_token;
    }
}

/// Asserts a call failed with `code`, and returns its message.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
) -> String {
    match result {
        Ok(response) => panic!(
            "expected {code:?}, got success: {:?}",
            response.into_inner()
        ),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            status.message().to_owned()
        }
    }
}
pub mod pki;
pub mod process;
pub mod rest;
pub mod stores;

/// For a test that needs something this machine lacks: fails under `CI=true`, else says SKIPPED
/// (straight to stderr: the harness captures the output of passing tests) and returns, so the
/// caller can return too.
pub fn skip_unless_ci(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {test} cannot run: {why}");
    }
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("\n******** SKIPPED: {test}: {why} ********\n"),
    );
}
