//! `GET /metrics` end to end: a real server, real gRPC and HTTP calls (failing ones too), and
//! each scrape parsed with a Prometheus text parser (`prometheus-parse`), checking that exactly
//! the series those calls name moved, by exactly as much.

mod common;

use std::time::Duration;

use common::rest::Http;
use common::*;
use prometheus_parse::{Scrape, Value};
use runledger::api::*;
use tonic::Code;

const RUNS: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/";

/// One scrape of a server's `/metrics`, parsed.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(base: &str) -> Metrics {
        let response = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.contains("openmetrics-text"), "{content_type}");
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).expect("parse the exposition"))
    }

    /// The sum of every sample named `name` whose labels include all of `labels` (0 if none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name}: not a number: {other:?}"),
            })
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == name)
    }
}

fn report(run_id: &str, state: RuntimeState) -> ReportRunStateRequest {
    ReportRunStateRequest {
        run_id: run_id.into(),
        state: state as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_and_by_route_and_status() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let http = Http::new(&server);
    let before = Metrics::scrape(&server.http_url()).await;

    let a = create_run(&mut runs, new_run("a")).await;
    create_run(&mut runs, new_run("b")).await;
    let missing = runs
        .get_run(GetRunRequest {
            run_id: "no-such-run".into(),
            ..Default::default()
        })
        .await;
    expect_code(missing, Code::NotFound);
    let bad_filter = runs
        .list_runs(ListRunsRequest {
            filter: "{not json".into(),
            ..Default::default()
        })
        .await;
    expect_code(bad_filter, Code::InvalidArgument);
    http.get(&format!("/runs/{}", a.run_id)).await.expect_ok();
    http.get("/runs/no-such-run").await.expect_error(404, 5);
    http.get("/runs/another-missing-run")
        .await
        .expect_error(404, 5);
    assert_eq!(http.get("/no/such/route").await.status, 404);

    let after = Metrics::scrape(&server.http_url()).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let create = format!("{RUNS}CreateRun");
    let get = format!("{RUNS}GetRun");
    let list = format!("{RUNS}ListRuns");
    let grpc = "runledger_grpc_requests_total";
    assert_eq!(moved(grpc, &[("method", &create), ("code", "OK")]), 2.0);
    assert_eq!(moved(grpc, &[("method", &create)]), 2.0, "no other code");
    assert_eq!(moved(grpc, &[("method", &get), ("code", "NOT_FOUND")]), 1.0);
    assert_eq!(moved(grpc, &[("method", &get)]), 1.0);
    assert_eq!(
        moved(grpc, &[("method", &list), ("code", "INVALID_ARGUMENT")]),
        1.0
    );
    assert_eq!(moved(grpc, &[]), 4.0, "exactly the four gRPC calls made");
    let latency = "runledger_grpc_request_duration_seconds_count";
    assert_eq!(moved(latency, &[("method", &create)]), 2.0);
    assert_eq!(moved(latency, &[("method", &get)]), 1.0);
    assert_eq!(after.sum("runledger_grpc_requests_in_flight", &[]), 0.0);

    let rest = "runledger_http_requests_total";
    // Path parameters are written `:name` (a `{` in a label value trips some parsers).
    let route = ("route", "/apis/v2beta1/runs/:tail");
    let get_method = ("method", "GET");
    assert_eq!(moved(rest, &[route, get_method, ("status", "200")]), 1.0);
    assert_eq!(moved(rest, &[route, get_method, ("status", "404")]), 2.0);
    // Two raw paths, one series: the route template is the label, never the path.
    assert!(!after.0.samples.iter().any(|s| {
        s.labels
            .get("route")
            .is_some_and(|r| r.contains("no-such-run"))
    }));
    assert_eq!(
        moved(rest, &[("route", "unmatched"), ("status", "404")]),
        1.0,
        "an unknown path is counted under one label"
    );
    assert_eq!(
        moved(
            "runledger_http_request_duration_seconds_count",
            &[route, get_method]
        ),
        3.0
    );
    // The first scrape was counted once answered; this one is rendered before it is counted.
    assert_eq!(
        moved(
            rest,
            &[("route", "/metrics"), get_method, ("status", "200")]
        ),
        1.0
    );
    assert_eq!(moved(rest, &[]), 5.0, "four API requests and one scrape");
    server.stop().await;
}

#[tokio::test]
async fn runs_by_state_and_group_commits_follow_the_store() {
    let server = TestServer::start().await;
    let mut experiments = server.experiments().await;
    let mut runs = server.runs().await;
    let team_a = create_experiment(&mut experiments, "e", "team-a").await;
    let team_b = create_experiment(&mut experiments, "e", "team-b").await;
    let in_experiment = |name: &str, experiment: &Experiment| Run {
        experiment_id: experiment.experiment_id.clone(),
        ..new_run(name)
    };
    let mut created = Vec::new();
    for name in ["a1", "a2", "a3"] {
        created.push(create_run(&mut runs, in_experiment(name, &team_a)).await);
    }
    create_run(&mut runs, in_experiment("b1", &team_b)).await;
    runs.report_run_state(report(&created[0].run_id, RuntimeState::Running))
        .await
        .unwrap();
    runs.archive_run(ArchiveRunRequest {
        run_id: created[1].run_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // The store's counters tell runs apart by namespace, runtime state and storage state.
    let m = Metrics::scrape(&server.http_url()).await;
    let runs_in = |namespace: &str, storage: &str| {
        m.sum(
            "runledger_runs",
            &[("namespace", namespace), ("storage_state", storage)],
        )
    };
    assert_eq!(runs_in("team-a", "AVAILABLE"), 2.0);
    assert_eq!(runs_in("team-a", "ARCHIVED"), 1.0);
    assert_eq!(runs_in("team-b", "AVAILABLE"), 1.0);
    assert_eq!(runs_in("team-b", "ARCHIVED"), 0.0);
    assert_eq!(m.sum("runledger_runs", &[]), 4.0);
    let runs_by_state = |namespace: &str, state: &str| {
        m.sum(
            "runledger_runs",
            &[("namespace", namespace), ("state", state)],
        )
    };
    assert_eq!(runs_by_state("team-a", "RUNNING"), 1.0);
    assert_eq!(runs_by_state("team-a", "PENDING"), 2.0);
    assert_eq!(runs_by_state("team-b", "PENDING"), 1.0);
    assert_eq!(m.sum("runledger_runs", &[("state", "UNKNOWN")]), 0.0);

    // Durable mode: every acknowledged write went through a group-commit flush first.
    let flushes = m.sum("runledger_store_commit_batch_writes_count", &[]);
    assert!(flushes >= 1.0, "{flushes}");
    let writes = m.sum("runledger_store_commit_batch_writes_sum", &[]);
    assert!(
        writes >= 8.0,
        "2 experiments + 4 runs + 1 report + 1 archive, each made durable by a flush: {writes}"
    );
    assert_eq!(
        m.sum("runledger_store_flush_duration_seconds_count", &[]),
        flushes,
        "one latency per flush"
    );
    assert!(m.sum("runledger_store_size_bytes", &[]) > 0.0);
    assert!(m.has("runledger_watch_events_dropped_total"));
    server.stop().await;
}

/// Scrapes until `done` holds, at most 50 times (the server notices a stream's end a moment
/// after the client drops it); returns the last scrape.
async fn scrape_until(base: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    for _ in 0..50 {
        let m = Metrics::scrape(base).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Metrics::scrape(base).await
}

#[tokio::test]
async fn open_watches_are_a_gauge_and_a_stream_is_counted_when_it_ends() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let base = server.http_url();
    let watch = format!("{RUNS}WatchRuns");
    let open = "runledger_watchers_open";
    let calls = "runledger_grpc_requests_total";
    assert_eq!(Metrics::scrape(&base).await.sum(open, &[]), 0.0);

    let mut stream = runs
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let during = Metrics::scrape(&base).await;
    assert_eq!(during.sum(open, &[]), 1.0);
    assert_eq!(
        during.sum(calls, &[("method", &watch)]),
        0.0,
        "a stream is counted when it ends, not while it is open"
    );
    assert_eq!(
        during.sum("runledger_grpc_requests_in_flight", &[("method", &watch)]),
        1.0
    );
    // The watch still delivers while counted.
    create_run(&mut runs, new_run("seen")).await;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event")
        .expect("stream")
        .expect("not ended");
    assert_eq!(event.run.unwrap().display_name, "seen");

    drop(stream);
    let closed = scrape_until(&base, |m| {
        m.sum(open, &[]) == 0.0 && m.sum(calls, &[("method", &watch)]) == 1.0
    })
    .await;
    assert_eq!(closed.sum(open, &[]), 0.0);
    assert_eq!(
        closed.sum(calls, &[("method", &watch), ("code", "CANCELLED")]),
        1.0,
        "a stream the client dropped is counted once, as CANCELLED"
    );
    assert_eq!(closed.sum(calls, &[("method", &watch)]), 1.0);

    // A refused watch (two scopes at once) is counted with its code and opens nothing.
    let refused = runs
        .watch_runs(WatchRunsRequest {
            run_id: "a".into(),
            namespace: "b".into(),
            ..Default::default()
        })
        .await;
    expect_code(refused, Code::InvalidArgument);
    let invalid = [("method", watch.as_str()), ("code", "INVALID_ARGUMENT")];
    let m = scrape_until(&base, |m| m.sum(calls, &invalid) == 1.0).await;
    assert_eq!(m.sum(calls, &invalid), 1.0);
    assert_eq!(m.sum(open, &[]), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_served_on_the_grpc_port_too_and_grpc_calls_are_not_counted_as_http() {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    create_run(&mut runs, new_run("x")).await;
    let m = Metrics::scrape(&server.url()).await;
    let create = format!("{RUNS}CreateRun");
    assert_eq!(
        m.sum(
            "runledger_grpc_requests_total",
            &[("method", &create), ("code", "OK")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("runledger_http_requests_total", &[]),
        0.0,
        "the gRPC call is no HTTP request (this scrape is counted after it is rendered)"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_grpc_method_is_counted_once_under_one_label() {
    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for path in ["/no.such.Service/Method", "/no.such.Service/Other"] {
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<pbjson_types::Empty, pbjson_types::Empty>::default();
        let status = grpc
            .unary(
                tonic::Request::new(pbjson_types::Empty {}),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .expect_err("unknown method");
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    let m = Metrics::scrape(&server.http_url()).await;
    let calls = "runledger_grpc_requests_total";
    assert_eq!(
        m.sum(calls, &[("method", "other"), ("code", "UNIMPLEMENTED")]),
        2.0
    );
    assert_eq!(m.sum(calls, &[]), 2.0, "no series per made-up method name");
    assert_eq!(
        m.sum("runledger_http_requests_total", &[]),
        0.0,
        "the JSON router answered them, but as gRPC they are not HTTP requests"
    );
}
