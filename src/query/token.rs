//! Page tokens: opaque to clients, tamper-evident, and enough to continue a listing on their own.
//!
//! A token carries the query it belongs to (scope, sort, filter) and the position after the last
//! record returned (its sort value and id), as JSON, signed with HMAC-SHA256 under a secret kept
//! in the store (so tokens survive restarts). Encoded as base64url(mac[16] ++ json).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::SortValue;
use super::filter::Filter;
use super::sort::Sort;
use crate::error::{Error, Result};

const MAC_LEN: usize = 16;
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageToken {
    pub v: u8,
    /// The scope the listing covers, e.g. `experiment:<id>`.
    pub scope: String,
    pub sort: Sort,
    pub filter: Filter,
    /// Sort value and id of the last record of the previous page.
    pub after: SortValue,
    pub after_id: String,
}

impl PageToken {
    pub fn new(
        scope: String,
        sort: Sort,
        filter: Filter,
        after: SortValue,
        after_id: String,
    ) -> Self {
        PageToken {
            v: VERSION,
            scope,
            sort,
            filter,
            after,
            after_id,
        }
    }

    pub fn encode(&self, key: &[u8]) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = mac(key, &json)[..MAC_LEN].to_vec();
        out.extend_from_slice(&json);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decode(text: &str, key: &[u8]) -> Result<PageToken> {
        let invalid = || {
            Error::invalid(
                "page_token is not a token this server issued (altered or truncated); \
                 start again from the first page",
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| invalid())?;
        if bytes.len() <= MAC_LEN {
            return Err(invalid());
        }
        let (tag, json) = bytes.split_at(MAC_LEN);
        let mut check = Hmac::<Sha256>::new_from_slice(key).map_err(|_| invalid())?;
        check.update(json);
        check.verify_truncated_left(tag).map_err(|_| invalid())?;
        let token: PageToken = serde_json::from_slice(json).map_err(|_| invalid())?;
        if token.v != VERSION {
            return Err(invalid());
        }
        Ok(token)
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Field;

    fn token() -> PageToken {
        PageToken::new(
            "namespace:ns".into(),
            Sort {
                field: Field::DisplayName,
                descending: true,
            },
            Filter::default(),
            SortValue::Text("b".into()),
            "run-1".into(),
        )
    }

    #[test]
    fn a_token_round_trips_under_its_key() {
        let t = token();
        assert_eq!(PageToken::decode(&t.encode(b"k"), b"k").unwrap(), t);
    }

    #[test]
    fn altered_truncated_foreign_and_garbage_tokens_are_invalid_argument() {
        let text = token().encode(b"k");
        let mut altered = text.clone().into_bytes();
        let mid = altered.len() / 2;
        altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
        let cases = [
            String::from_utf8(altered).unwrap(),
            text[..text.len() - 3].to_owned(),
            token().encode(b"other key"),
            "garbage!".to_owned(),
            String::new(),
            "AAAA".to_owned(),
        ];
        for bad in cases {
            let err = PageToken::decode(&bad, b"k").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err:?}");
        }
    }
}
