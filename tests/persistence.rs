//! Everything survives a restart on the same data directory.

mod common;

use common::*;
use runledger::api::*;

#[tokio::test]
async fn runs_experiments_and_indexes_survive_a_restart() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "kept", "ns").await;
    let in_exp = create_run(
        &mut runs,
        Run {
            experiment_id: exp.experiment_id.clone(),
            ..new_run("a")
        },
    )
    .await;
    let in_default = create_run(&mut runs, new_run("b")).await;
    runs.archive_run(ArchiveRunRequest {
        run_id: in_default.run_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let first_page = runs
        .list_runs(ListRunsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    drop((runs, experiments));

    let server = server.restart().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let fetched = runs
        .get_run(GetRunRequest {
            run_id: in_exp.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, in_exp);
    let archived = runs
        .get_run(GetRunRequest {
            run_id: in_default.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(archived.storage_state, run::StorageState::Archived as i32);
    let e = experiments
        .get_experiment(GetExperimentRequest {
            experiment_id: exp.experiment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.display_name, "kept");

    let by_exp = list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: exp.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_exp, vec![in_exp.clone()]);
    let by_ns = list_all(
        &mut runs,
        ListRunsRequest {
            namespace: "ns".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_ns, vec![in_exp]);

    // A page token issued before the restart still continues the listing.
    let rest = runs
        .list_runs(ListRunsRequest {
            page_size: 1,
            page_token: first_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.runs.len(), 1);
    assert_eq!(rest.runs[0].run_id, in_default.run_id);
    assert_eq!(rest.total_size, 2);

    // The default experiment is still the default: new runs join it.
    let again = create_run(&mut runs, new_run("c")).await;
    assert_eq!(again.experiment_id, in_default.experiment_id);
}
