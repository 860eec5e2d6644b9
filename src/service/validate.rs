//! Input checks shared by the use cases, and the configurable size limits.

use crate::error::{Error, Result};
use crate::query::QueryLimits;
use crate::wkt::Timestamp;

/// Size limits on what clients send. Every limit has a flag (see `runledger serve --help`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest display_name, in bytes.
    pub max_name_bytes: usize,
    /// Longest description, in bytes.
    pub max_description_bytes: usize,
    /// Most runtime_config.parameters entries.
    pub max_parameters: usize,
    /// Most concurrent WatchRuns streams.
    pub max_watchers: usize,
    /// Page size and filter limits of list requests.
    pub query: QueryLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 512,
            max_description_bytes: 16 * 1024,
            max_parameters: 1000,
            max_watchers: 256,
            query: QueryLimits::default(),
        }
    }
}

/// Longest namespace, experiment id or other key-like string, in bytes.
pub const MAX_ID_BYTES: usize = 253;

/// Checks a client-chosen run id: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn check_run_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && id.len() <= 128 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "run.run_id {:?} is not a valid id: use 1 to 128 characters from [A-Za-z0-9._-], \
             starting with a letter or digit, or leave it empty for a generated one",
            shorten(id)
        )))
    }
}

/// Checks that a required text field is present and within `max` bytes.
pub fn check_text(field: &str, value: &str, required: bool, max: usize) -> Result<()> {
    if required && value.trim().is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    if value.len() > max {
        return Err(Error::invalid(format!(
            "{field} is {} bytes long; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

/// Checks an id used to look something up: non-empty and of sane length.
pub fn check_lookup_id(field: &str, value: &str) -> Result<()> {
    check_text(field, value, true, MAX_ID_BYTES)
}

pub fn check_timestamp(field: &str, ts: &Option<Timestamp>) -> Result<()> {
    match ts {
        Some(t) if !t.is_valid() => Err(Error::invalid(format!(
            "{field} ({}s, {}ns) is outside the Timestamp range (years 1 to 9999, nanos < 1e9)",
            t.seconds, t.nanos
        ))),
        _ => Ok(()),
    }
}

/// Checks that a pipeline spec sent as a Struct (`field` names it) decodes as one.
pub fn check_struct_bytes(field: &str, spec: &crate::wkt::StructBytes) -> Result<()> {
    spec.validate().map_err(|e| {
        Error::invalid(format!(
            "{field} is not a valid google.protobuf.Struct: {e}"
        ))
    })
}

/// A value quoted in an error message, cut to a readable length.
pub fn shorten(value: &str) -> String {
    if value.len() <= 80 {
        return value.to_owned();
    }
    let mut end = 80;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_follow_the_documented_pattern() {
        for good in ["a", "Run-1.b_c", &"x".repeat(128)] {
            assert!(check_run_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ü", &"x".repeat(129)] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
