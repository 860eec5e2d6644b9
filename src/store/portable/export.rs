//! Writing an export (see the format in the module above).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{FORMAT, Line, SpecLine, Totals, VERSION, first_page, hex, write_line};
use crate::api::{Run, recurring_run, run};
use crate::error::{Error, Result};
use crate::query::{ListQuery, Scope};
use crate::store::{RecurringRunRecord, SpecBlob, Store, split_spec};
use crate::wkt::{StructBytes, Timestamp};

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
