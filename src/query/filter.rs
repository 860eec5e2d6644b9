//! The `filter` parameter: a JSON-encoded `Filter`, parsed into predicates checked against the
//! listed record's fields, then evaluated on records.
//!
//! Accepted as KFP clients send it: value keys in snake_case or lowerCamel (`string_value` /
//! `stringValue`), operations by name or number (the kfp SDK sends `"operation": 1`), int64 as a
//! JSON number or string. Every error names the predicate (1-based) and what is wrong with it.

use serde::{Deserialize, Serialize};

use super::{
    Field, FieldKind, FieldValue, QueryLimits, RUNTIME_STATE_NAMES, Record, STORAGE_STATE_NAMES,
    Tally, TallyGroup,
};
use crate::api::{Predicate as WirePredicate, predicate};
use crate::error::{Error, Result};
use crate::wkt::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    Substring,
}

/// The value a predicate compares with, already converted to the field's kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operand {
    Text(String),
    TextList(Vec<String>),
    Time(Timestamp),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    pub field: Field,
    /// The tag a `tags.KEY` predicate tests (then `field` is [`Field::Tag`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub op: Op,
    pub operand: Operand,
}

/// A parsed filter: every predicate must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub predicates: Vec<Predicate>,
}

impl Filter {
    /// Parses `text` (empty = no filter) for records of type `R`, under the default limits.
    pub fn parse<R: Record>(text: &str) -> Result<Filter> {
        Self::parse_with::<R>(text, &QueryLimits::default())
    }

    /// Parses `text` (empty = no filter) for records of type `R`.
    pub fn parse_with<R: Record>(text: &str, limits: &QueryLimits) -> Result<Filter> {
        if text.trim().is_empty() {
            return Ok(Filter::default());
        }
        if text.len() > limits.max_filter_bytes {
            return Err(Error::invalid(format!(
                "filter is {} bytes long; at most {} are accepted (--max-filter-bytes)",
                text.len(),
                limits.max_filter_bytes
            )));
        }
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        let serde_json::Value::Object(mut top) = json else {
            return Err(Error::invalid(
                "filter must be a JSON object like {\"predicates\": [...]}",
            ));
        };
        let predicates = top
            .remove("predicates")
            .unwrap_or(serde_json::Value::Array(Vec::new()));
        if let Some(unknown) = top.keys().next() {
            return Err(Error::invalid(format!(
                "filter has an unknown field {unknown:?}; the only field is \"predicates\""
            )));
        }
        let serde_json::Value::Array(predicates) = predicates else {
            return Err(Error::invalid("filter.predicates must be a JSON array"));
        };
        if predicates.len() > limits.max_predicates {
            return Err(Error::invalid(format!(
                "filter has {} predicates; at most {} are accepted (--max-filter-predicates)",
                predicates.len(),
                limits.max_predicates
            )));
        }
        let predicates = predicates
            .into_iter()
            .enumerate()
            .map(|(i, json)| {
                let at = |msg: String| Error::invalid(format!("filter predicate {}: {msg}", i + 1));
                let wire: WirePredicate =
                    serde_json::from_value(json).map_err(|e| at(e.to_string()))?;
                Predicate::from_wire::<R>(wire).map_err(at)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Filter { predicates })
    }

    pub fn is_empty(&self) -> bool {
        self.predicates.is_empty()
    }

    pub fn matches<R: Record>(&self, record: &R) -> bool {
        self.predicates.iter().all(|p| match &p.tag {
            // A record without the tag compares as an empty value.
            Some(key) => p.matches(&FieldValue::Text(
                record.tag(key).unwrap_or_default().into(),
            )),
            None => p.matches(&record.field(p.field)),
        })
    }

    /// The number of matching records, when it follows from a scope's counters alone: every
    /// predicate tests state or storage_state, and the tally tells the states it tests apart.
    pub fn count_from(&self, tally: &Tally) -> Option<u64> {
        if !self.predicates.iter().all(|p| is_counted(p.field)) {
            return None;
        }
        let tests_state = self.predicates.iter().any(|p| p.field == Field::State);
        if tests_state && tally.groups.iter().any(|g| g.state.is_none()) {
            return None;
        }
        Some(
            tally
                .groups
                .iter()
                .filter(|g| self.admits_group(g))
                .map(|g| g.count)
                .sum(),
        )
    }

    /// Whether records of a tally group (a state and storage state) can match: every predicate
    /// on state or storage_state holds for the group's values (predicates on other fields are
    /// not tested; a group without a state passes the state predicates). A backend that keeps
    /// records by group reads only the groups admitted.
    pub fn admits_group(&self, group: &TallyGroup) -> bool {
        let state = group
            .state
            .map(|state| enum_name_of(RUNTIME_STATE_NAMES, state));
        let storage = enum_name_of(STORAGE_STATE_NAMES, group.storage_state);
        self.predicates.iter().all(|p| {
            let value = match (p.field, &state) {
                (Field::State, Some(state)) => state.clone(),
                (Field::StorageState, _) => storage.clone(),
                _ => return true,
            };
            p.matches(&FieldValue::Text(value.into()))
        })
    }

    /// Whether some predicate tests state or storage_state.
    pub fn tests_group(&self) -> bool {
        self.predicates.iter().any(|p| is_counted(p.field))
    }

    /// Whether every predicate tests state or storage_state (an empty filter too).
    pub fn only_tests_group(&self) -> bool {
        self.predicates.iter().all(|p| is_counted(p.field))
    }
}

/// The fields a backend's counters tell apart.
fn is_counted(field: Field) -> bool {
    matches!(field, Field::State | Field::StorageState)
}

/// An enum value's name as filters compare it (its number when this build does not know it).
fn enum_name_of(names: &[&str], number: i32) -> String {
    usize::try_from(number)
        .ok()
        .and_then(|i| names.get(i))
        .map_or_else(|| number.to_string(), |n| (*n).to_owned())
}

impl Predicate {
    fn from_wire<R: Record>(wire: WirePredicate) -> std::result::Result<Predicate, String> {
        use predicate::Operation as O;
        use predicate::Value as V;

        let (field, tag) = match wire.key.strip_prefix("tags.") {
            Some("") if R::TAGGED => {
                return Err("key \"tags.\" names no tag; use tags.KEY, as in tags.team".into());
            }
            Some(key) if R::TAGGED => (Field::Tag, Some(key.to_owned())),
            _ => {
                let field = R::lookup_field(&wire.key).ok_or_else(|| {
                    if wire.key.is_empty() {
                        "key is missing".to_owned()
                    } else {
                        format!(
                            "unknown key {:?}; {} filters accept {}{}",
                            wire.key,
                            R::KIND,
                            R::field_names(),
                            if R::TAGGED { ", tags.KEY" } else { "" }
                        )
                    }
                })?;
                (field, None)
            }
        };
        let op = match O::try_from(wire.operation) {
            Ok(O::Equals) => Op::Eq,
            Ok(O::NotEquals) => Op::Ne,
            Ok(O::GreaterThan) => Op::Gt,
            Ok(O::GreaterThanEquals) => Op::Ge,
            Ok(O::LessThan) => Op::Lt,
            Ok(O::LessThanEquals) => Op::Le,
            Ok(O::In) => Op::In,
            Ok(O::IsSubstring) => Op::Substring,
            Ok(O::Unspecified) => return Err("operation is missing".to_owned()),
            Err(_) => return Err(format!("unknown operation {}", wire.operation)),
        };
        let key = &wire.key;
        let value = wire
            .value
            .ok_or_else(|| format!("no value given for key {key:?}"))?;
        let value_name = match &value {
            V::IntValue(_) => "int_value",
            V::LongValue(_) => "long_value",
            V::StringValue(_) => "string_value",
            V::TimestampValue(_) => "timestamp_value",
            V::IntValues(_) => "int_values",
            V::LongValues(_) => "long_values",
            V::StringValues(_) => "string_values",
        };
        let is_list = matches!(
            value,
            V::IntValues(_) | V::LongValues(_) | V::StringValues(_)
        );
        if (op == Op::In) != is_list {
            return Err(if op == Op::In {
                format!(
                    "IN takes a list (string_values, int_values or long_values), not {value_name}"
                )
            } else {
                format!("{value_name} is a list; only IN takes a list")
            });
        }
        let mismatch = |expected: &str| format!("key {key:?} takes {expected}, not {value_name}");
        let operand = match field.kind() {
            FieldKind::Text => match value {
                V::StringValue(s) => Operand::Text(s),
                V::StringValues(l) => Operand::TextList(l.values),
                _ => return Err(mismatch("string_value (string_values for IN)")),
            },
            FieldKind::EnumName(names) => {
                let name_of = |n: i64| -> std::result::Result<String, String> {
                    usize::try_from(n)
                        .ok()
                        .and_then(|i| names.get(i))
                        .map(|s| (*s).to_owned())
                        .ok_or_else(|| {
                            format!(
                                "{n} is not a value of {key:?}; values are {}",
                                names.join(", ")
                            )
                        })
                };
                let check = |s: String| -> std::result::Result<String, String> {
                    if op == Op::Substring || names.contains(&s.as_str()) {
                        Ok(s)
                    } else {
                        Err(format!(
                            "{s:?} is not a value of {key:?}; values are {}",
                            names.join(", ")
                        ))
                    }
                };
                match value {
                    V::StringValue(s) => Operand::Text(check(s)?),
                    V::IntValue(n) => Operand::Text(name_of(n.into())?),
                    V::LongValue(n) => Operand::Text(name_of(n)?),
                    V::StringValues(l) => Operand::TextList(
                        l.values
                            .into_iter()
                            .map(check)
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    V::IntValues(l) => Operand::TextList(
                        l.values
                            .into_iter()
                            .map(|n| name_of(n.into()))
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    V::LongValues(l) => Operand::TextList(
                        l.values
                            .into_iter()
                            .map(name_of)
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    V::TimestampValue(_) => return Err(mismatch("an enum name as string_value")),
                }
            }
            FieldKind::Time => {
                if matches!(op, Op::In | Op::Substring) {
                    return Err(format!(
                        "key {key:?} is a timestamp; it takes EQUALS, NOT_EQUALS, GREATER_THAN(_EQUALS) or LESS_THAN(_EQUALS)"
                    ));
                }
                match value {
                    V::TimestampValue(ts) if ts.is_valid() => Operand::Time(ts),
                    V::TimestampValue(_) => {
                        return Err("timestamp_value is out of range".to_owned());
                    }
                    // KFP's v1 API compared timestamps with Unix seconds: keep accepting them.
                    V::IntValue(s) => Operand::Time(Timestamp {
                        seconds: s.into(),
                        nanos: 0,
                    }),
                    V::LongValue(s) => {
                        let ts = Timestamp {
                            seconds: s,
                            nanos: 0,
                        };
                        if !ts.is_valid() {
                            return Err(format!("{s} seconds is outside the Timestamp range"));
                        }
                        Operand::Time(ts)
                    }
                    _ => return Err(mismatch("timestamp_value (or Unix seconds as long_value)")),
                }
            }
        };
        Ok(Predicate {
            field,
            tag,
            op,
            operand,
        })
    }

    fn matches(&self, value: &FieldValue<'_>) -> bool {
        use std::cmp::Ordering::*;
        let ordering = match (value, &self.operand) {
            (FieldValue::Text(v), Operand::Text(o)) => {
                if self.op == Op::Substring {
                    return v.contains(o.as_str());
                }
                v.as_ref().cmp(o.as_str())
            }
            (FieldValue::Text(v), Operand::TextList(list)) => {
                return list.iter().any(|o| o == v.as_ref());
            }
            // Unset timestamps are earlier than every set one.
            (FieldValue::Time(v), Operand::Time(o)) => v.map_or(Less, |v| v.cmp(o)),
            // Kinds are checked at parse time; a mismatch cannot match.
            _ => return false,
        };
        match self.op {
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
            Op::In | Op::Substring => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Experiment, Run, RuntimeState, run};

    fn parse(json: &str) -> Result<Filter> {
        Filter::parse::<Run>(json)
    }

    fn one(predicate: &str) -> Result<Filter> {
        parse(&format!(r#"{{"predicates":[{predicate}]}}"#))
    }

    fn run() -> Run {
        Run {
            run_id: "run-7".into(),
            display_name: "nightly build".into(),
            state: RuntimeState::Running as i32,
            storage_state: run::StorageState::Available as i32,
            created_at: Some(Timestamp {
                seconds: 100,
                nanos: 5,
            }),
            pipeline_source: Some(run::PipelineSource::PipelineId("pipe".into())),
            ..Default::default()
        }
    }

    fn matches(predicate: &str) -> bool {
        one(predicate)
            .unwrap_or_else(|e| panic!("{predicate}: {e}"))
            .matches(&run())
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        for text in ["", "  ", "{}", r#"{"predicates":[]}"#] {
            let filter = parse(text).unwrap();
            assert!(filter.is_empty() && filter.matches(&run()), "{text:?}");
        }
    }

    #[test]
    fn the_kfp_sdk_form_with_a_numeric_operation_and_camel_case_value_works() {
        assert!(matches(
            r#"{"operation":1,"key":"display_name","stringValue":"nightly build"}"#
        ));
        assert!(matches(
            r#"{"operation":"EQUALS","key":"name","string_value":"nightly build"}"#
        ));
        assert!(!matches(
            r#"{"operation":1,"key":"display_name","stringValue":"nightly"}"#
        ));
    }

    #[test]
    fn every_operation_on_text() {
        let cases = [
            ("EQUALS", "nightly build", true),
            ("NOT_EQUALS", "nightly build", false),
            ("NOT_EQUALS", "other", true),
            ("GREATER_THAN", "a", true),
            ("GREATER_THAN", "nightly build", false),
            ("GREATER_THAN_EQUALS", "nightly build", true),
            ("LESS_THAN", "z", true),
            ("LESS_THAN", "nightly build", false),
            ("LESS_THAN_EQUALS", "nightly build", true),
            ("IS_SUBSTRING", "ly bu", true),
            ("IS_SUBSTRING", "Nightly", false),
            ("IS_SUBSTRING", "%", false),
        ];
        for (op, value, expected) in cases {
            let p =
                format!(r#"{{"operation":"{op}","key":"display_name","string_value":"{value}"}}"#);
            assert_eq!(matches(&p), expected, "{p}");
        }
    }

    #[test]
    fn in_takes_lists_in_both_spellings_and_an_empty_list_matches_nothing() {
        assert!(matches(
            r#"{"operation":"IN","key":"run_id","string_values":{"values":["x","run-7"]}}"#
        ));
        assert!(matches(
            r#"{"operation":8,"key":"run_id","stringValues":{"values":["run-7"]}}"#
        ));
        assert!(!matches(
            r#"{"operation":"IN","key":"run_id","string_values":{"values":[]}}"#
        ));
        assert!(matches(
            r#"{"operation":"IN","key":"state","int_values":{"values":[2,3]}}"#
        ));
        assert!(matches(
            r#"{"operation":"IN","key":"state","longValues":{"values":["2"]}}"#
        ));
        assert!(!matches(
            r#"{"operation":"IN","key":"state","string_values":{"values":["PENDING"]}}"#
        ));
    }

    #[test]
    fn states_compare_by_name_and_accept_numbers() {
        assert!(matches(
            r#"{"operation":"EQUALS","key":"state","string_value":"RUNNING"}"#
        ));
        assert!(matches(
            r#"{"operation":"EQUALS","key":"state","int_value":2}"#
        ));
        assert!(matches(
            r#"{"operation":"EQUALS","key":"state","long_value":"2"}"#
        ));
        assert!(matches(
            r#"{"operation":"EQUALS","key":"storage_state","stringValue":"AVAILABLE"}"#
        ));
        // Names compare as text, as KFP's database does: "RUNNING" > "PENDING".
        assert!(matches(
            r#"{"operation":"GREATER_THAN","key":"state","string_value":"PENDING"}"#
        ));
        assert!(matches(
            r#"{"operation":"IS_SUBSTRING","key":"state","string_value":"UNN"}"#
        ));
    }

    #[test]
    fn timestamps_compare_at_full_precision_and_unset_is_earliest() {
        let at = |op: &str, ts: &str, key: &str| {
            matches(&format!(
                r#"{{"operation":"{op}","key":"{key}","timestamp_value":"{ts}"}}"#
            ))
        };
        // created_at is 100 s + 5 ns.
        assert!(at(
            "GREATER_THAN",
            "1970-01-01T00:01:40.000000004Z",
            "created_at"
        ));
        assert!(!at(
            "GREATER_THAN",
            "1970-01-01T00:01:40.000000005Z",
            "created_at"
        ));
        assert!(at("EQUALS", "1970-01-01T00:01:40.000000005Z", "created_at"));
        assert!(at(
            "LESS_THAN_EQUALS",
            "1970-01-01T00:01:40.000000005Z",
            "created_at"
        ));
        assert!(at(
            "GREATER_THAN_EQUALS",
            "1970-01-01T00:01:40.000000005Z",
            "created_at"
        ));
        // finished_at is unset: earlier than every time.
        assert!(at("LESS_THAN", "0001-01-01T00:00:00Z", "finished_at"));
        assert!(!at("EQUALS", "1970-01-01T00:00:00Z", "finished_at"));
        assert!(at("NOT_EQUALS", "1970-01-01T00:00:00Z", "finished_at"));
        // Unix seconds, as KFP's v1 API sent them.
        assert!(matches(
            r#"{"operation":"GREATER_THAN","key":"created_at","long_value":"99"}"#
        ));
        assert!(matches(
            r#"{"operation":"LESS_THAN","key":"created_at","intValue":101}"#
        ));
    }

    #[test]
    fn predicates_are_anded() {
        let both = r#"{"predicates":[
            {"operation":"EQUALS","key":"state","string_value":"RUNNING"},
            {"operation":"IS_SUBSTRING","key":"name","string_value":"night"}]}"#;
        assert!(parse(both).unwrap().matches(&run()));
        let one_fails = r#"{"predicates":[
            {"operation":"EQUALS","key":"state","string_value":"RUNNING"},
            {"operation":"IS_SUBSTRING","key":"name","string_value":"day"}]}"#;
        assert!(!parse(one_fails).unwrap().matches(&run()));
    }

    #[test]
    fn every_error_is_invalid_argument_naming_the_predicate() {
        let cases = [
            (
                r#"{"operation":"EQUALS","key":"colour","string_value":"x"}"#,
                "unknown key",
            ),
            (
                r#"{"operation":"EQUALS","key":"","string_value":"x"}"#,
                "key is missing",
            ),
            (
                r#"{"operation":"EQUALS","key":"Display_Name","string_value":"x"}"#,
                "unknown key",
            ),
            (
                r#"{"key":"name","string_value":"x"}"#,
                "operation is missing",
            ),
            (
                r#"{"operation":4,"key":"name","string_value":"x"}"#,
                "IS_SUBSTRING",
            ),
            (
                r#"{"operation":"LIKE","key":"name","string_value":"x"}"#,
                "LIKE",
            ),
            (r#"{"operation":"EQUALS","key":"name"}"#, "no value"),
            (
                r#"{"operation":"EQUALS","key":"name","int_value":3}"#,
                "string_value",
            ),
            (
                r#"{"operation":"EQUALS","key":"name","string_values":{"values":["a"]}}"#,
                "only IN",
            ),
            (
                r#"{"operation":"IN","key":"name","string_value":"a"}"#,
                "IN takes a list",
            ),
            (
                r#"{"operation":"EQUALS","key":"state","string_value":"Running"}"#,
                "not a value",
            ),
            (
                r#"{"operation":"EQUALS","key":"state","int_value":42}"#,
                "42",
            ),
            (
                r#"{"operation":"EQUALS","key":"state","timestamp_value":"2020-01-01T00:00:00Z"}"#,
                "enum name",
            ),
            (
                r#"{"operation":"IN","key":"created_at","long_values":{"values":["1"]}}"#,
                "timestamp",
            ),
            (
                r#"{"operation":"IS_SUBSTRING","key":"created_at","timestamp_value":"2020-01-01T00:00:00Z"}"#,
                "timestamp",
            ),
            (
                r#"{"operation":"EQUALS","key":"created_at","string_value":"yesterday"}"#,
                "timestamp_value",
            ),
            (
                r#"{"operation":"EQUALS","key":"created_at","timestamp_value":"yesterday"}"#,
                "RFC 3339",
            ),
            (
                r#"{"operation":"EQUALS","key":"name","string_value":"x","colour":1}"#,
                "colour",
            ),
        ];
        for (predicate, needle) in cases {
            let text = format!(
                r#"{{"predicates":[{{"operation":"EQUALS","key":"name","string_value":"ok"}},{predicate}]}}"#
            );
            let err = parse(&text).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_)),
                "{predicate}: {err:?}"
            );
            assert!(err.message().contains("predicate 2"), "{predicate}: {err}");
            assert!(err.message().contains(needle), "{predicate}: {err}");
        }
    }

    #[test]
    fn malformed_filters_are_invalid_argument() {
        let too_many = format!(
            r#"{{"predicates":[{}]}}"#,
            vec![
                r#"{"operation":1,"key":"name","string_value":"a"}"#;
                QueryLimits::default().max_predicates + 1
            ]
            .join(",")
        );
        let too_long = format!(
            r#"{{"predicates":[{{"operation":1,"key":"name","string_value":"{}"}}]}}"#,
            "a".repeat(QueryLimits::default().max_filter_bytes)
        );
        for bad in [
            "{",
            "[]",
            "42",
            r#"{"predicates":{}}"#,
            r#"{"predicate":[]}"#,
            "%7B%7D",
            &too_many,
            &too_long,
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn experiments_have_their_own_keys() {
        assert!(Filter::parse::<Experiment>(r#"{"predicates":[{"operation":1,"key":"last_run_created_at","timestamp_value":"2020-01-01T00:00:00Z"}]}"#).is_ok());
        assert!(
            Filter::parse::<Experiment>(
                r#"{"predicates":[{"operation":1,"key":"state","string_value":"RUNNING"}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn storage_state_filters_are_counted_from_the_counters() {
        use crate::query::TallyGroup;
        let counts = Tally {
            groups: vec![
                TallyGroup {
                    state: None,
                    storage_state: 1,
                    count: 7,
                },
                TallyGroup {
                    state: None,
                    storage_state: 2,
                    count: 3,
                },
            ],
        };
        let count = |p: &str| one(p).unwrap().count_from(&counts);
        assert_eq!(parse("").unwrap().count_from(&counts), Some(10));
        assert_eq!(
            count(r#"{"operation":1,"key":"storage_state","string_value":"ARCHIVED"}"#),
            Some(3)
        );
        assert_eq!(
            count(r#"{"operation":2,"key":"storage_state","string_value":"ARCHIVED"}"#),
            Some(7)
        );
        assert_eq!(
            count(r#"{"operation":1,"key":"storage_state","string_value":"AVAILABLE"}"#),
            Some(7)
        );
        assert_eq!(
            count(r#"{"operation":"IN","key":"storage_state","string_values":{"values":[]}}"#),
            Some(0)
        );
        assert_eq!(
            count(r#"{"operation":1,"key":"name","string_value":"x"}"#),
            None
        );
        // Counters that do not tell states apart cannot count a state filter.
        assert_eq!(
            count(r#"{"operation":1,"key":"state","string_value":"RUNNING"}"#),
            None
        );
    }

    #[test]
    fn state_filters_are_counted_from_counters_per_state() {
        use crate::query::TallyGroup;
        let group = |state, storage_state, count| TallyGroup {
            state: Some(state),
            storage_state,
            count,
        };
        let counts = Tally {
            groups: vec![
                group(1, 1, 4),
                group(2, 1, 5),
                group(2, 2, 1),
                group(3, 2, 6),
            ],
        };
        let count = |f: &str| parse(f).unwrap().count_from(&counts);
        assert_eq!(
            count(r#"{"predicates":[{"operation":1,"key":"state","string_value":"RUNNING"}]}"#),
            Some(6)
        );
        assert_eq!(
            count(
                r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["PENDING","SUCCEEDED"]}},
                {"operation":2,"key":"storage_state","string_value":"ARCHIVED"}]}"#
            ),
            Some(4)
        );
        assert_eq!(
            count(
                r#"{"predicates":[{"operation":"IS_SUBSTRING","key":"state","string_value":"NN"}]}"#
            ),
            Some(6)
        );
    }
}
