//! Runs the kfp SDK compatibility suite (`tests/kfp/run.sh`: the official `kfp` Python SDK from
//! PyPI, in a virtualenv under target/, driving this build's `runledger` binary twice: plain, and
//! multi-user with TLS and --auth-config), so that `cargo test` is the whole test suite: once on
//! data dirs, once on PostgreSQL databases (in a cluster the test starts; skipped, loudly, on a
//! machine without PostgreSQL unless CI=true). Needs python3 with venv, access to PyPI, and
//! openssl (for the multi-user server's certificate).

use std::process::Command;

fn run_suite(store: &[&str]) {
    // One at a time: both would create and pip-install into the same virtualenv.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kfp/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(store)
        .env("RUNLEDGER_BIN", env!("CARGO_BIN_EXE_runledger"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script} with bash: {e}"));
    assert!(
        status.success(),
        "the kfp SDK suite failed ({status}); its output is above. Rerun it alone with \
         `bash tests/kfp/run.sh {}` (needs python3 with venv, PyPI and openssl)",
        store.join(" ")
    );
}

#[test]
fn the_official_kfp_sdk_works_against_runledger() {
    run_suite(&[]);
}

#[test]
fn the_official_kfp_sdk_works_against_runledger_on_postgresql() {
    let test = "the_official_kfp_sdk_works_against_runledger_on_postgresql";
    let Some(cluster) = runledger_testkit::postgres::shared_or_skip(test) else {
        return;
    };
    let plain = cluster.create_database("kfp_sdk").expect("create database");
    let multi_user = cluster
        .create_database("kfp_sdk_multi_user")
        .expect("create database");
    run_suite(&["--database-url", &plain, "--database-url", &multi_user]);
}
