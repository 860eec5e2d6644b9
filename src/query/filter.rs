//! The `filter` parameter: a JSON-encoded `Filter`, parsed into predicates checked against the
//! listed record's fields, then evaluated on records.
//!
//! Accepted as KFP clients send it: value keys in snake_case or lowerCamel (`string_value` /
//! `stringValue`), operations by name or number (the kfp SDK sends `"operation": 1`), int64 as a
//! JSON number or string. Every error names the predicate (1-based) and what is wrong with it.

use serde::{Deserialize, Serialize};

use super::{Field, FieldKind, FieldValue, Record};
use crate::api::{Predicate as WirePredicate, predicate};
use crate::error::{Error, Result};
use crate::store::Counts;
use crate::wkt::Timestamp;

/// Most predicates one filter may hold.
pub const MAX_PREDICATES: usize = 64;
/// Longest filter string accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;

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
    pub op: Op,
    pub operand: Operand,
}

/// A parsed filter: every predicate must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub predicates: Vec<Predicate>,
}

impl Filter {
    /// Parses `text` (empty = no filter) for records of type `R`.
    pub fn parse<R: Record>(text: &str) -> Result<Filter> {
        if text.trim().is_empty() {
            return Ok(Filter::default());
        }
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::invalid(format!(
                "filter is {} bytes long; at most {MAX_FILTER_BYTES} are accepted",
                text.len()
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
        if predicates.len() > MAX_PREDICATES {
            return Err(Error::invalid(format!(
                "filter has {} predicates; at most {MAX_PREDICATES} are accepted",
                predicates.len()
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
        self.predicates
            .iter()
            .all(|p| p.matches(&record.field(p.field)))
    }

    /// The number of matching records, when it follows from a scope's counters alone: no
    /// predicates, or only predicates on storage_state (stored records are always AVAILABLE or
    /// ARCHIVED, which the counters tell apart).
    pub fn count_from(&self, counts: Counts) -> Option<u64> {
        if !self
            .predicates
            .iter()
            .all(|p| p.field == Field::StorageState)
        {
            return None;
        }
        let passes = |name: &str| {
            let value = FieldValue::Text(name.into());
            self.predicates.iter().all(|p| p.matches(&value))
        };
        let available = counts.total.saturating_sub(counts.archived);
        Some(
            if passes("AVAILABLE") { available } else { 0 }
                + if passes("ARCHIVED") {
                    counts.archived
                } else {
                    0
                },
        )
    }

    /// A canonical text of the filter, to bind page tokens to it.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Predicate {
    fn from_wire<R: Record>(wire: WirePredicate) -> std::result::Result<Predicate, String> {
        use predicate::Operation as O;
        use predicate::Value as V;

        let field = R::lookup_field(&wire.key).ok_or_else(|| {
            if wire.key.is_empty() {
                "key is missing".to_owned()
            } else {
                format!(
                    "unknown key {:?}; {} filters accept {}",
                    wire.key,
                    R::KIND,
                    R::field_names()
                )
            }
        })?;
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
        Ok(Predicate { field, op, operand })
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
