//! gRPC reflection (v1 and v1alpha, so grpcurl of any version works) and health.

mod common;

use common::*;
use prost::Message;
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

const RUN_SERVICE: &str = "kubeflow.pipelines.backend.api.v2beta1.RunService";
const EXPERIMENT_SERVICE: &str = "kubeflow.pipelines.backend.api.v2beta1.ExperimentService";

async fn ask_v1(
    server: &TestServer,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let outbound = tokio_stream::iter([v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut replies = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    replies
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_v1_lists_both_services_and_serves_their_files_with_http_routes() {
    let server = TestServer::start().await;
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;

    let MessageResponse::ListServicesResponse(list) =
        ask_v1(&server, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [RUN_SERVICE, EXPERIMENT_SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let MessageResponse::FileDescriptorResponse(files) = ask_v1(
        &server,
        MessageRequest::FileContainingSymbol(RUN_SERVICE.into()),
    )
    .await
    else {
        panic!("not a file descriptor");
    };
    let run_file = files
        .file_descriptor_proto
        .iter()
        .find(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap()
                .name()
                == "run.proto"
        })
        .expect("run.proto served");
    let decoded = prost_types::FileDescriptorProto::decode(run_file.as_slice()).unwrap();
    let methods: Vec<_> = decoded.service[0]
        .method
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    for rpc in [
        "CreateRun",
        "GetRun",
        "ListRuns",
        "ArchiveRun",
        "UnarchiveRun",
        "DeleteRun",
        "TerminateRun",
        "RetryRun",
        "ReportRunState",
        "WatchRuns",
    ] {
        assert!(
            methods.iter().any(|m| m == rpc),
            "{rpc} missing from {methods:?}"
        );
    }
    // The google.api.http options travel with the descriptor, for gateways.
    let raw = String::from_utf8_lossy(run_file);
    assert!(
        raw.contains("/apis/v2beta1/runs/{run_id}:terminate"),
        "http routes missing"
    );
    assert!(
        raw.contains("Records pipeline runs"),
        "doc comments missing"
    );
}

#[tokio::test]
async fn reflection_v1alpha_answers_as_grpcurl_1_8_asks() {
    let server = TestServer::start().await;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let outbound = tokio_stream::iter([v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            EXPERIMENT_SERVICE.into(),
        )),
    }]);
    let mut replies = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    let reply = replies
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::FileDescriptorResponse(files) = reply else {
        panic!("not a file descriptor")
    };
    let names: Vec<_> = files
        .file_descriptor_proto
        .iter()
        .map(|b| {
            prost_types::FileDescriptorProto::decode(b.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert!(names.contains(&"experiment.proto".to_owned()), "{names:?}");
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["", RUN_SERVICE, EXPERIMENT_SERVICE] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}
