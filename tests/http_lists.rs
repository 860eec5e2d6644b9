//! ListRuns over the JSON/HTTP API: pages, query-parameter spellings and decoding, bad query
//! parameters.

mod common;

use common::TestServer;
use common::rest::Http;
use runledger_testkit::every_backend;
use serde_json::{Value, json};

// --- runs: listing ---

#[every_backend]
async fn empty_listing_is_an_empty_object() {
    let server = TestServer::start().await;
    let reply = Http::new(&server).get("/runs").await;
    assert_eq!(reply.expect_ok(), &json!({}));
}

#[every_backend]
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

#[every_backend]
async fn plus_in_a_query_value_is_a_space() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for name in ["a", "b"] {
        http.create_run(name).await;
    }
    let reply = http.get("/runs?sort_by=display_name+desc").await;
    assert_eq!(reply.expect_ok()["runs"][0]["display_name"], json!("b"));
}

#[every_backend]
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

#[every_backend]
async fn bad_filter_is_a_400() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.get("/runs?filter=%7Bnot-json")
        .await
        .expect_error(400, 3);
}

#[every_backend]
async fn non_numeric_page_size_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?page_size=lots")
        .await
        .expect_error(400, 3);
    assert!(message.contains("page_size"), "{message}");
}

#[every_backend]
async fn unknown_query_parameter_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?colour=red")
        .await
        .expect_error(400, 3);
    assert!(message.contains("colour"), "{message}");
}

#[every_backend]
async fn repeated_query_parameter_is_a_400() {
    let server = TestServer::start().await;
    let message = Http::new(&server)
        .get("/runs?page_size=1&page_size=2")
        .await
        .expect_error(400, 3);
    assert!(message.contains("page_size"), "{message}");
}

#[every_backend]
async fn listing_an_unknown_experiment_is_a_404() {
    let server = TestServer::start().await;
    Http::new(&server)
        .get("/runs?experiment_id=nope")
        .await
        .expect_error(404, 5);
}
