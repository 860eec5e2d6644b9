//! Between records and rows: the hot columns a record is stored with (taken from the same
//! [`Record::field`] values lists compare, so SQL and the in-memory filter agree by
//! construction), and records read back from rows.

use bytes::Bytes;
use prost::Message;
use tokio_postgres::Row;

use crate::api::{Experiment, Run};
use crate::error::{Error, Result};
use crate::query::{
    Field, FieldValue, RUNTIME_STATE_NAMES, Record, STORAGE_STATE_NAMES, SortValue,
};
use crate::store::{Revision, SpecBlob, Stored, StoredRun, split_spec};
use crate::wkt::Timestamp;

/// How an unset timestamp is stored: earlier than every valid one (year 1 is -62135596800 s).
pub const UNSET_SECONDS: i64 = i64::MIN;

/// A timestamp as its two columns.
pub fn time(ts: Option<Timestamp>) -> (i64, i32) {
    match ts {
        Some(t) => (t.seconds, t.nanos),
        None => (UNSET_SECONDS, 0),
    }
}

/// Two columns as a timestamp.
pub fn timestamp(seconds: i64, nanos: i32) -> Option<Timestamp> {
    (seconds != UNSET_SECONDS).then_some(Timestamp { seconds, nanos })
}

/// A text field's column value: the bytes of what lists compare.
pub fn text<R: Record>(record: &R, field: Field) -> Vec<u8> {
    match record.field(field) {
        FieldValue::Text(t) => t.into_owned().into_bytes(),
        FieldValue::Time(_) => Vec::new(),
    }
}

/// A time field's two column values.
pub fn time_of<R: Record>(record: &R, field: Field) -> (i64, i32) {
    match record.field(field) {
        FieldValue::Time(t) => time(t),
        FieldValue::Text(_) => time(None),
    }
}

/// A revision as stored (a number from the `revisions` sequence).
pub fn revision(number: i64) -> Revision {
    Revision::new(Bytes::copy_from_slice(&number.to_be_bytes()))
}

/// The number inside a revision this backend handed out; None for anything else (which then
/// matches no stored record).
pub fn revision_number(revision: &Revision) -> Option<i64> {
    revision.as_bytes().try_into().ok().map(i64::from_be_bytes)
}

/// An enum value's number from the name stored in a column (names this build does not know
/// are stored as their number).
pub fn enum_number(names: &[&str], stored: &[u8]) -> i32 {
    let name = String::from_utf8_lossy(stored);
    names
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i32)
        .or_else(|| name.parse().ok())
        .unwrap_or(0)
}

pub fn state_number(stored: &[u8]) -> i32 {
    enum_number(RUNTIME_STATE_NAMES, stored)
}

pub fn storage_number(stored: &[u8]) -> i32 {
    enum_number(STORAGE_STATE_NAMES, stored)
}

/// A run as its columns (in [`RUN_COLUMNS`] order, without the revision).
pub struct RunRow {
    pub run_id: Vec<u8>,
    pub experiment_id: Vec<u8>,
    pub namespace: Vec<u8>,
    pub display_name: Vec<u8>,
    pub description: Vec<u8>,
    pub pipeline_id: Vec<u8>,
    pub pipeline_version_id: Vec<u8>,
    pub service_account: Vec<u8>,
    pub recurring_run_id: Vec<u8>,
    pub created: (i64, i32),
    pub scheduled: (i64, i32),
    pub finished: (i64, i32),
    pub state: Vec<u8>,
    pub storage_state: Vec<u8>,
    /// The run without its pipeline spec.
    pub record: Vec<u8>,
    pub spec: Option<SpecBlob>,
    /// The spec's digest, as its column takes it.
    spec_digest: Option<Vec<u8>>,
}

/// The columns an INSERT of a [`RunRow`] names, in its parameters' order ($1..$19).
pub const RUN_COLUMNS: &str = "run_id, experiment_id, namespace, display_name, description, \
     pipeline_id, service_account, recurring_run_id, created_s, created_ns, scheduled_s, \
     scheduled_ns, finished_s, finished_ns, state, storage_state, record, spec_digest, \
     pipeline_version_id";

impl RunRow {
    pub fn of(run: &Run) -> RunRow {
        let (record, spec) = split_spec(run);
        RunRow {
            run_id: text(run, Field::Id),
            experiment_id: text(run, Field::ExperimentId),
            namespace: text(run, Field::Namespace),
            display_name: text(run, Field::DisplayName),
            description: text(run, Field::Description),
            pipeline_id: text(run, Field::PipelineId),
            pipeline_version_id: text(run, Field::PipelineVersionId),
            service_account: text(run, Field::ServiceAccount),
            recurring_run_id: text(run, Field::RecurringRunId),
            created: time_of(run, Field::CreatedAt),
            scheduled: time_of(run, Field::ScheduledAt),
            finished: time_of(run, Field::FinishedAt),
            state: text(run, Field::State),
            storage_state: text(run, Field::StorageState),
            record,
            spec_digest: spec.as_ref().map(|s| s.digest.to_vec()),
            spec,
        }
    }

    pub fn digest(&self) -> Option<&[u8]> {
        self.spec_digest.as_deref()
    }

    /// The parameters $1..$19 of [`RUN_COLUMNS`].
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 19] {
        [
            &self.run_id,
            &self.experiment_id,
            &self.namespace,
            &self.display_name,
            &self.description,
            &self.pipeline_id,
            &self.service_account,
            &self.recurring_run_id,
            &self.created.0,
            &self.created.1,
            &self.scheduled.0,
            &self.scheduled.1,
            &self.finished.0,
            &self.finished.1,
            &self.state,
            &self.storage_state,
            &self.record,
            &self.spec_digest,
            &self.pipeline_version_id,
        ]
    }

    /// The stored run this row reads back as, at `revision`.
    pub fn stored(&self, run_id: &str, revision: i64) -> StoredRun {
        StoredRun::new(
            run_id.to_owned(),
            self::revision(revision),
            Bytes::from(self.record.clone()),
            self.spec.as_ref().map(|s| s.bytes.clone()),
        )
    }
}

/// A stored run from its parts: `record` (without the spec), and the spec's bytes when it has
/// one (`digest` set). A spec that should be there and is not makes the run read as damaged.
pub fn stored_run(
    run_id: String,
    revision: i64,
    record: Vec<u8>,
    digest: Option<&[u8]>,
    spec: Option<Vec<u8>>,
) -> StoredRun {
    let revision = self::revision(revision);
    match (digest, spec) {
        (Some(digest), None) => {
            let damaged = crate::store::record::damaged_run(
                &run_id,
                format!("its pipeline spec (SHA-256 {}) is missing", hex(digest)),
            );
            StoredRun::new(run_id, revision, damaged.encode_to_vec().into(), None)
        }
        (_, spec) => StoredRun::new(run_id, revision, record.into(), spec.map(Bytes::from)),
    }
}

/// The columns a run row `r` is read with, for [`run_from_row`]. The spec's bytes come from a
/// subquery rather than a join: a listing's plan is then the scope's index scan alone (a join
/// made the planner trade it for a sort when its statistics were stale), and only the rows
/// returned look their spec up.
pub const RUN_READ_COLUMNS: &str = "r.run_id, r.revision, r.record, r.spec_digest, \
     (SELECT s.bytes FROM specs s WHERE s.digest = r.spec_digest)";

pub fn run_from_row(row: &Row) -> Result<StoredRun> {
    let run_id: Vec<u8> = row.get(0);
    let digest: Option<Vec<u8>> = row.get(3);
    Ok(stored_run(
        utf8(run_id, "run_id")?,
        row.get(1),
        row.get(2),
        digest.as_deref(),
        row.get(4),
    ))
}

/// An experiment as its columns.
pub struct ExperimentRow {
    pub experiment_id: Vec<u8>,
    pub namespace: Vec<u8>,
    pub display_name: Vec<u8>,
    pub description: Vec<u8>,
    pub created: (i64, i32),
    pub storage_state: Vec<u8>,
    pub last_run: (i64, i32),
    pub record: Vec<u8>,
}

/// The columns an INSERT of an [`ExperimentRow`] names ($1..$10).
pub const EXPERIMENT_COLUMNS: &str = "experiment_id, namespace, display_name, description, \
     created_s, created_ns, storage_state, last_run_s, last_run_ns, record";

impl ExperimentRow {
    pub fn of(e: &Experiment) -> ExperimentRow {
        ExperimentRow {
            experiment_id: text(e, Field::Id),
            namespace: text(e, Field::Namespace),
            display_name: text(e, Field::DisplayName),
            description: text(e, Field::Description),
            created: time_of(e, Field::CreatedAt),
            storage_state: text(e, Field::StorageState),
            last_run: time_of(e, Field::LastRunCreatedAt),
            record: e.encode_to_vec(),
        }
    }

    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.experiment_id,
            &self.namespace,
            &self.display_name,
            &self.description,
            &self.created.0,
            &self.created.1,
            &self.storage_state,
            &self.last_run.0,
            &self.last_run.1,
            &self.record,
        ]
    }
}

/// The columns an experiment is read with, for [`experiment_from_row`].
pub const EXPERIMENT_READ_COLUMNS: &str =
    "experiment_id, revision, record, last_run_s, last_run_ns";

/// An experiment from its row; last_run_created_at comes from its column (the backend raises
/// it without rewriting the record).
pub fn experiment_from_row(row: &Row) -> Result<Stored<Experiment>> {
    let id = utf8(row.get(0), "experiment_id")?;
    let record: &[u8] = row.get(2);
    let mut value = Experiment::decode(record).map_err(|e| {
        Error::DataLoss(format!(
            "the stored record of experiment {id:?} cannot be read: {e}"
        ))
    })?;
    value.last_run_created_at = timestamp(row.get(3), row.get(4));
    Ok(Stored {
        value,
        revision: revision(row.get(1)),
    })
}

/// A sort value from the columns a listing selected for it (text: one bytea; time: seconds
/// and nanos).
pub fn sort_value(row: &Row, first: usize, is_time: bool) -> Result<SortValue> {
    if is_time {
        Ok(SortValue::time(timestamp(
            row.get(first),
            row.get(first + 1),
        )))
    } else {
        Ok(SortValue::Text(utf8(row.get(first), "sort column")?))
    }
}

pub fn utf8(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|_| Error::DataLoss(format!("a stored {what} is not valid UTF-8")))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_times_sort_before_every_valid_time() {
        let earliest = Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        assert!(time(None) < time(Some(earliest)));
        assert_eq!(timestamp(time(None).0, time(None).1), None);
        assert_eq!(
            timestamp(5, 7),
            Some(Timestamp {
                seconds: 5,
                nanos: 7
            })
        );
    }

    #[test]
    fn enum_numbers_come_back_from_names_and_unknown_numbers() {
        assert_eq!(state_number(b"RUNNING"), 2);
        assert_eq!(storage_number(b"ARCHIVED"), 2);
        assert_eq!(state_number(b"42"), 42);
    }

    #[test]
    fn revisions_round_trip_and_foreign_ones_match_nothing() {
        assert_eq!(revision_number(&revision(77)), Some(77));
        assert_eq!(
            revision_number(&Revision::new(Bytes::from_static(b"x"))),
            None
        );
    }
}
