//! Upgrades: a data dir written by an earlier release is migrated in place (when the server opens
//! it, or by `runledger migrate`, resuming after a crash) and serves exactly what that release
//! served. tests/fixtures/format1 was written by main at 15ac29a (data format 1) with
//! tests/fixtures/make_format1.py, which also saved what it served as expected.json.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::TestServer;
use common::rest::Http;
use serde_json::{Value, json};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1")
}

/// A writable copy of the fixture's data dir (the committed one is never opened: sled writes).
fn copy_of_fixture() -> (Arc<tempfile::TempDir>, std::path::PathBuf) {
    let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
    let dir = temp.path().join("data");
    std::fs::create_dir(&dir).expect("create data dir");
    for entry in std::fs::read_dir(fixture().join("data")).expect("read fixture") {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy fixture file");
    }
    (temp, dir)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Runs `runledger COMMAND --data-dir DIR ARGS..`; returns (success, stdout + stderr).
fn runledger(command: &str, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .arg(command)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run runledger");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check(dir: &Path) -> (bool, String) {
    runledger("check", dir, &[])
}

/// Every experiment and run of the fixture reads back field for field.
async fn serves_what_format_1_served(http: &Http) {
    let expected = expected();
    for experiment in expected["experiments"].as_array().unwrap() {
        let path = format!("/experiments/{}", id(experiment, "experiment_id"));
        assert_eq!(http.get(&path).await.expect_ok(), experiment, "GET {path}");
    }
    for run in expected["runs"].as_array().unwrap() {
        let path = format!("/runs/{}", id(run, "run_id"));
        assert_eq!(http.get(&path).await.expect_ok(), run, "GET {path}");
    }
}

fn id<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().expect("an id field")
}

#[tokio::test]
async fn a_format_1_data_dir_serves_what_it_served_and_takes_new_writes() {
    let (temp, dir) = copy_of_fixture();
    let (clean, report) = check(&dir);
    assert!(
        !clean && report.contains("older data format") && report.contains("runledger migrate"),
        "the offline check asks for the migration first: {report}"
    );

    let expected = expected();
    let server = TestServer::start_on(&dir, temp.clone()).await;
    let http = Http::new(&server);

    // Every experiment and run reads back field for field.
    let experiments = expected["experiments"].as_array().unwrap();
    let runs = expected["runs"].as_array().unwrap();
    assert!(
        experiments.len() >= 5 && runs.len() >= 20,
        "the fixture is not empty"
    );
    for experiment in experiments {
        let path = format!("/experiments/{}", id(experiment, "experiment_id"));
        assert_eq!(http.get(&path).await.expect_ok(), experiment, "GET {path}");
    }
    for run in runs {
        let path = format!("/runs/{}", id(run, "run_id"));
        assert_eq!(http.get(&path).await.expect_ok(), run, "GET {path}");
    }

    // The indexes and counters came along: an unscoped list sees every run, per namespace too.
    let listed = http.get("/runs?page_size=100").await;
    let listed = listed.expect_ok();
    assert_eq!(listed["total_size"], json!(runs.len()));
    assert_eq!(listed["runs"].as_array().unwrap().len(), runs.len());
    let in_team_a = runs.iter().filter(|r| r["namespace"] == "team-a").count();
    let listed = http.get("/runs?namespace=team-a&page_size=100").await;
    assert_eq!(listed.expect_ok()["total_size"], json!(in_team_a));
    assert!(in_team_a > 0, "the fixture has runs in team-a");

    // Old runs move on through the state machine; new runs join old experiments.
    let pending = runs
        .iter()
        .find(|r| r["state"] == "PENDING" && r["storage_state"] == "AVAILABLE")
        .expect("a pending run in the fixture");
    let reported = http
        .report(id(pending, "run_id"), json!({"state": "RUNNING"}))
        .await;
    assert_eq!(reported.expect_ok()["state"], "RUNNING");
    let nightly = experiments
        .iter()
        .find(|e| e["display_name"] == "nightly")
        .expect("the nightly experiment");
    let created = http
        .post(
            "/runs",
            json!({"display_name": "after-upgrade", "experiment_id": id(nightly, "experiment_id"),
                   "pipeline_id": "p"}),
        )
        .await;
    let created = created.expect_ok().clone();
    assert_eq!(created["namespace"], "team-a");
    let listed = http
        .get(&format!(
            "/runs?experiment_id={}&page_size=100",
            id(nightly, "experiment_id")
        ))
        .await;
    let before = runs
        .iter()
        .filter(|r| r["experiment_id"] == nightly["experiment_id"])
        .count();
    assert_eq!(listed.expect_ok()["total_size"], json!(before + 1));

    server.stop().await;
    let (clean, report) = check(&dir);
    assert!(
        clean,
        "still consistent after the new binary wrote to it: {report}"
    );
}

#[tokio::test]
async fn runledger_migrate_converts_the_fixture_offline_and_only_once() {
    let (temp, dir) = copy_of_fixture();
    let runs = expected()["runs"].as_array().unwrap().len();
    let (ok, out) = runledger("migrate", &dir, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "migrated from data format 1 to 2: {runs} runs and"
        )),
        "{out}"
    );
    let (ok, out) = runledger("migrate", &dir, &[]);
    assert!(ok && out.contains("already at data format 2"), "{out}");

    let (clean, report) = check(&dir);
    assert!(clean, "{report}");
    let before = specs_in(&report);
    assert!(before > 0, "the fixture's specs moved to blobs: {report}");

    let server = TestServer::start_on(&dir, temp.clone()).await;
    let http = Http::new(&server);
    serves_what_format_1_served(&http).await;
    // New runs of one pipeline share one stored spec (format 1 kept specs as the server had
    // encoded them, in random map order, so its copies stay as they are).
    let spec = json!({"pipelineInfo": {"name": "shared"}, "root": {"dag": {"tasks": {
        "a": {"taskInfo": {"name": "a"}}, "b": {"taskInfo": {"name": "b"}}}}},
        "schemaVersion": "2.1.0", "sdkVersion": "kfp-2.17.3", "x": [1, {"y": 2, "z": 3}]});
    for i in 0..3 {
        let created = http
            .post(
                "/runs",
                json!({"display_name": format!("shared-{i}"), "pipeline_spec": spec}),
            )
            .await;
        assert_eq!(created.expect_ok()["pipeline_spec"], spec);
    }
    server.stop().await;
    let (clean, report) = check(&dir);
    assert!(clean, "{report}");
    assert_eq!(specs_in(&report), before + 1, "{report}");
}

/// The number of spec blobs in a check report ("..., N specs (B bytes)").
fn specs_in(report: &str) -> u64 {
    let before = report.split(" specs (").next().expect("a specs count");
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no specs count in {report}"))
}

#[tokio::test]
async fn a_migration_killed_midway_resumes_when_the_server_opens_the_dir() {
    let (temp, dir) = copy_of_fixture();
    // Two batches of 3 runs reach the disk, then the process dies as a kill would stop it.
    let (ok, out) = runledger(
        "migrate",
        &dir,
        &["--chunk-runs", "3", "--abort-after-chunks", "2"],
    );
    assert!(!ok, "the migration was to be cut short: {out}");
    let (clean, report) = check(&dir);
    assert!(
        !clean && report.contains("interrupted"),
        "the half-migrated dir is not checked as if it were done: {report}"
    );

    let server = TestServer::start_on(&dir, temp.clone()).await;
    let http = Http::new(&server);
    serves_what_format_1_served(&http).await;
    let runs = expected()["runs"].as_array().unwrap().len();
    let listed = http.get("/runs?page_size=100").await;
    assert_eq!(listed.expect_ok()["total_size"], json!(runs));
    server.stop().await;
    let (clean, report) = check(&dir);
    assert!(clean, "{report}");
}
