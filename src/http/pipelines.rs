//! KFP's pipeline routes, and the multipart upload routes the kfp SDK uses
//! (`POST /apis/v2beta1/pipelines/upload` and `/upload_version`: the package in the form field
//! `uploadfile`, everything else in the query string).

use std::collections::HashMap;

use axum::Router;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::json::{self, Body, Json, reply, set_path_id};
use super::{Caller, HttpState, empty_reply};
use crate::api::*;
use crate::error::http::ApiError;
use crate::service::Upload;

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/apis/v2beta1/pipelines",
            get(list_pipelines).post(create_pipeline),
        )
        .route(
            "/apis/v2beta1/pipelines/create",
            post(create_pipeline_and_version),
        )
        .route("/apis/v2beta1/pipelines/upload", post(upload_pipeline))
        .route(
            "/apis/v2beta1/pipelines/upload_version",
            post(upload_pipeline_version),
        )
        .route(
            "/apis/v2beta1/pipelines/names/{name}",
            get(get_pipeline_by_name),
        )
        .route(
            "/apis/v2beta1/pipelines/{pipeline_id}",
            get(get_pipeline)
                .delete(delete_pipeline)
                .patch(update_pipeline),
        )
        .route(
            "/apis/v2beta1/pipelines/{pipeline_id}/versions",
            get(list_versions).post(create_version),
        )
        .route(
            "/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}",
            get(get_version)
                .delete(delete_version)
                .patch(update_version),
        )
}

/// Path parameters, percent-decoded; a segment that is not UTF-8 is a JSON 400.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Params(params)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

async fn create_pipeline(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Pipeline>, ApiError> {
    // The body is the Pipeline itself (`body: "pipeline"`), the request's only field.
    let _query: CreatePipelineRequest = json::from_query(query.as_deref())?;
    let pipeline: Pipeline = json::decode_body(&body, "Pipeline")?;
    reply(state.services.pipelines.create(&ctx, pipeline).await)
}

async fn create_pipeline_and_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Pipeline>, ApiError> {
    // `body: "*"`: the whole request is the body.
    let _query: pbjson_types::Empty = json::from_query(query.as_deref())?;
    let request: CreatePipelineAndVersionRequest =
        json::decode_body(&body, "CreatePipelineAndVersionRequest")?;
    let created = state
        .services
        .pipelines
        .create_with_version(
            &ctx,
            request.pipeline.unwrap_or_default(),
            request.pipeline_version.unwrap_or_default(),
        )
        .await;
    reply(created.map(|(pipeline, _)| pipeline))
}

async fn list_pipelines(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListPipelinesResponse>, ApiError> {
    let request: ListPipelinesRequest = json::from_query(query.as_deref())?;
    reply(state.services.pipelines.list(&ctx, &request).await)
}

async fn get_pipeline(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(pipeline_id): Params<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Pipeline>, ApiError> {
    let request: GetPipelineRequest = json::with_path_id(query.as_deref(), None, &pipeline_id)?;
    reply(
        state
            .services
            .pipelines
            .get(&ctx, &request.pipeline_id)
            .await,
    )
}

async fn get_pipeline_by_name(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(name): Params<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Pipeline>, ApiError> {
    let mut request: GetPipelineByNameRequest = json::from_query(query.as_deref())?;
    set_path_id("name", &mut request.name, &name)?;
    reply(
        state
            .services
            .pipelines
            .get_by_name(&ctx, &request.namespace, &request.name)
            .await,
    )
}

async fn delete_pipeline(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(pipeline_id): Params<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // `cascade=true`: the query string's bool, which the JSON reader would take as a string.
    let (cascade, rest) = take_bool(query.as_deref(), "cascade")?;
    let request: DeletePipelineRequest = json::with_path_id(Some(&rest), None, &pipeline_id)?;
    empty_reply(
        state
            .services
            .pipelines
            .delete(&ctx, &request.pipeline_id, cascade)
            .await,
    )
}

/// Whether a JSON body sets `tags` to `{}`: the one way to clear tags (protobuf cannot tell an
/// empty map from none, so KFP's gateway looks at the JSON too).
fn clears_tags(body: &Body) -> bool {
    serde_json::from_slice::<serde_json::Value>(&body.0)
        .ok()
        .and_then(|v| v.get("tags").cloned())
        .is_some_and(|tags| tags.as_object().is_some_and(|t| t.is_empty()))
}

async fn update_pipeline(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(pipeline_id): Params<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Pipeline>, ApiError> {
    let _query: UpdatePipelineRequest = json::from_query(query.as_deref())?;
    let mut pipeline: Pipeline = json::decode_body(&body, "Pipeline")?;
    set_path_id(
        "pipeline.pipeline_id",
        &mut pipeline.pipeline_id,
        &pipeline_id,
    )?;
    reply(
        state
            .services
            .pipelines
            .update(&ctx, pipeline, clears_tags(&body))
            .await,
    )
}

async fn create_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(pipeline_id): Params<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<PipelineVersion>, ApiError> {
    let mut request: CreatePipelineVersionRequest = json::from_query(query.as_deref())?;
    set_path_id("pipeline_id", &mut request.pipeline_id, &pipeline_id)?;
    let version: PipelineVersion = json::decode_body(&body, "PipelineVersion")?;
    reply(
        state
            .services
            .pipelines
            .create_version(&ctx, &request.pipeline_id, version)
            .await,
    )
}

async fn list_versions(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params(pipeline_id): Params<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListPipelineVersionsResponse>, ApiError> {
    let request: ListPipelineVersionsRequest =
        json::with_path_id(query.as_deref(), None, &pipeline_id)?;
    reply(state.services.pipelines.list_versions(&ctx, &request).await)
}

async fn get_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params((pipeline_id, version_id)): Params<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<PipelineVersion>, ApiError> {
    let mut r: GetPipelineVersionRequest = json::from_query(query.as_deref())?;
    set_path_id("pipeline_id", &mut r.pipeline_id, &pipeline_id)?;
    set_path_id(
        "pipeline_version_id",
        &mut r.pipeline_version_id,
        &version_id,
    )?;
    reply(
        state
            .services
            .pipelines
            .get_version(&ctx, &r.pipeline_id, &r.pipeline_version_id)
            .await,
    )
}

async fn delete_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params((pipeline_id, version_id)): Params<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut r: DeletePipelineVersionRequest = json::from_query(query.as_deref())?;
    set_path_id("pipeline_id", &mut r.pipeline_id, &pipeline_id)?;
    set_path_id(
        "pipeline_version_id",
        &mut r.pipeline_version_id,
        &version_id,
    )?;
    empty_reply(
        state
            .services
            .pipelines
            .delete_version(&ctx, &r.pipeline_id, &r.pipeline_version_id)
            .await,
    )
}

async fn update_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    Params((pipeline_id, version_id)): Params<(String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<PipelineVersion>, ApiError> {
    let _query: UpdatePipelineVersionRequest = json::from_query(query.as_deref())?;
    let mut version: PipelineVersion = json::decode_body(&body, "PipelineVersion")?;
    set_path_id(
        "pipeline_version.pipeline_id",
        &mut version.pipeline_id,
        &pipeline_id,
    )?;
    set_path_id(
        "pipeline_version.pipeline_version_id",
        &mut version.pipeline_version_id,
        &version_id,
    )?;
    reply(
        state
            .services
            .pipelines
            .update_version(&ctx, version, clears_tags(&body))
            .await,
    )
}

/// The upload routes' query parameters (KFP's names; lowerCamel accepted too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    #[serde(default)]
    name: String,
    #[serde(default, alias = "displayName")]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    namespace: String,
    /// A JSON object of strings.
    #[serde(default)]
    tags: String,
    #[serde(default, alias = "codeSourceUrl")]
    code_source_url: String,
    /// The pipeline a version is added to.
    #[serde(default, alias = "pipelineId", alias = "pipeline_id")]
    pipelineid: String,
}

impl UploadQuery {
    fn read(query: Option<&str>, version: bool) -> Result<Upload, ApiError> {
        let q: UploadQuery = json::from_query(query)?;
        if version && !q.namespace.is_empty() {
            return Err(ApiError::invalid(
                "upload_version takes no namespace: a version is in its pipeline's namespace",
            ));
        }
        if !version && !q.pipelineid.is_empty() {
            return Err(ApiError::invalid(
                "pipelineid is for /apis/v2beta1/pipelines/upload_version; an upload creates a \
                 new pipeline",
            ));
        }
        let tags = if q.tags.trim().is_empty() {
            HashMap::new()
        } else {
            serde_json::from_str(&q.tags).map_err(|e| {
                ApiError::invalid(format!(
                    "query parameter tags must be a JSON object of strings such as \
                     {{\"team\":\"ml\"}}: {e}"
                ))
            })?
        };
        Ok(Upload {
            name: q.name,
            display_name: q.display_name,
            description: q.description,
            namespace: q.namespace,
            pipeline_id: q.pipelineid,
            code_source_url: q.code_source_url,
            tags,
        })
    }
}

/// The bytes of the form field `uploadfile`.
async fn uploaded_file(
    state: &HttpState,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Vec<u8>, ApiError> {
    let mut form = form.map_err(|e| {
        ApiError::invalid(format!(
            "the upload must be a multipart/form-data request with the package in the field \
             uploadfile: {}",
            e.body_text()
        ))
    })?;
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(state.max_body_bytes)
        } else {
            ApiError::invalid(format!("cannot read the multipart form: {}", e.body_text()))
        }
    };
    while let Some(field) = form.next_field().await.map_err(too_large)? {
        if field.name() == Some("uploadfile") {
            return Ok(field.bytes().await.map_err(too_large)?.to_vec());
        }
    }
    Err(ApiError::invalid(
        "the multipart form has no field uploadfile (the pipeline package)",
    ))
}

async fn upload_pipeline(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<Pipeline>, ApiError> {
    let upload = UploadQuery::read(query.as_deref(), false)?;
    let file = uploaded_file(&state, form).await?;
    let created = state.services.pipelines.upload(&ctx, &file, upload).await;
    reply(created.map(|(pipeline, _)| pipeline))
}

async fn upload_pipeline_version(
    State(state): State<HttpState>,
    Caller(ctx): Caller,
    RawQuery(query): RawQuery,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<PipelineVersion>, ApiError> {
    let upload = UploadQuery::read(query.as_deref(), true)?;
    let file = uploaded_file(&state, form).await?;
    reply(
        state
            .services
            .pipelines
            .upload_version(&ctx, &file, upload)
            .await,
    )
}

/// Takes the boolean query parameter `name` (`true`, `false`, `1`, `0`; absent = false) out of
/// `query`; returns it and the rest of the query.
fn take_bool(query: Option<&str>, name: &str) -> Result<(bool, String), ApiError> {
    let mut value = false;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != name {
            rest.append_pair(&key, &v);
            continue;
        }
        value = match v.as_ref() {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            other => {
                return Err(ApiError::invalid(format!(
                    "query parameter {name} must be true or false, not {other:?}"
                )));
            }
        };
    }
    Ok((value, rest.finish()))
}
