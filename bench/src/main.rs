//! `runledger-bench`: the load generator, a program of its own beside the server.
//!
//! It starts real `runledger serve` processes (the `runledger` binary built next to this one, or
//! `--server-bin`) on free loopback ports and temporary
//! data directories, or drives an existing server (`--target`), over gRPC with many concurrent
//! clients spread over several HTTP/2 connections, and reports per scenario throughput,
//! latency percentiles, server CPU and memory. Every throughput is also given as a ratio to a
//! no-op call (grpc.health.v1 Health/Check) measured in the same run on the same server: on a
//! shared machine absolute figures drift, ratios hold.
//!
//! - [`server`]: the server process and /proc sampling.
//! - [`preload`]: the offline loader that fills a data directory before the server starts.
//! - [`workload`]: the pipeline spec, the run records and each scenario's calls.
//! - [`load`]: the closed-loop driver and its measured window.
//! - [`report`]: the Markdown table and JSON.
//! - [`backends`]: `--backends`: the store backends (sled, PostgreSQL with N replicas) side by
//!   side.

mod backends;
mod load;
mod preload;
mod report;
mod server;
mod workload;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use load::{Measurement, Window};
use preload::SpecMix;
use report::SpecMixResult;
use report::{Report, ScaleResult, ScenarioResult};
use runledger::api::experiment_service_client::ExperimentServiceClient;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::{CreateExperimentRequest, Experiment, ListRunsRequest, WatchRunsRequest};
use server::ServerProcess;
use workload::{ReportPool, Worker, Workload};

/// Every scenario, in the order they run.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("baseline", "grpc.health.v1 Health/Check (no-op unary call)"),
    ("get", "GetRun of a random stored run"),
    (
        "list-20",
        "ListRuns, experiment scope, created_at desc, page_size 20",
    ),
    (
        "list-100",
        "ListRuns, experiment scope, created_at desc, page_size 100",
    ),
    (
        "list-filter",
        "ListRuns page 20 with filter storage_state != ARCHIVED (the KFP UI's)",
    ),
    ("list-page", "ListRuns page 20 via a page_token (6th page)"),
    (
        "report",
        "ReportRunState RUNNING ⇄ PAUSED with runtime_details",
    ),
    (
        "create-durable",
        "CreateRun, acknowledged after fsync (group commit)",
    ),
    (
        "create-buffered",
        "CreateRun on a second server with --durability buffered",
    ),
    ("mixed", "10% create, 30% report, 50% get, 10% list-20"),
    (
        "watch",
        "WatchRuns fan-out: watchers on the experiment, writers creating runs",
    ),
    (
        "scale",
        "at each --scale stored-run count: list-20, the indexed list queries, get, and \
         Health/Check idle and under list load",
    ),
    (
        "spec-mix",
        "disk per run with shared specs (--pipelines) vs a distinct spec per run",
    ),
];

/// The first pages of the indexed list queries the scale step measures, beside list-20 (the
/// created_at page): (name, what, sort_by, filter).
const INDEXED_QUERIES: &[(&str, &str, &str)] = &[
    (
        "list-running",
        "created_at desc",
        r#"{"predicates":[{"key":"state","operation":"EQUALS","string_value":"RUNNING"}]}"#,
    ),
    ("list-by-name", "display_name", ""),
    ("list-latest-finished", "finished_at desc", ""),
];

/// Health/Check clients that measure its latency idle and under list load.
const HEALTH_PROBES: usize = 4;

/// Load-test a runledger server over gRPC (starts its own by default) and print a Markdown table.
#[derive(Debug, Clone, Parser)]
#[command(name = "runledger-bench", version)]
pub struct BenchArgs {
    /// Concurrent clients (each keeps one call in flight).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections the clients are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Measured seconds per scenario (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Unmeasured warm-up seconds before each scenario's window.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Measured seconds of the mixed scenario (long enough to see memory growth).
    #[arg(long, default_value_t = 60)]
    pub mixed_duration: u64,
    /// Scenarios to run, comma-separated (default: all). Known: baseline, get, list-20,
    /// list-100, list-filter, list-page, report, create-durable, create-buffered, mixed, watch,
    /// scale, spec-mix.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Stored-run counts for the scale scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000])]
    pub scale: Vec<usize>,
    /// Runs stored before the main scenarios (half PENDING for ReportRunState, half finished).
    #[arg(long, default_value_t = 10_000)]
    pub base_runs: usize,
    /// Approximate protobuf size of the pipeline_spec sent with each run, in bytes.
    #[arg(long, default_value_t = 5_000)]
    pub spec_bytes: usize,
    /// Distinct pipelines (specs) the stored runs are runs of.
    #[arg(long, default_value_t = 50)]
    pub pipelines: usize,
    /// Runs in each data set of the spec-mix scenario.
    #[arg(long, default_value_t = 100_000)]
    pub spec_mix_runs: usize,
    /// WatchRuns streams in the watch scenario.
    #[arg(long, default_value_t = 64)]
    pub watchers: usize,
    /// Clients creating runs while the watchers listen.
    #[arg(long, default_value_t = 4)]
    pub watch_writers: usize,
    /// Drive this running server instead of starting one (no CPU/RSS figures, no
    /// create-buffered, no scale).
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Print the results as JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
    /// The `runledger` binary to start servers from (default: the one next to this program).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Compare store backends instead of running the scenarios above: each of these
    /// (comma-separated: sled, postgres, postgres-N = N replicas on one database with the
    /// clients spread over them) gets the same base data, then baseline, get, list-20, the
    /// state filters, the indexed list queries, Health/Check under list load and create are
    /// measured on it, side by side, with its size on disk per run.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// The PostgreSQL database of --backends postgres (each backend adds its own experiment to
    /// it). Default: a throwaway cluster of this machine's PostgreSQL, with fsync on.
    #[arg(long)]
    pub database_url: Option<String>,
}

fn progress(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

async fn connect(addr: SocketAddr, connections: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// The server being measured: its address, its pid when we started it, and connections to it.
struct Target {
    addr: SocketAddr,
    channels: Vec<Channel>,
    pid: Option<u32>,
}

impl Target {
    fn workers(&self, workload: &Arc<Workload>, clients: usize) -> Vec<Worker> {
        (0..clients)
            .map(|c| {
                Worker::new(
                    workload.clone(),
                    self.channels[c % self.channels.len()].clone(),
                    c,
                    clients,
                )
            })
            .collect()
    }

    fn runs(&self) -> RunServiceClient<Channel> {
        RunServiceClient::new(self.channels[0].clone()).max_decoding_message_size(64 << 20)
    }
}

struct Bench {
    args: BenchArgs,
    /// The `runledger` binary servers are started from.
    server_bin: std::path::PathBuf,
    warmup: Duration,
    duration: Duration,
}

impl Bench {
    fn wants(&self, scenario: &str) -> bool {
        self.args.scenarios.is_empty() || self.args.scenarios.iter().any(|s| s == scenario)
    }

    async fn measure(
        &self,
        target: &Target,
        name: &str,
        workload: Workload,
        duration: Duration,
    ) -> ScenarioResult {
        let what = SCENARIOS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, w)| w);
        progress(format!(
            "{name}: {} clients, {} s warm-up + {} s",
            self.args.clients,
            self.warmup.as_secs(),
            duration.as_secs()
        ));
        let workload = Arc::new(workload);
        let m = load::drive(
            target.workers(&workload, self.args.clients),
            self.warmup,
            duration,
            target.pid,
            Arc::new(Window::default()),
        )
        .await;
        let result = ScenarioResult::new(name, what, self.args.clients, &m);
        summary(&result);
        result
    }
}

fn summary(r: &ScenarioResult) {
    progress(format!(
        "{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
        r.name,
        r.ops_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.errors,
        r.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    ));
}

/// The first-page request of the list scenarios.
fn first_page(experiment_id: &str, page_size: i32) -> ListRunsRequest {
    ListRunsRequest {
        experiment_id: experiment_id.to_owned(),
        page_size,
        sort_by: "created_at desc".into(),
        ..Default::default()
    }
}

/// Runs the benchmark; returns the report (printing is the caller's).
pub async fn run(args: BenchArgs) -> Result<Report, String> {
    for s in &args.scenarios {
        if !SCENARIOS.iter().any(|(n, _)| n == s) {
            let known: Vec<_> = SCENARIOS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown scenario {s:?}; known: {}",
                known.join(", ")
            ));
        }
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let bench = Bench {
        server_bin: server::binary(args.server_bin.as_deref())?,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration.max(1)),
        args,
    };
    let spec = workload::pipeline_spec(bench.args.spec_bytes);
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: report::machine(),
        pipeline_spec_bytes: spec.encoded_len(),
        pipelines: bench.args.pipelines,
        base_runs: bench.args.base_runs,
        base_load_seconds: None,
        scenarios: Vec::new(),
        scale: Vec::new(),
        spec_mix: Vec::new(),
        targets: Vec::new(),
        notes: Vec::new(),
        backends: Vec::new(),
    };
    let temp = tempfile::Builder::new()
        .prefix("runledger-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    progress(format!("working directory {}", temp.path().display()));

    if !bench.args.backends.is_empty() {
        if bench.args.target.is_some() {
            return Err("--backends starts its own servers; it does not take --target".into());
        }
        let backends = bench
            .args
            .backends
            .iter()
            .map(|b| backends::Backend::parse(b))
            .collect::<Result<Vec<_>, _>>()?;
        report.backends = backends::compare(&bench, &spec, temp.path(), &backends).await?;
        return Ok(report);
    }

    let main_scenarios = SCENARIOS
        .iter()
        .any(|(n, _)| !matches!(*n, "scale" | "create-buffered" | "spec-mix") && bench.wants(n));
    if main_scenarios {
        run_main(&bench, &spec, temp.path(), &mut report).await?;
    }
    if bench.wants("create-buffered") {
        if bench.args.target.is_some() {
            report
                .notes
                .push("create-buffered skipped: it needs a server the bench starts".into());
        } else {
            let dir = temp.path().join("buffered");
            let server = ServerProcess::start(
                &bench.server_bin,
                &dir,
                "buffered",
                &temp.path().join("buffered.log"),
            )
            .await?;
            let target = Target {
                addr: server.addr,
                channels: connect(server.addr, bench.args.connections).await?,
                pid: Some(server.pid()),
            };
            let experiment_id = create_experiment(&target, "bench-buffered").await?;
            let result = bench
                .measure(
                    &target,
                    "create-buffered",
                    Workload::create(&experiment_id, &spec),
                    bench.duration,
                )
                .await;
            report.scenarios.push(result);
            drop(target);
            server.stop().await?;
        }
    }
    if bench.wants("scale") {
        if bench.args.target.is_some() {
            report
                .notes
                .push("scale skipped: it needs servers the bench starts".into());
        } else {
            for &runs in &bench.args.scale {
                let result = run_scale(&bench, &spec, temp.path(), runs).await?;
                report.scale.push(result);
            }
        }
    }
    if bench.wants("spec-mix") {
        for mix in [SpecMix::Shared(bench.args.pipelines), SpecMix::Distinct] {
            let result = spec_mix(&bench, &spec, temp.path(), mix).await?;
            report.spec_mix.push(result);
        }
    }
    report.finish();
    Ok(report)
}

/// Loads `--spec-mix-runs` runs with specs as `mix` says and measures the data dir.
async fn spec_mix(
    bench: &Bench,
    spec: &runledger::wkt::StructBytes,
    temp: &Path,
    mix: SpecMix,
) -> Result<SpecMixResult, String> {
    let runs = bench.args.spec_mix_runs;
    let dir = temp.join("spec-mix");
    progress(format!("spec-mix: loading {runs} runs of {mix}"));
    let loaded = preload::load(
        &preload::data_dir(&dir),
        "bench-spec-mix",
        runs,
        spec,
        mix,
        move |n, s| progress(format!("  {n}/{runs} runs written ({s:.1} s)")),
    )
    .await?;
    let bytes = server::dir_size(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let result = SpecMixResult {
        specs: mix.to_string(),
        runs,
        load_seconds: loaded.seconds,
        data_dir_mb: bytes as f64 / 1024.0 / 1024.0,
        bytes_per_run: bytes as f64 / runs.max(1) as f64,
    };
    progress(format!(
        "spec-mix: {mix}: {:.0} MB, {:.0} bytes per run",
        result.data_dir_mb, result.bytes_per_run
    ));
    Ok(result)
}

async fn create_experiment(target: &Target, name: &str) -> Result<String, String> {
    let name = format!("{name}-{}", uuid::Uuid::new_v4());
    let experiment = ExperimentServiceClient::new(target.channels[0].clone())
        .create_experiment(CreateExperimentRequest {
            experiment: Some(Experiment {
                display_name: name,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("CreateExperiment failed: {e}"))?
        .into_inner();
    Ok(experiment.experiment_id)
}

/// The base data: an experiment with `base_runs` runs (half PENDING), written offline into a
/// fresh directory (or through CreateRun against `--target`).
struct BaseData {
    experiment_id: String,
    ids: Arc<Vec<String>>,
    pool: Arc<ReportPool>,
}

async fn load_over_grpc(
    bench: &Bench,
    target: &Target,
    spec: &runledger::wkt::StructBytes,
) -> Result<BaseData, String> {
    let experiment_id = create_experiment(target, "bench").await?;
    let total = bench.args.base_runs;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..bench.args.clients {
        let mut client = RunServiceClient::new(target.channels[c % target.channels.len()].clone());
        let next = next.clone();
        let experiment_id = experiment_id.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total as u64 {
                    return Ok::<_, String>(ids);
                }
                let run = client
                    .create_run(runledger::api::CreateRunRequest {
                        run: Some(workload::new_run(&experiment_id, &spec, n)),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("CreateRun while loading: {e}"))?
                    .into_inner();
                ids.push(run.run_id);
            }
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.map_err(|e| e.to_string())??);
    }
    let pending = ids.iter().step_by(2).cloned().collect();
    Ok(BaseData {
        experiment_id,
        pool: ReportPool::new(pending),
        ids: Arc::new(ids),
    })
}

async fn run_main(
    bench: &Bench,
    spec: &runledger::wkt::StructBytes,
    temp: &Path,
    report: &mut Report,
) -> Result<(), String> {
    let mut server = None;
    let (target, base) = match bench.args.target {
        Some(addr) => {
            let target = Target {
                addr,
                channels: connect(addr, bench.args.connections).await?,
                pid: None,
            };
            progress(format!(
                "creating {} runs on {addr} through CreateRun",
                bench.args.base_runs
            ));
            let started = std::time::Instant::now();
            let base = load_over_grpc(bench, &target, spec).await?;
            report.base_load_seconds = Some(started.elapsed().as_secs_f64());
            (target, base)
        }
        None => {
            let dir = temp.join("durable");
            progress(format!("loading {} runs offline", bench.args.base_runs));
            let loaded = preload::load(
                &preload::data_dir(&dir),
                "bench",
                bench.args.base_runs,
                spec,
                SpecMix::Shared(bench.args.pipelines),
                |n, s| progress(format!("  {n} runs written ({s:.1} s)")),
            )
            .await?;
            report.base_load_seconds = Some(loaded.seconds);
            let process = ServerProcess::start(
                &bench.server_bin,
                &dir,
                "durable",
                &temp.join("durable.log"),
            )
            .await?;
            progress(format!(
                "server pid {} on {} (durable)",
                process.pid(),
                process.addr
            ));
            let target = Target {
                addr: process.addr,
                channels: connect(process.addr, bench.args.connections).await?,
                pid: Some(process.pid()),
            };
            server = Some(process);
            let base = BaseData {
                experiment_id: loaded.experiment_id,
                ids: Arc::new(loaded.run_ids),
                pool: ReportPool::new(loaded.pending_ids),
            };
            (target, base)
        }
    };

    let d = bench.duration;
    let exp = &base.experiment_id;
    if bench.wants("baseline") {
        let r = bench
            .measure(&target, "baseline", Workload::Health, d)
            .await;
        report.scenarios.push(r);
    }
    if bench.wants("get") {
        let workload = Workload::Get {
            ids: base.ids.clone(),
        };
        report
            .scenarios
            .push(bench.measure(&target, "get", workload, d).await);
    }
    for (name, size) in [("list-20", 20), ("list-100", 100)] {
        if bench.wants(name) {
            let workload = Workload::list(&first_page(exp, size));
            report
                .scenarios
                .push(bench.measure(&target, name, workload, d).await);
        }
    }
    if bench.wants("list-filter") {
        let mut request = first_page(exp, 20);
        request.filter =
            r#"{"predicates":[{"key":"storage_state","operation":"NOT_EQUALS","string_value":"ARCHIVED"}]}"#
                .into();
        report.scenarios.push(
            bench
                .measure(&target, "list-filter", Workload::list(&request), d)
                .await,
        );
    }
    if bench.wants("list-page") {
        let mut request = first_page(exp, 20);
        for _ in 0..5 {
            let page = target
                .runs()
                .list_runs(request.clone())
                .await
                .map_err(|e| format!("ListRuns while finding a later page: {e}"))?
                .into_inner();
            request.page_token = page.next_page_token;
            request.sort_by.clear();
        }
        report.scenarios.push(
            bench
                .measure(&target, "list-page", Workload::list(&request), d)
                .await,
        );
    }
    if bench.wants("report") {
        let workload = Workload::Report {
            pool: base.pool.clone(),
        };
        report
            .scenarios
            .push(bench.measure(&target, "report", workload, d).await);
    }
    if bench.wants("create-durable") {
        let workload = Workload::create(exp, spec);
        report
            .scenarios
            .push(bench.measure(&target, "create-durable", workload, d).await);
    }
    if bench.wants("mixed") {
        let workload = Workload::Mixed {
            create: workload::create_request(exp, spec),
            ids: base.ids.clone(),
            pool: base.pool.clone(),
            list: first_page(exp, 20).encode_to_vec().into(),
        };
        let duration = Duration::from_secs(bench.args.mixed_duration.max(1));
        let r = bench.measure(&target, "mixed", workload, duration).await;
        report.scenarios.push(r);
    }
    if bench.wants("watch") {
        let r = watch(bench, &target, exp, spec).await?;
        report.scenarios.push(r);
    }
    drop(target);
    if let Some(server) = server {
        server.stop().await?;
    }
    Ok(())
}

/// WatchRuns fan-out: `watchers` streams on the experiment while `watch_writers` clients create
/// runs in it; counts events delivered and how long after the run's creation they arrive.
async fn watch(
    bench: &Bench,
    target: &Target,
    experiment_id: &str,
    spec: &runledger::wkt::StructBytes,
) -> Result<ScenarioResult, String> {
    let watchers = bench.args.watchers;
    let writers = bench.args.watch_writers.max(1);
    progress(format!(
        "watch: {watchers} watchers, {writers} writers, {} s warm-up + {} s",
        bench.warmup.as_secs(),
        bench.duration.as_secs()
    ));
    let window = Arc::new(Window::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for w in 0..watchers {
        let mut grpc = tonic::client::Grpc::new(target.channels[w % target.channels.len()].clone())
            .max_decoding_message_size(64 << 20);
        let request = WatchRunsRequest {
            experiment_id: experiment_id.to_owned(),
            ..Default::default()
        };
        let stream = workload::watch_raw(&mut grpc, request.encode_to_vec().into())
            .await
            .map_err(|e| format!("WatchRuns: {e}"))?;
        streams.push(stream);
    }
    let mut tasks = Vec::new();
    for mut stream in streams {
        let window = window.clone();
        let delivered = delivered.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = load::histogram();
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(event)) => {
                            if window.is_recording() {
                                delivered.fetch_add(1, Ordering::Relaxed);
                                if let Some(created) = event.run.and_then(|r| r.created_at) {
                                    let now = runledger::wkt::Timestamp::now();
                                    let micros = (now.as_nanos() - created.as_nanos()) / 1000;
                                    latency.saturating_record(micros.clamp(1, u64::MAX as i128) as u64);
                                }
                            }
                        }
                        Ok(None) | Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            return latency;
                        }
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if window.is_stopped() {
                            return latency;
                        }
                    }
                }
            }
        }));
    }
    let workload = Arc::new(Workload::create(experiment_id, spec));
    let m: Measurement = load::drive(
        target.workers(&workload, writers),
        bench.warmup,
        bench.duration,
        target.pid,
        window.clone(),
    )
    .await;
    let mut delivery = load::histogram();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = delivery.add(&h);
        }
    }
    let mut r = ScenarioResult::new("watch", "", writers, &m);
    r.what = SCENARIOS
        .iter()
        .find(|(n, _)| *n == "watch")
        .map_or(String::new(), |(_, w)| (*w).to_owned());
    let events = delivered.load(Ordering::Relaxed) as f64;
    let writes = m.ops as f64;
    r.extra.extend([
        ("watchers".into(), watchers as f64),
        ("events_per_sec_delivered".into(), events / m.seconds),
        (
            "delivered_share_of_writes_x_watchers".into(),
            if writes > 0.0 {
                events / (writes * watchers as f64)
            } else {
                0.0
            },
        ),
        (
            "delivery_p50_ms".into(),
            delivery.value_at_quantile(0.5) as f64 / 1000.0,
        ),
        (
            "delivery_p99_ms".into(),
            delivery.value_at_quantile(0.99) as f64 / 1000.0,
        ),
        (
            "streams_ended_early".into(),
            failures.load(Ordering::Relaxed) as f64,
        ),
    ]);
    summary(&r);
    progress(format!(
        "watch: {:.0} events/s delivered to {watchers} watchers",
        events / m.seconds
    ));
    Ok(r)
}

async fn run_scale(
    bench: &Bench,
    spec: &runledger::wkt::StructBytes,
    temp: &Path,
    runs: usize,
) -> Result<ScaleResult, String> {
    let dir = temp.join(format!("scale-{runs}"));
    let mix = SpecMix::Shared(bench.args.pipelines);
    progress(format!(
        "scale {runs}: loading {runs} runs of {mix} offline"
    ));
    let loaded = preload::load(
        &preload::data_dir(&dir),
        "bench-scale",
        runs,
        spec,
        mix,
        move |n, s| {
            progress(format!(
                "  {n}/{runs} runs written ({s:.1} s, {:.0} runs/s)",
                n as f64 / s.max(1e-9)
            ))
        },
    )
    .await?;
    let data_dir_bytes = server::dir_size(&dir);
    let data_dir_mb = data_dir_bytes as f64 / 1024.0 / 1024.0;
    progress(format!(
        "scale {runs}: loaded in {:.1} s, {data_dir_mb:.0} MB on disk",
        loaded.seconds
    ));
    let process = ServerProcess::start(
        &bench.server_bin,
        &dir,
        "durable",
        &temp.join(format!("scale-{runs}.log")),
    )
    .await?;
    let target = Target {
        addr: process.addr,
        channels: connect(process.addr, bench.args.connections).await?,
        pid: Some(process.pid()),
    };
    let named = |r: ScenarioResult, name: &str| ScenarioResult {
        name: format!("{name} @ {runs}"),
        ..r
    };
    let exp = &loaded.experiment_id;
    let list = bench
        .measure(
            &target,
            "list-20",
            Workload::list(&first_page(exp, 20)),
            bench.duration,
        )
        .await;
    let mut indexed = Vec::new();
    let mut list_requests = vec![first_page(exp, 20)];
    for (name, sort_by, filter) in INDEXED_QUERIES {
        let request = ListRunsRequest {
            sort_by: (*sort_by).into(),
            filter: (*filter).into(),
            ..first_page(exp, 20)
        };
        list_requests.push(request.clone());
        let result = bench
            .measure(&target, name, Workload::list(&request), bench.duration)
            .await;
        indexed.push(named(result, name));
    }
    let get = bench
        .measure(
            &target,
            "get",
            Workload::Get {
                ids: Arc::new(loaded.run_ids),
            },
            bench.duration,
        )
        .await;
    let (health_idle, health_under_lists) =
        health_under_lists(bench, &target, list_requests).await?;
    let peak = server::sample(process.pid()).map(|s| s.peak_rss_kb as f64 / 1024.0);
    drop(target);
    process.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ScaleResult {
        runs,
        load_seconds: loaded.seconds,
        load_runs_per_sec: runs as f64 / loaded.seconds.max(1e-9),
        data_dir_mb,
        bytes_per_run: data_dir_bytes as f64 / runs.max(1) as f64,
        list_first_page: named(list, "list-20"),
        indexed,
        get: named(get, "get"),
        health_idle: named(health_idle, "health idle"),
        health_under_lists: named(health_under_lists, "health under lists"),
        server_peak_rss_mb: peak,
    })
}

/// Health/Check latency from a few probing clients on connections of their own (as a
/// kubelet's or a load balancer's probe), first alone, then while `--clients` clients list
/// (each repeating one of `lists`): whether list work delays the no-op call.
async fn health_under_lists(
    bench: &Bench,
    target: &Target,
    lists: Vec<ListRunsRequest>,
) -> Result<(ScenarioResult, ScenarioResult), String> {
    let what = "Health/Check from 4 clients on their own connections";
    let probes = Target {
        addr: target.addr,
        channels: connect(target.addr, HEALTH_PROBES).await?,
        pid: target.pid,
    };
    progress(format!("health: {HEALTH_PROBES} probing clients, idle"));
    let idle = load::drive(
        probes.workers(&Arc::new(Workload::Health), HEALTH_PROBES),
        bench.warmup,
        bench.duration,
        target.pid,
        Arc::new(Window::default()),
    )
    .await;
    let idle = ScenarioResult::new("health idle", what, HEALTH_PROBES, &idle);
    summary(&idle);
    progress(format!(
        "health: {HEALTH_PROBES} probing clients while {} clients list",
        bench.args.clients
    ));
    let lists: Vec<_> = lists
        .iter()
        .map(|request| Arc::new(Workload::list(request)))
        .collect();
    let listers = (0..bench.args.clients)
        .map(|c| {
            Worker::new(
                lists[c % lists.len()].clone(),
                target.channels[c % target.channels.len()].clone(),
                c,
                bench.args.clients,
            )
        })
        .collect();
    let (loaded, _) = tokio::join!(
        load::drive(
            probes.workers(&Arc::new(Workload::Health), HEALTH_PROBES),
            bench.warmup,
            bench.duration,
            target.pid,
            Arc::new(Window::default()),
        ),
        load::drive(
            listers,
            bench.warmup,
            bench.duration,
            None,
            Arc::new(Window::default()),
        )
    );
    let loaded = ScenarioResult::new("health under lists", what, HEALTH_PROBES, &loaded);
    summary(&loaded);
    Ok((idle, loaded))
}

fn main() -> std::process::ExitCode {
    // The offline loader runs the store in this process: bound malloc's arenas as the server
    // does (src/main.rs).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = BenchArgs::parse();
    let json = args.json;
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("runledger-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.markdown());
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("runledger-bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
