//! Our Rust types for two well-known protobuf types, where the generated ones do not fit:
//! [`Timestamp`] (its JSON form ends in `Z`, as KFP's gateway writes it) and [`StructBytes`]
//! (a run's pipeline spec, kept as the protobuf bytes the client sent).

mod struct_bytes;
mod timestamp;

pub use struct_bytes::StructBytes;
pub use timestamp::Timestamp;
