//! Records as a backend hands them out: with the revision a compare-and-set write names, and
//! for runs, the protobuf encoding to send as is.

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::WireType;

use crate::api::{Run, run};
use crate::wkt::StructBytes;

/// The stored state of one record, as the backend that read it identifies it. A write that
/// names a revision replaces exactly that state or fails with Conflict. Opaque: each backend
/// decides what it holds (the stored bytes, a version counter).
#[derive(Clone, PartialEq, Eq)]
pub struct Revision(Bytes);

impl Revision {
    pub fn new(bytes: Bytes) -> Revision {
        Revision(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Revision({} bytes)", self.0.len())
    }
}

/// A record and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub revision: Revision,
}

/// A stored run: its protobuf encoding, which is what GetRun and ListRuns put on the wire, so
/// the gRPC adapter writes these bytes instead of decoding a run only to encode it again.
/// Decoded only where the run itself is needed (a rule, the JSON adapter).
///
/// The encoding may come in two parts: the record (the Run without its pipeline spec) and the
/// spec's bytes, when the backend keeps specs apart (once per distinct spec, see
/// [`split_spec`]). Protobuf allows a message's fields in any order, so the record followed by
/// field 7 is the whole run.
#[derive(Debug, Clone)]
pub struct StoredRun {
    run_id: String,
    revision: Revision,
    record: Bytes,
    spec: Option<Bytes>,
}

/// The field number of Run.pipeline_spec.
const PIPELINE_SPEC_FIELD: u32 = 7;

impl StoredRun {
    /// A run stored as `record` (its encoding, without the spec when `spec` is given) at
    /// `revision`; `spec` is a google.protobuf.Struct's encoding.
    pub fn new(
        run_id: String,
        revision: Revision,
        record: Bytes,
        spec: Option<Bytes>,
    ) -> StoredRun {
        StoredRun {
            run_id,
            revision,
            record,
            spec,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// The record's bytes: the run's encoding, without the spec when it is kept apart.
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// The length of the run's whole protobuf encoding.
    pub fn encoded_len(&self) -> usize {
        self.record.len()
            + self.spec.as_ref().map_or(0, |spec| {
                prost::encoding::key_len(PIPELINE_SPEC_FIELD)
                    + prost::encoding::encoded_len_varint(spec.len() as u64)
                    + spec.len()
            })
    }

    /// Writes the run's whole protobuf encoding.
    pub fn write_protobuf(&self, out: &mut impl BufMut) {
        out.put_slice(&self.record);
        if let Some(spec) = &self.spec {
            prost::encoding::encode_key(PIPELINE_SPEC_FIELD, WireType::LengthDelimited, out);
            prost::encoding::encode_varint(spec.len() as u64, out);
            out.put_slice(spec);
        }
    }

    /// The run's namespace, read without decoding the rest of the record (authorization needs
    /// it on every call that names a run). A record that cannot be read has none: "".
    pub fn namespace(&self) -> String {
        /// Only Run.namespace (field 21); prost skips every other field.
        #[derive(Clone, PartialEq, prost::Message)]
        struct RunNamespace {
            #[prost(string, tag = "21")]
            namespace: String,
        }
        RunNamespace::decode(self.record.clone())
            .map(|r| r.namespace)
            .unwrap_or_default()
    }

    /// The whole run. A record that cannot be decoded becomes a run whose `error` (DATA_LOSS)
    /// says so, so one damaged record does not make a whole scope unreadable.
    pub fn decode(&self) -> Run {
        let mut run =
            Run::decode(self.record.clone()).unwrap_or_else(|e| damaged_run(&self.run_id, e));
        if let Some(spec) = &self.spec {
            run.pipeline_source = Some(run::PipelineSource::PipelineSpec(
                StructBytes::from_protobuf(spec.clone()),
            ));
        }
        run
    }
}

/// A pipeline spec as backends keep it apart: its bytes and their SHA-256, the key under which
/// identical specs (every run of one pipeline) are stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecBlob {
    pub digest: [u8; 32],
    pub bytes: Bytes,
}

impl SpecBlob {
    pub fn of(bytes: Bytes) -> SpecBlob {
        use sha2::Digest;
        SpecBlob {
            digest: sha2::Sha256::digest(&bytes).into(),
            bytes,
        }
    }
}

/// A run's record without its inline pipeline spec, and the spec (None: the run names a
/// pipeline instead). The record plus the spec, as [`StoredRun`] writes them, encode the run.
pub fn split_spec(run: &Run) -> (Vec<u8>, Option<SpecBlob>) {
    match &run.pipeline_source {
        Some(run::PipelineSource::PipelineSpec(spec)) => {
            let without = Run {
                pipeline_source: None,
                ..run.clone()
            };
            (
                without.encode_to_vec(),
                Some(SpecBlob::of(spec.protobuf().clone())),
            )
        }
        _ => (run.encode_to_vec(), None),
    }
}

/// What a run record that cannot be read is served as: its id and an error saying why.
pub fn damaged_run(run_id: &str, e: impl std::fmt::Display) -> Run {
    Run {
        run_id: run_id.to_owned(),
        error: Some(crate::proto::google::rpc::Status {
            code: tonic::Code::DataLoss as i32,
            message: format!("the stored record of run {run_id:?} cannot be read: {e}"),
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_spec() -> Run {
        let spec: pbjson_types::Struct =
            serde_json::from_value(serde_json::json!({"root": {"dag": {"tasks": {}}}})).unwrap();
        Run {
            run_id: "r".into(),
            display_name: "n".into(),
            pipeline_source: Some(run::PipelineSource::PipelineSpec(spec.into())),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_and_its_spec_apart_encode_the_whole_run() {
        let run = run_with_spec();
        let (record, spec) = split_spec(&run);
        let spec = spec.expect("a spec");
        let stored = StoredRun::new(
            "r".into(),
            Revision::new(Bytes::new()),
            record.into(),
            Some(spec.bytes.clone()),
        );
        assert_eq!(stored.decode(), run);
        let mut wire = Vec::new();
        stored.write_protobuf(&mut wire);
        assert_eq!(wire.len(), stored.encoded_len());
        assert_eq!(Run::decode(&wire[..]).unwrap(), run);
        // Identical specs share a digest; another spec has another.
        assert_eq!(split_spec(&run).1.unwrap().digest, spec.digest);
        let other = Run {
            pipeline_source: Some(run::PipelineSource::PipelineSpec(
                pbjson_types::Struct::default().into(),
            )),
            ..run.clone()
        };
        assert_ne!(split_spec(&other).1.unwrap().digest, spec.digest);
    }

    #[test]
    fn a_run_without_a_spec_is_one_record() {
        let run = Run {
            pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
            ..run_with_spec()
        };
        let (record, spec) = split_spec(&run);
        assert!(spec.is_none());
        assert_eq!(Run::decode(&record[..]).unwrap(), run);
    }
}
