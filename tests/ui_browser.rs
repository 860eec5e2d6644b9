//! Runs the browser suite (`tests/ui/run.sh`: the web UI in headless Chromium, driven by Python
//! selenium from a virtualenv under target/, against this build's `runledger` binary), so that
//! `cargo test` covers the UI. Needs Debian's `chromium` and `chromium-driver`, python3 with
//! venv, and PyPI. Without the browser the test says SKIPPED and passes, unless `CI=true`, where
//! a missing browser is a failure. The whole run is bounded: the script limits pytest, and this
//! test kills the script's process group if even that hangs.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Longer than the script's own pytest limit (300 s) plus a first-time venv install.
const DEADLINE: Duration = Duration::from_secs(900);

fn tool(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// Waits for the script, or ends its whole process group (server, pytest, browser) at the
/// deadline: SIGTERM first so the script stops the server, SIGKILL if that is not enough.
fn wait_bounded(child: &mut std::process::Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(None) | Err(_) => break,
        }
    }
    let group = -(child.id() as i32);
    // SAFETY: kill(2) with the negated pid of a process group this test created.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: as above.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = child.wait();
    None
}

#[test]
fn the_web_ui_works_in_headless_chromium() {
    let chromium = tool("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<&str> = [chromium.as_str(), chromedriver.as_str()]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "the browser suite needs {} (apt-get install -y chromium chromium-driver, or bash \
             .ci/install-chromium.sh)",
            missing.join(" and ")
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and {message}");
        }
        // Straight to stderr: the test harness captures print! output of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n******** SKIPPED: the web UI browser test: {message} ********\n"
        );
        return;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/run.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .env("RUNLEDGER_BIN", env!("CARGO_BIN_EXE_runledger"))
        .env("CHROMIUM", &chromium)
        .env("CHROMEDRIVER", &chromedriver)
        // Its own process group, so a hung run can be ended whole.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script} with bash: {e}"));
    let Some(status) = wait_bounded(&mut child, DEADLINE) else {
        panic!(
            "the browser suite did not finish within {}s and was killed",
            DEADLINE.as_secs()
        );
    };
    assert!(
        status.success(),
        "the browser suite failed ({status}); its output is above. Rerun it alone with \
         `bash tests/ui/run.sh` (needs chromium, chromium-driver, python3 with venv, and PyPI); \
         screenshots are in target/ui-screenshots/"
    );
}
