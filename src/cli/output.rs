//! Printing results: aligned tables, or the REST API's proto3 JSON (or that as YAML).

use serde::Serialize;

use super::{CliError, Format};
use crate::api::*;
use crate::wkt::Timestamp;

pub struct Printer {
    format: Format,
}

impl Printer {
    pub fn new(format: Format) -> Self {
        Printer { format }
    }

    pub(super) fn format(&self) -> Format {
        self.format
    }

    pub(super) fn document<T: Serialize>(&self, message: &T) -> Result<(), CliError> {
        let json = crate::http::proto_json(message)
            .map_err(|e| CliError::usage(format!("cannot encode the reply: {e}")))?;
        match self.format {
            Format::Json | Format::Table => println!("{json}"),
            Format::Yaml => {
                let value: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| CliError::usage(format!("cannot encode the reply: {e}")))?;
                let yaml = serde_yaml_ng::to_string(&value)
                    .map_err(|e| CliError::usage(format!("cannot encode the reply: {e}")))?;
                print!("{yaml}");
            }
        }
        Ok(())
    }

    pub fn runs(&self, list: &ListRunsResponse) -> Result<(), CliError> {
        if self.format != Format::Table {
            return self.document(list);
        }
        let rows = list.runs.iter().map(run_row).collect();
        print_table(&RUN_HEADER, rows);
        if !list.next_page_token.is_empty() {
            eprintln!(
                "runledger: more runs: --page-token {} (or --all)",
                list.next_page_token
            );
        }
        Ok(())
    }

    pub fn run(&self, run: &Run) -> Result<(), CliError> {
        if self.format != Format::Table {
            return self.document(run);
        }
        print_table(&RUN_HEADER, vec![run_row(run)]);
        Ok(())
    }

    pub fn experiments(&self, list: &ListExperimentsResponse) -> Result<(), CliError> {
        if self.format != Format::Table {
            return self.document(list);
        }
        let rows = list.experiments.iter().map(experiment_row).collect();
        print_table(&EXPERIMENT_HEADER, rows);
        if !list.next_page_token.is_empty() {
            eprintln!(
                "runledger: more experiments: --page-token {} (or --all)",
                list.next_page_token
            );
        }
        Ok(())
    }

    pub fn experiment(&self, experiment: &Experiment) -> Result<(), CliError> {
        if self.format != Format::Table {
            return self.document(experiment);
        }
        print_table(&EXPERIMENT_HEADER, vec![experiment_row(experiment)]);
        Ok(())
    }

    /// One watch event: a table line `TYPE ID NAME STATE`, or one JSON object per line.
    pub fn event(&self, event: &RunEvent) -> Result<(), CliError> {
        use std::io::Write;
        let kind = run_event::Type::try_from(event.r#type)
            .map(|t| t.as_str_name())
            .unwrap_or("TYPE_UNSPECIFIED");
        match self.format {
            Format::Table => {
                let (id, name, state) = match &event.run {
                    Some(run) => (
                        run.run_id.as_str(),
                        run.display_name.as_str(),
                        state_name(run.state),
                    ),
                    None => ("", "", ""),
                };
                println!("{kind}\t{id}\t{name}\t{state}");
            }
            Format::Json => {
                let json = crate::http::proto_json(event)
                    .map_err(|e| CliError::usage(format!("cannot encode the event: {e}")))?;
                println!("{json}");
            }
            Format::Yaml => {
                println!("---");
                self.document(event)?;
            }
        }
        // Line by line even when stdout is a pipe.
        let _ = std::io::stdout().flush();
        Ok(())
    }

    /// The result of a call that returns nothing: a line in table form, `{}` otherwise.
    pub fn done(&self, what: &str, id: &str) -> Result<(), CliError> {
        match self.format {
            Format::Table => println!("{what} {id}"),
            Format::Json => println!("{{}}"),
            Format::Yaml => println!("{{}}"),
        }
        Ok(())
    }
}

const RUN_HEADER: [&str; 6] = ["ID", "NAME", "STATE", "EXPERIMENT", "CREATED", "DURATION"];
const EXPERIMENT_HEADER: [&str; 5] = ["ID", "NAME", "NAMESPACE", "STORAGE", "CREATED"];

fn state_name(state: i32) -> &'static str {
    RuntimeState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("RUNTIME_STATE_UNSPECIFIED")
}

fn time(t: &Option<Timestamp>) -> String {
    t.as_ref().map(|t| t.to_string()).unwrap_or_default()
}

/// Finished − created, or now − created while the run is not finished.
fn duration(created: &Option<Timestamp>, finished: &Option<Timestamp>) -> String {
    let Some(created) = created else {
        return String::new();
    };
    let end = (*finished).unwrap_or_else(Timestamp::now);
    let nanos = end.as_nanos() - created.as_nanos();
    if nanos < 0 {
        return String::new();
    }
    let secs = (nanos / 1_000_000_000) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn run_row(run: &Run) -> Vec<String> {
    vec![
        run.run_id.clone(),
        run.display_name.clone(),
        state_name(run.state).to_string(),
        run.experiment_id.clone(),
        time(&run.created_at),
        duration(&run.created_at, &run.finished_at),
    ]
}

fn experiment_row(experiment: &Experiment) -> Vec<String> {
    let storage = experiment::StorageState::try_from(experiment.storage_state)
        .map(|s| s.as_str_name())
        .unwrap_or("STORAGE_STATE_UNSPECIFIED");
    vec![
        experiment.experiment_id.clone(),
        experiment.display_name.clone(),
        experiment.namespace.clone(),
        storage.to_string(),
        time(&experiment.created_at),
    ]
}

/// Columns padded to their widest cell (by characters), two spaces apart.
fn format_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", format_table(header, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let text = format_table(
            &["ID", "NAME"],
            vec![
                vec!["a-long-id".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(text, "ID         NAME\na-long-id  x\nb          y\n");
    }

    #[test]
    fn durations() {
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        assert_eq!(duration(&at(10), &at(15)), "5s");
        assert_eq!(duration(&at(0), &at(125)), "2m05s");
        assert_eq!(duration(&at(0), &at(7300)), "2h01m");
        assert_eq!(duration(&None, &at(1)), "");
    }
}
