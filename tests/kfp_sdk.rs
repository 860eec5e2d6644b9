//! Runs the kfp SDK compatibility suite (`tests/kfp/run.sh`: the official `kfp` Python SDK from
//! PyPI, in a virtualenv under target/, driving this build's `runledger` binary twice: plain, and
//! multi-user with TLS and --auth-config), so that `cargo test` is the whole test suite. Needs
//! python3 with venv, access to PyPI, and openssl (for the multi-user server's certificate).

use std::process::Command;

#[test]
fn the_official_kfp_sdk_works_against_runledger() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kfp/run.sh");
    let status = Command::new("bash")
        .arg(script)
        .env("RUNLEDGER_BIN", env!("CARGO_BIN_EXE_runledger"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script} with bash: {e}"));
    assert!(
        status.success(),
        "the kfp SDK suite failed ({status}); its output is above. Rerun it alone with \
         `bash tests/kfp/run.sh` (needs python3 with venv, PyPI and openssl)"
    );
}
