//! `runledger check --database-url`: the invariants the embedded store's check verifies, on a
//! database, read in one REPEATABLE READ snapshot (so it can run while replicas serve).
//!
//! Records are the truth; everything else is derived from them and must agree: every hot
//! column with its record, every scope counter with the rows, every spec's reference count
//! with the records holding it (runs, pipeline versions, recurring runs) and its digest with its
//! bytes; every run's experiment exists in the run's namespace, every default experiment in its
//! namespace, every version's pipeline exists ([`super::check_catalog`]); the change log is
//! numbered without gaps up to `change_seq`.

use std::collections::BTreeMap;
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use prost::Message;

use super::check_catalog::{self, CatalogCheck};
use super::connect::DatabaseUrl;
use super::error::from_db;
use super::migrate;
use super::rows::{self, ExperimentRow, RunRow};
use crate::api::{Experiment, Run, run};
use crate::error::Result;
use crate::wkt::StructBytes;

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub schema_version: i32,
    pub runs: u64,
    pub experiments: u64,
    pub specs: u64,
    pub counters: u64,
    pub changes: u64,
    /// One line per problem, naming the row.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schema version {}: {} runs, {} experiments, {} specs, {} counters, {} changes retained",
            self.schema_version,
            self.runs,
            self.experiments,
            self.specs,
            self.counters,
            self.changes
        )?;
        if self.problems.is_empty() {
            return writeln!(f, "consistent: no problems found");
        }
        writeln!(f, "{} problems:", self.problems.len())?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// A counter row's key: (kind, key, state, storage_state).
type CountKey = (i8, Vec<u8>, Vec<u8>, Vec<u8>);

/// Checks the database at `url` without changing it. Fails (rather than reporting) only when
/// it cannot be reached or its schema is not this runledger's.
pub async fn check_database(url: &str) -> Result<CheckReport> {
    let db = DatabaseUrl::parse(url)?;
    let mut client = db.connect_spawned().await?;
    let err = |e| from_db(&db, e);
    let version = migrate::current_version(&client, &db).await?;
    migrate::ensure_current(&db, version)?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err)?;
    let mut check = Check {
        report: CheckReport {
            schema_version: version,
            ..CheckReport::default()
        },
        ..Check::default()
    };

    let experiments = tx
        .query(
            &format!(
                "SELECT {}, {} FROM experiments ORDER BY experiment_id",
                rows::EXPERIMENT_READ_COLUMNS,
                "namespace, display_name, description, created_s, created_ns, storage_state"
            ),
            &[],
        )
        .await
        .map_err(err)?;
    for row in &experiments {
        check.experiment(row);
    }

    let runs = tx
        .query_raw(
            &format!(
                "SELECT {}, r.experiment_id, r.namespace, r.display_name, r.description, \
                 r.pipeline_id, r.service_account, r.recurring_run_id, r.created_s, r.created_ns, \
                 r.scheduled_s, r.scheduled_ns, r.finished_s, r.finished_ns, r.state, \
                 r.storage_state, r.pipeline_version_id FROM runs r",
                rows::RUN_READ_COLUMNS
            ),
            std::iter::empty::<i32>(),
        )
        .await
        .map_err(err)?;
    let mut runs = std::pin::pin!(runs);
    while let Some(row) = runs.next().await {
        check.run(&row.map_err(err)?);
    }

    let catalog = tx
        .query_raw(
            &format!(
                "SELECT {} FROM catalog r ORDER BY r.kind, r.id",
                check_catalog::CHECKED_COLUMNS
            ),
            std::iter::empty::<i32>(),
        )
        .await
        .map_err(err)?;
    let mut catalog = std::pin::pin!(catalog);
    let mut catalog_check = CatalogCheck::default();
    while let Some(row) = catalog.next().await {
        catalog_check.row(&mut check, &row.map_err(err)?);
    }
    catalog_check.finish(&mut check);

    let specs = tx
        .query("SELECT digest, bytes, refs FROM specs", &[])
        .await
        .map_err(err)?;
    check.specs(&specs);

    let defaults = tx
        .query(
            "SELECT d.namespace, d.experiment_id, e.namespace FROM default_experiments d \
             LEFT JOIN experiments e ON e.experiment_id = d.experiment_id",
            &[],
        )
        .await
        .map_err(err)?;
    for row in &defaults {
        let namespace: Vec<u8> = row.get(0);
        let id: Vec<u8> = row.get(1);
        let actual: Option<Vec<u8>> = row.get(2);
        if actual.as_ref() != Some(&namespace) {
            check.problem(format!(
                "the default experiment {:?} of namespace {:?} is not in that namespace",
                lossy(&id),
                lossy(&namespace)
            ));
        }
    }

    let counters: Vec<(CountKey, i64)> = tx
        .query_raw(
            "SELECT kind, key, state, storage_state, n FROM counts WHERE n <> 0",
            std::iter::empty::<i32>(),
        )
        .await
        .map_err(err)?
        .map_ok(|r| ((r.get(0), r.get(1), r.get(2), r.get(3)), r.get(4)))
        .try_collect()
        .await
        .map_err(err)?;
    check.counters(counters);

    let log = tx
        .query_one(
            "SELECT (SELECT last FROM change_seq), count(*), min(seq), max(seq) FROM changes",
            &[],
        )
        .await
        .map_err(err)?;
    check.log(log.get(0), log.get(1), log.get(2), log.get(3));
    tx.commit().await.map_err(err)?;
    Ok(check.report)
}

#[derive(Default)]
pub(super) struct Check {
    report: CheckReport,
    /// Experiment id → namespace.
    experiments: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Spec digest → runs holding it.
    refs: BTreeMap<Vec<u8>, i64>,
    /// What the counters must say.
    expected: BTreeMap<CountKey, i64>,
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Check {
    pub(super) fn problem(&mut self, message: String) {
        self.report.problems.push(message);
    }

    pub(super) fn count(&mut self, key: CountKey) {
        *self.expected.entry(key).or_default() += 1;
    }

    /// One more record holds spec `digest`.
    pub(super) fn reference(&mut self, digest: &[u8]) {
        *self.refs.entry(digest.to_vec()).or_default() += 1;
    }

    fn count_run(&mut self, experiment_id: &[u8], namespace: &[u8], state: &[u8], storage: &[u8]) {
        for (kind, key) in [(b'a', &[][..]), (b'x', experiment_id), (b'n', namespace)] {
            self.count((kind as i8, key.to_vec(), state.to_vec(), storage.to_vec()));
        }
    }

    /// Columns: experiment_id, revision, record, last_run_s, last_run_ns, namespace,
    /// display_name, description, created_s, created_ns, storage_state.
    fn experiment(&mut self, row: &tokio_postgres::Row) {
        self.report.experiments += 1;
        let id: Vec<u8> = row.get(0);
        let namespace: Vec<u8> = row.get(5);
        let storage: Vec<u8> = row.get(10);
        self.experiments.insert(id.clone(), namespace.clone());
        self.count((b'e' as i8, Vec::new(), Vec::new(), storage.clone()));
        self.count((b'p' as i8, namespace.clone(), Vec::new(), storage.clone()));
        let record: &[u8] = row.get(2);
        let decoded = match Experiment::decode(record) {
            Ok(e) => e,
            Err(e) => {
                self.problem(format!(
                    "experiment {:?}: the record cannot be decoded: {e}",
                    lossy(&id)
                ));
                return;
            }
        };
        let expected = ExperimentRow::of(&decoded);
        let actual = ExperimentRow {
            experiment_id: id.clone(),
            namespace,
            display_name: row.get(6),
            description: row.get(7),
            created: (row.get(8), row.get(9)),
            storage_state: storage,
            last_run: expected.last_run,
            record: expected.record.clone(),
        };
        for (column, differs) in [
            (
                "experiment_id",
                expected.experiment_id != actual.experiment_id,
            ),
            ("namespace", expected.namespace != actual.namespace),
            ("display_name", expected.display_name != actual.display_name),
            ("description", expected.description != actual.description),
            ("created_at", expected.created != actual.created),
            (
                "storage_state",
                expected.storage_state != actual.storage_state,
            ),
        ] {
            if differs {
                self.problem(format!(
                    "experiment {:?}: column {column} disagrees with the record",
                    lossy(&id)
                ));
            }
        }
    }

    /// Columns: RUN_READ_COLUMNS (run_id, revision, record, spec_digest, spec bytes), then
    /// experiment_id, namespace, display_name, description, pipeline_id, service_account,
    /// recurring_run_id, created_s/ns, scheduled_s/ns, finished_s/ns, state, storage_state,
    /// pipeline_version_id.
    fn run(&mut self, row: &tokio_postgres::Row) {
        self.report.runs += 1;
        let id: Vec<u8> = row.get(0);
        let name = lossy(&id);
        let record: &[u8] = row.get(2);
        let digest: Option<Vec<u8>> = row.get(3);
        let spec: Option<Vec<u8>> = row.get(4);
        let experiment_id: Vec<u8> = row.get(5);
        let namespace: Vec<u8> = row.get(6);
        let state: Vec<u8> = row.get(18);
        let storage: Vec<u8> = row.get(19);
        match self.experiments.get(&experiment_id) {
            None => self.problem(format!(
                "run {name:?}: its experiment {:?} does not exist",
                lossy(&experiment_id)
            )),
            Some(ns) if *ns != namespace => self.problem(format!(
                "run {name:?}: namespace {:?} differs from its experiment's {:?}",
                lossy(&namespace),
                lossy(ns)
            )),
            Some(_) => {}
        }
        if let Some(digest) = &digest {
            self.reference(digest);
            if spec.is_none() {
                self.problem(format!(
                    "run {name:?}: its spec {} is missing",
                    rows::hex(digest)
                ));
            }
        }
        let mut decoded = match Run::decode(record) {
            Ok(run) => run,
            Err(e) => {
                self.problem(format!("run {name:?}: the record cannot be decoded: {e}"));
                // Counted as its columns say: nothing better is known.
                self.count_run(&experiment_id, &namespace, &state, &storage);
                return;
            }
        };
        if matches!(
            decoded.pipeline_source,
            Some(run::PipelineSource::PipelineSpec(_))
        ) {
            self.problem(format!(
                "run {name:?}: the record holds its spec instead of the specs table"
            ));
        }
        if let Some(spec) = spec {
            decoded.pipeline_source = Some(run::PipelineSource::PipelineSpec(
                StructBytes::from_protobuf(spec.into()),
            ));
        }
        let expected = RunRow::of(&decoded);
        // The record is the truth the counters must agree with.
        self.count_run(
            &expected.experiment_id,
            &expected.namespace,
            &expected.state,
            &expected.storage_state,
        );
        let columns: [(&str, bool); 15] = [
            ("run_id", expected.run_id != id),
            ("experiment_id", expected.experiment_id != experiment_id),
            ("namespace", expected.namespace != namespace),
            (
                "display_name",
                expected.display_name != row.get::<_, Vec<u8>>(7),
            ),
            (
                "description",
                expected.description != row.get::<_, Vec<u8>>(8),
            ),
            (
                "pipeline_id",
                expected.pipeline_id != row.get::<_, Vec<u8>>(9),
            ),
            (
                "service_account",
                expected.service_account != row.get::<_, Vec<u8>>(10),
            ),
            (
                "recurring_run_id",
                expected.recurring_run_id != row.get::<_, Vec<u8>>(11),
            ),
            ("created_at", expected.created != (row.get(12), row.get(13))),
            (
                "scheduled_at",
                expected.scheduled != (row.get(14), row.get(15)),
            ),
            (
                "finished_at",
                expected.finished != (row.get(16), row.get(17)),
            ),
            ("state", expected.state != state),
            ("storage_state", expected.storage_state != storage),
            ("spec_digest", expected.digest() != digest.as_deref()),
            (
                "pipeline_version_id",
                expected.pipeline_version_id != row.get::<_, Vec<u8>>(20),
            ),
        ];
        for (column, differs) in columns {
            if differs {
                self.problem(format!(
                    "run {name:?}: column {column} disagrees with the record"
                ));
            }
        }
    }

    fn specs(&mut self, specs: &[tokio_postgres::Row]) {
        use sha2::Digest;
        let mut refs = std::mem::take(&mut self.refs);
        for row in specs {
            self.report.specs += 1;
            let digest: Vec<u8> = row.get(0);
            let bytes: &[u8] = row.get(1);
            let stored: i64 = row.get(2);
            if sha2::Sha256::digest(bytes)[..] != digest[..] {
                self.problem(format!(
                    "spec {}: its bytes do not have that SHA-256",
                    rows::hex(&digest)
                ));
            }
            let held = refs.remove(&digest).unwrap_or(0);
            if held != stored {
                self.problem(format!(
                    "spec {}: reference count {stored}, but {held} runs, pipeline versions and \
                     recurring runs hold it",
                    rows::hex(&digest)
                ));
            }
        }
        // Runs naming a spec that is not stored were reported with the run.
    }

    fn counters(&mut self, actual: Vec<(CountKey, i64)>) {
        self.report.counters = actual.len() as u64;
        let mut expected = std::mem::take(&mut self.expected);
        for (key, n) in actual {
            let want = expected.remove(&key).unwrap_or(0);
            if want != n {
                self.problem(format!(
                    "counter {}: {n}, but {want} records",
                    show_count(&key)
                ));
            }
        }
        for (key, want) in expected {
            self.problem(format!(
                "counter {}: missing, but {want} records",
                show_count(&key)
            ));
        }
    }

    fn log(&mut self, last: i64, count: i64, min: Option<i64>, max: Option<i64>) {
        self.report.changes = count as u64;
        if let (Some(min), Some(max)) = (min, max) {
            if max - min + 1 != count {
                self.problem(format!(
                    "change log: {count} changes between {min} and {max}: numbers are missing"
                ));
            }
            if max != last {
                self.problem(format!(
                    "change log: the last change is {max}, but change_seq says {last}"
                ));
            }
        }
    }
}

fn show_count((kind, key, state, storage): &CountKey) -> String {
    let scope = match *kind as u8 {
        b'a' => "every run".to_owned(),
        b'x' => format!("runs of experiment {:?}", lossy(key)),
        b'n' => format!("runs of namespace {:?}", lossy(key)),
        b'e' => "every experiment".to_owned(),
        b'p' => format!("experiments of namespace {:?}", lossy(key)),
        b'i' => format!("pipelines of namespace {:?}", lossy(key)),
        b'v' => format!("versions of pipeline {:?}", lossy(key)),
        b'g' => "every recurring run".to_owned(),
        b'h' => format!("recurring runs of experiment {:?}", lossy(key)),
        b'y' => format!("recurring runs of namespace {:?}", lossy(key)),
        other => format!("kind {other:?} {:?}", lossy(key)),
    };
    if state.is_empty() && storage.is_empty() {
        format!("({scope})")
    } else if state.is_empty() {
        format!("({scope}, {})", lossy(storage))
    } else {
        format!("({scope}, {}, {})", lossy(state), lossy(storage))
    }
}
