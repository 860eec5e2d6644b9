//! Stored values: one format-version byte, then the record's protobuf encoding. The version lets
//! a later release migrate old records when it reads them.

use prost::Message;

/// The format every record is written in today.
pub const FORMAT_VERSION: u8 = 1;

pub fn encode<M: Message>(record: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + record.encoded_len());
    out.push(FORMAT_VERSION);
    record.encode(&mut out).expect("a Vec grows as needed");
    out
}

pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => M::decode(body).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown record format version {version}")),
        None => Err("empty record".to_owned()),
    }
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
    }

    #[test]
    fn unknown_versions_and_garbage_are_reported_not_misread() {
        assert!(decode::<Run>(&[9, 1, 2]).unwrap_err().contains("version 9"));
        assert!(decode::<Run>(&[]).is_err());
        assert!(decode::<Run>(&[FORMAT_VERSION, 0xff, 0xff]).is_err());
    }
}
