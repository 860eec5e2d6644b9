//! WatchRuns over HTTP (`GET /apis/v2beta1/runs:watch`) as Server-Sent Events, through a real
//! server and a real HTTP client: what arrives for each change in and out of scope, the refusals
//! before a stream starts, resuming after a dropped connection, and the end of the stream at
//! shutdown.

mod common;

use runledger_testkit::every_backend;
use std::time::Duration;

use common::{Config, TestServer};
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// One parsed SSE event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

/// An open event stream, read chunk by chunk (bytes: a chunk may end inside a character).
struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event (comments skipped); None when the server ended the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(bytes).expect("UTF-8 events");
                let mut event = SseEvent {
                    event: String::new(),
                    id: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        event.id = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if event.event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(event);
            }
            let chunk = timeout(WAIT, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("stream readable")?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn expect_next(&mut self) -> SseEvent {
        self.next().await.expect("the stream is open")
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: format!("{}/apis/v2beta1", server.http_url()),
        }
    }

    /// Opens a watch; the server has subscribed once the headers are here.
    async fn watch(&self, query: &str) -> EventStream {
        let response = self.watch_reply(query).await;
        assert_eq!(response.status(), 200, "watch refused");
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    async fn watch_reply(&self, query: &str) -> reqwest::Response {
        timeout(
            WAIT,
            self.client
                .get(format!("{}/runs:watch{query}", self.base))
                .send(),
        )
        .await
        .expect("headers in time")
        .expect("HTTP request")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("HTTP request");
        assert_eq!(response.status(), 200, "POST {path}");
        response.json().await.expect("JSON reply")
    }

    async fn create_run(&self, body: Value) -> String {
        let run = self.post("/runs", body).await;
        run["run_id"].as_str().expect("run_id").to_owned()
    }

    async fn create_experiment(&self, name: &str, namespace: &str) -> String {
        let experiment = self
            .post(
                "/experiments",
                json!({"display_name": name, "namespace": namespace}),
            )
            .await;
        experiment["experiment_id"]
            .as_str()
            .expect("experiment_id")
            .to_owned()
    }
}

fn run_body(name: &str) -> Value {
    json!({"display_name": name, "pipeline_id": "p"})
}

#[every_backend]
async fn a_watch_sees_create_report_and_delete_as_events_with_the_rest_json() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut stream = http.watch("").await;
    assert_eq!(
        stream.response.headers()["content-type"],
        "text/event-stream"
    );

    let run_id = http
        .create_run(json!({
            "display_name": "watched",
            "pipeline_id": "p",
            "runtime_config": {"parameters": {"count": 3}},
        }))
        .await;
    http.post(
        &format!("/runs/{run_id}:reportState"),
        json!({"state": "RUNNING"}),
    )
    .await;
    let deleted = http
        .client
        .delete(format!("{}/runs/{run_id}", http.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);

    let created = stream.expect_next().await;
    assert_eq!(
        (created.event.as_str(), created.id.as_str()),
        ("CREATED", "1")
    );
    assert_eq!(created.data["type"], "CREATED");
    assert_eq!(created.data["run"]["run_id"], json!(run_id));
    assert_eq!(created.data["run"]["state"], "PENDING");
    // Same JSON as the REST replies: snake_case, whole numbers as integers.
    assert_eq!(
        created.data["run"]["runtime_config"]["parameters"]["count"],
        json!(3)
    );

    let updated = stream.expect_next().await;
    assert_eq!(
        (updated.event.as_str(), updated.id.as_str()),
        ("UPDATED", "2")
    );
    assert_eq!(updated.data["run"]["state"], "RUNNING");

    let gone = stream.expect_next().await;
    assert_eq!((gone.event.as_str(), gone.id.as_str()), ("DELETED", "3"));
    assert_eq!(gone.data["type"], "DELETED");
    assert_eq!(gone.data["run"]["run_id"], json!(run_id));
}

#[every_backend]
async fn a_run_watch_hears_only_that_run() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.create_run(json!({"run_id": "mine", "display_name": "mine", "pipeline_id": "p"}))
        .await;
    let mut stream = http.watch("?run_id=mine").await;

    let other = http.create_run(run_body("other")).await;
    http.post(
        &format!("/runs/{other}:reportState"),
        json!({"state": "RUNNING"}),
    )
    .await;
    http.post("/runs/mine:reportState", json!({"state": "FAILED"}))
        .await;

    let event = stream.expect_next().await;
    assert_eq!(event.event, "UPDATED");
    assert_eq!(event.data["run"]["run_id"], "mine");
    assert_eq!(event.data["run"]["state"], "FAILED");
    // The id is the change's place in the server's feed: the 4th change, whatever the scope.
    assert_eq!(event.id, "4");
    assert_eq!(event.data["sequence"], "4");
}

#[every_backend]
async fn an_experiment_watch_hears_only_that_experiments_runs() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let watched = http.create_experiment("watched", "").await;
    let other = http.create_experiment("other", "").await;
    let mut stream = http.watch(&format!("?experiment_id={watched}")).await;

    http.create_run(json!({"display_name": "outside", "pipeline_id": "p", "experiment_id": other}))
        .await;
    http.create_run(run_body("in the default experiment")).await;
    let inside = http
        .create_run(json!({"display_name": "inside", "pipeline_id": "p", "experiment_id": watched}))
        .await;

    let event = stream.expect_next().await;
    assert_eq!(event.event, "CREATED");
    assert_eq!(event.data["run"]["run_id"], json!(inside));
    assert_eq!(event.data["run"]["experiment_id"], json!(watched));
}

#[every_backend]
async fn a_namespace_watch_hears_only_that_namespaces_runs() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut stream = http.watch("?namespace=team-a").await;

    http.create_run(json!({"display_name": "b", "pipeline_id": "p", "namespace": "team-b"}))
        .await;
    let inside = http
        .create_run(json!({"display_name": "a", "pipeline_id": "p", "namespace": "team-a"}))
        .await;

    let event = stream.expect_next().await;
    assert_eq!(event.data["run"]["run_id"], json!(inside));
    assert_eq!(event.data["run"]["namespace"], "team-a");
}

/// Asserts a JSON error reply with `status` and gRPC `code`; returns the message.
async fn expect_error(response: reqwest::Response, status: u16, code: i64) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["code"], json!(code), "{body}");
    body["message"].as_str().expect("message").to_owned()
}

#[every_backend]
async fn two_scopes_at_once_are_a_json_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let response = http.watch_reply("?run_id=a&namespace=b").await;
    let message = expect_error(response, 400, 3).await;
    assert!(message.contains("at most one"), "{message}");
}

#[every_backend]
async fn an_unknown_watch_parameter_is_a_json_400_naming_it() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let response = http.watch_reply("?run=a").await;
    let message = expect_error(response, 400, 3).await;
    assert!(message.contains("run"), "{message}");
}

#[every_backend]
async fn a_malformed_run_id_is_a_json_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let long = "x".repeat(300);
    let response = http.watch_reply(&format!("?run_id={long}")).await;
    let message = expect_error(response, 400, 3).await;
    assert!(message.contains("run_id"), "{message}");
}

#[every_backend]
async fn more_watchers_than_allowed_are_a_json_429() {
    let mut config = Config::default();
    config.limits.max_watchers = 1;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    let _open = http.watch("").await;
    let response = http.watch_reply("").await;
    let message = expect_error(response, 429, 8).await;
    assert!(message.contains("--max-watchers"), "{message}");
}

#[every_backend]
async fn a_closed_watch_frees_its_slot() {
    let mut config = Config::default();
    config.limits.max_watchers = 1;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    drop(http.watch("").await);
    // The server notices the closed connection when it next writes or polls; wait for it.
    timeout(WAIT, async {
        while server.services.watcher_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slot is freed");
    let _again = http.watch("").await;
}

#[every_backend]
async fn the_stream_ends_when_the_server_stops() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut stream = http.watch("").await;
    // A graceful stop waits for in-flight responses, so it completes only if the stream ends.
    timeout(WAIT, server.stop())
        .await
        .expect("the server stops with a watch open");
    assert!(stream.next().await.is_none(), "the stream ended cleanly");
}

impl Http {
    /// Opens a watch that resumes after event `last` with `Last-Event-ID`, as EventSource does.
    async fn resume_reply(&self, last: &str) -> reqwest::Response {
        timeout(
            WAIT,
            self.client
                .get(format!("{}/runs:watch", self.base))
                .header("last-event-id", last)
                .send(),
        )
        .await
        .expect("headers in time")
        .expect("HTTP request")
    }
}

#[every_backend]
async fn a_dropped_stream_resumed_with_last_event_id_loses_no_event() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut stream = http.watch("").await;
    let first = http.create_run(run_body("first")).await;
    let seen = stream.expect_next().await;
    assert_eq!(seen.data["run"]["run_id"], json!(first));
    drop(stream);

    // While nobody listens: a create, a report and a delete.
    let second = http.create_run(run_body("second")).await;
    http.post(
        &format!("/runs/{second}:reportState"),
        json!({"state": "RUNNING"}),
    )
    .await;
    let deleted = http
        .client
        .delete(format!("{}/runs/{first}", http.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);

    let response = http.resume_reply(&seen.id).await;
    assert_eq!(response.status(), 200);
    let mut resumed = EventStream {
        response,
        buffer: Vec::new(),
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = resumed.expect_next().await;
        got.push((
            e.event,
            e.data["run"]["run_id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        got,
        [
            ("CREATED".to_owned(), second.clone()),
            ("UPDATED".to_owned(), second.clone()),
            ("DELETED".to_owned(), first.clone()),
        ]
    );
    // And then live changes, as on a fresh stream.
    let third = http.create_run(run_body("third")).await;
    let live = resumed.expect_next().await;
    assert_eq!(live.data["run"]["run_id"], json!(third));
    let ids: Vec<u64> = [&seen.id, &live.id]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids[1], ids[0] + 4, "one sequence number per change");
}

#[every_backend]
async fn a_resume_point_no_longer_retained_is_a_429_saying_to_list_again() {
    let config = Config {
        store: runledger::store::DataDirOptions {
            event_retain: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    for i in 0..5 {
        http.create_run(run_body(&format!("r{i}"))).await;
    }
    let message = expect_error(http.resume_reply("1").await, 429, 8).await;
    assert!(message.contains("list the runs again"), "{message}");
    // Within the window it resumes.
    let response = http.resume_reply("3").await;
    assert_eq!(response.status(), 200);
    let message = expect_error(http.resume_reply("yesterday").await, 400, 3).await;
    assert!(message.contains("Last-Event-ID"), "{message}");
    let message = expect_error(http.watch_reply("?resume_after=99").await, 400, 3).await;
    assert!(message.contains("ahead"), "{message}");
}
