//! The `runledger` binary with `--auth-config`: `auth hash-token` and `auth check-config`, audit
//! lines on stderr, and SIGHUP reloading the file (a bad file keeps the previous config).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::process::{BIN, ServerProcess};

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

async fn status(server: &ServerProcess, token: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/apis/v2beta1/experiments", server.http))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
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
    let server = ServerProcess::start(dir.path(), &["--auth-config".as_ref(), file.as_os_str()]);
    let exp = |name: &str, ns: &str| serde_json::json!({"display_name": name, "namespace": ns});

    assert_eq!(
        status(&server, "alice-token", exp("one", "team-a")).await,
        200
    );
    assert_eq!(
        status(&server, "alice-token", exp("two", "team-b")).await,
        403
    );
    server.wait_for_log("rpc=\"CreateExperiment\"", 2);
    let log = server.log();
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
    server.hangup();
    server.wait_for_log("auth config reloaded", 1);
    assert_eq!(
        status(&server, "bob-token", exp("three", "team-a")).await,
        200
    );

    // A bad file, then SIGHUP: the previous config stays in force.
    std::fs::write(&file, "[[principals]]\nname = 1\n").unwrap();
    server.hangup();
    server.wait_for_log("auth config not reloaded", 1);
    assert_eq!(
        status(&server, "bob-token", exp("four", "team-a")).await,
        200
    );
}
