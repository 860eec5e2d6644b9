//! `google.protobuf.Timestamp`, ours rather than pbjson-types', so that its proto3 JSON form is
//! RFC 3339 in UTC with a `Z` (pbjson-types prints `+00:00`), as KFP's gateway emits it and the
//! kfp SDK expects. Wire encoding is the standard one (seconds = 1, nanos = 2).

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The range proto3 allows: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let now = Utc::now();
        Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }
    }

    /// Whether the value is inside proto3's Timestamp range with normalised nanos.
    pub fn is_valid(&self) -> bool {
        (MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds)
            && (0..1_000_000_000).contains(&self.nanos)
    }

    /// Nanoseconds since the epoch: a total order that matches time order.
    pub fn as_nanos(&self) -> i128 {
        self.seconds as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// Parses RFC 3339 (any offset; stored as UTC).
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let parsed = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
        let ts = Timestamp {
            seconds: parsed.timestamp(),
            nanos: parsed.timestamp_subsec_nanos() as i32,
        };
        if ts.is_valid() {
            Ok(ts)
        } else {
            Err(format!(
                "{text:?} is outside the Timestamp range (years 1 to 9999)"
            ))
        }
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_nanos().cmp(&other.as_nanos())
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with `Z`, with as many fractional digits as needed (0, 3, 6 or 9).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp(self.seconds, self.nanos.max(0) as u32) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "<invalid timestamp {}s {}ns>", self.seconds, self.nanos),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_valid() {
            return Err(serde::ser::Error::custom(format!(
                "timestamp {}s {}ns is outside the proto3 range",
                self.seconds, self.nanos
            )));
        }
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_ends_in_z_and_keeps_nanoseconds() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        assert_eq!(
            serde_json::to_string(&ts).unwrap(),
            "\"2023-11-14T22:13:20.123456789Z\""
        );
        let whole = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            "\"2023-11-14T22:13:20Z\""
        );
    }

    #[test]
    fn parsing_accepts_offsets_and_normalises_to_utc() {
        let ts: Timestamp = serde_json::from_str("\"2023-11-15T00:13:20.5+02:00\"").unwrap();
        assert_eq!(
            ts,
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn parsing_rejects_garbage_and_empty_strings() {
        assert!(serde_json::from_str::<Timestamp>("\"\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
