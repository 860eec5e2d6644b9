//! Records as a backend hands them out: with the revision a compare-and-set write names, and
//! for runs, the protobuf encoding to send as is.

use bytes::Bytes;
use prost::Message;

use crate::api::Run;

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

/// A stored run: its protobuf encoding, which is exactly what GetRun and ListRuns put on the
/// wire, so the gRPC adapter copies these bytes instead of decoding a run only to encode it
/// again. Decoded only where the run itself is needed (a rule, the JSON adapter).
#[derive(Debug, Clone)]
pub struct StoredRun {
    run_id: String,
    revision: Revision,
    protobuf: Bytes,
}

impl StoredRun {
    /// A run stored as `protobuf` (its encoding) at `revision`.
    pub fn new(run_id: String, revision: Revision, protobuf: Bytes) -> StoredRun {
        StoredRun {
            run_id,
            revision,
            protobuf,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// The run's protobuf encoding.
    pub fn protobuf(&self) -> &[u8] {
        &self.protobuf
    }

    /// The whole run. A record that cannot be decoded becomes a run whose `error` (DATA_LOSS)
    /// says so, so one damaged record does not make a whole scope unreadable.
    pub fn decode(&self) -> Run {
        Run::decode(self.protobuf.clone()).unwrap_or_else(|e| damaged_run(&self.run_id, e))
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
