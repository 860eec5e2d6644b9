//! Soak: the real binary under mixed load — durable creates and state reports on short-lived
//! connections, short-lived HTTP requests, slow WatchRuns readers, clients that go away in the
//! middle of a call, raw connections that stop half way — while the server is killed with
//! SIGKILL and restarted every few seconds. Afterwards every acknowledged write is present (with
//! at least its acknowledged state), no run is there twice and `runledger check` is clean. Then,
//! on one process, load and quiet alternate: after the load, open file descriptors, threads and
//! VmRSS return to what they were after a warm-up (within the tolerances below).
//!
//! Bounded: RUNLEDGER_SOAK_SECONDS of kill-and-restart chaos (default 60), a kill every
//! RUNLEDGER_SOAK_KILL_EVERY_SECONDS (default 12), then a warm-up and a measured load of a third
//! of that (at least 20 s). Loopback only.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{self, ServerProcess};
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use tokio::io::AsyncWriteExt;
use tonic::transport::{Channel, Endpoint};

/// Open file descriptors may differ from the baseline by this many (sled may hold one more
/// segment or blob file open at a given moment).
const FD_TOLERANCE: usize = 8;
/// Threads may differ from the baseline by this many. The store's threads are fixed (the writer,
/// the flusher, the disk monitor, the readers' pool); the pool for scans and tokio's blocking
/// pool grow with demand and end after being idle a moment (half a second, ten seconds).
const THREAD_TOLERANCE: usize = 8;
/// VmRSS may exceed the baseline by this fraction of it, or by this many bytes, whichever is
/// larger: sled's cache is bounded (--cache-mb 16) and malloc to two arenas (main.rs), so memory
/// freed after the load is reused rather than kept per thread; the margin covers what the
/// allocator keeps.
const RSS_TOLERANCE_FRACTION: f64 = 0.25;
const RSS_TOLERANCE_BYTES: u64 = 32 * 1024 * 1024;

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Server flags: small limits, so that the timeouts, shedding and lagging watchers all happen.
const FLAGS: &[&str] = &[
    "--durability",
    "durable",
    "--cache-mb",
    "16",
    "--event-buffer",
    "64",
    "--max-concurrent-requests",
    "16",
    "--max-queued-requests",
    "64",
    "--max-connections",
    "128",
    "--idle-timeout-ms",
    "2000",
    "--header-timeout-ms",
    "2000",
    "--body-timeout-ms",
    "2000",
];

/// Acknowledged writes: run id → the furthest state acknowledged (0 PENDING, 1 RUNNING,
/// 2 SUCCEEDED).
#[derive(Default)]
struct Acks {
    runs: Mutex<HashMap<String, usize>>,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl Acks {
    fn record(&self, run_id: &str, rank: usize) {
        let mut runs = self.runs.lock().unwrap();
        let entry = runs.entry(run_id.to_owned()).or_insert(rank);
        *entry = (*entry).max(rank);
    }
}

fn rank(state: i32) -> usize {
    match RuntimeState::try_from(state) {
        Ok(RuntimeState::Pending) => 0,
        Ok(RuntimeState::Running) => 1,
        Ok(RuntimeState::Succeeded) => 2,
        other => panic!("unexpected state {other:?}"),
    }
}

async fn channel(url: &str) -> Option<Channel> {
    Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()
}

/// Creates runs and moves every third to RUNNING and SUCCEEDED, one call after the other, on a
/// new connection every 20 calls.
async fn writer(url: String, id: usize, acks: Arc<Acks>, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let Some(channel) = channel(&url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut client = RunServiceClient::new(channel);
        for _ in 0..20 {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let run_id = format!("w{id}-{n}");
            n += 1;
            let mut run = common::new_run(&run_id);
            run.run_id = run_id.clone();
            let created = client
                .create_run(CreateRunRequest {
                    run: Some(run),
                    ..Default::default()
                })
                .await;
            acks.calls.fetch_add(1, Ordering::Relaxed);
            if created.is_err() {
                acks.failures.fetch_add(1, Ordering::Relaxed);
                break;
            }
            acks.record(&run_id, 0);
            if !n.is_multiple_of(3) {
                continue;
            }
            for (state, r) in [(RuntimeState::Running, 1), (RuntimeState::Succeeded, 2)] {
                let reported = client
                    .report_run_state(ReportRunStateRequest {
                        run_id: run_id.clone(),
                        state: state as i32,
                        ..Default::default()
                    })
                    .await;
                acks.calls.fetch_add(1, Ordering::Relaxed);
                match reported {
                    Ok(_) => acks.record(&run_id, r),
                    Err(_) => {
                        acks.failures.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// Lists runs over HTTP/1.1, a new connection per request.
async fn http_reader(http: String, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    while !stop.load(Ordering::Acquire) {
        if client
            .get(format!("{http}/apis/v2beta1/runs?page_size=5"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Watches every run but reads one event a second, so it falls behind and is cut off (then
/// watches again).
async fn slow_watcher(url: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let Some(channel) = channel(&url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut client = RunServiceClient::new(channel);
        let Ok(stream) = client.watch_runs(WatchRunsRequest::default()).await else {
            continue;
        };
        let mut stream = stream.into_inner();
        while !stop.load(Ordering::Acquire) {
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(_))) => tokio::time::sleep(Duration::from_secs(1)).await,
                Ok(Ok(None) | Err(_)) => break,
                Err(_) => {}
            }
        }
    }
}

/// Goes away in the middle of calls: a ListRuns abandoned after a moment, a CreateRun whose
/// connection is dropped before the answer, and a raw HTTP request cut off half way.
async fn quitter(url: String, http: std::net::SocketAddr, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        if let Some(channel) = channel(&url).await {
            let mut client = RunServiceClient::new(channel);
            let _ = tokio::time::timeout(
                Duration::from_micros(200 * (i % 10)),
                client.list_runs(ListRunsRequest {
                    page_size: 50,
                    ..Default::default()
                }),
            )
            .await;
            let mut run = common::new_run("abandoned");
            run.run_id = format!("abandoned-{i}");
            let _ = tokio::time::timeout(
                Duration::from_micros(300 * (i % 7)),
                client.create_run(CreateRunRequest {
                    run: Some(run),
                    ..Default::default()
                }),
            )
            .await;
        }
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(http).await {
            let _ = tcp
                .write_all(b"POST /apis/v2beta1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"disp")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The load, until `stop`.
fn load(
    server: &ServerProcess,
    acks: &Arc<Acks>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (url, http) = (server.url(), server.http_url());
    let mut tasks = Vec::new();
    for id in 0..4 {
        tasks.push(tokio::spawn(writer(
            url.clone(),
            id,
            acks.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(http_reader(http, stop.clone())));
    for _ in 0..2 {
        tasks.push(tokio::spawn(slow_watcher(url.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(quitter(url, server.http, stop.clone())));
    tasks
}

async fn stop_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a load task stops")
            .unwrap();
    }
}

/// What a process holds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Footprint {
    fds: usize,
    threads: usize,
    rss: u64,
}

/// Open file descriptors, threads and VmRSS (bytes) of a process.
fn footprint(pid: u32) -> Footprint {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Footprint {
        fds,
        threads: field("Threads:") as usize,
        rss: field("VmRSS:") * 1024,
    }
}

/// The footprint once the server is quiet: the clients' connections closed (the idle timeout
/// is 2 s), open descriptors and threads steady.
async fn quiet_footprint(pid: u32) -> Footprint {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut last = footprint(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = footprint(pid);
        if (now.fds, now.threads) == (last.fds, last.threads) {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_kills_and_restarts_nothing_acknowledged_is_lost_and_resources_return_to_baseline()
 {
    let chaos = seconds("RUNLEDGER_SOAK_SECONDS", 60);
    let kill_every = seconds("RUNLEDGER_SOAK_KILL_EVERY_SECONDS", 12);
    let measured = (chaos / 3).max(Duration::from_secs(20));
    let root = tempfile::tempdir().unwrap();
    let acks = Arc::new(Acks::default());

    // Chaos: load while the server is killed and restarted.
    let flags: Vec<&OsStr> = FLAGS.iter().map(OsStr::new).collect();
    let mut server = ServerProcess::start(root.path(), &flags);
    let data = server.data_dir.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&server, &acks, &stop);
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < chaos {
        tokio::time::sleep(kill_every.min(chaos.saturating_sub(started.elapsed()))).await;
        if started.elapsed() < chaos {
            tokio::task::block_in_place(|| server.kill_and_restart());
            kills += 1;
        }
    }
    stop_load(&stop, tasks).await;
    let acked_in_chaos = acks.runs.lock().unwrap().len();
    eprintln!(
        "soak: {kills} kills, {} calls ({} failed), {acked_in_chaos} runs acknowledged",
        acks.calls.load(Ordering::Relaxed),
        acks.failures.load(Ordering::Relaxed)
    );
    assert!(kills >= 1 && acked_in_chaos > 0);

    // Resources: a fresh process, warmed up, then loaded; afterwards back to the warm baseline.
    tokio::task::block_in_place(|| server.kill_and_restart());
    let warm = Arc::new(AtomicBool::new(false));
    let tasks = load(&server, &acks, &warm);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_load(&warm, tasks).await;
    let baseline = quiet_footprint(server.pid()).await;
    let busy = Arc::new(AtomicBool::new(false));
    let tasks = load(&server, &acks, &busy);
    tokio::time::sleep(measured / 2).await;
    let during = footprint(server.pid());
    tokio::time::sleep(measured / 2).await;
    stop_load(&busy, tasks).await;
    let after = quiet_footprint(server.pid()).await;
    eprintln!(
        "soak: fds {} baseline, {} under load, {} after; threads {} baseline, {} under load, {} \
         after; VmRSS {:.1} MiB baseline, {:.1} under load, {:.1} after",
        baseline.fds,
        during.fds,
        after.fds,
        baseline.threads,
        during.threads,
        after.threads,
        baseline.rss as f64 / 1048576.0,
        during.rss as f64 / 1048576.0,
        after.rss as f64 / 1048576.0
    );
    assert!(
        after.fds <= baseline.fds + FD_TOLERANCE,
        "open files did not return to the baseline: {} → {}",
        baseline.fds,
        after.fds
    );
    assert!(
        after.threads <= baseline.threads + THREAD_TOLERANCE,
        "threads did not return to the baseline: {} → {}",
        baseline.threads,
        after.threads
    );
    let allowed = baseline.rss
        + RSS_TOLERANCE_BYTES.max((baseline.rss as f64 * RSS_TOLERANCE_FRACTION) as u64);
    assert!(
        after.rss <= allowed,
        "VmRSS did not return to the baseline: {} → {} bytes (allowed {allowed})",
        baseline.rss,
        after.rss
    );

    // Nothing acknowledged was lost: check offline, then read everything back.
    assert!(
        server.terminate(Duration::from_secs(60)).await.is_some(),
        "SIGTERM did not stop the server"
    );
    let (consistent, report) = process::check(&data);
    assert!(consistent, "{report}");
    tokio::task::block_in_place(|| server.kill_and_restart());
    let mut client = server.runs().await;
    let stored = common::list_all(&mut client, ListRunsRequest::default()).await;
    let mut seen = BTreeSet::new();
    let mut states = HashMap::new();
    for run in &stored {
        assert!(
            seen.insert(run.run_id.clone()),
            "{} listed twice",
            run.run_id
        );
        states.insert(run.run_id.clone(), run.state);
    }
    let acked = acks.runs.lock().unwrap();
    for (run_id, acked_rank) in acked.iter() {
        let state = states
            .get(run_id)
            .unwrap_or_else(|| panic!("acknowledged run {run_id} is missing"));
        assert!(
            rank(*state) >= *acked_rank,
            "run {run_id} is {state}, below its acknowledged rank {acked_rank}"
        );
    }
}
