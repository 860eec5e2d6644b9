//! What every backend keeps the same way about pipelines, pipeline versions and recurring runs
//! (the catalog): how a record that cannot be read is handed out (its id and an `error` saying
//! why, as runs are), the pipeline spec a record holds (backends store it apart, once per
//! distinct spec, as runs' specs are), and its tags.

use crate::api::{Pipeline, PipelineVersion, RecurringRun, recurring_run};
use crate::proto::google::rpc::Status;
use crate::query::Record;
use crate::store::RecurringRunRecord;
use crate::wkt::StructBytes;

/// A record kind of the catalog.
pub trait CatalogRecord: prost::Message + Default + Clone + Record + Send + Sync + 'static {
    /// A record whose stored bytes cannot be read: its id and an error saying why.
    fn damaged(id: &str, error: Status) -> Self;

    /// Takes out the pipeline spec the record holds. Kinds without a spec keep the default.
    fn take_spec(&mut self) -> Option<StructBytes> {
        None
    }

    /// Puts back the spec [`CatalogRecord::take_spec`] took out.
    fn set_spec(&mut self, _spec: StructBytes) {}

    /// Says in the record why it is incomplete (its spec is lost).
    fn set_error(&mut self, error: Status);

    /// Its tags (none: it has no tags).
    fn tags(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
}

/// A data-loss status saying what cannot be read about `T` `id`.
pub fn data_loss<T: CatalogRecord>(id: &str, why: impl std::fmt::Display) -> Status {
    Status {
        code: tonic::Code::DataLoss as i32,
        message: format!(
            "the stored record of {} {id:?} cannot be read: {why}",
            T::KIND
        ),
        details: Vec::new(),
    }
}

fn pairs(tags: &std::collections::HashMap<String, String>) -> Vec<(&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl CatalogRecord for Pipeline {
    fn damaged(id: &str, error: Status) -> Self {
        Pipeline {
            pipeline_id: id.to_owned(),
            error: Some(error),
            ..Default::default()
        }
    }

    fn set_error(&mut self, error: Status) {
        self.error = Some(error);
    }

    fn tags(&self) -> Vec<(&str, &str)> {
        pairs(&self.tags)
    }
}

impl CatalogRecord for PipelineVersion {
    fn damaged(id: &str, error: Status) -> Self {
        PipelineVersion {
            pipeline_version_id: id.to_owned(),
            error: Some(error),
            ..Default::default()
        }
    }

    fn take_spec(&mut self) -> Option<StructBytes> {
        self.pipeline_spec.take()
    }

    fn set_spec(&mut self, spec: StructBytes) {
        self.pipeline_spec = Some(spec);
    }

    fn set_error(&mut self, error: Status) {
        self.error = Some(error);
    }

    fn tags(&self) -> Vec<(&str, &str)> {
        pairs(&self.tags)
    }
}

impl CatalogRecord for RecurringRunRecord {
    fn damaged(id: &str, error: Status) -> Self {
        RecurringRunRecord {
            recurring_run: RecurringRun {
                recurring_run_id: id.to_owned(),
                error: Some(error),
                ..Default::default()
            },
            schedule: Default::default(),
        }
    }

    fn take_spec(&mut self) -> Option<StructBytes> {
        match self.recurring_run.pipeline_source.take() {
            Some(recurring_run::PipelineSource::PipelineSpec(spec)) => Some(spec),
            other => {
                self.recurring_run.pipeline_source = other;
                None
            }
        }
    }

    fn set_spec(&mut self, spec: StructBytes) {
        self.recurring_run.pipeline_source =
            Some(recurring_run::PipelineSource::PipelineSpec(spec));
    }

    fn set_error(&mut self, error: Status) {
        self.recurring_run.error = Some(error);
    }
}
