//! One cluster per test binary, one database per test: what the PostgreSQL backend's suite does.

mod pg_client;

use runledger_testkit::postgres::{self, DEFAULT_DATABASE, Error, SUPERUSER};

#[tokio::test]
async fn a_started_cluster_answers_queries_at_its_url() {
    let Some(cluster) = postgres::shared_or_skip("a_started_cluster_answers_queries_at_its_url")
    else {
        return;
    };
    let client = pg_client::connect(&cluster.url()).await;
    let row = client
        .query_one(
            "SELECT current_database(), current_user, host(inet_server_addr()), 6 * 7",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), DEFAULT_DATABASE);
    assert_eq!(row.get::<_, String>(1), SUPERUSER);
    assert_eq!(row.get::<_, String>(2), "127.0.0.1");
    assert_eq!(row.get::<_, i32>(3), 42);
    assert_eq!(
        cluster.url(),
        format!("postgres://postgres@127.0.0.1:{}/runledger", cluster.port())
    );
}

#[tokio::test]
async fn the_server_listens_on_loopback_only_with_its_socket_in_the_cluster_directory() {
    let Some(cluster) = postgres::shared_or_skip("listens_on_loopback_only") else {
        return;
    };
    let client = pg_client::connect(&cluster.url()).await;
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    let sockets: String = client
        .query_one("SHOW unix_socket_directories", &[])
        .await
        .expect("show")
        .get(0);
    let cluster_dir = cluster.data_dir().parent().expect("parent").to_path_buf();
    assert_eq!(std::path::Path::new(&sockets), cluster_dir);
}

#[tokio::test]
async fn two_created_databases_are_distinct() {
    let Some(cluster) = postgres::shared_or_skip("two_created_databases_are_distinct") else {
        return;
    };
    let first_url = cluster.create_database("distinct_first").expect("first");
    let second_url = cluster.create_database("distinct_second").expect("second");
    assert_ne!(first_url, second_url);

    let first = pg_client::connect(&first_url).await;
    let second = pg_client::connect(&second_url).await;
    first
        .batch_execute("CREATE TABLE only_here (id int); INSERT INTO only_here VALUES (1)")
        .await
        .expect("create in first");
    let name: String = second
        .query_one("SELECT current_database()", &[])
        .await
        .expect("name")
        .get(0);
    assert_eq!(name, "distinct_second");
    let seen: Option<String> = second
        .query_one("SELECT to_regclass('only_here')::text", &[])
        .await
        .expect("lookup")
        .get(0);
    assert_eq!(
        seen, None,
        "a table of the first database is visible in the second"
    );
}

#[test]
fn creating_the_same_database_twice_fails_and_says_it_exists() {
    let Some(cluster) = postgres::shared_or_skip("creating_the_same_database_twice") else {
        return;
    };
    cluster.create_database("twice").expect("first time");
    let error = cluster.create_database("twice").unwrap_err();
    assert!(matches!(error, Error::Failed { .. }), "{error:?}");
    assert!(error.to_string().contains("already exists"), "{error}");
}

#[test]
fn a_database_name_that_needs_quoting_is_refused() {
    let Some(cluster) = postgres::shared_or_skip("a_database_name_that_needs_quoting") else {
        return;
    };
    let error = cluster.create_database("robert'); drop").unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
}

#[test]
fn the_shared_cluster_is_one_cluster_for_the_whole_process() {
    let Some(first) = postgres::shared_or_skip("the_shared_cluster_is_one_cluster") else {
        return;
    };
    let again = std::thread::spawn(|| postgres::shared().expect("shared").port())
        .join()
        .expect("thread");
    assert_eq!(again, first.port());
    assert!(std::ptr::eq(first, postgres::shared().expect("shared")));
}

#[tokio::test]
async fn many_threads_can_create_databases_at_once() {
    let Some(cluster) = postgres::shared_or_skip("many_threads_can_create_databases_at_once")
    else {
        return;
    };
    let names: Vec<String> = (0..6).map(|n| format!("parallel_{n}")).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| scope.spawn(move || cluster.create_database(name)))
            .collect();
        for handle in handles {
            handle.join().expect("thread").expect("create");
        }
    });
    let client = pg_client::connect(&cluster.url()).await;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'parallel\\_%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 6);
}

#[test]
fn the_server_runs_unprivileged_when_the_tests_run_as_root() {
    let Some(cluster) = postgres::shared_or_skip("the_server_runs_unprivileged") else {
        return;
    };
    let pid = cluster.postmaster_pid().expect("running").to_string();
    let server_uid = pg_client::uid_of(&pid);
    let own_uid = pg_client::uid_of("self");
    if own_uid == 0 {
        assert_ne!(server_uid, 0, "the postmaster runs as root");
    } else {
        assert_eq!(server_uid, own_uid);
    }
}
