//! Content-addressed spec blobs: each distinct spec (a pipeline spec, ~5 KB of protobuf that
//! every run of one pipeline repeats) is stored once under its SHA-256, with a count of the
//! records that reference it.
//!
//! | key | value |
//! |---|---|
//! | `B` digest | the spec's bytes, exactly as they were sent |
//! | `U` digest | u64 BE: how many records reference it (never 0: the last release removes both) |
//!
//! A record references a blob through its stored form ([`codec::encode_referencing`]). Whoever
//! writes such a record calls [`retain`] for the new reference and [`release`] for the one it
//! drops, on the same [`KeyWrite`] (a write's transaction), so the count changes in the same
//! atomic batch as the record. Nothing here knows which kind of record references a blob: runs
//! do today, other records with specs (pipeline versions) can share the same blobs.
//!
//! `runledger check` recounts every reference and compares ([`super::check`]).

use bytes::Bytes;

use super::codec::Digest;
use super::{KeyRead, KeyWrite};
use crate::error::{Error, Result};
use crate::store::SpecBlob;

pub const BLOB: u8 = b'B';
pub const USES: u8 = b'U';

pub fn blob_key(digest: &Digest) -> Vec<u8> {
    key(BLOB, digest)
}

pub fn uses_key(digest: &Digest) -> Vec<u8> {
    key(USES, digest)
}

fn key(prefix: u8, digest: &Digest) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(prefix);
    key.extend_from_slice(digest);
    key
}

/// A digest as people read it in messages.
pub fn show(digest: &Digest) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The error `runledger check --repair` leaves on a `kind` record whose spec blob `digest` was
/// lost, when it removes the reference.
pub fn lost(kind: &str, digest: &Digest) -> crate::proto::google::rpc::Status {
    crate::proto::google::rpc::Status {
        code: tonic::Code::DataLoss as i32,
        message: format!(
            "the pipeline spec of this {kind} ({}) was lost; `runledger check --repair` removed \
             the reference",
            show(digest)
        ),
        details: Vec::new(),
    }
}

/// The digest of a `B` or `U` key.
pub fn digest_of_key(key: &[u8]) -> Option<Digest> {
    key.get(1..).and_then(|d| d.try_into().ok())
}

pub fn decode_uses(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

fn uses(kv: &impl KeyRead, digest: &Digest) -> Result<u64> {
    match kv.get(&uses_key(digest))? {
        None => Ok(0),
        Some(value) => decode_uses(&value).ok_or_else(|| {
            Error::internal(format!(
                "the use count of spec {} cannot be decoded: run `runledger check --repair`",
                show(digest)
            ))
        }),
    }
}

/// Adds a reference to `blob`, storing its bytes if it is new.
pub fn retain(kv: &mut impl KeyWrite, blob: &SpecBlob) -> Result<()> {
    let count = uses(kv, &blob.digest)?;
    if count == 0 {
        kv.put(blob_key(&blob.digest), blob.bytes.to_vec().into());
    }
    kv.put(
        uses_key(&blob.digest),
        (count + 1).to_be_bytes().to_vec().into(),
    );
    Ok(())
}

/// Drops a reference to the blob `digest`, removing it with its last reference.
pub fn release(kv: &mut impl KeyWrite, digest: &Digest) -> Result<()> {
    match uses(kv, digest)? {
        0 => Err(Error::internal(format!(
            "a record references spec {} that has no references counted: the store is \
             inconsistent (run `runledger check`)",
            show(digest)
        ))),
        1 => {
            kv.remove(blob_key(digest));
            kv.remove(uses_key(digest));
            Ok(())
        }
        n => {
            kv.put(uses_key(digest), (n - 1).to_be_bytes().to_vec().into());
            Ok(())
        }
    }
}

/// Moves a record's reference from `old` to `new` (either may be None); nothing changes when
/// both are the same spec.
pub fn replace(kv: &mut impl KeyWrite, old: Option<&Digest>, new: Option<&SpecBlob>) -> Result<()> {
    if old == new.map(|b| &b.digest) {
        return Ok(());
    }
    if let Some(new) = new {
        retain(kv, new)?;
    }
    if let Some(old) = old {
        release(kv, old)?;
    }
    Ok(())
}

/// The bytes of the blob `digest` (shared, not copied), or None when it is missing.
pub fn load(kv: &impl KeyRead, digest: &Digest) -> Result<Option<Bytes>> {
    Ok(kv.get(&blob_key(digest))?.map(Bytes::from_owner))
}
