//! A recurring run as backends keep it: the API record plus where its scheduler is, changed
//! together so that creating a scheduled run and advancing the schedule are one atomic write.

use crate::api::RecurringRun;
use crate::query::{Field, FieldValue, Record};
use crate::wkt::Timestamp;

/// A recurring run and its scheduler's state (a protobuf message, so a backend can store it as
/// one value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecurringRunRecord {
    #[prost(message, required, tag = "1")]
    pub recurring_run: RecurringRun,
    #[prost(message, required, tag = "2")]
    pub schedule: ScheduleState,
}

/// Where a recurring run's schedule is. Only the scheduler changes it, in the same write as
/// the run it creates.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ScheduleState {
    /// The scheduled time of the last run created (None: none yet).
    #[prost(message, optional, tag = "1")]
    pub last_scheduled_at: Option<Timestamp>,
    /// How many runs were created: the index in the next run's generated name is one more.
    #[prost(int64, tag = "2")]
    pub runs_created: i64,
    /// Runs created that had not finished when last looked at; max_concurrency counts them.
    #[prost(string, repeated, tag = "3")]
    pub unfinished_runs: Vec<String>,
}

impl RecurringRunRecord {
    pub fn id(&self) -> &str {
        &self.recurring_run.recurring_run_id
    }
}

/// A recurring run is filtered and sorted on its API record.
impl Record for RecurringRunRecord {
    const KIND: &'static str = RecurringRun::KIND;
    const FIELDS: &'static [(&'static str, Field)] = RecurringRun::FIELDS;

    fn id(&self) -> &str {
        self.recurring_run.id()
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.recurring_run.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        self.recurring_run.field(field)
    }
}
