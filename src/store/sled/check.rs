//! Consistency checking and repair of a data directory (`runledger check`).
//!
//! Records (`R`, `E`) are the truth; everything else is derived from them: the scope indexes
//! (`A`/`X`/`N`/`Q`/`P`), the experiment names (`M`), the counters (`C`). The check reads the
//! whole tree once, recomputes every derived entry from the records with the same functions the
//! writer uses, and compares. It also checks that every value decodes, that a record's key is
//! its id, that every run's experiment exists in the run's namespace and that every default
//! experiment (`D`) exists in its namespace.
//!
//! Repair rewrites the derived entries from the records in one atomic sled batch, then checks
//! again. It cannot invent lost records: a run whose experiment is gone stays a problem that
//! needs a human, and a store with an undecodable record is left untouched (a rebuild would
//! silently drop the record from every index).
//!
//! The cheaper check the server runs at startup is in `startup.rs`; the format marker in
//! `format.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use super::catalog_check::{self, CatalogScan};
use super::format::{DATA_FORMAT, FORMAT_SETTING, ensure_format, read_format};
use super::keys::{self, ScopeEntry};
use super::{
    Counts, codec, experiment_counter_key, experiment_scope_prefix, run_counter_key,
    run_index_prefix, storage,
};
use crate::api::{Experiment, Run};
use crate::error::{Error, Result};
use crate::query::Scope;
use crate::wkt::Timestamp;

const TOKEN_KEY_SETTING: &str = "page-token-key";

/// Tries (50 ms apart) to take the data dir's lock in the offline tools.
const LOCK_ATTEMPTS: u32 = 40;

/// What `runledger check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub runs: u64,
    pub experiments: u64,
    pub pipelines: u64,
    pub pipeline_versions: u64,
    pub recurring_runs: u64,
    /// Index entries (`A X N Q P M D`).
    pub index_entries: u64,
    pub counters: u64,
    pub settings: u64,
    /// One line per problem, saying what is wrong with which key.
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
            "{} runs, {} experiments, {} index entries, {} counters, {} settings",
            self.runs, self.experiments, self.index_entries, self.counters, self.settings
        )?;
        if self.pipelines + self.pipeline_versions + self.recurring_runs > 0 {
            writeln!(
                f,
                "{} pipelines, {} pipeline versions, {} recurring runs",
                self.pipelines, self.pipeline_versions, self.recurring_runs
            )?;
        }
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

/// What `runledger check --repair` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub before: CheckReport,
    /// Derived entries removed and (re)written by the repair batch.
    pub removed: u64,
    pub written: u64,
    /// The check after the repair: what a rebuild could not fix.
    pub after: CheckReport,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "before repair: {}", self.before)?;
        writeln!(
            f,
            "repair: removed {} and wrote {} index entries and counters, in one atomic batch",
            self.removed, self.written
        )?;
        write!(f, "after repair: {}", self.after)
    }
}

/// Checks the data dir `dir` without changing it. Fails (rather than reporting) only when the
/// dir cannot be opened or was written by a newer runledger.
pub fn check_data_dir(dir: &Path) -> Result<CheckReport> {
    let (_db, tree) = open_offline(dir)?;
    read_format(&tree)?;
    Ok(Scan::run(&tree)?.report)
}

/// Rebuilds every index entry and counter of `dir` from its records, atomically, then checks it
/// again. Also writes the format marker if it is missing.
pub fn repair_data_dir(dir: &Path) -> Result<RepairReport> {
    let (db, tree) = open_offline(dir)?;
    read_format(&tree)?;
    let scan = Scan::run(&tree)?;
    if scan.undecodable > 0 {
        // Rebuilding now would drop those records from every index and counter, hiding them.
        return Err(Error::FailedPrecondition(format!(
            "{} records in {} cannot be decoded (see `runledger check`), so their index entries \
             cannot be rebuilt; nothing was changed. Restore the data dir from a backup",
            scan.undecodable,
            dir.display()
        )));
    }
    let before = scan.report.clone();
    let plan = scan.repair_plan(&tree)?;
    let (removed, written) = (plan.removed, plan.written);
    tree.apply_batch(plan.batch).map_err(storage)?;
    ensure_format(&tree)?;
    db.flush().map_err(storage)?;
    let after = Scan::run(&tree)?.report;
    Ok(RepairReport {
        before,
        removed,
        written,
        after,
    })
}

/// Opens an existing data dir for the offline tools; never creates one.
fn open_offline(dir: &Path) -> Result<(sled::Db, sled::Tree)> {
    if !dir.join("conf").is_file() && !dir.join("db").is_file() {
        return Err(Error::invalid(format!(
            "{} is not a runledger data dir (no sled database in it)",
            dir.display()
        )));
    }
    // sled releases its file lock when the last of its background threads lets go of the
    // database, a moment after the owner closed it: retry the lock briefly before giving up.
    let mut attempts = 0;
    let db = loop {
        match super::sled_config(dir).open() {
            Ok(db) => break db,
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock && attempts < LOCK_ATTEMPTS =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "cannot open data dir {} ({e}); is a runledger server using it? Stop it first",
                    dir.display()
                )));
            }
        }
    };
    let tree = db.open_tree(super::TREE).map_err(storage)?;
    Ok((db, tree))
}

/// What the check remembers about a run record.
struct RunFacts {
    experiment_id: String,
    namespace: String,
    created: Timestamp,
    archived: bool,
}

struct ExperimentFacts {
    namespace: String,
    name: String,
    created: Timestamp,
    archived: bool,
}

/// One pass over the tree: what is there, and the problems found on the way.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) report: CheckReport,
    /// Records that cannot be decoded: a rebuild cannot know their index entries.
    undecodable: usize,
    runs: BTreeMap<String, RunFacts>,
    experiments: BTreeMap<String, ExperimentFacts>,
    /// Actual derived entries: scope indexes, names, defaults, counters (key → value).
    index: BTreeMap<Vec<u8>, Vec<u8>>,
    names: BTreeMap<Vec<u8>, Vec<u8>>,
    defaults: BTreeMap<Vec<u8>, Vec<u8>>,
    counters: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Pipelines, versions, recurring runs and leases (catalog_check.rs).
    catalog: CatalogScan,
}

/// What the records say the derived entries must be.
#[derive(Default)]
struct Expected {
    index: BTreeSet<Vec<u8>>,
    names: BTreeMap<Vec<u8>, String>,
    counters: BTreeMap<Vec<u8>, Counts>,
}

/// A key or value quoted in a message: lossy UTF-8, cut to a readable length.
pub(super) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

pub(super) fn describe_entry(key: &[u8]) -> String {
    match keys::parse_scope_entry(key) {
        Some(ScopeEntry {
            index,
            part,
            created,
            id,
        }) => {
            let scope = match (index, part) {
                (keys::ALL_RUNS, _) => "all runs".to_owned(),
                (keys::RUNS_BY_EXPERIMENT, Some(p)) => format!("runs of experiment {p:?}"),
                (keys::RUNS_BY_NAMESPACE, Some(p)) => format!("runs of namespace {p:?}"),
                (keys::ALL_EXPERIMENTS, _) => "all experiments".to_owned(),
                (_, Some(p)) => format!("experiments of namespace {p:?}"),
                (_, None) => "?".to_owned(),
            };
            format!("index entry ({scope}, created {created}, id {id:?})")
        }
        None => format!("malformed index key {:?}", show(key)),
    }
}

impl Scan {
    pub(super) fn run(tree: &sled::Tree) -> Result<Scan> {
        let mut scan = Scan::default();
        for entry in tree.iter() {
            let (key, value) = entry.map_err(storage)?;
            scan.visit(&key, &value);
        }
        scan.report.pipelines = scan.catalog.pipelines;
        scan.report.pipeline_versions = scan.catalog.versions;
        scan.report.recurring_runs = scan.catalog.recurring_runs;
        scan.undecodable += scan.catalog.undecodable;
        scan.compare();
        Ok(scan)
    }

    fn problem(&mut self, message: String) {
        self.report.problems.push(message);
    }

    fn visit(&mut self, key: &[u8], value: &[u8]) {
        let Some((&kind, rest)) = key.split_first() else {
            return self.problem("an empty key".into());
        };
        match kind {
            keys::RUN => {
                self.report.runs += 1;
                let id = String::from_utf8_lossy(rest).into_owned();
                match codec::decode::<Run>(value) {
                    Err(e) => {
                        self.undecodable += 1;
                        self.problem(format!("run record {id:?} cannot be decoded: {e}"))
                    }
                    Ok(run) => {
                        let archived = super::txn::is_archived_run(&run);
                        if run.run_id != id {
                            self.problem(format!(
                                "run record under key {id:?} has run_id {:?}",
                                run.run_id
                            ));
                        }
                        self.runs.insert(
                            id,
                            RunFacts {
                                experiment_id: run.experiment_id,
                                namespace: run.namespace,
                                created: run.created_at.unwrap_or_default(),
                                archived,
                            },
                        );
                    }
                }
            }
            keys::EXPERIMENT => {
                self.report.experiments += 1;
                let id = String::from_utf8_lossy(rest).into_owned();
                match codec::decode::<Experiment>(value) {
                    Err(e) => {
                        self.undecodable += 1;
                        self.problem(format!("experiment record {id:?} cannot be decoded: {e}"))
                    }
                    Ok(e) => {
                        if e.experiment_id != id {
                            self.problem(format!(
                                "experiment record under key {id:?} has experiment_id {:?}",
                                e.experiment_id
                            ));
                        }
                        self.experiments.insert(
                            id,
                            ExperimentFacts {
                                archived: super::txn::is_archived_experiment(&e),
                                namespace: e.namespace,
                                name: e.display_name,
                                created: e.created_at.unwrap_or_default(),
                            },
                        );
                    }
                }
            }
            keys::ALL_RUNS
            | keys::RUNS_BY_EXPERIMENT
            | keys::RUNS_BY_NAMESPACE
            | keys::ALL_EXPERIMENTS
            | keys::EXPERIMENTS_BY_NAMESPACE => {
                self.report.index_entries += 1;
                self.index.insert(key.to_vec(), value.to_vec());
            }
            keys::EXPERIMENT_NAME => {
                self.report.index_entries += 1;
                self.names.insert(key.to_vec(), value.to_vec());
            }
            keys::DEFAULT_EXPERIMENT => {
                self.report.index_entries += 1;
                self.defaults.insert(key.to_vec(), value.to_vec());
            }
            keys::COUNTER => {
                self.report.counters += 1;
                self.counters.insert(key.to_vec(), value.to_vec());
            }
            keys::SETTING => {
                self.report.settings += 1;
                if rest == TOKEN_KEY_SETTING.as_bytes() && value.len() != 32 {
                    self.problem(format!(
                        "setting {TOKEN_KEY_SETTING:?} is {} bytes long, not 32",
                        value.len()
                    ));
                }
            }
            kind if catalog_check::handles(kind) => {
                if self.catalog.visit(key, value) {
                    self.report.index_entries += 1;
                }
            }
            _ => self.problem(format!("unknown key {:?}", show(key))),
        }
    }

    /// The namespace of an experiment the scan found.
    fn experiment_namespace(&self, id: &str) -> Option<String> {
        self.experiments.get(id).map(|e| e.namespace.clone())
    }

    fn expected(&self) -> (Expected, Vec<String>) {
        let mut out = Expected::default();
        let mut problems = Vec::new();
        for (id, run) in &self.runs {
            let facts = Run {
                experiment_id: run.experiment_id.clone(),
                namespace: run.namespace.clone(),
                ..Default::default()
            };
            for scope in Scope::of_run(&facts) {
                let (Ok(prefix), Ok(counter)) = (run_index_prefix(&scope), run_counter_key(&scope))
                else {
                    continue;
                };
                out.index
                    .insert(keys::scope_entry(&prefix, &run.created, id));
                let c = out.counters.entry(counter).or_default();
                c.total += 1;
                c.archived += run.archived as u64;
            }
        }
        // Oldest first, so that when two experiments share a name the older one keeps it.
        let mut by_age: Vec<_> = self.experiments.iter().collect();
        by_age.sort_by_key(|(id, e)| (e.created, *id));
        for (id, e) in by_age {
            for ns in [None, Some(e.namespace.as_str())] {
                out.index.insert(keys::scope_entry(
                    &experiment_scope_prefix(ns),
                    &e.created,
                    id,
                ));
                let c = out.counters.entry(experiment_counter_key(ns)).or_default();
                c.total += 1;
                c.archived += e.archived as u64;
            }
            let name_key = keys::experiment_name(&e.namespace, &e.name);
            if let Some(other) = out.names.get(&name_key) {
                problems.push(format!(
                    "experiments {other:?} and {id:?} share the name {:?} in namespace {:?}",
                    e.name, e.namespace
                ));
            } else {
                out.names.insert(name_key, id.clone());
            }
        }
        self.catalog.expect_counters(&mut out.counters);
        (out, problems)
    }

    fn compare(&mut self) {
        let (expected, mut problems) = self.expected();
        problems.extend(
            self.catalog
                .problems(&|id: &str| self.experiment_namespace(id)),
        );

        for (id, run) in &self.runs {
            match self.experiments.get(&run.experiment_id) {
                None => problems.push(format!(
                    "run {id:?} belongs to experiment {:?}, which does not exist",
                    run.experiment_id
                )),
                Some(e) if e.namespace != run.namespace => problems.push(format!(
                    "run {id:?} is in namespace {:?} but its experiment {:?} is in {:?}",
                    run.namespace, run.experiment_id, e.namespace
                )),
                Some(_) => {}
            }
        }

        for (key, value) in &self.index {
            if !expected.index.contains(key) {
                let owner = keys::parse_scope_entry(key).map(|e| {
                    let exists = match e.index {
                        keys::ALL_RUNS | keys::RUNS_BY_EXPERIMENT | keys::RUNS_BY_NAMESPACE => {
                            self.runs.contains_key(&e.id)
                        }
                        _ => self.experiments.contains_key(&e.id),
                    };
                    if exists {
                        "does not match its record (scope or created_at differ)"
                    } else {
                        "points at a record that does not exist"
                    }
                });
                problems.push(format!(
                    "{} {}",
                    describe_entry(key),
                    owner.unwrap_or("cannot be parsed")
                ));
            } else if !value.is_empty() {
                problems.push(format!("{} has a non-empty value", describe_entry(key)));
            }
        }
        for key in expected
            .index
            .difference(&self.index.keys().cloned().collect())
        {
            problems.push(format!("{} is missing", describe_entry(key)));
        }

        for (key, value) in &self.names {
            let what = keys::parse_experiment_name(key)
                .map(|(ns, name)| format!("experiment name {name:?} in namespace {ns:?}"))
                .unwrap_or_else(|| format!("malformed name key {:?}", show(key)));
            match expected.names.get(key) {
                Some(id) if id.as_bytes() == value.as_slice() => {}
                Some(id) => problems.push(format!(
                    "{what} points at {:?}, but the experiment with that name is {id:?}",
                    show(value)
                )),
                None => problems.push(format!(
                    "{what} points at {:?}, but no experiment has that name",
                    show(value)
                )),
            }
        }
        for (key, id) in &expected.names {
            if !self.names.contains_key(key) {
                problems.push(format!("the name entry of experiment {id:?} is missing"));
            }
        }

        for (key, value) in &self.defaults {
            let namespace = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
            let id = String::from_utf8_lossy(value).into_owned();
            match self.experiments.get(&id) {
                None => problems.push(format!(
                    "the default experiment of namespace {namespace:?} is {id:?}, which does not \
                     exist"
                )),
                Some(e) if e.namespace != namespace => problems.push(format!(
                    "the default experiment of namespace {namespace:?} is {id:?}, which is in \
                     namespace {:?}",
                    e.namespace
                )),
                Some(_) => {}
            }
        }

        for (key, value) in &self.counters {
            let want = expected.counters.get(key).copied().unwrap_or_default();
            match Counts::decode(value) {
                Err(_) => problems.push(format!(
                    "counter {:?} cannot be decoded ({} bytes)",
                    show(key),
                    value.len()
                )),
                Ok(have) if have != want => problems.push(format!(
                    "counter {:?} says {} ({} archived); the records say {} ({} archived)",
                    show(key),
                    have.total,
                    have.archived,
                    want.total,
                    want.archived
                )),
                Ok(_) => {}
            }
        }
        for (key, want) in &expected.counters {
            if !self.counters.contains_key(key) {
                problems.push(format!(
                    "counter {:?} is missing (the records say {})",
                    show(key),
                    want.total
                ));
            }
        }
        self.report.problems.extend(problems);
    }

    /// One batch that makes every derived entry what the records say.
    fn repair_plan(&self, tree: &sled::Tree) -> Result<RepairPlan> {
        let (expected, _) = self.expected();
        let mut plan = RepairPlan::default();
        let repair = self
            .catalog
            .repair(&|id: &str| self.experiment_namespace(id));
        for key in repair.remove {
            plan.remove(&key);
        }
        for (key, value) in repair.insert {
            plan.insert(&key, value);
        }
        for key in self.index.keys() {
            if !expected.index.contains(key) {
                plan.remove(key);
            }
        }
        for key in &expected.index {
            if self.index.get(key).is_none_or(|v| !v.is_empty()) {
                plan.insert(key, Vec::new());
            }
        }
        for key in self.names.keys() {
            if !expected.names.contains_key(key) {
                plan.remove(key);
            }
        }
        for (key, id) in &expected.names {
            if self.names.get(key).map(Vec::as_slice) != Some(id.as_bytes()) {
                plan.insert(key, id.as_bytes().to_vec());
            }
        }
        for (key, value) in &self.defaults {
            let namespace = key.get(1..).unwrap_or_default();
            let valid = std::str::from_utf8(value)
                .ok()
                .and_then(|id| self.experiments.get(id))
                .is_some_and(|e| e.namespace.as_bytes() == namespace);
            if !valid {
                // The next run created without an experiment picks or creates a default again.
                plan.remove(key);
            }
        }
        for key in self.counters.keys() {
            if !expected.counters.contains_key(key) {
                plan.remove(key);
            }
        }
        for (key, counts) in &expected.counters {
            let encoded = counts.encode().to_vec();
            if self.counters.get(key) != Some(&encoded) {
                plan.insert(key, encoded);
            }
        }
        // A damaged format marker is rewritten (read_format let it through only if readable).
        if tree
            .get(keys::setting(FORMAT_SETTING))
            .map_err(storage)?
            .is_some_and(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_none()
            })
        {
            plan.insert(
                &keys::setting(FORMAT_SETTING),
                DATA_FORMAT.to_string().into_bytes(),
            );
        }
        Ok(plan)
    }
}

#[derive(Default)]
struct RepairPlan {
    batch: sled::Batch,
    removed: u64,
    written: u64,
}

impl RepairPlan {
    fn remove(&mut self, key: &[u8]) {
        self.batch.remove(key);
        self.removed += 1;
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        self.batch.insert(key, value);
        self.written += 1;
    }
}

/// Applies raw removals and insertions to an offline data dir, in one batch. For tests that
/// damage a store on purpose (the only way past the transactional API); not for production use.
#[doc(hidden)]
pub fn edit_offline(dir: &Path, remove: &[Vec<u8>], insert: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let (db, tree) = open_offline(dir)?;
    let mut batch = sled::Batch::default();
    for key in remove {
        batch.remove(key.as_slice());
    }
    for (key, value) in insert {
        batch.insert(key.as_slice(), value.as_slice());
    }
    tree.apply_batch(batch).map_err(storage)?;
    db.flush().map_err(storage)?;
    Ok(())
}
