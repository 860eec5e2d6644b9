//! GetRun and ListRuns send stored runs without decoding them: what a client reads must be the
//! same runs, fields, order, totals and tokens as before.

mod common;

use common::*;
use runledger::api::*;

/// A run whose pipeline_spec is a nested Struct with every Value kind.
fn run_with_spec(name: &str) -> Run {
    let spec: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": name},
        "root": {"dag": {"tasks": {"train": {"cachingOptions": {"enableCache": true}}}}},
        "components": {"comp-train": {"executorLabel": "exec-train", "retries": 3.5}},
        "list": ["a", 1.0, false, {"nested": ["deep"]}]
    }))
    .expect("a JSON object is a Struct");
    Run {
        display_name: name.to_owned(),
        pipeline_source: Some(run::PipelineSource::PipelineSpec(spec.into())),
        runtime_config: Some(RuntimeConfig {
            pipeline_root: "gs://bucket/root".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn get_run_returns_the_created_run_field_for_field() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    for input in [
        run_with_spec("with a spec"),
        new_run("with a pipeline id"),
        Run {
            display_name: "with a version reference".into(),
            pipeline_source: Some(run::PipelineSource::PipelineVersionReference(
                stored_version(&server).await,
            )),
            ..Default::default()
        },
    ] {
        let created = create_run(&mut runs, input).await;
        let fetched = runs
            .get_run(GetRunRequest {
                run_id: created.run_id.clone(),
                ..Default::default()
            })
            .await
            .expect("get run")
            .into_inner();
        assert_eq!(fetched, created);
    }
}

#[tokio::test]
async fn get_run_of_an_unknown_or_malformed_id_fails_with_its_code() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let missing = runs
        .get_run(GetRunRequest {
            run_id: "no-such-run".into(),
            ..Default::default()
        })
        .await;
    expect_code(missing, tonic::Code::NotFound);
    let empty = runs.get_run(GetRunRequest::default()).await;
    expect_code(empty, tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn list_runs_pages_return_whole_runs_with_totals_and_tokens() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(create_run(&mut runs, run_with_spec(&format!("run {i}"))).await);
    }
    let experiment_id = created[0].experiment_id.clone();
    let first = runs
        .list_runs(ListRunsRequest {
            experiment_id: experiment_id.clone(),
            page_size: 2,
            sort_by: "created_at desc".into(),
            ..Default::default()
        })
        .await
        .expect("list runs")
        .into_inner();
    assert_eq!(first.total_size, 5);
    assert!(!first.next_page_token.is_empty());
    assert_eq!(first.runs, vec![created[4].clone(), created[3].clone()]);

    let all = list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id,
            page_size: 2,
            sort_by: "created_at desc".into(),
            ..Default::default()
        },
    )
    .await;
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);
}

#[tokio::test]
async fn list_runs_filters_and_sorts_on_the_stored_fields() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let spec = create_run(&mut runs, run_with_spec("b spec")).await;
    let by_id = create_run(&mut runs, new_run("a by id")).await;
    let by_name = |run: &Run| run.display_name.clone();

    let page = runs
        .list_runs(ListRunsRequest {
            sort_by: "display_name".into(),
            filter: r#"{"predicates":[{"key":"pipeline_id","operation":"EQUALS","string_value":"pipeline-1"}]}"#.into(),
            ..Default::default()
        })
        .await
        .expect("list runs")
        .into_inner();
    assert_eq!(page.runs, vec![by_id.clone()]);
    assert_eq!(page.total_size, 1);

    let sorted = runs
        .list_runs(ListRunsRequest {
            sort_by: "display_name".into(),
            ..Default::default()
        })
        .await
        .expect("list runs")
        .into_inner();
    assert_eq!(
        sorted.runs.iter().map(by_name).collect::<Vec<_>>(),
        vec![by_name(&by_id), by_name(&spec)]
    );
    assert_eq!(sorted.runs[1], spec);
}

#[tokio::test]
async fn an_empty_list_is_an_empty_response() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let page = runs
        .list_runs(ListRunsRequest::default())
        .await
        .expect("list runs")
        .into_inner();
    assert_eq!(page, ListRunsResponse::default());
}

#[tokio::test]
async fn report_run_state_answers_with_the_stored_run() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let created = create_run(&mut runs, run_with_spec("reported")).await;
    let report = |state: RuntimeState| ReportRunStateRequest {
        run_id: created.run_id.clone(),
        state: state as i32,
        ..Default::default()
    };
    let running = runs
        .report_run_state(report(RuntimeState::Running))
        .await
        .expect("report RUNNING")
        .into_inner();
    assert_eq!(running.state, RuntimeState::Running as i32);
    assert_eq!(running.state_history.len(), 2);
    // Reporting the current state again changes nothing and still answers with the run.
    let again = runs
        .report_run_state(report(RuntimeState::Running))
        .await
        .expect("report RUNNING again")
        .into_inner();
    let fetched = runs
        .get_run(GetRunRequest {
            run_id: created.run_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get run")
        .into_inner();
    assert_eq!(running, fetched);
    assert_eq!(again, fetched);
    let refused = runs.report_run_state(report(RuntimeState::Pending)).await;
    expect_code(refused, tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn a_watcher_receives_the_created_run_whole() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut watch = runs
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let created = create_run(&mut runs, run_with_spec("watched")).await;
    let event = watch
        .message()
        .await
        .expect("an event")
        .expect("the stream is open");
    assert_eq!(event.r#type, run_event::Type::Created as i32);
    assert_eq!(event.run, Some(created));
}
