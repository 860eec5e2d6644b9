//! The run state machine through gRPC: ReportRunState, TerminateRun, RetryRun.

mod common;

use common::*;
use runledger::api::RuntimeState::{self, *};
use runledger::api::*;
use runledger::proto::google::rpc::Status as RpcStatus;
use runledger::wkt::Timestamp;
use runledger_testkit::every_backend;
use tonic::Code;
use tonic::transport::Channel;

type Client = run_service_client::RunServiceClient<Channel>;

const ALL: [RuntimeState; 8] = [
    Pending, Running, Succeeded, Skipped, Failed, Canceling, Canceled, Paused,
];

fn is_terminal(s: RuntimeState) -> bool {
    matches!(s, Succeeded | Skipped | Failed | Canceled)
}

/// The transitions the lifecycle allows (README, "The run lifecycle"), written out independently
/// of the server's table.
fn allowed(from: RuntimeState, to: RuntimeState) -> bool {
    match from {
        Pending => to != Pending,
        Running => matches!(to, Paused | Canceling) || is_terminal(to),
        Paused => matches!(to, Running | Canceling | Canceled | Failed),
        Canceling => matches!(to, Canceled | Failed | Succeeded),
        _ => false,
    }
}

fn report(run_id: &str, state: RuntimeState) -> ReportRunStateRequest {
    ReportRunStateRequest {
        run_id: run_id.into(),
        state: state as i32,
        ..Default::default()
    }
}

async fn get(client: &mut Client, run_id: &str) -> Run {
    client
        .get_run(GetRunRequest {
            run_id: run_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A new run driven into `state` by a legal path.
async fn run_in(client: &mut Client, state: RuntimeState) -> Run {
    let run = create_run(client, new_run("lifecycle")).await;
    let path: &[RuntimeState] = match state {
        Pending => &[],
        Running | Canceling | Succeeded | Skipped | Failed | Canceled => &[Running],
        Paused => &[Running],
        RuntimeState::Unspecified => unreachable!(),
    };
    for step in path.iter().chain([&state]) {
        if *step != Pending {
            client
                .report_run_state(report(&run.run_id, *step))
                .await
                .unwrap();
        }
    }
    let run = get(client, &run.run_id).await;
    assert_eq!(run.state, state as i32);
    run
}

#[every_backend]
async fn every_transition_is_allowed_or_refused_as_the_spec_says() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    for from in ALL {
        for to in ALL.into_iter().filter(|to| *to != from) {
            let before = run_in(&mut client, from).await;
            let result = client.report_run_state(report(&before.run_id, to)).await;
            if allowed(from, to) {
                let after = result
                    .unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"))
                    .into_inner();
                assert_eq!(after.state, to as i32);
                assert_eq!(
                    after.state_history.len(),
                    before.state_history.len() + 1,
                    "{from:?} -> {to:?}"
                );
                let last = after.state_history.last().unwrap();
                assert_eq!(last.state, to as i32);
                if is_terminal(to) {
                    assert_eq!(
                        after.finished_at, last.update_time,
                        "{from:?} -> {to:?} sets finished_at"
                    );
                } else {
                    assert_eq!(after.finished_at, None);
                }
                assert_eq!(
                    get(&mut client, &before.run_id).await,
                    after,
                    "the reply is what is stored"
                );
            } else {
                let message = expect_code(result, Code::FailedPrecondition);
                assert!(
                    message.contains(from.as_str_name()) && message.contains(to.as_str_name()),
                    "{from:?} -> {to:?}: {message}"
                );
                assert_eq!(
                    get(&mut client, &before.run_id).await,
                    before,
                    "a refused report changes nothing"
                );
            }
        }
    }
}

#[every_backend]
async fn reporting_the_current_state_adds_no_history_but_replaces_details_and_error() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    for state in [Running, Failed] {
        let before = run_in(&mut client, state).await;
        let details = RuntimeDetails {
            pipeline_context_id: 11,
            pipeline_run_context_id: 12,
            task_details: vec![PipelineTaskDetail {
                task_id: "t1".into(),
                state: Running as i32,
                ..Default::default()
            }],
        };
        let error = RpcStatus {
            code: 2,
            message: "disk full".into(),
            details: vec![],
        };
        let after = client
            .report_run_state(ReportRunStateRequest {
                runtime_details: Some(details.clone()),
                error: Some(error.clone()),
                ..report(&before.run_id, state)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(after.state_history, before.state_history, "{state:?}");
        assert_eq!(after.finished_at, before.finished_at);
        assert_eq!(after.runtime_details, Some(details));
        assert_eq!(after.error, Some(error));
    }
}

#[every_backend]
async fn a_failure_report_records_its_error_and_time_in_the_history() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let run = run_in(&mut client, Running).await;
    let at = Timestamp {
        seconds: 2_000_000_000,
        nanos: 42,
    };
    let error = RpcStatus {
        code: 13,
        message: "OOMKilled".into(),
        details: vec![],
    };
    let failed = client
        .report_run_state(ReportRunStateRequest {
            error: Some(error.clone()),
            update_time: Some(at),
            ..report(&run.run_id, Failed)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.error, Some(error.clone()));
    assert_eq!(failed.finished_at, Some(at));
    let last = failed.state_history.last().unwrap();
    assert_eq!(
        (last.state, last.update_time, last.error.clone()),
        (Failed as i32, Some(at), Some(error))
    );
}

#[every_backend]
async fn a_mismatched_expected_state_is_aborted_naming_the_actual_state() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let run = run_in(&mut client, Running).await;
    let result = client
        .report_run_state(ReportRunStateRequest {
            expected_state: Pending as i32,
            ..report(&run.run_id, Succeeded)
        })
        .await;
    let message = expect_code(result, Code::Aborted);
    assert!(message.contains("RUNNING"), "{message}");
    let ok = client
        .report_run_state(ReportRunStateRequest {
            expected_state: Running as i32,
            ..report(&run.run_id, Succeeded)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.state, Succeeded as i32);
}

#[every_backend]
async fn reports_with_a_missing_or_unknown_state_or_run_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let run = create_run(&mut client, new_run("a")).await;
    expect_code(
        client
            .report_run_state(report(&run.run_id, RuntimeState::Unspecified))
            .await,
        Code::InvalidArgument,
    );
    let unknown = ReportRunStateRequest {
        run_id: run.run_id.clone(),
        state: 42,
        ..Default::default()
    };
    let message = expect_code(
        client.report_run_state(unknown).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("42"), "{message}");
    let unknown_expected = ReportRunStateRequest {
        expected_state: 99,
        ..report(&run.run_id, Running)
    };
    expect_code(
        client.report_run_state(unknown_expected).await,
        Code::InvalidArgument,
    );
    let bad_time = ReportRunStateRequest {
        update_time: Some(Timestamp {
            seconds: 0,
            nanos: -1,
        }),
        ..report(&run.run_id, Running)
    };
    expect_code(
        client.report_run_state(bad_time).await,
        Code::InvalidArgument,
    );
    expect_code(
        client.report_run_state(report("missing", Running)).await,
        Code::NotFound,
    );
}

#[every_backend]
async fn terminate_follows_the_spec_from_every_state() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    for from in ALL {
        let before = run_in(&mut client, from).await;
        let result = client
            .terminate_run(TerminateRunRequest {
                run_id: before.run_id.clone(),
                ..Default::default()
            })
            .await;
        let after_state = match from {
            Pending => Some(Canceled),
            Running | Paused | Canceling => Some(Canceling),
            _ => None,
        };
        let after = match after_state {
            Some(_) => {
                result.unwrap_or_else(|e| panic!("terminate from {from:?}: {e}"));
                get(&mut client, &before.run_id).await
            }
            None => {
                expect_code(result, Code::FailedPrecondition);
                let after = get(&mut client, &before.run_id).await;
                assert_eq!(after, before);
                continue;
            }
        };
        let target = after_state.unwrap();
        assert_eq!(after.state, target as i32, "terminate from {from:?}");
        let added = if from == Canceling { 0 } else { 1 };
        assert_eq!(
            after.state_history.len(),
            before.state_history.len() + added,
            "from {from:?}"
        );
        assert_eq!(after.finished_at.is_some(), target == Canceled);
    }
    expect_code(
        client
            .terminate_run(TerminateRunRequest {
                run_id: "missing".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn retry_restarts_only_failed_or_canceled_runs_and_clears_the_outcome() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    for from in ALL {
        let before = run_in(&mut client, from).await;
        let result = client
            .retry_run(RetryRunRequest {
                run_id: before.run_id.clone(),
                ..Default::default()
            })
            .await;
        if matches!(from, Failed | Canceled) {
            result.unwrap();
            let after = get(&mut client, &before.run_id).await;
            assert_eq!(after.state, Pending as i32);
            assert_eq!(after.finished_at, None);
            assert_eq!(after.error, None);
            assert_eq!(after.state_history.len(), before.state_history.len() + 1);
            // A retried run can run again.
            client
                .report_run_state(report(&before.run_id, Running))
                .await
                .unwrap();
        } else {
            expect_code(result, Code::FailedPrecondition);
        }
    }
    expect_code(
        client
            .retry_run(RetryRunRequest {
                run_id: "missing".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

#[every_backend]
async fn concurrent_reports_on_one_run_never_lose_an_acknowledged_update() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let run = create_run(&mut client, new_run("raced")).await;
    let targets = [
        Running, Paused, Canceling, Running, Succeeded, Failed, Canceled, Skipped, Paused, Running,
        Canceling, Canceled,
    ];
    let mut tasks = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let mut c = server.runs().await;
        let run_id = run.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let at = Timestamp {
                seconds: 1_900_000_000 + i as i64,
                nanos: 0,
            };
            let result = c
                .report_run_state(ReportRunStateRequest {
                    update_time: Some(at),
                    ..report(&run_id, target)
                })
                .await;
            (target, at, result.map(|r| r.into_inner()))
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        let (target, at, result) = task.await.unwrap();
        match result {
            Ok(reply) => {
                assert_eq!(reply.state, target as i32);
                let last = reply.state_history.last().unwrap();
                // A report of the state the run is already in succeeds without a history entry.
                if (last.state, last.update_time) == (target as i32, Some(at)) {
                    acknowledged.push((target as i32, at));
                }
            }
            Err(status) => assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "{}",
                status.message()
            ),
        }
    }
    let last = get(&mut client, &run.run_id).await;
    // The history is a legal path from PENDING.
    let states: Vec<RuntimeState> = last
        .state_history
        .iter()
        .map(|s| RuntimeState::try_from(s.state).unwrap())
        .collect();
    assert_eq!(states[0], Pending);
    for pair in states.windows(2) {
        assert!(
            allowed(pair[0], pair[1]),
            "illegal step {:?} in {states:?}",
            pair
        );
    }
    // Every acknowledged report is in the history exactly once, and nothing else is.
    let recorded: Vec<_> = last.state_history[1..]
        .iter()
        .map(|s| (s.state, s.update_time.unwrap()))
        .collect();
    let mut expected = acknowledged.clone();
    expected.sort_by_key(|(_, at)| *at);
    let mut got = recorded.clone();
    got.sort_by_key(|(_, at)| *at);
    assert_eq!(got, expected);
    assert_eq!(last.state, recorded.last().unwrap().0);
}
