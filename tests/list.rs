//! ListRuns through gRPC: scopes, paging, sort and filter, tokens, and their error codes.

mod common;

use common::*;
use runledger::api::*;
use runledger_testkit::every_backend;
use tonic::Code;

#[every_backend]
async fn list_scopes_by_experiment_namespace_or_everything() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "e", "ns1").await;
    let a = create_run(
        &mut runs,
        Run {
            experiment_id: exp.experiment_id.clone(),
            ..new_run("a")
        },
    )
    .await;
    let b = create_run(
        &mut runs,
        Run {
            namespace: "ns1".into(),
            ..new_run("b")
        },
    )
    .await;
    let c = create_run(
        &mut runs,
        Run {
            namespace: "ns2".into(),
            ..new_run("c")
        },
    )
    .await;
    let ids = |runs: Vec<Run>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();

    let by_exp = list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: exp.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(by_exp), vec![a.run_id.clone()]);
    let by_ns = list_all(
        &mut runs,
        ListRunsRequest {
            namespace: "ns1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(by_ns), vec![a.run_id.clone(), b.run_id.clone()]);
    // experiment_id wins over namespace, as in KFP.
    let both = list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: exp.experiment_id.clone(),
            namespace: "ns2".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(both), vec![a.run_id.clone()]);
    let all = list_all(&mut runs, ListRunsRequest::default()).await;
    assert_eq!(ids(all), vec![a.run_id, b.run_id, c.run_id]);
}

#[every_backend]
async fn archived_runs_are_listed_unless_filtered_out_and_total_size_counts_the_filter() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            create_run(&mut runs, new_run(&format!("r{i}")))
                .await
                .run_id,
        );
    }
    for id in &made[..2] {
        runs.archive_run(ArchiveRunRequest {
            run_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let everything = runs
        .list_runs(ListRunsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everything.total_size, 5);
    let available = runs
        .list_runs(ListRunsRequest {
            page_size: 2,
            filter: r#"{"predicates":[{"operation":"EQUALS","key":"storage_state","string_value":"AVAILABLE"}]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(available.total_size, 3);
    assert_eq!(
        available
            .runs
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>(),
        made[2..4].to_vec()
    );
}

#[every_backend]
async fn pages_follow_the_sort_and_the_last_page_has_no_token() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for name in ["b", "a", "c", "a", "b"] {
        create_run(&mut runs, new_run(name)).await;
    }
    let mut request = ListRunsRequest {
        sort_by: "display_name desc".into(),
        page_size: 2,
        ..Default::default()
    };
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = runs.list_runs(request.clone()).await.unwrap().into_inner();
        pages += 1;
        assert_eq!(page.total_size, 5);
        names.extend(page.runs.iter().map(|r| r.display_name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        // The token alone carries sort and filter.
        request = ListRunsRequest {
            page_token: page.next_page_token,
            page_size: 2,
            ..Default::default()
        };
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c", "b", "b", "a", "a"]);
}

#[every_backend]
async fn default_page_size_is_20_and_negative_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for i in 0..21 {
        create_run(&mut runs, new_run(&format!("r{i}"))).await;
    }
    let page = runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.runs.len(), 20);
    assert!(!page.next_page_token.is_empty());
    let message = expect_code(
        runs.list_runs(ListRunsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("page_size"), "{message}");
}

#[every_backend]
async fn bad_sort_filter_and_tokens_are_invalid_argument_with_a_message_saying_what() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for i in 0..3 {
        create_run(&mut runs, new_run(&format!("r{i}"))).await;
    }
    let first = runs
        .list_runs(ListRunsRequest {
            page_size: 1,
            namespace: "".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    let cases = [
        (
            ListRunsRequest {
                sort_by: "colour".into(),
                ..Default::default()
            },
            "colour",
        ),
        (
            ListRunsRequest {
                sort_by: "name upwards".into(),
                ..Default::default()
            },
            "upwards",
        ),
        (
            ListRunsRequest {
                filter: "{not json".into(),
                ..Default::default()
            },
            "JSON",
        ),
        (
            ListRunsRequest {
                filter: r#"{"predicates":[{"operation":1,"key":"colour","string_value":"x"}]}"#
                    .into(),
                ..Default::default()
            },
            "predicate 1",
        ),
        (
            ListRunsRequest {
                filter: r#"{"predicates":[{"operation":1,"key":"created_at","string_value":"x"}]}"#
                    .into(),
                ..Default::default()
            },
            "timestamp_value",
        ),
        (
            ListRunsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListRunsRequest {
                page_token: token.clone(),
                namespace: "other".into(),
                ..Default::default()
            },
            "scope",
        ),
        (
            ListRunsRequest {
                page_token: token.clone(),
                sort_by: "name".into(),
                ..Default::default()
            },
            "sort_by",
        ),
        (
            ListRunsRequest {
                page_token: token.clone(),
                filter: r#"{"predicates":[{"operation":1,"key":"name","string_value":"x"}]}"#
                    .into(),
                ..Default::default()
            },
            "filter",
        ),
    ];
    for (request, needle) in cases {
        let message = expect_code(runs.list_runs(request.clone()).await, Code::InvalidArgument);
        assert!(message.contains(needle), "{request:?}: {message}");
    }
    // The untouched token still works.
    let next = runs
        .list_runs(ListRunsRequest {
            page_token: token,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.runs.len(), 1);
}

#[every_backend]
async fn sorting_by_experiment_id_is_correct_on_every_page() {
    // KFP fails on the second page for this sort; keyset pagination on (value, id) does not.
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let mut exps = Vec::new();
    for i in 0..3 {
        exps.push(
            create_experiment(&mut experiments, &format!("e{i}"), "")
                .await
                .experiment_id,
        );
    }
    for i in 0..9 {
        create_run(
            &mut runs,
            Run {
                experiment_id: exps[i % 3].clone(),
                ..new_run(&format!("r{i}"))
            },
        )
        .await;
    }
    let got = list_all(
        &mut runs,
        ListRunsRequest {
            sort_by: "experiment_id desc".into(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    let mut expected = got.clone();
    expected.sort_by(|a, b| (&b.experiment_id, &b.run_id).cmp(&(&a.experiment_id, &a.run_id)));
    assert_eq!(got.len(), 9);
    assert_eq!(got, expected);
}

#[every_backend]
async fn indexes_agree_with_the_records_after_archives_and_deletes() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let mut exps = Vec::new();
    for (i, ns) in ["ns1", "ns1", "ns2"].into_iter().enumerate() {
        exps.push(create_experiment(&mut experiments, &format!("e{i}"), ns).await);
    }
    let mut ids = Vec::new();
    for i in 0..24 {
        let run = match i % 4 {
            3 => Run {
                namespace: "ns2".into(),
                ..new_run(&format!("r{i}"))
            },
            k => Run {
                experiment_id: exps[k].experiment_id.clone(),
                ..new_run(&format!("r{i}"))
            },
        };
        ids.push(create_run(&mut runs, run).await.run_id);
    }
    for id in ids.iter().step_by(5) {
        runs.archive_run(ArchiveRunRequest {
            run_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for id in ids.iter().skip(1).step_by(7) {
        runs.delete_run(DeleteRunRequest {
            run_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: exps[0].experiment_id.clone(),
        })
        .await
        .unwrap();
    experiments
        .delete_experiment(DeleteExperimentRequest {
            experiment_id: exps[1].experiment_id.clone(),
        })
        .await
        .unwrap();

    // What GetRun says exists, one by one.
    let mut alive = Vec::new();
    for id in &ids {
        match runs
            .get_run(GetRunRequest {
                run_id: id.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(run) => alive.push(run.into_inner()),
            Err(status) => assert_eq!(status.code(), Code::NotFound),
        }
    }
    let sorted_ids = |mut v: Vec<Run>| {
        v.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        v.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    type Belongs = Box<dyn Fn(&Run) -> bool>;
    let scopes: Vec<(ListRunsRequest, Belongs)> = vec![
        (ListRunsRequest::default(), Box::new(|_| true)),
        (
            ListRunsRequest {
                namespace: "ns1".into(),
                ..Default::default()
            },
            Box::new(|r| r.namespace == "ns1"),
        ),
        (
            ListRunsRequest {
                namespace: "ns2".into(),
                ..Default::default()
            },
            Box::new(|r| r.namespace == "ns2"),
        ),
        (
            ListRunsRequest {
                experiment_id: exps[0].experiment_id.clone(),
                ..Default::default()
            },
            Box::new({
                let id = exps[0].experiment_id.clone();
                move |r| r.experiment_id == id
            }),
        ),
        (
            ListRunsRequest {
                experiment_id: exps[2].experiment_id.clone(),
                ..Default::default()
            },
            Box::new({
                let id = exps[2].experiment_id.clone();
                move |r| r.experiment_id == id
            }),
        ),
    ];
    for (request, belongs) in scopes {
        let listed = list_all(
            &mut runs,
            ListRunsRequest {
                page_size: 3,
                ..request.clone()
            },
        )
        .await;
        let expected: Vec<Run> = alive.iter().filter(|r| belongs(r)).cloned().collect();
        assert_eq!(
            sorted_ids(listed.clone()),
            sorted_ids(expected.clone()),
            "{request:?}"
        );
        let page = runs.list_runs(request.clone()).await.unwrap().into_inner();
        assert_eq!(page.total_size as usize, expected.len(), "{request:?}");
        for run in listed {
            let stored = alive.iter().find(|r| r.run_id == run.run_id).unwrap();
            assert_eq!(&run, stored, "listing and GetRun agree");
        }
    }
    // The deleted experiment's runs are gone; the archived one's are archived.
    assert!(
        alive
            .iter()
            .all(|r| r.experiment_id != exps[1].experiment_id)
    );
    assert!(
        alive
            .iter()
            .filter(|r| r.experiment_id == exps[0].experiment_id)
            .all(|r| r.storage_state == run::StorageState::Archived as i32)
    );
}

#[every_backend]
async fn page_size_and_filter_limits_are_configurable() {
    let mut config = Config::default();
    config.limits.query.max_page_size = 3;
    config.limits.query.max_predicates = 1;
    config.limits.query.max_filter_bytes = 200;
    let server = TestServer::start_with(config).await;
    let mut runs = server.runs().await;
    for i in 0..5 {
        create_run(&mut runs, new_run(&format!("r{i}"))).await;
    }
    let page = runs
        .list_runs(ListRunsRequest {
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.runs.len(), 3);
    let default = runs
        .list_runs(ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        default.runs.len(),
        3,
        "the default page is cut to the limit too"
    );

    let predicate = r#"{"operation":1,"key":"name","string_value":"r1"}"#;
    let two = format!(r#"{{"predicates":[{predicate},{predicate}]}}"#);
    let message = expect_code(
        runs.list_runs(ListRunsRequest {
            filter: two,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("--max-filter-predicates"), "{message}");
    let long = format!(
        r#"{{"predicates":[{{"operation":1,"key":"name","string_value":"{}"}}]}}"#,
        "x".repeat(300)
    );
    let message = expect_code(
        runs.list_runs(ListRunsRequest {
            filter: long,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("--max-filter-bytes"), "{message}");
}
