//! `runledger check` and `--repair` on a data dir with pipelines, versions and recurring runs:
//! a healthy one is consistent and counted; lost or stray entries and a damaged lease are each
//! reported, and repair rebuilds them from the records so the server finds them again.

mod common;

use common::TestServer;
use runledger::api::*;
use runledger::service::Principal;
use runledger::store::sled::keys;
use runledger::store::{self, sled::edit_offline};

fn spec() -> runledger::wkt::StructBytes {
    let tree: pbjson_types::Struct = serde_json::from_value(serde_json::json!({
        "pipelineInfo": {"name": "checked"},
        "root": {"dag": {}},
    }))
    .unwrap();
    tree.into()
}

/// `prefix str(part) rest`, as the store builds name and index keys.
fn key(prefix: u8, part: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = keys::scope_prefix(prefix, Some(part));
    key.extend_from_slice(rest);
    key
}

#[tokio::test]
async fn check_finds_and_repair_rebuilds_pipeline_and_recurring_run_entries() {
    let server = TestServer::start().await;
    let ctx = server.services.context(Principal::Anonymous);
    let (pipeline, _) = server
        .services
        .pipelines
        .create_with_version(
            &ctx,
            Pipeline {
                name: "checked".into(),
                namespace: "team".into(),
                ..Default::default()
            },
            PipelineVersion {
                pipeline_spec: Some(spec()),
                ..Default::default()
            },
        )
        .await
        .expect("pipeline");
    server
        .services
        .recurring_runs
        .create(
            &ctx,
            RecurringRun {
                display_name: "weekly".into(),
                max_concurrency: 1,
                mode: recurring_run::Mode::Disable as i32,
                trigger: Some(Trigger {
                    trigger: Some(trigger::Trigger::CronSchedule(CronSchedule {
                        cron: "@weekly".into(),
                        ..Default::default()
                    })),
                }),
                pipeline_source: Some(recurring_run::PipelineSource::PipelineSpec(spec())),
                ..Default::default()
            },
        )
        .await
        .expect("recurring run");
    let (dir, _temp) = server.stop().await;

    let healthy = store::check_data_dir(&dir).expect("check");
    assert!(healthy.is_consistent(), "{healthy}");
    assert_eq!(
        (
            healthy.pipelines,
            healthy.pipeline_versions,
            healthy.recurring_runs
        ),
        (1, 1, 1)
    );
    assert!(
        healthy
            .to_string()
            .contains("1 pipelines, 1 pipeline versions, 1 recurring runs")
    );

    let name_entry = key(keys::PIPELINE_NAME, "team", b"checked");
    let stray_entry = key(
        keys::PIPELINES_BY_NAMESPACE,
        "team",
        &[&keys::encode_time(&Default::default())[..], b"ghost"].concat(),
    );
    let bad_lease = keys::record(keys::LEASE, "scheduler");
    edit_offline(
        &dir,
        std::slice::from_ref(&name_entry),
        &[(stray_entry, Vec::new()), (bad_lease, b"??".to_vec())],
    )
    .expect("damage the store");
    let damaged = store::check_data_dir(&dir).expect("check");
    let problems = damaged.problems.join("\n");
    assert_eq!(damaged.problems.len(), 3, "{problems}");
    assert!(problems.contains("is missing"), "{problems}");
    assert!(problems.contains("ghost"), "{problems}");
    assert!(problems.contains("lease \"scheduler\""), "{problems}");

    let repaired = store::repair_data_dir(&dir).expect("repair");
    assert!(repaired.after.is_consistent(), "{repaired}");

    let server = TestServer::start_on(&dir, _temp.expect("temp dir")).await;
    let found = server
        .services
        .pipelines
        .get_by_name(
            &server.services.context(Principal::Anonymous),
            "team",
            "checked",
        )
        .await
        .expect("found by name after the repair");
    assert_eq!(found.pipeline_id, pipeline.pipeline_id);
    server.stop().await;
}

/// A version, a recurring run and a run created from one spec: the stored blobs and use counts
/// the check reads.
async fn three_holders_of_one_spec(server: &TestServer) -> (PipelineVersion, RecurringRun, String) {
    let ctx = server.services.context(Principal::Anonymous);
    let (_, version) = server
        .services
        .pipelines
        .create_with_version(
            &ctx,
            Pipeline {
                name: "shared".into(),
                ..Default::default()
            },
            PipelineVersion {
                pipeline_spec: Some(spec()),
                ..Default::default()
            },
        )
        .await
        .expect("pipeline");
    let recurring = server
        .services
        .recurring_runs
        .create(
            &ctx,
            RecurringRun {
                display_name: "nightly".into(),
                max_concurrency: 1,
                mode: recurring_run::Mode::Disable as i32,
                trigger: Some(Trigger {
                    trigger: Some(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                        interval_second: 3600,
                        ..Default::default()
                    })),
                }),
                pipeline_source: Some(recurring_run::PipelineSource::PipelineSpec(spec())),
                ..Default::default()
            },
        )
        .await
        .expect("recurring run");
    let run = server
        .services
        .runs
        .create(
            &ctx,
            Run {
                display_name: "once".into(),
                pipeline_source: Some(run::PipelineSource::PipelineSpec(spec())),
                ..Default::default()
            },
        )
        .await
        .expect("run")
        .decode();
    (version, recurring, run.run_id)
}

#[tokio::test]
async fn versions_recurring_runs_and_runs_share_one_stored_spec_released_by_the_last() {
    let server = TestServer::start().await;
    let (version, recurring, run_id) = three_holders_of_one_spec(&server).await;
    let ctx = server.services.context(Principal::Anonymous);
    // Each reads back its spec whole.
    let read = server
        .services
        .pipelines
        .get_version(&ctx, &version.pipeline_id, &version.pipeline_version_id)
        .await
        .expect("version");
    assert_eq!(read.pipeline_spec, Some(spec()));
    let read = server
        .services
        .recurring_runs
        .get(&ctx, &recurring.recurring_run_id)
        .await
        .expect("recurring run");
    assert_eq!(
        read.pipeline_source,
        Some(recurring_run::PipelineSource::PipelineSpec(spec()))
    );
    // Disabling rewrites the record and keeps its spec.
    server
        .services
        .recurring_runs
        .disable(&ctx, &recurring.recurring_run_id)
        .await
        .expect("disable");
    let (dir, temp) = server.stop().await;
    let report = store::check_data_dir(&dir).expect("check");
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.specs, 1, "one blob for three holders: {report}");

    // Deleting two holders keeps the blob for the third; deleting the last removes it.
    let server = TestServer::start_on(&dir, temp.expect("temp dir")).await;
    let ctx = server.services.context(Principal::Anonymous);
    server
        .services
        .pipelines
        .delete_version(&ctx, &version.pipeline_id, &version.pipeline_version_id)
        .await
        .expect("delete the version");
    server
        .services
        .recurring_runs
        .delete(&ctx, &recurring.recurring_run_id)
        .await
        .expect("delete the recurring run");
    let run = server.services.runs.get(&ctx, &run_id).await.expect("run");
    assert_eq!(
        run.decode().pipeline_source,
        Some(run::PipelineSource::PipelineSpec(spec()))
    );
    let (dir, temp) = server.stop().await;
    let report = store::check_data_dir(&dir).expect("check");
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.specs, 1, "{report}");
    let server = TestServer::start_on(&dir, temp.expect("temp dir")).await;
    let ctx = server.services.context(Principal::Anonymous);
    server
        .services
        .runs
        .delete(&ctx, &run_id)
        .await
        .expect("delete the run");
    let (dir, _temp) = server.stop().await;
    let report = store::check_data_dir(&dir).expect("check");
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.specs, 0, "{report}");
}

#[tokio::test]
async fn a_lost_spec_is_reported_for_each_holder_and_repair_says_so_in_each_record() {
    let server = TestServer::start().await;
    let (version, recurring, run_id) = three_holders_of_one_spec(&server).await;
    let (dir, temp) = server.stop().await;
    let digest = store::SpecBlob::of(spec().protobuf().clone()).digest;
    edit_offline(&dir, &[store::sled::specs::blob_key(&digest)], &[]).expect("lose the blob");

    let damaged = store::check_data_dir(&dir).expect("check");
    let problems = damaged.problems.join("\n");
    let show = store::sled::specs::show(&digest);
    for holder in [
        format!("run {run_id:?}"),
        format!("pipeline version {:?}", version.pipeline_version_id),
        format!("recurring run {:?}", recurring.recurring_run_id),
    ] {
        let problem = format!("{holder} references pipeline spec {show}, which is missing");
        assert!(problems.contains(&problem), "{problem} in {problems}");
    }

    let repaired = store::repair_data_dir(&dir).expect("repair");
    assert!(repaired.after.is_consistent(), "{repaired}");
    let server = TestServer::start_on(&dir, temp.expect("temp dir")).await;
    let ctx = server.services.context(Principal::Anonymous);
    let read = server
        .services
        .pipelines
        .get_version(&ctx, &version.pipeline_id, &version.pipeline_version_id)
        .await
        .expect("version");
    assert_eq!(read.pipeline_spec, None);
    let error = read.error.expect("an error on the version");
    assert_eq!(error.code, tonic::Code::DataLoss as i32);
    assert!(error.message.contains(&show), "{}", error.message);
    let read = server
        .services
        .recurring_runs
        .get(&ctx, &recurring.recurring_run_id)
        .await
        .expect("recurring run");
    assert_eq!(read.pipeline_source, None);
    assert_eq!(
        read.error.expect("an error on the recurring run").code,
        tonic::Code::DataLoss as i32
    );
    server.stop().await;
}
