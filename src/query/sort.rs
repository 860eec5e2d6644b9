//! The `sort_by` parameter: `"field"`, `"field asc"` or `"field desc"`; default `created_at`
//! ascending. Ties are broken by id in the same direction, so the order is total and pages are
//! stable.

use serde::{Deserialize, Serialize};

use super::{Field, Record};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    pub field: Field,
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort {
            field: Field::CreatedAt,
            descending: false,
        }
    }
}

impl Sort {
    /// Parses `text` (empty = the default) for records of type `R`.
    pub fn parse<R: Record>(text: &str) -> Result<Sort> {
        let mut words = text.split_whitespace();
        let Some(name) = words.next() else {
            return Ok(Sort::default());
        };
        let descending = match words.next() {
            None => false,
            Some(dir) if dir.eq_ignore_ascii_case("asc") => false,
            Some(dir) if dir.eq_ignore_ascii_case("desc") => true,
            Some(dir) => {
                return Err(Error::invalid(format!(
                    "sort_by {text:?}: the direction must be \"asc\" or \"desc\", not {dir:?}"
                )));
            }
        };
        if words.next().is_some() {
            return Err(Error::invalid(format!(
                "sort_by {text:?} is not of the form \"field\", \"field asc\" or \"field desc\""
            )));
        }
        let field = R::lookup_field(name).ok_or_else(|| {
            Error::invalid(format!(
                "sort_by {text:?}: unknown field {name:?}; {}s sort by {}",
                R::KIND,
                R::field_names()
            ))
        })?;
        Ok(Sort { field, descending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Run;
    use crate::error::Error;

    #[test]
    fn accepts_a_field_with_an_optional_direction() {
        assert_eq!(Sort::parse::<Run>("").unwrap(), Sort::default());
        assert_eq!(Sort::parse::<Run>("  ").unwrap(), Sort::default());
        assert_eq!(
            Sort::parse::<Run>("name desc").unwrap(),
            Sort {
                field: Field::DisplayName,
                descending: true
            }
        );
        assert_eq!(
            Sort::parse::<Run>("finished_at ASC").unwrap(),
            Sort {
                field: Field::FinishedAt,
                descending: false
            }
        );
        assert_eq!(Sort::parse::<Run>("id").unwrap().field, Field::Id);
    }

    #[test]
    fn every_documented_run_key_parses() {
        for (name, field) in <Run as Record>::FIELDS {
            assert_eq!(Sort::parse::<Run>(name).unwrap().field, *field, "{name}");
        }
    }

    #[test]
    fn rejects_unknown_fields_directions_and_extra_words() {
        for bad in ["colour", "name sideways", "name desc please", "Name"] {
            let err = Sort::parse::<Run>(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
            assert!(err.message().contains(bad), "{bad}: {err}");
        }
    }
}
