//! CreateRun, GetRun, DeleteRun, ArchiveRun, UnarchiveRun through gRPC.

mod common;

use common::*;
use runledger::api::*;

#[tokio::test]
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
