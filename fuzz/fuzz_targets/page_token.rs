//! The page-token decoder: on arbitrary text, and on arbitrary JSON under a valid signature
//! (random bytes never get past the MAC, so the second half reaches the JSON decoding).
//! Whatever decodes must encode and decode back to itself.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use runledger::query::token::PageToken;
use sha2::Sha256;

const KEY: &[u8] = b"fuzzing-key-0123456789abcdef0123";

/// A token the way the server signs one: base64url(hmac[..16] ++ json).
fn signed(json: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("any key length");
    mac.update(json);
    let mut out = mac.finalize().into_bytes()[..16].to_vec();
    out.extend_from_slice(json);
    URL_SAFE_NO_PAD.encode(out)
}

fn round_trips(token: PageToken) {
    let again = PageToken::decode(&token.encode(KEY), KEY).expect("a token we encoded decodes");
    assert_eq!(again, token);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = PageToken::decode(text, KEY) {
            round_trips(token);
        }
    }
    if let Ok(token) = PageToken::decode(&signed(data), KEY) {
        round_trips(token);
    }
});
