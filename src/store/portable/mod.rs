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

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::ScheduleState;
use crate::api::{Experiment, Pipeline, PipelineVersion, RecurringRun, Run};
use crate::error::{Error, Result};
use crate::query::filter::Filter;
use crate::query::sort::Sort;
use crate::query::{ListQuery, Scope};
use crate::wkt::Timestamp;

mod export;
mod import;

pub use export::export;
pub use import::import;

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
