//! The command-line client: the real binary against a real server on 127.0.0.1:0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::TestServer;
use serde_json::Value;

const SPEC: &str =
    "pipelineInfo:\n  name: demo\nroot:\n  dag:\n    tasks: {}\nschemaVersion: 2.1.0\n";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runledger"))
}

/// Runs `runledger --server URL ARGS...` off the runtime's threads.
async fn cli(server: &str, args: &[&str]) -> Output {
    let server = server.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        bin()
            .args(&args)
            .arg("--server")
            .arg(&server)
            .env_remove("RUNLEDGER_TOKEN")
            .output()
            .expect("run the binary")
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        stderr(&out)
    );
    stdout(&out)
}

fn json(out: Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

async fn create_run(url: &str, spec: &str, name: &str, experiment: &str) -> Value {
    json(
        cli(
            url,
            &[
                "runs",
                "create",
                "--name",
                name,
                "--experiment",
                experiment,
                "--pipeline-spec",
                spec,
                "--param",
                "lr=0.5",
                "--param",
                "tag=blue",
                "-o",
                "json",
            ],
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_real_server() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec = spec.to_str().unwrap();

    // Experiments: create, get, list (table and json).
    let exp = json(
        cli(
            &url,
            &["experiments", "create", "--name", "exp-a", "-o", "json"],
        )
        .await,
    );
    assert_eq!(exp["display_name"], "exp-a");
    let exp_id = exp["experiment_id"].as_str().unwrap().to_string();
    let got = json(cli(&url, &["experiments", "get", &exp_id, "-o", "json"]).await);
    assert_eq!(got["experiment_id"], exp_id.as_str());
    let table = ok(cli(&url, &["experiments", "list"]).await);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&exp_id) && l.contains("exp-a")),
        "{table}"
    );
    let yaml = ok(cli(&url, &["experiments", "get", &exp_id, "-o", "yaml"]).await);
    assert!(yaml.contains("display_name: exp-a"), "{yaml}");

    // Runs: create two, list as json and table, get.
    let run = create_run(&url, spec, "run-1", &exp_id).await;
    assert_eq!(run["display_name"], "run-1");
    assert_eq!(run["state"], "PENDING");
    assert_eq!(run["runtime_config"]["parameters"]["lr"], 0.5);
    assert_eq!(run["runtime_config"]["parameters"]["tag"], "blue");
    assert_eq!(run["pipeline_spec"]["pipelineInfo"]["name"], "demo");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let run2 = create_run(&url, spec, "run-2", &exp_id).await;
    let run2_id = run2["run_id"].as_str().unwrap().to_string();

    let list = json(
        cli(
            &url,
            &["runs", "list", "--experiment", &exp_id, "-o", "json"],
        )
        .await,
    );
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["experiment_id"] == exp_id.as_str()));
    // Paging: one run per page, --all follows the tokens.
    let page = json(cli(&url, &["runs", "list", "--page-size", "1", "-o", "json"]).await);
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert!(!page["next_page_token"].as_str().unwrap().is_empty());
    let all = json(
        cli(
            &url,
            &["runs", "list", "--page-size", "1", "--all", "-o", "json"],
        )
        .await,
    );
    assert_eq!(all["runs"].as_array().unwrap().len(), 2);
    let filter = r#"{"predicates":[{"key":"name","operation":"EQUALS","string_value":"run-2"}]}"#;
    let filtered = json(cli(&url, &["runs", "list", "--filter", filter, "-o", "json"]).await);
    let filtered = filtered["runs"].as_array().unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["run_id"], run2_id.as_str());

    let table = ok(cli(&url, &["runs", "list"]).await);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "STATE", "EXPERIMENT", "CREATED", "DURATION"]
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&run_id))
        .expect(&table);
    assert!(
        row.contains("run-1") && row.contains("PENDING") && row.contains(&exp_id),
        "{row}"
    );

    // Report RUNNING then SUCCEEDED, seen by get.
    let running = json(cli(&url, &["runs", "report", &run_id, "RUNNING", "-o", "json"]).await);
    assert_eq!(running["state"], "RUNNING");
    ok(cli(&url, &["runs", "report", &run_id, "succeeded"]).await);
    let got = json(cli(&url, &["runs", "get", &run_id, "-o", "json"]).await);
    assert_eq!(got["state"], "SUCCEEDED");
    let table = ok(cli(&url, &["runs", "get", &run_id]).await);
    assert!(
        table.lines().nth(1).unwrap().contains("SUCCEEDED"),
        "{table}"
    );

    // Terminate run-2 (never started, so it is CANCELED at once), then retry it.
    assert_eq!(
        ok(cli(&url, &["runs", "terminate", &run2_id]).await),
        format!("terminated run {run2_id}\n")
    );
    let canceled = json(cli(&url, &["runs", "get", &run2_id, "-o", "json"]).await);
    assert_eq!(canceled["state"], "CANCELED");
    ok(cli(&url, &["runs", "retry", &run2_id]).await);
    let retried = json(cli(&url, &["runs", "get", &run2_id, "-o", "json"]).await);
    assert_eq!(retried["state"], "PENDING");

    // Failed with an error message.
    let run3 = create_run(&url, spec, "run-3", &exp_id).await;
    let run3_id = run3["run_id"].as_str().unwrap();
    let failed = json(
        cli(
            &url,
            &[
                "runs", "report", run3_id, "FAILED", "--error", "oom", "-o", "json",
            ],
        )
        .await,
    );
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(failed["error"]["message"], "oom");

    // Archive / unarchive / delete.
    assert_eq!(
        ok(cli(&url, &["runs", "archive", &run_id, "-o", "json"]).await),
        "{}\n"
    );
    let archived = json(cli(&url, &["runs", "get", &run_id, "-o", "json"]).await);
    assert_eq!(archived["storage_state"], "ARCHIVED");
    ok(cli(&url, &["runs", "unarchive", &run_id]).await);
    let available = json(cli(&url, &["runs", "get", &run_id, "-o", "json"]).await);
    assert_eq!(available["storage_state"], "AVAILABLE");
    ok(cli(&url, &["runs", "delete", &run_id]).await);
    let gone = cli(&url, &["runs", "get", &run_id]).await;
    assert_eq!(gone.status.code(), Some(3), "{}", stderr(&gone));

    ok(cli(&url, &["experiments", "archive", &exp_id]).await);
    let exp = json(cli(&url, &["experiments", "get", &exp_id, "-o", "json"]).await);
    assert_eq!(exp["storage_state"], "ARCHIVED");
    ok(cli(&url, &["experiments", "unarchive", &exp_id]).await);
    let exp2 = json(
        cli(
            &url,
            &["experiments", "create", "--name", "exp-b", "-o", "json"],
        )
        .await,
    );
    let exp2_id = exp2["experiment_id"].as_str().unwrap();
    ok(cli(&url, &["experiments", "delete", exp2_id]).await);
    let gone = cli(&url, &["experiments", "get", exp2_id]).await;
    assert_eq!(gone.status.code(), Some(3), "{}", stderr(&gone));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_line_per_change() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"pipelineInfo":{"name":"demo"},"root":{"dag":{"tasks":{}}},"schemaVersion":"2.1.0"}"#,
    )
    .unwrap();
    let spec = spec.to_str().unwrap().to_string();
    let exp = json(
        cli(
            &url,
            &["experiments", "create", "--name", "w", "-o", "json"],
        )
        .await,
    );
    let exp_id = exp["experiment_id"].as_str().unwrap().to_string();
    let run = create_run(&url, &spec, "watched", &exp_id).await;
    let run_id = run["run_id"].as_str().unwrap().to_string();

    let mut child = bin()
        .args([
            "runs", "watch", "--run", &run_id, "-o", "json", "--server", &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The client says so once the stream is open.
    let (err, line) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        (err, line)
    })
    .await
    .unwrap();
    assert!(line.contains("watching"), "{line}");

    ok(cli(&url, &["runs", "report", &run_id, "RUNNING"]).await);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let event: Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(event["type"], "UPDATED");
    assert_eq!(event["run"]["run_id"], run_id.as_str());
    assert_eq!(event["run"]["state"], "RUNNING");
    // A server shutdown ends the stream; the client then exits 0.
    server.stop().await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    drop(err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_with_their_code_and_the_server_message() {
    let server = TestServer::start().await;
    let url = server.url();

    let missing = cli(&url, &["runs", "get", "no-such-run"]).await;
    assert_eq!(missing.status.code(), Some(3));
    let msg = stderr(&missing);
    assert!(msg.starts_with("runledger: NOT_FOUND: "), "{msg}");
    assert!(msg.contains("no-such-run"), "{msg}");
    assert!(stdout(&missing).is_empty());

    let bad = cli(&url, &["runs", "list", "--filter", "{not json"]).await;
    assert_eq!(bad.status.code(), Some(1));
    let msg = stderr(&bad);
    assert!(msg.starts_with("runledger: INVALID_ARGUMENT: "), "{msg}");
    assert!(msg.contains("filter"), "{msg}");

    let state = cli(&url, &["runs", "report", "x", "DONE"]).await;
    assert_eq!(state.status.code(), Some(1));
    assert!(
        stderr(&state).contains("STATE \"DONE\" is not one of"),
        "{}",
        stderr(&state)
    );

    let param = cli(
        &url,
        &["runs", "create", "--name", "n", "--param", "novalue"],
    )
    .await;
    assert_eq!(param.status.code(), Some(1));
    assert!(stderr(&param).contains("--param \"novalue\" is not of the form K=V"));

    let spec = cli(
        &url,
        &[
            "runs",
            "create",
            "--name",
            "n",
            "--pipeline-spec",
            "/nonexistent.yaml",
        ],
    )
    .await;
    assert_eq!(spec.status.code(), Some(1));
    assert!(stderr(&spec).contains("cannot read --pipeline-spec /nonexistent.yaml"));

    let format = cli(&url, &["runs", "list", "-o", "xml"]).await;
    assert_eq!(format.status.code(), Some(1));
    assert!(
        stderr(&format).contains("invalid value 'xml'"),
        "{}",
        stderr(&format)
    );

    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let unreachable = cli(&down, &["runs", "list"]).await;
    assert_eq!(unreachable.status.code(), Some(1));
    let msg = stderr(&unreachable);
    assert!(
        msg.starts_with(&format!("runledger: cannot connect to {down}")),
        "{msg}"
    );

    let url_err = cli("not a url", &["runs", "list"]).await;
    assert_eq!(url_err.status.code(), Some(1));
    assert!(stderr(&url_err).contains("--server \"not a url\" is not a valid URL"));
    server.stop().await;
}

/// A bare HTTP/2 peer on 127.0.0.1:0 that answers every call with `grpc-status: CODE` (trailers
/// only) and hands back the `authorization` header of the first request.
async fn refusing_peer(code: u32) -> (String, tokio::task::JoinHandle<Option<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        let auth = request
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", "denied%20by%20test")
            .body(())
            .unwrap();
        respond.send_response(response, true).unwrap();
        // Serve until the client hangs up.
        while let Some(Ok(_)) = conn.accept().await {}
        auth
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_bearer_metadata_and_auth_errors_exit_4() {
    let (url, peer) = refusing_peer(16).await;
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .args(["runs", "get", "r1", "--server", &url])
            .env("RUNLEDGER_TOKEN", "s3cret")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stderr(&out), "runledger: UNAUTHENTICATED: denied by test\n");
    assert_eq!(peer.await.unwrap().as_deref(), Some("Bearer s3cret"));

    let (url, peer) = refusing_peer(7).await;
    let out = cli(&url, &["experiments", "list", "--token", "other"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("runledger: PERMISSION_DENIED: "));
    assert_eq!(peer.await.unwrap().as_deref(), Some("Bearer other"));

    // Without a token, no header.
    let (url, peer) = refusing_peer(5).await;
    let out = cli(&url, &["runs", "get", "r1"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(peer.await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_a_header_is_refused_clearly() {
    let token = cli("http://127.0.0.1:1", &["runs", "list", "--token", "a\nb"]).await;
    assert_eq!(token.status.code(), Some(1));
    assert_eq!(
        stderr(&token),
        "runledger: --token must be printable ASCII\n"
    );
}
