//! Results: one row per scenario, the scaling runs, the targets, as a Markdown table or JSON.

use std::fmt::Write;

use serde::Serialize;

use super::load::Measurement;

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub clients: usize,
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Throughput divided by the baseline's (Health/Check) in the same run.
    pub ratio_to_baseline: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Server CPU used during the window, in cores (CPU seconds per second).
    pub server_cpu_cores: Option<f64>,
    /// Server CPU per call, in microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// The load generator's own CPU, in cores (it shares the machine with the server).
    pub client_cpu_cores: f64,
    /// Server resident memory at the start and the end of the window, and its peak so far.
    pub server_rss_start_mb: Option<f64>,
    pub server_rss_end_mb: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
    /// Scenario-specific figures (events/s for WatchRuns, ...).
    pub extra: Vec<(String, f64)>,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

impl ScenarioResult {
    pub fn new(name: &str, what: &str, clients: usize, m: &Measurement) -> Self {
        let ms = |q: f64| m.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let ops_per_sec = m.ops as f64 / m.seconds.max(1e-9);
        let cores = m.server_cpu_seconds.map(|s| s / m.seconds.max(1e-9));
        // Memory trend over the window's second half: a leak keeps growing, a cache levels off.
        let mut extra = Vec::new();
        let rss = &m.server_rss_kb;
        if rss.len() >= 10 {
            let (mid, end) = (rss[rss.len() / 2], rss[rss.len() - 1]);
            extra.push((
                "rss_second_half_growth_mb".to_owned(),
                (end as f64 - mid as f64) / 1024.0,
            ));
        }
        ScenarioResult {
            name: name.to_owned(),
            what: what.to_owned(),
            clients,
            seconds: m.seconds,
            ops: m.ops,
            ops_per_sec,
            ratio_to_baseline: None,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: m.latency_us.max() as f64 / 1000.0,
            errors: m.errors,
            first_error: m.first_error.clone(),
            server_cpu_cores: cores,
            server_cpu_us_per_op: m
                .server_cpu_seconds
                .filter(|_| m.ops > 0)
                .map(|s| s * 1e6 / m.ops as f64),
            client_cpu_cores: m.client_cpu_seconds / m.seconds.max(1e-9),
            server_rss_start_mb: m.server_rss_kb.first().map(|&kb| mb(kb)),
            server_rss_end_mb: m.server_rss_kb.last().map(|&kb| mb(kb)),
            server_peak_rss_mb: m.server_peak_rss_kb.map(mb),
            extra,
        }
    }
}

/// One stored-run count of the scaling runs.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub runs: usize,
    pub load_seconds: f64,
    pub load_runs_per_sec: f64,
    pub data_dir_mb: f64,
    pub bytes_per_run: f64,
    /// The created_at desc first page (list-20).
    pub list_first_page: ScenarioResult,
    /// The first pages of the indexed queries (state filter, display_name, finished_at desc).
    pub indexed: Vec<ScenarioResult>,
    pub get: ScenarioResult,
    /// Health/Check from a few clients, alone and while the others list.
    pub health_idle: ScenarioResult,
    pub health_under_lists: ScenarioResult,
    pub server_peak_rss_mb: Option<f64>,
}

impl ScaleResult {
    fn scenarios(&self) -> impl Iterator<Item = &ScenarioResult> {
        [&self.list_first_page]
            .into_iter()
            .chain(&self.indexed)
            .chain([&self.get, &self.health_idle, &self.health_under_lists])
    }

    fn scenarios_mut(&mut self) -> impl Iterator<Item = &mut ScenarioResult> {
        [&mut self.list_first_page]
            .into_iter()
            .chain(&mut self.indexed)
            .chain([
                &mut self.get,
                &mut self.health_idle,
                &mut self.health_under_lists,
            ])
    }
}

/// One data set of the spec-mix scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SpecMixResult {
    pub specs: String,
    pub runs: usize,
    pub load_seconds: f64,
    pub data_dir_mb: f64,
    pub bytes_per_run: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub pipeline_spec_bytes: usize,
    /// Distinct pipelines the stored runs are runs of.
    pub pipelines: usize,
    pub base_runs: usize,
    pub base_load_seconds: Option<f64>,
    pub scenarios: Vec<ScenarioResult>,
    pub scale: Vec<ScaleResult>,
    pub spec_mix: Vec<SpecMixResult>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// `--backends`: each store backend's figures.
    pub backends: Vec<super::backends::BackendResult>,
}

pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Machine {
        cores,
        memory_gib: kb as f64 / 1024.0 / 1024.0,
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// Fills in the ratios to the baseline and checks the targets.
    pub fn finish(&mut self) {
        let baseline = self
            .scenarios
            .iter()
            .find(|s| s.name == "baseline")
            .map(|s| s.ops_per_sec)
            .filter(|&b| b > 0.0);
        if let Some(b) = baseline {
            for s in &mut self.scenarios {
                s.ratio_to_baseline = Some(s.ops_per_sec / b);
            }
            for scale in &mut self.scale {
                for s in scale.scenarios_mut() {
                    s.ratio_to_baseline = Some(s.ops_per_sec / b);
                }
            }
        }
        let ratio = |name: &str| {
            self.scenarios
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.ratio_to_baseline)
        };
        let mut targets = Vec::new();
        let scenario = |name: &str| self.scenarios.iter().find(|s| s.name == name);
        if let Some(r) = ratio("create-durable") {
            targets.push(Target {
                goal: "CreateRun durable ≥ 0.15× baseline at 64 clients (stretch 0.4×)".into(),
                measured: format!("{r:.2}×"),
                met: Some(r >= 0.15),
            });
        }
        if let Some(cpu) = scenario("create-durable").and_then(|s| s.server_cpu_us_per_op) {
            targets.push(Target {
                goal: "server CPU per create ≤ 150 µs".into(),
                measured: format!("{cpu:.0} µs"),
                met: Some(cpu <= 150.0),
            });
        }
        if let (Some(small), Some(large)) = (self.scale.first(), self.scale.last())
            && large.runs > small.runs
        {
            let get = large.get.ops_per_sec / small.get.ops_per_sec.max(1e-9);
            targets.push(Target {
                goal: format!(
                    "GetRun at {} runs ≥ 0.5× GetRun at {}",
                    large.runs, small.runs
                ),
                measured: format!(
                    "{get:.2}× ({:.0} vs {:.0} calls/s; p50 {} vs {} ms)",
                    large.get.ops_per_sec,
                    small.get.ops_per_sec,
                    ms(large.get.p50_ms),
                    ms(small.get.p50_ms)
                ),
                met: Some(get >= 0.5),
            });
        }
        if let Some(large) = self.scale.last() {
            if let Some(peak) = large.server_peak_rss_mb {
                targets.push(Target {
                    goal: format!(
                        "peak RSS at {} runs ≤ 600 MB with default flags",
                        large.runs
                    ),
                    measured: format!("{peak:.0} MB"),
                    met: Some(peak <= 600.0),
                });
            }
            targets.push(Target {
                goal: format!(
                    "disk at {} runs of {} distinct pipelines ≤ 300 MB",
                    large.runs, self.pipelines
                ),
                measured: format!(
                    "{:.0} MB ({:.0} bytes per run)",
                    large.data_dir_mb, large.bytes_per_run
                ),
                met: Some(large.data_dir_mb <= 300.0),
            });
            for query in &large.indexed {
                // Time per call: the inverse of throughput at the same concurrency.
                let time = large.list_first_page.ops_per_sec / query.ops_per_sec.max(1e-9);
                let p50 = query.p50_ms / large.list_first_page.p50_ms.max(1e-9);
                targets.push(Target {
                    goal: format!(
                        "{} first page ≤ 3× the created_at page at {} runs",
                        query.name, large.runs
                    ),
                    measured: format!("time per call {time:.2}×, p50 {p50:.2}×"),
                    met: Some(time <= 3.0),
                });
            }
            let idle = large.health_idle.p99_ms;
            let loaded = large.health_under_lists.p99_ms;
            targets.push(Target {
                goal: format!(
                    "Health/Check p99 under list load at {} runs ≤ 5× its idle p99",
                    large.runs
                ),
                measured: format!(
                    "{:.2}× ({} vs {} ms)",
                    loaded / idle.max(1e-9),
                    ms(loaded),
                    ms(idle)
                ),
                met: Some(loaded <= 5.0 * idle),
            });
        }
        if let Some(mixed) = self.scenarios.iter().find(|s| s.name == "mixed")
            && let (Some(start), Some(end)) = (mixed.server_rss_start_mb, mixed.server_rss_end_mb)
        {
            targets.push(Target {
                goal: format!(
                    "no unbounded memory growth during a {:.0} s mixed run",
                    mixed.seconds
                ),
                measured: format!(
                    "RSS {start:.0} MB → {end:.0} MB{}",
                    mixed
                        .extra
                        .iter()
                        .find(|(k, _)| k == "rss_second_half_growth_mb")
                        .map(|(_, v)| format!(" (second half: {v:+.0} MB)"))
                        .unwrap_or_default()
                ),
                met: None,
            });
        }
        self.targets = targets;
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {} cores, {:.1} GiB memory. pipeline_spec: {} bytes. Base data: {} runs in the \
             bench experiment{}.\n",
            self.machine.cores,
            self.machine.memory_gib,
            self.pipeline_spec_bytes,
            self.base_runs,
            self.base_load_seconds
                .map(|s| format!(" (loaded in {s:.1} s)"))
                .unwrap_or_default()
        );
        if !self.backends.is_empty() {
            let _ = writeln!(
                out,
                "{} clients, spread over the replicas. Each cell: throughput (× the no-op call \
                 on the same servers), latency p50 / p99.\n",
                self.backends[0].scenarios.first().map_or(0, |s| s.clients),
            );
            out.push_str(&super::backends::markdown(&self.backends));
            return out;
        }
        let _ = writeln!(
            out,
            "| scenario | clients | ops/s | × baseline | p50 ms | p99 ms | p99.9 ms | errors | server CPU (cores) | server CPU µs/op | bench CPU (cores) | server RSS MB (end / peak) |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in &self.scenarios {
            row(&mut out, &s.name, s);
        }
        for scale in &self.scale {
            for s in scale.scenarios() {
                row(&mut out, &s.name, s);
            }
        }
        let extras: Vec<_> = self
            .scenarios
            .iter()
            .filter(|s| !s.extra.is_empty())
            .collect();
        if !extras.is_empty() {
            let _ = writeln!(out);
            for s in extras {
                let figures: Vec<String> = s
                    .extra
                    .iter()
                    .map(|(k, v)| format!("{k} = {v:.1}"))
                    .collect();
                let _ = writeln!(out, "- {}: {}", s.name, figures.join(", "));
            }
        }
        if !self.scale.is_empty() {
            let _ = writeln!(
                out,
                "\n| stored runs | load time s | load runs/s | data dir MB | bytes/run | list-20 p50 ms | list-20 ops/s | get p50 ms | get ops/s | health p99 ms idle / under lists | server peak RSS MB |"
            );
            let _ = writeln!(
                out,
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for s in &self.scale {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {} | {:.0} | {} / {} | {} |",
                    s.runs,
                    s.load_seconds,
                    s.load_runs_per_sec,
                    s.data_dir_mb,
                    s.bytes_per_run,
                    ms(s.list_first_page.p50_ms),
                    s.list_first_page.ops_per_sec,
                    ms(s.get.p50_ms),
                    s.get.ops_per_sec,
                    ms(s.health_idle.p99_ms),
                    ms(s.health_under_lists.p99_ms),
                    opt(s.server_peak_rss_mb, 0)
                );
            }
        }
        if !self.spec_mix.is_empty() {
            let _ = writeln!(
                out,
                "\n| spec data set | runs | load time s | data dir MB | bytes per run |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for m in &self.spec_mix {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.0} | {:.0} |",
                    m.specs, m.runs, m.load_seconds, m.data_dir_mb, m.bytes_per_run
                );
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n| target | measured | met |");
            let _ = writeln!(out, "|---|---|---|");
            for t in &self.targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "(stated)",
                };
                let _ = writeln!(out, "| {} | {} | {met} |", t.goal, t.measured);
            }
        }
        let errors: Vec<_> = self
            .scenarios
            .iter()
            .chain(self.scale.iter().flat_map(|s| s.scenarios()))
            .filter_map(|s| s.first_error.as_ref().map(|e| (&s.name, e)))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "\nFirst error per scenario:");
            for (name, e) in errors {
                let _ = writeln!(out, "- {name}: {e}");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "\nNote: {note}");
        }
        out
    }
}

fn row(out: &mut String, name: &str, s: &ScenarioResult) {
    let _ = writeln!(
        out,
        "| {name} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} / {} |",
        s.clients,
        s.ops_per_sec,
        opt(s.ratio_to_baseline, 2),
        ms(s.p50_ms),
        ms(s.p99_ms),
        ms(s.p999_ms),
        s.errors,
        opt(s.server_cpu_cores, 2),
        opt(s.server_cpu_us_per_op, 0),
        s.client_cpu_cores,
        opt(s.server_rss_end_mb, 0),
        opt(s.server_peak_rss_mb, 0),
    );
}
