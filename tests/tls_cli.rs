//! The command-line client against a TLS server: `--ca-cert` to trust its CA,
//! `--client-cert`/`--client-key` for mutual TLS (the certificate's CN is the principal), and
//! clear usage errors for TLS flags that cannot work.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use common::pki::{CertFiles, Pki};
use common::{Config, TestServer};
use runledger::auth::{Auth, AuthConfig};
use runledger::server::ServerOptions;

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_owned()
}

/// Runs the client with `args` and `env` (off the runtime's threads).
async fn cli_with(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(&args)
            .env_remove("RUNLEDGER_TOKEN")
            .env_remove("RUNLEDGER_CA_CERT")
            .envs(env)
            .output()
            .expect("run the binary")
    })
    .await
    .unwrap()
}

async fn cli(args: Vec<String>) -> Output {
    cli_with(args, Vec::new()).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A TLS server (mutual when `clients` is given) and its https:// gRPC URL.
async fn start(pki: &Pki, clients: Option<&Pki>, auth: Option<&str>) -> (TestServer, String) {
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            tls: Some(pki.server_tls(clients)),
            auth: auth.map(|text| Arc::new(Auth::from_config(AuthConfig::parse(text).unwrap()))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    (server, url)
}

fn identity(id: &CertFiles) -> Vec<String> {
    vec![
        "--client-cert".into(),
        path(&id.cert),
        "--client-key".into(),
        path(&id.key),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_talks_to_a_tls_server_whose_ca_it_is_given() {
    let pki = Pki::new("server");
    let (_server, url) = start(&pki, None, None).await;
    let ca = path(&pki.ca_cert());
    let on_server = |text: &str| [words(text), vec!["--server".into(), url.clone()]].concat();

    let created = cli([
        on_server("experiments create --name secure -o json"),
        vec!["--ca-cert".into(), ca.clone()],
    ]
    .concat())
    .await;
    assert_eq!(ok_json(created)["display_name"], "secure");

    // The CA may come from the environment too.
    let listed = cli_with(
        on_server("experiments list -o json"),
        vec![("RUNLEDGER_CA_CERT", ca)],
    )
    .await;
    assert_eq!(ok_json(listed)["experiments"][0]["display_name"], "secure");

    // Without it, the system's CAs do not vouch for a test CA; nor does another CA.
    let untrusted = cli(on_server("experiments list")).await;
    assert_eq!(untrusted.status.code(), Some(1));
    let message = stderr(&untrusted);
    assert!(
        message.contains(&format!("cannot connect to {url}")) && message.contains("certificate"),
        "{message}"
    );
    let other = Pki::new("other");
    let refused = cli([
        on_server("experiments list"),
        vec!["--ca-cert".into(), path(&other.ca_cert())],
    ]
    .concat())
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("certificate"),
        "{}",
        stderr(&refused)
    );
}

const GRANTS: &str = r#"
[[grants]]
who = "ci-runner"
namespace = "team-a"
role = "editor"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_sends_the_client_certificate_whose_cn_is_the_principal() {
    let pki = Pki::new("server");
    let clients = Pki::new("clients");
    let (_server, url) = start(&pki, Some(&clients), Some(GRANTS)).await;
    let runner = clients.client("ci-runner");
    let command = |text: &str| {
        [
            words(text),
            words("-o json --server"),
            vec![url.clone(), "--ca-cert".into(), path(&pki.ca_cert())],
        ]
        .concat()
    };

    let created = cli([
        command("experiments create --name e --namespace team-a"),
        identity(&runner),
    ]
    .concat())
    .await;
    assert_eq!(ok_json(created)["namespace"], "team-a");

    // Its grant is team-a only: elsewhere PERMISSION_DENIED (exit 4).
    let denied = cli([
        command("experiments create --name e --namespace team-b"),
        identity(&runner),
    ]
    .concat())
    .await;
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert!(stderr(&denied).contains("PERMISSION_DENIED"));

    // Without a client certificate the server ends the connection: no answer, exit 1.
    let anonymous = cli(command("experiments list --namespace team-a")).await;
    assert_eq!(anonymous.status.code(), Some(1), "{}", stderr(&anonymous));
    assert!(anonymous.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_that_cannot_work_are_usage_errors_naming_the_flag() {
    let pki = Pki::new("server");
    let id = pki.client("someone");
    let garbage = path(&pki.write("garbage.pem", "not PEM\n"));
    let ca = path(&pki.ca_cert());
    let https = || vec!["--server".to_owned(), "https://127.0.0.1:1".to_owned()];
    let cases = [
        (
            vec![
                "--server".into(),
                "http://127.0.0.1:1".into(),
                "--ca-cert".into(),
                ca,
            ],
            vec!["--ca-cert, --client-cert and --client-key need an https:// --server"],
        ),
        (
            [https(), vec!["--client-cert".into(), path(&id.cert)]].concat(),
            vec!["--client-cert needs --client-key"],
        ),
        (
            [https(), vec!["--ca-cert".into(), garbage.clone()]].concat(),
            vec!["--ca-cert", "garbage.pem: no PEM certificate"],
        ),
        (
            [
                https(),
                vec!["--client-cert".into(), path(&id.cert)],
                vec!["--client-key".into(), garbage],
            ]
            .concat(),
            vec!["--client-key", "garbage.pem: no usable private key"],
        ),
    ];
    for (flags, expected) in cases {
        let out = cli([words("runs list"), flags].concat()).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let message = stderr(&out);
        for part in expected {
            assert!(message.contains(part), "{part}: {message}");
        }
    }
}
