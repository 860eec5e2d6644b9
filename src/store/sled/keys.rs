//! Key encoding. Everything lives in one sled tree; the first byte of a key says what it is, and
//! keys are built so that one prefix is one scan: a scope's runs in created_at order, a
//! namespace's experiments in created_at order.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `R` | run_id | run record |
//! | `E` | experiment_id | experiment record |
//! | `A` | created, run_id | (empty): every run |
//! | `X` | str(experiment_id), created, run_id | (empty): runs of an experiment |
//! | `N` | str(namespace), created, run_id | (empty): runs of a namespace |
//! | `T` | scope, state, storage_state, created, run_id | (empty): a scope's runs by state |
//! | `O` | scope, name(display_name), run_id | (empty): a scope's runs by display_name |
//! | `F` | scope, finished(finished_at), run_id | (empty): a scope's runs by finished_at |
//! | `B` | sha256 | a spec blob (see `specs.rs`) |
//! | `U` | sha256 | u64 BE: records referencing the blob |
//! | `L` | experiment_id | created: the experiment's last_run_created_at |
//! | `Q` | created, experiment_id | (empty): every experiment |
//! | `P` | str(namespace), created, experiment_id | (empty): experiments of a namespace |
//! | `M` | str(namespace), display_name | experiment_id: unique experiment names |
//! | `D` | namespace | experiment_id of the namespace's default experiment |
//! | `C` | counter scope | `2`, then per (state, storage_state) group: i32, i32, u64 count (BE) |
//! | `S` | setting name | setting value (`format`: data format version; `page-token-key`; `change-seq`: the last change's sequence number; `migration`: progress of a format migration) |
//! | `I` | pipeline_id | pipeline record |
//! | `K` | str(namespace), name | pipeline_id: unique pipeline names |
//! | `W` | str(namespace), created, pipeline_id | (empty): pipelines of a namespace |
//! | `V` | pipeline_version_id | pipeline version record (referencing its spec blob) |
//! | `k` | str(pipeline_id), name | pipeline_version_id: unique version names |
//! | `w` | str(pipeline_id), created, pipeline_version_id | (empty): versions of a pipeline |
//! | `J` | recurring_run_id | recurring run record (with its schedule state) |
//! | `G` | created, recurring_run_id | (empty): every recurring run |
//! | `H` | str(experiment_id), created, recurring_run_id | (empty): recurring runs of an experiment |
//! | `Y` | str(namespace), created, recurring_run_id | (empty): recurring runs of a namespace |
//! | `Z` | lease name | holder (str), then the expiry (12 time bytes) |
//!
//! A version's name and creation entries (`k`, `w`) are its pipeline's (`K`, `W`) in lower case.
//!
//! Counter scopes (`C` then a kind byte): `a`/`x`/`n` runs everywhere / of an experiment / of a
//! namespace, `e`/`p` experiments everywhere / of a namespace, `w` pipelines of a namespace, `u`
//! versions of a pipeline, `g`/`h`/`y` recurring runs everywhere / of an experiment / of a
//! namespace (the pipeline, version and recurring run counters keep one group, (0, 0)).
//!
//! `str(x)` is a u16 big-endian length then the bytes, so a prefix never matches a longer
//! namespace or id; `created` is 12 bytes that sort like the timestamp (sign-flipped seconds,
//! then nanos). `scope` is `a` (every run), `x` str(experiment_id) or `n` str(namespace); a
//! state is its enum number as 4 sign-flipped BE bytes. `name(s)` is the string with each 0 byte
//! written `0 0xff`, then `0 0`, so that keys sort like (display_name, run_id);
//! `finished(t)` is `0` when unset (unset sorts first) or `1` then the 12 time bytes.
//!
//! Under a `T` (state, storage_state) prefix, or an `O`/`F` scope prefix, the rest of a key (its
//! "suffix") sorts like the listing position (sort value, then id), so a page in either direction
//! is one range read from the cursor's suffix on.

use crate::query::{Scope, SortValue};
use crate::wkt::Timestamp;

pub const RUN: u8 = b'R';
pub const EXPERIMENT: u8 = b'E';
pub const ALL_RUNS: u8 = b'A';
pub const RUNS_BY_EXPERIMENT: u8 = b'X';
pub const RUNS_BY_NAMESPACE: u8 = b'N';
pub const ALL_EXPERIMENTS: u8 = b'Q';
pub const EXPERIMENTS_BY_NAMESPACE: u8 = b'P';
pub const EXPERIMENT_NAME: u8 = b'M';
pub const DEFAULT_EXPERIMENT: u8 = b'D';
pub const COUNTER: u8 = b'C';
pub const SETTING: u8 = b'S';
pub const RUNS_BY_STATE: u8 = b'T';
pub const RUNS_BY_NAME: u8 = b'O';
pub const RUNS_BY_FINISHED: u8 = b'F';
pub const LAST_RUN_CREATED: u8 = b'L';
pub use super::specs::{BLOB, USES};
pub const PIPELINE: u8 = b'I';
pub const PIPELINE_NAME: u8 = b'K';
pub const PIPELINES_BY_NAMESPACE: u8 = b'W';
pub const PIPELINE_VERSION: u8 = b'V';
pub const PIPELINE_VERSION_NAME: u8 = b'k';
pub const VERSIONS_BY_PIPELINE: u8 = b'w';
pub const RECURRING_RUN: u8 = b'J';
pub const ALL_RECURRING_RUNS: u8 = b'G';
pub const RECURRING_RUNS_BY_EXPERIMENT: u8 = b'H';
pub const RECURRING_RUNS_BY_NAMESPACE: u8 = b'Y';
pub const LEASE: u8 = b'Z';

/// Longest namespace or id that fits a key's u16 length prefix.
pub const MAX_KEY_PART: usize = u16::MAX as usize;

pub fn record(prefix: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(prefix);
    key.extend_from_slice(id.as_bytes());
    key
}

fn push_str(key: &mut Vec<u8>, part: &str) {
    // Callers validate lengths before anything reaches the store; truncating here would merge
    // two scopes, so a too-long part is a bug worth crashing the test suite on.
    debug_assert!(part.len() <= MAX_KEY_PART);
    key.extend_from_slice(&(part.len().min(MAX_KEY_PART) as u16).to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

pub fn encode_time(ts: &Timestamp) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&((ts.seconds as u64) ^ (1 << 63)).to_be_bytes());
    out[8..].copy_from_slice(&(ts.nanos.max(0) as u32).to_be_bytes());
    out
}

pub fn decode_time(bytes: &[u8]) -> Option<Timestamp> {
    let seconds = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let nanos = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some(Timestamp {
        seconds: seconds as i64,
        nanos: nanos as i32,
    })
}

/// The prefix of a scope index: every key under it is `created, id`.
pub fn scope_prefix(prefix: u8, part: Option<&str>) -> Vec<u8> {
    let mut key = vec![prefix];
    if let Some(part) = part {
        push_str(&mut key, part);
    }
    key
}

/// A scope index entry: `prefix [str(part)] created id`.
pub fn scope_entry(scope_prefix: &[u8], created: &Timestamp, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(scope_prefix.len() + 12 + id.len());
    key.extend_from_slice(scope_prefix);
    key.extend_from_slice(&encode_time(created));
    key.extend_from_slice(id.as_bytes());
    key
}

/// Splits the part of an index key after its scope prefix into (created, id).
pub fn split_scope_entry(rest: &[u8]) -> Option<(Timestamp, &str)> {
    let created = decode_time(rest.get(..12)?)?;
    let id = std::str::from_utf8(rest.get(12..)?).ok()?;
    Some((created, id))
}

/// An index entry taken apart: which index, the scope's namespace or experiment id (none for
/// the global indexes), the creation time and the record id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeEntry {
    pub index: u8,
    pub part: Option<String>,
    pub created: Timestamp,
    pub id: String,
}

/// Parses an `A`/`X`/`N`/`Q`/`P` key; None when it is not well formed.
pub fn parse_scope_entry(key: &[u8]) -> Option<ScopeEntry> {
    let (&index, rest) = key.split_first()?;
    let (part, rest) = match index {
        ALL_RUNS | ALL_EXPERIMENTS => (None, rest),
        RUNS_BY_EXPERIMENT | RUNS_BY_NAMESPACE | EXPERIMENTS_BY_NAMESPACE => {
            let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let part = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
            (Some(part.to_owned()), rest.get(2 + len..)?)
        }
        _ => return None,
    };
    let (created, id) = split_scope_entry(rest)?;
    Some(ScopeEntry {
        index,
        part,
        created,
        id: id.to_owned(),
    })
}

/// Parses an `M` key into (namespace, display_name).
pub fn parse_experiment_name(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[EXPERIMENT_NAME])?;
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let namespace = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    let name = std::str::from_utf8(rest.get(2 + len..)?).ok()?;
    Some((namespace.to_owned(), name.to_owned()))
}

pub fn experiment_name(namespace: &str, display_name: &str) -> Vec<u8> {
    let mut key = vec![EXPERIMENT_NAME];
    push_str(&mut key, namespace);
    key.extend_from_slice(display_name.as_bytes());
    key
}

pub fn default_experiment(namespace: &str) -> Vec<u8> {
    record(DEFAULT_EXPERIMENT, namespace)
}

/// Counter scopes: runs everywhere / of an experiment / of a namespace, experiments everywhere /
/// of a namespace.
pub fn counter(kind: u8, part: Option<&str>) -> Vec<u8> {
    let mut key = vec![COUNTER, kind];
    if let Some(part) = part {
        push_str(&mut key, part);
    }
    key
}

/// The namespace or id of a counter key, after its `C kind` bytes.
pub fn parse_counter_part(rest: &[u8]) -> Option<String> {
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let part = std::str::from_utf8(rest.get(2..)?).ok()?;
    (part.len() == len).then(|| part.to_owned())
}

pub fn setting(name: &str) -> Vec<u8> {
    record(SETTING, name)
}

/// The scope part of a `T`/`O`/`F` key.
pub fn push_scope(key: &mut Vec<u8>, scope: &Scope) {
    match scope {
        Scope::Experiment(id) => {
            key.push(b'x');
            push_str(key, id);
        }
        Scope::Namespace(ns) => {
            key.push(b'n');
            push_str(key, ns);
        }
        // Scope::Run and Scope::Pipeline are never run scopes (callers check); file them with
        // every run.
        Scope::All | Scope::Run(_) | Scope::Pipeline(_) => key.push(b'a'),
    }
}

/// An enum number as 4 bytes that sort like the number.
pub fn encode_i32(value: i32) -> [u8; 4] {
    ((value as u32) ^ (1 << 31)).to_be_bytes()
}

pub fn decode_i32(bytes: &[u8]) -> Option<i32> {
    Some((u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) ^ (1 << 31)) as i32)
}

/// The prefix of a scope's state index for one (state, storage_state) group; under it, keys
/// continue like the creation index (`created, run_id`).
pub fn state_prefix(scope: &Scope, state: i32, storage_state: i32) -> Vec<u8> {
    let mut key = vec![RUNS_BY_STATE];
    push_scope(&mut key, scope);
    key.extend_from_slice(&encode_i32(state));
    key.extend_from_slice(&encode_i32(storage_state));
    key
}

/// A sort order some run index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOrder {
    Created,
    Name,
    Finished,
}

/// The prefix of a scope's `O` or `F` index (the creation index: see `scope_prefix`).
pub fn order_prefix(index: u8, scope: &Scope) -> Vec<u8> {
    let mut key = vec![index];
    push_scope(&mut key, scope);
    key
}

fn push_name(key: &mut Vec<u8>, name: &str) {
    for &b in name.as_bytes() {
        key.push(b);
        if b == 0 {
            key.push(0xff);
        }
    }
    key.extend_from_slice(&[0, 0]);
}

fn push_finished(key: &mut Vec<u8>, finished: Option<&Timestamp>) {
    match finished {
        None => key.push(0),
        Some(t) => {
            key.push(1);
            key.extend_from_slice(&encode_time(t));
        }
    }
}

/// The suffix of an index entry at listing position (value, id) in `order`: None when the value
/// is not of the order's kind.
pub fn order_suffix(order: RunOrder, value: &SortValue, id: &str) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(32 + id.len());
    match (order, value) {
        (RunOrder::Created, SortValue::Time(Some((seconds, nanos)))) => {
            key.extend_from_slice(&encode_time(&Timestamp {
                seconds: *seconds,
                nanos: *nanos,
            }))
        }
        (RunOrder::Name, SortValue::Text(name)) => push_name(&mut key, name),
        (RunOrder::Finished, SortValue::Time(t)) => push_finished(
            &mut key,
            t.map(|(seconds, nanos)| Timestamp { seconds, nanos })
                .as_ref(),
        ),
        _ => return None,
    }
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

/// The id at the end of an index entry's suffix in `order`.
pub fn id_of_suffix(order: RunOrder, suffix: &[u8]) -> Option<&str> {
    let start = match order {
        RunOrder::Created => 12,
        RunOrder::Finished => match suffix.first()? {
            0 => 1,
            1 => 13,
            _ => return None,
        },
        RunOrder::Name => {
            let mut i = 0;
            loop {
                match (suffix.get(i)?, suffix.get(i + 1)) {
                    (0, Some(0)) => break i + 2,
                    (0, Some(0xff)) => i += 2,
                    (0, _) => return None,
                    _ => i += 1,
                }
            }
        }
    };
    std::str::from_utf8(suffix.get(start..)?).ok()
}

/// Every index key of `run` (all with empty values): creation, state, name and finished_at, in
/// each of its scopes.
pub fn run_entries(run: &RunIndexed<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(12);
    for scope in run.scopes() {
        let creation = match &scope {
            Scope::Experiment(id) => scope_prefix(RUNS_BY_EXPERIMENT, Some(id)),
            Scope::Namespace(ns) => scope_prefix(RUNS_BY_NAMESPACE, Some(ns)),
            _ => scope_prefix(ALL_RUNS, None),
        };
        out.push(scope_entry(&creation, &run.created, run.run_id));
        let state = state_prefix(&scope, run.state, run.storage_state);
        out.push(scope_entry(&state, &run.created, run.run_id));
        let mut name = order_prefix(RUNS_BY_NAME, &scope);
        push_name(&mut name, run.display_name);
        name.extend_from_slice(run.run_id.as_bytes());
        out.push(name);
        let mut finished = order_prefix(RUNS_BY_FINISHED, &scope);
        push_finished(&mut finished, run.finished.as_ref());
        finished.extend_from_slice(run.run_id.as_bytes());
        out.push(finished);
    }
    out
}

/// What a run's index entries and counter groups depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIndexed<'a> {
    pub run_id: &'a str,
    pub experiment_id: &'a str,
    pub namespace: &'a str,
    pub display_name: &'a str,
    pub created: Timestamp,
    pub finished: Option<Timestamp>,
    pub state: i32,
    pub storage_state: i32,
}

impl<'a> RunIndexed<'a> {
    pub fn of(run: &'a crate::api::Run) -> RunIndexed<'a> {
        RunIndexed {
            run_id: &run.run_id,
            experiment_id: &run.experiment_id,
            namespace: &run.namespace,
            display_name: &run.display_name,
            created: run.created_at.unwrap_or_default(),
            finished: run.finished_at,
            state: run.state,
            storage_state: run.storage_state,
        }
    }

    /// The scopes the run is listed in.
    pub fn scopes(&self) -> [Scope; 3] {
        [
            Scope::All,
            Scope::Experiment(self.experiment_id.to_owned()),
            Scope::Namespace(self.namespace.to_owned()),
        ]
    }
}

/// The index (`T`, `O`, `F`) and scope of a derived run index key, for messages.
pub fn describe_run_index(key: &[u8]) -> Option<(u8, String)> {
    let (&index, rest) = key.split_first()?;
    let (&tag, rest) = rest.split_first()?;
    let scope = match tag {
        b'a' => "all runs".to_owned(),
        b'x' | b'n' => {
            let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let part = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
            if tag == b'x' {
                format!("runs of experiment {part:?}")
            } else {
                format!("runs of namespace {part:?}")
            }
        }
        _ => return None,
    };
    Some((index, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_times_sort_like_the_times() {
        let times = [
            Timestamp {
                seconds: -5,
                nanos: 999_999_999,
            },
            Timestamp {
                seconds: -5,
                nanos: 1,
            },
            Timestamp {
                seconds: 0,
                nanos: 0,
            },
            Timestamp {
                seconds: 0,
                nanos: 5,
            },
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
        ];
        let mut sorted = times;
        sorted.sort();
        let mut by_key = times;
        by_key.sort_by_key(encode_time);
        assert_eq!(sorted, by_key);
        for t in times {
            assert_eq!(decode_time(&encode_time(&t)), Some(t));
        }
    }

    #[test]
    fn a_namespace_prefix_does_not_match_a_longer_namespace() {
        let short = scope_prefix(RUNS_BY_NAMESPACE, Some("ab"));
        let long = scope_entry(
            &scope_prefix(RUNS_BY_NAMESPACE, Some("abc")),
            &Timestamp::default(),
            "r",
        );
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn index_keys_parse_back_into_their_parts() {
        let created = Timestamp {
            seconds: 1_700_000_000,
            nanos: 7,
        };
        let key = scope_entry(
            &scope_prefix(RUNS_BY_EXPERIMENT, Some("e1")),
            &created,
            "r1",
        );
        assert_eq!(
            parse_scope_entry(&key),
            Some(ScopeEntry {
                index: RUNS_BY_EXPERIMENT,
                part: Some("e1".into()),
                created,
                id: "r1".into()
            })
        );
        let key = scope_entry(&scope_prefix(ALL_RUNS, None), &created, "r2");
        assert_eq!(parse_scope_entry(&key).map(|e| e.id), Some("r2".into()));
        assert_eq!(parse_scope_entry(&[RUNS_BY_NAMESPACE, 0, 9, b'x']), None);
        assert_eq!(
            parse_experiment_name(&experiment_name("ns", "Default")),
            Some(("ns".into(), "Default".into()))
        );
    }
}
