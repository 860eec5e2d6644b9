//! `runledger export` / `runledger import` move a store between the backends in both
//! directions, every record kept as it was (ids, timestamps, states, history, exact spec
//! bytes, default experiments, pipelines with their versions and tags, recurring runs with
//! their schedule); a bad or truncated file, or a store that is not empty, is refused naming
//! the problem. Through the real binary, on a data dir and a database.

mod common;

use common::process::runledger;
use common::*;
use runledger::api::pipeline_service_client::PipelineServiceClient;
use runledger::api::*;
use runledger::store::Location;

fn spec(value: i64) -> run::PipelineSource {
    let spec: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": "p"},
        "root": {"dag": {"tasks": {"t": {"n": value}}}},
    }))
    .unwrap();
    run::PipelineSource::PipelineSpec(spec.into())
}

/// Experiments and runs of every kind: shared and distinct specs, pipeline ids, default
/// experiments in two namespaces, an archived experiment, runs in several states.
async fn fill(server: &TestServer) {
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let team = create_experiment(&mut experiments, "team runs", "team").await;
    let old = create_experiment(&mut experiments, "old", "").await;
    // One encoding, sent twice: a Struct's map is encoded in no fixed order, so two encodings of
    // equal specs may differ (and are then two specs).
    let shared = spec(1);
    for (i, source) in [
        shared.clone(),
        shared,
        spec(2),
        run::PipelineSource::PipelineId("p".into()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut run = new_run(&format!("run {i}"));
        run.pipeline_source = Some(source);
        run.experiment_id = team.experiment_id.clone();
        run.runtime_config = Some(RuntimeConfig {
            parameters: [("n".to_owned(), pbjson_types::Value::from(i as f64))].into(),
            pipeline_root: "s3://bucket".into(),
        });
        let run = create_run(&mut runs, run).await;
        if i > 0 {
            runs.report_run_state(ReportRunStateRequest {
                run_id: run.run_id.clone(),
                state: RuntimeState::Running as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        if i == 2 {
            runs.report_run_state(ReportRunStateRequest {
                run_id: run.run_id.clone(),
                state: RuntimeState::Failed as i32,
                error: Some(runledger::proto::google::rpc::Status {
                    code: 13,
                    message: "boom".into(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    for namespace in ["", "team"] {
        let mut run = new_run("in the default experiment");
        run.namespace = namespace.into();
        create_run(&mut runs, run).await;
    }
    let mut run = new_run("archived with its experiment");
    run.experiment_id = old.experiment_id.clone();
    create_run(&mut runs, run).await;
    experiments
        .archive_experiment(ArchiveExperimentRequest {
            experiment_id: old.experiment_id.clone(),
        })
        .await
        .unwrap();
    fill_pipelines(server, &team).await;
}

/// A shared pipeline with two versions (one spec the same as a run's: stored once), a tagged
/// pipeline in a namespace without experiments or runs, and a disabled recurring run of a
/// version.
async fn fill_pipelines(server: &TestServer, team: &Experiment) {
    let mut pipelines = PipelineServiceClient::new(server.channel().await);
    let as_struct = |source: run::PipelineSource| match source {
        run::PipelineSource::PipelineSpec(spec) => spec,
        _ => unreachable!(),
    };
    let shared = pipelines
        .create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(Pipeline {
                name: "shared".into(),
                ..Default::default()
            }),
            pipeline_version: Some(PipelineVersion {
                pipeline_spec: Some(as_struct(spec(2))),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let second = pipelines
        .create_pipeline_version(CreatePipelineVersionRequest {
            pipeline_id: shared.pipeline_id.clone(),
            pipeline_version: Some(PipelineVersion {
                name: "second".into(),
                pipeline_spec: Some(as_struct(spec(3))),
                tags: [("stage".to_owned(), "prod".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    pipelines
        .create_pipeline_and_version(CreatePipelineAndVersionRequest {
            pipeline: Some(Pipeline {
                name: "research".into(),
                namespace: "research".into(),
                tags: [("team".to_owned(), "ml".to_owned())].into(),
                ..Default::default()
            }),
            pipeline_version: Some(PipelineVersion {
                pipeline_spec: Some(as_struct(spec(4))),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    create_periodic_run(
        server,
        &team.experiment_id,
        3600,
        1,
        recurring_run::Mode::Disable,
        PipelineVersionReference {
            pipeline_id: shared.pipeline_id.clone(),
            pipeline_version_id: second.pipeline_version_id.clone(),
        },
    )
    .await;
}

fn run_ok(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = runledger(args, stdin);
    assert!(
        out.status.success(),
        "runledger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run_fails(args: &[&str], stdin: Option<&[u8]>, needle: &str) {
    let out = runledger(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "runledger {args:?}: {stderr}");
    assert!(stderr.contains(needle), "runledger {args:?}: {stderr}");
}

/// An export without its first line (which says when and from where).
fn body(export: &[u8]) -> &[u8] {
    let start = export.iter().position(|b| *b == b'\n').unwrap() + 1;
    &export[start..]
}

/// Every run of a server, in creation order.
async fn all_runs(server: &TestServer) -> Vec<Run> {
    list_all(&mut server.runs().await, ListRunsRequest::default()).await
}

#[tokio::test]
async fn a_store_moves_between_the_backends_in_both_directions_unchanged() {
    let Some(Location::Database { url, .. }) = database_location("export_import_round_trip").await
    else {
        return;
    };
    let sled = TestServer::start().await;
    fill(&sled).await;
    let before = all_runs(&sled).await;
    let (dir, temp) = sled.stop().await;
    let dir = dir.to_str().unwrap().to_owned();

    let from_sled = run_ok(&["export", "--data-dir", &dir], None);
    let text = String::from_utf8_lossy(&from_sled);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("{\"spec\"")).count(),
        4
    );
    let end = text.lines().last().unwrap();
    assert!(
        end.contains(
            r#""end":{"experiments":4,"specs":4,"runs":7,"pipelines":2,"pipeline_versions":3,"recurring_runs":1}"#
        ),
        "{end}"
    );
    assert!(text.contains(r#""tags":{"team":"ml"}"#), "{text}");

    run_ok(&["import", "--database-url", &url], Some(&from_sled));
    let from_postgres = run_ok(&["export", "--database-url", &url], None);
    assert_eq!(
        String::from_utf8_lossy(body(&from_sled)),
        String::from_utf8_lossy(body(&from_postgres))
    );
    let checked = run_ok(&["check", "--database-url", &url], None);
    assert!(String::from_utf8_lossy(&checked).contains("consistent"));

    // Served from PostgreSQL: the same runs, field for field, and the same default experiment.
    let postgres = TestServer::start_at_location(Location::Database {
        url: url.clone(),
        options: postgres_options(&Default::default()),
    })
    .await;
    assert_eq!(all_runs(&postgres).await, before);
    let mut again = new_run("after the move");
    again.namespace = "team".into();
    let again = create_run(&mut postgres.runs().await, again).await;
    let default_before = before
        .iter()
        .find(|r| r.namespace == "team" && r.display_name == "in the default experiment")
        .unwrap();
    assert_eq!(again.experiment_id, default_before.experiment_id);
    drop(postgres);

    // And back into a new data dir.
    let back = tempfile::tempdir().unwrap();
    let back_dir = back.path().join("data");
    let back_dir = back_dir.to_str().unwrap();
    run_ok(&["import", "--data-dir", back_dir, "-"], Some(&from_sled));
    let round_trip = run_ok(&["export", "--data-dir", back_dir], None);
    assert_eq!(
        String::from_utf8_lossy(body(&from_sled)),
        String::from_utf8_lossy(body(&round_trip))
    );
    drop(temp);
}

#[tokio::test]
async fn import_refuses_a_store_that_is_not_empty_and_files_that_are_not_whole() {
    let Some(Location::Database { url, .. }) = database_location("import_refusals").await else {
        return;
    };
    let sled = TestServer::start().await;
    fill(&sled).await;
    let (dir, _temp) = sled.stop().await;
    let dir = dir.to_str().unwrap().to_owned();
    let export = run_ok(&["export", "--data-dir", &dir], None);
    let text = String::from_utf8(export.clone()).unwrap();

    run_fails(
        &["import", "--data-dir", &dir],
        Some(&export),
        "needs an empty store",
    );

    let lines: Vec<&str> = text.lines().collect();
    let truncated = lines[..lines.len() - 1].join("\n");
    run_fails(
        &["import", "--database-url", &url],
        Some(truncated.as_bytes()),
        "truncated",
    );

    let fresh = tempfile::tempdir().unwrap();
    let fresh = |name: &str| fresh.path().join(name).to_string_lossy().into_owned();
    let spec_line = lines
        .iter()
        .position(|l| l.starts_with("{\"spec\""))
        .unwrap();
    let mut altered = lines.clone();
    let wrong = altered[spec_line].replacen("\"sha256\":\"", "\"sha256\":\"00", 1);
    altered[spec_line] = &wrong;
    run_fails(
        &["import", "--data-dir", &fresh("a")],
        Some(altered.join("\n").as_bytes()),
        &format!("line {}", spec_line + 1),
    );
    run_fails(
        &["import", "--data-dir", &fresh("b")],
        Some(b"{\"hello\":1}\n"),
        "line 1",
    );
    run_fails(
        &["import", "--data-dir", &fresh("c")],
        Some(&export[..export.len() / 2]),
        "line",
    );
    run_fails(
        &["export", "--data-dir", &fresh("missing")],
        None,
        "not a data dir",
    );
}
