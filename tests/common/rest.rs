//! The JSON/HTTP API's test client: requests to a real server's HTTP port and their replies
//! (status, content type, JSON), shared by the HTTP test files.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::TestServer;

/// A reply: status, `Content-Type`, body as JSON (`Null` when empty or not JSON) and as text.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Asserts an error reply: the HTTP status, the JSON content type, the `{code, message,
    /// details}` shape with the gRPC `code`; returns the message.
    pub fn expect_error(&self, status: u16, code: i64) -> String {
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

    pub fn expect_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text);
        assert_eq!(self.content_type, "application/json");
        &self.json
    }
}

pub struct Http {
    pub client: reqwest::Client,
    /// `http://HOST:PORT/apis/v2beta1`.
    pub base: String,
    root: String,
}

impl Http {
    /// The server's HTTP port.
    pub fn new(server: &TestServer) -> Http {
        Http::at(server.http_url())
    }

    /// Any port that answers the JSON API (`http://HOST:PORT`, no trailing slash).
    pub fn at(root: String) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: format!("{root}/apis/v2beta1"),
            root,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        self.send_to(
            method,
            &format!("{}{path}", self.base),
            body.map(String::into_bytes),
        )
        .await
    }

    /// Sends raw bytes to `path` from the server's root (`/apis/...`, `/`, anything).
    pub async fn send_raw(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        self.send_to(method, &format!("{}{path}", self.root), Some(body))
            .await
    }

    /// POSTs `body` with its own `content_type` to `path` under `/apis/v2beta1` (a multipart
    /// upload).
    pub async fn post_as(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        Self::reply(request).await
    }

    async fn send_to(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Reply {
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        Self::reply(request).await
    }

    async fn reply(request: reqwest::RequestBuilder) -> Reply {
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

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, Some(body.to_owned())).await
    }

    /// Creates a run from a minimal body and returns its JSON.
    pub async fn create_run(&self, name: &str) -> Value {
        self.post(
            "/runs",
            json!({"display_name": name, "pipeline_id": "pipeline-1"}),
        )
        .await
        .expect_ok()
        .clone()
    }

    pub async fn report(&self, run_id: &str, body: Value) -> Reply {
        self.post(&format!("/runs/{run_id}:reportState"), body)
            .await
    }
}

pub fn id_of(run: &Value) -> String {
    run["run_id"].as_str().expect("run_id").to_owned()
}

/// Every object key in `value`, outside the free-form JSON of pipeline_spec and parameters.
pub fn keys(value: &Value, out: &mut Vec<String>) {
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
