//! ExperimentService through gRPC, and the cascades to runs.

mod common;

use common::*;
use runledger::api::*;
use runledger_testkit::every_backend;
use tonic::Code;

fn id(e: &Experiment) -> String {
    e.experiment_id.clone()
}

#[every_backend]
async fn create_and_get_an_experiment() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let created = experiments
        .create_experiment(CreateExperimentRequest {
            experiment: Some(Experiment {
                display_name: "tuning".into(),
                description: "lr sweep".into(),
                namespace: "ml".into(),
                experiment_id: "ignored".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(created.experiment_id, "ignored");
    assert_eq!(created.display_name, "tuning");
    assert_eq!(created.description, "lr sweep");
    assert_eq!(created.namespace, "ml");
    assert_eq!(
        created.storage_state,
        experiment::StorageState::Available as i32
    );
    assert!(created.created_at.is_some());
    let fetched = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: id(&created),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
}

#[every_backend]
async fn an_empty_display_name_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let result = experiments
        .create_experiment(CreateExperimentRequest {
            experiment: Some(Experiment::default()),
        })
        .await;
    let message = expect_code(result, Code::InvalidArgument);
    assert!(message.contains("display_name"), "{message}");
    expect_code(
        experiments
            .create_experiment(CreateExperimentRequest { experiment: None })
            .await,
        Code::InvalidArgument,
    );
}

#[every_backend]
async fn a_name_is_unique_within_a_namespace_only() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    create_experiment(&mut experiments, "same", "a").await;
    create_experiment(&mut experiments, "same", "b").await;
    let dup = experiments
        .create_experiment(CreateExperimentRequest {
            experiment: Some(Experiment {
                display_name: "same".into(),
                namespace: "a".into(),
                ..Default::default()
            }),
        })
        .await;
    expect_code(dup, Code::AlreadyExists);
}

#[every_backend]
async fn unknown_experiments_are_not_found_for_every_call() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let missing = || "missing".to_owned();
    expect_code(
        experiments
            .get_experiment(GetExperimentRequest {
                experiment_id: missing(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        experiments
            .archive_experiment(ArchiveExperimentRequest {
                experiment_id: missing(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        experiments
            .unarchive_experiment(UnarchiveExperimentRequest {
                experiment_id: missing(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        experiments
            .delete_experiment(DeleteExperimentRequest {
                experiment_id: missing(),
            })
            .await,
        Code::NotFound,
    );
    let mut runs = server.runs().await;
    expect_code(
        runs.list_runs(ListRunsRequest {
            experiment_id: missing(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn archiving_an_experiment_archives_all_its_runs_and_unarchiving_restores_only_the_experiment()
 {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let exp = create_experiment(&mut experiments, "e", "").await;
    let other = create_run(&mut runs, new_run("elsewhere")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create_run(
                &mut runs,
                Run {
                    experiment_id: id(&exp),
                    ..new_run(&format!("r{i}"))
                },
            )
            .await
            .run_id,
        );
    }
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: id(&exp),
        })
        .await
        .unwrap();

    let archived = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: id(&exp),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        archived.storage_state,
        experiment::StorageState::Archived as i32
    );
    for run_id in &ids {
        let run = runs
            .get_run(GetRunRequest {
                run_id: run_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            run.storage_state,
            run::StorageState::Archived as i32,
            "{run_id}"
        );
    }
    let untouched = runs
        .get_run(GetRunRequest {
            run_id: other.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(untouched.storage_state, run::StorageState::Available as i32);

    experiments
        .unarchive_experiment(UnarchiveExperimentRequest {
            experiment_id: id(&exp),
        })
        .await
        .unwrap();
    let back = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: id(&exp),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        back.storage_state,
        experiment::StorageState::Available as i32
    );
    let run = runs
        .get_run(GetRunRequest {
            run_id: ids[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        run.storage_state,
        run::StorageState::Archived as i32,
        "runs stay archived"
    );
}

#[every_backend]
async fn deleting_an_experiment_deletes_its_runs() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let exp = create_experiment(&mut experiments, "e", "ns").await;
    let survivor = create_run(
        &mut runs,
        Run {
            namespace: "ns".into(),
            ..new_run("default-exp run")
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            create_run(
                &mut runs,
                Run {
                    experiment_id: id(&exp),
                    ..new_run(&format!("r{i}"))
                },
            )
            .await
            .run_id,
        );
    }
    experiments
        .delete_experiment(DeleteExperimentRequest {
            experiment_id: id(&exp),
        })
        .await
        .unwrap();
    expect_code(
        experiments
            .get_experiment(GetExperimentRequest {
                experiment_id: id(&exp),
            })
            .await,
        Code::NotFound,
    );
    for run_id in ids {
        expect_code(
            runs.get_run(GetRunRequest {
                run_id,
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
    }
    let left = list_all(
        &mut runs,
        ListRunsRequest {
            namespace: "ns".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        left.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        vec![&survivor.run_id]
    );
    // The name is free again.
    create_experiment(&mut experiments, "e", "ns").await;
}

#[every_backend]
async fn the_default_experiment_cannot_be_deleted() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let run = create_run(&mut runs, new_run("a")).await;
    let result = experiments
        .delete_experiment(DeleteExperimentRequest {
            experiment_id: run.experiment_id.clone(),
        })
        .await;
    expect_code(result, Code::FailedPrecondition);
    runs.get_run(GetRunRequest {
        run_id: run.run_id,
        ..Default::default()
    })
    .await
    .expect("run kept");
}

#[every_backend]
async fn an_experiment_named_default_is_adopted_as_the_namespace_default() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let mine = create_experiment(&mut experiments, "Default", "team").await;
    let run = create_run(
        &mut runs,
        Run {
            namespace: "team".into(),
            ..new_run("a")
        },
    )
    .await;
    assert_eq!(run.experiment_id, mine.experiment_id);
}

#[every_backend]
async fn list_experiments_scopes_by_namespace_and_pages() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create_experiment(&mut experiments, &format!("e{i}"), "ns")
                .await
                .experiment_id,
        );
    }
    create_experiment(&mut experiments, "elsewhere", "other").await;
    let mut seen = Vec::new();
    let mut request = ListExperimentsRequest {
        namespace: "ns".into(),
        page_size: 2,
        ..Default::default()
    };
    loop {
        let page = experiments
            .list_experiments(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 5);
        seen.extend(page.experiments.into_iter().map(|e| e.experiment_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen, made);
    let all = experiments
        .list_experiments(ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total_size, 6);

    let by_name = experiments
        .list_experiments(ListExperimentsRequest {
            filter: r#"{"predicates":[{"operation":1,"key":"display_name","stringValue":"e3"}]}"#
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.experiments.len(), 1);
    assert_eq!(by_name.experiments[0].experiment_id, made[3]);
    expect_code(
        experiments
            .list_experiments(ListExperimentsRequest {
                sort_by: "state".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        experiments
            .list_experiments(ListExperimentsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}
