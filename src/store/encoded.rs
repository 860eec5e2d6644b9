//! Stored runs sent without being decoded. A run's record is its protobuf encoding (after the
//! version byte), which is exactly what GetRun and ListRuns put on the wire, so the gRPC adapter
//! can copy those bytes instead of decoding a run (its pipeline_spec is a deep Struct, costly to
//! decode, encode and free) only to encode it again. Listing decodes just the fields it filters
//! and sorts on ([`RunSummary`]); prost skips the rest.

use prost::Message;

use super::codec;
use crate::api::{PipelineVersionReference, Run, run};
use crate::wkt::Timestamp;

/// A run's protobuf encoding, as stored.
#[derive(Debug, Clone)]
pub struct EncodedRun {
    bytes: sled::IVec,
    /// Where the protobuf starts (after the version byte of a stored record).
    start: usize,
}

impl EncodedRun {
    /// A stored record in today's format; other versions must be decoded (and migrated) first.
    pub(super) fn from_record(record: sled::IVec) -> Option<EncodedRun> {
        (record.first() == Some(&codec::FORMAT_VERSION)).then_some(EncodedRun {
            bytes: record,
            start: 1,
        })
    }

    pub fn from_run(run: &Run) -> EncodedRun {
        EncodedRun {
            bytes: run.encode_to_vec().into(),
            start: 0,
        }
    }

    /// The run's protobuf encoding.
    pub fn as_protobuf(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or_default()
    }

    /// The whole run (a record that cannot be decoded becomes a run whose `error` says so, as
    /// every read of a stored run does).
    pub fn decode(&self, run_id: &str) -> Run {
        super::decode_body(run_id, self.as_protobuf())
    }
}

/// The fields of a stored run that listing filters and sorts on (the Run tags without the
/// pipeline spec, runtime config and details, history and error).
#[derive(Clone, PartialEq, Message)]
struct RunSummary {
    #[prost(string, tag = "1")]
    experiment_id: String,
    #[prost(string, tag = "2")]
    run_id: String,
    #[prost(string, tag = "3")]
    display_name: String,
    #[prost(int32, tag = "4")]
    storage_state: i32,
    #[prost(string, tag = "5")]
    description: String,
    #[prost(string, optional, tag = "6")]
    pipeline_id: Option<String>,
    #[prost(message, optional, tag = "18")]
    pipeline_version_reference: Option<PipelineVersionReference>,
    #[prost(string, tag = "9")]
    service_account: String,
    #[prost(message, optional, tag = "10")]
    created_at: Option<Timestamp>,
    #[prost(message, optional, tag = "11")]
    scheduled_at: Option<Timestamp>,
    #[prost(message, optional, tag = "12")]
    finished_at: Option<Timestamp>,
    #[prost(int32, tag = "13")]
    state: i32,
    #[prost(string, tag = "16")]
    recurring_run_id: String,
    #[prost(string, tag = "21")]
    namespace: String,
}

/// A run read for listing: its listed fields decoded (in `summary`, a Run whose other fields are
/// empty), and its full encoding to send.
#[derive(Debug, Clone)]
pub struct ListedRun {
    pub summary: Run,
    pub encoded: EncodedRun,
}

impl ListedRun {
    pub(super) fn from_record(run_id: &str, record: sled::IVec) -> ListedRun {
        let decoded = EncodedRun::from_record(record.clone()).and_then(|encoded| {
            let summary = RunSummary::decode(encoded.as_protobuf()).ok()?;
            Some((summary, encoded))
        });
        match decoded {
            Some((s, encoded)) => {
                // In a oneof the last field read wins; the pipeline spec is not needed here.
                let pipeline_source = match (s.pipeline_id, s.pipeline_version_reference) {
                    (Some(id), None) => Some(run::PipelineSource::PipelineId(id)),
                    (_, Some(r)) => Some(run::PipelineSource::PipelineVersionReference(r)),
                    (None, None) => None,
                };
                let summary = Run {
                    experiment_id: s.experiment_id,
                    run_id: s.run_id,
                    display_name: s.display_name,
                    storage_state: s.storage_state,
                    description: s.description,
                    pipeline_source,
                    service_account: s.service_account,
                    created_at: s.created_at,
                    scheduled_at: s.scheduled_at,
                    finished_at: s.finished_at,
                    state: s.state,
                    recurring_run_id: s.recurring_run_id,
                    namespace: s.namespace,
                    ..Default::default()
                };
                ListedRun { summary, encoded }
            }
            // Old format or damaged: the full decode migrates it or reports the damage.
            None => {
                let run = super::damaged_or_migrated(run_id, &record);
                ListedRun {
                    encoded: EncodedRun::from_run(&run),
                    summary: run,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(run: &Run) -> sled::IVec {
        codec::encode(run).into()
    }

    #[test]
    fn a_listed_run_carries_the_listed_fields_and_the_whole_encoding() {
        let run = Run {
            run_id: "r1".into(),
            display_name: "nightly".into(),
            experiment_id: "e1".into(),
            namespace: "ns".into(),
            state: 3,
            storage_state: 1,
            created_at: Some(Timestamp {
                seconds: 10,
                nanos: 5,
            }),
            pipeline_source: Some(run::PipelineSource::PipelineVersionReference(
                PipelineVersionReference {
                    pipeline_id: "p".into(),
                    pipeline_version_id: "v".into(),
                },
            )),
            runtime_config: Some(Default::default()),
            state_history: vec![Default::default()],
            ..Default::default()
        };
        let listed = ListedRun::from_record("r1", stored(&run));
        assert_eq!(listed.encoded.decode("r1"), run);
        let expected = Run {
            runtime_config: None,
            state_history: Vec::new(),
            ..run
        };
        assert_eq!(listed.summary, expected);
    }

    #[test]
    fn a_damaged_record_is_listed_with_an_error_naming_the_run() {
        let listed = ListedRun::from_record("r9", sled::IVec::from(&[9u8, 1, 2][..]));
        let error = listed.summary.error.clone().expect("an error");
        assert!(error.message.contains("r9"), "{}", error.message);
        assert_eq!(listed.encoded.decode("r9"), listed.summary);

        let garbage =
            ListedRun::from_record("r8", sled::IVec::from(&[codec::FORMAT_VERSION, 0xff][..]));
        assert!(garbage.summary.error.is_some());
    }
}
