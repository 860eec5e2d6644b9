//! The load driver: N clients calling in a closed loop for a warm-up and then a measured window,
//! with latencies in an HDR histogram and the server's CPU and memory sampled around the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::server::{self, ProcSample};
use super::workload::Worker;

/// Tells the clients (and any observer, such as watchers) whether the window is open.
#[derive(Default)]
pub struct Window {
    recording: AtomicBool,
    stopped: AtomicBool,
}

impl Window {
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Acquire) && !self.stopped.load(Ordering::Acquire)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// A call that takes longer counts as an error, so a stalled server cannot hang the bench.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency histogram in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant, valid histogram bounds")
}

/// What one measured window saw.
pub struct Measurement {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub latency_us: Histogram<u64>,
    /// Server CPU seconds used during the window (None without a server process).
    pub server_cpu_seconds: Option<f64>,
    /// The load generator's own CPU seconds during the window.
    pub client_cpu_seconds: f64,
    /// Server resident memory sampled once a second through the window, in KiB.
    pub server_rss_kb: Vec<u64>,
    /// Server peak resident memory (VmHWM) at the end of the window, in KiB.
    pub server_peak_rss_kb: Option<u64>,
}

struct ClientResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

async fn client_loop(mut worker: Worker, window: Arc<Window>) -> ClientResult {
    let mut result = ClientResult {
        ops: 0,
        errors: 0,
        first_error: None,
        latency_us: histogram(),
    };
    while !window.is_stopped() {
        let counted = window.is_recording();
        let start = Instant::now();
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, worker.call()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {} s (the server stalled)",
                CALL_TIMEOUT.as_secs()
            )),
        };
        let micros = start.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let recording = window.is_recording();
        match outcome {
            // Only calls wholly inside the window count towards throughput and latency.
            Ok(()) if counted && recording => {
                result.ops += 1;
                result.latency_us.saturating_record(micros.max(1));
            }
            Ok(()) => {}
            // A failure that touches the window counts: a stalled server must show up as
            // errors, not as a quiet window.
            Err(e) => {
                if counted || recording {
                    result.errors += 1;
                    result.first_error.get_or_insert(e);
                }
                // An error loop would otherwise spin as fast as the server can refuse.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    result
}

/// Runs `workers` for `warmup`, then measures for `duration`. `server_pid` is sampled from
/// /proc. `window` is shared with anything else that should count only inside the window.
pub async fn drive(
    workers: Vec<Worker>,
    warmup: Duration,
    duration: Duration,
    server_pid: Option<u32>,
    window: Arc<Window>,
) -> Measurement {
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(client_loop(worker, window.clone())))
        .collect();
    tokio::time::sleep(warmup).await;

    let sample_server = || server_pid.and_then(server::sample);
    let server_before = sample_server();
    let client_before = server::sample_self().unwrap_or_default();
    window.recording.store(true, Ordering::Release);
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < duration {
        let left = duration.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if let Some(s) = sample_server() {
            rss.push(s.rss_kb);
        }
    }
    window.stopped.store(true, Ordering::Release);
    let seconds = start.elapsed().as_secs_f64();
    let server_after = sample_server();
    let client_after = server::sample_self().unwrap_or_default();

    let mut total = ClientResult {
        ops: 0,
        errors: 0,
        first_error: None,
        latency_us: histogram(),
    };
    for task in tasks {
        let Ok(result) = task.await else {
            total.errors += 1;
            total
                .first_error
                .get_or_insert_with(|| "a client task panicked".into());
            continue;
        };
        total.ops += result.ops;
        total.errors += result.errors;
        if total.first_error.is_none() {
            total.first_error = result.first_error;
        }
        let _ = total.latency_us.add(&result.latency_us);
    }
    let cpu = |before: Option<ProcSample>, after: Option<ProcSample>| {
        Some(after?.cpu_seconds - before?.cpu_seconds)
    };
    Measurement {
        ops: total.ops,
        errors: total.errors,
        first_error: total.first_error,
        seconds,
        latency_us: total.latency_us,
        server_cpu_seconds: cpu(server_before, server_after),
        client_cpu_seconds: client_after.cpu_seconds - client_before.cpu_seconds,
        server_rss_kb: rss,
        server_peak_rss_kb: server_after.map(|s| s.peak_rss_kb),
    }
}
