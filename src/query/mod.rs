//! ListRuns / ListExperiments queries, backend-neutral: which fields can be filtered and sorted,
//! how a record exposes them, filter and sort parsing and evaluation, page tokens, and the
//! [`ListQuery`] a backend answers. Pure: nothing here knows a store or a transport.

mod catalog;
pub mod filter;
pub mod list;
pub mod scope;
pub mod sort;
pub mod token;

pub use catalog::RECURRING_RUN_STATUS_NAMES;
pub use list::{DEFAULT_PAGE_SIZE, ListQuery, ListRequest, Page, Position, Tally, TallyGroup};
pub use scope::Scope;

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::api::{Experiment, Run, RuntimeState, experiment, run};
use crate::wkt::Timestamp;

/// Size limits on list requests (flags `--max-page-size`, `--max-filter-predicates`,
/// `--max-filter-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Largest page returned; larger page_size requests are cut to it.
    pub max_page_size: usize,
    /// Most predicates one filter may hold.
    pub max_predicates: usize,
    /// Longest filter string accepted, in bytes (bounds every string inside it too).
    pub max_filter_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_page_size: 200,
            max_predicates: 64,
            max_filter_bytes: 64 * 1024,
        }
    }
}

/// A field a list can be filtered and sorted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    Id,
    DisplayName,
    Description,
    CreatedAt,
    ScheduledAt,
    FinishedAt,
    State,
    StorageState,
    Namespace,
    ExperimentId,
    RecurringRunId,
    PipelineId,
    ServiceAccount,
    LastRunCreatedAt,
    /// A pipeline's or version's unique name (display_name is [`Field::DisplayName`]).
    Name,
    /// A recurring run's status (ENABLED, DISABLED).
    Status,
    UpdatedAt,
    PipelineVersionId,
    /// A tag of a pipeline or version (`tags.KEY` in filters; its key is in the predicate).
    Tag,
}

/// What kind of value a field holds, which decides the filter values it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// Text restricted to an enum's value names.
    EnumName(&'static [&'static str]),
    Time,
}

/// A field's value, as compared and sorted. An unset timestamp (`Time(None)`) is earlier than
/// every set one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SortValue {
    Text(String),
    Time(Option<(i64, i32)>),
}

impl SortValue {
    pub fn time(ts: Option<Timestamp>) -> SortValue {
        SortValue::Time(ts.map(|t| (t.seconds, t.nanos)))
    }
}

/// A borrowed field value, to evaluate filters without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Time(Option<Timestamp>),
}

impl FieldValue<'_> {
    pub fn to_sort_value(&self) -> SortValue {
        match self {
            FieldValue::Text(t) => SortValue::Text(t.to_string()),
            FieldValue::Time(t) => SortValue::time(*t),
        }
    }

    /// Compares with a sort value of the same kind (text with text, time with time).
    pub fn cmp_sort_value(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (FieldValue::Text(a), SortValue::Text(b)) => a.as_ref().cmp(b.as_str()),
            (FieldValue::Time(a), SortValue::Time(b)) => a.map(|t| (t.seconds, t.nanos)).cmp(b),
            (FieldValue::Text(_), SortValue::Time(_)) => Ordering::Greater,
            (FieldValue::Time(_), SortValue::Text(_)) => Ordering::Less,
        }
    }
}

/// A listable record: runs and experiments.
pub trait Record {
    /// The resource name used in messages ("run", "experiment").
    const KIND: &'static str;
    /// Field names accepted in `sort_by` and filter keys, with their field.
    const FIELDS: &'static [(&'static str, Field)];

    /// Whether filters may test its tags (`tags.KEY`).
    const TAGGED: bool = false;

    fn id(&self) -> &str;
    fn created_at(&self) -> Option<Timestamp>;
    fn field(&self, field: Field) -> FieldValue<'_>;

    /// The value of its tag `key`, if it has tags and that one.
    fn tag(&self, _key: &str) -> Option<&str> {
        None
    }

    fn lookup_field(name: &str) -> Option<Field> {
        Self::FIELDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }

    fn field_names() -> String {
        Self::FIELDS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub const RUNTIME_STATE_NAMES: &[&str] = &[
    "RUNTIME_STATE_UNSPECIFIED",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "SKIPPED",
    "FAILED",
    "CANCELING",
    "CANCELED",
    "PAUSED",
];
pub const STORAGE_STATE_NAMES: &[&str] = &["STORAGE_STATE_UNSPECIFIED", "AVAILABLE", "ARCHIVED"];

impl Field {
    pub fn kind(self) -> FieldKind {
        match self {
            Field::CreatedAt
            | Field::ScheduledAt
            | Field::FinishedAt
            | Field::LastRunCreatedAt
            | Field::UpdatedAt => FieldKind::Time,
            Field::State => FieldKind::EnumName(RUNTIME_STATE_NAMES),
            Field::Status => FieldKind::EnumName(RECURRING_RUN_STATUS_NAMES),
            Field::StorageState => FieldKind::EnumName(STORAGE_STATE_NAMES),
            _ => FieldKind::Text,
        }
    }
}

pub(crate) fn text(s: &str) -> FieldValue<'_> {
    FieldValue::Text(Cow::Borrowed(s))
}

pub(crate) fn enum_name(name: Option<&'static str>, number: i32) -> FieldValue<'static> {
    match name {
        Some(n) => FieldValue::Text(Cow::Borrowed(n)),
        // An enum number this build does not know: compare as its number, so it stays visible.
        None => FieldValue::Text(Cow::Owned(number.to_string())),
    }
}

impl Record for Run {
    const KIND: &'static str = "run";
    const FIELDS: &'static [(&'static str, Field)] = &[
        ("run_id", Field::Id),
        ("id", Field::Id),
        ("display_name", Field::DisplayName),
        ("name", Field::DisplayName),
        ("description", Field::Description),
        ("created_at", Field::CreatedAt),
        ("scheduled_at", Field::ScheduledAt),
        ("finished_at", Field::FinishedAt),
        ("state", Field::State),
        ("storage_state", Field::StorageState),
        ("namespace", Field::Namespace),
        ("experiment_id", Field::ExperimentId),
        ("recurring_run_id", Field::RecurringRunId),
        ("pipeline_id", Field::PipelineId),
        ("pipeline_version_id", Field::PipelineVersionId),
        ("service_account", Field::ServiceAccount),
    ];

    fn id(&self) -> &str {
        &self.run_id
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        match field {
            Field::Id => text(&self.run_id),
            Field::DisplayName => text(&self.display_name),
            Field::Description => text(&self.description),
            Field::CreatedAt => FieldValue::Time(self.created_at),
            Field::ScheduledAt => FieldValue::Time(self.scheduled_at),
            Field::FinishedAt => FieldValue::Time(self.finished_at),
            Field::State => enum_name(
                RuntimeState::try_from(self.state)
                    .ok()
                    .map(|s| s.as_str_name()),
                self.state,
            ),
            Field::StorageState => enum_name(
                run::StorageState::try_from(self.storage_state)
                    .ok()
                    .map(|s| s.as_str_name()),
                self.storage_state,
            ),
            Field::Namespace => text(&self.namespace),
            Field::ExperimentId => text(&self.experiment_id),
            Field::RecurringRunId => text(&self.recurring_run_id),
            Field::PipelineId => text(match &self.pipeline_source {
                Some(run::PipelineSource::PipelineId(id)) => id,
                Some(run::PipelineSource::PipelineVersionReference(r)) => &r.pipeline_id,
                _ => "",
            }),
            Field::PipelineVersionId => text(match &self.pipeline_source {
                Some(run::PipelineSource::PipelineVersionReference(r)) => &r.pipeline_version_id,
                _ => "",
            }),
            Field::ServiceAccount => text(&self.service_account),
            Field::LastRunCreatedAt | Field::UpdatedAt => FieldValue::Time(None),
            Field::Name | Field::Status | Field::Tag => text(""),
        }
    }
}

impl Record for Experiment {
    const KIND: &'static str = "experiment";
    const FIELDS: &'static [(&'static str, Field)] = &[
        ("experiment_id", Field::Id),
        ("id", Field::Id),
        ("display_name", Field::DisplayName),
        ("name", Field::DisplayName),
        ("description", Field::Description),
        ("created_at", Field::CreatedAt),
        ("namespace", Field::Namespace),
        ("storage_state", Field::StorageState),
        ("last_run_created_at", Field::LastRunCreatedAt),
    ];

    fn id(&self) -> &str {
        &self.experiment_id
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        match field {
            Field::Id => text(&self.experiment_id),
            Field::DisplayName => text(&self.display_name),
            Field::Description => text(&self.description),
            Field::CreatedAt => FieldValue::Time(self.created_at),
            Field::Namespace => text(&self.namespace),
            Field::StorageState => enum_name(
                experiment::StorageState::try_from(self.storage_state)
                    .ok()
                    .map(|s| s.as_str_name()),
                self.storage_state,
            ),
            Field::LastRunCreatedAt => FieldValue::Time(self.last_run_created_at),
            _ => text(""),
        }
    }
}
