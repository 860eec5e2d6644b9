//! The JSON/HTTP API (SPEC §3) through a real server and a real HTTP client: every route, its
//! status codes, and the proto3-JSON shape KFP clients depend on.

mod common;

use common::{Config, TestServer, create_run, new_run};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A reply: status, `Content-Type`, body as JSON (`Null` when empty or not JSON) and as text.
struct Reply {
    status: StatusCode,
    content_type: String,
    json: Value,
    text: String,
}

impl Reply {
    /// Asserts an error reply: the HTTP status, the JSON content type, the `{code, message,
    /// details}` shape with the gRPC `code`; returns the message.
    fn expect_error(&self, status: u16, code: i64) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(self.content_type, "application/json", "{}", self.text);
        assert_eq!(self.json["code"], json!(code), "body: {}", self.text);
        assert_eq!(self.json["details"], json!([]), "body: {}", self.text);
        let message = self.json["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            !message.is_empty(),
            "error without a message: {}",
            self.text
        );
        message
    }

    fn expect_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text);
        assert_eq!(self.content_type, "application/json");
        &self.json
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

    async fn send(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("HTTP body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            json,
            text,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, Some(body.to_owned())).await
    }

    /// Creates a run from a minimal body and returns its JSON.
    async fn create_run(&self, name: &str) -> Value {
        self.post(
            "/runs",
            json!({"display_name": name, "pipeline_id": "pipeline-1"}),
        )
        .await
        .expect_ok()
        .clone()
    }

    async fn report(&self, run_id: &str, body: Value) -> Reply {
        self.post(&format!("/runs/{run_id}:reportState"), body)
            .await
    }
}

fn id_of(run: &Value) -> String {
    run["run_id"].as_str().expect("run_id").to_owned()
}

/// Every object key in `value`, outside the free-form JSON of pipeline_spec and parameters.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                out.push(key.clone());
                if key != "pipeline_spec" && key != "parameters" {
                    keys(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys(item, out)),
        _ => {}
    }
}

// --- healthz and routing ---

#[tokio::test]
async fn healthz_reports_single_user_as_a_json_boolean_and_the_version() {
    let server = TestServer::start().await;
    let reply = Http::new(&server).get("/healthz").await;
    let body = reply.expect_ok();
    assert_eq!(body["multi_user"], json!(false));
    assert_eq!(body["tag_name"], json!(env!("CARGO_PKG_VERSION")));
    assert!(body["commit_sha"].is_string());
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http.get("/pipelines").await.expect_error(404, 5);
    assert!(message.contains("/apis/v2beta1/pipelines"), "{message}");
}

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let server = TestServer::start().await;
    let reply = Http::new(&server)
        .send(Method::PUT, "/runs", Some("{}".into()))
        .await;
    reply.expect_error(405, 12);
}

#[tokio::test]
async fn unknown_run_action_is_a_404_naming_the_actions() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    let message = http
        .post_raw(&format!("/runs/{}:frobnicate", id_of(&run)), "")
        .await
        .expect_error(404, 5);
    assert!(message.contains("reportState"), "{message}");
}

#[tokio::test]
async fn get_with_an_action_suffix_is_not_a_route() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    http.get(&format!("/runs/{}:archive", id_of(&run)))
        .await
        .expect_error(404, 5);
}

#[tokio::test]
async fn id_that_is_not_utf8_is_a_json_400() {
    let server = TestServer::start().await;
    Http::new(&server)
        .get("/runs/%FF")
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn post_on_a_run_without_an_action_is_a_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("r").await;
    http.post_raw(&format!("/runs/{}", id_of(&run)), "")
        .await
        .expect_error(404, 5);
}

// --- JSON shape of a run ---

#[tokio::test]
async fn created_run_is_snake_case_json_with_enum_names_and_z_timestamps() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http
        .post(
            "/runs",
            json!({
                "display_name": "shape",
                "pipeline_spec": {"pipelineInfo": {"name": "p"}},
                "runtime_config": {"parameters": {"learningRate": 0.1, "name": "x"}},
            }),
        )
        .await
        .expect_ok()
        .clone();

    let mut all = Vec::new();
    keys(&run, &mut all);
    for key in &all {
        assert!(
            !key.chars().any(|c| c.is_ascii_uppercase()),
            "camelCase key {key} in {run}"
        );
    }
    assert_eq!(run["state"], json!("PENDING"));
    assert_eq!(run["storage_state"], json!("AVAILABLE"));
    assert_eq!(run["state_history"][0]["state"], json!("PENDING"));
    for field in ["created_at", "scheduled_at"] {
        let at = run[field].as_str().expect(field);
        assert!(at.ends_with('Z'), "{field} = {at}");
    }
    // Free-form JSON comes back as plain JSON, keys untouched.
    assert_eq!(run["pipeline_spec"], json!({"pipelineInfo": {"name": "p"}}));
    assert_eq!(
        run["runtime_config"]["parameters"],
        json!({"learningRate": 0.1, "name": "x"})
    );
}

#[tokio::test]
async fn fields_at_their_default_are_omitted_and_no_timestamp_is_empty() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("defaults").await;
    for absent in [
        "description",
        "finished_at",
        "error",
        "service_account",
        "runtime_details",
        "recurring_run_id",
    ] {
        assert!(run.get(absent).is_none(), "{absent} present in {run}");
    }
    let fetched = http.get(&format!("/runs/{}", id_of(&run))).await;
    assert!(!fetched.text.contains("\"\""), "{}", fetched.text);
}

#[tokio::test]
async fn int64_fields_are_strings_out_and_numbers_or_strings_in() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("ints").await);
    let reported = http
        .report(
            &run_id,
            json!({"state": "RUNNING", "runtime_details": {"pipeline_context_id": 42, "pipelineRunContextId": "43"}}),
        )
        .await;
    let run = reported.expect_ok();
    assert_eq!(run["runtime_details"]["pipeline_context_id"], json!("42"));
    assert_eq!(
        run["runtime_details"]["pipeline_run_context_id"],
        json!("43")
    );
}

#[tokio::test]
async fn input_accepts_lower_camel_names_and_enum_numbers() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http
        .post(
            "/runs",
            json!({"displayName": "camel", "pipelineId": "p", "serviceAccount": "sa"}),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(run["display_name"], json!("camel"));
    assert_eq!(run["service_account"], json!("sa"));
    let reported = http.report(&id_of(&run), json!({"state": 2})).await;
    assert_eq!(reported.expect_ok()["state"], json!("RUNNING"));
}

#[tokio::test]
async fn whole_numbers_in_parameters_come_back_without_a_fraction() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http
        .post(
            "/runs",
            json!({"display_name": "n", "pipeline_id": "p",
                   "runtime_config": {"parameters": {"count": 3, "rate": 0.5}}}),
        )
        .await;
    let parameters = &run.expect_ok()["runtime_config"]["parameters"];
    // `3.0` would parse as a float here, and in Python.
    assert!(parameters["count"].is_i64(), "{}", run.text);
    assert_eq!(parameters["count"], json!(3));
    assert_eq!(parameters["rate"], json!(0.5));
}

#[tokio::test]
async fn two_pipeline_sources_are_a_400_explaining_the_oneof() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .post(
            "/runs",
            json!({"display_name": "x", "pipeline_id": "p", "pipeline_spec": {}}),
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("pipeline_spec"), "{message}");
}

#[tokio::test]
async fn scheduled_at_with_an_offset_comes_back_in_utc_with_z() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http
        .post(
            "/runs",
            json!({"display_name": "backfill", "pipeline_id": "p", "scheduled_at": "2024-01-01T02:00:00.5+02:00"}),
        )
        .await;
    assert_eq!(
        run.expect_ok()["scheduled_at"],
        json!("2024-01-01T00:00:00.500Z")
    );
}

// --- bad input ---

#[tokio::test]
async fn unknown_body_field_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post(
            "/runs",
            json!({"display_name": "x", "pipeline_id": "p", "colour": "red"}),
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("colour"), "{message}");
}

#[tokio::test]
async fn malformed_json_is_a_400_saying_where() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post_raw("/runs", "{\"display_name\": \"x\",")
        .await
        .expect_error(400, 3);
    assert!(message.contains("malformed JSON"), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[tokio::test]
async fn wrong_value_type_is_a_400_naming_the_field() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post("/runs", json!({"display_name": 7, "pipeline_id": "p"}))
        .await
        .expect_error(400, 3);
    assert!(message.contains("display_name"), "{message}");
}

#[tokio::test]
async fn empty_timestamp_string_is_rejected() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post(
            "/runs",
            json!({"display_name": "x", "pipeline_id": "p", "scheduled_at": ""}),
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("scheduled_at"), "{message}");
}

#[tokio::test]
async fn core_validation_errors_keep_their_message() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post("/runs", json!({"pipeline_id": "p"}))
        .await
        .expect_error(400, 3);
    assert!(message.contains("display_name"), "{message}");
}

#[tokio::test]
async fn body_over_the_limit_is_a_413_with_a_json_error() {
    let mut config = Config::default();
    config.server.max_http_body_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    let big = "x".repeat(4096);
    let message = http
        .post(
            "/runs",
            json!({"display_name": "big", "pipeline_id": "p", "description": big}),
        )
        .await
        .expect_error(413, 8);
    assert!(message.contains("1024"), "{message}");
    // A body under the limit still works.
    http.create_run("small").await;
}

// --- runs: create, get, delete ---

#[tokio::test]
async fn run_is_read_back_by_id_with_the_same_json() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("read-back").await;
    let fetched = http.get(&format!("/runs/{}", id_of(&run))).await;
    assert_eq!(fetched.expect_ok(), &run);
}

#[tokio::test]
async fn unknown_run_is_a_404_naming_it() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http.get("/runs/no-such-run").await.expect_error(404, 5);
    assert!(message.contains("no-such-run"), "{message}");
}

#[tokio::test]
async fn client_chosen_run_id_that_exists_is_a_409() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let body = json!({"run_id": "my-run.1", "display_name": "x", "pipeline_id": "p"});
    assert_eq!(
        http.post("/runs", body.clone()).await.expect_ok()["run_id"],
        json!("my-run.1")
    );
    http.post("/runs", body).await.expect_error(409, 6);
}

#[tokio::test]
async fn deleted_run_answers_404_and_delete_returns_an_empty_object() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("doomed").await);
    let deleted = http.delete(&format!("/runs/{run_id}")).await;
    assert_eq!(deleted.expect_ok(), &json!({}));
    http.get(&format!("/runs/{run_id}"))
        .await
        .expect_error(404, 5);
    http.delete(&format!("/runs/{run_id}"))
        .await
        .expect_error(404, 5);
}

#[tokio::test]
async fn http_and_grpc_share_one_ledger() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut grpc = server.runs().await;
    let run = create_run(&mut grpc, new_run("over-grpc")).await;
    let fetched = http.get(&format!("/runs/{}", run.run_id)).await;
    assert_eq!(fetched.expect_ok()["display_name"], json!("over-grpc"));
}

// --- runs: actions ---

#[tokio::test]
async fn archive_and_unarchive_accept_an_empty_body() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("a").await);
    let archived = http.post_raw(&format!("/runs/{run_id}:archive"), "").await;
    assert_eq!(archived.expect_ok(), &json!({}));
    let run = http.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run.expect_ok()["storage_state"], json!("ARCHIVED"));

    // No body and no Content-Type at all.
    let unarchived = http
        .send(Method::POST, &format!("/runs/{run_id}:unarchive"), None)
        .await;
    assert_eq!(unarchived.expect_ok(), &json!({}));
    let run = http.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run.expect_ok()["storage_state"], json!("AVAILABLE"));
}

#[tokio::test]
async fn action_body_may_repeat_the_path_id_but_not_contradict_it() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("a").await);
    http.post(&format!("/runs/{run_id}:archive"), json!({}))
        .await
        .expect_ok();
    http.post(
        &format!("/runs/{run_id}:archive"),
        json!({"run_id": run_id}),
    )
    .await
    .expect_ok();
    let message = http
        .post(
            &format!("/runs/{run_id}:archive"),
            json!({"runId": "other"}),
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("other"), "{message}");
}

#[tokio::test]
async fn action_on_an_unknown_run_is_a_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for action in ["archive", "unarchive", "terminate", "retry"] {
        http.post_raw(&format!("/runs/ghost:{action}"), "")
            .await
            .expect_error(404, 5);
    }
}

#[tokio::test]
async fn terminate_cancels_a_pending_run_and_refuses_a_finished_one() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("t").await);
    http.post_raw(&format!("/runs/{run_id}:terminate"), "")
        .await
        .expect_ok();
    let run = http.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run.expect_ok()["state"], json!("CANCELED"));
    assert!(
        run.json["finished_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    http.post_raw(&format!("/runs/{run_id}:terminate"), "")
        .await
        .expect_error(400, 9);
}

#[tokio::test]
async fn retry_brings_a_canceled_run_back_to_pending() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("r").await);
    http.post_raw(&format!("/runs/{run_id}:retry"), "")
        .await
        .expect_error(400, 9);
    http.post_raw(&format!("/runs/{run_id}:terminate"), "")
        .await
        .expect_ok();
    http.post_raw(&format!("/runs/{run_id}:retry"), "")
        .await
        .expect_ok();
    let run = http.get(&format!("/runs/{run_id}")).await;
    assert_eq!(run.expect_ok()["state"], json!("PENDING"));
    assert!(run.json.get("finished_at").is_none(), "{}", run.text);
}

#[tokio::test]
async fn report_state_returns_the_updated_run() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    let running = http.report(&run_id, json!({"state": "RUNNING"})).await;
    assert_eq!(running.expect_ok()["state"], json!("RUNNING"));
    let done = http
        .report(
            &run_id,
            json!({"run_id": run_id, "state": "FAILED", "expected_state": "RUNNING",
                   "error": {"code": 13, "message": "boom"}}),
        )
        .await;
    let run = done.expect_ok();
    assert_eq!(run["state"], json!("FAILED"));
    assert_eq!(run["error"], json!({"code": 13, "message": "boom"}));
    let states: Vec<&Value> = run["state_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(
        states,
        [&json!("PENDING"), &json!("RUNNING"), &json!("FAILED")]
    );
}

#[tokio::test]
async fn report_state_with_a_different_body_run_id_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    let message = http
        .report(
            &run_id,
            json!({"run_id": "someone-else", "state": "RUNNING"}),
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("someone-else"), "{message}");
}

#[tokio::test]
async fn report_state_with_a_field_given_twice_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    let message = http
        .post_raw(
            &format!("/runs/{run_id}:reportState"),
            r#"{"state": "RUNNING", "state": "FAILED"}"#,
        )
        .await
        .expect_error(400, 3);
    assert!(message.contains("duplicate field"), "{message}");
}

#[tokio::test]
async fn action_fields_in_both_query_and_body_are_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    http.post(
        &format!("/runs/{run_id}:reportState?state=RUNNING"),
        json!({"state": "RUNNING"}),
    )
    .await
    .expect_error(400, 3);
    // The query alone carries the request (as a gateway reads a body-less action).
    let reply = http
        .post_raw(&format!("/runs/{run_id}:reportState?state=RUNNING"), "")
        .await;
    assert_eq!(reply.expect_ok()["state"], json!("RUNNING"));
}

#[tokio::test]
async fn query_id_that_contradicts_the_path_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("q").await);
    http.get(&format!("/runs/{run_id}?run_id={run_id}"))
        .await
        .expect_ok();
    http.get(&format!("/runs/{run_id}?runId=other"))
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn report_state_with_a_stale_expected_state_is_a_409() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    let message = http
        .report(
            &run_id,
            json!({"state": "SUCCEEDED", "expected_state": "RUNNING"}),
        )
        .await
        .expect_error(409, 10);
    assert!(message.contains("PENDING"), "{message}");
}

#[tokio::test]
async fn report_state_that_leaves_a_terminal_state_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    http.report(&run_id, json!({"state": "SUCCEEDED"}))
        .await
        .expect_ok();
    http.report(&run_id, json!({"state": "RUNNING"}))
        .await
        .expect_error(400, 9);
}

#[tokio::test]
async fn report_state_with_an_unknown_enum_name_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run_id = id_of(&http.create_run("rep").await);
    let message = http
        .report(&run_id, json!({"state": "EXPLODED"}))
        .await
        .expect_error(400, 3);
    assert!(message.contains("state"), "{message}");
}

// --- runs: listing ---

#[tokio::test]
async fn empty_listing_is_an_empty_object() {
    let server = TestServer::start().await;
    let reply = Http::new(&server).get("/runs").await;
    assert_eq!(reply.expect_ok(), &json!({}));
}

#[tokio::test]
async fn listing_pages_with_tokens_and_both_parameter_spellings() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for name in ["c", "a", "b"] {
        http.create_run(name).await;
    }
    let first = http
        .get("/runs?page_size=2&sort_by=display_name&page_token=&filter=")
        .await;
    let first = first.expect_ok().clone();
    assert_eq!(first["total_size"], json!(3));
    let names: Vec<&Value> = first["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| &r["display_name"])
        .collect();
    assert_eq!(names, [&json!("a"), &json!("b")]);
    let token = first["next_page_token"].as_str().expect("token");
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let second = http
        .get(&format!(
            "/runs?pageSize=2&sortBy=display_name&pageToken={encoded}"
        ))
        .await;
    let second = second.expect_ok();
    assert_eq!(second["runs"][0]["display_name"], json!("c"));
    assert!(second.get("next_page_token").is_none(), "{second}");
}

#[tokio::test]
async fn plus_in_a_query_value_is_a_space() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for name in ["a", "b"] {
        http.create_run(name).await;
    }
    let reply = http.get("/runs?sort_by=display_name+desc").await;
    assert_eq!(reply.expect_ok()["runs"][0]["display_name"], json!("b"));
}

#[tokio::test]
async fn filter_is_url_decoded_exactly_once() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    // If the filter were decoded twice, "a%41" would turn into "aA" and match the other run.
    for name in ["a%41", "aA"] {
        http.create_run(name).await;
    }
    let filter = json!({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": "a%41"}]});
    let encoded: String = form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
    let reply = http.get(&format!("/runs?filter={encoded}")).await;
    let body = reply.expect_ok();
    assert_eq!(body["total_size"], json!(1), "{body}");
    assert_eq!(body["runs"][0]["display_name"], json!("a%41"));
}

#[tokio::test]
async fn bad_filter_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.get("/runs?filter=%7Bnot-json")
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn non_numeric_page_size_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?page_size=lots")
        .await
        .expect_error(400, 3);
    assert!(message.contains("page_size"), "{message}");
}

#[tokio::test]
async fn unknown_query_parameter_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?colour=red")
        .await
        .expect_error(400, 3);
    assert!(message.contains("colour"), "{message}");
}

#[tokio::test]
async fn repeated_query_parameter_is_a_400() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?page_size=1&page_size=2")
        .await
        .expect_error(400, 3);
    assert!(message.contains("page_size"), "{message}");
}

#[tokio::test]
async fn listing_an_unknown_experiment_is_a_404() {
    let server = TestServer::start().await;
    Http::new(&server)
        .get("/runs?experiment_id=nope")
        .await
        .expect_error(404, 5);
}

// --- experiments ---

#[tokio::test]
async fn experiment_lifecycle_over_http() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let experiment = http
        .post(
            "/experiments",
            json!({"display_name": "exp", "description": "d"}),
        )
        .await
        .expect_ok()
        .clone();
    let id = experiment["experiment_id"].as_str().expect("id").to_owned();
    assert_eq!(experiment["storage_state"], json!("AVAILABLE"));
    assert!(
        experiment["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let run = http
        .post(
            "/runs",
            json!({"display_name": "r", "pipeline_id": "p", "experiment_id": id}),
        )
        .await
        .expect_ok()
        .clone();

    http.post_raw(&format!("/experiments/{id}:archive"), "")
        .await
        .expect_ok();
    let got = http.get(&format!("/experiments/{id}")).await;
    assert_eq!(got.expect_ok()["storage_state"], json!("ARCHIVED"));
    let run = http.get(&format!("/runs/{}", id_of(&run))).await;
    assert_eq!(run.expect_ok()["storage_state"], json!("ARCHIVED"));

    http.post_raw(&format!("/experiments/{id}:unarchive"), "")
        .await
        .expect_ok();
    let got = http.get(&format!("/experiments/{id}")).await;
    assert_eq!(got.expect_ok()["storage_state"], json!("AVAILABLE"));

    let deleted = http.delete(&format!("/experiments/{id}")).await;
    assert_eq!(deleted.expect_ok(), &json!({}));
    http.get(&format!("/experiments/{id}"))
        .await
        .expect_error(404, 5);
}

#[tokio::test]
async fn experiment_found_by_name_as_the_kfp_sdk_asks() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for name in ["one", "two"] {
        http.post("/experiments", json!({"display_name": name}))
            .await
            .expect_ok();
    }
    // Exactly what kfp.Client.get_experiment(experiment_name=...) sends.
    let reply = http
        .get("/experiments?filter=%7B%22predicates%22%3A+%5B%7B%22operation%22%3A+1%2C+%22key%22%3A+%22display_name%22%2C+%22stringValue%22%3A+%22two%22%7D%5D%7D&namespace=")
        .await;
    let body = reply.expect_ok();
    assert_eq!(body["experiments"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["experiments"][0]["display_name"], json!("two"));
}

#[tokio::test]
async fn duplicate_experiment_name_is_a_409() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.post("/experiments", json!({"display_name": "same"}))
        .await
        .expect_ok();
    http.post("/experiments", json!({"displayName": "same"}))
        .await
        .expect_error(409, 6);
}

#[tokio::test]
async fn experiment_without_a_name_is_a_400() {
    let server = TestServer::start().await;
    Http::new(&server)
        .post_raw("/experiments", "")
        .await
        .expect_error(400, 3);
}

#[tokio::test]
async fn default_experiment_cannot_be_deleted() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("in-default").await;
    let id = run["experiment_id"].as_str().expect("experiment_id");
    http.delete(&format!("/experiments/{id}"))
        .await
        .expect_error(400, 9);
}

#[tokio::test]
async fn experiments_list_empty_then_pages() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    assert_eq!(http.get("/experiments").await.expect_ok(), &json!({}));
    for name in ["x", "y", "z"] {
        http.post("/experiments", json!({"display_name": name}))
            .await
            .expect_ok();
    }
    let page = http
        .get("/experiments?page_size=2&sort_by=display_name+desc")
        .await;
    let page = page.expect_ok();
    assert_eq!(page["total_size"], json!(3));
    assert_eq!(page["experiments"][0]["display_name"], json!("z"));
    assert!(page["next_page_token"].is_string());
}

#[tokio::test]
async fn unknown_experiment_action_is_a_404() {
    let server = TestServer::start().await;
    Http::new(&server)
        .post_raw("/experiments/some-id:retry", "")
        .await
        .expect_error(404, 5);
}

// --- descriptor export (for a gateway in front) ---

#[test]
fn descriptor_subcommand_prints_the_api_with_its_http_routes() {
    use prost::Message;
    let binary = env!("CARGO_BIN_EXE_runledger");
    let stdout = std::process::Command::new(binary)
        .arg("descriptor")
        .output()
        .expect("run runledger descriptor");
    assert!(stdout.status.success(), "{stdout:?}");
    assert_eq!(stdout.stdout, runledger::server::FILE_DESCRIPTOR_SET);

    let set = prost_types::FileDescriptorSet::decode(stdout.stdout.as_slice())
        .expect("a FileDescriptorSet");
    let services: Vec<&str> = set
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(|s| s.name()))
        .collect();
    assert!(services.contains(&"RunService"), "{services:?}");
    assert!(services.contains(&"ExperimentService"), "{services:?}");
    // The google.api.http options a transcoder reads are in the bytes.
    let route = b"/apis/v2beta1/runs/{run_id}:reportState";
    assert!(
        stdout.stdout.windows(route.len()).any(|w| w == route),
        "reportState route missing from the descriptor"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runledger.pb");
    let written = std::process::Command::new(binary)
        .arg("descriptor")
        .arg("--out")
        .arg(&path)
        .output()
        .expect("run runledger descriptor --out");
    assert!(written.status.success(), "{written:?}");
    assert_eq!(
        std::fs::read(&path).expect("descriptor file"),
        runledger::server::FILE_DESCRIPTOR_SET
    );
}

#[test]
fn descriptor_to_an_unwritable_path_fails_with_a_message() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["descriptor", "--out", "/nonexistent-dir/x.pb"])
        .output()
        .expect("run runledger descriptor");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent-dir/x.pb"), "{stderr}");
}

#[tokio::test]
async fn graceful_stop_also_closes_the_http_listener() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.create_run("before-stop").await;
    let addr = server.http_addr;
    // stop() panics unless the server (gRPC and HTTP) shut down cleanly.
    let _ = server.stop().await;
    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/apis/v2beta1/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "HTTP still answers after stop: {refused:?}"
    );
}

// --- the JSON API on the gRPC port ---

#[tokio::test]
async fn json_api_is_served_on_the_grpc_port_too() {
    let server = TestServer::start().await;
    let http = Http {
        client: reqwest::Client::new(),
        base: format!("{}/apis/v2beta1", server.url()),
    };
    http.get("/healthz").await.expect_ok();
    let run = http.create_run("via-grpc-port").await;
    let fetched = Http::new(&server)
        .get(&format!("/runs/{}", id_of(&run)))
        .await;
    assert_eq!(fetched.expect_ok()["display_name"], json!("via-grpc-port"));
    http.get("/nothing-here").await.expect_error(404, 5);
}

#[tokio::test]
async fn unknown_grpc_method_is_still_unimplemented_on_the_shared_port() {
    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<pbjson_types::Empty, pbjson_types::Empty>::default();
    let result = grpc
        .unary(
            tonic::Request::new(pbjson_types::Empty {}),
            http::uri::PathAndQuery::from_static("/no.such.Service/Method"),
            codec,
        )
        .await;
    let status = result.expect_err("an unknown service must fail");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // A real grpc-status, not one a client infers from an HTTP 404.
    assert!(
        status.message().contains("/no.such.Service/Method"),
        "{status:?}"
    );
}
