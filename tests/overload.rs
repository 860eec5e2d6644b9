//! Overload and slow clients, on both ports: what a client sees when requests are shed, when its
//! deadline passes or when it sends too slowly, and that a flood of idle or dribbling connections
//! does not keep other clients out. Work is held deterministically by a store whose writes wait
//! at a gate the test opens; every wait has a generous bound.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::rest::Http;
use common::{Config, TestServer, expect_code, new_run};
use runledger::api::experiment_service_client::ExperimentServiceClient;
use runledger::api::*;
use runledger::server::ServerOptions;
use runledger::store::{Intercepted, Store, Write, WriteInterceptor, Written};
use runledger::transport::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

/// Long enough for anything that should happen to happen, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where writes wait until the test opens it.
#[derive(Default)]
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    /// Writes that reached the gate.
    arrived: AtomicUsize,
    /// Writes waiting at it now (a cancelled call stops waiting).
    waiting: AtomicUsize,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    async fn until(&self, what: &str, holds: impl Fn(&Gate) -> bool) {
        tokio::time::timeout(PATIENCE, async {
            while !holds(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("gave up waiting until {what}"));
    }

    async fn until_arrived(&self, n: usize) {
        self.until(&format!("{n} writes reached the gate"), |g| {
            g.arrived.load(Ordering::Acquire) >= n
        })
        .await;
    }
}

/// When the gated store's writes wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Before the write reaches the real store.
    BeforeWrite,
    /// After the real store applied it, before the answer (a slow flush).
    AfterWrite,
}

/// Writes that wait at a gate.
struct Gated {
    gate: Arc<Gate>,
    hold: Hold,
}

#[async_trait::async_trait]
impl WriteInterceptor for Gated {
    async fn write(&self, inner: &dyn Store, write: Write) -> runledger::error::Result<Written> {
        if self.hold == Hold::BeforeWrite {
            self.gate.pass().await;
        }
        let written = inner.write(write).await;
        if self.hold == Hold::AfterWrite {
            self.gate.pass().await;
        }
        written
    }
}

/// A server with these limits whose writes wait at the returned gate.
async fn gated(limits: Limits, hold: Hold) -> (TestServer, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let for_store = gate.clone();
    let server = TestServer::start_with(Config {
        server: ServerOptions {
            limits,
            ..Default::default()
        },
        wrap_store: Some(Box::new(move |inner| {
            Intercepted::new(
                inner,
                Gated {
                    gate: for_store,
                    hold,
                },
            )
        })),
        ..Default::default()
    })
    .await;
    (server, gate)
}

async fn with_limits(limits: Limits) -> TestServer {
    TestServer::start_with(Config {
        server: ServerOptions {
            limits,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

fn create(run_id: &str) -> CreateRunRequest {
    let mut run = new_run(run_id);
    run.run_id = run_id.to_owned();
    CreateRunRequest {
        run: Some(run),
        ..Default::default()
    }
}

/// CreateRun on a client of its own, in the background.
fn spawn_create(
    server: &TestServer,
    run_id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<Run>, tonic::Status>> {
    let url = server.url();
    let request = create(run_id);
    tokio::spawn(async move {
        let channel = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .expect("connect");
        run_service_client::RunServiceClient::new(channel)
            .create_run(request)
            .await
    })
}

async fn health(server: &TestServer) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner()
        .status
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting: {what}"))
}

#[tokio::test]
async fn calls_over_the_queue_are_shed_with_retry_after_while_probes_answer_and_then_the_server_recovers()
 {
    let limits = Limits {
        max_concurrent_requests: 2,
        max_queued_requests: 1,
        queue_timeout: PATIENCE * 2,
        ..Limits::default()
    };
    let (server, gate) = gated(limits, Hold::BeforeWrite).await;
    // Two calls hold both slots at the gate.
    let holding = [
        spawn_create(&server, "hold-1"),
        spawn_create(&server, "hold-2"),
    ];
    gate.until_arrived(2).await;

    // Of two more, one waits in the queue and the other is shed at once.
    let third = spawn_create(&server, "queued-a");
    let fourth = spawn_create(&server, "queued-b");
    let (first_done, _, others) = within(
        "one of two calls over the slots to be shed",
        futures::future::select_all([third, fourth]),
    )
    .await;
    let status = first_done
        .unwrap()
        .expect_err("a call over the queue must be shed");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("overloaded"),
        "{}",
        status.message()
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1000"
    );

    // The JSON API is shed the same way, on both ports: 503 with Retry-After.
    for root in [server.http_url(), server.url()] {
        let http = Http::at(root.clone());
        let response = http
            .client
            .post(format!("{}/runs", http.base))
            .body(r#"{"display_name": "shed", "pipeline_id": "p"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["retry-after"], "1", "{root}");
        let reply = http.get("/runs").await;
        let message = reply.expect_error(503, 14);
        assert!(message.contains("overloaded"), "{root}: {message}");
        // Probes and metrics take no slot.
        http.get("/healthz").await.expect_ok();
        let metrics = http
            .client
            .get(format!("{root}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200, "{root}");
    }
    assert_eq!(
        health(&server).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Operators see it: one gRPC call and two requests per port shed, two running, one queued.
    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"runledger_requests_shed_total{reason="queue_full"} 5"#,
        r#"runledger_requests_shed_total{reason="queue_timeout"} 0"#,
        "runledger_requests_running 2",
        "runledger_requests_queued 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    // Once the work drains, every waiting call completes and new ones are served.
    gate.open();
    for call in holding.into_iter().chain(others) {
        within("a held call to finish", call)
            .await
            .unwrap()
            .expect("a call that held a slot or waited for one succeeds");
    }
    let mut runs = server.runs().await;
    let run = common::create_run(&mut runs, new_run("after")).await;
    assert_eq!(run.display_name, "after");
    server.stop().await;
}

#[tokio::test]
async fn a_call_that_waits_longer_than_the_queue_timeout_is_shed() {
    let limits = Limits {
        max_concurrent_requests: 1,
        queue_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (server, gate) = gated(limits, Hold::BeforeWrite).await;
    let holding = spawn_create(&server, "hold");
    gate.until_arrived(1).await;
    let mut runs = server.runs().await;
    let message = expect_code(
        runs.get_run(GetRunRequest {
            run_id: "hold".into(),
            ..Default::default()
        })
        .await,
        Code::Unavailable,
    );
    assert!(message.contains("waited 200 ms"), "{message}");
    gate.open();
    within("the held call", holding).await.unwrap().unwrap();
    server.stop().await;
}

/// A unary call with `grpc-timeout` made over a bare HTTP/2 connection, returning the server's
/// status: tonic's client enforces the deadline itself and reports its own CANCELLED ("Timeout
/// expired") first, which would hide the server's answer.
async fn call_with_deadline(
    server: &TestServer,
    method: &str,
    message: &impl prost::Message,
    grpc_timeout: &str,
) -> tonic::Status {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/kubeflow.pipelines.backend.api.v2beta1.RunService/{method}",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", grpc_timeout)
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let encoded = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    body.send_data(framed.into(), true).unwrap();
    let response = within("the answer", response).await.unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status")
}

#[tokio::test]
async fn an_expired_deadline_answers_deadline_exceeded_and_the_write_never_happens() {
    let (server, gate) = gated(Limits::default(), Hold::BeforeWrite).await;
    let mut runs = server.runs().await;
    let status = call_with_deadline(&server, "CreateRun", &create("late"), "300m").await;
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("grpc-timeout 300m"),
        "{}",
        status.message()
    );
    // The server dropped the call's work: nothing waits at the gate any more.
    gate.until("the cancelled write stopped waiting", |g| {
        g.waiting.load(Ordering::Acquire) == 0
    })
    .await;
    gate.open();
    expect_code(
        runs.get_run(GetRunRequest {
            run_id: "late".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    let (dir, _temp) = server.stop().await;
    let report = runledger::store::check_data_dir(&dir).unwrap();
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test]
async fn a_deadline_that_passes_while_the_write_is_made_durable_leaves_it_whole() {
    let (server, gate) = gated(Limits::default(), Hold::AfterWrite).await;
    let mut runs = server.runs().await;
    let status = call_with_deadline(&server, "CreateRun", &create("applied"), "300m").await;
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    gate.open();
    // The write was applied before the deadline: it is there whole, in every listing.
    let run = runs
        .get_run(GetRunRequest {
            run_id: "applied".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.display_name, "applied");
    let listed = common::list_all(
        &mut runs,
        ListRunsRequest {
            experiment_id: run.experiment_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1);
    let (dir, _temp) = server.stop().await;
    let report = runledger::store::check_data_dir(&dir).unwrap();
    assert!(report.is_consistent(), "{report}");
}

/// A store write whose caller goes away at any point is applied whole or not at all.
#[tokio::test]
async fn store_writes_dropped_midway_are_applied_whole_or_not_at_all() {
    use futures::FutureExt;
    let temp = tempfile::tempdir().unwrap();
    let store = runledger::store::open_data_dir(temp.path(), Default::default()).unwrap();
    let services = runledger::service::Services::new(store.clone(), Default::default())
        .await
        .unwrap();
    let ctx = services.context(Default::default());
    let experiment = services
        .experiments
        .create(
            &ctx,
            Experiment {
                display_name: "e".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..40 {
        let mut run = new_run(&format!("r{i}"));
        run.run_id = format!("r{i}");
        run.experiment_id = experiment.experiment_id.clone();
        let mut call = Box::pin(services.runs.create(&ctx, run));
        // Polled a few times (the write may be handed to the store's threads), then dropped.
        for _ in 0..(i % 4) {
            let _ = (&mut call).now_or_never();
            tokio::task::yield_now().await;
        }
        drop(call);
    }
    // Let any write already running finish, then look.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.settle().await.unwrap();
    let mut present = 0;
    for i in 0..40 {
        if let Some(stored) = store.run(&format!("r{i}")).await.unwrap() {
            assert_eq!(stored.decode().display_name, format!("r{i}"));
            present += 1;
        }
    }
    store.close().await.unwrap();
    drop((services, store));
    let report = runledger::store::check_data_dir(temp.path()).unwrap();
    assert!(report.is_consistent(), "{present} runs present: {report}");
}

/// Reads from `stream` until the server closes it; false if it stays open past PATIENCE.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_slowloris_client_is_cut_while_a_normal_client_is_served_on_both_ports() {
    let server = with_limits(Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    for addr in [server.http_addr, server.addr] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /apis/v2beta1/healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // One header byte every 100 ms, never finishing the head.
        let (mut reader, mut writer) = slow.into_split();
        let dribble = tokio::spawn(async move {
            for _ in 0..(PATIENCE.as_millis() / 100) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b"X").await.is_err() {
                    return;
                }
            }
        });
        let http = Http::at(format!("http://{addr}"));
        http.get("/healthz").await.expect_ok();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "the slowloris connection on {addr} stayed open"
        );
        dribble.abort();
    }
    server.stop().await;
}

/// Raises this process's soft limit on open files to the hard one: the flood below needs a few
/// hundred descriptors on each side.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[tokio::test]
async fn an_idle_connection_flood_does_not_keep_a_new_client_out() {
    raise_open_file_limit();
    let server = with_limits(Limits {
        max_connections: 50,
        ..Limits::default()
    })
    .await;
    // 250 connections per port that never send a byte.
    let mut idle = Vec::new();
    for addr in [server.addr, server.http_addr] {
        for _ in 0..250 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    let mut runs = server.runs().await;
    let run = common::create_run(&mut runs, new_run("through the flood")).await;
    Http::new(&server)
        .get(&format!("/runs/{}", run.run_id))
        .await
        .expect_ok();
    // The flood was closed to make room, oldest first; it did not pile up.
    let mut closed = 0;
    for stream in idle.iter_mut().take(100) {
        if closed_by_server(stream).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 100);
    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted = |port: &str| {
        let prefix =
            format!(r#"runledger_connections_closed_total{{port="{port}",reason="evicted"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{metrics}"))
    };
    // 250 idle connections and a client on a port of 50: at least 201 made room.
    assert!(evicted("grpc") >= 201, "{metrics}");
    assert!(evicted("http") >= 201, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_new_connection_is_refused_only_when_every_open_one_has_work_in_flight() {
    let server = with_limits(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    // Two connections, each busy with a watch stream.
    let mut watches = Vec::new();
    for _ in 0..2 {
        let mut runs = server.runs().await;
        let stream = runs
            .watch_runs(WatchRunsRequest::default())
            .await
            .expect("watch")
            .into_inner();
        watches.push((runs, stream));
    }
    // Closed at once: the client sees the connection end (tonic says CANCELLED "connection
    // closed", grpc-go UNAVAILABLE).
    let refused = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await;
    let refused = match refused {
        Err(_) => true,
        Ok(channel) => run_service_client::RunServiceClient::new(channel)
            .get_run(GetRunRequest {
                run_id: "x".into(),
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a third connection was served over the limit");
    // When a stream ends, its connection goes idle (or closes) and a new client gets in.
    watches.pop();
    within("a new client to be served after a watch ended", async {
        loop {
            if let Ok(channel) = tonic::transport::Channel::from_shared(server.url())
                .unwrap()
                .connect()
                .await
            {
                let answer = run_service_client::RunServiceClient::new(channel)
                    .get_run(GetRunRequest {
                        run_id: "x".into(),
                        ..Default::default()
                    })
                    .await;
                if answer.is_err_and(|s| s.code() == Code::NotFound) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drop(watches);
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_is_a_408_and_others_are_served() {
    let server = with_limits(Limits {
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    for addr in [server.http_addr, server.addr] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(
            b"POST /apis/v2beta1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"display",
        )
        .await
        .unwrap();
        Http::at(format!("http://{addr}"))
            .get("/runs")
            .await
            .expect_ok();
        let mut reply = Vec::new();
        within("the 408", async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&reply).contains("--body-timeout-ms") {
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains(r#""code":4"#), "{reply}");
        assert!(reply.contains("--body-timeout-ms"), "{reply}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_grpc_request_body_that_does_not_arrive_in_time_is_deadline_exceeded() {
    let server = with_limits(Limits {
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/kubeflow.pipelines.backend.api.v2beta1.RunService/GetRun",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // A message header announcing 100 bytes, and then nothing more.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 10]), false)
        .unwrap();
    let response = within("the answer", response).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "4");
    // A normal call on another connection is served meanwhile.
    let mut runs = server.runs().await;
    expect_code(
        runs.get_run(GetRunRequest {
            run_id: "x".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    drop(body);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = with_limits(Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    for addr in [server.http_addr, server.addr] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /apis/v2beta1/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).await.unwrap();
        assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200"));
        assert!(closed_by_server(&mut stream).await, "{addr} kept it open");
    }
    // An HTTP/2 connection that served a call and then sits idle is closed too.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    within("the idle HTTP/2 connection to be closed", connection)
        .await
        .unwrap()
        .ok();
    drop(client);
    // A gRPC client whose connection was closed while idle reconnects on its next call.
    let mut experiments = ExperimentServiceClient::new(server.channel().await);
    common::create_experiment(&mut experiments, "one", "").await;
    server.stop().await;
}
