//! The backend-neutral list query. A request's `sort_by`, `filter` and `page_token` are parsed
//! and checked here into one [`ListQuery`]; a backend answers it with a [`Page`] however its
//! indexes allow, and the position of the page's last record becomes the next page token.
//!
//! Pagination is keyset, not offset: a page starts strictly after the (sort value, id) of the
//! previous page's last record, so records created, deleted or updated between pages never make
//! a page repeat or skip a record that existed throughout with an unchanged sort value.

use serde::{Deserialize, Serialize};

use super::filter::Filter;
use super::sort::Sort;
use super::token::PageToken;
use super::{QueryLimits, Record, Scope, SortValue};
use crate::error::{Error, Result};

/// Page size used when the request gives 0.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// One list request, as received.
pub struct ListRequest<'a> {
    /// The scope, already checked by the caller; a token is only accepted with its own scope.
    pub scope: Scope,
    pub page_size: i32,
    pub sort_by: &'a str,
    pub filter: &'a str,
    pub page_token: &'a str,
}

/// A record's place in a listing order: its sort value, then its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub value: SortValue,
    pub id: String,
}

/// What a backend must answer: the first `page_size` records of `scope` matching `filter` in
/// `sort` order, strictly after `after`; and how many records match scope and filter in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub scope: Scope,
    pub sort: Sort,
    pub filter: Filter,
    pub after: Option<Position>,
    pub page_size: usize,
}

/// A backend's answer to a [`ListQuery`].
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Records matching scope and filter, ignoring pagination.
    pub total_size: u64,
    /// The position of the last item when more records follow it; None on the last page.
    pub next: Option<Position>,
}

impl ListQuery {
    /// Parses and checks a request for records of type `R`; `key` verifies its page token.
    pub fn parse<R: Record>(
        request: &ListRequest<'_>,
        key: &[u8],
        limits: &QueryLimits,
    ) -> Result<ListQuery> {
        let page_size = page_size(request.page_size, limits)?;
        let scope = request.scope.clone();
        if request.page_token.is_empty() {
            return Ok(ListQuery {
                scope,
                sort: Sort::parse::<R>(request.sort_by)?,
                filter: Filter::parse_with::<R>(request.filter, limits)?,
                after: None,
                page_size,
            });
        }
        let token = PageToken::decode(request.page_token, key)?;
        if token.scope != scope.token_name() {
            return Err(Error::invalid(
                "page_token was issued for a different scope (experiment_id / namespace); \
                 send the same scope with every page",
            ));
        }
        if !request.sort_by.trim().is_empty() && Sort::parse::<R>(request.sort_by)? != token.sort {
            return Err(Error::invalid(format!(
                "page_token was issued for a different sort_by than {:?}; omit sort_by or send \
                 the first page's",
                request.sort_by
            )));
        }
        if !request.filter.trim().is_empty()
            && Filter::parse_with::<R>(request.filter, limits)? != token.filter
        {
            return Err(Error::invalid(
                "page_token was issued for a different filter; omit filter or send the first \
                 page's",
            ));
        }
        Ok(ListQuery {
            scope,
            sort: token.sort,
            filter: token.filter,
            after: Some(Position {
                value: token.after,
                id: token.after_id,
            }),
            page_size,
        })
    }

    /// The token of the page after `page` (empty on the last page), signed with `key`.
    pub fn next_page_token<T>(&self, page: &Page<T>, key: &[u8]) -> String {
        match &page.next {
            None => String::new(),
            Some(last) => PageToken::new(
                self.scope.token_name(),
                self.sort,
                self.filter.clone(),
                last.value.clone(),
                last.id.clone(),
            )
            .encode(key),
        }
    }
}

fn page_size(requested: i32, limits: &QueryLimits) -> Result<usize> {
    match requested {
        n if n < 0 => Err(Error::invalid(format!(
            "page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or positive, not {n}"
        ))),
        0 => Ok(DEFAULT_PAGE_SIZE.min(limits.max_page_size)),
        n => Ok((n as usize).min(limits.max_page_size)),
    }
}

/// How many records of a scope there are per (state, storage_state): what a backend's counters
/// know, so that `total_size` of a filter on those fields alone needs no scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub groups: Vec<TallyGroup>,
}

/// One group of a [`Tally`]: its records' RuntimeState (None when the counters do not tell
/// states apart, or for records without one) and StorageState, as enum numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TallyGroup {
    pub state: Option<i32>,
    pub storage_state: i32,
    pub count: u64,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Run;
    use crate::query::Field;

    const KEY: &[u8] = b"test key";

    fn request<'a>(
        scope: Scope,
        sort_by: &'a str,
        filter: &'a str,
        token: &'a str,
    ) -> ListRequest<'a> {
        ListRequest {
            scope,
            page_size: 2,
            sort_by,
            filter,
            page_token: token,
        }
    }

    fn token_for(scope: Scope, sort_by: &str, filter: &str) -> String {
        let query = ListQuery::parse::<Run>(
            &request(scope, sort_by, filter, ""),
            KEY,
            &QueryLimits::default(),
        )
        .unwrap();
        let page: Page<()> = Page {
            items: vec![(), ()],
            total_size: 5,
            next: Some(Position {
                value: SortValue::Text("b".into()),
                id: "run-2".into(),
            }),
        };
        query.next_page_token(&page, KEY)
    }

    const NAME_FILTER: &str = r#"{"predicates":[{"operation":1,"key":"name","string_value":"a"}]}"#;

    #[test]
    fn a_token_carries_the_query_and_continues_after_the_last_record() {
        let token = token_for(Scope::Namespace("ns".into()), "name desc", NAME_FILTER);
        let limits = QueryLimits::default();
        for (sort_by, filter) in [("", ""), ("name desc", NAME_FILTER)] {
            let next = ListQuery::parse::<Run>(
                &request(Scope::Namespace("ns".into()), sort_by, filter, &token),
                KEY,
                &limits,
            )
            .unwrap();
            assert_eq!(next.sort.field, Field::DisplayName);
            assert!(next.sort.descending);
            assert_eq!(next.filter.predicates.len(), 1);
            assert_eq!(
                next.after,
                Some(Position {
                    value: SortValue::Text("b".into()),
                    id: "run-2".into()
                })
            );
        }
    }

    #[test]
    fn a_token_is_refused_with_another_scope_sort_or_filter() {
        let token = token_for(Scope::Experiment("e1".into()), "name", "");
        let limits = QueryLimits::default();
        let cases = [
            (Scope::Experiment("e2".into()), "name", "", "scope"),
            (Scope::All, "", "", "scope"),
            (Scope::Namespace("e1".into()), "", "", "scope"),
            (Scope::Experiment("e1".into()), "name desc", "", "sort_by"),
            (Scope::Experiment("e1".into()), "", NAME_FILTER, "filter"),
        ];
        for (scope, sort_by, filter, needle) in cases {
            let err = ListQuery::parse::<Run>(
                &request(scope.clone(), sort_by, filter, &token),
                KEY,
                &limits,
            )
            .unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_)),
                "{scope:?}: {err:?}"
            );
            assert!(err.message().contains(needle), "{scope:?}: {err}");
        }
        let err = ListQuery::parse::<Run>(
            &request(Scope::Experiment("e1".into()), "", "", &token),
            b"another key",
            &limits,
        )
        .unwrap_err();
        assert!(
            err.message().contains("not a token this server issued"),
            "{err}"
        );
    }

    #[test]
    fn the_last_page_has_no_token() {
        let query = ListQuery::parse::<Run>(
            &request(Scope::All, "", "", ""),
            KEY,
            &QueryLimits::default(),
        )
        .unwrap();
        let page: Page<()> = Page {
            items: vec![],
            total_size: 0,
            next: None,
        };
        assert_eq!(query.next_page_token(&page, KEY), "");
    }

    #[test]
    fn page_size_rules() {
        let limits = QueryLimits::default();
        assert_eq!(page_size(0, &limits).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7, &limits).unwrap(), 7);
        assert_eq!(page_size(1000, &limits).unwrap(), limits.max_page_size);
        let small = QueryLimits {
            max_page_size: 5,
            ..limits
        };
        assert_eq!(page_size(0, &small).unwrap(), 5);
        assert!(matches!(
            page_size(-1, &limits),
            Err(Error::InvalidArgument(_))
        ));
    }
}
