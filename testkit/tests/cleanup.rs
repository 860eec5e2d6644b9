//! No test may leave a PostgreSQL process or directory behind: not when it ends normally, not
//! when it panics, not when its process dies without running destructors.

mod pg_client;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runledger_testkit::postgres;

/// How long the guard may take to clean up after a test process died.
const GUARD_LIMIT: Duration = Duration::from_secs(30);

/// Selects what the child process (this binary, re-run) does; see `child_that_dies_with_a_cluster`.
const CHILD_MODE: &str = "RUNLEDGER_TESTKIT_CHILD_MODE";

#[tokio::test]
async fn dropping_a_cluster_ends_its_processes_and_removes_its_directory() {
    let Some(cluster) = postgres::cluster_or_skip("dropping_a_cluster_ends_its_processes") else {
        return;
    };
    // An open connection means a backend process too, not only the postmaster.
    let client = pg_client::connect(&cluster.url()).await;
    client.simple_query("SELECT 1").await.expect("query");
    let data = cluster.data_dir();
    let before = pg_client::processes_in(&data);
    assert!(
        before.len() >= 2,
        "expected postmaster and backends, found {before:?}"
    );

    drop(cluster);

    assert_eq!(pg_client::processes_in(&data), Vec::<u32>::new());
    assert!(
        !data.parent().expect("parent").exists(),
        "directory left behind"
    );
}

#[test]
fn a_test_that_panics_still_cleans_up_its_cluster() {
    let data = std::sync::Mutex::new(None::<PathBuf>);
    let outcome = std::panic::catch_unwind(|| {
        let Some(cluster) = postgres::cluster_or_skip("a_test_that_panics_still_cleans_up") else {
            return;
        };
        *data.lock().expect("lock") = Some(cluster.data_dir());
        panic!("the test under the cluster failed");
    });
    let Some(data) = data.into_inner().expect("lock") else {
        return; // skipped: no PostgreSQL here
    };
    assert!(outcome.is_err(), "the closure was meant to panic");
    assert_eq!(pg_client::processes_in(&data), Vec::<u32>::new());
    assert!(
        !data.parent().expect("parent").exists(),
        "directory left behind"
    );
}

#[test]
fn a_test_process_that_exits_with_the_shared_cluster_running_leaves_nothing_behind() {
    guard_cleans_up_after_a_child_that("exits");
}

#[test]
fn a_test_process_killed_with_sigkill_leaves_nothing_behind() {
    guard_cleans_up_after_a_child_that("is-killed");
}

/// Runs this test binary again, only `child_that_dies_with_a_cluster`, waits for it to die,
/// then expects the guard to have stopped the server and removed the directory.
fn guard_cleans_up_after_a_child_that(mode: &str) {
    // Only the availability check: the shared cluster is started once for the whole binary.
    if postgres::shared_or_skip("guard_cleans_up_after_a_child").is_none() {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_that_dies_with_a_cluster",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-run this test binary");
    let stdout = child.stdout.take().expect("stdout");
    let (report, reported) = std::sync::mpsc::channel();
    // Reads to the end, not just to the report: the child's libtest fails on a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(dir) = line.strip_prefix("CLUSTER_DATA_DIR=") {
                let _ = report.send(PathBuf::from(dir));
            }
        }
    });
    let data = reported
        .recv_timeout(Duration::from_secs(60))
        .expect("the child reports its cluster within 60 s");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the child did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg_client::wait_until_cleaned_up(&data, GUARD_LIMIT).expect("the guard cleaned up");
}

#[test]
#[ignore = "run as a child process by the guard tests above"]
fn child_that_dies_with_a_cluster() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let cluster = postgres::shared().expect("shared cluster");
    // Straight to the handle: libtest would otherwise hold the line back.
    use std::io::Write;
    let mut out = std::io::stdout();
    writeln!(out, "CLUSTER_DATA_DIR={}", cluster.data_dir().display()).expect("report");
    out.flush().expect("flush");
    if mode == "is-killed" {
        // No destructor, no atexit: only the guard can clean up now.
        let _ = Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(30));
    }
    // "exits": the test returns and the process exits; the static is never dropped.
}
