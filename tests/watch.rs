//! WatchRuns: pushed change events, scoped, ordered, bounded.

mod common;

use std::time::Duration;

use common::*;
use runledger::api::*;
use runledger::store::{DataDirOptions, Durability};
use tokio::time::timeout;
use tonic::Code;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(10);

async fn watch(server: &TestServer, request: WatchRunsRequest) -> Streaming<RunEvent> {
    let mut client = server.runs().await;
    // The subscription exists once the server has answered with headers.
    client
        .watch_runs(request)
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Streaming<RunEvent>) -> RunEvent {
    timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("stream open")
}

fn kind(event: &RunEvent) -> run_event::Type {
    run_event::Type::try_from(event.r#type).unwrap()
}

#[tokio::test]
async fn a_run_watcher_sees_create_updates_and_delete_in_commit_order() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let run = create_run(
        &mut client,
        Run {
            run_id: "watched".into(),
            ..new_run("w")
        },
    )
    .await;
    let mut all = watch(&server, WatchRunsRequest::default()).await;
    let mut one = watch(
        &server,
        WatchRunsRequest {
            run_id: "watched".into(),
            ..Default::default()
        },
    )
    .await;

    let other = create_run(&mut client, new_run("other")).await;
    for state in [RuntimeState::Running, RuntimeState::Succeeded] {
        client
            .report_run_state(ReportRunStateRequest {
                run_id: run.run_id.clone(),
                state: state as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    client
        .archive_run(ArchiveRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .delete_run(DeleteRunRequest {
            run_id: run.run_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let expected = [
        (run_event::Type::Updated, RuntimeState::Running as i32),
        (run_event::Type::Updated, RuntimeState::Succeeded as i32),
        (run_event::Type::Updated, RuntimeState::Succeeded as i32),
        (run_event::Type::Deleted, RuntimeState::Succeeded as i32),
    ];
    for (want_kind, want_state) in expected {
        let event = next(&mut one).await;
        let got = event.run.as_ref().unwrap();
        assert_eq!(got.run_id, "watched", "out-of-scope run leaked: {got:?}");
        assert_eq!((kind(&event), got.state), (want_kind, want_state));
    }
    let created = next(&mut all).await;
    assert_eq!(kind(&created), run_event::Type::Created);
    assert_eq!(created.run.unwrap().run_id, other.run_id);
    // The everything-watcher sees the same changes of "watched", after the create of "other".
    for _ in 0..2 {
        next(&mut all).await;
    }
    let archived = next(&mut all).await;
    assert_eq!(
        archived.run.unwrap().storage_state,
        run::StorageState::Archived as i32
    );
    assert_eq!(kind(&next(&mut all).await), run_event::Type::Deleted);
}

#[tokio::test]
async fn experiment_and_namespace_watchers_only_see_their_scope() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let mut experiments = server.experiments().await;
    let exp = create_experiment(&mut experiments, "e", "team").await;
    let mut by_exp = watch(
        &server,
        WatchRunsRequest {
            experiment_id: exp.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut by_ns = watch(
        &server,
        WatchRunsRequest {
            namespace: "team".into(),
            ..Default::default()
        },
    )
    .await;

    create_run(
        &mut client,
        Run {
            namespace: "elsewhere".into(),
            ..new_run("no")
        },
    )
    .await;
    let in_ns_default = create_run(
        &mut client,
        Run {
            namespace: "team".into(),
            ..new_run("ns only")
        },
    )
    .await;
    let in_exp = create_run(
        &mut client,
        Run {
            experiment_id: exp.experiment_id.clone(),
            ..new_run("both")
        },
    )
    .await;

    assert_eq!(next(&mut by_exp).await.run.unwrap().run_id, in_exp.run_id);
    assert_eq!(
        next(&mut by_ns).await.run.unwrap().run_id,
        in_ns_default.run_id
    );
    assert_eq!(next(&mut by_ns).await.run.unwrap().run_id, in_exp.run_id);
}

#[tokio::test]
async fn a_request_naming_two_scopes_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let result = client
        .watch_runs(WatchRunsRequest {
            run_id: "a".into(),
            namespace: "b".into(),
            ..Default::default()
        })
        .await;
    expect_code(result, Code::InvalidArgument);
}

#[tokio::test]
async fn a_watcher_that_stops_reading_does_not_block_writers_and_is_ended_with_resource_exhausted()
{
    let store = DataDirOptions {
        event_buffer: 8,
        // Fast writes; the watcher's buffer is what is under test.
        durability: Durability::Buffered {
            flush_every_ms: 500,
        },
        ..Default::default()
    };
    let config = Config {
        store,
        ..Default::default()
    };
    let server = TestServer::start_with(config).await;
    let mut client = server.runs().await;
    let mut stalled = watch(&server, WatchRunsRequest::default()).await;
    // Far more events than the buffer and the HTTP/2 flow-control windows hold (~4.5 MB); the
    // writes complete regardless.
    let padding = "x".repeat(15 * 1024);
    timeout(WAIT * 3, async {
        for i in 0..300 {
            create_run(
                &mut client,
                Run {
                    description: padding.clone(),
                    ..new_run(&format!("r{i}"))
                },
            )
            .await;
        }
    })
    .await
    .expect("writers were not blocked by the stalled watcher");

    let status = timeout(WAIT, async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without saying why"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the overflow is reported in time");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(status.message().contains("behind"), "{}", status.message());
}

async fn wait_for_watchers(server: &TestServer, count: usize) {
    timeout(WAIT, async {
        while server.services.watcher_count() != count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "watcher count stayed at {} instead of {count}",
            server.services.watcher_count()
        )
    });
}

#[tokio::test]
async fn disconnecting_frees_the_subscription() {
    let server = TestServer::start().await;
    let a = watch(&server, WatchRunsRequest::default()).await;
    let b = watch(&server, WatchRunsRequest::default()).await;
    wait_for_watchers(&server, 2).await;
    drop(a);
    // The server notices the reset stream when it next has something to send or polls it.
    let mut client = server.runs().await;
    create_run(&mut client, new_run("poke")).await;
    wait_for_watchers(&server, 1).await;
    drop(b);
    create_run(&mut client, new_run("poke")).await;
    wait_for_watchers(&server, 0).await;
}

#[tokio::test]
async fn watchers_beyond_the_limit_are_resource_exhausted() {
    let mut config = Config::default();
    config.limits.max_watchers = 1;
    let server = TestServer::start_with(config).await;
    let _first = watch(&server, WatchRunsRequest::default()).await;
    let mut client = server.runs().await;
    let result = client.watch_runs(WatchRunsRequest::default()).await;
    // The refusal may arrive as the call's status or as the stream's first message.
    let status = match result {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.expect_err("refused"),
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn watch_streams_end_cleanly_when_the_server_shuts_down() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, WatchRunsRequest::default()).await;
    timeout(WAIT, server.stop())
        .await
        .expect("shutdown does not wait forever for watchers");
    let end = timeout(WAIT, stream.message()).await.expect("stream ends");
    assert!(matches!(end, Ok(None)), "clean end, got {end:?}");
}

#[tokio::test]
async fn a_watcher_resumes_after_its_last_sequence_number_even_across_a_restart() {
    let server = TestServer::start().await;
    let mut client = server.runs().await;
    let mut stream = watch(&server, WatchRunsRequest::default()).await;
    create_run(&mut client, new_run("a")).await;
    let seen = next(&mut stream).await;
    drop(stream);
    let b = create_run(&mut client, new_run("b")).await;
    let c = create_run(&mut client, new_run("c")).await;

    let mut resumed = watch(
        &server,
        WatchRunsRequest {
            resume_after: seen.sequence,
            ..Default::default()
        },
    )
    .await;
    for (expected, at) in [(&b, seen.sequence + 1), (&c, seen.sequence + 2)] {
        let event = next(&mut resumed).await;
        assert_eq!(event.run.unwrap().run_id, expected.run_id);
        assert_eq!(event.sequence, at);
    }
    drop(resumed);

    // After a restart the numbers go on where they were; what was retained in memory is gone,
    // so resuming from before the restart says to list again.
    let server = server.restart().await;
    let mut client = server.runs().await;
    let mut live = watch(&server, WatchRunsRequest::default()).await;
    create_run(&mut client, new_run("d")).await;
    assert_eq!(next(&mut live).await.sequence, seen.sequence + 3);
    let mut runs = server.runs().await;
    let stale = runs
        .watch_runs(WatchRunsRequest {
            resume_after: seen.sequence,
            ..Default::default()
        })
        .await;
    let message = expect_code(stale, Code::ResourceExhausted);
    assert!(message.contains("list the runs again"), "{message}");
}
