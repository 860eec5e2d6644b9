//! TLS on both ports, against a real server on 127.0.0.1:0 with rcgen certificates: gRPC and
//! JSON clients over TLS, ALPN (h2 and http/1.1), plaintext and stalled clients, mutual TLS
//! (no certificate or one from another CA is refused) and the client certificate's CN naming
//! the principal that --auth-config grants roles to.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::pki::{CertFiles, Pki};
use common::{Config, TestServer, expect_code, new_run};
use runledger::api::experiment_service_client::ExperimentServiceClient;
use runledger::api::run_service_client::RunServiceClient;
use runledger::api::*;
use runledger::auth::{Auth, AuthConfig};
use runledger::server::ServerOptions;
use runledger::transport::tls::parse_certs;
use tokio_rustls::rustls;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn start(tls: Arc<runledger::transport::tls::Tls>, auth: Option<&str>) -> TestServer {
    TestServer::start_with(Config {
        server: ServerOptions {
            tls: Some(tls),
            auth: auth.map(|text| Arc::new(Auth::from_config(AuthConfig::parse(text).unwrap()))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

fn https(addr: SocketAddr) -> String {
    format!("https://127.0.0.1:{}", addr.port())
}

/// A gRPC channel over TLS that trusts `ca`, presenting `identity` when given.
async fn channel(
    addr: SocketAddr,
    ca: &Pki,
    identity: Option<&CertFiles>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.ca_pem()));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert).unwrap(),
            std::fs::read(&id.key).unwrap(),
        ));
    }
    Channel::from_shared(https(addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// A JSON client over TLS (HTTP/1.1) that trusts only `ca`.
fn rest(ca: &Pki, identity: Option<&CertFiles>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap());
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert).unwrap();
        pem.extend(std::fs::read(&id.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn client_config(ca: &Pki, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(parse_certs(ca.ca_pem().as_bytes()).unwrap());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects with TLS offering `alpn`; returns the protocol the server chose and the stream.
async fn handshake(
    addr: SocketAddr,
    ca: &Pki,
    alpn: &[&[u8]],
) -> (
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, alpn)))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    (
        stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
        stream,
    )
}

/// GET `path` over HTTP/2 on an established TLS stream; returns the status.
async fn h2_get(stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>, path: &str) -> u16 {
    let (mut client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("https://127.0.0.1{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap().status().as_u16()
}

#[tokio::test]
async fn both_ports_serve_grpc_and_json_over_tls() {
    let pki = Pki::new("server");
    let server = start(pki.server_tls(None), None).await;

    let mut runs = RunServiceClient::new(channel(server.addr, &pki, None).await.unwrap());
    let run = common::create_run(&mut runs, new_run("over-tls")).await;
    let got = runs
        .get_run(GetRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "over-tls");

    let rest = rest(&pki, None);
    for base in [https(server.http_addr), https(server.addr)] {
        let response = rest
            .get(format!("{base}/apis/v2beta1/runs/{}", run.run_id))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{base}");
        assert_eq!(response.version(), http::Version::HTTP_11);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["display_name"], "over-tls", "{base}");
    }
}

#[tokio::test]
async fn both_ports_offer_h2_and_http1_by_alpn() {
    let pki = Pki::new("server");
    let server = start(pki.server_tls(None), None).await;
    for addr in [server.addr, server.http_addr] {
        let (chosen, _) = handshake(addr, &pki, &[b"http/1.1"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]), "{addr}");
        let (chosen, stream) = handshake(addr, &pki, &[b"h2", b"http/1.1"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "{addr}");
        assert_eq!(h2_get(stream, "/apis/v2beta1/healthz").await, 200, "{addr}");
    }
}

#[tokio::test]
async fn plaintext_clients_get_no_answer_and_the_port_keeps_serving() {
    let pki = Pki::new("server");
    let server = start(pki.server_tls(None), None).await;

    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = RunServiceClient::new(plain)
        .list_runs(ListRunsRequest::default())
        .await;
    assert!(refused.is_err(), "a plaintext gRPC call was answered");
    let refused = reqwest::get(format!("http://{}/apis/v2beta1/healthz", server.http_addr)).await;
    assert!(
        refused.is_err(),
        "a plaintext HTTP request was answered: {refused:?}"
    );

    let response = rest(&pki, None)
        .get(format!("{}/apis/v2beta1/healthz", https(server.http_addr)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn clients_that_stall_their_handshake_do_not_hold_up_others() {
    let pki = Pki::new("server");
    let server = start(pki.server_tls(None), None).await;
    // Connected, but never sending a ClientHello: their handshakes wait (bounded by the
    // server's handshake timeout) beside the accept loop, not in it.
    let mut stalled = Vec::new();
    for addr in [server.addr, server.http_addr] {
        for _ in 0..8 {
            stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    // Handled one after the other, the stalled handshakes would take 8 × 10 s per port; the
    // limit below only stops a broken server from hanging the test.
    let limit = std::time::Duration::from_secs(30);
    let answered = tokio::time::timeout(limit, async {
        let mut runs = RunServiceClient::new(channel(server.addr, &pki, None).await.unwrap());
        runs.list_runs(ListRunsRequest::default()).await.unwrap();
        rest(&pki, None)
            .get(format!("{}/apis/v2beta1/runs", https(server.http_addr)))
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    assert_eq!(
        answered.ok(),
        Some(reqwest::StatusCode::OK),
        "stalled handshakes held up the accept loop"
    );
    drop(stalled);
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = Pki::new("server");
    let clients = Pki::new("clients");
    let strangers = Pki::new("strangers");
    let server = start(pki.server_tls(Some(&clients)), None).await;
    let trusted = clients.client("ci-runner");
    let untrusted = strangers.client("ci-runner");

    for identity in [None, Some(&untrusted)] {
        // With TLS 1.3 the client finishes its side first; the server's refusal ends the
        // connection before any answer.
        let answered = match channel(server.addr, &pki, identity).await {
            Ok(channel) => RunServiceClient::new(channel)
                .list_runs(ListRunsRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        };
        assert!(!answered, "gRPC answered a client with {identity:?}");
        let response = rest(&pki, identity)
            .get(format!("{}/apis/v2beta1/healthz", https(server.http_addr)))
            .send()
            .await;
        assert!(
            response.is_err(),
            "HTTP answered a client with {identity:?}: {response:?}"
        );
    }

    let mut runs = RunServiceClient::new(
        channel(server.addr, &pki, Some(&trusted))
            .await
            .expect("a client certificate of the CA is accepted"),
    );
    runs.list_runs(ListRunsRequest::default()).await.unwrap();
    let response = rest(&pki, Some(&trusted))
        .get(format!("{}/apis/v2beta1/healthz", https(server.http_addr)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

const GRANTS: &str = r#"
[[grants]]
who = "admin"
namespace = "*"
role = "admin"
[[grants]]
who = "ci-runner"
namespace = "team-a"
role = "executor"
"#;

#[tokio::test]
async fn the_client_certificate_cn_names_the_principal_and_its_role_applies() {
    let pki = Pki::new("server");
    let clients = Pki::new("clients");
    let server = start(pki.server_tls(Some(&clients)), Some(GRANTS)).await;
    let admin = clients.client("admin");
    let runner = clients.client("ci-runner");
    let nobody = clients.client("nobody");

    // The admin (by its certificate alone) sets up a run in team-a and one in team-b.
    let admin_channel = channel(server.addr, &pki, Some(&admin)).await.unwrap();
    let mut experiments = ExperimentServiceClient::new(admin_channel.clone());
    let mut admin_runs = RunServiceClient::new(admin_channel);
    let mut runs_in = Vec::new();
    for ns in ["team-a", "team-b"] {
        let exp = common::create_experiment(&mut experiments, ns, ns).await;
        let run = Run {
            experiment_id: exp.experiment_id,
            ..new_run(ns)
        };
        runs_in.push(common::create_run(&mut admin_runs, run).await);
    }
    let (run_a, run_b) = (&runs_in[0], &runs_in[1]);

    // ci-runner: an executor in team-a, nothing elsewhere.
    let mut runs = RunServiceClient::new(channel(server.addr, &pki, Some(&runner)).await.unwrap());
    let get = |id: &str| GetRunRequest {
        run_id: id.to_owned(),
        ..Default::default()
    };
    runs.get_run(get(&run_a.run_id)).await.unwrap();
    let reported = runs
        .report_run_state(ReportRunStateRequest {
            run_id: run_a.run_id.clone(),
            state: RuntimeState::Running as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reported.state, RuntimeState::Running as i32);
    let denied = expect_code(
        runs.delete_run(DeleteRunRequest {
            run_id: run_a.run_id.clone(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(
        denied.contains("DeleteRun") && denied.contains("team-a"),
        "{denied}"
    );
    expect_code(runs.get_run(get(&run_b.run_id)).await, Code::NotFound);

    // The same over HTTP, on the same certificate.
    let http = rest(&pki, Some(&runner));
    let url = |id: &str| format!("{}/apis/v2beta1/runs/{id}", https(server.http_addr));
    assert_eq!(
        http.get(url(&run_a.run_id)).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.delete(url(&run_a.run_id))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http.get(url(&run_b.run_id)).send().await.unwrap().status(),
        404
    );

    // A valid certificate whose name has no grant reads nothing.
    let mut stranger =
        RunServiceClient::new(channel(server.addr, &pki, Some(&nobody)).await.unwrap());
    expect_code(stranger.get_run(get(&run_a.run_id)).await, Code::NotFound);

    // Nothing the refused calls tried changed anything.
    let after = admin_runs
        .get_run(get(&run_a.run_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state, RuntimeState::Running as i32);
}
