//! How the sled backend answers a [`ListQuery`].
//!
//! Sorted by created_at (either direction), a page reads the scope's creation index from the
//! cursor on and stops after `page_size + 1` matches; total_size comes from the scope's
//! counters when the filter is empty or only tests storage_state. Any other sort reads the whole
//! scope once, keeping only the best `page_size + 1` records in a bounded heap; any other filter
//! reads the whole scope once to count.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::encoded::ListedRun;
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
        items: page.items.into_iter().map(|r| r.stored).collect(),
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
        Ok(self.inner.counts(&self.counter)?.tally())
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
                        Ok(Some(record)) => Some(stored_experiment(&id, record)),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    },
                    Err(e) => Some(Err(e)),
                },
            ),
        )
    }

    fn tally(&self) -> Result<Tally> {
        Ok(self.inner.counts(&self.counter)?.tally())
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
    let start = after.map(|(created, id)| keys::scope_entry(&prefix, &created, id));
    let mut end = prefix.clone();
    // Every key of the scope is `prefix ++ 12 time bytes ++ id`; 0xff.. past the time bytes
    // bounds them all.
    end.extend_from_slice(&[0xff; 13]);
    let iter = match (direction, start) {
        (_, None) => inner.tree.range(prefix.clone()..end),
        (Direction::Ascending, Some(start)) => {
            let mut from = start;
            from.push(0); // strictly after
            inner.tree.range(from..end)
        }
        (Direction::Descending, Some(start)) => inner.tree.range(prefix.clone()..start),
    };
    let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match direction {
        Direction::Ascending => Box::new(iter),
        Direction::Descending => Box::new(iter.rev()),
    };
    let prefix_len = prefix.len();
    iter.map(move |entry| {
        let (key, _) = entry.map_err(storage)?;
        let rest = key.get(prefix_len..).unwrap_or_default();
        keys::split_scope_entry(rest)
            .map(|(_, id)| id.to_owned())
            .ok_or_else(|| Error::internal("corrupt index entry"))
    })
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

/// Whether answering `query` reads about a page of the index (and the counters for its
/// total), rather than the whole scope.
pub(super) fn reads_a_page(query: &ListQuery) -> bool {
    let counted = query
        .filter
        .predicates
        .iter()
        .all(|p| p.field == Field::StorageState);
    creation_cursor(query).is_some() && counted
}

/// Answers `query` from `source`.
pub(super) fn list<S: Source>(source: &S, query: &ListQuery) -> Result<Page<S::Item>> {
    let size = query.page_size;
    let sort = &query.sort;
    let filter = &query.filter;

    let (mut items, counted) = match creation_cursor(query) {
        Some(cursor) => {
            let direction = if sort.descending {
                Direction::Descending
            } else {
                Direction::Ascending
            };
            let mut items = Vec::with_capacity(size + 1);
            for record in source.scan(direction, cursor) {
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
        _ => {
            let (items, count) = best_after(source, query, size + 1)?;
            (items, Some(count))
        }
    };

    let total_size = match filter.count_from(&source.tally()?) {
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
