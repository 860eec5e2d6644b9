//! Runs over the JSON/HTTP API through a real server and a real HTTP client: the proto3-JSON
//! shape KFP clients depend on, bad bodies, create / get / delete, and the action routes.

mod common;

use common::rest::{Http, id_of, keys};
use common::{Config, TestServer, create_run, new_run};
use reqwest::Method;
use runledger_testkit::every_backend;
use serde_json::{Value, json};

// --- JSON shape of a run ---

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
async fn wrong_value_type_is_a_400_naming_the_field() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post("/runs", json!({"display_name": 7, "pipeline_id": "p"}))
        .await
        .expect_error(400, 3);
    assert!(message.contains("display_name"), "{message}");
}

#[every_backend]
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

#[every_backend]
async fn core_validation_errors_keep_their_message() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http
        .post("/runs", json!({"pipeline_id": "p"}))
        .await
        .expect_error(400, 3);
    assert!(message.contains("display_name"), "{message}");
}

#[every_backend]
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

#[every_backend]
async fn run_is_read_back_by_id_with_the_same_json() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("read-back").await;
    let fetched = http.get(&format!("/runs/{}", id_of(&run))).await;
    assert_eq!(fetched.expect_ok(), &run);
}

#[every_backend]
async fn unknown_run_is_a_404_naming_it() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let message = http.get("/runs/no-such-run").await.expect_error(404, 5);
    assert!(message.contains("no-such-run"), "{message}");
}

#[every_backend]
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

#[every_backend]
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

#[every_backend]
async fn http_and_grpc_share_one_ledger() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut grpc = server.runs().await;
    let run = create_run(&mut grpc, new_run("over-grpc")).await;
    let fetched = http.get(&format!("/runs/{}", run.run_id)).await;
    assert_eq!(fetched.expect_ok()["display_name"], json!("over-grpc"));
}

// --- runs: actions ---

#[every_backend]
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

#[every_backend]
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

#[every_backend]
async fn action_on_an_unknown_run_is_a_404() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for action in ["archive", "unarchive", "terminate", "retry"] {
        http.post_raw(&format!("/runs/ghost:{action}"), "")
            .await
            .expect_error(404, 5);
    }
}

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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
