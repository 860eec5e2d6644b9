//! RecurringRunService over gRPC and JSON/HTTP against a real server: create (every rule that
//! refuses one, with its code), get, list, enable, disable, delete; what archiving and deleting
//! an experiment does to its recurring runs; who may do what; health and reflection of the new
//! services.

mod common;

use std::sync::Arc;

use common::rest::Http;
use common::{Config, TestServer, create_experiment, expect_code};
use prost::Message;
use runledger::api::pipeline_service_client::PipelineServiceClient;
use runledger::api::recurring_run_service_client::RecurringRunServiceClient;
use runledger::api::*;
use runledger::auth::{Auth, AuthConfig, hash_token};
use runledger::server::ServerOptions;
use runledger::wkt::{StructBytes, Timestamp};
use runledger_testkit::every_backend;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

const PIPELINE_SERVICE: &str = "kubeflow.pipelines.backend.api.v2beta1.PipelineService";
const RECURRING_RUN_SERVICE: &str = "kubeflow.pipelines.backend.api.v2beta1.RecurringRunService";

fn spec() -> StructBytes {
    let tree: pbjson_types::Struct = serde_json::from_value(json!({
        "pipelineInfo": {"name": "nightly"},
        "root": {"dag": {"tasks": {}}},
    }))
    .unwrap();
    tree.into()
}

/// A recurring run that the tests never see fire: daily at 03:00 from 2099 on.
fn daily(name: &str) -> RecurringRun {
    RecurringRun {
        display_name: name.to_owned(),
        max_concurrency: 1,
        mode: recurring_run::Mode::Enable as i32,
        trigger: Some(Trigger {
            trigger: Some(trigger::Trigger::CronSchedule(CronSchedule {
                cron: "0 0 3 * * *".into(),
                start_time: Some(Timestamp::parse_rfc3339("2099-01-01T00:00:00Z").unwrap()),
                end_time: None,
            })),
        }),
        pipeline_source: Some(recurring_run::PipelineSource::PipelineSpec(spec())),
        ..Default::default()
    }
}

async fn client(server: &TestServer) -> RecurringRunServiceClient<Channel> {
    RecurringRunServiceClient::new(server.channel().await)
}

async fn create(c: &mut RecurringRunServiceClient<Channel>, r: RecurringRun) -> RecurringRun {
    c.create_recurring_run(CreateRecurringRunRequest {
        recurring_run: Some(r),
    })
    .await
    .expect("create recurring run")
    .into_inner()
}

async fn get(c: &mut RecurringRunServiceClient<Channel>, id: &str) -> RecurringRun {
    c.get_recurring_run(GetRecurringRunRequest {
        recurring_run_id: id.to_owned(),
    })
    .await
    .expect("get recurring run")
    .into_inner()
}

#[every_backend]
async fn a_recurring_run_is_created_in_the_default_experiment_and_read_back() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let created = create(
        &mut c,
        RecurringRun {
            recurring_run_id: "ignored".into(),
            description: "nightly".into(),
            service_account: "runner".into(),
            ..daily("nightly")
        },
    )
    .await;
    assert_ne!(created.recurring_run_id, "ignored");
    assert_eq!(created.status, recurring_run::Status::Enabled as i32);
    assert_eq!(created.mode, recurring_run::Mode::Enable as i32);
    assert!(created.created_at.is_some());
    assert_eq!(created.updated_at, created.created_at);
    let mut experiments = server.experiments().await;
    let default = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: created.experiment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.display_name, "Default");
    assert_eq!(get(&mut c, &created.recurring_run_id).await, created);

    // MODE_UNSPECIFIED creates it disabled, as KFP does.
    let unspecified = create(
        &mut c,
        RecurringRun {
            mode: 0,
            ..daily("quiet")
        },
    )
    .await;
    assert_eq!(unspecified.status, recurring_run::Status::Disabled as i32);
    assert_eq!(unspecified.mode, recurring_run::Mode::Disable as i32);
}

#[every_backend]
async fn bad_recurring_runs_are_invalid_arguments_naming_the_field() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let with_trigger = |trigger: trigger::Trigger| RecurringRun {
        trigger: Some(Trigger {
            trigger: Some(trigger),
        }),
        ..daily("r")
    };
    let cron = |expr: &str| {
        with_trigger(trigger::Trigger::CronSchedule(CronSchedule {
            cron: expr.into(),
            ..Default::default()
        }))
    };
    let at = |s: &str| Some(Timestamp::parse_rfc3339(s).unwrap());
    let many: std::collections::HashMap<String, pbjson_types::Value> = (0..1001)
        .map(|i| (format!("p{i}"), pbjson_types::Value::default()))
        .collect();
    for (r, needle) in [
        (daily(""), "display_name is required"),
        (
            RecurringRun {
                trigger: None,
                ..daily("r")
            },
            "trigger is required",
        ),
        (cron("0 0 25 * * *"), "hour field"),
        (cron("@sometimes"), "unknown descriptor"),
        (cron("0 0 0 30 2 *"), "matches no time"),
        (
            with_trigger(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                interval_second: 0,
                ..Default::default()
            })),
            "interval_second must be at least 1",
        ),
        (
            with_trigger(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                interval_second: 60,
                start_time: at("2030-01-02T00:00:00Z"),
                end_time: at("2030-01-01T00:00:00Z"),
            })),
            "before it starts",
        ),
        (
            with_trigger(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                interval_second: 60,
                start_time: Some(Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                end_time: None,
            })),
            "start_time",
        ),
        (
            RecurringRun {
                max_concurrency: 0,
                ..daily("r")
            },
            "max_concurrency must be 1 to 10",
        ),
        (
            RecurringRun {
                max_concurrency: 11,
                ..daily("r")
            },
            "not 11",
        ),
        (
            RecurringRun {
                pipeline_source: None,
                ..daily("r")
            },
            "pipeline_source is required",
        ),
        (
            RecurringRun {
                runtime_config: Some(RuntimeConfig {
                    parameters: many,
                    pipeline_root: String::new(),
                }),
                ..daily("r")
            },
            "1001 entries",
        ),
    ] {
        let result = c
            .create_recurring_run(CreateRecurringRunRequest {
                recurring_run: Some(r.clone()),
            })
            .await;
        let message = expect_code(result, Code::InvalidArgument);
        assert!(message.contains(needle), "{needle}: {message}");
    }
    // A namespace without an experiment is fine: that namespace's Default experiment.
    let namespaced = create(
        &mut c,
        RecurringRun {
            namespace: "elsewhere".into(),
            ..daily("r")
        },
    )
    .await;
    assert_eq!(namespaced.namespace, "elsewhere");
}

#[every_backend]
async fn what_a_recurring_run_names_must_exist() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "e", "team-a").await;
    expect_code(
        c.create_recurring_run(CreateRecurringRunRequest {
            recurring_run: Some(RecurringRun {
                experiment_id: "no-such-experiment".into(),
                ..daily("r")
            }),
        })
        .await,
        Code::NotFound,
    );
    let message = expect_code(
        c.create_recurring_run(CreateRecurringRunRequest {
            recurring_run: Some(RecurringRun {
                experiment_id: exp.experiment_id.clone(),
                namespace: "team-b".into(),
                ..daily("r")
            }),
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("team-a"), "{message}");

    let mut pipelines = PipelineServiceClient::new(server.channel().await);
    let empty = pipelines
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(Pipeline {
                name: "empty".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    for (reference, needle) in [
        (
            PipelineVersionReference {
                pipeline_id: "missing".into(),
                pipeline_version_id: String::new(),
            },
            "missing",
        ),
        (
            PipelineVersionReference {
                pipeline_id: empty.pipeline_id.clone(),
                pipeline_version_id: String::new(),
            },
            "no version",
        ),
        (
            PipelineVersionReference {
                pipeline_id: String::new(),
                pipeline_version_id: "missing-version".into(),
            },
            "missing-version",
        ),
    ] {
        let message = expect_code(
            c.create_recurring_run(CreateRecurringRunRequest {
                recurring_run: Some(RecurringRun {
                    pipeline_source: Some(recurring_run::PipelineSource::PipelineVersionReference(
                        reference,
                    )),
                    ..daily("r")
                }),
            })
            .await,
            Code::NotFound,
        );
        assert!(message.contains(needle), "{needle}: {message}");
    }

    // A pipeline alone is kept as such: each run takes its latest version then.
    pipelines
        .create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: empty.pipeline_id.clone(),
            pipeline_version: Some(PipelineVersion {
                pipeline_spec: Some(spec()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let latest = create(
        &mut c,
        RecurringRun {
            pipeline_source: Some(recurring_run::PipelineSource::PipelineVersionReference(
                PipelineVersionReference {
                    pipeline_id: empty.pipeline_id.clone(),
                    pipeline_version_id: String::new(),
                },
            )),
            ..daily("latest")
        },
    )
    .await;
    assert_eq!(
        latest.pipeline_source,
        Some(recurring_run::PipelineSource::PipelineVersionReference(
            PipelineVersionReference {
                pipeline_id: empty.pipeline_id,
                pipeline_version_id: String::new(),
            }
        ))
    );
}

#[every_backend]
async fn enable_disable_and_delete() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let r = create(&mut c, daily("toggled")).await;
    let id = r.recurring_run_id.clone();
    c.disable_recurring_run(DisableRecurringRunRequest {
        recurring_run_id: id.clone(),
    })
    .await
    .expect("disable");
    let disabled = get(&mut c, &id).await;
    assert_eq!(disabled.status, recurring_run::Status::Disabled as i32);
    assert!(disabled.updated_at >= r.updated_at);
    // Repeating it changes nothing.
    c.disable_recurring_run(DisableRecurringRunRequest {
        recurring_run_id: id.clone(),
    })
    .await
    .expect("disable again");
    assert_eq!(get(&mut c, &id).await, disabled);
    c.enable_recurring_run(EnableRecurringRunRequest {
        recurring_run_id: id.clone(),
    })
    .await
    .expect("enable");
    assert_eq!(
        get(&mut c, &id).await.status,
        recurring_run::Status::Enabled as i32
    );
    c.delete_recurring_run(DeleteRecurringRunRequest {
        recurring_run_id: id.clone(),
        propagation_policy: DeletePropagationPolicy::Foreground as i32,
    })
    .await
    .expect("delete");
    expect_code(
        c.get_recurring_run(GetRecurringRunRequest {
            recurring_run_id: id.clone(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.enable_recurring_run(EnableRecurringRunRequest {
            recurring_run_id: id.clone(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.disable_recurring_run(DisableRecurringRunRequest {
            recurring_run_id: id.clone(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_recurring_run(DeleteRecurringRunRequest {
            recurring_run_id: id,
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.get_recurring_run(GetRecurringRunRequest::default()).await,
        Code::InvalidArgument,
    );
}

#[every_backend]
async fn lists_are_scoped_filtered_sorted_and_paged() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut experiments = server.experiments().await;
    let a = create_experiment(&mut experiments, "a", "team-a").await;
    let b = create_experiment(&mut experiments, "b", "team-b").await;
    for i in 0..3 {
        create(
            &mut c,
            RecurringRun {
                experiment_id: a.experiment_id.clone(),
                mode: if i == 1 {
                    recurring_run::Mode::Disable as i32
                } else {
                    recurring_run::Mode::Enable as i32
                },
                ..daily(&format!("a{i}"))
            },
        )
        .await;
    }
    create(
        &mut c,
        RecurringRun {
            experiment_id: b.experiment_id.clone(),
            ..daily("b0")
        },
    )
    .await;
    let names = |response: ListRecurringRunsResponse| -> Vec<String> {
        response
            .recurring_runs
            .into_iter()
            .map(|r| r.display_name)
            .collect()
    };
    let in_a = c
        .list_recurring_runs(ListRecurringRunsRequest {
            experiment_id: a.experiment_id.clone(),
            sort_by: "display_name desc".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_a.total_size, 3);
    let token = in_a.next_page_token.clone();
    assert_eq!(names(in_a), ["a2", "a1"]);
    let rest = c
        .list_recurring_runs(ListRecurringRunsRequest {
            experiment_id: a.experiment_id.clone(),
            page_token: token.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(rest), ["a0"]);
    // The token is bound to its scope.
    expect_code(
        c.list_recurring_runs(ListRecurringRunsRequest {
            experiment_id: b.experiment_id.clone(),
            page_token: token,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    let enabled = c
        .list_recurring_runs(ListRecurringRunsRequest {
            namespace: "team-a".into(),
            filter:
                r#"{"predicates":[{"key":"status","operation":"EQUALS","string_value":"ENABLED"}]}"#
                    .into(),
            sort_by: "name".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(enabled), ["a0", "a2"]);
    let everywhere = c
        .list_recurring_runs(ListRecurringRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everywhere.total_size, 4);

    for request in [
        ListRecurringRunsRequest {
            page_size: -1,
            ..Default::default()
        },
        ListRecurringRunsRequest {
            sort_by: "state".into(),
            ..Default::default()
        },
        ListRecurringRunsRequest {
            filter: r#"{"predicates":[{"key":"status","operation":"EQUALS","string_value":"ON"}]}"#
                .into(),
            ..Default::default()
        },
    ] {
        expect_code(c.list_recurring_runs(request).await, Code::InvalidArgument);
    }
    expect_code(
        c.list_recurring_runs(ListRecurringRunsRequest {
            experiment_id: "no-such-experiment".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn archiving_an_experiment_disables_its_recurring_runs_and_deleting_it_deletes_them() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "seasonal", "").await;
    let other = create_experiment(&mut experiments, "other", "").await;
    let inside = create(
        &mut c,
        RecurringRun {
            experiment_id: exp.experiment_id.clone(),
            ..daily("inside")
        },
    )
    .await;
    let outside = create(
        &mut c,
        RecurringRun {
            experiment_id: other.experiment_id.clone(),
            ..daily("outside")
        },
    )
    .await;
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .expect("archive");
    let archived = get(&mut c, &inside.recurring_run_id).await;
    assert_eq!(archived.status, recurring_run::Status::Disabled as i32);
    assert!(archived.updated_at >= inside.updated_at);
    // Unarchiving leaves it disabled (as in KFP); enabling it is explicit.
    experiments
        .unarchive_experiment(UnarchiveExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .expect("unarchive");
    assert_eq!(
        get(&mut c, &inside.recurring_run_id).await.status,
        recurring_run::Status::Disabled as i32
    );
    assert_eq!(
        get(&mut c, &outside.recurring_run_id).await.status,
        recurring_run::Status::Enabled as i32
    );
    experiments
        .delete_experiment(DeleteExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .expect("delete experiment");
    expect_code(
        c.get_recurring_run(GetRecurringRunRequest {
            recurring_run_id: inside.recurring_run_id,
        })
        .await,
        Code::NotFound,
    );
    get(&mut c, &outside.recurring_run_id).await;
}

#[every_backend]
async fn the_json_routes_speak_kfps_shapes_and_codes() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let created = http
        .post(
            "/recurringruns",
            json!({
                "display_name": "every minute",
                "max_concurrency": "2",
                "mode": "ENABLE",
                "no_catchup": true,
                "trigger": {"periodic_schedule": {
                    "interval_second": 60, "start_time": "2099-01-01T00:00:00Z"
                }},
                "pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {}},
            }),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(created["status"], "ENABLED");
    assert_eq!(created["max_concurrency"], "2");
    assert_eq!(created["no_catchup"], true);
    assert_eq!(
        created["trigger"]["periodic_schedule"]["interval_second"],
        "60"
    );
    let id = created["recurring_run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        http.get(&format!("/recurringruns/{id}")).await.expect_ok(),
        &created
    );
    let listed = http
        .get("/recurringruns?page_size=5")
        .await
        .expect_ok()
        .clone();
    // KFP's JSON names the list "recurringRuns".
    assert_eq!(listed["recurringRuns"][0], created);
    assert_eq!(listed["total_size"], 1);

    assert_eq!(
        http.post_raw(&format!("/recurringruns/{id}:disable"), "")
            .await
            .expect_ok(),
        &json!({})
    );
    assert_eq!(
        http.get(&format!("/recurringruns/{id}")).await.expect_ok()["status"],
        "DISABLED"
    );
    http.post_raw(&format!("/recurringruns/{id}:enable"), "")
        .await
        .expect_ok();
    http.post_raw(&format!("/recurringruns/{id}:pause"), "")
        .await
        .expect_error(404, 5);
    http.post(
        "/recurringruns",
        json!({"display_name": "no trigger", "max_concurrency": 1}),
    )
    .await
    .expect_error(400, 3);
    http.post(
        "/recurringruns",
        json!({"display_name": "x", "colour": "red"}),
    )
    .await
    .expect_error(400, 3);
    assert_eq!(
        http.delete(&format!(
            "/recurringruns/{id}?propagation_policy=BACKGROUND"
        ))
        .await
        .expect_ok(),
        &json!({})
    );
    http.get(&format!("/recurringruns/{id}"))
        .await
        .expect_error(404, 5);
    http.delete(&format!("/recurringruns/{id}"))
        .await
        .expect_error(404, 5);
    http.get("/recurringruns?experiment_id=missing")
        .await
        .expect_error(404, 5);
}

const EDITOR_A: &str = "editor-a-token";
const VIEWER_A: &str = "viewer-a-token";
const VIEWER_B: &str = "viewer-b-token";

fn by<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[every_backend]
async fn viewers_read_editors_write_and_other_namespaces_see_nothing() {
    let text = format!(
        r#"
[[principals]]
name = "alice"
token_sha256 = "{}"
[[principals]]
name = "vera"
token_sha256 = "{}"
[[principals]]
name = "bob"
token_sha256 = "{}"
[[grants]]
who = "alice"
namespace = "team-a"
role = "editor"
[[grants]]
who = "vera"
namespace = "team-a"
role = "viewer"
[[grants]]
who = "bob"
namespace = "team-b"
role = "editor"
"#,
        hash_token(EDITOR_A),
        hash_token(VIEWER_A),
        hash_token(VIEWER_B)
    );
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            auth: Some(Arc::new(Auth::from_config(
                AuthConfig::parse(&text).expect("config"),
            ))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut c = client(&server).await;
    let r = c
        .create_recurring_run(by(
            EDITOR_A,
            CreateRecurringRunRequest {
                recurring_run: Some(RecurringRun {
                    namespace: "team-a".into(),
                    ..daily("a's")
                }),
            },
        ))
        .await
        .expect("alice creates in team-a")
        .into_inner();
    let id = r.recurring_run_id.clone();
    c.get_recurring_run(by(
        VIEWER_A,
        GetRecurringRunRequest {
            recurring_run_id: id.clone(),
        },
    ))
    .await
    .expect("vera reads");
    expect_code(
        c.disable_recurring_run(by(
            VIEWER_A,
            DisableRecurringRunRequest {
                recurring_run_id: id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.create_recurring_run(by(
            VIEWER_A,
            CreateRecurringRunRequest {
                recurring_run: Some(RecurringRun {
                    namespace: "team-a".into(),
                    ..daily("vera's")
                }),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.get_recurring_run(by(
            VIEWER_B,
            GetRecurringRunRequest {
                recurring_run_id: id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_recurring_run(by(
            VIEWER_B,
            DeleteRecurringRunRequest {
                recurring_run_id: id.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.list_recurring_runs(by(VIEWER_B, ListRecurringRunsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.list_recurring_runs(ListRecurringRunsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    c.delete_recurring_run(by(
        EDITOR_A,
        DeleteRecurringRunRequest {
            recurring_run_id: id,
            ..Default::default()
        },
    ))
    .await
    .expect("alice deletes");
}

#[every_backend]
async fn health_and_reflection_cover_the_new_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1;

    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [PIPELINE_SERVICE, RECURRING_RUN_SERVICE] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }

    let mut reflection =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let ask = |symbol: &str| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([
            ask(PIPELINE_SERVICE),
            ask(RECURRING_RUN_SERVICE),
        ]))
        .await
        .unwrap()
        .into_inner();
    for (file, methods, route) in [
        (
            "pipeline.proto",
            &[
                "CreatePipeline",
                "GetPipeline",
                "GetPipelineByName",
                "ListPipelines",
                "DeletePipeline",
                "CreatePipelineAndVersion",
                "CreatePipelineVersion",
                "GetPipelineVersion",
                "ListPipelineVersions",
                "DeletePipelineVersion",
                "UpdatePipeline",
                "UpdatePipelineVersion",
            ][..],
            "/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}",
        ),
        (
            "recurring_run.proto",
            &[
                "CreateRecurringRun",
                "GetRecurringRun",
                "ListRecurringRuns",
                "EnableRecurringRun",
                "DisableRecurringRun",
                "DeleteRecurringRun",
            ][..],
            "/apis/v2beta1/recurringruns/{recurring_run_id}:enable",
        ),
    ] {
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("not a file descriptor");
        };
        let raw = files
            .file_descriptor_proto
            .iter()
            .find(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice())
                    .unwrap()
                    .name()
                    == file
            })
            .unwrap_or_else(|| panic!("{file} not served"));
        let proto = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
        let served: Vec<_> = proto.service[0]
            .method
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(served, methods, "{file}");
        // The google.api.http routes travel with the descriptor, for gateways.
        assert!(
            String::from_utf8_lossy(raw).contains(route),
            "{route} missing from {file}"
        );
    }
}
