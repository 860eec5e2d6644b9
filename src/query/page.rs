//! The pagination engine shared by ListRuns and ListExperiments.
//!
//! Keyset, not offset: a page starts strictly after the (sort value, id) of the previous page's
//! last record, so records created, deleted or updated between pages never make a page repeat
//! or skip a record that existed throughout with an unchanged sort value.
//!
//! Cost: sorted by created_at (either direction), a page reads the scope's creation index from
//! the cursor on and stops after `page_size + 1` matches; total_size comes from the scope's
//! counters when the filter is empty or only tests storage_state. Any other sort reads the whole
//! scope once, keeping only the best `page_size + 1` records in a bounded heap; any other filter
//! reads the whole scope once to count.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::filter::Filter;
use super::sort::Sort;
use super::token::PageToken;
use super::{Field, QueryLimits, Record, SortValue};
use crate::error::{Error, Result};
use crate::store::{Counts, Order};
use crate::wkt::Timestamp;

/// Page size used when the request gives 0.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Where the engine reads records: one scope of the store.
pub trait Source {
    type Item: Record;
    /// The scope's records in creation order, strictly after `after` (created_at, id).
    fn scan(
        &self,
        order: Order,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Self::Item>> + '_>;
    /// The scope's maintained counters.
    fn counts(&self) -> Result<Counts>;
}

/// One list request, as received.
pub struct PageRequest<'a> {
    /// Identifies the scope; a token is only accepted with the scope it was issued for.
    pub scope: String,
    pub page_size: i32,
    pub sort_by: &'a str,
    pub filter: &'a str,
    pub page_token: &'a str,
}

pub struct Page<R> {
    pub items: Vec<R>,
    pub total_size: i32,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// The record's position in the listing order: sort value, then id.
type Position = (SortValue, String);

fn page_size(requested: i32, limits: &QueryLimits) -> Result<usize> {
    match requested {
        n if n < 0 => Err(Error::invalid(format!(
            "page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or positive, not {n}"
        ))),
        0 => Ok(DEFAULT_PAGE_SIZE.min(limits.max_page_size)),
        n => Ok((n as usize).min(limits.max_page_size)),
    }
}

/// Resolves the query of a request: from its token (checked against the request) or from its
/// sort_by and filter.
fn resolve<R: Record>(
    request: &PageRequest<'_>,
    key: &[u8],
    limits: &QueryLimits,
) -> Result<(Sort, Filter, Option<Position>)> {
    if request.page_token.is_empty() {
        let sort = Sort::parse::<R>(request.sort_by)?;
        let filter = Filter::parse_with::<R>(request.filter, limits)?;
        return Ok((sort, filter, None));
    }
    let token = PageToken::decode(request.page_token, key)?;
    if token.scope != request.scope {
        return Err(Error::invalid(
            "page_token was issued for a different scope (experiment_id / namespace); \
             send the same scope with every page",
        ));
    }
    if !request.sort_by.trim().is_empty() && Sort::parse::<R>(request.sort_by)? != token.sort {
        return Err(Error::invalid(format!(
            "page_token was issued for a different sort_by than {:?}; omit sort_by or send the \
             first page's",
            request.sort_by
        )));
    }
    if !request.filter.trim().is_empty()
        && Filter::parse_with::<R>(request.filter, limits)? != token.filter
    {
        return Err(Error::invalid(
            "page_token was issued for a different filter; omit filter or send the first page's",
        ));
    }
    Ok((
        token.sort,
        token.filter,
        Some((token.after, token.after_id)),
    ))
}

/// Returns one page of `source` for `request`; `key` signs the page tokens.
pub fn list<S: Source>(
    source: &S,
    request: &PageRequest<'_>,
    key: &[u8],
    limits: &QueryLimits,
) -> Result<Page<S::Item>> {
    let size = page_size(request.page_size, limits)?;
    let (sort, filter, after) = resolve::<S::Item>(request, key, limits)?;

    let fast_cursor = match &after {
        None => Some(None),
        Some((SortValue::Time(Some((seconds, nanos))), id)) => Some(Some((
            Timestamp {
                seconds: *seconds,
                nanos: *nanos,
            },
            id.as_str(),
        ))),
        Some(_) => None,
    };
    let (mut items, counted) = match fast_cursor {
        Some(cursor) if sort.field == Field::CreatedAt => {
            let order = if sort.descending {
                Order::Descending
            } else {
                Order::Ascending
            };
            let mut items = Vec::with_capacity(size + 1);
            for record in source.scan(order, cursor) {
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
            let (items, count) = best_after(source, &sort, &filter, after.as_ref(), size + 1)?;
            (items, Some(count))
        }
    };

    let total = match filter.count_from(source.counts()?) {
        Some(total) => total,
        None => match counted {
            Some(count) => count,
            None => count_matches(source, &filter)?,
        },
    };

    let next_page_token = if items.len() > size {
        items.truncate(size);
        let last = items
            .last()
            .ok_or_else(|| Error::internal("empty page with a next page"))?;
        PageToken::new(
            request.scope.clone(),
            sort,
            filter,
            last.field(sort.field).to_sort_value(),
            last.id().to_owned(),
        )
        .encode(key)
    } else {
        String::new()
    };
    Ok(Page {
        items,
        total_size: i32::try_from(total).unwrap_or(i32::MAX),
        next_page_token,
    })
}

fn count_matches<S: Source>(source: &S, filter: &Filter) -> Result<u64> {
    let mut count = 0;
    for record in source.scan(Order::Ascending, None) {
        if filter.matches(&record?) {
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

/// Reads the whole scope; returns the first `limit` matching records strictly after `after` in
/// the sort order, and the number of records matching the filter.
fn best_after<S: Source>(
    source: &S,
    sort: &Sort,
    filter: &Filter,
    after: Option<&Position>,
    limit: usize,
) -> Result<(Vec<S::Item>, u64)> {
    // Ascending keeps the `limit` smallest positions: a max-heap whose top is evicted; descending
    // the largest, with a min-heap (Reverse).
    let mut ascending: BinaryHeap<Ranked<S::Item>> = BinaryHeap::new();
    let mut descending: BinaryHeap<Reverse<Ranked<S::Item>>> = BinaryHeap::new();
    let mut matched = 0u64;
    for record in source.scan(Order::Ascending, None) {
        let record = record?;
        if !filter.matches(&record) {
            continue;
        }
        matched += 1;
        let value = record.field(sort.field);
        if let Some((after_value, after_id)) = after {
            let ordering = value
                .cmp_sort_value(after_value)
                .then_with(|| record.id().cmp(after_id.as_str()));
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
            position: (value.to_sort_value(), record.id().to_owned()),
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
