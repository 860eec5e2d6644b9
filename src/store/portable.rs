//! `runledger export` / `runledger import`: any store as JSON Lines and back, through the
//! [`Store`] interface, so data moves between backends in both directions and a dump is a
//! portable backup.
//!
//! One JSON object per line, in this order:
//!
//! ```text
//! {"format":"runledger-export","version":1,"exported_at":"2026-05-01T12:00:00Z","source":"..."}
//! {"experiment":{...},"default":true}            every experiment, oldest first; "default":
//!                                                 it is its namespace's default experiment
//! {"spec":{"sha256":"…","protobuf":"…"}}          each distinct pipeline spec once, before the
//!                                                 first record that uses it (protobuf: base64
//!                                                 of the google.protobuf.Struct, exactly as
//!                                                 stored)
//! {"pipeline":{...}}                              every pipeline, by namespace, oldest first
//! {"pipeline_version":{...},"pipeline_spec_sha256":"…"}  every version, after its pipeline,
//!                                                 without its spec
//! {"run":{...},"pipeline_spec_sha256":"…"}       every run, oldest first, without its spec
//! {"recurring_run":{...},"schedule":{...},"pipeline_spec_sha256":"…"}  every recurring run,
//!                                                 oldest first, with where its schedule is
//! {"end":{"experiments":N,"specs":S,"runs":R,"pipelines":P,"pipeline_versions":V,"recurring_runs":J}}
//!                                                 the totals: a file without it is truncated
//! ```
//!
//! Records are proto3 JSON (snake_case, as the JSON API writes them), every field kept: ids,
//! timestamps, state history, a recurring run's schedule (the last scheduled time, how many
//! runs it created, its unfinished runs), so that after an import its scheduler neither
//! repeats nor skips a scheduled time. Specs are kept as their exact bytes (JSON would not keep
//! the order of their keys, and GetRun returns the bytes a run was created with). An export
//! written before pipelines existed (no pipeline lines or totals) still imports.
//!
//! Import needs an empty store; it writes in batches, each atomic, and stops at the first line
//! it cannot take, naming it. Export reads the store page by page: stop writers first for a
//! snapshot of one instant.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{
    Expectation, Op, RecurringRunRecord, ScheduleState, SpecBlob, Store, Write as StoreWrite,
    split_spec,
};
use crate::api::{Experiment, Pipeline, PipelineVersion, RecurringRun, Run, recurring_run, run};
use crate::error::{Error, Result};
use crate::query::filter::Filter;
use crate::query::sort::Sort;
use crate::query::{ListQuery, Scope};
use crate::wkt::{StructBytes, Timestamp};

const FORMAT: &str = "runledger-export";
const VERSION: u32 = 1;
/// Records read per page on export, and written per batch on import.
const BATCH: usize = 200;

/// How many records of each kind an export wrote or an import read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Totals {
    pub experiments: u64,
    pub specs: u64,
    pub runs: u64,
    pub pipelines: u64,
    pub pipeline_versions: u64,
    pub recurring_runs: u64,
}

impl Totals {
    fn records(&self) -> u64 {
        self.experiments + self.runs + self.pipelines + self.pipeline_versions + self.recurring_runs
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} experiments, {} pipeline specs, {} runs, {} pipelines, {} pipeline versions, {} \
             recurring runs",
            self.experiments,
            self.specs,
            self.runs,
            self.pipelines,
            self.pipeline_versions,
            self.recurring_runs
        )
    }
}

/// One line of the file: exactly one of its groups is set.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exported_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    experiment: Option<Experiment>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<SpecLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pipeline: Option<Pipeline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pipeline_version: Option<PipelineVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recurring_run: Option<RecurringRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pipeline_spec_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<Totals>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecLine {
    sha256: String,
    protobuf: String,
}

/// A recurring run's [`ScheduleState`].
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScheduleLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    last_scheduled_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "is_zero")]
    runs_created: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unfinished_runs: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl From<ScheduleState> for ScheduleLine {
    fn from(s: ScheduleState) -> Self {
        ScheduleLine {
            last_scheduled_at: s.last_scheduled_at,
            runs_created: s.runs_created,
            unfinished_runs: s.unfinished_runs,
        }
    }
}

impl From<ScheduleLine> for ScheduleState {
    fn from(s: ScheduleLine) -> Self {
        ScheduleState {
            last_scheduled_at: s.last_scheduled_at,
            runs_created: s.runs_created,
            unfinished_runs: s.unfinished_runs,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_line(out: &mut impl Write, line: &Line) -> Result<()> {
    let mut text = serde_json::to_string(line)
        .map_err(|e| Error::internal(format!("cannot encode an export line: {e}")))?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .map_err(|e| Error::Unavailable(format!("cannot write the export: {e}")))
}

fn first_page(scope: Scope) -> ListQuery {
    ListQuery {
        scope,
        sort: Sort::default(),
        filter: Filter::default(),
        after: None,
        page_size: BATCH,
    }
}

/// The pages of one listing: the query of each next page, until the last.
struct Pages(Option<ListQuery>);

impl Pages {
    fn of(scope: Scope) -> Pages {
        Pages(Some(first_page(scope)))
    }

    /// The next page's query (None: the last was read).
    fn next(&mut self) -> Option<ListQuery> {
        self.0.clone()
    }

    /// Where the page just read says the next starts.
    fn after(&mut self, next: Option<crate::query::Position>) {
        self.0 = match (self.0.take(), next) {
            (Some(query), Some(after)) => Some(ListQuery {
                after: Some(after),
                ..query
            }),
            _ => None,
        };
    }
}

/// Writes each distinct spec once, before the first record that uses it.
struct SpecLines {
    written: std::collections::HashSet<[u8; 32]>,
}

impl SpecLines {
    /// Writes `spec`'s line unless it was written; returns its digest for the record's line.
    fn write(
        &mut self,
        out: &mut impl Write,
        totals: &mut Totals,
        spec: Option<SpecBlob>,
    ) -> Result<Option<String>> {
        let Some(spec) = spec else {
            return Ok(None);
        };
        if self.written.insert(spec.digest) {
            write_line(
                out,
                &Line {
                    spec: Some(SpecLine {
                        sha256: hex(&spec.digest),
                        protobuf: STANDARD.encode(&spec.bytes),
                    }),
                    ..Line::default()
                },
            )?;
            totals.specs += 1;
        }
        Ok(Some(hex(&spec.digest)))
    }
}

fn blob(spec: Option<StructBytes>) -> Option<SpecBlob> {
    spec.map(|spec| SpecBlob::of(spec.protobuf().clone()))
}

/// Writes every record of `store` to `out`; `progress` hears the records written so far.
pub async fn export(
    store: &Arc<dyn Store>,
    source: &str,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<Totals> {
    let mut totals = Totals::default();
    write_line(
        out,
        &Line {
            format: Some(FORMAT.to_owned()),
            version: Some(VERSION),
            exported_at: Some(Timestamp::now()),
            source: Some(source.to_owned()),
            ..Line::default()
        },
    )?;
    let mut defaults = BTreeMap::new();
    let mut pages = Pages::of(Scope::All);
    while let Some(query) = pages.next() {
        let page = store.list_experiments(query).await?;
        pages.after(page.next);
        for stored in &page.items {
            let e = &stored.value;
            let default = match defaults.get(&e.namespace) {
                Some(id) => id,
                None => defaults
                    .entry(e.namespace.clone())
                    .or_insert(store.default_experiment(&e.namespace).await?),
            };
            write_line(
                out,
                &Line {
                    default: default.as_deref() == Some(e.experiment_id.as_str()),
                    experiment: Some(e.clone()),
                    ..Line::default()
                },
            )?;
            totals.experiments += 1;
        }
        progress(totals.records());
    }
    let mut specs = SpecLines {
        written: Default::default(),
    };
    for namespace in store.pipeline_namespaces().await? {
        let mut pages = Pages::of(Scope::Namespace(namespace));
        while let Some(query) = pages.next() {
            let page = store.list_pipelines(query).await?;
            pages.after(page.next);
            for pipeline in page.items {
                let pipeline_id = pipeline.value.pipeline_id.clone();
                write_line(
                    out,
                    &Line {
                        pipeline: Some(pipeline.value),
                        ..Line::default()
                    },
                )?;
                totals.pipelines += 1;
                let mut versions = Pages::of(Scope::Pipeline(pipeline_id));
                while let Some(query) = versions.next() {
                    let page = store.list_pipeline_versions(query).await?;
                    versions.after(page.next);
                    for mut version in page.items.into_iter().map(|v| v.value) {
                        let digest =
                            specs.write(out, &mut totals, blob(version.pipeline_spec.take()))?;
                        write_line(
                            out,
                            &Line {
                                pipeline_version: Some(version),
                                pipeline_spec_sha256: digest,
                                ..Line::default()
                            },
                        )?;
                        totals.pipeline_versions += 1;
                    }
                }
            }
            progress(totals.records());
        }
    }
    let mut pages = Pages::of(Scope::All);
    while let Some(query) = pages.next() {
        let page = store.list_runs(query).await?;
        pages.after(page.next);
        for stored in &page.items {
            let run = stored.decode();
            let (_, spec) = split_spec(&run);
            let digest = specs.write(out, &mut totals, spec)?;
            let without_spec = match run.pipeline_source {
                Some(run::PipelineSource::PipelineSpec(_)) => Run {
                    pipeline_source: None,
                    ..run
                },
                _ => run,
            };
            write_line(
                out,
                &Line {
                    run: Some(without_spec),
                    pipeline_spec_sha256: digest,
                    ..Line::default()
                },
            )?;
            totals.runs += 1;
        }
        progress(totals.records());
    }
    let mut pages = Pages::of(Scope::All);
    while let Some(query) = pages.next() {
        let page = store.list_recurring_runs(query).await?;
        pages.after(page.next);
        for stored in page.items {
            let RecurringRunRecord {
                mut recurring_run,
                schedule,
            } = stored.value;
            let spec = match recurring_run.pipeline_source.take() {
                Some(recurring_run::PipelineSource::PipelineSpec(spec)) => Some(spec),
                other => {
                    recurring_run.pipeline_source = other;
                    None
                }
            };
            let digest = specs.write(out, &mut totals, blob(spec))?;
            write_line(
                out,
                &Line {
                    recurring_run: Some(recurring_run),
                    schedule: Some(schedule.into()),
                    pipeline_spec_sha256: digest,
                    ..Line::default()
                },
            )?;
            totals.recurring_runs += 1;
        }
        progress(totals.records());
    }
    write_line(
        out,
        &Line {
            end: Some(totals),
            ..Line::default()
        },
    )?;
    out.flush()
        .map_err(|e| Error::Unavailable(format!("cannot write the export: {e}")))?;
    Ok(totals)
}

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
