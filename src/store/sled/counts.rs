//! Counters: how many records a scope holds per (state, storage_state) group, stored under the
//! scope's `C` key, so that `total_size` of a list filtered on those fields (or none) and the
//! runs-per-state metric need no scan.

use std::collections::BTreeMap;

use super::keys;
use crate::error::{Error, Result};
use crate::query::{Tally, TallyGroup};

/// How many records a scope holds per (state, storage_state) group (experiments: state 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counts(BTreeMap<(i32, i32), u64>);

/// The first byte of an encoded [`Counts`] (format 1's counters were 16 bytes: total, archived).
const COUNTS_VERSION: u8 = 2;

impl Counts {
    pub(super) fn decode(bytes: &[u8]) -> Result<Counts> {
        let corrupt = || Error::internal("corrupt counter value");
        let Some((&COUNTS_VERSION, mut rest)) = bytes.split_first() else {
            return Err(corrupt());
        };
        let mut groups = BTreeMap::new();
        while !rest.is_empty() {
            let state = keys::decode_i32(rest).ok_or_else(corrupt)?;
            let storage =
                keys::decode_i32(rest.get(4..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            let count = rest
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(corrupt)?;
            groups.insert((state, storage), count);
            rest = &rest[16..];
        }
        Ok(Counts(groups))
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 16 * self.0.len());
        out.push(COUNTS_VERSION);
        for (&(state, storage), count) in &self.0 {
            out.extend_from_slice(&keys::encode_i32(state));
            out.extend_from_slice(&keys::encode_i32(storage));
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For messages: the total, then each group as (state, storage_state) numbers.
    pub(super) fn describe(&self) -> String {
        let total: u64 = self.0.values().sum();
        let groups: Vec<String> = self
            .0
            .iter()
            .map(|((state, storage), count)| format!("({state}, {storage}): {count}"))
            .collect();
        format!("{total} [{}]", groups.join(", "))
    }

    /// Adds `delta` to a group; a group that reaches 0 goes.
    pub(super) fn add(&mut self, group: (i32, i32), delta: i64) -> Result<()> {
        let current = self.0.get(&group).copied().unwrap_or(0);
        let next = current.checked_add_signed(delta).ok_or_else(|| {
            Error::internal(
                "a counter would go below zero: the store's counters are inconsistent (run \
                 `runledger check`)",
            )
        })?;
        if next == 0 {
            self.0.remove(&group);
        } else {
            self.0.insert(group, next);
        }
        Ok(())
    }

    /// The counters as a tally; `states`: whether the groups tell run states apart (runs) or
    /// not (experiments).
    pub(super) fn tally(&self, states: bool) -> Tally {
        Tally {
            groups: self
                .0
                .iter()
                .map(|(&(state, storage_state), &count)| TallyGroup {
                    state: states.then_some(state),
                    storage_state,
                    count,
                })
                .collect(),
        }
    }
}
