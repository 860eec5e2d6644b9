//! Pipeline and pipeline-version use cases, including the package uploads, and the lookup that
//! runs and recurring runs use to name a version.
//!
//! Rules (KFP's, except where marked):
//! - A pipeline's `name` is unique within its namespace ("" = shared), a version's within its
//!   pipeline; `name` and `display_name` default to each other. A version created without a
//!   name takes its display_name, then the spec's pipelineInfo.name [ours: KFP takes the
//!   uploaded file's name].
//! - Every version holds a pipeline spec, checked by [`super::pipeline_spec`].
//! - DeletePipeline refuses a pipeline that has versions unless `cascade` (FAILED_PRECONDITION,
//!   HTTP 400 as in KFP); with cascade the versions go in the same atomic write.
//! - DeletePipelineVersion succeeds even when runs ran the version: they keep their
//!   reference, as in KFP (their records do not depend on the version's). A recurring run that
//!   names the deleted version is disabled by the scheduler the next time it is due, with an
//!   error saying why.

use std::collections::HashMap;
use std::sync::Arc;

use super::access::{Role, Verb, audited, audited_on};
use super::pipeline_spec::{self, CheckedSpec};
use super::validate::{MAX_ID_BYTES, check_lookup_id, check_text};
use super::{Context, Core};
use crate::api::{
    ListPipelineVersionsRequest, ListPipelineVersionsResponse, ListPipelinesRequest,
    ListPipelinesResponse, Pipeline, PipelineVersion, PipelineVersionReference,
};
use crate::error::{Error, Result};
use crate::query::{ListRequest, Scope};
use crate::store::{Expectation, Op, Stored, Write};

/// Tags per pipeline or version, and characters per tag key or value (KFP's limits).
const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 63;

fn pipeline_not_found(id: &str) -> Error {
    Error::NotFound(format!("pipeline {id:?} not found"))
}

fn version_not_found(id: &str) -> Error {
    Error::NotFound(format!("pipeline version {id:?} not found"))
}

/// Pipelines and their versions.
pub struct Pipelines {
    core: Arc<Core>,
}

/// What an upload gives besides the file (query parameters of the upload routes).
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub name: String,
    pub display_name: String,
    pub description: String,
    /// The pipeline's namespace (pipeline uploads only).
    pub namespace: String,
    /// The pipeline to add the version to (version uploads only).
    pub pipeline_id: String,
    pub code_source_url: String,
    pub tags: HashMap<String, String>,
}

impl Core {
    /// Allows `verb` on a pipeline (or one of its versions). A shared pipeline is readable by
    /// every caller; changing it needs a role in namespace "". A namespaced pipeline the caller
    /// cannot read is NOT_FOUND, as if missing.
    pub(super) fn allow_on_pipeline(&self, ctx: &Context, verb: Verb, p: &Pipeline) -> Result<()> {
        if !p.namespace.is_empty() {
            return self.allow_on_record(ctx, verb, &p.pipeline_id, &p.namespace, || {
                pipeline_not_found(&p.pipeline_id)
            });
        }
        if verb.least_role() == Role::Viewer {
            self.allow_shared_read(ctx)
        } else {
            self.allow_in_namespace(ctx, verb, &p.pipeline_id, "")
        }
    }

    pub(super) async fn stored_pipeline(&self, pipeline_id: &str) -> Result<Stored<Pipeline>> {
        check_lookup_id("pipeline_id", pipeline_id)?;
        self.store
            .pipeline(pipeline_id)
            .await?
            .ok_or_else(|| pipeline_not_found(pipeline_id))
    }

    /// The version `version_id` (of pipeline `pipeline_id` when that is given) and its pipeline.
    async fn stored_version(
        &self,
        pipeline_id: &str,
        version_id: &str,
    ) -> Result<(Stored<PipelineVersion>, Stored<Pipeline>)> {
        check_lookup_id("pipeline_version_id", version_id)?;
        let version = self
            .store
            .pipeline_version(version_id)
            .await?
            .ok_or_else(|| version_not_found(version_id))?;
        if !pipeline_id.is_empty() && version.value.pipeline_id != pipeline_id {
            return Err(Error::NotFound(format!(
                "pipeline {pipeline_id:?} has no version {version_id:?}"
            )));
        }
        let pipeline = self
            .store
            .pipeline(&version.value.pipeline_id)
            .await?
            .ok_or_else(|| version_not_found(version_id))?;
        Ok((version, pipeline))
    }

    /// The version a run or recurring run names, which the caller must be able to read: the
    /// given version (which must belong to the given pipeline), or with only a pipeline id its
    /// latest version. NOT_FOUND when there is none.
    pub(super) async fn referenced_version(
        &self,
        ctx: &Context,
        field: &str,
        reference: &PipelineVersionReference,
    ) -> Result<Stored<PipelineVersion>> {
        if !reference.pipeline_version_id.is_empty() {
            let (version, pipeline) = self
                .stored_version(&reference.pipeline_id, &reference.pipeline_version_id)
                .await?;
            self.allow_on_pipeline(ctx, Verb::GetPipelineVersion, &pipeline.value)
                .map_err(|_| version_not_found(&reference.pipeline_version_id))?;
            return Ok(version);
        }
        if reference.pipeline_id.is_empty() {
            return Err(Error::invalid(format!(
                "{field} names neither a pipeline nor a version"
            )));
        }
        let pipeline = self.stored_pipeline(&reference.pipeline_id).await?;
        self.allow_on_pipeline(ctx, Verb::GetPipeline, &pipeline.value)?;
        self.store
            .latest_pipeline_version(&reference.pipeline_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "pipeline {:?} has no version to run",
                    reference.pipeline_id
                ))
            })
    }

    fn check_tags(&self, field: &str, tags: &HashMap<String, String>) -> Result<()> {
        if tags.len() > MAX_TAGS {
            return Err(Error::invalid(format!(
                "{field} has {} tags; at most {MAX_TAGS} are accepted",
                tags.len()
            )));
        }
        for (key, value) in tags {
            if key.is_empty() || key.contains('.') || key.chars().count() > MAX_TAG_CHARS {
                return Err(Error::invalid(format!(
                    "{field} key {key:?} is not a valid tag key: 1 to {MAX_TAG_CHARS} characters \
                     without '.'"
                )));
            }
            if value.chars().count() > MAX_TAG_CHARS {
                return Err(Error::invalid(format!(
                    "{field}[{key:?}] is longer than {MAX_TAG_CHARS} characters"
                )));
            }
        }
        Ok(())
    }

    fn check_names(
        &self,
        what: &str,
        name: &str,
        display_name: &str,
        description: &str,
    ) -> Result<()> {
        let limits = &self.limits;
        check_text(&format!("{what}.name"), name, true, limits.max_name_bytes)?;
        check_text(
            &format!("{what}.display_name"),
            display_name,
            false,
            limits.max_name_bytes,
        )?;
        check_text(
            &format!("{what}.description"),
            description,
            false,
            limits.max_description_bytes,
        )
    }
}

/// Applies an update to (display_name, tags): a display_name when one is given; the tags when
/// some are given, or when they are to be cleared.
fn apply_update(
    (display_name, tags): (&mut String, &mut HashMap<String, String>),
    (new_name, new_tags): (&str, &HashMap<String, String>),
    clear_tags: bool,
) {
    if !new_name.is_empty() {
        new_name.clone_into(display_name);
    }
    if clear_tags || !new_tags.is_empty() {
        tags.clone_from(new_tags);
    }
}

/// `first` unless empty, then `second`, then `third`.
fn first_given(first: &str, second: &str, third: &str) -> String {
    [first, second, third]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

impl Pipelines {
    pub(super) fn new(core: Arc<Core>) -> Pipelines {
        Pipelines { core }
    }

    /// A new pipeline record from what a client sent.
    fn new_pipeline(&self, ctx: &Context, input: Pipeline, spec_name: &str) -> Result<Pipeline> {
        let name = first_given(&input.name, &input.display_name, spec_name);
        if name.is_empty() {
            return Err(Error::invalid(
                "pipeline.name is required (or pipeline.display_name)",
            ));
        }
        let display_name = first_given(&input.display_name, &name, "");
        self.core
            .check_names("pipeline", &name, &display_name, &input.description)?;
        check_text("pipeline.namespace", &input.namespace, false, MAX_ID_BYTES)?;
        self.core.check_tags("pipeline.tags", &input.tags)?;
        Ok(Pipeline {
            pipeline_id: ctx.new_id(),
            display_name,
            name,
            description: input.description,
            created_at: Some(ctx.now()),
            namespace: input.namespace,
            error: None,
            tags: input.tags,
        })
    }

    /// A new version record of `pipeline_id` from what a client sent and its checked spec.
    fn new_version(
        &self,
        ctx: &Context,
        pipeline_id: &str,
        input: PipelineVersion,
        spec: CheckedSpec,
    ) -> Result<PipelineVersion> {
        let name = first_given(&input.name, &input.display_name, &spec.pipeline_name);
        let display_name = first_given(&input.display_name, &name, "");
        self.core
            .check_names("pipeline_version", &name, &display_name, &input.description)?;
        check_text(
            "pipeline_version.code_source_url",
            &input.code_source_url,
            false,
            self.core.limits.max_description_bytes,
        )?;
        if let Some(url) = &input.package_url {
            check_text(
                "pipeline_version.package_url.pipeline_url",
                &url.pipeline_url,
                false,
                self.core.limits.max_description_bytes,
            )?;
        }
        self.core.check_tags("pipeline_version.tags", &input.tags)?;
        Ok(PipelineVersion {
            pipeline_id: pipeline_id.to_owned(),
            pipeline_version_id: ctx.new_id(),
            display_name,
            name,
            description: input.description,
            created_at: Some(ctx.now()),
            package_url: input.package_url,
            code_source_url: input.code_source_url,
            pipeline_spec: Some(spec.spec),
            error: None,
            tags: input.tags,
        })
    }

    /// The checked spec of a version sent through the API.
    fn spec_of(input: &PipelineVersion) -> Result<CheckedSpec> {
        match &input.pipeline_spec {
            Some(spec) if !spec.protobuf().is_empty() => pipeline_spec::check_struct(spec),
            _ => Err(Error::invalid(if input.package_url.is_some() {
                "pipeline_version.pipeline_spec is required: runledger does not download \
                 package_url; send the spec itself, or upload the file to \
                 /apis/v2beta1/pipelines/upload_version"
            } else {
                "pipeline_version.pipeline_spec is required"
            })),
        }
    }

    /// Creates a pipeline without versions.
    pub async fn create(&self, ctx: &Context, input: Pipeline) -> Result<Pipeline> {
        let pipeline = self.new_pipeline(ctx, input, "")?;
        self.core.allow_in_namespace(
            ctx,
            Verb::CreatePipeline,
            &pipeline.name,
            &pipeline.namespace,
        )?;
        let ops = vec![Op::PutPipeline {
            pipeline: pipeline.clone(),
            replaces: None,
        }];
        let result = self.write_new(&pipeline, None, ops).await;
        audited(
            ctx,
            Verb::CreatePipeline,
            &pipeline.pipeline_id,
            &pipeline.namespace,
            result.map(|()| pipeline.clone()),
        )
    }

    /// Creates a pipeline and its first version in one atomic write. The version takes the
    /// pipeline's name, display name and description (as in KFP); its spec, source URLs and
    /// tags are its own.
    pub async fn create_with_version(
        &self,
        ctx: &Context,
        pipeline: Pipeline,
        version: PipelineVersion,
    ) -> Result<(Pipeline, PipelineVersion)> {
        let spec = Self::spec_of(&version)?;
        self.create_both(ctx, pipeline, version, spec).await
    }

    async fn create_both(
        &self,
        ctx: &Context,
        pipeline: Pipeline,
        version: PipelineVersion,
        spec: CheckedSpec,
    ) -> Result<(Pipeline, PipelineVersion)> {
        let pipeline = self.new_pipeline(ctx, pipeline, &spec.pipeline_name)?;
        let version = self.new_version(
            ctx,
            &pipeline.pipeline_id,
            PipelineVersion {
                name: pipeline.name.clone(),
                display_name: pipeline.display_name.clone(),
                description: pipeline.description.clone(),
                ..version
            },
            spec,
        )?;
        self.core.allow_in_namespace(
            ctx,
            Verb::CreatePipeline,
            &pipeline.name,
            &pipeline.namespace,
        )?;
        let ops = vec![
            Op::PutPipeline {
                pipeline: pipeline.clone(),
                replaces: None,
            },
            Op::PutPipelineVersion {
                version: Box::new(version.clone()),
                replaces: None,
            },
        ];
        let result = self.write_new(&pipeline, None, ops).await;
        audited(
            ctx,
            Verb::CreatePipeline,
            &pipeline.pipeline_id,
            &pipeline.namespace,
            result.map(|()| (pipeline.clone(), version)),
        )
    }

    /// Adds a version to a pipeline (`pipeline_id`, or the version's own pipeline_id).
    pub async fn create_version(
        &self,
        ctx: &Context,
        pipeline_id: &str,
        input: PipelineVersion,
    ) -> Result<PipelineVersion> {
        let spec = Self::spec_of(&input)?;
        self.add_version(ctx, pipeline_id, input, spec).await
    }

    async fn add_version(
        &self,
        ctx: &Context,
        pipeline_id: &str,
        input: PipelineVersion,
        spec: CheckedSpec,
    ) -> Result<PipelineVersion> {
        let pipeline_id = match (pipeline_id, input.pipeline_id.as_str()) {
            ("", "") => return Err(Error::invalid("pipeline_id is required")),
            (given, "") | ("", given) => given.to_owned(),
            (a, b) if a == b => a.to_owned(),
            (a, b) => {
                return Err(Error::invalid(format!(
                    "pipeline_version.pipeline_id {b:?} differs from pipeline_id {a:?}"
                )));
            }
        };
        let pipeline = self.core.stored_pipeline(&pipeline_id).await?.value;
        self.core
            .allow_on_pipeline(ctx, Verb::CreatePipelineVersion, &pipeline)?;
        let version = self.new_version(ctx, &pipeline_id, input, spec)?;
        let ops = vec![
            Op::Expect(Expectation::PipelineExists(pipeline_id.clone())),
            Op::PutPipelineVersion {
                version: Box::new(version.clone()),
                replaces: None,
            },
        ];
        let result = self.write_new(&pipeline, Some(&version), ops).await;
        audited(
            ctx,
            Verb::CreatePipelineVersion,
            &version.pipeline_version_id,
            &pipeline.namespace,
            result.map(|()| version.clone()),
        )
    }

    /// Writes the ops that create `pipeline` (or `version` of it), telling a taken name
    /// (ALREADY_EXISTS) and a pipeline deleted meanwhile (NOT_FOUND) from a lost race.
    async fn write_new(
        &self,
        pipeline: &Pipeline,
        version: Option<&PipelineVersion>,
        ops: Vec<Op>,
    ) -> Result<()> {
        let store = &self.core.store;
        until_not_outraced!("the name", async {
            let taken = match version {
                None => store
                    .pipeline_named(&pipeline.namespace, &pipeline.name)
                    .await?
                    .map(|p| {
                        format!(
                            "a pipeline named {:?} already exists in namespace {:?} (id {:?})",
                            pipeline.name, pipeline.namespace, p.value.pipeline_id
                        )
                    }),
                Some(v) => {
                    if store.pipeline(&pipeline.pipeline_id).await?.is_none() {
                        return Err(pipeline_not_found(&pipeline.pipeline_id));
                    }
                    store
                        .pipeline_version_named(&v.pipeline_id, &v.name)
                        .await?
                        .map(|existing| {
                            format!(
                                "pipeline {:?} already has a version named {:?} (id {:?})",
                                v.pipeline_id, v.name, existing.value.pipeline_version_id
                            )
                        })
                }
            };
            if let Some(taken) = taken {
                // What makes the name taken may not be durable yet: say so once it is.
                store.settle().await?;
                return Err(Error::AlreadyExists(taken));
            }
            store.write(Write::new(ops.clone())).await.map(drop)
        })
    }

    /// Creates a pipeline and its first version from an uploaded package. The pipeline is
    /// named by `upload.name`, else `upload.display_name`, else the spec's pipelineInfo.name.
    pub async fn upload(
        &self,
        ctx: &Context,
        package: &[u8],
        upload: Upload,
    ) -> Result<(Pipeline, PipelineVersion)> {
        let spec = pipeline_spec::read_package(package)?;
        let pipeline = Pipeline {
            name: upload.name,
            display_name: upload.display_name,
            description: upload.description,
            namespace: upload.namespace,
            tags: upload.tags,
            ..Default::default()
        };
        let version = PipelineVersion {
            code_source_url: upload.code_source_url,
            ..Default::default()
        };
        self.create_both(ctx, pipeline, version, spec).await
    }

    /// Adds a version from an uploaded package to pipeline `upload.pipeline_id`.
    pub async fn upload_version(
        &self,
        ctx: &Context,
        package: &[u8],
        upload: Upload,
    ) -> Result<PipelineVersion> {
        if upload.pipeline_id.is_empty() {
            return Err(Error::invalid(
                "pipelineid is required: the id of the pipeline to add the version to",
            ));
        }
        let spec = pipeline_spec::read_package(package)?;
        let version = PipelineVersion {
            name: upload.name,
            display_name: upload.display_name,
            description: upload.description,
            code_source_url: upload.code_source_url,
            tags: upload.tags,
            ..Default::default()
        };
        self.add_version(ctx, &upload.pipeline_id, version, spec)
            .await
    }

    pub async fn get(&self, ctx: &Context, pipeline_id: &str) -> Result<Pipeline> {
        let pipeline = self.core.stored_pipeline(pipeline_id).await?.value;
        self.core
            .allow_on_pipeline(ctx, Verb::GetPipeline, &pipeline)?;
        Ok(pipeline)
    }

    /// The pipeline named `name` in `namespace` ("" = the shared pipelines).
    pub async fn get_by_name(
        &self,
        ctx: &Context,
        namespace: &str,
        name: &str,
    ) -> Result<Pipeline> {
        check_text("name", name, true, self.core.limits.max_name_bytes)?;
        check_text("namespace", namespace, false, MAX_ID_BYTES)?;
        let missing = || {
            Error::NotFound(format!(
                "no pipeline named {name:?} in namespace {namespace:?}"
            ))
        };
        let pipeline = self
            .core
            .store
            .pipeline_named(namespace, name)
            .await?
            .ok_or_else(missing)?
            .value;
        self.core
            .allow_on_pipeline(ctx, Verb::GetPipeline, &pipeline)
            .map_err(|e| match e {
                Error::NotFound(_) => missing(),
                other => other,
            })?;
        Ok(pipeline)
    }

    /// The pipelines of one namespace ("" = the shared pipelines).
    pub async fn list(
        &self,
        ctx: &Context,
        request: &ListPipelinesRequest,
    ) -> Result<ListPipelinesResponse> {
        check_text("namespace", &request.namespace, false, MAX_ID_BYTES)?;
        if request.namespace.is_empty() {
            self.core.allow_shared_read(ctx)?;
        } else {
            self.core
                .allow_in_namespace(ctx, Verb::ListPipelines, "", &request.namespace)?;
        }
        let store = &self.core.store;
        let listed = self
            .core
            .list_page::<Pipeline, _, _>(
                &ListRequest {
                    scope: Scope::Namespace(request.namespace.clone()),
                    page_size: request.page_size,
                    sort_by: &request.sort_by,
                    filter: &request.filter,
                    page_token: &request.page_token,
                },
                |query| store.list_pipelines(query),
            )
            .await?;
        Ok(ListPipelinesResponse {
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
            pipelines: listed.items.into_iter().map(|p| p.value).collect(),
        })
    }

    /// Deletes a pipeline; with versions only when `cascade` (then with all of them).
    pub async fn delete(&self, ctx: &Context, pipeline_id: &str, cascade: bool) -> Result<()> {
        let store = &self.core.store;
        let mut namespace = None;
        let result = until_not_outraced!(format!("pipeline {pipeline_id:?}"), async {
            let current = self.core.stored_pipeline(pipeline_id).await?;
            self.core
                .allow_on_pipeline(ctx, Verb::DeletePipeline, &current.value)?;
            namespace = Some(current.value.namespace.clone());
            let mut ops = Vec::new();
            if !cascade {
                if let Some(version) = store.latest_pipeline_version(pipeline_id).await? {
                    return Err(Error::FailedPrecondition(format!(
                        "pipeline {pipeline_id:?} has versions (e.g. {:?}); delete them \
                             first, or delete with cascade=true to delete them with it",
                        version.value.pipeline_version_id
                    )));
                }
                ops.push(Op::Expect(Expectation::NoPipelineVersions(
                    pipeline_id.to_owned(),
                )));
            }
            ops.push(Op::DeletePipeline {
                pipeline_id: pipeline_id.to_owned(),
                replaces: current.revision,
            });
            store.write(Write::new(ops)).await.map(drop)
        });
        audited_on(ctx, Verb::DeletePipeline, pipeline_id, namespace, result)
    }

    /// Replaces a pipeline's display_name (when given) and tags (when given, or when
    /// `clear_tags`: then with none).
    pub async fn update(
        &self,
        ctx: &Context,
        input: Pipeline,
        clear_tags: bool,
    ) -> Result<Pipeline> {
        let id = &input.pipeline_id;
        check_lookup_id("pipeline.pipeline_id", id)?;
        self.check_update("pipeline", &input.display_name, &input.tags)?;
        let store = &self.core.store;
        let mut namespace = None;
        let result = until_not_outraced!(format!("pipeline {id:?}"), async {
            let current = self.core.stored_pipeline(id).await?;
            self.core
                .allow_on_pipeline(ctx, Verb::UpdatePipeline, &current.value)?;
            namespace = Some(current.value.namespace.clone());
            let mut updated = current.value.clone();
            apply_update(
                (&mut updated.display_name, &mut updated.tags),
                (&input.display_name, &input.tags),
                clear_tags,
            );
            if updated == current.value {
                // Nothing to write; the state it confirms must be durable.
                store.settle().await?;
                return Ok(updated);
            }
            let write = Write::new(vec![Op::PutPipeline {
                pipeline: updated.clone(),
                replaces: Some(current.revision),
            }]);
            store.write(write).await.map(|_| updated)
        });
        audited_on(ctx, Verb::UpdatePipeline, id, namespace, result)
    }

    fn check_update(
        &self,
        what: &str,
        display_name: &str,
        tags: &HashMap<String, String>,
    ) -> Result<()> {
        check_text(
            &format!("{what}.display_name"),
            display_name,
            false,
            self.core.limits.max_name_bytes,
        )?;
        self.core.check_tags(&format!("{what}.tags"), tags)
    }

    pub async fn get_version(
        &self,
        ctx: &Context,
        pipeline_id: &str,
        version_id: &str,
    ) -> Result<PipelineVersion> {
        let (version, pipeline) = self.core.stored_version(pipeline_id, version_id).await?;
        self.core
            .allow_on_pipeline(ctx, Verb::GetPipelineVersion, &pipeline.value)
            .map_err(|e| match e {
                Error::NotFound(_) => version_not_found(version_id),
                other => other,
            })?;
        Ok(version.value)
    }

    /// The versions of a pipeline.
    pub async fn list_versions(
        &self,
        ctx: &Context,
        request: &ListPipelineVersionsRequest,
    ) -> Result<ListPipelineVersionsResponse> {
        let pipeline = self.core.stored_pipeline(&request.pipeline_id).await?.value;
        self.core
            .allow_on_pipeline(ctx, Verb::ListPipelineVersions, &pipeline)?;
        let store = &self.core.store;
        let listed = self
            .core
            .list_page::<PipelineVersion, _, _>(
                &ListRequest {
                    scope: Scope::Pipeline(request.pipeline_id.clone()),
                    page_size: request.page_size,
                    sort_by: &request.sort_by,
                    filter: &request.filter,
                    page_token: &request.page_token,
                },
                |query| store.list_pipeline_versions(query),
            )
            .await?;
        Ok(ListPipelineVersionsResponse {
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
            pipeline_versions: listed.items.into_iter().map(|v| v.value).collect(),
        })
    }

    pub async fn delete_version(
        &self,
        ctx: &Context,
        pipeline_id: &str,
        version_id: &str,
    ) -> Result<()> {
        let mut namespace = None;
        let result = until_not_outraced!(format!("pipeline version {version_id:?}"), async {
            let (version, pipeline) = self.core.stored_version(pipeline_id, version_id).await?;
            self.core
                .allow_on_pipeline(ctx, Verb::DeletePipelineVersion, &pipeline.value)?;
            namespace = Some(pipeline.value.namespace.clone());
            let write = Write::new(vec![Op::DeletePipelineVersion {
                pipeline_version_id: version_id.to_owned(),
                replaces: version.revision,
            }]);
            self.core.store.write(write).await.map(drop)
        });
        audited_on(
            ctx,
            Verb::DeletePipelineVersion,
            version_id,
            namespace,
            result,
        )
    }

    /// Replaces a version's display_name (when given) and tags (when given, or when
    /// `clear_tags`).
    pub async fn update_version(
        &self,
        ctx: &Context,
        input: PipelineVersion,
        clear_tags: bool,
    ) -> Result<PipelineVersion> {
        let id = &input.pipeline_version_id;
        check_lookup_id("pipeline_version.pipeline_version_id", id)?;
        check_lookup_id("pipeline_version.pipeline_id", &input.pipeline_id)?;
        self.check_update("pipeline_version", &input.display_name, &input.tags)?;
        let store = &self.core.store;
        let mut namespace = None;
        let result = until_not_outraced!(format!("pipeline version {id:?}"), async {
            let (current, pipeline) = self.core.stored_version(&input.pipeline_id, id).await?;
            self.core
                .allow_on_pipeline(ctx, Verb::UpdatePipelineVersion, &pipeline.value)?;
            namespace = Some(pipeline.value.namespace.clone());
            let mut updated = current.value.clone();
            apply_update(
                (&mut updated.display_name, &mut updated.tags),
                (&input.display_name, &input.tags),
                clear_tags,
            );
            if updated == current.value {
                // Nothing to write; the state it confirms must be durable.
                store.settle().await?;
                return Ok(updated);
            }
            let write = Write::new(vec![Op::PutPipelineVersion {
                version: Box::new(updated.clone()),
                replaces: Some(current.revision),
            }]);
            store.write(write).await.map(|_| updated)
        });
        audited_on(ctx, Verb::UpdatePipelineVersion, id, namespace, result)
    }
}
