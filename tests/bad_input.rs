//! The bad-input battery, over gRPC and JSON/HTTP: malformed protobuf, invalid UTF-8, huge and
//! deeply nested pipeline specs, absurd filters, garbage page tokens, unknown enum numbers, odd
//! run ids and over-limit messages. Each gets a clear error code, and the server still answers a
//! normal request afterwards.

mod common;

use common::*;
use pbjson_types::{Struct, Value, value::Kind};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use runledger::api::*;
use runledger::server::ServerOptions;
use runledger_testkit::every_backend;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const CREATE_RUN: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/CreateRun";
const REPORT_STATE: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/ReportRunState";

/// A codec that sends and receives raw bytes, to put arbitrary payloads on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `body` as the request message of `method`.
async fn send_raw(
    server: &TestServer,
    method: &'static str,
    body: Vec<u8>,
) -> Result<tonic::Response<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("channel ready");
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
}

/// The server still creates and reads a run.
async fn assert_still_serving(server: &TestServer) {
    let mut runs = server.runs().await;
    let created = create_run(&mut runs, new_run("still-serving")).await;
    let fetched = runs
        .get_run(GetRunRequest {
            run_id: created.run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get run after bad input")
        .into_inner();
    assert_eq!(fetched.run_id, created.run_id);
}

fn create_request(run: Run) -> CreateRunRequest {
    CreateRunRequest {
        run: Some(run),
        ..Default::default()
    }
}

fn with_spec(spec: Struct) -> Run {
    Run {
        display_name: "spec".into(),
        pipeline_source: Some(run::PipelineSource::PipelineSpec(spec.into())),
        ..Default::default()
    }
}

/// `{"a": {"a": ... {"leaf": true}}}`, `depth` structs deep.
fn nested_spec(depth: usize) -> Struct {
    let mut spec = Struct {
        fields: [(
            "leaf".to_owned(),
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        )]
        .into(),
    };
    for _ in 1..depth {
        spec = Struct {
            fields: [(
                "a".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(spec)),
                },
            )]
            .into(),
        };
    }
    spec
}

#[every_backend]
async fn malformed_protobuf_bytes_are_invalid_argument() {
    let server = TestServer::start().await;
    let valid = create_request(new_run("x")).encode_to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
        ("truncated", valid[..valid.len() - 1].to_vec()),
        // Field 2 (run), length-delimited, claiming 2^31 bytes that are not there.
        (
            "a length past the end",
            vec![0x12, 0x80, 0x80, 0x80, 0x80, 0x08, 0x01],
        ),
        // Field 2 with the varint wire type instead of a message.
        ("a wrong wire type", vec![0x10, 0x01]),
        ("an unterminated varint", vec![0x08, 0xff, 0xff, 0xff]),
    ];
    for (what, body) in cases {
        let message = expect_code(
            send_raw(&server, CREATE_RUN, body).await,
            Code::InvalidArgument,
        );
        assert!(
            message.contains("failed to decode Protobuf message"),
            "{what}: {message}"
        );
    }
    assert_still_serving(&server).await;
}

#[every_backend]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    let server = TestServer::start().await;
    // Run { display_name (3) = 0xff 0xfe, pipeline_id (6) = "p" } inside CreateRunRequest.run (2).
    let run = [0x1a, 0x02, 0xff, 0xfe, 0x32, 0x01, b'p'];
    let mut body = vec![0x12, run.len() as u8];
    body.extend_from_slice(&run);
    let message = expect_code(
        send_raw(&server, CREATE_RUN, body).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("UTF-8"), "{message}");

    // ReportRunStateRequest.run_id (1) with invalid UTF-8.
    let body = vec![0x0a, 0x02, 0xc3, 0x28, 0x10, 0x02];
    expect_code(
        send_raw(&server, REPORT_STATE, body).await,
        Code::InvalidArgument,
    );
    assert_still_serving(&server).await;
}

#[every_backend]
async fn a_pipeline_spec_nested_past_the_decoder_limit_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let message = expect_code(
        runs.create_run(create_request(with_spec(nested_spec(200))))
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("recursion limit"), "{message}");
    assert_still_serving(&server).await;
}

#[every_backend]
async fn a_moderately_nested_pipeline_spec_is_kept_intact() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let spec = nested_spec(30);
    let created = create_run(&mut runs, with_spec(spec.clone())).await;
    let fetched = runs
        .get_run(GetRunRequest {
            run_id: created.run_id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        fetched.pipeline_source,
        Some(run::PipelineSource::PipelineSpec(spec.into()))
    );
}

#[every_backend]
async fn a_request_over_the_message_limit_is_resource_exhausted() {
    let limit = 64 * 1024;
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            max_message_bytes: limit,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut runs = server.runs().await;
    let big = Struct {
        fields: [(
            "blob".to_owned(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(limit + 1))),
            },
        )]
        .into(),
    };
    let message = expect_code(
        runs.create_run(create_request(with_spec(big))).await,
        Code::ResourceExhausted,
    );
    assert!(message.contains("too large"), "{message}");

    // Just under the limit is fine.
    let fits = Struct {
        fields: [(
            "blob".to_owned(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(limit - 1024))),
            },
        )]
        .into(),
    };
    create_run(&mut runs, with_spec(fits)).await;
    assert_still_serving(&server).await;
}

#[every_backend]
async fn absurd_filters_are_invalid_argument_naming_the_problem() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    create_run(&mut runs, new_run("one")).await;
    let predicate = r#"{"operation":"EQUALS","key":"display_name","string_value":"x"}"#;
    let many = format!(r#"{{"predicates":[{}]}}"#, vec![predicate; 65].join(","));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let long = format!(
        r#"{{"predicates":[{{"operation":"EQUALS","key":"display_name","string_value":"{}"}}]}}"#,
        "x".repeat(70 * 1024)
    );
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not valid JSON"),
        ("[]".into(), "JSON object"),
        (deep, "not valid JSON"),
        (many, "65 predicates"),
        (long, "bytes long"),
        (r#"{"predicates":[],"extra":1}"#.into(), "unknown field"),
        (r#"{"predicates":{}}"#.into(), "array"),
        (
            r#"{"predicates":[{"operation":"EQUALS","key":"no_such_key","string_value":"x"}]}"#
                .into(),
            "predicate 1",
        ),
        (
            r#"{"predicates":[{"operation":99,"key":"display_name","string_value":"x"}]}"#.into(),
            "predicate 1",
        ),
        (
            r#"{"predicates":[{"operation":"EQUALS","key":"created_at","string_value":"x"}]}"#
                .into(),
            "predicate 1",
        ),
        (
            r#"{"predicates":[{"operation":"IN","key":"display_name","string_value":"x"}]}"#.into(),
            "predicate 1",
        ),
    ];
    for (filter, expected) in cases {
        let shown: String = filter.chars().take(60).collect();
        let message = expect_code(
            runs.list_runs(ListRunsRequest {
                filter,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(message.contains(expected), "filter {shown}: {message}");
    }
    assert_still_serving(&server).await;
}

#[every_backend]
async fn garbage_and_tampered_page_tokens_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for i in 0..3 {
        create_run(&mut runs, new_run(&format!("r{i}"))).await;
    }
    let first = runs
        .list_runs(ListRunsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let mut flipped = token.clone().into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let cases = vec![
        ("garbage", "garbage!!".to_owned()),
        ("truncated", token[..token.len() - 4].to_owned()),
        ("a flipped character", String::from_utf8(flipped).unwrap()),
        ("binary-looking", "\u{0}\u{1}\u{ffff}".to_owned()),
        ("very long", "A".repeat(1024 * 1024)),
    ];
    for (what, page_token) in cases {
        let message = expect_code(
            runs.list_runs(ListRunsRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(message.contains("page_token"), "{what}: {message}");
    }
    // A valid token sent with another scope.
    expect_code(
        runs.list_runs(ListRunsRequest {
            page_size: 1,
            page_token: token.clone(),
            namespace: "elsewhere".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    // And the genuine token still works.
    let second = runs
        .list_runs(ListRunsRequest {
            page_size: 1,
            page_token: token,
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.runs.len(), 1);
    assert_still_serving(&server).await;
}

#[every_backend]
async fn unknown_enum_numbers_in_report_run_state_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let run = create_run(&mut runs, new_run("enums")).await;
    for (state, expected_state) in [(42, 0), (-1, 0), (i32::MAX, 0), (2, 99), (0, 0)] {
        let message = expect_code(
            runs.report_run_state(ReportRunStateRequest {
                run_id: run.run_id.clone(),
                state,
                expected_state,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(
            message.contains("state"),
            "{state}/{expected_state}: {message}"
        );
    }
    // The run is untouched.
    let fetched = runs
        .get_run(GetRunRequest {
            run_id: run.run_id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched.state, RuntimeState::Pending as i32);
    assert_eq!(fetched.state_history.len(), 1);
    assert_still_serving(&server).await;
}

#[every_backend]
async fn run_ids_with_odd_characters_are_rejected_or_not_found() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let odd = [
        "a/b",
        "../../etc/passwd",
        "a b",
        "ü",
        "-leading-dash",
        "nul\u{0}byte",
        "%2e%2e",
        "\u{202e}rtl",
    ];
    for id in odd {
        let mut run = new_run("odd");
        run.run_id = id.to_owned();
        let message = expect_code(
            runs.create_run(create_request(run)).await,
            Code::InvalidArgument,
        );
        assert!(message.contains("run.run_id"), "{id:?}: {message}");
        // Looking one up is a plain NOT_FOUND.
        expect_code(
            runs.get_run(GetRunRequest {
                run_id: id.to_owned(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
    }
    let mut too_long = new_run("long");
    too_long.run_id = "x".repeat(129);
    expect_code(
        runs.create_run(create_request(too_long)).await,
        Code::InvalidArgument,
    );
    for run_id in [String::new(), "y".repeat(10_000)] {
        expect_code(
            runs.get_run(GetRunRequest {
                run_id,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
    }
    assert_still_serving(&server).await;
}

#[every_backend]
async fn out_of_range_list_parameters_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for request in [
        ListRunsRequest {
            page_size: -1,
            ..Default::default()
        },
        ListRunsRequest {
            page_size: i32::MIN,
            ..Default::default()
        },
        ListRunsRequest {
            sort_by: "created_at sideways".into(),
            ..Default::default()
        },
        ListRunsRequest {
            sort_by: "nope".into(),
            ..Default::default()
        },
        ListRunsRequest {
            namespace: "n".repeat(10_000),
            ..Default::default()
        },
    ] {
        expect_code(runs.list_runs(request).await, Code::InvalidArgument);
    }
    // A huge page size is capped, not refused.
    runs.list_runs(ListRunsRequest {
        page_size: i32::MAX,
        ..Default::default()
    })
    .await
    .expect("capped page size");
    assert_still_serving(&server).await;
}

/// Sends a raw HTTP request to the JSON API and returns (status, parsed JSON error body).
async fn http_bad(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let reply = common::rest::Http::new(server)
        .send_raw(method, path, body)
        .await;
    assert_eq!(reply.content_type, "application/json", "{}", reply.text);
    (reply.status.as_u16(), reply.json)
}

#[every_backend]
async fn bad_http_input_gets_a_json_error_and_the_server_keeps_serving() {
    let mut config = Config::default();
    config.server.max_http_body_bytes = 64 * 1024;
    let server = TestServer::start_with(config).await;
    let deep = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let nested_spec = format!(r#"{{"display_name":"d","pipeline_spec":{deep}}}"#);
    let huge_spec = format!(
        r#"{{"display_name":"h","pipeline_spec":{{"blob":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let cases: Vec<(reqwest::Method, String, Vec<u8>, u16)> = vec![
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            b"\xff\xfe{not utf8".to_vec(),
            400,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            b"{\"display_name\": \"a\"".to_vec(),
            400,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            b"[1, 2, 3]".to_vec(),
            400,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            nested_spec.into_bytes(),
            400,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            huge_spec.into_bytes(),
            413,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs".into(),
            br#"{"display_name":"s","pipeline_id":"p","storage_state":99}"#.to_vec(),
            400,
        ),
        (
            reqwest::Method::GET,
            "/apis/v2beta1/runs?page_token=%00%01garbage".into(),
            Vec::new(),
            400,
        ),
        (
            reqwest::Method::GET,
            "/apis/v2beta1/runs?page_size=-5".into(),
            Vec::new(),
            400,
        ),
        (
            reqwest::Method::GET,
            "/apis/v2beta1/runs?filter=%7B%22predicates%22%3A7%7D".into(),
            Vec::new(),
            400,
        ),
        (
            reqwest::Method::GET,
            "/apis/v2beta1/runs/..%2F..%2Fetc".into(),
            Vec::new(),
            404,
        ),
        (
            reqwest::Method::POST,
            "/apis/v2beta1/runs/x:reportState".into(),
            br#"{"state": 42}"#.to_vec(),
            400,
        ),
    ];
    for (method, path, body, expected) in cases {
        let (status, error) = http_bad(&server, method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {error}");
        assert!(error["code"].is_i64(), "{method} {path}: {error}");
        assert!(
            !error["message"].as_str().unwrap_or_default().is_empty(),
            "{method} {path}: {error}"
        );
    }
    assert_still_serving(&server).await;
    let (status, _) = http_bad(
        &server,
        reqwest::Method::GET,
        "/apis/v2beta1/healthz",
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
}
