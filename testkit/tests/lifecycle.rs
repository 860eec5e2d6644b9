//! A cluster of a test's own: stopping, restarting and killing it, as the backend's fault tests
//! will.

mod pg_client;

use std::net::TcpListener;

use runledger_testkit::postgres::{self, Error};

#[tokio::test]
async fn stop_then_start_again_keeps_committed_rows_and_the_port() {
    let Some(mut cluster) = postgres::cluster_or_skip("stop_then_start_again_keeps_rows") else {
        return;
    };
    let client = pg_client::connect(&cluster.url()).await;
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2), (3)")
        .await
        .expect("write");
    let port = cluster.port();

    cluster.stop().expect("stop");
    assert_eq!(cluster.postmaster_pid(), None);
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a connection survived the stop"
    );
    cluster.start_again().expect("start again");

    assert_eq!(cluster.port(), port);
    let client = pg_client::connect(&cluster.url()).await;
    let sum: i64 = client
        .query_one("SELECT sum(n) FROM kept", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(sum, 6);
}

#[tokio::test]
async fn kill_drops_connections_and_start_again_recovers_committed_rows() {
    let Some(mut cluster) = postgres::cluster_or_skip("kill_then_start_again_recovers") else {
        return;
    };
    let client = pg_client::connect(&cluster.url()).await;
    client
        .batch_execute("CREATE TABLE survived (n int); INSERT INTO survived VALUES (7)")
        .await
        .expect("write");
    let old_pid = cluster.postmaster_pid().expect("running");

    cluster.kill().expect("kill");
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a connection survived the kill"
    );
    assert!(
        pg_client::processes_in(&cluster.data_dir()).is_empty(),
        "server processes outlived kill()"
    );

    cluster.start_again().expect("start again after a crash");
    assert_ne!(cluster.postmaster_pid(), Some(old_pid));
    let client = pg_client::connect(&cluster.url()).await;
    let n: i32 = client
        .query_one("SELECT n FROM survived", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(n, 7);
    let log = std::fs::read_to_string(cluster.log_path()).expect("log");
    assert!(
        log.contains("was interrupted") || log.contains("not properly shut down"),
        "the restart did not go through crash recovery:\n{log}"
    );
}

#[test]
fn calls_that_do_not_fit_the_state_are_refused() {
    let Some(mut cluster) = postgres::cluster_or_skip("calls_that_do_not_fit_the_state") else {
        return;
    };
    let running_start = cluster.start_again().unwrap_err();
    assert!(
        matches!(running_start, Error::InvalidArgument { .. }),
        "{running_start:?}"
    );

    cluster.stop().expect("stop");
    for refused in [
        cluster.stop(),
        cluster.kill(),
        cluster.create_database("while_stopped").map(drop),
    ] {
        let error = refused.unwrap_err();
        assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
    }
}

#[test]
fn start_again_on_a_taken_port_fails_with_the_servers_own_words() {
    let Some(mut cluster) = postgres::cluster_or_skip("start_again_on_a_taken_port") else {
        return;
    };
    cluster.stop().expect("stop");
    let squatter = TcpListener::bind(("127.0.0.1", cluster.port())).expect("take the port");

    let error = cluster.start_again().unwrap_err();
    let Error::Failed { log_tail, .. } = &error else {
        panic!("expected Failed, got {error:?}");
    };
    assert!(log_tail.contains("could not bind"), "{error}");

    drop(squatter);
    cluster.start_again().expect("start once the port is free");
}
