//! Upgrades: a data dir written by an earlier release opens with this binary and serves exactly
//! what that release served. tests/fixtures/format1 was written by main at 15ac29a (data format
//! 1) with tests/fixtures/make_format1.py, which also saved what it served as expected.json.

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

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .arg("check")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run runledger check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn id<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().expect("an id field")
}

#[tokio::test]
async fn a_format_1_data_dir_serves_what_it_served_and_takes_new_writes() {
    let (temp, dir) = copy_of_fixture();
    let (clean, report) = check(&dir);
    assert!(clean, "the fixture checks clean before opening: {report}");

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
