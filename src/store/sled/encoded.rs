//! Stored runs handed out without being decoded ([`StoredRun`] keeps the record's protobuf), and
//! read for listing: listing decodes just the fields it filters and sorts on ([`RunSummary`]);
//! prost skips the rest (the pipeline spec, history, details).

use prost::Message;

use super::{KeyRead, codec, revision, specs};
use crate::api::{PipelineVersionReference, Run, run};
use crate::error::Result;
use crate::query::{Field, FieldValue, Record};
use crate::store::{StoredRun, record::damaged_run};
use crate::wkt::Timestamp;

/// A stored run record as the interface hands it out: the record bytes are its revision, and
/// after the version byte (and the spec digest), its protobuf encoding (shared, not copied), with
/// the spec blob it references (shared too). A record in another format, or one that cannot be
/// decoded, is decoded (migrated, or turned into a run whose error says why) and encoded again;
/// so is one whose spec blob is missing (its error says which).
pub(super) fn stored_run(kv: &impl KeyRead, run_id: &str, record: sled::IVec) -> Result<StoredRun> {
    let revision = revision(record.clone());
    let damaged = |why: String| {
        StoredRun::new(
            run_id.to_owned(),
            revision.clone(),
            damaged_run(run_id, why).encode_to_vec().into(),
            None,
        )
    };
    let (digest, offset) = match (codec::split(&record), codec::body_offset(&record)) {
        (Ok((digest, _)), Some(offset)) => (digest, offset),
        (Err(e), _) => return Ok(damaged(e)),
        (Ok(_), None) => return Ok(damaged("unknown record layout".into())),
    };
    let body = bytes::Bytes::from_owner(record).slice(offset..);
    let spec = match digest {
        None => None,
        Some(digest) => match specs::load(kv, &digest)? {
            Some(spec) => Some(spec),
            None => {
                let mut run = Run::decode(body.clone()).unwrap_or_else(|e| damaged_run(run_id, e));
                run.error = damaged_run(
                    run_id,
                    format!(
                        "its pipeline spec {} is missing (run `runledger check --repair`)",
                        specs::show(&digest)
                    ),
                )
                .error;
                return Ok(StoredRun::new(
                    run_id.to_owned(),
                    revision,
                    run.encode_to_vec().into(),
                    None,
                ));
            }
        },
    };
    Ok(StoredRun::new(run_id.to_owned(), revision, body, spec))
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
/// empty), and its stored record, joined with its spec only if it makes the page
/// ([`ListedRun::into_stored`]).
#[derive(Debug, Clone)]
pub(super) struct ListedRun {
    pub summary: Run,
    record: sled::IVec,
}

impl ListedRun {
    pub(super) fn from_record(run_id: &str, record: sled::IVec) -> ListedRun {
        let summary = match codec::split(&record)
            .ok()
            .and_then(|(_, body)| RunSummary::decode(body).ok())
        {
            Some(s) => {
                // In a oneof the last field read wins; the pipeline spec is not needed here.
                let pipeline_source = match (s.pipeline_id, s.pipeline_version_reference) {
                    (Some(id), None) => Some(run::PipelineSource::PipelineId(id)),
                    (_, Some(r)) => Some(run::PipelineSource::PipelineVersionReference(r)),
                    (None, None) => None,
                };
                Run {
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
                }
            }
            // Unknown format or damaged: the run whose error says why.
            None => codec::decode::<Run>(&record).unwrap_or_else(|e| damaged_run(run_id, e)),
        };
        ListedRun { summary, record }
    }

    /// The stored run to send, joined with its spec.
    pub(super) fn into_stored(self, kv: &impl KeyRead) -> Result<StoredRun> {
        stored_run(kv, &self.summary.run_id, self.record)
    }
}

/// A listed run is filtered and sorted on its summary (the listed fields of the stored run).
impl Record for ListedRun {
    const KIND: &'static str = Run::KIND;
    const FIELDS: &'static [(&'static str, Field)] = Run::FIELDS;

    fn id(&self) -> &str {
        self.summary.id()
    }

    fn created_at(&self) -> Option<Timestamp> {
        self.summary.created_at
    }

    fn field(&self, field: Field) -> FieldValue<'_> {
        self.summary.field(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(run: &Run) -> sled::IVec {
        codec::encode(run).into()
    }

    /// No spec blobs.
    struct Empty;

    impl KeyRead for Empty {
        fn get(&self, _: &[u8]) -> Result<Option<sled::IVec>> {
            Ok(None)
        }
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
        assert_eq!(listed.clone().into_stored(&Empty).unwrap().decode(), run);
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
        assert_eq!(
            listed.clone().into_stored(&Empty).unwrap().decode(),
            listed.summary
        );

        let garbage =
            ListedRun::from_record("r8", sled::IVec::from(&[codec::FORMAT_VERSION, 0xff][..]));
        assert!(garbage.summary.error.is_some());
    }

    #[test]
    fn a_run_whose_spec_blob_is_missing_reads_with_an_error_naming_the_spec() {
        let run = Run {
            run_id: "r1".into(),
            display_name: "n".into(),
            ..Default::default()
        };
        let record = codec::encode_referencing(&run.encode_to_vec(), &[0xab; 32]);
        let read = stored_run(&Empty, "r1", record.into()).unwrap().decode();
        assert_eq!(read.display_name, "n");
        let error = read.error.expect("an error");
        assert!(error.message.contains("sha256:abab"), "{}", error.message);
    }
}
