//! PipelineService over gRPC against a real server: pipelines and versions, their names, lists,
//! updates and deletion rules, runs that name a version, and who may do what to shared and
//! namespaced pipelines. Every error path with its code.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Config, TestServer, expect_code};
use runledger::api::pipeline_service_client::PipelineServiceClient;
use runledger::api::*;
use runledger::auth::{Auth, AuthConfig, hash_token};
use runledger::server::ServerOptions;
use runledger::wkt::StructBytes;
use runledger_testkit::every_backend;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn spec(name: &str) -> StructBytes {
    let tree: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": name},
        "root": {"dag": {"tasks": {}}},
        "schemaVersion": "2.1.0",
    }))
    .unwrap();
    tree.into()
}

async fn client(server: &TestServer) -> PipelineServiceClient<Channel> {
    PipelineServiceClient::new(server.channel().await)
}

fn named(name: &str) -> Pipeline {
    Pipeline {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn version_with(spec_name: &str) -> PipelineVersion {
    PipelineVersion {
        pipeline_spec: Some(spec(spec_name)),
        ..Default::default()
    }
}

/// A pipeline with its first version.
async fn pipeline_and_version(
    client: &mut PipelineServiceClient<Channel>,
    name: &str,
) -> (Pipeline, PipelineVersion) {
    let pipeline = client
        .create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(named(name)),
            pipeline_version: Some(version_with("my-pipeline")),
        })
        .await
        .expect("create pipeline and version")
        .into_inner();
    let versions = client
        .list_pipeline_versions(ListPipelineVersionsRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list versions")
        .into_inner()
        .pipeline_versions;
    (pipeline, versions.into_iter().next().expect("a version"))
}

async fn add_version(
    client: &mut PipelineServiceClient<Channel>,
    pipeline_id: &str,
    name: &str,
) -> PipelineVersion {
    client
        .create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: pipeline_id.to_owned(),
            pipeline_version: Some(PipelineVersion {
                name: name.to_owned(),
                ..version_with("my-pipeline")
            }),
        })
        .await
        .expect("create version")
        .into_inner()
}

#[every_backend]
async fn a_pipeline_is_created_found_by_id_and_by_name_and_listed() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let created = c
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(Pipeline {
                display_name: "Nightly training".into(),
                description: "trains".into(),
                namespace: "team-a".into(),
                tags: HashMap::from([("team".into(), "ml".into())]),
                pipeline_id: "ignored".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create")
        .into_inner();
    assert_ne!(created.pipeline_id, "ignored");
    // name defaults to display_name.
    assert_eq!(created.name, "Nightly training");
    assert!(created.created_at.is_some());

    let got = c
        .get_pipeline(GetPipelineRequest {
            pipeline_id: created.pipeline_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    let by_name = c
        .get_pipeline_by_name(GetPipelineByNameRequest {
            namespace: "team-a".into(),
            name: "Nightly training".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.pipeline_id, created.pipeline_id);
    // The shared pipelines (namespace "") are another scope.
    let message = expect_code(
        c.get_pipeline_by_name(GetPipelineByNameRequest {
            namespace: String::new(),
            name: "Nightly training".into(),
        })
        .await,
        Code::NotFound,
    );
    assert!(message.contains("Nightly training"), "{message}");
    let listed = c
        .list_pipelines(ListPipelinesRequest {
            namespace: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 1);
    assert_eq!(listed.pipelines, vec![created]);
    let shared = c
        .list_pipelines(ListPipelinesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.total_size, 0);
}

#[every_backend]
async fn bad_pipelines_are_invalid_arguments_naming_the_field() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let too_many: HashMap<String, String> =
        (0..21).map(|i| (format!("k{i}"), "v".into())).collect();
    for (pipeline, needle) in [
        (Pipeline::default(), "pipeline.name is required"),
        (named(&"x".repeat(513)), "pipeline.name is 513 bytes"),
        (
            Pipeline {
                tags: too_many,
                ..named("p")
            },
            "21 tags",
        ),
        (
            Pipeline {
                tags: HashMap::from([("a.b".into(), "v".into())]),
                ..named("p")
            },
            "\"a.b\" is not a valid tag key",
        ),
        (
            Pipeline {
                tags: HashMap::from([("k".into(), "v".repeat(64))]),
                ..named("p")
            },
            "longer than 63",
        ),
    ] {
        let message = expect_code(
            c.create_pipeline(CreatePipelineRequest {
                pipeline: Some(pipeline),
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(message.contains(needle), "{needle}: {message}");
    }
}

#[every_backend]
async fn pipeline_names_are_unique_per_namespace() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let first = c
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(named("etl")),
        })
        .await
        .unwrap()
        .into_inner();
    let message = expect_code(
        c.create_pipeline(CreatePipelineRequest {
            pipeline: Some(named("etl")),
        })
        .await,
        Code::AlreadyExists,
    );
    assert!(message.contains(&first.pipeline_id), "{message}");
    // Also through CreatePipelineAndVersion, which then creates no version either.
    expect_code(
        c.create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(named("etl")),
            pipeline_version: Some(version_with("etl")),
        })
        .await,
        Code::AlreadyExists,
    );
    c.create_pipeline(CreatePipelineRequest {
        pipeline: Some(Pipeline {
            namespace: "other".into(),
            ..named("etl")
        }),
    })
    .await
    .expect("the same name in another namespace");
}

#[every_backend]
async fn versions_hold_a_checked_spec_and_unique_names() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let (pipeline, first) = pipeline_and_version(&mut c, "train").await;
    // The first version takes the pipeline's name.
    assert_eq!(first.name, "train");
    assert_eq!(first.pipeline_id, pipeline.pipeline_id);
    assert_eq!(
        first.pipeline_spec.as_ref().map(|s| s.to_struct().unwrap()),
        Some(spec("my-pipeline").to_struct().unwrap())
    );

    // Without a name, a version is named by its spec's pipelineInfo.name.
    let unnamed = c
        .create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            pipeline_version: Some(version_with("from-the-spec")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unnamed.name, "from-the-spec");
    assert_eq!(unnamed.display_name, "from-the-spec");

    expect_code(
        c.create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            pipeline_version: Some(version_with("from-the-spec")),
        })
        .await,
        Code::AlreadyExists,
    );
    let not_a_spec: pbjson_types::Struct =
        serde_json::from_value(serde_json::json!({"root": {}})).unwrap();
    for (version, needle) in [
        (PipelineVersion::default(), "pipeline_spec is required"),
        (
            PipelineVersion {
                package_url: Some(Url {
                    pipeline_url: "https://example.com/p.yaml".into(),
                }),
                ..Default::default()
            },
            "does not download",
        ),
        (
            PipelineVersion {
                pipeline_spec: Some(not_a_spec.into()),
                ..Default::default()
            },
            "pipelineInfo.name is missing",
        ),
        (
            PipelineVersion {
                pipeline_id: "another".into(),
                ..version_with("x")
            },
            "differs from pipeline_id",
        ),
    ] {
        let message = expect_code(
            c.create_pipeline_version(CreatePipelineVersionRequest {
                pipeline_id: pipeline.pipeline_id.clone(),
                pipeline_version: Some(version),
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(message.contains(needle), "{needle}: {message}");
    }
    expect_code(
        c.create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: "no-such-pipeline".into(),
            pipeline_version: Some(version_with("x")),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: String::new(),
            pipeline_version: Some(version_with("x")),
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(named("no-spec")),
            pipeline_version: Some(PipelineVersion::default()),
        })
        .await,
        Code::InvalidArgument,
    );
}

#[every_backend]
async fn versions_are_found_only_under_their_pipeline_and_listed_in_pages() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let (pipeline, first) = pipeline_and_version(&mut c, "a").await;
    let (other, _) = pipeline_and_version(&mut c, "b").await;
    for i in 2..=5 {
        add_version(&mut c, &pipeline.pipeline_id, &format!("v{i}")).await;
    }
    let got = c
        .get_pipeline_version(GetPipelineVersionRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            pipeline_version_id: first.pipeline_version_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);
    for (pipeline_id, version_id) in [
        (other.pipeline_id.clone(), first.pipeline_version_id.clone()),
        (pipeline.pipeline_id.clone(), "no-such-version".to_owned()),
    ] {
        expect_code(
            c.get_pipeline_version(GetPipelineVersionRequest {
                pipeline_id,
                pipeline_version_id: version_id,
            })
            .await,
            Code::NotFound,
        );
    }

    let mut names = Vec::new();
    let mut request = ListPipelineVersionsRequest {
        pipeline_id: pipeline.pipeline_id.clone(),
        page_size: 2,
        sort_by: "name desc".into(),
        ..Default::default()
    };
    loop {
        let page = c
            .list_pipeline_versions(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 5);
        names.extend(page.pipeline_versions.into_iter().map(|v| v.name));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
        request.sort_by.clear();
    }
    assert_eq!(names, ["v5", "v4", "v3", "v2", "a"]);
    expect_code(
        c.list_pipeline_versions(ListPipelineVersionsRequest {
            pipeline_id: "no-such-pipeline".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.list_pipeline_versions(ListPipelineVersionsRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            filter: r#"{"predicates":[{"key":"state","operation":"EQUALS","string_value":"x"}]}"#
                .into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
}

#[every_backend]
async fn a_pipeline_with_versions_is_deleted_only_with_cascade() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let (pipeline, first) = pipeline_and_version(&mut c, "doomed").await;
    let message = expect_code(
        c.delete_pipeline(DeletePipelineRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            cascade: false,
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains("cascade"), "{message}");
    c.delete_pipeline(DeletePipelineRequest {
        pipeline_id: pipeline.pipeline_id.clone(),
        cascade: true,
    })
    .await
    .expect("cascade");
    expect_code(
        c.get_pipeline(GetPipelineRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.get_pipeline_version(GetPipelineVersionRequest {
            pipeline_id: String::new(),
            pipeline_version_id: first.pipeline_version_id.clone(),
        })
        .await,
        Code::NotFound,
    );
    // Its name is free again.
    pipeline_and_version(&mut c, "doomed").await;
    expect_code(
        c.delete_pipeline(DeletePipelineRequest {
            pipeline_id: pipeline.pipeline_id,
            cascade: true,
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_pipeline(DeletePipelineRequest::default()).await,
        Code::InvalidArgument,
    );
}

#[every_backend]
async fn deleting_a_version_leaves_the_runs_that_ran_it() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut runs = server.runs().await;
    let (pipeline, first) = pipeline_and_version(&mut c, "kept").await;
    let reference = PipelineVersionReference {
        pipeline_id: pipeline.pipeline_id.clone(),
        pipeline_version_id: first.pipeline_version_id.clone(),
    };
    let run = runs
        .create_run(CreateRunRequest {
            run: Some(Run {
                display_name: "ran it".into(),
                pipeline_source: Some(run::PipelineSource::PipelineVersionReference(
                    reference.clone(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.delete_pipeline_version(DeletePipelineVersionRequest {
        pipeline_id: pipeline.pipeline_id.clone(),
        pipeline_version_id: first.pipeline_version_id.clone(),
    })
    .await
    .expect("delete version");
    let kept = runs
        .get_run(GetRunRequest {
            run_id: run.run_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kept.pipeline_source,
        Some(run::PipelineSource::PipelineVersionReference(reference))
    );
    expect_code(
        c.delete_pipeline_version(DeletePipelineVersionRequest {
            pipeline_id: pipeline.pipeline_id.clone(),
            pipeline_version_id: first.pipeline_version_id,
        })
        .await,
        Code::NotFound,
    );
    // Without versions left, the pipeline goes without cascade.
    c.delete_pipeline(DeletePipelineRequest {
        pipeline_id: pipeline.pipeline_id,
        cascade: false,
    })
    .await
    .expect("delete the empty pipeline");
}

#[every_backend]
async fn a_run_of_a_version_reference_is_checked_and_shows_which_version_ran() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let mut runs = server.runs().await;
    let (pipeline, _first) = pipeline_and_version(&mut c, "versioned").await;
    let latest = add_version(&mut c, &pipeline.pipeline_id, "v2").await;
    let (_, other_version) = pipeline_and_version(&mut c, "other").await;
    let empty = c
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(named("no versions")),
        })
        .await
        .unwrap()
        .into_inner();
    let create = |reference: PipelineVersionReference| CreateRunRequest {
        run: Some(Run {
            display_name: "r".into(),
            pipeline_source: Some(run::PipelineSource::PipelineVersionReference(reference)),
            ..Default::default()
        }),
        ..Default::default()
    };

    // A pipeline alone: its latest version ran, and the run says which.
    let run = runs
        .create_run(create(PipelineVersionReference {
            pipeline_id: pipeline.pipeline_id.clone(),
            pipeline_version_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let expected = PipelineVersionReference {
        pipeline_id: pipeline.pipeline_id.clone(),
        pipeline_version_id: latest.pipeline_version_id.clone(),
    };
    assert_eq!(
        run.pipeline_source,
        Some(run::PipelineSource::PipelineVersionReference(
            expected.clone()
        ))
    );
    // A version alone: its pipeline is filled in.
    let run = runs
        .create_run(create(PipelineVersionReference {
            pipeline_id: String::new(),
            pipeline_version_id: latest.pipeline_version_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        run.pipeline_source,
        Some(run::PipelineSource::PipelineVersionReference(expected))
    );

    for (reference, needle) in [
        (
            PipelineVersionReference {
                pipeline_id: pipeline.pipeline_id.clone(),
                pipeline_version_id: "missing".into(),
            },
            "missing",
        ),
        (
            PipelineVersionReference {
                pipeline_id: pipeline.pipeline_id.clone(),
                pipeline_version_id: other_version.pipeline_version_id.clone(),
            },
            "has no version",
        ),
        (
            PipelineVersionReference {
                pipeline_id: "no-such-pipeline".into(),
                pipeline_version_id: String::new(),
            },
            "no-such-pipeline",
        ),
        (
            PipelineVersionReference {
                pipeline_id: empty.pipeline_id.clone(),
                pipeline_version_id: String::new(),
            },
            "has no version to run",
        ),
    ] {
        let message = expect_code(runs.create_run(create(reference)).await, Code::NotFound);
        assert!(message.contains(needle), "{needle}: {message}");
    }
}

#[every_backend]
async fn updates_change_display_names_and_tags_only() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let (pipeline, first) = pipeline_and_version(&mut c, "labelled").await;
    let updated = c
        .update_pipeline(UpdatePipelineRequest {
            pipeline: Some(Pipeline {
                pipeline_id: pipeline.pipeline_id.clone(),
                display_name: "Labelled".into(),
                tags: HashMap::from([("env".into(), "prod".into())]),
                name: "ignored".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Labelled");
    assert_eq!(updated.name, "labelled");
    assert_eq!(updated.tags, HashMap::from([("env".into(), "prod".into())]));
    // Nothing given: nothing changes.
    let same = c
        .update_pipeline(UpdatePipelineRequest {
            pipeline: Some(Pipeline {
                pipeline_id: pipeline.pipeline_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, updated);

    let version = c
        .update_pipeline_version(UpdatePipelineVersionRequest {
            pipeline_version: Some(PipelineVersion {
                pipeline_id: pipeline.pipeline_id.clone(),
                pipeline_version_id: first.pipeline_version_id.clone(),
                display_name: "First".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.display_name, "First");
    assert_eq!(version.pipeline_spec, first.pipeline_spec);

    expect_code(
        c.update_pipeline(UpdatePipelineRequest {
            pipeline: Some(named("no id")),
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.update_pipeline(UpdatePipelineRequest {
            pipeline: Some(Pipeline {
                pipeline_id: "missing".into(),
                ..Default::default()
            }),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        c.update_pipeline(UpdatePipelineRequest {
            pipeline: Some(Pipeline {
                pipeline_id: pipeline.pipeline_id.clone(),
                tags: HashMap::from([(String::new(), "v".into())]),
                ..Default::default()
            }),
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.update_pipeline_version(UpdatePipelineVersionRequest {
            pipeline_version: Some(PipelineVersion {
                pipeline_id: "other".into(),
                pipeline_version_id: first.pipeline_version_id.clone(),
                ..Default::default()
            }),
        })
        .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn lookups_without_an_id_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    expect_code(
        c.get_pipeline(GetPipelineRequest::default()).await,
        Code::InvalidArgument,
    );
    expect_code(
        c.get_pipeline_by_name(GetPipelineByNameRequest::default())
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.get_pipeline_version(GetPipelineVersionRequest::default())
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.list_pipeline_versions(ListPipelineVersionsRequest::default())
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.delete_pipeline_version(DeletePipelineVersionRequest::default())
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.list_pipelines(ListPipelinesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        c.get_pipeline(GetPipelineRequest {
            pipeline_id: "missing".into(),
        })
        .await,
        Code::NotFound,
    );
}

const ADMIN: &str = "admin-token";
const EDITOR_A: &str = "editor-a-token";
const VIEWER_B: &str = "viewer-b-token";

async fn secured() -> TestServer {
    let text = format!(
        r#"
[[principals]]
name = "root"
token_sha256 = "{}"
[[principals]]
name = "alice"
token_sha256 = "{}"
[[principals]]
name = "bob"
token_sha256 = "{}"
[[grants]]
who = "root"
namespace = "*"
role = "admin"
[[grants]]
who = "alice"
namespace = "team-a"
role = "editor"
[[grants]]
who = "bob"
namespace = "team-b"
role = "viewer"
"#,
        hash_token(ADMIN),
        hash_token(EDITOR_A),
        hash_token(VIEWER_B)
    );
    let auth = Auth::from_config(AuthConfig::parse(&text).expect("config"));
    TestServer::start_with(Config {
        server: ServerOptions {
            auth: Some(Arc::new(auth)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

fn by<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[every_backend]
async fn shared_pipelines_are_readable_by_everyone_and_written_with_a_role_on_the_empty_namespace()
{
    let server = secured().await;
    let mut c = client(&server).await;
    let shared = c
        .create_pipeline_and_version(by(
            ADMIN,
            CreatePipelineAndVersionRequest {
                pipeline: Some(named("shared")),
                pipeline_version: Some(version_with("shared")),
            },
        ))
        .await
        .expect("admin creates a shared pipeline")
        .into_inner();
    // bob has no grant on "" and may still read it, its versions, and list shared pipelines.
    c.get_pipeline(by(
        VIEWER_B,
        GetPipelineRequest {
            pipeline_id: shared.pipeline_id.clone(),
        },
    ))
    .await
    .expect("bob reads a shared pipeline");
    let listed = c
        .list_pipelines(by(VIEWER_B, ListPipelinesRequest::default()))
        .await
        .expect("bob lists shared pipelines")
        .into_inner();
    assert_eq!(listed.total_size, 1);
    let versions = c
        .list_pipeline_versions(by(
            VIEWER_B,
            ListPipelineVersionsRequest {
                pipeline_id: shared.pipeline_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("bob lists its versions")
        .into_inner();
    assert_eq!(versions.total_size, 1);
    // Changing it needs a role in namespace "": PERMISSION_DENIED, not NOT_FOUND (bob sees it).
    for result in [
        c.delete_pipeline(by(
            EDITOR_A,
            DeletePipelineRequest {
                pipeline_id: shared.pipeline_id.clone(),
                cascade: true,
            },
        ))
        .await
        .map(drop),
        c.create_pipeline_version(by(
            EDITOR_A,
            CreatePipelineVersionRequest {
                pipeline_id: shared.pipeline_id.clone(),
                pipeline_version: Some(version_with("x")),
            },
        ))
        .await
        .map(drop),
        c.create_pipeline(by(
            EDITOR_A,
            CreatePipelineRequest {
                pipeline: Some(named("another shared")),
            },
        ))
        .await
        .map(drop),
    ] {
        expect_code(result.map(tonic::Response::new), Code::PermissionDenied);
    }
    // Without credentials nothing is readable.
    expect_code(
        c.list_pipelines(ListPipelinesRequest::default()).await,
        Code::Unauthenticated,
    );
}

#[every_backend]
async fn namespaced_pipelines_follow_the_namespace_roles() {
    let server = secured().await;
    let mut c = client(&server).await;
    let mine = c
        .create_pipeline_and_version(by(
            EDITOR_A,
            CreatePipelineAndVersionRequest {
                pipeline: Some(Pipeline {
                    namespace: "team-a".into(),
                    ..named("mine")
                }),
                pipeline_version: Some(version_with("mine")),
            },
        ))
        .await
        .expect("alice creates in team-a")
        .into_inner();
    // bob cannot see team-a's pipeline at all: NOT_FOUND, as if it did not exist.
    expect_code(
        c.get_pipeline(by(
            VIEWER_B,
            GetPipelineRequest {
                pipeline_id: mine.pipeline_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.get_pipeline_by_name(by(
            VIEWER_B,
            GetPipelineByNameRequest {
                namespace: "team-a".into(),
                name: "mine".into(),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.list_pipelines(by(
            VIEWER_B,
            ListPipelinesRequest {
                namespace: "team-a".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        c.create_pipeline(by(
            VIEWER_B,
            CreatePipelineRequest {
                pipeline: Some(Pipeline {
                    namespace: "team-b".into(),
                    ..named("viewer cannot")
                }),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    // Nor run it from team-b: the version is not found for bob.
    let mut experiments = server.experiments().await;
    let b_exp = experiments
        .create_experiment(by(
            ADMIN,
            CreateExperimentRequest {
                experiment: Some(Experiment {
                    display_name: "b".into(),
                    namespace: "team-b".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut runs = server.runs().await;
    let message = expect_code(
        runs.create_run(by(
            ADMIN,
            CreateRunRequest {
                run: Some(Run {
                    display_name: "cross".into(),
                    experiment_id: b_exp.experiment_id,
                    pipeline_source: Some(run::PipelineSource::PipelineVersionReference(
                        PipelineVersionReference {
                            pipeline_id: mine.pipeline_id.clone(),
                            pipeline_version_id: "nope".into(),
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    assert!(message.contains("nope"), "{message}");
}
