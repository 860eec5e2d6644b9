//! Experiments over the JSON/HTTP API: their lifecycle, lookup by name as the kfp SDK does it,
//! and their errors.

mod common;

use common::TestServer;
use common::rest::{Http, id_of};
use runledger_testkit::every_backend;
use serde_json::json;

// --- experiments ---

#[every_backend]
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

#[every_backend]
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

#[every_backend]
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

#[every_backend]
async fn experiment_without_a_name_is_a_400() {
    let server = TestServer::start().await;
    Http::new(&server)
        .post_raw("/experiments", "")
        .await
        .expect_error(400, 3);
}

#[every_backend]
async fn default_experiment_cannot_be_deleted() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let run = http.create_run("in-default").await;
    let id = run["experiment_id"].as_str().expect("experiment_id");
    http.delete(&format!("/experiments/{id}"))
        .await
        .expect_error(400, 9);
}

#[every_backend]
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

#[every_backend]
async fn unknown_experiment_action_is_a_404() {
    let server = TestServer::start().await;
    Http::new(&server)
        .post_raw("/experiments/some-id:retry", "")
        .await
        .expect_error(404, 5);
}
