//! `google.protobuf.Struct` kept as the protobuf bytes it arrived as: a run's pipeline spec.
//!
//! A compiled pipeline is a deep tree of maps and lists (5 KB of protobuf for a small one);
//! decoding it into `pbjson_types::Struct`, and encoding it again, was most of what a CreateRun
//! cost. The spec is never looked into on the way in or out, so it stays bytes end to end: the
//! protobuf codec copies them ([`prost::Message`] below), the store keeps them as they are (so
//! GetRun returns exactly the bytes that were sent), and only the JSON layer converts them
//! ([`serde`] below). [`StructBytes::validate`] checks, without building the tree, that the
//! bytes are a well-formed Struct, so nothing malformed is ever stored.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The deepest nesting of structs and lists accepted, as prost's decoder limits it.
pub const MAX_DEPTH: usize = 100;

/// A `google.protobuf.Struct` as its protobuf encoding (the fields, without the field key and
/// length that enclose it in a message).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StructBytes(Bytes);

impl StructBytes {
    /// Bytes that claim to be a Struct's encoding; [`StructBytes::validate`] checks the claim.
    pub fn from_protobuf(bytes: Bytes) -> StructBytes {
        StructBytes(bytes)
    }

    pub fn protobuf(&self) -> &Bytes {
        &self.0
    }

    /// The decoded tree, for the JSON layer.
    pub fn to_struct(&self) -> Result<pbjson_types::Struct, prost::DecodeError> {
        pbjson_types::Struct::decode(self.0.clone())
    }

    /// Checks that the bytes are a well-formed Struct: map entries of UTF-8 keys and Values,
    /// Values of the six kinds, lists of Values, nested at most [`MAX_DEPTH`] deep, and nothing
    /// else. The error says what is wrong and where.
    pub fn validate(&self) -> Result<(), String> {
        let mut bytes: &[u8] = &self.0;
        let mut path = Vec::new();
        walk_struct(&mut bytes, 1, &mut path).map_err(|reason| {
            if path.is_empty() {
                return reason;
            }
            let mut at = path.join(".");
            if at.len() > 80 {
                let mut cut = 60;
                while !at.is_char_boundary(cut) {
                    cut -= 1;
                }
                at = format!("{}… ({} levels)", &at[..cut], path.len());
            }
            format!("at {at}: {reason}")
        })
    }
}

/// A tree (from JSON) is encoded with every map's keys in order, so that equal specs are equal
/// bytes: stores keep one copy of each distinct spec, found by its bytes' digest. (A Struct's
/// fields are a hash map: encoding it as it is would give each request its own key order.)
impl From<&pbjson_types::Struct> for StructBytes {
    fn from(tree: &pbjson_types::Struct) -> StructBytes {
        let mut out = Vec::with_capacity(tree.encoded_len());
        encode_sorted_struct(tree, &mut out);
        StructBytes(out.into())
    }
}

/// A Struct's fields (map entries: key 1, Value 2) in key order.
fn encode_sorted_struct(tree: &pbjson_types::Struct, out: &mut Vec<u8>) {
    let mut fields: Vec<_> = tree.fields.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, value) in fields {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        let mut encoded = Vec::new();
        encode_sorted_value(value, &mut encoded);
        put_delimited(2, &encoded, &mut entry);
        put_delimited(1, &entry, out);
    }
}

/// A Value's fields: nested structs and lists in key order, scalars as prost encodes them.
fn encode_sorted_value(value: &pbjson_types::Value, out: &mut Vec<u8>) {
    use pbjson_types::value::Kind;
    match &value.kind {
        Some(Kind::StructValue(tree)) => {
            let mut nested = Vec::new();
            encode_sorted_struct(tree, &mut nested);
            put_delimited(5, &nested, out);
        }
        Some(Kind::ListValue(list)) => {
            let mut values = Vec::new();
            for item in &list.values {
                let mut encoded = Vec::new();
                encode_sorted_value(item, &mut encoded);
                put_delimited(1, &encoded, &mut values);
            }
            put_delimited(6, &values, out);
        }
        _ => value.encode(out).expect("a Vec grows as needed"),
    }
}

fn put_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl From<pbjson_types::Struct> for StructBytes {
    fn from(tree: pbjson_types::Struct) -> StructBytes {
        StructBytes::from(&tree)
    }
}

impl fmt::Debug for StructBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StructBytes({} bytes)", self.0.len())
    }
}

/// The protobuf codec copies the fields as they come: each one is written back with its key, so
/// the bytes kept are the bytes received (for the minimal varints every encoder writes).
impl Message for StructBytes {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // A freshly frozen buffer is not shared: taking it back costs no copy.
        let mut out = std::mem::take(&mut self.0)
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        match wire_type {
            WireType::LengthDelimited => {
                let mut field = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut field, buf, ctx)?;
                encode_key(tag, wire_type, &mut out);
                encode_varint(field.len() as u64, &mut out);
                out.put_slice(&field);
            }
            WireType::Varint => {
                let mut value = 0u64;
                prost::encoding::uint64::merge(wire_type, &mut value, buf, ctx)?;
                encode_key(tag, wire_type, &mut out);
                encode_varint(value, &mut out);
            }
            WireType::SixtyFourBit => {
                let mut value = 0u64;
                prost::encoding::fixed64::merge(wire_type, &mut value, buf, ctx)?;
                encode_key(tag, wire_type, &mut out);
                out.put_u64_le(value);
            }
            WireType::ThirtyTwoBit => {
                let mut value = 0u32;
                prost::encoding::fixed32::merge(wire_type, &mut value, buf, ctx)?;
                encode_key(tag, wire_type, &mut out);
                out.put_u32_le(value);
            }
            // No Struct has groups; refuse them as the wrong wire type for a map entry.
            WireType::StartGroup | WireType::EndGroup => {
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
            }
        }
        self.0 = out.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

impl Serialize for StructBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_struct()
            .map_err(|e| serde::ser::Error::custom(format!("a stored Struct cannot be read: {e}")))?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StructBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        pbjson_types::Struct::deserialize(deserializer).map(StructBytes::from)
    }
}

/// One length-delimited field's content, or what is wrong with the field.
fn length_delimited<'a>(bytes: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let len = decode_varint(bytes).map_err(|e| format!("{what}: {e}"))? as usize;
    if len > bytes.len() {
        return Err(format!("{what} is cut short"));
    }
    let (content, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(content)
}

fn key(bytes: &mut &[u8], within: &str) -> Result<(u32, WireType), String> {
    decode_key(bytes).map_err(|e| format!("malformed field in a {within}: {e}"))
}

fn expect_wire(found: WireType, expected: WireType, what: &str) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!("{what} has wire type {found:?}, not {expected:?}"))
    }
}

fn too_deep(depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        Err(format!(
            "it nests more than {MAX_DEPTH} structs and lists deep (protobuf's recursion limit)"
        ))
    } else {
        Ok(())
    }
}

/// Walks a Struct's fields; on an error, `path` holds the keys and list indexes down to it.
fn walk_struct(bytes: &mut &[u8], depth: usize, path: &mut Vec<String>) -> Result<(), String> {
    too_deep(depth)?;
    while !bytes.is_empty() {
        let (tag, wire) = key(bytes, "Struct")?;
        if tag != 1 {
            return Err(format!("a Struct has no field {tag}"));
        }
        expect_wire(wire, WireType::LengthDelimited, "a Struct entry")?;
        let mut entry = length_delimited(bytes, "a Struct entry")?;
        let mut key_seen = None;
        while !entry.is_empty() {
            match key(&mut entry, "Struct entry")? {
                (1, WireType::LengthDelimited) => {
                    let name = length_delimited(&mut entry, "a Struct key")?;
                    let name = std::str::from_utf8(name)
                        .map_err(|_| "a Struct key is not UTF-8".to_owned())?;
                    key_seen = Some(name);
                }
                (2, WireType::LengthDelimited) => {
                    let mut value = length_delimited(&mut entry, "a Struct value")?;
                    path.push(key_seen.unwrap_or("?").to_owned());
                    walk_value(&mut value, depth, path)?;
                    path.pop();
                }
                (tag, wire) => {
                    return Err(format!(
                        "a Struct entry has no field {tag} of wire type {wire:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn walk_value(bytes: &mut &[u8], depth: usize, path: &mut Vec<String>) -> Result<(), String> {
    while !bytes.is_empty() {
        let (tag, wire) = key(bytes, "Value")?;
        match tag {
            // null_value (an enum) and bool_value.
            1 | 4 => {
                expect_wire(wire, WireType::Varint, "a null or bool Value")?;
                decode_varint(bytes).map_err(|e| format!("a Value: {e}"))?;
            }
            // number_value, a double.
            2 => {
                expect_wire(wire, WireType::SixtyFourBit, "a number Value")?;
                if bytes.len() < 8 {
                    return Err("a number Value is cut short".to_owned());
                }
                *bytes = &bytes[8..];
            }
            3 => {
                expect_wire(wire, WireType::LengthDelimited, "a string Value")?;
                let text = length_delimited(bytes, "a string Value")?;
                std::str::from_utf8(text).map_err(|_| "a string Value is not UTF-8".to_owned())?;
            }
            5 => {
                expect_wire(wire, WireType::LengthDelimited, "a struct Value")?;
                let mut inner = length_delimited(bytes, "a struct Value")?;
                walk_struct(&mut inner, depth + 1, path)?;
            }
            6 => {
                expect_wire(wire, WireType::LengthDelimited, "a list Value")?;
                let mut list = length_delimited(bytes, "a list Value")?;
                too_deep(depth + 1)?;
                let mut index = 0;
                while !list.is_empty() {
                    let (tag, wire) = key(&mut list, "ListValue")?;
                    if tag != 1 {
                        return Err(format!("a ListValue has no field {tag}"));
                    }
                    expect_wire(wire, WireType::LengthDelimited, "a list element")?;
                    let mut element = length_delimited(&mut list, "a list element")?;
                    path.push(index.to_string());
                    walk_value(&mut element, depth + 1, path)?;
                    path.pop();
                    index += 1;
                }
            }
            other => return Err(format!("a Value has no field {other}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> pbjson_types::Struct {
        serde_json::from_value(json!({
            "pipelineInfo": {"name": "train"},
            "root": {"dag": {"tasks": {"a": {"dependentTasks": ["b", "c"]}}}},
            "n": 3.5, "ok": true, "none": null, "list": [1, "x", [[]], {"deep": {}}],
        }))
        .unwrap()
    }

    /// A message with a Struct field at tag 7, as the Run carries one.
    #[derive(Clone, PartialEq, Message)]
    struct Holder {
        #[prost(message, optional, tag = "7")]
        spec: Option<StructBytes>,
        #[prost(string, tag = "3")]
        name: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct TreeHolder {
        #[prost(message, optional, tag = "7")]
        spec: Option<pbjson_types::Struct>,
        #[prost(string, tag = "3")]
        name: String,
    }

    #[test]
    fn the_bytes_received_are_the_bytes_kept_and_sent() {
        let wire = TreeHolder {
            spec: Some(spec()),
            name: "n".into(),
        }
        .encode_to_vec();
        let kept = Holder::decode(&wire[..]).unwrap();
        assert_eq!(kept.encode_to_vec(), wire);
        let spec_bytes = kept.spec.unwrap();
        assert_eq!(spec_bytes.to_struct().unwrap(), spec());
        assert!(spec_bytes.validate().is_ok());
    }

    #[test]
    fn equal_trees_are_equal_bytes_whatever_their_maps_order() {
        let a = StructBytes::from(spec());
        for _ in 0..8 {
            // Each decode builds new hash maps, with their own iteration order.
            let again: pbjson_types::Struct =
                serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
            assert_eq!(StructBytes::from(again), a);
        }
        assert_eq!(a.to_struct().unwrap(), spec());
        assert!(a.validate().is_ok());
    }

    #[test]
    fn json_goes_through_the_tree() {
        let bytes = StructBytes::from(spec());
        let text = serde_json::to_value(&bytes).unwrap();
        assert_eq!(
            text["root"]["dag"]["tasks"]["a"]["dependentTasks"],
            json!(["b", "c"])
        );
        let back: StructBytes = serde_json::from_value(text).unwrap();
        assert_eq!(back.to_struct().unwrap(), spec());
    }

    #[test]
    fn malformed_structs_are_refused_with_a_reason() {
        let nested = |levels: usize| {
            let mut value = json!({});
            for _ in 0..levels {
                value = json!({ "x": value });
            }
            StructBytes::from(serde_json::from_value::<pbjson_types::Struct>(value).unwrap())
        };
        assert!(nested(MAX_DEPTH - 1).validate().is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x10, 0x01], "no field 2"),
            (vec![0x0a, 0x05, 0x0a], "cut short"),
            (vec![0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe], "UTF-8"),
            (vec![0x0a, 0x04, 0x12, 0x02, 0x38, 0x01], "no field 7"),
            (vec![0x0a, 0x04, 0x12, 0x02, 0x11, 0x00], "cut short"),
            (vec![0x0a, 0x03, 0x12, 0x01, 0x2a], "a struct Value"),
            (vec![0x0a, 0x01, 0xff], "malformed field"),
        ];
        for (bytes, needle) in cases {
            let err = StructBytes::from_protobuf(bytes.clone().into())
                .validate()
                .unwrap_err();
            assert!(err.contains(needle), "{bytes:?}: {err}");
        }
        let err = nested(MAX_DEPTH + 1).validate().unwrap_err();
        assert!(err.contains("nests more than"), "{err}");
        assert!(err.starts_with("at x.x.x"), "{err}");
        assert!(err.len() < 200, "the path is cut short: {err}");
    }

    #[test]
    fn a_group_inside_a_struct_is_a_decode_error() {
        // Field 7 holding a start-group key.
        let wire = [0x3a, 0x01, 0x0b];
        assert!(Holder::decode(&wire[..]).is_err());
    }
}
