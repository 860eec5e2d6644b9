//! The shared steps of a list use case, once its scope is decided and allowed: parse the
//! request into a [`ListQuery`] (its page token checked against the scope), fetch the page from
//! the store, and issue the next page token.

use std::future::Future;

use super::Core;
use crate::error::Result;
use crate::query::{ListQuery, ListRequest, Page, Record};

/// One page as a list response carries it.
pub(super) struct Listed<T> {
    pub items: Vec<T>,
    /// Records matching scope and filter, as the API's int32.
    pub total_size: i32,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl Core {
    /// Lists records of type `R` for `request`, read by `fetch`.
    pub(super) async fn list_page<R: Record, T, Fut>(
        &self,
        request: &ListRequest<'_>,
        fetch: impl FnOnce(ListQuery) -> Fut,
    ) -> Result<Listed<T>>
    where
        Fut: Future<Output = Result<Page<T>>>,
    {
        let query = ListQuery::parse::<R>(request, &self.token_key, &self.limits.query)?;
        let page = fetch(query.clone()).await?;
        Ok(Listed {
            next_page_token: query.next_page_token(&page, &self.token_key),
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
            items: page.items,
        })
    }
}
