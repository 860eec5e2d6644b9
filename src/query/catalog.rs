//! How pipelines, pipeline versions and recurring runs are filtered and sorted: their field
//! names (KFP's, plus the aliases runs and experiments accept) and values.

use super::{Field, FieldValue, Record, enum_name, text};
use crate::api::{Pipeline, PipelineVersion, RecurringRun, recurring_run};
use crate::wkt::Timestamp;

/// RecurringRun.Status names, by number (2 is unused, as in KFP).
pub const RECURRING_RUN_STATUS_NAMES: &[&str] = &["STATUS_UNSPECIFIED", "ENABLED", "2", "DISABLED"];

impl Record for Pipeline {
    const KIND: &'static str = "pipeline";
    const FIELDS: &'static [(&'static str, Field)] = &[
        ("pipeline_id", Field::Id),
        ("id", Field::Id),
        ("display_name", Field::DisplayName),
        ("name", Field::Name),
        ("description", Field::Description),
        ("created_at", Field::CreatedAt),
        ("namespace", Field::Namespace),
    ];
    const TAGGED: bool = true;

    fn id(&self) -> &str {
        &self.pipeline_id
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        match field {
            Field::Id => text(&self.pipeline_id),
            Field::DisplayName => text(&self.display_name),
            Field::Name => text(&self.name),
            Field::Description => text(&self.description),
            Field::CreatedAt => FieldValue::Time(self.created_at),
            Field::Namespace => text(&self.namespace),
            _ => text(""),
        }
    }
}

impl Record for PipelineVersion {
    const KIND: &'static str = "pipeline version";
    const FIELDS: &'static [(&'static str, Field)] = &[
        ("pipeline_version_id", Field::Id),
        ("id", Field::Id),
        ("display_name", Field::DisplayName),
        ("name", Field::Name),
        ("description", Field::Description),
        ("created_at", Field::CreatedAt),
        ("pipeline_id", Field::PipelineId),
    ];
    const TAGGED: bool = true;

    fn id(&self) -> &str {
        &self.pipeline_version_id
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        match field {
            Field::Id => text(&self.pipeline_version_id),
            Field::DisplayName => text(&self.display_name),
            Field::Name => text(&self.name),
            Field::Description => text(&self.description),
            Field::CreatedAt => FieldValue::Time(self.created_at),
            Field::PipelineId => text(&self.pipeline_id),
            _ => text(""),
        }
    }
}

impl Record for RecurringRun {
    const KIND: &'static str = "recurring run";
    const FIELDS: &'static [(&'static str, Field)] = &[
        ("recurring_run_id", Field::Id),
        ("id", Field::Id),
        ("display_name", Field::DisplayName),
        ("name", Field::DisplayName),
        ("description", Field::Description),
        ("created_at", Field::CreatedAt),
        ("updated_at", Field::UpdatedAt),
        ("status", Field::Status),
        ("namespace", Field::Namespace),
        ("experiment_id", Field::ExperimentId),
        ("pipeline_id", Field::PipelineId),
        ("pipeline_version_id", Field::PipelineVersionId),
        ("service_account", Field::ServiceAccount),
    ];

    fn id(&self) -> &str {
        &self.recurring_run_id
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    #[allow(deprecated)]
    fn field(&self, field: Field) -> FieldValue<'_> {
        use recurring_run::PipelineSource;
        let reference = match &self.pipeline_source {
            Some(PipelineSource::PipelineVersionReference(r)) => Some(r),
            _ => None,
        };
        match field {
            Field::Id => text(&self.recurring_run_id),
            Field::DisplayName => text(&self.display_name),
            Field::Description => text(&self.description),
            Field::CreatedAt => FieldValue::Time(self.created_at),
            Field::UpdatedAt => FieldValue::Time(self.updated_at),
            Field::Status => enum_name(
                recurring_run::Status::try_from(self.status)
                    .ok()
                    .map(|s| s.as_str_name()),
                self.status,
            ),
            Field::Namespace => text(&self.namespace),
            Field::ExperimentId => text(&self.experiment_id),
            Field::PipelineId => text(reference.map_or("", |r| &r.pipeline_id)),
            Field::PipelineVersionId => text(match &self.pipeline_source {
                Some(PipelineSource::PipelineVersionId(id)) => id,
                Some(PipelineSource::PipelineVersionReference(r)) => &r.pipeline_version_id,
                _ => "",
            }),
            Field::ServiceAccount => text(&self.service_account),
            _ => text(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::filter::Filter;
    use crate::query::sort::Sort;

    #[test]
    fn status_names_are_the_enum_names_at_their_numbers() {
        for status in [
            recurring_run::Status::Unspecified,
            recurring_run::Status::Enabled,
            recurring_run::Status::Disabled,
        ] {
            assert_eq!(
                RECURRING_RUN_STATUS_NAMES[status as usize],
                status.as_str_name()
            );
        }
    }

    #[test]
    fn recurring_runs_filter_on_status_by_name() {
        let filter = Filter::parse::<RecurringRun>(
            r#"{"predicates":[{"key":"status","operation":"EQUALS","string_value":"ENABLED"}]}"#,
        )
        .unwrap();
        let enabled = RecurringRun {
            status: recurring_run::Status::Enabled as i32,
            ..Default::default()
        };
        let disabled = RecurringRun {
            status: recurring_run::Status::Disabled as i32,
            ..Default::default()
        };
        assert!(filter.matches(&enabled));
        assert!(!filter.matches(&disabled));
        let err = Filter::parse::<RecurringRun>(
            r#"{"predicates":[{"key":"status","operation":"EQUALS","string_value":"ON"}]}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("ENABLED"), "{err}");
    }

    #[test]
    fn pipelines_filter_on_tags() {
        let filter = Filter::parse::<Pipeline>(
            r#"{"predicates":[{"key":"tags.team","operation":"EQUALS","string_value":"ml"}]}"#,
        )
        .unwrap();
        let tagged = |team: &str| Pipeline {
            tags: [("team".to_owned(), team.to_owned())].into(),
            ..Default::default()
        };
        assert!(filter.matches(&tagged("ml")));
        assert!(!filter.matches(&tagged("ops")));
        assert!(!filter.matches(&Pipeline::default()));
        let err = Filter::parse::<Pipeline>(
            r#"{"predicates":[{"key":"tags.","operation":"EQUALS","string_value":"ml"}]}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("tags.KEY"), "{err}");
        // Runs have no tags.
        let err = Filter::parse::<crate::api::Run>(
            r#"{"predicates":[{"key":"tags.team","operation":"EQUALS","string_value":"ml"}]}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("unknown key"), "{err}");
        assert!(Sort::parse::<Pipeline>("tags.team").is_err());
    }

    #[test]
    fn pipelines_sort_by_name_and_display_name_apart() {
        assert_eq!(Sort::parse::<Pipeline>("name").unwrap().field, Field::Name);
        assert_eq!(
            Sort::parse::<Pipeline>("display_name desc").unwrap().field,
            Field::DisplayName
        );
        let err = Sort::parse::<PipelineVersion>("state").unwrap_err();
        assert!(err.message().contains("pipeline versions sort by"), "{err}");
    }
}
