//! The UI's files as the HTTP router serves them: content types, revalidation, and the API's
//! JSON 404 left alone.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use tower::ServiceExt;

use super::ASSETS;
use crate::service::{Limits, Services};
use crate::store::{self, DataDirOptions};

/// The whole HTTP router over a fresh store (the directory lives as long as the router's use).
async fn router() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open_data_dir(dir.path(), DataDirOptions::default()).expect("store");
    let services = Services::new(store, Limits::default())
        .await
        .expect("services");
    (crate::http::router(services, 1024 * 1024), dir)
}

async fn get(path: &str, if_none_match: Option<&str>) -> Response {
    let (router, _dir) = router().await;
    let mut request = Request::get(path);
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    router
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn text(response: Response) -> String {
    let bytes = to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn the_ui_page_is_served_at_the_root_as_html_with_a_strict_policy() {
    let response = get("/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
    assert!(header_of(&response, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
    let html = text(response).await;
    assert!(html.contains(r#"<script type="module" src="/ui/app.js">"#));
    assert!(html.contains(r#"name="viewport""#));
}

#[tokio::test]
async fn assets_have_their_content_types() {
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type);
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
    }
}

#[tokio::test]
async fn an_asset_whose_etag_matches_is_answered_304_without_a_body() {
    let first = get("/ui/app.js", None).await;
    let etag = header_of(&first, header::ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag:?}");
    let again = get("/ui/app.js", Some(&etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_of(&again, header::ETAG), etag);
    assert_eq!(text(again).await, "");
    let stale = get("/ui/app.js", Some("\"other\"")).await;
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_asset_is_a_404() {
    let response = get("/ui/nope.js", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_api_paths_still_answer_the_json_404() {
    for path in ["/apis/v2beta1/nope", "/apis/", "/ui"] {
        let response = get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "application/json"
        );
        assert!(text(response).await.contains(r#""code":5"#), "{path}");
    }
}

/// Every `./x.js` a module imports, and every `/ui/x` the page names, is in the asset table: a
/// file forgotten there would break the page only in a browser.
#[test]
fn every_file_the_page_references_is_embedded() {
    let names: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
    for asset in ASSETS {
        let Ok(source) = std::str::from_utf8(asset.body) else {
            continue;
        };
        for (marker, end) in [("from './", '\''), ("import('./", '\''), ("\"/ui/", '"')] {
            for (at, _) in source.match_indices(marker) {
                let rest = &source[at + marker.len()..];
                let referenced = &rest[..rest.find(end).unwrap_or(rest.len())];
                assert!(
                    names.contains(&referenced),
                    "{} references {referenced:?}, which is not in ASSETS",
                    asset.name
                );
            }
        }
    }
}
