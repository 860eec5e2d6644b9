//! Consistency checking and repair of a data directory (`runledger check`).
//!
//! Records (`R`, `E`) are the truth; everything else is derived from them: the scope indexes
//! (`A`/`X`/`N`/`Q`/`P`, and the run indexes by state, name and finished_at `T`/`O`/`F`), the
//! experiment names (`M`), the counters (`C`), the spec blobs' use counts (`U`). The check reads
//! the whole tree once, recomputes every derived entry from the records with the same functions
//! the writer uses, and compares. It also checks that every value decodes, that a record's key is
//! its id, that every run's experiment exists in the run's namespace, that every default
//! experiment (`D`) and every last_run_created_at (`L`) belongs to an existing experiment, that
//! every spec a record references exists (`B`) and that every spec blob is referenced.
//!
//! Repair rewrites the derived entries from the records in one atomic sled batch, then checks
//! again: it recounts spec references, removes blobs nothing references, and a run whose spec
//! blob is lost is rewritten without it, its `error` saying which spec was lost (DATA_LOSS), so
//! it reads as what it is. It cannot invent lost records: a run whose experiment is gone stays a
//! problem that needs a human, and a store with an undecodable record is left untouched (a
//! rebuild would silently drop the record from every index).
//!
//! The cheaper check the server runs at startup is in `startup.rs`; the format marker in
//! `format.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use prost::Message;

use super::catalog_check::{self, CatalogScan};
use super::codec::Digest;
use super::format::{DATA_FORMAT, FORMAT_SETTING, ensure_format, read_format};
use super::keys::{self, RunIndexed, ScopeEntry};
use super::{
    Counts, codec, experiment_counter_key, experiment_scope_prefix, run_counter_key, specs, storage,
};
use crate::api::{Experiment, Run};
use crate::error::{Error, Result};
use crate::wkt::Timestamp;

const TOKEN_KEY_SETTING: &str = "page-token-key";

/// Tries (50 ms apart) to take the data dir's lock in the offline tools (sled lets go of it a
/// moment after its owner closed it; more than a second on a busy machine).
const LOCK_ATTEMPTS: u32 = 100;

/// What `runledger check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub runs: u64,
    pub experiments: u64,
    pub pipelines: u64,
    pub pipeline_versions: u64,
    pub recurring_runs: u64,
    /// Index entries (`A X N T O F Q P M D L`, and those of pipelines, versions and recurring
    /// runs).
    pub index_entries: u64,
    pub counters: u64,
    pub settings: u64,
    /// Distinct spec blobs, and the bytes they hold.
    pub specs: u64,
    pub spec_bytes: u64,
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
            "{} runs, {} experiments, {} index entries, {} counters, {} settings, {} specs ({} \
             bytes)",
            self.runs,
            self.experiments,
            self.index_entries,
            self.counters,
            self.settings,
            self.specs,
            self.spec_bytes
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
            "repair: removed {} and wrote {} index entries, counters, spec counts and records, \
             in one atomic batch",
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
    super::format::require_current(&tree, dir)?;
    Ok(Scan::run(&tree)?.report)
}

/// Rebuilds every index entry and counter of `dir` from its records, atomically, then checks it
/// again. Also writes the format marker if it is missing.
pub fn repair_data_dir(dir: &Path) -> Result<RepairReport> {
    let (db, tree) = open_offline(dir)?;
    read_format(&tree)?;
    super::format::require_current(&tree, dir)?;
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
pub(super) fn open_offline(dir: &Path) -> Result<(sled::Db, sled::Tree)> {
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
            // sled reports a held lock as an error of kind Other naming the lock.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && attempts < LOCK_ATTEMPTS =>
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
    display_name: String,
    created: Timestamp,
    finished: Option<Timestamp>,
    state: i32,
    storage_state: i32,
    spec: Option<Digest>,
}

impl RunFacts {
    fn indexed<'a>(&'a self, run_id: &'a str) -> RunIndexed<'a> {
        RunIndexed {
            run_id,
            experiment_id: &self.experiment_id,
            namespace: &self.namespace,
            display_name: &self.display_name,
            created: self.created,
            finished: self.finished,
            state: self.state,
            storage_state: self.storage_state,
        }
    }
}

struct ExperimentFacts {
    namespace: String,
    name: String,
    created: Timestamp,
    storage_state: i32,
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
    /// Spec blobs present, and their use counts as stored (None: not decodable).
    blobs: BTreeSet<Digest>,
    uses: BTreeMap<Digest, Option<u64>>,
    /// `L` keys: experiment id → whether the value decodes.
    last_runs: BTreeMap<String, bool>,
    /// Pipelines, versions, recurring runs and leases (catalog_check.rs).
    catalog: CatalogScan,
}

/// What the records say the derived entries must be.
#[derive(Default)]
struct Expected {
    index: BTreeSet<Vec<u8>>,
    names: BTreeMap<Vec<u8>, String>,
    counters: BTreeMap<Vec<u8>, Counts>,
    /// References to each spec, by the records.
    uses: BTreeMap<Digest, u64>,
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
    if let Some((index, scope)) = keys::describe_run_index(key) {
        let which = match index {
            keys::RUNS_BY_STATE => "state",
            keys::RUNS_BY_NAME => "display_name",
            _ => "finished_at",
        };
        let order = match index {
            keys::RUNS_BY_STATE => None,
            keys::RUNS_BY_NAME => Some(keys::RunOrder::Name),
            _ => Some(keys::RunOrder::Finished),
        };
        let id = run_id_of_index_key(key, order);
        return format!("{which} index entry ({scope}, id {id:?})");
    }
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

/// The run id at the end of a `T`/`O`/`F` key (`order` None: a state index key).
fn run_id_of_index_key(key: &[u8], order: Option<keys::RunOrder>) -> String {
    let Some((_, scope)) = key.split_at_checked(2) else {
        return String::new();
    };
    let rest = match key.get(1) {
        Some(b'x' | b'n') => {
            let len = scope
                .get(..2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
            scope.get(2 + len..).unwrap_or_default()
        }
        _ => scope,
    };
    let (rest, order) = match order {
        None => (rest.get(8..).unwrap_or_default(), keys::RunOrder::Created),
        Some(order) => (rest, order),
    };
    keys::id_of_suffix(order, rest)
        .map(str::to_owned)
        .unwrap_or_else(|| show(rest))
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
                let decoded = codec::split(value).and_then(|(spec, body)| {
                    Ok((spec, Run::decode(body).map_err(|e| e.to_string())?))
                });
                match decoded {
                    Err(e) => {
                        self.undecodable += 1;
                        self.problem(format!("run record {id:?} cannot be decoded: {e}"))
                    }
                    Ok((spec, run)) => {
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
                                display_name: run.display_name,
                                created: run.created_at.unwrap_or_default(),
                                finished: run.finished_at,
                                state: run.state,
                                storage_state: run.storage_state,
                                spec,
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
                                storage_state: e.storage_state,
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
            | keys::RUNS_BY_STATE
            | keys::RUNS_BY_NAME
            | keys::RUNS_BY_FINISHED
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
            keys::BLOB => match specs::digest_of_key(key) {
                Some(digest) => {
                    self.report.specs += 1;
                    self.report.spec_bytes += value.len() as u64;
                    self.blobs.insert(digest);
                }
                None => self.problem(format!("malformed spec key {:?}", show(key))),
            },
            keys::USES => match specs::digest_of_key(key) {
                Some(digest) => {
                    self.uses.insert(digest, specs::decode_uses(value));
                }
                None => self.problem(format!("malformed spec use count key {:?}", show(key))),
            },
            keys::LAST_RUN_CREATED => {
                self.report.index_entries += 1;
                let id = String::from_utf8_lossy(rest).into_owned();
                self.last_runs
                    .insert(id, keys::decode_time(value).is_some() && value.len() == 12);
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
            let indexed = run.indexed(id);
            out.index.extend(keys::run_entries(&indexed));
            for scope in indexed.scopes() {
                let Ok(counter) = run_counter_key(&scope) else {
                    continue;
                };
                let c = out.counters.entry(counter).or_default();
                // Cannot overflow: one per run.
                let _ = c.add((run.state, run.storage_state), 1);
            }
            if let Some(digest) = run.spec {
                *out.uses.entry(digest).or_default() += 1;
            }
        }
        for digest in self.catalog.spec_refs() {
            *out.uses.entry(*digest).or_default() += 1;
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
                let _ = c.add((0, e.storage_state), 1);
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
                let owner = match keys::describe_run_index(key) {
                    Some((index, _)) => {
                        let order = match index {
                            keys::RUNS_BY_STATE => None,
                            keys::RUNS_BY_NAME => Some(keys::RunOrder::Name),
                            _ => Some(keys::RunOrder::Finished),
                        };
                        Some(self.runs.contains_key(&run_id_of_index_key(key, order)))
                    }
                    None => keys::parse_scope_entry(key).map(|e| match e.index {
                        keys::ALL_RUNS | keys::RUNS_BY_EXPERIMENT | keys::RUNS_BY_NAMESPACE => {
                            self.runs.contains_key(&e.id)
                        }
                        _ => self.experiments.contains_key(&e.id),
                    }),
                }
                .map(|exists| {
                    if exists {
                        "does not match its record (a field it is keyed by differs)"
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
            let want = expected.counters.get(key).cloned().unwrap_or_default();
            match Counts::decode(value) {
                Err(_) => problems.push(format!(
                    "counter {:?} cannot be decoded ({} bytes)",
                    show(key),
                    value.len()
                )),
                Ok(have) if have != want => problems.push(format!(
                    "counter {:?} says {}; the records say {}",
                    show(key),
                    have.describe(),
                    want.describe()
                )),
                Ok(_) => {}
            }
        }
        for (key, want) in &expected.counters {
            if !self.counters.contains_key(key) {
                problems.push(format!(
                    "counter {:?} is missing (the records say {})",
                    show(key),
                    want.describe()
                ));
            }
        }

        for (id, run) in &self.runs {
            if let Some(digest) = &run.spec
                && !self.blobs.contains(digest)
            {
                problems.push(format!(
                    "run {id:?} references pipeline spec {}, which is missing",
                    specs::show(digest)
                ));
            }
        }
        problems.extend(self.catalog.lost_specs(&self.blobs));
        for digest in &self.blobs {
            let want = expected.uses.get(digest).copied().unwrap_or(0);
            match self.uses.get(digest) {
                _ if want == 0 => problems.push(format!(
                    "spec {} is stored but no record references it",
                    specs::show(digest)
                )),
                Some(Some(have)) if *have == want => {}
                Some(Some(have)) => problems.push(format!(
                    "spec {} has {have} references counted; the records hold {want}",
                    specs::show(digest)
                )),
                Some(None) => problems.push(format!(
                    "the use count of spec {} cannot be decoded",
                    specs::show(digest)
                )),
                None => problems.push(format!(
                    "spec {} has no use count; the records hold {want} references",
                    specs::show(digest)
                )),
            }
        }
        for digest in self.uses.keys() {
            if !self.blobs.contains(digest) {
                problems.push(format!(
                    "spec {} has a use count but is not stored",
                    specs::show(digest)
                ));
            }
        }

        for (id, decodes) in &self.last_runs {
            if !self.experiments.contains_key(id) {
                problems.push(format!(
                    "the last_run_created_at of experiment {id:?} is kept, but the experiment does \
                     not exist"
                ));
            } else if !decodes {
                problems.push(format!(
                    "the last_run_created_at of experiment {id:?} cannot be decoded"
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
        // Runs whose spec is lost: rewritten without the reference, saying so in their error.
        for (id, run) in &self.runs {
            let Some(digest) = &run.spec else { continue };
            if self.blobs.contains(digest) {
                continue;
            }
            let key = keys::record(keys::RUN, id);
            let Some(record) = tree.get(&key).map_err(storage)? else {
                continue;
            };
            let mut lost = codec::decode::<Run>(&record)
                .map_err(|e| Error::internal(format!("run {id:?} changed during repair: {e}")))?;
            lost.error = Some(specs::lost("run", digest));
            plan.insert(&key, codec::encode(&lost));
        }
        for (key, value) in self.catalog.without_lost_specs(&self.blobs, tree)? {
            plan.insert(&key, value);
        }
        for digest in &self.blobs {
            let want = expected
                .uses
                .get(digest)
                .copied()
                .filter(|_| self.blobs.contains(digest));
            match want {
                None => {
                    plan.remove(&specs::blob_key(digest));
                    if self.uses.contains_key(digest) {
                        plan.remove(&specs::uses_key(digest));
                    }
                }
                Some(want) => {
                    if self.uses.get(digest) != Some(&Some(want)) {
                        plan.insert(&specs::uses_key(digest), want.to_be_bytes().to_vec());
                    }
                }
            }
        }
        for digest in self.uses.keys() {
            if !self.blobs.contains(digest) {
                plan.remove(&specs::uses_key(digest));
            }
        }
        for (id, decodes) in &self.last_runs {
            if !self.experiments.contains_key(id) || !decodes {
                // A new run in the experiment sets it again.
                plan.remove(&keys::record(keys::LAST_RUN_CREATED, id));
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
