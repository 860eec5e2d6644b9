//! Stored values: one format-version byte, then the record's protobuf encoding. The version lets
//! a later release migrate old records when it reads them.
//!
//! | version | layout |
//! |---|---|
//! | 1 | `1`, protobuf: the whole record |
//! | 2 | `2`, 32-byte SHA-256 of a spec blob ([`super::specs`]), protobuf: the record without that spec |
//!
//! Version 2 is for any record kind that keeps a large spec apart, stored once per distinct spec:
//! how the spec joins the record again is the record kind's business (a run's is field 7).

use prost::Message;

/// The format of a record that holds everything itself.
pub const FORMAT_VERSION: u8 = 1;
/// The format of a record that references a spec blob by its digest.
pub const SPEC_REF_VERSION: u8 = 2;

/// A SHA-256 digest: the key of a spec blob.
pub type Digest = [u8; 32];

pub fn encode<M: Message>(record: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(FORMAT_VERSION);
    record.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// A record already encoded (version 1).
pub fn encode_plain(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(body);
    out
}

/// A record (already encoded, without its spec) that references the spec blob `digest`.
pub fn encode_referencing(body: &[u8], digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + digest.len() + body.len());
    out.push(SPEC_REF_VERSION);
    out.extend_from_slice(digest);
    out.extend_from_slice(body);
    out
}

/// A stored value taken apart: the spec it references (if any) and the protobuf body.
pub fn split(bytes: &[u8]) -> Result<(Option<Digest>, &[u8]), String> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => Ok((None, body)),
        Some((&SPEC_REF_VERSION, rest)) => {
            let digest = rest
                .get(..32)
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| "a spec reference cut short".to_owned())?;
            Ok((Some(digest), &rest[32..]))
        }
        Some((version, _)) => Err(format!("unknown record format version {version}")),
        None => Err("empty record".to_owned()),
    }
}

/// The protobuf body's offset in a stored value of a known version.
pub fn body_offset(bytes: &[u8]) -> Option<usize> {
    match bytes.first() {
        Some(&FORMAT_VERSION) => Some(1),
        Some(&SPEC_REF_VERSION) if bytes.len() >= 33 => Some(33),
        _ => None,
    }
}

/// Decodes a record (without the spec it may reference).
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
    let (_, body) = split(bytes)?;
    M::decode(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Run;

    #[test]
    fn records_round_trip_and_carry_their_version() {
        let run = Run {
            run_id: "r1".into(),
            display_name: "n".into(),
            ..Default::default()
        };
        let bytes = encode(&run);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Run>(&bytes).unwrap(), run);

        let referencing = encode_referencing(&run.encode_to_vec(), &[7; 32]);
        assert_eq!(referencing[0], SPEC_REF_VERSION);
        assert_eq!(split(&referencing).unwrap().0, Some([7; 32]));
        assert_eq!(decode::<Run>(&referencing).unwrap(), run);
        assert_eq!(body_offset(&referencing), Some(33));
    }

    #[test]
    fn unknown_versions_and_garbage_are_reported_not_misread() {
        assert!(decode::<Run>(&[9, 1, 2]).unwrap_err().contains("version 9"));
        assert!(decode::<Run>(&[]).is_err());
        assert!(decode::<Run>(&[FORMAT_VERSION, 0xff, 0xff]).is_err());
        assert!(
            split(&[SPEC_REF_VERSION, 1, 2])
                .unwrap_err()
                .contains("cut short")
        );
    }
}
