//! The `runledger` binary with `--auth-config`: `auth hash-token` and `auth check-config`, audit
//! lines on stderr, and SIGHUP reloading the file (a bad file keeps the previous config).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_runledger");

fn hash(token: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["auth", "hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn config(principals: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (name, token) in principals {
        text.push_str(&format!(
            "[[principals]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n[[grants]]\nwho = \"{name}\"\nnamespace = \"team-a\"\nrole = \"editor\"\n",
            hash(token)
        ));
    }
    text
}

struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    http: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, config: &std::path::Path) -> Server {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--auth-config")
        .arg(config)
        .args(["--log-level", "info,runledger::audit=info"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("http=") {
                let addr: String = line[at + 5..].split_whitespace().next().unwrap().to_owned();
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let http = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its addresses");
    Server {
        child,
        log,
        http: format!("http://{http}"),
    }
}

async fn status(server: &Server, token: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/apis/v2beta1/experiments", server.http))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn hangup(server: &Server) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

/// Waits (bounded) until the server has logged `needle` `count` times.
fn wait_for_log(server: &Server, needle: &str, count: usize) {
    for _ in 0..300 {
        if server.log.lock().unwrap().matches(needle).count() >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {needle:?} in the log:\n{}", server.log.lock().unwrap());
}

#[test]
fn hash_token_prints_the_sha256_of_stdin_without_its_newline() {
    assert_eq!(
        hash("test"),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

#[test]
fn check_config_summarizes_a_good_file_and_fails_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(&[("alice", "a")])).unwrap();
    let out = Command::new(BIN)
        .args(["auth", "check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("principal alice") && text.contains("grant alice editor"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[grants]]\nwho = \"a\"\nnamespace = \"x\"\nrole = \"boss\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["auth", "check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 4"));
}

#[tokio::test]
async fn writes_and_denials_are_audited_and_sighup_reloads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    std::fs::write(&file, config(&[("alice", "alice-token")])).unwrap();
    let server = start(dir.path(), &file);
    let exp = |name: &str, ns: &str| serde_json::json!({"display_name": name, "namespace": ns});

    assert_eq!(
        status(&server, "alice-token", exp("one", "team-a")).await,
        200
    );
    assert_eq!(
        status(&server, "alice-token", exp("two", "team-b")).await,
        403
    );
    wait_for_log(&server, "rpc=\"CreateExperiment\"", 2);
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.lines().any(|l| l.contains("runledger::audit")
            && l.contains("principal=\"alice\"")
            && l.contains("outcome=\"ok\"")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("runledger::audit")
            && l.contains("namespace=\"team-b\"")
            && l.contains("outcome=\"denied\"")),
        "{log}"
    );

    // A new principal, then SIGHUP: its token works.
    assert_eq!(
        status(&server, "bob-token", exp("three", "team-a")).await,
        401
    );
    std::fs::write(
        &file,
        config(&[("alice", "alice-token"), ("bob", "bob-token")]),
    )
    .unwrap();
    hangup(&server);
    wait_for_log(&server, "auth config reloaded", 1);
    assert_eq!(
        status(&server, "bob-token", exp("three", "team-a")).await,
        200
    );

    // A bad file, then SIGHUP: the previous config stays in force.
    std::fs::write(&file, "[[principals]]\nname = 1\n").unwrap();
    hangup(&server);
    wait_for_log(&server, "auth config not reloaded", 1);
    assert_eq!(
        status(&server, "bob-token", exp("four", "team-a")).await,
        200
    );
}
