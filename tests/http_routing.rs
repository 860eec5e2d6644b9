//! The JSON/HTTP API's routing through a real server and a real HTTP client: healthz, unknown
//! routes and methods, the descriptor a gateway reads, graceful stop, and the JSON routes on the
//! gRPC port.

mod common;

use common::TestServer;
use common::rest::{Http, id_of};
use reqwest::Method;
use runledger_testkit::every_backend;
use serde_json::json;

// --- healthz and routing ---

#[every_backend]
async fn healthz_reports_single_user_as_a_json_boolean_and_the_version() {
    let server = TestServer::start().await;
    let reply = Http::new(&server).get("/healthz").await;
    let body = reply.expect_ok();
    assert_eq!(body["multi_user"], json!(false));
    assert_eq!(body["tag_name"], json!(env!("CARGO_PKG_VERSION")));
    assert!(body["commit_sha"].is_string());
}

#[every_backend]
async fn unknown_route_is_a_json_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http.get("/artifacts").await.expect_error(404, 5);
    assert!(message.contains("/apis/v2beta1/artifacts"), "{message}");
}

#[every_backend]
async fn wrong_method_is_a_json_405() {
    let server = TestServer::start().await;
    let reply = Http::new(&server)
        .send(Method::PUT, "/runs", Some("{}".into()))
        .await;
    reply.expect_error(405, 12);
}

#[every_backend]
async fn unknown_run_action_is_a_404_naming_the_actions() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    let message = http
        .post_raw(&format!("/runs/{}:frobnicate", id_of(&run)), "")
        .await
        .expect_error(404, 5);
    assert!(message.contains("reportState"), "{message}");
}

#[every_backend]
async fn get_with_an_action_suffix_is_not_a_route() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    http.get(&format!("/runs/{}:archive", id_of(&run)))
        .await
        .expect_error(404, 5);
}

#[every_backend]
async fn id_that_is_not_utf8_is_a_json_400() {
    let server = TestServer::start().await;
    Http::new(&server)
        .get("/runs/%FF")
        .await
        .expect_error(400, 3);
}

#[every_backend]
async fn post_on_a_run_without_an_action_is_a_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    http.post_raw(&format!("/runs/{}", id_of(&run)), "")
        .await
        .expect_error(404, 5);
}

// --- descriptor export (for a gateway in front) ---

#[test]
fn descriptor_subcommand_prints_the_api_with_its_http_routes() {
    use prost::Message;
    let binary = env!("CARGO_BIN_EXE_runledger");
    let stdout = std::process::Command::new(binary)
        .arg("descriptor")
        .output()
        .expect("run runledger descriptor");
    assert!(stdout.status.success(), "{stdout:?}");
    assert_eq!(stdout.stdout, runledger::server::FILE_DESCRIPTOR_SET);

    let set = prost_types::FileDescriptorSet::decode(stdout.stdout.as_slice())
        .expect("a FileDescriptorSet");
    let services: Vec<&str> = set
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(|s| s.name()))
        .collect();
    assert!(services.contains(&"RunService"), "{services:?}");
    assert!(services.contains(&"ExperimentService"), "{services:?}");
    // The google.api.http options a transcoder reads are in the bytes.
    let route = b"/apis/v2beta1/runs/{run_id}:reportState";
    assert!(
        stdout.stdout.windows(route.len()).any(|w| w == route),
        "reportState route missing from the descriptor"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runledger.pb");
    let written = std::process::Command::new(binary)
        .arg("descriptor")
        .arg("--out")
        .arg(&path)
        .output()
        .expect("run runledger descriptor --out");
    assert!(written.status.success(), "{written:?}");
    assert_eq!(
        std::fs::read(&path).expect("descriptor file"),
        runledger::server::FILE_DESCRIPTOR_SET
    );
}

#[test]
fn descriptor_to_an_unwritable_path_fails_with_a_message() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["descriptor", "--out", "/nonexistent-dir/x.pb"])
        .output()
        .expect("run runledger descriptor");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent-dir/x.pb"), "{stderr}");
}

#[every_backend]
async fn graceful_stop_also_closes_the_http_listener() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.create_run("before-stop").await;
    let addr = server.http_addr;
    // stop() panics unless the server (gRPC and HTTP) shut down cleanly.
    let _ = server.stop().await;
    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/apis/v2beta1/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "HTTP still answers after stop: {refused:?}"
    );
}

// --- the JSON API on the gRPC port ---

#[every_backend]
async fn json_api_is_served_on_the_grpc_port_too() {
    let server = TestServer::start().await;
    let http = Http::at(server.url());
    http.get("/healthz").await.expect_ok();
    let run = http.create_run("via-grpc-port").await;
    let fetched = Http::new(&server)
        .get(&format!("/runs/{}", id_of(&run)))
        .await;
    assert_eq!(fetched.expect_ok()["display_name"], json!("via-grpc-port"));
    http.get("/nothing-here").await.expect_error(404, 5);
}

#[every_backend]
async fn unknown_grpc_method_is_still_unimplemented_on_the_shared_port() {
    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<pbjson_types::Empty, pbjson_types::Empty>::default();
    let result = grpc
        .unary(
            tonic::Request::new(pbjson_types::Empty {}),
            http::uri::PathAndQuery::from_static("/no.such.Service/Method"),
            codec,
        )
        .await;
    let status = result.expect_err("an unknown service must fail");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // A real grpc-status, not one a client infers from an HTTP 404.
    assert!(
        status.message().contains("/no.such.Service/Method"),
        "{status:?}"
    );
}
