//! `runledger check` on data dirs the real server wrote, then damaged on purpose: the check finds
//! each kind of damage and exits non-zero, the server refuses to start on it naming the command,
//! and `--repair` rebuilds what can be rebuilt.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use runledger::api::*;
use runledger::query::{ListQuery, Scope, sort::Sort};
use runledger::store::sled::{RECORD_VERSION, edit_offline, keys};
use runledger::store::{self, DataDirOptions};
use runledger::wkt::Timestamp;

/// Runs `runledger check` on `dir`; returns (success, stdout + stderr).
fn check(dir: &Path, repair: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.arg("check").arg("--data-dir").arg(dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run runledger check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A store with two experiments, runs in both, one archived, one deleted, one moved through
/// states; stopped cleanly. Returns the dir, its guard and one run of experiment "e2".
async fn written_store() -> (tempfile::TempDir, Run) {
    let server = TestServer::start().await;
    let mut runs = server.runs().await;
    let mut experiments = server.experiments().await;
    let e2 = create_experiment(&mut experiments, "e2", "team-a").await;
    let mut in_e2 = None;
    for i in 0..6 {
        let mut run = new_run(&format!("run-{i}"));
        if i % 2 == 1 {
            run.experiment_id = e2.experiment_id.clone();
        }
        let created = create_run(&mut runs, run).await;
        if i % 2 == 1 {
            in_e2 = Some(created.clone());
        }
        if i == 2 {
            runs.archive_run(ArchiveRunRequest {
                run_id: created.run_id.clone(),
                ..Default::default()
            })
            .await
            .expect("archive");
        }
        if i == 4 {
            runs.delete_run(DeleteRunRequest {
                run_id: created.run_id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete");
        }
        if i == 5 {
            runs.report_run_state(ReportRunStateRequest {
                run_id: created.run_id.clone(),
                state: RuntimeState::Running as i32,
                ..Default::default()
            })
            .await
            .expect("report");
        }
    }
    let (dir, temp) = server.stop().await;
    let temp = std::sync::Arc::try_unwrap(temp.expect("temp dir")).expect("sole owner");
    assert_eq!(dir, temp.path());
    (temp, in_e2.expect("a run in e2"))
}

fn experiment_index_key(run: &Run) -> Vec<u8> {
    keys::scope_entry(
        &keys::scope_prefix(keys::RUNS_BY_EXPERIMENT, Some(&run.experiment_id)),
        &run.created_at.expect("created_at"),
        &run.run_id,
    )
}

fn open_error(dir: &Path) -> String {
    match store::open_data_dir(dir, DataDirOptions::default()) {
        Ok(_) => panic!("the store opened despite the damage"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn check_passes_on_a_store_the_server_wrote() {
    let (dir, _) = written_store().await;
    let (ok, out) = check(dir.path(), false);
    assert!(ok, "{out}");
    assert!(out.contains("5 runs, 2 experiments"), "{out}");
    assert!(out.contains("consistent: no problems found"), "{out}");
}

#[tokio::test]
async fn a_missing_index_entry_is_found_refused_at_startup_and_repaired() {
    let (dir, run) = written_store().await;
    edit_offline(dir.path(), &[experiment_index_key(&run)], &[]).unwrap();

    let (ok, out) = check(dir.path(), false);
    assert!(!ok, "{out}");
    assert!(out.contains("1 problems"), "{out}");
    assert!(
        out.contains(&format!("runs of experiment {:?}", run.experiment_id))
            && out.contains("is missing"),
        "{out}"
    );

    let refused = open_error(dir.path());
    assert!(refused.contains("refusing to start"), "{refused}");
    assert!(refused.contains("runledger check --data-dir"), "{refused}");

    let (ok, out) = check(dir.path(), true);
    assert!(ok, "{out}");
    assert!(out.contains("wrote 1 "), "{out}");
    let (ok, out) = check(dir.path(), false);
    assert!(ok, "{out}");

    // The repaired store serves the run in its experiment again.
    let store =
        store::open_data_dir(dir.path(), DataDirOptions::default()).expect("opens after repair");
    let page = store
        .list_runs(ListQuery {
            scope: Scope::Experiment(run.experiment_id.clone()),
            sort: Sort::default(),
            filter: Default::default(),
            after: None,
            page_size: 100,
        })
        .await
        .expect("list");
    let ids: Vec<&str> = page.items.iter().map(|r| r.run_id()).collect();
    assert!(ids.contains(&run.run_id.as_str()), "{ids:?}");
}

#[tokio::test]
async fn a_dangling_entry_and_a_wrong_counter_are_found_and_repaired() {
    let (dir, run) = written_store().await;
    let ghost = keys::scope_entry(
        &keys::scope_prefix(keys::ALL_RUNS, None),
        &Timestamp {
            seconds: 1,
            nanos: 0,
        },
        "ghost",
    );
    // 42 runs PENDING (1) and AVAILABLE (1), where the records say 3 in various states.
    let mut counter = vec![2u8];
    counter.extend_from_slice(&keys::encode_i32(1));
    counter.extend_from_slice(&keys::encode_i32(1));
    counter.extend_from_slice(&42u64.to_be_bytes());
    edit_offline(
        dir.path(),
        &[],
        &[
            (ghost, Vec::new()),
            (keys::counter(b'x', Some(&run.experiment_id)), counter),
        ],
    )
    .unwrap();

    let (ok, out) = check(dir.path(), false);
    assert!(!ok, "{out}");
    assert!(
        out.contains("id \"ghost\")") && out.contains("points at a record that does not exist"),
        "{out}"
    );
    assert!(
        out.contains("says 42 [(1, 1): 42]; the records say 3 ["),
        "{out}"
    );
    assert!(open_error(dir.path()).contains("refusing to start"));

    let (ok, out) = check(dir.path(), true);
    assert!(ok, "{out}");
    assert!(out.contains("removed 1 and wrote 1"), "{out}");
    store::open_data_dir(dir.path(), DataDirOptions::default()).expect("opens after repair");
}

#[tokio::test]
async fn an_undecodable_record_fails_the_check_and_repair_leaves_the_store_alone() {
    let (dir, run) = written_store().await;
    edit_offline(
        dir.path(),
        &[],
        &[(
            keys::record(keys::RUN, &run.run_id),
            vec![RECORD_VERSION, 0xff, 0xff, 0xff],
        )],
    )
    .unwrap();
    let (ok, out) = check(dir.path(), false);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("run record {:?} cannot be decoded", run.run_id)),
        "{out}"
    );
    let (ok, out) = check(dir.path(), true);
    assert!(!ok, "a rebuild cannot invent a lost record: {out}");
    assert!(
        out.contains("1 records") && out.contains("nothing was changed"),
        "{out}"
    );
    assert!(open_error(dir.path()).contains("cannot be decoded"));
}

#[tokio::test]
async fn a_store_from_a_newer_runledger_is_refused() {
    let (dir, _) = written_store().await;
    edit_offline(
        dir.path(),
        &[],
        &[(keys::setting("format"), b"999".to_vec())],
    )
    .unwrap();
    let refused = open_error(dir.path());
    assert!(
        refused.contains("newer runledger (data format 999)"),
        "{refused}"
    );
    let (ok, out) = check(dir.path(), false);
    assert!(!ok);
    assert!(out.contains("newer runledger"), "{out}");
}

#[test]
fn check_refuses_a_dir_that_is_not_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(&dir.path().join("nothing-here"), false);
    assert!(!ok);
    assert!(out.contains("is not a runledger data dir"), "{out}");
    assert!(
        !dir.path().join("nothing-here").exists(),
        "check must not create a data dir"
    );
}

#[test]
fn check_refuses_a_data_dir_a_server_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let _store = store::open_data_dir(dir.path(), DataDirOptions::default()).unwrap();
    let (ok, out) = check(dir.path(), false);
    assert!(!ok, "{out}");
    assert!(out.contains("Stop it first"), "{out}");
}

#[tokio::test]
async fn the_server_binary_refuses_to_start_on_a_damaged_store_and_names_the_check() {
    let (dir, run) = written_store().await;
    edit_offline(dir.path(), &[experiment_index_key(&run)], &[]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-level",
            "error",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run runledger serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "runledger check --data-dir {}",
            dir.path().display()
        )),
        "{stderr}"
    );
}

/// A spec (google.protobuf.Struct) from JSON.
fn spec(name: &str) -> pbjson_types::Struct {
    serde_json::from_value(serde_json::json!({"pipelineInfo": {"name": name},
        "root": {"dag": {"tasks": {"a": {}, "b": {}}}}}))
    .unwrap()
}

fn spec_run(id: &str, experiment_id: &str, spec_name: &str) -> Run {
    Run {
        run_id: id.into(),
        experiment_id: experiment_id.into(),
        display_name: id.into(),
        created_at: Some(Timestamp {
            seconds: 100,
            nanos: 0,
        }),
        storage_state: run::StorageState::Available as i32,
        state: RuntimeState::Pending as i32,
        pipeline_source: Some(run::PipelineSource::PipelineSpec(spec(spec_name).into())),
        ..Default::default()
    }
}

/// Writes experiments e1 and e2 and the given runs straight through the store; closes it.
async fn store_with_runs(dir: &Path, runs: Vec<Run>) {
    let store = store::open_data_dir(dir, DataDirOptions::default()).unwrap();
    let mut ops = Vec::new();
    for id in ["e1", "e2"] {
        ops.push(store::Op::PutExperiment {
            experiment: Experiment {
                experiment_id: id.into(),
                display_name: id.into(),
                ..Default::default()
            },
            replaces: None,
        });
    }
    for run in runs {
        ops.push(store::Op::PutRun {
            run: Box::new(run),
            replaces: None,
        });
    }
    store.write(store::Write::new(ops)).await.unwrap();
    store.close().await.unwrap();
}

/// The number of spec blobs `runledger check` counts (it also checks their use counts).
fn specs_stored(dir: &Path) -> u64 {
    let (ok, out) = check(dir, false);
    assert!(ok, "{out}");
    let before = out.split(" specs (").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn identical_specs_are_stored_once_and_released_with_their_last_run() {
    let dir = tempfile::tempdir().unwrap();
    store_with_runs(
        dir.path(),
        vec![
            spec_run("a1", "e1", "train"),
            spec_run("a2", "e1", "train"),
            spec_run("a3", "e2", "train"),
            spec_run("b1", "e2", "eval"),
        ],
    )
    .await;
    assert_eq!(specs_stored(dir.path()), 2);

    let store = store::open_data_dir(dir.path(), DataDirOptions::default()).unwrap();
    let delete = |id: &str, revision: store::Revision| store::Op::DeleteRun {
        run_id: id.into(),
        replaces: revision,
    };
    let a1 = store.run("a1").await.unwrap().unwrap();
    let a2 = store.run("a2").await.unwrap().unwrap();
    // Every run reads back with its whole spec.
    assert_eq!(a1.decode(), spec_run("a1", "e1", "train"));
    store
        .write(store::Write::new(vec![
            delete("a1", a1.revision().clone()),
            delete("a2", a2.revision().clone()),
        ]))
        .await
        .unwrap();
    assert_eq!(
        store.run("a3").await.unwrap().unwrap().decode(),
        spec_run("a3", "e2", "train")
    );
    let e2 = store.experiment("e2").await.unwrap().unwrap();
    store
        .write(store::Write::new(vec![store::Op::DeleteExperiment {
            experiment_id: "e2".into(),
            replaces: e2.revision,
        }]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    assert_eq!(specs_stored(dir.path()), 0);
}

#[tokio::test]
async fn dangling_and_orphaned_specs_and_wrong_use_counts_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    store_with_runs(
        dir.path(),
        vec![
            spec_run("a1", "e1", "train"),
            spec_run("a2", "e1", "train"),
            spec_run("b1", "e2", "eval"),
        ],
    )
    .await;
    let digest = |name: &str| {
        let bytes = runledger::wkt::StructBytes::from(spec(name));
        store::SpecBlob::of(bytes.protobuf().clone()).digest
    };
    let (train, eval, orphan) = (digest("train"), digest("eval"), digest("orphan"));
    let five = 5u64.to_be_bytes().to_vec();
    edit_offline(
        dir.path(),
        &[store::sled::specs::blob_key(&eval)],
        &[
            (store::sled::specs::uses_key(&train), five),
            (store::sled::specs::blob_key(&orphan), b"\x0a\x00".to_vec()),
        ],
    )
    .unwrap();

    let (ok, out) = check(dir.path(), false);
    assert!(!ok, "{out}");
    let show = store::sled::specs::show;
    for problem in [
        format!(
            "run \"b1\" references pipeline spec {}, which is missing",
            show(&eval)
        ),
        format!(
            "spec {} has 5 references counted; the records hold 2",
            show(&train)
        ),
        format!(
            "spec {} is stored but no record references it",
            show(&orphan)
        ),
        format!("spec {} has a use count but is not stored", show(&eval)),
    ] {
        assert!(out.contains(&problem), "{problem} in {out}");
    }
    assert!(open_error(dir.path()).contains("refusing to start"));

    let (ok, out) = check(dir.path(), true);
    assert!(ok, "{out}");
    assert_eq!(specs_stored(dir.path()), 1);
    let store = store::open_data_dir(dir.path(), DataDirOptions::default()).unwrap();
    // The run whose spec was lost says so; the others read back whole.
    let lost = store.run("b1").await.unwrap().unwrap().decode();
    assert!(lost.pipeline_source.is_none());
    let error = lost.error.expect("an error on the run");
    assert_eq!(error.code, tonic::Code::DataLoss as i32);
    assert!(error.message.contains(&show(&eval)), "{}", error.message);
    assert_eq!(
        store.run("a2").await.unwrap().unwrap().decode(),
        spec_run("a2", "e1", "train")
    );
    store.close().await.unwrap();
}
