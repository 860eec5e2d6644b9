//! Reading an export into an empty store (see the format in the module above).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{BATCH, FORMAT, Line, Totals, VERSION, first_page, hex};
use crate::api::{recurring_run, run};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Scope};
use crate::store::{Expectation, Op, RecurringRunRecord, SpecBlob, Store, Write as StoreWrite};
use crate::wkt::StructBytes;

/// Reads an export from `input` into `store`, which must be empty; `progress` hears the
/// records written so far.
pub async fn import(
    store: &Arc<dyn Store>,
    input: impl BufRead,
    mut progress: impl FnMut(u64),
) -> Result<Totals> {
    ensure_empty(store).await?;
    let mut totals = Totals::default();
    let mut specs: BTreeMap<String, bytes::Bytes> = BTreeMap::new();
    let mut batch = Batch::default();
    let mut header = false;
    let mut end = None;
    for (index, text) in input.lines().enumerate() {
        let number = index + 1;
        let at = |msg: String| Error::invalid(format!("line {number}: {msg}"));
        let text = text.map_err(|e| Error::invalid(format!("line {number}: cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(at("more after the \"end\" line".to_owned()));
        }
        let line: Line = serde_json::from_str(&text).map_err(|e| at(e.to_string()))?;
        if !header {
            if line.format.as_deref() != Some(FORMAT) {
                return Err(at(format!(
                    "not a runledger export (the first line must have \"format\": \"{FORMAT}\")"
                )));
            }
            if line.version != Some(VERSION) {
                return Err(at(format!(
                    "export version {:?}; this runledger reads version {VERSION}",
                    line.version
                )));
            }
            header = true;
            continue;
        }
        match line {
            Line {
                experiment: Some(e),
                default,
                ..
            } => {
                if e.experiment_id.is_empty() || e.display_name.is_empty() {
                    return Err(at(
                        "an experiment needs experiment_id and display_name".into()
                    ));
                }
                let set_default = default.then(|| Op::SetDefaultExperiment {
                    namespace: e.namespace.clone(),
                    experiment_id: e.experiment_id.clone(),
                });
                batch.ops.push(Op::PutExperiment {
                    experiment: e,
                    replaces: None,
                });
                batch.ops.extend(set_default);
                batch.first_line.get_or_insert(number);
                totals.experiments += 1;
            }
            Line {
                spec: Some(spec), ..
            } => {
                let bytes = STANDARD
                    .decode(&spec.protobuf)
                    .map_err(|e| at(format!("spec.protobuf is not base64: {e}")))?;
                let blob = SpecBlob::of(bytes.into());
                if hex(&blob.digest) != spec.sha256 {
                    return Err(at(format!(
                        "spec {}: its bytes have SHA-256 {}",
                        spec.sha256,
                        hex(&blob.digest)
                    )));
                }
                StructBytes::from_protobuf(blob.bytes.clone())
                    .validate()
                    .map_err(|e| at(format!("spec {} is not a valid Struct: {e}", spec.sha256)))?;
                specs.insert(spec.sha256, blob.bytes);
                totals.specs += 1;
            }
            Line {
                run: Some(mut run),
                pipeline_spec_sha256,
                ..
            } => {
                if run.run_id.is_empty() || run.experiment_id.is_empty() {
                    return Err(at("a run needs run_id and experiment_id".into()));
                }
                if let Some(spec) =
                    spec_of(&specs, pipeline_spec_sha256, "run", &run.run_id).map_err(at)?
                {
                    run.pipeline_source = Some(run::PipelineSource::PipelineSpec(spec));
                }
                batch.ops.push(Op::PutRun {
                    run: Box::new(run),
                    replaces: None,
                });
                batch.first_line.get_or_insert(number);
                totals.runs += 1;
            }
            Line {
                pipeline: Some(pipeline),
                ..
            } => {
                if pipeline.pipeline_id.is_empty() || pipeline.name.is_empty() {
                    return Err(at("a pipeline needs pipeline_id and name".into()));
                }
                batch.ops.push(Op::PutPipeline {
                    pipeline,
                    replaces: None,
                });
                batch.first_line.get_or_insert(number);
                totals.pipelines += 1;
            }
            Line {
                pipeline_version: Some(mut version),
                pipeline_spec_sha256,
                ..
            } => {
                if version.pipeline_version_id.is_empty() || version.pipeline_id.is_empty() {
                    return Err(at(
                        "a pipeline version needs pipeline_version_id and pipeline_id".into(),
                    ));
                }
                version.pipeline_spec = spec_of(
                    &specs,
                    pipeline_spec_sha256,
                    "pipeline version",
                    &version.pipeline_version_id,
                )
                .map_err(at)?;
                batch.ops.extend([
                    Op::Expect(Expectation::PipelineExists(version.pipeline_id.clone())),
                    Op::PutPipelineVersion {
                        version: Box::new(version),
                        replaces: None,
                    },
                ]);
                batch.first_line.get_or_insert(number);
                totals.pipeline_versions += 1;
            }
            Line {
                recurring_run: Some(mut recurring_run),
                schedule,
                pipeline_spec_sha256,
                ..
            } => {
                if recurring_run.recurring_run_id.is_empty()
                    || recurring_run.experiment_id.is_empty()
                {
                    return Err(at(
                        "a recurring run needs recurring_run_id and experiment_id".into(),
                    ));
                }
                if let Some(spec) = spec_of(
                    &specs,
                    pipeline_spec_sha256,
                    "recurring run",
                    &recurring_run.recurring_run_id,
                )
                .map_err(at)?
                {
                    recurring_run.pipeline_source =
                        Some(recurring_run::PipelineSource::PipelineSpec(spec));
                }
                batch.ops.extend([
                    Op::Expect(Expectation::ExperimentExists(
                        recurring_run.experiment_id.clone(),
                    )),
                    Op::PutRecurringRun {
                        record: Box::new(RecurringRunRecord {
                            recurring_run,
                            schedule: schedule.unwrap_or_default().into(),
                        }),
                        replaces: None,
                    },
                ]);
                batch.first_line.get_or_insert(number);
                totals.recurring_runs += 1;
            }
            Line { end: Some(t), .. } => end = Some((number, t)),
            _ => {
                return Err(at(
                    "not an experiment, spec, pipeline, pipeline version, run, recurring run or \
                     end line"
                        .into(),
                ));
            }
        }
        if batch.ops.len() >= BATCH {
            batch.write(store, number).await?;
            progress(totals.records());
        }
    }
    if !header {
        return Err(Error::invalid("the input is empty: not a runledger export"));
    }
    let Some((number, expected)) = end else {
        batch.write(store, usize::MAX).await?;
        return Err(Error::invalid(format!(
            "the input ends without its \"end\" line: it is truncated; {totals} were imported \
             (start again into an empty store)"
        )));
    };
    batch.write(store, number).await?;
    progress(totals.records());
    if expected != totals {
        return Err(Error::invalid(format!(
            "line {number}: the export says it holds {expected}, but {totals} were read"
        )));
    }
    Ok(totals)
}

/// The spec a record's line names by its digest (None: it names none), from the spec lines
/// read before it.
fn spec_of(
    specs: &BTreeMap<String, bytes::Bytes>,
    digest: Option<String>,
    kind: &str,
    id: &str,
) -> std::result::Result<Option<StructBytes>, String> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    match specs.get(&digest) {
        Some(bytes) => Ok(Some(StructBytes::from_protobuf(bytes.clone()))),
        None => Err(format!(
            "{kind} {id:?} uses spec {digest}, which no line before it holds"
        )),
    }
}

/// Ops not written yet, and the line they start at.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    first_line: Option<usize>,
}

impl Batch {
    async fn write(&mut self, store: &Arc<dyn Store>, last_line: usize) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let first = self.first_line.take().unwrap_or(0);
        let ops = std::mem::take(&mut self.ops);
        store
            .write(StoreWrite::new(ops))
            .await
            .map(drop)
            .map_err(|e| {
                let lines = if last_line == usize::MAX {
                    format!("lines {first} to the end")
                } else {
                    format!("lines {first} to {last_line}")
                };
                match e {
                    Error::Conflict(m) => Error::invalid(format!(
                        "{lines} cannot be imported (none of them was): {m}; a run's or recurring \
                     run's experiment and a version's pipeline must come before it, and ids \
                     must be unique"
                    )),
                    other => other,
                }
            })
    }
}

async fn ensure_empty(store: &Arc<dyn Store>) -> Result<()> {
    let runs = store.run_tally(&Scope::All).await?.total();
    let experiments = store
        .list_experiments(ListQuery {
            page_size: 1,
            ..first_page(Scope::All)
        })
        .await?
        .total_size;
    let pipelines = !store.pipeline_namespaces().await?.is_empty();
    let recurring_runs = store
        .list_recurring_runs(ListQuery {
            page_size: 1,
            ..first_page(Scope::All)
        })
        .await?
        .total_size;
    if runs > 0 || experiments > 0 || pipelines || recurring_runs > 0 {
        return Err(Error::FailedPrecondition(format!(
            "import needs an empty store; this one holds {experiments} experiments, {runs} \
             runs, {recurring_runs} recurring runs{}",
            if pipelines { " and pipelines" } else { "" }
        )));
    }
    Ok(())
}
