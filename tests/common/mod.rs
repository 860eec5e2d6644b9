//! Test harness: a real runledger server on 127.0.0.1:0 with a fresh data directory, and real
//! tonic clients.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use runledger::api::experiment_service_client::ExperimentServiceClient;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use runledger::server::{self, Listeners, ServerOptions};
use runledger::service::{Limits, Services};
use runledger::store::{self, DataDirOptions, Store};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct TestServer {
    /// The gRPC address.
    pub addr: std::net::SocketAddr,
    /// The JSON/HTTP address.
    pub http_addr: std::net::SocketAddr,
    pub services: Arc<Services>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<runledger::error::Result<()>>>,
    data_dir: PathBuf,
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
        let dir = temp.path().to_path_buf();
        Self::start_in(&dir, config, Some(temp)).await
    }

    /// Starts a server on an existing data directory, which `temp` keeps alive.
    pub async fn start_on(dir: &Path, temp: Arc<tempfile::TempDir>) -> TestServer {
        Self::start_in(dir, Config::default(), Some(temp)).await
    }

    /// Starts a server on `dir`, which the caller keeps (and removes).
    pub async fn start_at(dir: &Path, config: Config) -> TestServer {
        Self::start_in(dir, config, None).await
    }

    async fn start_in(
        dir: &Path,
        config: Config,
        temp: Option<Arc<tempfile::TempDir>>,
    ) -> TestServer {
        let mut store = store::open_data_dir(dir, config.store).expect("open store");
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

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestServer {
        let (dir, temp) = self.stop().await;
        Self::start_in(&dir, Config::default(), temp).await
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
