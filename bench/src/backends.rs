//! `--backends`: the store backends side by side in one run. Each gets the same base data
//! (preloaded through the store interface, runs of `--pipelines` distinct specs), then the same
//! scenarios on its own servers: a no-op call for reference, GetRun, a first ListRuns page, a
//! first page with a state filter, the indexed list queries of the scale step (state = RUNNING,
//! by display_name, latest finished), Health/Check idle and under list load, CreateRun; and the
//! store's size on disk per run. `postgres-N` is N replicas (server processes) on one database,
//! the clients spread over them as a load balancer would.
//!
//! PostgreSQL is the database `--database-url` names, or else a throwaway cluster of this
//! machine's PostgreSQL started with runledger-testkit, with fsync on (so both backends
//! acknowledge writes only once they are durable), one database per backend.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::report::ScenarioResult;
use super::server::ServerProcess;
use super::workload::Workload;
use super::{
    Bench, INDEXED_QUERIES, Target, connect, first_page, health_under_lists, preload, progress,
};
use runledger::api::ListRunsRequest;
use runledger::store::Location;

/// The state filter measured: "what is still to run", half of the base data.
pub const STATE_FILTER: &str =
    r#"{"predicates":[{"key":"state","operation":"EQUALS","string_value":"PENDING"}]}"#;

/// The scenarios of a comparison, in the order they run (create last: it adds runs). The
/// indexed queries are [`INDEXED_QUERIES`], measured between list-state and the health pair.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("baseline", "grpc.health.v1 Health/Check (no-op unary call)"),
    ("get", "GetRun of a random stored run"),
    (
        "list-20",
        "ListRuns, experiment scope, created_at desc, page_size 20",
    ),
    (
        "list-state",
        "list-20 with the filter state = PENDING (half the runs), total_size included",
    ),
    (
        "list-running",
        "list-20 with the filter state = RUNNING (1 run in 100), total_size included",
    ),
    ("list-by-name", "ListRuns page 20, sorted by display_name"),
    (
        "list-latest-finished",
        "ListRuns page 20, sorted by finished_at desc",
    ),
    (
        "health idle",
        "Health/Check from 4 clients on their own connections (to the first server)",
    ),
    (
        "health under lists",
        "the same while --clients clients repeat the five list queries above",
    ),
    ("create", "CreateRun, acknowledged once durable"),
];

/// A backend to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres { replicas: usize },
}

impl Backend {
    pub fn parse(text: &str) -> Result<Backend, String> {
        match text {
            "sled" => Ok(Backend::Sled),
            "postgres" => Ok(Backend::Postgres { replicas: 1 }),
            other => other
                .strip_prefix("postgres-")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=8).contains(n))
                .map(|replicas| Backend::Postgres { replicas })
                .ok_or_else(|| {
                    format!(
                        "unknown backend {other:?}; known: sled, postgres, postgres-N (N replicas, \
                         1 to 8)"
                    )
                }),
        }
    }

    fn label(self) -> String {
        match self {
            Backend::Sled => "sled (embedded)".into(),
            Backend::Postgres { replicas: 1 } => "PostgreSQL, 1 replica".into(),
            Backend::Postgres { replicas } => format!("PostgreSQL, {replicas} replicas"),
        }
    }
}

/// One backend's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BackendResult {
    pub backend: String,
    pub replicas: usize,
    pub base_load_seconds: f64,
    /// The store's size after the base load, per run (a data dir's files; the database's
    /// pg_database_size, which with --database-url counts whatever else it holds).
    pub bytes_per_run: Option<f64>,
    pub scenarios: Vec<ScenarioResult>,
}

/// Where PostgreSQL comes from: a given database, or a cluster started for the run.
enum Postgres {
    Given(String),
    Started(runledger_testkit::postgres::Cluster),
}

impl Postgres {
    fn database(&self, name: &str) -> Result<String, String> {
        match self {
            Postgres::Given(url) => Ok(url.clone()),
            Postgres::Started(cluster) => cluster
                .create_database(name)
                .map_err(|e| format!("cannot create database {name}: {e}")),
        }
    }
}

/// Measures every backend of `backends`, one after the other.
pub async fn compare(
    bench: &Bench,
    spec: &runledger::wkt::StructBytes,
    temp: &Path,
    backends: &[Backend],
) -> Result<Vec<BackendResult>, String> {
    let mut postgres = None;
    if backends
        .iter()
        .any(|b| matches!(b, Backend::Postgres { .. }))
    {
        postgres = Some(match &bench.args.database_url {
            Some(url) => Postgres::Given(url.clone()),
            None => {
                progress("starting a PostgreSQL cluster (runledger-testkit, fsync on)");
                let cluster = tokio::task::spawn_blocking(
                    runledger_testkit::postgres::Cluster::start_durable,
                )
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot start PostgreSQL: {e}"))?;
                Postgres::Started(cluster)
            }
        });
    }
    let mut results = Vec::new();
    for (i, &backend) in backends.iter().enumerate() {
        let (location, servers) = match backend {
            Backend::Sled => {
                let dir = temp.join(format!("backend-{i}-sled"));
                (preload::data_dir(&dir), Store::DataDir(dir))
            }
            Backend::Postgres { replicas } => {
                let url = postgres
                    .as_ref()
                    .ok_or("no PostgreSQL")?
                    .database(&format!("bench_{i}"))?;
                let location = Location::Database {
                    url: url.clone(),
                    options: Default::default(),
                };
                (location, Store::Database { url, replicas })
            }
        };
        progress(format!(
            "{}: loading {} runs through the store interface",
            backend.label(),
            bench.args.base_runs
        ));
        let name = format!("bench-{i}");
        let loaded = preload::load(
            &location,
            &name,
            bench.args.base_runs,
            spec,
            preload::SpecMix::Shared(bench.args.pipelines),
            |n, s| progress(format!("  {n} runs written ({s:.1} s)")),
        )
        .await?;
        let processes = servers.start(bench, temp, i).await?;
        let mut channels = Vec::new();
        let per_server = bench.args.connections.div_ceil(processes.len()).max(1);
        for process in &processes {
            channels.extend(connect(process.addr, per_server).await?);
        }
        // Interleave, so that clients (which take channels round-robin) spread over servers.
        let mut spread = Vec::with_capacity(channels.len());
        for k in 0..per_server {
            for s in 0..processes.len() {
                spread.push(channels[s * per_server + k].clone());
            }
        }
        let target = Target {
            addr: processes[0].addr,
            channels: spread,
            // CPU and memory are those of a single server process.
            pid: (processes.len() == 1).then(|| processes[0].pid()),
        };
        let exp = &loaded.experiment_id;
        let filtered = |filter: &str| ListRunsRequest {
            filter: filter.into(),
            ..first_page(exp, 20)
        };
        let mut lists = vec![first_page(exp, 20), filtered(STATE_FILTER)];
        lists.extend(
            INDEXED_QUERIES
                .iter()
                .map(|(_, sort_by, filter)| ListRunsRequest {
                    sort_by: (*sort_by).into(),
                    ..filtered(filter)
                }),
        );
        let ids = Arc::new(loaded.run_ids);
        let mut scenarios = Vec::new();
        for (name, what) in SCENARIOS {
            let workload = match *name {
                "baseline" => Workload::Health,
                "get" => Workload::Get { ids: ids.clone() },
                "list-20" => Workload::list(&lists[0]),
                "list-state" => Workload::list(&lists[1]),
                "health idle" => {
                    let (idle, loaded) = health_under_lists(bench, &target, lists.clone()).await?;
                    scenarios.extend([idle, loaded]);
                    continue;
                }
                "health under lists" => continue,
                "create" => Workload::create(exp, spec),
                indexed => {
                    let at = INDEXED_QUERIES
                        .iter()
                        .position(|(n, _, _)| *n == indexed)
                        .ok_or_else(|| format!("no workload for scenario {indexed}"))?;
                    Workload::list(&lists[2 + at])
                }
            };
            let mut result = bench.measure(&target, name, workload, bench.duration).await;
            result.what = (*what).to_owned();
            scenarios.push(result);
        }
        let baseline = scenarios[0].ops_per_sec;
        for s in &mut scenarios {
            s.ratio_to_baseline = (baseline > 0.0).then(|| s.ops_per_sec / baseline);
        }
        drop(target);
        for process in processes {
            process.stop().await?;
        }
        results.push(BackendResult {
            backend: backend.label(),
            replicas: match backend {
                Backend::Sled => 1,
                Backend::Postgres { replicas } => replicas,
            },
            base_load_seconds: loaded.seconds,
            bytes_per_run: loaded
                .bytes_on_disk
                .map(|bytes| bytes as f64 / bench.args.base_runs.max(1) as f64),
            scenarios,
        });
    }
    Ok(results)
}

/// The servers of one backend.
enum Store {
    DataDir(std::path::PathBuf),
    Database { url: String, replicas: usize },
}

impl Store {
    async fn start(
        &self,
        bench: &Bench,
        temp: &Path,
        i: usize,
    ) -> Result<Vec<ServerProcess>, String> {
        match self {
            Store::DataDir(dir) => Ok(vec![
                ServerProcess::start(
                    &bench.server_bin,
                    dir,
                    "durable",
                    &temp.join(format!("backend-{i}.log")),
                )
                .await?,
            ]),
            Store::Database { url, replicas } => {
                let mut processes = Vec::new();
                for r in 0..*replicas {
                    let store = [OsStr::new("--database-url"), OsStr::new(url)];
                    let log = temp.join(format!("backend-{i}-replica-{r}.log"));
                    processes.push(ServerProcess::start_on(&bench.server_bin, &store, &log).await?);
                }
                Ok(processes)
            }
        }
    }
}

/// The comparison as a Markdown table: a row per scenario, a column per backend.
pub fn markdown(results: &[BackendResult]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = write!(out, "| scenario |");
    for r in results {
        let _ = write!(out, " {} |", r.backend);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(results.len()));
    for (i, (name, _)) in SCENARIOS.iter().enumerate() {
        let _ = write!(out, "| {name} |");
        for r in results {
            match r.scenarios.get(i) {
                Some(s) => {
                    let _ = write!(
                        out,
                        " {:.0} ops/s ({:.2}×), p50 {:.2} / p99 {:.2} ms{} |",
                        s.ops_per_sec,
                        s.ratio_to_baseline.unwrap_or(0.0),
                        s.p50_ms,
                        s.p99_ms,
                        if s.errors > 0 {
                            format!(", {} errors", s.errors)
                        } else {
                            String::new()
                        }
                    );
                }
                None => {
                    let _ = write!(out, " — |");
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    for (name, what) in SCENARIOS {
        let _ = writeln!(out, "- {name}: {what}");
    }
    for r in results {
        let _ = writeln!(
            out,
            "- {}: base data loaded in {:.1} s through the store interface{}",
            r.backend,
            r.base_load_seconds,
            r.bytes_per_run
                .map(|b| format!(", {b:.0} bytes on disk per run"))
                .unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_with_their_replica_counts() {
        assert_eq!(Backend::parse("sled"), Ok(Backend::Sled));
        assert_eq!(
            Backend::parse("postgres"),
            Ok(Backend::Postgres { replicas: 1 })
        );
        assert_eq!(
            Backend::parse("postgres-2"),
            Ok(Backend::Postgres { replicas: 2 })
        );
        for bad in ["mysql", "postgres-0", "postgres-x", "postgres-9"] {
            assert!(Backend::parse(bad).is_err(), "{bad}");
        }
    }
}
