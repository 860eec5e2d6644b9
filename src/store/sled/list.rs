//! How the sled backend answers a [`ListQuery`].
//!
//! When an index keeps the query's order, a page reads that index from the cursor on (either
//! direction) and stops after `page_size + 1` matches:
//! - runs or experiments by created_at: the scope's creation index; runs by created_at with a
//!   filter on state and/or storage_state: the scope's state index, merging the (state,
//!   storage_state) groups the filter admits (read from the counters), so only matching runs
//!   are read;
//! - runs by display_name or finished_at: the scope's name or finished_at index.
//!
//! total_size comes from the scope's counters, per (state, storage_state), when the filter only
//! tests those fields. Any other sort reads the whole scope once, keeping only the best
//! `page_size + 1` records in a bounded heap; any other filter reads the whole scope once to
//! count. The costs are tabled in README.md.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::encoded::ListedRun;
use super::keys::RunOrder;
use super::{
    Inner, experiment_counter_key, experiment_scope, experiment_scope_prefix, keys,
    run_counter_key, run_index_prefix, storage, stored_experiment,
};
use crate::api::Experiment;
use crate::error::{Error, Result};
use crate::query::{Field, FieldValue, ListQuery, Page, Position, Record, SortValue, Tally};
use crate::store::{Stored, StoredRun};
use crate::wkt::Timestamp;

/// Scan direction over a creation-ordered index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Ascending,
    Descending,
}

/// Where the engine reads records: one scope of the store.
pub(super) trait Source {
    type Item: Record;
    /// The scope's records in creation order, strictly after `after` (created_at, id).
    fn scan(
        &self,
        direction: Direction,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Self::Item>> + '_>;
    /// The scope's maintained counters.
    fn tally(&self) -> Result<Tally>;
    /// The scope's records matching at least the filter's state and storage_state predicates,
    /// in the query's order from its cursor on, read from an index; None when no index keeps
    /// that order. `tally`: the scope's counters.
    #[allow(clippy::type_complexity)]
    fn walk(
        &self,
        query: &ListQuery,
        tally: &Tally,
    ) -> Option<Box<dyn Iterator<Item = Result<Self::Item>> + '_>> {
        let _ = tally;
        creation_cursor(query).map(|cursor| self.scan(direction(query), cursor))
    }
}

fn direction(query: &ListQuery) -> Direction {
    if query.sort.descending {
        Direction::Descending
    } else {
        Direction::Ascending
    }
}

/// One page of runs.
pub(super) fn runs(inner: &Inner, query: &ListQuery) -> Result<Page<StoredRun>> {
    let source = RunSource {
        inner,
        prefix: run_index_prefix(&query.scope)?,
        counter: run_counter_key(&query.scope)?,
    };
    let page = list(&source, query)?;
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|r| r.into_stored(inner))
            .collect::<Result<_>>()?,
        total_size: page.total_size,
        next: page.next,
    })
}

/// One page of experiments.
pub(super) fn experiments(inner: &Inner, query: &ListQuery) -> Result<Page<Stored<Experiment>>> {
    let namespace = experiment_scope(&query.scope)?;
    let source = ExperimentSource {
        inner,
        prefix: experiment_scope_prefix(namespace),
        counter: experiment_counter_key(namespace),
    };
    list(&source, query)
}

struct RunSource<'a> {
    inner: &'a Inner,
    prefix: Vec<u8>,
    counter: Vec<u8>,
}

impl Source for RunSource<'_> {
    type Item = ListedRun;

    fn scan(
        &self,
        direction: Direction,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<ListedRun>> + '_> {
        Box::new(
            scan_index(self.inner, self.prefix.clone(), direction, after).filter_map(
                move |entry| match entry {
                    Ok(id) => match self.inner.raw(&keys::record(keys::RUN, &id)) {
                        Ok(Some(record)) => Some(Ok(ListedRun::from_record(&id, record))),
                        // Deleted while the scan runs.
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    },
                    Err(e) => Some(Err(e)),
                },
            ),
        )
    }

    fn tally(&self) -> Result<Tally> {
        Ok(self.inner.counts(&self.counter)?.tally(true))
    }

    fn walk(
        &self,
        query: &ListQuery,
        tally: &Tally,
    ) -> Option<Box<dyn Iterator<Item = Result<ListedRun>> + '_>> {
        let scope = &query.scope;
        let (order, prefixes) = match query.sort.field {
            Field::CreatedAt if query.filter.tests_group() => (
                RunOrder::Created,
                tally
                    .groups
                    .iter()
                    .filter(|g| query.filter.admits_group(g))
                    .map(|g| keys::state_prefix(scope, g.state.unwrap_or(0), g.storage_state))
                    .collect(),
            ),
            Field::CreatedAt => (RunOrder::Created, vec![self.prefix.clone()]),
            Field::DisplayName => (
                RunOrder::Name,
                vec![keys::order_prefix(keys::RUNS_BY_NAME, scope)],
            ),
            Field::FinishedAt => (
                RunOrder::Finished,
                vec![keys::order_prefix(keys::RUNS_BY_FINISHED, scope)],
            ),
            _ => return None,
        };
        let after = match &query.after {
            None => None,
            Some(position) => Some(keys::order_suffix(order, &position.value, &position.id)?),
        };
        let entries = merge_ranges(self.inner, prefixes, direction(query), after);
        Some(Box::new(entries.filter_map(move |entry| {
            let id = match entry {
                Ok(suffix) => match keys::id_of_suffix(order, &suffix) {
                    Some(id) => id.to_owned(),
                    None => return Some(Err(Error::internal("corrupt index entry"))),
                },
                Err(e) => return Some(Err(e)),
            };
            match self.inner.raw(&keys::record(keys::RUN, &id)) {
                Ok(Some(record)) => Some(Ok(ListedRun::from_record(&id, record))),
                // Deleted while the walk runs.
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        })))
    }
}

struct ExperimentSource<'a> {
    inner: &'a Inner,
    prefix: Vec<u8>,
    counter: Vec<u8>,
}

impl Source for ExperimentSource<'_> {
    type Item = Stored<Experiment>;

    fn scan(
        &self,
        direction: Direction,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Stored<Experiment>>> + '_> {
        Box::new(
            scan_index(self.inner, self.prefix.clone(), direction, after).filter_map(
                move |entry| match entry {
                    Ok(id) => match self.inner.raw(&keys::record(keys::EXPERIMENT, &id)) {
                        Ok(Some(record)) => Some(stored_experiment(self.inner, &id, record)),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    },
                    Err(e) => Some(Err(e)),
                },
            ),
        )
    }

    fn tally(&self) -> Result<Tally> {
        Ok(self.inner.counts(&self.counter)?.tally(false))
    }
}

/// An experiment is filtered and sorted on its value.
impl Record for Stored<Experiment> {
    const KIND: &'static str = Experiment::KIND;
    const FIELDS: &'static [(&'static str, Field)] = Experiment::FIELDS;

    fn id(&self) -> &str {
        self.value.id()
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.value.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        self.value.field(field)
    }
}

/// The ids in a creation-ordered index under `prefix`, strictly after `after`.
pub(super) fn scan_index<'a>(
    inner: &'a Inner,
    prefix: Vec<u8>,
    direction: Direction,
    after: Option<(Timestamp, &str)>,
) -> impl Iterator<Item = Result<String>> + 'a {
    let after = after.map(|(created, id)| keys::scope_entry(&[], &created, id));
    index_range(inner, &prefix, direction, after.as_deref()).map(|entry| {
        let suffix = entry?;
        keys::id_of_suffix(RunOrder::Created, &suffix)
            .map(str::to_owned)
            .ok_or_else(|| Error::internal("corrupt index entry"))
    })
}

/// The suffixes (key without `prefix`) of the entries under `prefix`, in `direction`, strictly
/// after the suffix `after`.
fn index_range<'a>(
    inner: &'a Inner,
    prefix: &[u8],
    direction: Direction,
    after: Option<&[u8]>,
) -> Box<dyn Iterator<Item = Result<Vec<u8>>> + 'a> {
    use std::ops::Bound;
    super::assert_off_runtime();
    let with = |suffix: &[u8]| [prefix, suffix].concat();
    let end = match prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    let range = match (direction, after) {
        (_, None) => inner.tree.range((Bound::Included(prefix.to_vec()), end)),
        // The first key after `after` is `after` followed by a 0 byte.
        (Direction::Ascending, Some(after)) => {
            let mut from = with(after);
            from.push(0);
            inner.tree.range((Bound::Included(from), end))
        }
        (Direction::Descending, Some(after)) => inner.tree.range((
            Bound::Included(prefix.to_vec()),
            Bound::Excluded(with(after)),
        )),
    };
    let range: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match direction {
        Direction::Ascending => Box::new(range),
        Direction::Descending => Box::new(range.rev()),
    };
    let prefix_len = prefix.len();
    Box::new(range.map(move |entry| {
        let (key, _) = entry.map_err(storage)?;
        Ok(key.get(prefix_len..).unwrap_or_default().to_vec())
    }))
}

/// The first key after every key that starts with `prefix` (None: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The suffixes under several prefixes merged in `direction` (each prefix's entries are in
/// order; suffixes sort like listing positions, so merging them keeps the order).
fn merge_ranges<'a>(
    inner: &'a Inner,
    prefixes: Vec<Vec<u8>>,
    direction: Direction,
    after: Option<Vec<u8>>,
) -> Box<dyn Iterator<Item = Result<Vec<u8>>> + 'a> {
    let mut ranges: Vec<_> = prefixes
        .iter()
        .map(|p| index_range(inner, p, direction, after.as_deref()))
        .collect();
    if ranges.len() == 1
        && let Some(only) = ranges.pop()
    {
        return only;
    }
    let mut heads: Vec<_> = ranges.iter_mut().map(|r| r.next()).collect();
    Box::new(std::iter::from_fn(move || {
        let next = match heads.iter().position(|h| matches!(h, Some(Err(_)))) {
            Some(failed) => failed,
            None => {
                heads
                    .iter()
                    .enumerate()
                    .filter_map(|(i, head)| match head {
                        Some(Ok(suffix)) => Some((i, suffix)),
                        _ => None,
                    })
                    .reduce(|best, other| {
                        let better = match direction {
                            Direction::Ascending => other.1 < best.1,
                            Direction::Descending => other.1 > best.1,
                        };
                        if better { other } else { best }
                    })?
                    .0
            }
        };
        let head = heads[next].take();
        heads[next] = ranges[next].next();
        head
    }))
}

/// The record's position in the listing order: sort value, then id.
fn position<R: Record>(record: &R, field: Field) -> Position {
    Position {
        value: record.field(field).to_sort_value(),
        id: record.id().to_owned(),
    }
}

/// Where a created_at-ordered query continues in the creation index: None when the query is not
/// one (another sort, or a cursor that is not a creation time).
#[allow(clippy::option_option)]
fn creation_cursor(query: &ListQuery) -> Option<Option<(Timestamp, &str)>> {
    if query.sort.field != Field::CreatedAt {
        return None;
    }
    match &query.after {
        None => Some(None),
        Some(Position {
            value: SortValue::Time(Some((seconds, nanos))),
            id,
        }) => Some(Some((
            Timestamp {
                seconds: *seconds,
                nanos: *nanos,
            },
            id.as_str(),
        ))),
        Some(_) => None,
    }
}

/// Whether answering `query` reads about a page of an index (and the counters for its
/// total), rather than an unbounded part of the scope: an indexed order, and a filter that the
/// index and the counters answer. `runs`: a run query (runs have more indexes).
pub(super) fn reads_a_page(query: &ListQuery, runs: bool) -> bool {
    let filter = &query.filter;
    let order = match query.sort.field {
        Field::CreatedAt => RunOrder::Created,
        Field::DisplayName if runs && filter.is_empty() => RunOrder::Name,
        Field::FinishedAt if runs && filter.is_empty() => RunOrder::Finished,
        _ => return false,
    };
    let cursor_fits = query
        .after
        .as_ref()
        .is_none_or(|p| keys::order_suffix(order, &p.value, &p.id).is_some());
    cursor_fits && filter.only_tests_group()
}

/// Answers `query` from `source`.
pub(super) fn list<S: Source>(source: &S, query: &ListQuery) -> Result<Page<S::Item>> {
    let size = query.page_size;
    let sort = &query.sort;
    let filter = &query.filter;
    let tally = source.tally()?;

    let (mut items, counted) = match source.walk(query, &tally) {
        Some(walk) => {
            let mut items = Vec::with_capacity(size + 1);
            for record in walk {
                let record = record?;
                if filter.matches(&record) {
                    items.push(record);
                    if items.len() > size {
                        break;
                    }
                }
            }
            (items, None)
        }
        None => {
            let (items, count) = best_after(source, query, size + 1)?;
            (items, Some(count))
        }
    };

    let total_size = match filter.count_from(&tally) {
        Some(total) => total,
        None => match counted {
            Some(count) => count,
            None => count_matches(source, query)?,
        },
    };

    let next = if items.len() > size {
        items.truncate(size);
        let last = items
            .last()
            .ok_or_else(|| Error::internal("empty page with a next page"))?;
        Some(position(last, sort.field))
    } else {
        None
    };
    Ok(Page {
        items,
        total_size,
        next,
    })
}

fn count_matches<S: Source>(source: &S, query: &ListQuery) -> Result<u64> {
    let mut count = 0;
    for record in source.scan(Direction::Ascending, None) {
        if query.filter.matches(&record?) {
            count += 1;
        }
    }
    Ok(count)
}

/// An entry of the bounded heap, ordered by listing position in the requested direction.
struct Ranked<R> {
    position: Position,
    record: R,
}

impl<R> PartialEq for Ranked<R> {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
    }
}
impl<R> Eq for Ranked<R> {}
impl<R> PartialOrd for Ranked<R> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<R> Ord for Ranked<R> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.position.cmp(&other.position)
    }
}

/// Reads the whole scope; returns the first `limit` matching records strictly after the query's
/// cursor in its sort order, and the number of records matching the filter.
fn best_after<S: Source>(
    source: &S,
    query: &ListQuery,
    limit: usize,
) -> Result<(Vec<S::Item>, u64)> {
    let sort = &query.sort;
    // Ascending keeps the `limit` smallest positions: a max-heap whose top is evicted; descending
    // the largest, with a min-heap (Reverse).
    let mut ascending: BinaryHeap<Ranked<S::Item>> = BinaryHeap::new();
    let mut descending: BinaryHeap<Reverse<Ranked<S::Item>>> = BinaryHeap::new();
    let mut matched = 0u64;
    for record in source.scan(Direction::Ascending, None) {
        let record = record?;
        if !query.filter.matches(&record) {
            continue;
        }
        matched += 1;
        let value = record.field(sort.field);
        if let Some(after) = &query.after {
            let ordering = value
                .cmp_sort_value(&after.value)
                .then_with(|| record.id().cmp(after.id.as_str()));
            let beyond = if sort.descending {
                ordering == Ordering::Less
            } else {
                ordering == Ordering::Greater
            };
            if !beyond {
                continue;
            }
        }
        let ranked = Ranked {
            position: Position {
                value: value.to_sort_value(),
                id: record.id().to_owned(),
            },
            record,
        };
        if sort.descending {
            descending.push(Reverse(ranked));
            if descending.len() > limit {
                descending.pop();
            }
        } else {
            ascending.push(ranked);
            if ascending.len() > limit {
                ascending.pop();
            }
        }
    }
    let items = if sort.descending {
        // into_sorted_vec of Reverse is descending by position.
        descending
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(r)| r.record)
            .collect()
    } else {
        ascending
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.record)
            .collect()
    };
    Ok((items, matched))
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
