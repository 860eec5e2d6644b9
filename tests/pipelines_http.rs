//! The pipeline routes of the JSON/HTTP API, and the multipart uploads the kfp SDK makes, against
//! a real server: each route, KFP's JSON shapes, and every error with its HTTP status and body.

mod common;

use common::TestServer;
use common::rest::{Http, Reply};
use reqwest::Method;
use runledger_testkit::every_backend;
use serde_json::{Value, json};

const SPEC: &str = "\
# A compiled pipeline, as the kfp compiler writes it.
pipelineInfo:
  name: hello-pipeline
root:
  dag:
    tasks: {}
schemaVersion: 2.1.0
sdkVersion: kfp-2.17.3
";

/// A multipart/form-data body with one file field.
fn form(field: &str, file_name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "runledger-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; \
         filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(http: &Http, query: &str, content: &[u8]) -> Reply {
    let (content_type, body) = form("uploadfile", "pipeline.yaml", content);
    http.post_as(&format!("/pipelines/upload{query}"), &content_type, body)
        .await
}

async fn upload_version(http: &Http, query: &str, content: &[u8]) -> Reply {
    let (content_type, body) = form("uploadfile", "pipeline.yaml", content);
    http.post_as(
        &format!("/pipelines/upload_version{query}"),
        &content_type,
        body,
    )
    .await
}

fn id(value: &Value, field: &str) -> String {
    value[field].as_str().expect(field).to_owned()
}

#[every_backend]
async fn an_upload_creates_a_pipeline_and_its_first_version() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let reply = upload(
        &http,
        "?name=hello&description=says+hello&tags=%7B%22team%22%3A%22ml%22%7D",
        SPEC.as_bytes(),
    )
    .await;
    let pipeline = reply.expect_ok().clone();
    assert_eq!(pipeline["name"], "hello");
    assert_eq!(pipeline["display_name"], "hello");
    assert_eq!(pipeline["description"], "says hello");
    assert_eq!(pipeline["tags"], json!({"team": "ml"}));
    assert!(pipeline["created_at"].as_str().unwrap().ends_with('Z'));
    let pipeline_id = id(&pipeline, "pipeline_id");

    let versions = http
        .get(&format!("/pipelines/{pipeline_id}/versions"))
        .await
        .expect_ok()
        .clone();
    assert_eq!(versions["total_size"], 1);
    let version = &versions["pipeline_versions"][0];
    assert_eq!(version["name"], "hello");
    assert_eq!(
        version["pipeline_spec"]["pipelineInfo"]["name"],
        "hello-pipeline"
    );
    assert_eq!(version["pipeline_spec"]["schemaVersion"], "2.1.0");

    // Without a name, the pipeline is named by its spec.
    let second = upload(&http, "", SPEC.as_bytes()).await;
    assert_eq!(second.expect_ok()["name"], "hello-pipeline");
}

#[every_backend]
async fn a_json_package_with_a_platform_spec_is_kept_whole() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let package = format!("{SPEC}---\nplatforms:\n  kubernetes:\n    deploymentSpec: {{}}\n");
    let pipeline = upload(&http, "?name=with-platform", package.as_bytes())
        .await
        .expect_ok()
        .clone();
    let versions = http
        .get(&format!(
            "/pipelines/{}/versions",
            id(&pipeline, "pipeline_id")
        ))
        .await
        .expect_ok()
        .clone();
    let spec = &versions["pipeline_versions"][0]["pipeline_spec"];
    assert_eq!(
        spec["pipeline_spec"]["pipelineInfo"]["name"],
        "hello-pipeline"
    );
    assert_eq!(
        spec["platform_spec"]["platforms"]["kubernetes"],
        json!({"deploymentSpec": {}})
    );

    let json_package = serde_json::to_vec(&json!({
        "pipelineInfo": {"name": "from-json"},
        "root": {"dag": {}},
    }))
    .unwrap();
    let pipeline = upload(&http, "", &json_package).await;
    assert_eq!(pipeline.expect_ok()["name"], "from-json");
}

#[every_backend]
async fn uploading_a_version_adds_it_to_the_named_pipeline() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let pipeline = upload(&http, "?name=p", SPEC.as_bytes())
        .await
        .expect_ok()
        .clone();
    let pipeline_id = id(&pipeline, "pipeline_id");
    let version = upload_version(
        &http,
        &format!(
            "?name=v2&pipelineid={pipeline_id}&description=second&code_source_url=https://git/x"
        ),
        SPEC.as_bytes(),
    )
    .await
    .expect_ok()
    .clone();
    assert_eq!(version["pipeline_id"], pipeline_id.as_str());
    assert_eq!(version["name"], "v2");
    assert_eq!(version["description"], "second");
    assert_eq!(version["code_source_url"], "https://git/x");
    let version_id = id(&version, "pipeline_version_id");
    let got = http
        .get(&format!("/pipelines/{pipeline_id}/versions/{version_id}"))
        .await
        .expect_ok()
        .clone();
    assert_eq!(got, version);

    let taken = upload_version(
        &http,
        &format!("?name=v2&pipelineid={pipeline_id}"),
        SPEC.as_bytes(),
    )
    .await;
    let message = taken.expect_error(409, 6);
    assert!(message.contains("v2"), "{message}");
    let missing = upload_version(
        &http,
        "?name=v3&pipelineid=no-such-pipeline",
        SPEC.as_bytes(),
    )
    .await;
    missing.expect_error(404, 5);
    let no_pipeline = upload_version(&http, "?name=v3", SPEC.as_bytes()).await;
    assert!(no_pipeline.expect_error(400, 3).contains("pipelineid"));
}

#[every_backend]
async fn bad_uploads_are_400_naming_what_is_wrong() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for (query, content, needle) in [
        ("", &b"PK\x03\x04zipped"[..], "archive"),
        ("", b"pipelineInfo: {name: x}\n", "root"),
        ("", b"a: [", "not valid YAML"),
        ("", b"", "empty"),
        ("?tags=notjson", SPEC.as_bytes(), "tags"),
        ("?color=blue", SPEC.as_bytes(), "color"),
        ("?pipelineid=x", SPEC.as_bytes(), "upload_version"),
    ] {
        let reply = upload(&http, query, content).await;
        let message = reply.expect_error(400, 3);
        assert!(message.contains(needle), "{query} {needle}: {message}");
    }
    let (content_type, body) = form("file", "pipeline.yaml", SPEC.as_bytes());
    let wrong_field = http.post_as("/pipelines/upload", &content_type, body).await;
    assert!(wrong_field.expect_error(400, 3).contains("uploadfile"));
    let not_a_form = http
        .post_as("/pipelines/upload", "application/json", b"{}".to_vec())
        .await;
    assert!(not_a_form.expect_error(400, 3).contains("multipart"));
    let namespace_on_version =
        upload_version(&http, "?pipelineid=p&namespace=team", SPEC.as_bytes()).await;
    assert!(
        namespace_on_version
            .expect_error(400, 3)
            .contains("namespace")
    );

    // A taken name is 409, as KFP answers.
    upload(&http, "?name=same", SPEC.as_bytes())
        .await
        .expect_ok();
    upload(&http, "?name=same", SPEC.as_bytes())
        .await
        .expect_error(409, 6);
}

#[every_backend]
async fn an_upload_larger_than_the_body_limit_is_413() {
    let server = TestServer::start_with(common::Config {
        server: runledger::server::ServerOptions {
            max_http_body_bytes: 1024,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let http = Http::new(&server);
    let mut big = SPEC.as_bytes().to_vec();
    big.extend(std::iter::repeat_n(b'#', 4096));
    upload(&http, "?name=big", &big).await.expect_error(413, 8);
}

#[every_backend]
async fn pipelines_are_created_listed_found_and_deleted_over_json() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let created = http
        .post(
            "/pipelines",
            json!({"display_name": "Etl", "namespace": "team-a"}),
        )
        .await
        .expect_ok()
        .clone();
    let pipeline_id = id(&created, "pipeline_id");
    let by_name = http
        .get("/pipelines/names/Etl?namespace=team-a")
        .await
        .expect_ok()
        .clone();
    assert_eq!(by_name, created);
    http.get("/pipelines/names/Etl").await.expect_error(404, 5);
    let listed = http
        .get("/pipelines?namespace=team-a&page_size=1&sort_by=name")
        .await
        .expect_ok()
        .clone();
    assert_eq!(listed["pipelines"][0], created);
    assert_eq!(listed["total_size"], 1);
    // The shared namespace holds none: an empty list is {}.
    assert_eq!(http.get("/pipelines").await.expect_ok(), &json!({}));

    // CreatePipelineAndVersion takes the whole request as its body.
    let both = http
        .post(
            "/pipelines/create",
            json!({
                "pipeline": {"name": "both", "namespace": "team-a"},
                "pipeline_version": {"pipeline_spec": {
                    "pipelineInfo": {"name": "both"}, "root": {"dag": {}}
                }},
            }),
        )
        .await
        .expect_ok()
        .clone();
    let both_id = id(&both, "pipeline_id");
    let version = http
        .post(
            &format!("/pipelines/{both_id}/versions"),
            json!({"name": "v2", "pipeline_spec": {"pipelineInfo": {"name": "both"}, "root": {}}}),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(version["pipeline_id"], both_id.as_str());

    let refused = http.delete(&format!("/pipelines/{both_id}")).await;
    assert!(refused.expect_error(400, 9).contains("cascade"));
    http.delete(&format!("/pipelines/{both_id}?cascade=maybe"))
        .await
        .expect_error(400, 3);
    assert_eq!(
        http.delete(&format!("/pipelines/{both_id}?cascade=true"))
            .await
            .expect_ok(),
        &json!({})
    );
    http.get(&format!("/pipelines/{both_id}"))
        .await
        .expect_error(404, 5);
    assert_eq!(
        http.delete(&format!("/pipelines/{pipeline_id}"))
            .await
            .expect_ok(),
        &json!({})
    );
    http.delete(&format!("/pipelines/{pipeline_id}"))
        .await
        .expect_error(404, 5);
}

#[every_backend]
async fn versions_over_json_check_both_ids() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let a = upload(&http, "?name=a", SPEC.as_bytes())
        .await
        .expect_ok()
        .clone();
    let b = upload(&http, "?name=b", SPEC.as_bytes())
        .await
        .expect_ok()
        .clone();
    let (a_id, b_id) = (id(&a, "pipeline_id"), id(&b, "pipeline_id"));
    let versions = http
        .get(&format!("/pipelines/{a_id}/versions"))
        .await
        .expect_ok()
        .clone();
    let version_id = id(&versions["pipeline_versions"][0], "pipeline_version_id");
    http.get(&format!("/pipelines/{b_id}/versions/{version_id}"))
        .await
        .expect_error(404, 5);
    http.get(&format!(
        "/pipelines/{a_id}/versions/{version_id}?pipeline_id=other"
    ))
    .await
    .expect_error(400, 3);
    http.delete(&format!("/pipelines/{b_id}/versions/{version_id}"))
        .await
        .expect_error(404, 5);
    http.get("/pipelines/no-such/versions")
        .await
        .expect_error(404, 5);
    http.send(
        Method::POST,
        &format!("/pipelines/{a_id}/versions"),
        Some(r#"{"pipeline_spec": {"root": {}}}"#.into()),
    )
    .await
    .expect_error(400, 3);
    assert_eq!(
        http.delete(&format!("/pipelines/{a_id}/versions/{version_id}"))
            .await
            .expect_ok(),
        &json!({})
    );
}

#[every_backend]
async fn patch_changes_display_name_and_tags_and_an_empty_tags_object_clears_them() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let pipeline = upload(
        &http,
        "?name=tagged&tags=%7B%22a%22%3A%221%22%7D",
        SPEC.as_bytes(),
    )
    .await
    .expect_ok()
    .clone();
    let pipeline_id = id(&pipeline, "pipeline_id");
    let patched = http
        .send(
            Method::PATCH,
            &format!("/pipelines/{pipeline_id}"),
            Some(json!({"display_name": "Tagged"}).to_string()),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(patched["display_name"], "Tagged");
    assert_eq!(patched["tags"], json!({"a": "1"}));
    let cleared = http
        .send(
            Method::PATCH,
            &format!("/pipelines/{pipeline_id}"),
            Some(json!({"tags": {}}).to_string()),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(cleared.get("tags"), None, "{cleared}");
    http.send(
        Method::PATCH,
        &format!("/pipelines/{pipeline_id}"),
        Some(json!({"pipeline_id": "another"}).to_string()),
    )
    .await
    .expect_error(400, 3);

    let versions = http
        .get(&format!("/pipelines/{pipeline_id}/versions"))
        .await
        .expect_ok()
        .clone();
    let version_id = id(&versions["pipeline_versions"][0], "pipeline_version_id");
    let version = http
        .send(
            Method::PATCH,
            &format!("/pipelines/{pipeline_id}/versions/{version_id}"),
            Some(json!({"display_name": "First", "tags": {"k": "v"}}).to_string()),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(version["display_name"], "First");
    assert_eq!(version["tags"], json!({"k": "v"}));
}

#[every_backend]
async fn a_run_of_a_version_over_json_is_404_when_the_version_is_missing() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let pipeline = upload(&http, "?name=runnable", SPEC.as_bytes())
        .await
        .expect_ok()
        .clone();
    let pipeline_id = id(&pipeline, "pipeline_id");
    let run = http
        .post(
            "/runs",
            json!({"display_name": "r", "pipeline_version_reference": {"pipeline_id": pipeline_id}}),
        )
        .await
        .expect_ok()
        .clone();
    assert!(
        !run["pipeline_version_reference"]["pipeline_version_id"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let missing = http
        .post(
            "/runs",
            json!({"display_name": "r", "pipeline_version_reference": {
                "pipeline_id": pipeline_id, "pipeline_version_id": "gone"
            }}),
        )
        .await;
    assert!(missing.expect_error(404, 5).contains("gone"));
}

#[every_backend]
async fn pipelines_and_versions_are_filtered_on_their_tags() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let ml = upload(
        &http,
        "?name=ml&tags=%7B%22team%22%3A%22ml%22%7D",
        SPEC.as_bytes(),
    )
    .await
    .expect_ok()
    .clone();
    upload(
        &http,
        "?name=ops&tags=%7B%22team%22%3A%22ops%22%7D",
        SPEC.as_bytes(),
    )
    .await
    .expect_ok();
    upload(&http, "?name=untagged", SPEC.as_bytes())
        .await
        .expect_ok();
    let filter = |key: &str, op: &str, value: &str| {
        let predicate =
            json!({"predicates": [{"key": key, "operation": op, "string_value": value}]});
        form_urlencoded::byte_serialize(predicate.to_string().as_bytes()).collect::<String>()
    };
    let listed = http
        .get(&format!(
            "/pipelines?filter={}",
            filter("tags.team", "EQUALS", "ml")
        ))
        .await
        .expect_ok()
        .clone();
    assert_eq!(listed["total_size"], 1);
    assert_eq!(listed["pipelines"][0]["pipeline_id"], ml["pipeline_id"]);
    let not_ml = http
        .get(&format!(
            "/pipelines?filter={}&sort_by=name",
            filter("tags.team", "NOT_EQUALS", "ml")
        ))
        .await
        .expect_ok()
        .clone();
    let names: Vec<_> = not_ml["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops", "untagged"]);
    let message = http
        .get(&format!(
            "/pipelines?filter={}",
            filter("tags.", "EQUALS", "ml")
        ))
        .await
        .expect_error(400, 3);
    assert!(message.contains("tags.KEY"), "{message}");

    let versions = http
        .get(&format!(
            "/pipelines/{}/versions?filter={}",
            id(&ml, "pipeline_id"),
            filter("tags.team", "EQUALS", "ml")
        ))
        .await
        .expect_ok()
        .clone();
    // An uploaded pipeline's tags are the pipeline's; its first version has none.
    assert_eq!(versions, json!({}));
}
