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
