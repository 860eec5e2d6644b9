//! CreateRun, GetRun, DeleteRun, ArchiveRun, UnarchiveRun through gRPC.

mod common;

use common::*;
use runledger::api::*;
use runledger_testkit::every_backend;
use tonic::Code;

#[every_backend]
async fn create_run_fills_server_owned_fields_and_get_returns_it() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let created = create_run(&mut runs, new_run("nightly")).await;

    assert_eq!(
        created.run_id.len(),
        36,
        "a generated UUID: {}",
        created.run_id
    );
    assert_eq!(created.state, RuntimeState::Pending as i32);
    assert_eq!(created.storage_state, run::StorageState::Available as i32);
    assert!(created.created_at.is_some());
    assert_eq!(created.scheduled_at, created.created_at);
    assert_eq!(created.state_history.len(), 1);
    assert_eq!(created.state_history[0].state, RuntimeState::Pending as i32);
    assert_eq!(created.state_history[0].update_time, created.created_at);
    assert!(!created.experiment_id.is_empty(), "the default experiment");

    let fetched = runs
        .get_run(GetRunRequest {
            run_id: created.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
}

fn get(run_id: &str) -> GetRunRequest {
    GetRunRequest {
        run_id: run_id.to_owned(),
        ..Default::default()
    }
}

#[every_backend]
async fn create_run_keeps_the_client_inputs_and_ignores_server_owned_fields() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let backfill = runledger::wkt::Timestamp {
        seconds: 1_000_000_000,
        nanos: 5,
    };
    let mut input = new_run("with inputs");
    input.description = "why".into();
    input.service_account = "sa".into();
    input.recurring_run_id = "job-1".into();
    input.scheduled_at = Some(backfill);
    input.runtime_config = Some(RuntimeConfig {
        parameters: [("lr".to_owned(), pbjson_types::Value::from(0.5))].into(),
        pipeline_root: "s3://root".into(),
    });
    // Server-owned fields a client must not be able to set.
    input.state = RuntimeState::Succeeded as i32;
    input.storage_state = run::StorageState::Archived as i32;
    input.finished_at = Some(backfill);
    input.created_at = Some(backfill);
    input.state_history = vec![RuntimeStatus {
        state: RuntimeState::Failed as i32,
        ..Default::default()
    }];
    input.runtime_details = Some(RuntimeDetails {
        pipeline_context_id: 7,
        ..Default::default()
    });
    input.error = Some(runledger::proto::google::rpc::Status {
        code: 2,
        message: "x".into(),
        details: vec![],
    });

    let created = create_run(&mut runs, input.clone()).await;
    assert_eq!(created.description, "why");
    assert_eq!(created.service_account, "sa");
    assert_eq!(created.recurring_run_id, "job-1");
    assert_eq!(created.runtime_config, input.runtime_config);
    assert_eq!(created.scheduled_at, Some(backfill));
    assert_eq!(created.state, RuntimeState::Pending as i32);
    assert_eq!(created.storage_state, run::StorageState::Available as i32);
    assert_eq!(created.finished_at, None);
    assert_ne!(created.created_at, Some(backfill));
    assert_eq!(created.state_history.len(), 1);
    assert_eq!(created.runtime_details, None);
    assert_eq!(created.error, None);
}

#[every_backend]
async fn each_pipeline_source_is_accepted() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let spec: pbjson_types::Struct =
        serde_json::from_str(r#"{"pipelineInfo": {"name": "p"}, "n": [1, null]}"#).unwrap();
    let sources = [
        run::PipelineSource::PipelineId("p-1".into()),
        run::PipelineSource::PipelineSpec(spec.into()),
        run::PipelineSource::PipelineVersionReference(stored_version(&server).await),
    ];
    for source in sources {
        let mut input = new_run("source");
        input.pipeline_source = Some(source.clone());
        let created = create_run(&mut runs, input).await;
        let fetched = runs
            .get_run(get(&created.run_id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched.pipeline_source, Some(source));
    }
}

#[every_backend]
async fn create_run_without_a_name_or_pipeline_source_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let cases = [
        (
            Run {
                display_name: String::new(),
                ..new_run("")
            },
            "display_name",
        ),
        (
            Run {
                display_name: "   ".into(),
                ..new_run("")
            },
            "display_name",
        ),
        (
            Run {
                pipeline_source: None,
                ..new_run("n")
            },
            "pipeline_source",
        ),
        (
            Run {
                pipeline_source: Some(run::PipelineSource::PipelineId(String::new())),
                ..new_run("n")
            },
            "pipeline_source",
        ),
    ];
    for (input, field) in cases {
        let result = runs
            .create_run(CreateRunRequest {
                run: Some(input),
                ..Default::default()
            })
            .await;
        let message = expect_code(result, Code::InvalidArgument);
        assert!(message.contains(field), "{message}");
    }
    let message = expect_code(
        runs.create_run(CreateRunRequest::default()).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("display_name"), "{message}");
}

#[every_backend]
async fn a_client_chosen_run_id_is_kept_and_a_second_create_with_it_is_already_exists() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let created = create_run(
        &mut runs,
        Run {
            run_id: "my-run.1".into(),
            ..new_run("a")
        },
    )
    .await;
    assert_eq!(created.run_id, "my-run.1");
    let again = runs
        .create_run(CreateRunRequest {
            run: Some(Run {
                run_id: "my-run.1".into(),
                ..new_run("b")
            }),
            ..Default::default()
        })
        .await;
    expect_code(again, Code::AlreadyExists);
    let kept = runs.get_run(get("my-run.1")).await.unwrap().into_inner();
    assert_eq!(kept.display_name, "a", "the first run is untouched");
}

#[every_backend]
async fn a_run_id_of_another_form_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for bad in [
        "-leading-dash",
        "has space",
        "slash/inside",
        "ü",
        &"x".repeat(129),
    ] {
        let result = runs
            .create_run(CreateRunRequest {
                run: Some(Run {
                    run_id: bad.into(),
                    ..new_run("a")
                }),
                ..Default::default()
            })
            .await;
        let message = expect_code(result, Code::InvalidArgument);
        assert!(message.contains("run_id"), "{message}");
    }
}

#[every_backend]
async fn an_unknown_experiment_is_not_found_and_a_foreign_namespace_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let unknown = runs
        .create_run(CreateRunRequest {
            run: Some(Run {
                experiment_id: "nope".into(),
                ..new_run("a")
            }),
            ..Default::default()
        })
        .await;
    expect_code(unknown, Code::NotFound);

    let exp = create_experiment(&mut experiments, "team-exp", "team-a").await;
    let foreign = runs
        .create_run(CreateRunRequest {
            run: Some(Run {
                experiment_id: exp.experiment_id.clone(),
                namespace: "team-b".into(),
                ..new_run("a")
            }),
            ..Default::default()
        })
        .await;
    let message = expect_code(foreign, Code::InvalidArgument);
    assert!(
        message.contains("team-b") && message.contains("team-a"),
        "{message}"
    );

    let inherited = create_run(
        &mut runs,
        Run {
            experiment_id: exp.experiment_id.clone(),
            ..new_run("a")
        },
    )
    .await;
    assert_eq!(inherited.namespace, "team-a");
}

#[every_backend]
async fn runs_without_an_experiment_share_their_namespace_default_experiment() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let a = create_run(&mut runs, new_run("a")).await;
    let b = create_run(&mut runs, new_run("b")).await;
    let other_ns = create_run(
        &mut runs,
        Run {
            namespace: "ns2".into(),
            ..new_run("c")
        },
    )
    .await;
    assert_eq!(a.experiment_id, b.experiment_id);
    assert_ne!(a.experiment_id, other_ns.experiment_id);
    assert_eq!(other_ns.namespace, "ns2");

    let default = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: a.experiment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.display_name, "Default");
    assert_eq!(default.namespace, "");
    assert_eq!(
        default.last_run_created_at, b.created_at,
        "updated by the newest run"
    );
}

#[every_backend]
async fn a_run_in_an_archived_experiment_can_be_created() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "old", "").await;
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .unwrap();
    let run = create_run(
        &mut runs,
        Run {
            experiment_id: exp.experiment_id,
            ..new_run("late")
        },
    )
    .await;
    assert_eq!(run.storage_state, run::StorageState::Available as i32);
}

#[every_backend]
async fn get_and_delete_of_an_unknown_run_are_not_found() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    expect_code(runs.get_run(get("missing")).await, Code::NotFound);
    expect_code(
        runs.delete_run(DeleteRunRequest {
            run_id: "missing".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    expect_code(runs.get_run(get("")).await, Code::InvalidArgument);
}

#[every_backend]
async fn delete_run_removes_it_from_get_and_from_every_listing() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let keep = create_run(&mut runs, new_run("keep")).await;
    let gone = create_run(&mut runs, new_run("gone")).await;
    runs.delete_run(DeleteRunRequest {
        run_id: gone.run_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_code(runs.get_run(get(&gone.run_id)).await, Code::NotFound);
    for request in [
        ListRunsRequest::default(),
        ListRunsRequest {
            experiment_id: keep.experiment_id.clone(),
            ..Default::default()
        },
        ListRunsRequest {
            namespace: String::new(),
            ..Default::default()
        },
    ] {
        let page = runs.list_runs(request).await.unwrap().into_inner();
        let ids: Vec<_> = page.runs.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids, vec![keep.run_id.clone()]);
        assert_eq!(page.total_size, 1);
    }
}

#[every_backend]
async fn archive_is_repeatable_and_leaves_the_state_alone() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let run = create_run(&mut runs, new_run("a")).await;
    for _ in 0..2 {
        runs.archive_run(ArchiveRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let archived = runs.get_run(get(&run.run_id)).await.unwrap().into_inner();
    assert_eq!(archived.storage_state, run::StorageState::Archived as i32);
    assert_eq!(archived.state, RuntimeState::Pending as i32);
    assert_eq!(archived.state_history, run.state_history);

    for _ in 0..2 {
        runs.unarchive_run(UnarchiveRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let available = runs.get_run(get(&run.run_id)).await.unwrap().into_inner();
    assert_eq!(available.storage_state, run::StorageState::Available as i32);
}

#[every_backend]
async fn archive_and_unarchive_of_an_unknown_run_are_not_found() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    expect_code(
        runs.archive_run(ArchiveRunRequest {
            run_id: "missing".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        runs.unarchive_run(UnarchiveRunRequest {
            run_id: "missing".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn unarchive_run_is_failed_precondition_while_its_experiment_is_archived() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "e", "").await;
    let run = create_run(
        &mut runs,
        Run {
            experiment_id: exp.experiment_id.clone(),
            ..new_run("a")
        },
    )
    .await;
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .unwrap();
    let result = runs
        .unarchive_run(UnarchiveRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await;
    let message = expect_code(result, Code::FailedPrecondition);
    assert!(message.contains(&exp.experiment_id), "{message}");
    let still = runs.get_run(get(&run.run_id)).await.unwrap().into_inner();
    assert_eq!(still.storage_state, run::StorageState::Archived as i32);
}
