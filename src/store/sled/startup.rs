//! The check the server runs when it opens a store.
//!
//! **At startup** the server runs the full check of `check.rs` when the store is small (at
//! most [`STARTUP_FULL_CHECK_KEYS`] keys: a few tens of milliseconds), and otherwise a bounded
//! sample that still catches the usual damage: every counter decodes, and the newest
//! [`STARTUP_SAMPLE`] entries of the run and experiment creation indexes point at records that
//! exist, decode, belong there, have all their other index entries and (runs) the spec blob they
//! reference. The newest entries are where an interrupted write would have landed. On any problem it refuses to start, naming
//! `runledger check`.

use std::path::Path;

use prost::Message;

use super::check::{Scan, describe_entry, show};
use super::keys::{self, RunIndexed, ScopeEntry};
use super::{Counts, codec, experiment_scope_prefix, specs, storage};
use crate::api::{Experiment, Run};
use crate::error::{Error, Result};

/// Stores with at most this many keys get the full check at startup.
pub const STARTUP_FULL_CHECK_KEYS: usize = 100_000;
/// Index entries sampled (per index) at startup on a larger store.
pub const STARTUP_SAMPLE: usize = 100;
/// Problems listed in the startup error before "and N more".
const STARTUP_PROBLEMS_SHOWN: usize = 3;

/// The check run when the server opens the store (see the module docs for what it covers).
pub(super) fn at_startup(tree: &sled::Tree, dir: &Path) -> Result<()> {
    let small =
        tree.iter().keys().take(STARTUP_FULL_CHECK_KEYS + 1).count() <= STARTUP_FULL_CHECK_KEYS;
    let problems = if small {
        Scan::run(tree)?.report.problems
    } else {
        sample(tree)?
    };
    if problems.is_empty() {
        return Ok(());
    }
    let mut shown: Vec<_> = problems
        .iter()
        .take(STARTUP_PROBLEMS_SHOWN)
        .cloned()
        .collect();
    if problems.len() > STARTUP_PROBLEMS_SHOWN {
        shown.push(format!(
            "and {} more",
            problems.len() - STARTUP_PROBLEMS_SHOWN
        ));
    }
    let dir = dir.display();
    Err(Error::FailedPrecondition(format!(
        "the store in {dir} is inconsistent, refusing to start: {}. Run `runledger check \
         --data-dir {dir}` for the full list, and `runledger check --data-dir {dir} --repair` to \
         rebuild the indexes and counters from the records",
        shown.join("; ")
    )))
}

/// The startup sample for a large store (see the module docs).
fn sample(tree: &sled::Tree) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for entry in tree
        .scan_prefix([keys::COUNTER])
        .take(STARTUP_FULL_CHECK_KEYS)
    {
        let (key, value) = entry.map_err(storage)?;
        if Counts::decode(&value).is_err() {
            problems.push(format!("counter {:?} cannot be decoded", show(&key)));
        }
    }
    for index in [keys::ALL_RUNS, keys::ALL_EXPERIMENTS] {
        for entry in tree.scan_prefix([index]).keys().rev().take(STARTUP_SAMPLE) {
            let key = entry.map_err(storage)?;
            let Some(parsed) = keys::parse_scope_entry(&key) else {
                problems.push(format!("malformed index key {:?}", show(&key)));
                continue;
            };
            let siblings = if index == keys::ALL_RUNS {
                sample_run(tree, &parsed, &mut problems)?
            } else {
                sample_experiment(tree, &parsed, &mut problems)?
            };
            for sibling in siblings {
                if !tree.contains_key(&sibling).map_err(storage)? {
                    problems.push(format!("{} is missing", describe_entry(&sibling)));
                }
            }
        }
    }
    Ok(problems)
}

/// Checks the run an `A` entry points at; returns the run's other index keys.
fn sample_run(
    tree: &sled::Tree,
    entry: &ScopeEntry,
    problems: &mut Vec<String>,
) -> Result<Vec<Vec<u8>>> {
    let Some(raw) = tree
        .get(keys::record(keys::RUN, &entry.id))
        .map_err(storage)?
    else {
        problems.push(format!("run {:?} is indexed but does not exist", entry.id));
        return Ok(Vec::new());
    };
    let decoded = codec::split(&raw)
        .and_then(|(spec, body)| Ok((spec, Run::decode(body).map_err(|e| e.to_string())?)));
    let (spec, run) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            problems.push(format!("run record {:?} cannot be decoded: {e}", entry.id));
            return Ok(Vec::new());
        }
    };
    if let Some(digest) = spec
        && !tree
            .contains_key(specs::blob_key(&digest))
            .map_err(storage)?
    {
        problems.push(format!(
            "run {:?} references pipeline spec {}, which is missing",
            entry.id,
            specs::show(&digest)
        ));
    }
    let created = run.created_at.unwrap_or_default();
    if created != entry.created {
        problems.push(format!(
            "{} does not match the run's created_at {created}",
            describe_entry(&keys::scope_entry(
                &[keys::ALL_RUNS],
                &entry.created,
                &entry.id
            ))
        ));
    }
    Ok(keys::run_entries(&RunIndexed::of(&run)))
}

fn sample_experiment(
    tree: &sled::Tree,
    entry: &ScopeEntry,
    problems: &mut Vec<String>,
) -> Result<Vec<Vec<u8>>> {
    let Some(raw) = tree
        .get(keys::record(keys::EXPERIMENT, &entry.id))
        .map_err(storage)?
    else {
        problems.push(format!(
            "experiment {:?} is indexed but does not exist",
            entry.id
        ));
        return Ok(Vec::new());
    };
    let e = match codec::decode::<Experiment>(&raw) {
        Ok(e) => e,
        Err(err) => {
            problems.push(format!(
                "experiment record {:?} cannot be decoded: {err}",
                entry.id
            ));
            return Ok(Vec::new());
        }
    };
    let created = e.created_at.unwrap_or_default();
    let name = tree
        .get(keys::experiment_name(&e.namespace, &e.display_name))
        .map_err(storage)?;
    if name.as_deref() != Some(entry.id.as_bytes()) {
        problems.push(format!(
            "the name entry of experiment {:?} is missing or points elsewhere",
            entry.id
        ));
    }
    Ok([None, Some(e.namespace.as_str())]
        .into_iter()
        .map(|ns| keys::scope_entry(&experiment_scope_prefix(ns), &created, &entry.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::run;
    use crate::wkt::Timestamp;

    fn temp_tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::sled_config(dir.path())
            .open()
            .expect("open sled");
        let tree = db.open_tree(super::super::TREE).expect("tree");
        (dir, db, tree)
    }

    fn put_run(tree: &sled::Tree, id: &str, seconds: i64) {
        let created = Timestamp { seconds, nanos: 0 };
        let run = Run {
            run_id: id.into(),
            experiment_id: "e".into(),
            storage_state: run::StorageState::Available as i32,
            created_at: Some(created),
            ..Default::default()
        };
        tree.insert(keys::record(keys::RUN, id), codec::encode(&run))
            .unwrap();
        for entry in keys::run_entries(&RunIndexed::of(&run)) {
            tree.insert(entry, b"").unwrap();
        }
    }

    #[test]
    fn the_startup_sample_finds_a_dangling_newest_entry_and_a_missing_sibling() {
        let (_dir, _db, tree) = temp_tree();
        put_run(&tree, "old", 1);
        put_run(&tree, "new", 2);
        assert_eq!(sample(&tree).unwrap(), Vec::<String>::new());

        // The newest run loses its experiment index entry; a dangling entry appears.
        let created = Timestamp {
            seconds: 2,
            nanos: 0,
        };
        tree.remove(keys::scope_entry(
            &keys::scope_prefix(keys::RUNS_BY_EXPERIMENT, Some("e")),
            &created,
            "new",
        ))
        .unwrap();
        tree.insert(
            keys::scope_entry(
                &[keys::ALL_RUNS],
                &Timestamp {
                    seconds: 3,
                    nanos: 0,
                },
                "ghost",
            ),
            b"",
        )
        .unwrap();
        let problems = sample(&tree).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"ghost\" is indexed but does not exist"));
        assert!(
            problems[1].contains("runs of experiment \"e\"") && problems[1].contains("missing")
        );
    }
}
