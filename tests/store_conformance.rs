//! The store contract, as one suite every backend runs (`suite!` at the bottom instantiates it
//! per backend): compare-and-set writes that change all or nothing, expectations, derived data
//! (last_run_created_at, default experiments, tallies), every sort key across pages in both
//! directions with and without filters, keyset pages under concurrent changes, and the change
//! feed's order and resume. A new backend is done when it passes this suite unchanged.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::FutureExt;
use runledger::api::*;
use runledger::error::Error;
use runledger::query::filter::Filter;
use runledger::query::sort::Sort;
use runledger::query::{ListQuery, Page, Position, Record, Scope};
use runledger::store::{ChangeKind, Expectation, Op, Store, StoredRun, Write};
use runledger::wkt::Timestamp;

fn at(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

fn experiment(id: &str, name: &str, namespace: &str, created: i64) -> Experiment {
    Experiment {
        experiment_id: id.into(),
        display_name: name.into(),
        namespace: namespace.into(),
        created_at: Some(at(created, 0)),
        storage_state: experiment::StorageState::Available as i32,
        ..Default::default()
    }
}

/// A run as the service would store it, in experiment `e` of namespace `ns`.
fn run(id: &str, e: &str, ns: &str, created: Timestamp) -> Run {
    Run {
        run_id: id.into(),
        experiment_id: e.into(),
        namespace: ns.into(),
        display_name: format!("run {id}"),
        storage_state: run::StorageState::Available as i32,
        pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
        created_at: Some(created),
        scheduled_at: Some(created),
        state: RuntimeState::Pending as i32,
        state_history: vec![RuntimeStatus {
            update_time: Some(created),
            state: RuntimeState::Pending as i32,
            error: None,
        }],
        ..Default::default()
    }
}

fn put_new(run: Run) -> Op {
    Op::PutRun {
        run: Box::new(run),
        replaces: None,
    }
}

fn put_new_experiment(e: Experiment) -> Op {
    Op::PutExperiment {
        experiment: e,
        replaces: None,
    }
}

async fn write(store: &Arc<dyn Store>, ops: Vec<Op>) -> runledger::error::Result<()> {
    store.write(Write::new(ops)).await.map(drop)
}

fn is_conflict<T: std::fmt::Debug>(result: runledger::error::Result<T>) -> bool {
    matches!(result, Err(Error::Conflict(_)))
}

async fn must_get(store: &Arc<dyn Store>, id: &str) -> Run {
    store.run(id).await.unwrap().expect("run exists").decode()
}

/// One experiment "e1" in namespace "ns" (created at 1 s).
async fn with_experiment(store: &Arc<dyn Store>) {
    write(
        store,
        vec![put_new_experiment(experiment("e1", "one", "ns", 1))],
    )
    .await
    .unwrap();
}

mod cases {
    use super::*;

    pub async fn a_new_run_reads_back_whole_and_a_second_create_conflicts(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        let r = run("r1", "e1", "ns", at(10, 5));
        let written = store
            .write(Write::new(vec![put_new(r.clone())]))
            .await
            .unwrap();
        assert_eq!(written.runs.len(), 1);
        assert_eq!(written.runs[0].decode(), r);
        assert_eq!(must_get(&store, "r1").await, r);
        let again = run("r1", "e1", "ns", at(99, 0));
        assert!(is_conflict(write(&store, vec![put_new(again)]).await));
        assert_eq!(
            must_get(&store, "r1").await,
            r,
            "the conflict changed nothing"
        );
        assert!(store.run("nope").await.unwrap().is_none());
    }

    pub async fn a_stale_revision_conflicts_and_changes_nothing(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        write(&store, vec![put_new(run("r1", "e1", "ns", at(10, 0)))])
            .await
            .unwrap();
        let read = store.run("r1").await.unwrap().unwrap();
        let first = Run {
            state: RuntimeState::Running as i32,
            ..read.decode()
        };
        let put = |r: &Run, rev: &StoredRun| Op::PutRun {
            run: Box::new(r.clone()),
            replaces: Some(rev.revision().clone()),
        };
        write(&store, vec![put(&first, &read)]).await.unwrap();
        let late = Run {
            state: RuntimeState::Failed as i32,
            ..read.decode()
        };
        assert!(is_conflict(write(&store, vec![put(&late, &read)]).await));
        assert_eq!(must_get(&store, "r1").await, first);
        // The latest revision is accepted.
        let latest = store.run("r1").await.unwrap().unwrap();
        write(&store, vec![put(&late, &latest)]).await.unwrap();
        assert_eq!(
            must_get(&store, "r1").await.state,
            RuntimeState::Failed as i32
        );
    }

    pub async fn a_write_with_one_failing_op_applies_none(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        write(&store, vec![put_new(run("r1", "e1", "ns", at(10, 0)))])
            .await
            .unwrap();
        let ops = vec![
            put_new(run("r2", "e1", "ns", at(11, 0))),
            put_new_experiment(experiment("e2", "two", "ns", 2)),
            put_new(run("r1", "e1", "ns", at(12, 0))),
        ];
        assert!(is_conflict(write(&store, ops).await));
        assert!(store.run("r2").await.unwrap().is_none());
        assert!(store.experiment("e2").await.unwrap().is_none());
        assert_eq!(store.run_tally(&Scope::All).await.unwrap().total(), 1);
    }

    pub async fn deleting_a_run_needs_its_current_revision(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        write(&store, vec![put_new(run("r1", "e1", "ns", at(10, 0)))])
            .await
            .unwrap();
        let read = store.run("r1").await.unwrap().unwrap();
        let changed = Run {
            description: "changed".into(),
            ..read.decode()
        };
        write(
            &store,
            vec![Op::PutRun {
                run: Box::new(changed),
                replaces: Some(read.revision().clone()),
            }],
        )
        .await
        .unwrap();
        let delete = |rev: &StoredRun| Op::DeleteRun {
            run_id: "r1".into(),
            replaces: rev.revision().clone(),
        };
        assert!(is_conflict(write(&store, vec![delete(&read)]).await));
        let latest = store.run("r1").await.unwrap().unwrap();
        write(&store, vec![delete(&latest)]).await.unwrap();
        assert!(store.run("r1").await.unwrap().is_none());
        assert_eq!(store.run_tally(&Scope::All).await.unwrap().total(), 0);
        assert!(is_conflict(write(&store, vec![delete(&latest)]).await));
    }

    pub async fn experiment_names_are_unique_per_namespace(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        let taken = experiment("e2", "one", "ns", 2);
        assert!(is_conflict(
            write(&store, vec![put_new_experiment(taken)]).await
        ));
        // The same name in another namespace is another experiment.
        write(
            &store,
            vec![put_new_experiment(experiment("e3", "one", "other", 3))],
        )
        .await
        .unwrap();
        let found = store.experiment_named("ns", "one").await.unwrap().unwrap();
        assert_eq!(found.value.experiment_id, "e1");
        let found = store
            .experiment_named("other", "one")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.value.experiment_id, "e3");
        assert!(store.experiment_named("ns", "two").await.unwrap().is_none());
        // A renamed experiment frees its old name.
        let current = store.experiment("e1").await.unwrap().unwrap();
        let renamed = Experiment {
            display_name: "uno".into(),
            ..current.value.clone()
        };
        write(
            &store,
            vec![Op::PutExperiment {
                experiment: renamed,
                replaces: Some(current.revision),
            }],
        )
        .await
        .unwrap();
        assert!(store.experiment_named("ns", "one").await.unwrap().is_none());
        write(
            &store,
            vec![put_new_experiment(experiment("e4", "one", "ns", 4))],
        )
        .await
        .unwrap();
    }

    pub async fn new_runs_raise_last_run_created_at(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        write(&store, vec![put_new(run("r1", "e1", "ns", at(20, 0)))])
            .await
            .unwrap();
        let e = store.experiment("e1").await.unwrap().unwrap().value;
        assert_eq!(e.last_run_created_at, Some(at(20, 0)));
        // An older creation time (a backfill) does not lower it.
        write(&store, vec![put_new(run("r0", "e1", "ns", at(5, 0)))])
            .await
            .unwrap();
        let e = store.experiment("e1").await.unwrap().unwrap().value;
        assert_eq!(e.last_run_created_at, Some(at(20, 0)));
    }

    pub async fn expectations_guard_a_write(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        let r = || put_new(run("r1", "e1", "ns", at(10, 0)));
        let missing = Op::Expect(Expectation::ExperimentExists("ghost".into()));
        assert!(is_conflict(write(&store, vec![missing, r()]).await));
        let read = store.experiment("e1").await.unwrap().unwrap();
        let archived = Experiment {
            storage_state: experiment::StorageState::Archived as i32,
            ..read.value.clone()
        };
        write(
            &store,
            vec![Op::PutExperiment {
                experiment: archived,
                replaces: Some(read.revision.clone()),
            }],
        )
        .await
        .unwrap();
        let stale = Op::Expect(Expectation::Experiment {
            id: "e1".into(),
            revision: read.revision,
        });
        assert!(is_conflict(write(&store, vec![stale, r()]).await));
        let no_default = Op::Expect(Expectation::DefaultExperiment {
            namespace: "ns".into(),
            experiment_id: Some("e1".into()),
        });
        assert!(is_conflict(write(&store, vec![no_default, r()]).await));
        assert!(store.run("r1").await.unwrap().is_none());
        let exists = Op::Expect(Expectation::ExperimentExists("e1".into()));
        write(&store, vec![exists, r()]).await.unwrap();
    }

    pub async fn a_default_experiment_is_set_once_and_cleared_with_it(store: Arc<dyn Store>) {
        assert_eq!(store.default_experiment("ns").await.unwrap(), None);
        let set = |id: &str| Op::SetDefaultExperiment {
            namespace: "ns".into(),
            experiment_id: id.into(),
        };
        write(
            &store,
            vec![
                put_new_experiment(experiment("d1", "Default", "ns", 1)),
                set("d1"),
                put_new(run("r1", "d1", "ns", at(10, 0))),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            store.default_experiment("ns").await.unwrap().as_deref(),
            Some("d1")
        );
        assert_eq!(store.default_experiment("").await.unwrap(), None);
        write(
            &store,
            vec![put_new_experiment(experiment("d2", "Other", "ns", 2))],
        )
        .await
        .unwrap();
        assert!(is_conflict(write(&store, vec![set("d2")]).await));
        let expect = Op::Expect(Expectation::DefaultExperiment {
            namespace: "ns".into(),
            experiment_id: Some("d1".into()),
        });
        let current = store.experiment("d1").await.unwrap().unwrap();
        write(
            &store,
            vec![
                expect,
                Op::DeleteExperiment {
                    experiment_id: "d1".into(),
                    replaces: current.revision,
                },
            ],
        )
        .await
        .unwrap();
        assert_eq!(store.default_experiment("ns").await.unwrap(), None);
        assert!(
            store.run("r1").await.unwrap().is_none(),
            "its runs go with it"
        );
        write(&store, vec![set("d2")]).await.unwrap();
    }

    pub async fn archiving_an_experiments_runs_archives_them_all(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        write(
            &store,
            vec![put_new_experiment(experiment("e2", "two", "ns", 2))],
        )
        .await
        .unwrap();
        let mut ops = Vec::new();
        for i in 0..5 {
            ops.push(put_new(run(&format!("a{i}"), "e1", "ns", at(10 + i, 0))));
        }
        ops.push(put_new(run("b0", "e2", "ns", at(30, 0))));
        write(&store, ops).await.unwrap();
        write(
            &store,
            vec![Op::ArchiveRunsOf {
                experiment_id: "e1".into(),
            }],
        )
        .await
        .unwrap();
        for i in 0..5 {
            let r = must_get(&store, &format!("a{i}")).await;
            assert_eq!(r.storage_state, run::StorageState::Archived as i32);
        }
        let other = must_get(&store, "b0").await;
        assert_eq!(other.storage_state, run::StorageState::Available as i32);
        let archived = |scope: Scope| {
            let store = store.clone();
            async move {
                let tally = store.run_tally(&scope).await.unwrap();
                tally
                    .groups
                    .iter()
                    .filter(|g| g.storage_state == run::StorageState::Archived as i32)
                    .map(|g| g.count)
                    .sum::<u64>()
            }
        };
        assert_eq!(archived(Scope::Experiment("e1".into())).await, 5);
        assert_eq!(archived(Scope::Experiment("e2".into())).await, 0);
        assert_eq!(archived(Scope::Namespace("ns".into())).await, 5);
        assert_eq!(store.run_tally(&Scope::All).await.unwrap().total(), 6);
    }

    /// Runs with every listed field varied, ties included: 3 experiments in 2 namespaces.
    async fn listing_data(store: &Arc<dyn Store>) -> Vec<Run> {
        write(
            store,
            vec![
                put_new_experiment(experiment("e1", "one", "ns", 1)),
                put_new_experiment(experiment("e2", "two", "ns", 2)),
                put_new_experiment(experiment("e3", "three", "other", 3)),
            ],
        )
        .await
        .unwrap();
        let names = ["alpha", "beta", "beta", "Gamma", "a b", ""];
        let states = [
            RuntimeState::Pending,
            RuntimeState::Running,
            RuntimeState::Succeeded,
            RuntimeState::Failed,
            RuntimeState::Canceled,
        ];
        let mut runs = Vec::new();
        for i in 0..23i64 {
            let (e, ns) = [("e1", "ns"), ("e2", "ns"), ("e3", "other")][(i % 3) as usize];
            // Ties on created_at (i / 2) and on every other field, broken by id.
            let mut r = run(&format!("r{:02}", (i * 7) % 23), e, ns, at(100 + i / 2, 0));
            r.display_name = names[(i % 6) as usize].into();
            r.description = ["", "x", "y"][(i % 3) as usize].into();
            r.state = states[(i % 5) as usize] as i32;
            r.storage_state = if i % 4 == 0 { 2 } else { 1 };
            r.scheduled_at = (i % 3 != 0).then(|| at(50 + i % 4, (i % 2) as i32));
            r.finished_at = (i % 5 >= 2).then(|| at(200 + i % 3, 0));
            r.recurring_run_id = ["", "rr1", "rr2"][(i % 3) as usize].into();
            r.service_account = ["", "sa"][(i % 2) as usize].into();
            r.pipeline_source = Some(if i % 2 == 0 {
                run::PipelineSource::PipelineId(format!("p{}", i % 3))
            } else {
                run::PipelineSource::PipelineVersionReference(PipelineVersionReference {
                    pipeline_id: format!("p{}", i % 4),
                    pipeline_version_id: "v".into(),
                })
            });
            runs.push(r);
        }
        let ops = runs.iter().cloned().map(put_new).collect();
        write(store, ops).await.unwrap();
        runs
    }

    fn naive(runs: &[Run], scope: &Scope, sort: &Sort, filter: &Filter) -> Vec<String> {
        let mut keyed: Vec<_> = runs
            .iter()
            .filter(|r| scope.covers(&r.run_id, &r.experiment_id, &r.namespace))
            .filter(|r| filter.matches(*r))
            .map(|r| (r.field(sort.field).to_sort_value(), r.run_id.clone()))
            .collect();
        keyed.sort();
        if sort.descending {
            keyed.reverse();
        }
        keyed.into_iter().map(|(_, id)| id).collect()
    }

    async fn all_pages(
        store: &Arc<dyn Store>,
        scope: &Scope,
        sort: Sort,
        filter: &Filter,
        page_size: usize,
    ) -> (Vec<String>, u64) {
        let mut ids = Vec::new();
        let mut after: Option<Position> = None;
        let mut total = None;
        loop {
            let page: Page<StoredRun> = store
                .list_runs(ListQuery {
                    scope: scope.clone(),
                    sort,
                    filter: filter.clone(),
                    after: after.clone(),
                    page_size,
                })
                .await
                .unwrap();
            assert!(page.items.len() <= page_size);
            if let Some(t) = total {
                assert_eq!(page.total_size, t, "total_size is the same on every page");
            }
            total = Some(page.total_size);
            ids.extend(page.items.iter().map(|r| r.run_id().to_owned()));
            match page.next {
                Some(next) => {
                    assert_eq!(page.items.len(), page_size, "only the last page is short");
                    after = Some(next);
                }
                None => return (ids, total.unwrap_or_default()),
            }
        }
    }

    const FILTERS: &[&str] = &[
        "",
        r#"{"predicates":[{"operation":"NOT_EQUALS","key":"storage_state","string_value":"ARCHIVED"}]}"#,
        r#"{"predicates":[{"operation":"EQUALS","key":"state","string_value":"RUNNING"}]}"#,
        r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["FAILED","PENDING"]}},{"operation":"EQUALS","key":"storage_state","string_value":"AVAILABLE"}]}"#,
        r#"{"predicates":[{"operation":"IS_SUBSTRING","key":"display_name","string_value":"et"}]}"#,
        r#"{"predicates":[{"operation":"LESS_THAN","key":"finished_at","timestamp_value":"1970-01-01T00:03:21Z"}]}"#,
        r#"{"predicates":[{"operation":"EQUALS","key":"pipeline_id","string_value":"p1"}]}"#,
        r#"{"predicates":[{"operation":"NOT_EQUALS","key":"state","string_value":"RUNNING"},{"operation":"EQUALS","key":"storage_state","string_value":"ARCHIVED"}]}"#,
        r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["PENDING","SUCCEEDED"]}},{"operation":"GREATER_THAN","key":"display_name","string_value":"a"}]}"#,
        r#"{"predicates":[{"operation":"EQUALS","key":"state","string_value":"PAUSED"}]}"#,
    ];

    /// The orders a person sorts by most, which a backend is expected to keep indexes for:
    /// every filter is tried on every scope with them.
    const INDEXED_SORTS: &[&str] = &["created_at", "display_name", "finished_at"];

    pub async fn every_sort_key_pages_in_both_directions_like_a_naive_sort(store: Arc<dyn Store>) {
        let runs = listing_data(&store).await;
        let scopes = [
            Scope::All,
            Scope::Namespace("ns".into()),
            Scope::Experiment("e3".into()),
        ];
        for (name, _) in <Run as Record>::FIELDS {
            for direction in ["", " desc"] {
                let sort = Sort::parse::<Run>(&format!("{name}{direction}")).unwrap();
                for (i, filter_text) in FILTERS.iter().enumerate() {
                    let filter = Filter::parse::<Run>(filter_text).unwrap();
                    let every_scope = INDEXED_SORTS.contains(name);
                    for (j, scope) in scopes.iter().enumerate() {
                        if !every_scope && j != i % scopes.len() {
                            continue;
                        }
                        let expected = naive(&runs, scope, &sort, &filter);
                        for page_size in [1, 4, 50] {
                            let (got, total) =
                                all_pages(&store, scope, sort, &filter, page_size).await;
                            assert_eq!(
                                got, expected,
                                "{name}{direction}, {scope:?}, {filter_text}, page {page_size}"
                            );
                            assert_eq!(total as usize, expected.len(), "{name} {filter_text}");
                        }
                    }
                }
            }
        }
    }

    pub async fn changes_between_pages_never_skip_or_repeat_an_unchanged_run(
        store: Arc<dyn Store>,
    ) {
        let runs = listing_data(&store).await;
        let pending_or_running = r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["PENDING","RUNNING"]}}]}"#;
        for (k, (sort_by, filter_text)) in [
            ("created_at", ""),
            ("created_at desc", ""),
            ("display_name", ""),
            ("display_name desc", ""),
            ("finished_at desc", ""),
            ("state desc", ""),
            ("created_at desc", pending_or_running),
            ("created_at", pending_or_running),
        ]
        .into_iter()
        .enumerate()
        {
            let sort = Sort::parse::<Run>(sort_by).unwrap();
            let filter = Filter::parse::<Run>(filter_text).unwrap();
            let before = naive(&runs, &Scope::All, &sort, &filter);
            let mut seen = Vec::new();
            let mut touched = BTreeSet::new();
            let mut after = None;
            let mut step = 0;
            loop {
                let page = store
                    .list_runs(ListQuery {
                        scope: Scope::All,
                        sort,
                        filter: filter.clone(),
                        after: after.clone(),
                        page_size: 3,
                    })
                    .await
                    .unwrap();
                seen.extend(page.items.iter().map(|r| r.run_id().to_owned()));
                let Some(next) = page.next else { break };
                after = Some(next);
                // Between pages: a new run, and a deletion of one not seen yet.
                step += 1;
                let id = format!("new{k}-{step}");
                write(
                    &store,
                    vec![put_new(run(&id, "e1", "ns", at(100 + step, 1)))],
                )
                .await
                .unwrap();
                touched.insert(id);
                if let Some(victim) = before.iter().rev().find(|id| !touched.contains(*id)) {
                    let current = store.run(victim).await.unwrap().unwrap();
                    write(
                        &store,
                        vec![Op::DeleteRun {
                            run_id: victim.clone(),
                            replaces: current.revision().clone(),
                        }],
                    )
                    .await
                    .unwrap();
                    touched.insert(victim.clone());
                }
                // And a run that finishes: it moves in the state and finished_at orders.
                if let Some(mover) = before.iter().find(|id| !touched.contains(*id)) {
                    let current = store.run(mover).await.unwrap().unwrap();
                    let finished = Run {
                        state: RuntimeState::Succeeded as i32,
                        finished_at: Some(at(300 + step, 0)),
                        ..current.decode()
                    };
                    write(
                        &store,
                        vec![Op::PutRun {
                            run: Box::new(finished),
                            replaces: Some(current.revision().clone()),
                        }],
                    )
                    .await
                    .unwrap();
                    touched.insert(mover.clone());
                }
            }
            for id in before.iter().filter(|id| !touched.contains(*id)) {
                let times = seen.iter().filter(|s| *s == id).count();
                assert_eq!(
                    times, 1,
                    "{id} was returned {times} times sorted by {sort_by}"
                );
            }
            // Put the deleted and changed runs back for the next sort.
            for r in &runs {
                let op = match store.run(&r.run_id).await.unwrap() {
                    None => put_new(r.clone()),
                    Some(current) if current.decode() != *r => Op::PutRun {
                        run: Box::new(r.clone()),
                        replaces: Some(current.revision().clone()),
                    },
                    Some(_) => continue,
                };
                write(&store, vec![op]).await.unwrap();
            }
        }
    }

    pub async fn experiments_list_by_every_key_and_namespace(store: Arc<dyn Store>) {
        let mut all = Vec::new();
        for i in 0..9i64 {
            // Names are unique within a namespace and repeat across them (ties for All).
            let mut e = experiment(
                &format!("x{i}"),
                ["beta", "alpha", "gamma"][(i / 3) as usize],
                ["ns", "other", "third"][(i % 3) as usize],
                10 + i / 2,
            );
            e.storage_state = if i % 4 == 0 { 2 } else { 1 };
            e.description = ["", "d"][(i % 2) as usize].into();
            all.push(e);
        }
        let ops = all.iter().cloned().map(put_new_experiment).collect();
        write(&store, ops).await.unwrap();
        for (name, _) in <Experiment as Record>::FIELDS {
            for direction in ["", " desc"] {
                let sort = Sort::parse::<Experiment>(&format!("{name}{direction}")).unwrap();
                for scope in [Scope::All, Scope::Namespace("ns".into())] {
                    let filter = Filter::parse::<Experiment>(
                        r#"{"predicates":[{"operation":"EQUALS","key":"storage_state","string_value":"AVAILABLE"}]}"#,
                    )
                    .unwrap();
                    for filter in [Filter::default(), filter] {
                        let mut expected: Vec<_> = all
                            .iter()
                            .filter(|e| match &scope {
                                Scope::Namespace(ns) => &e.namespace == ns,
                                _ => true,
                            })
                            .filter(|e| filter.matches(*e))
                            .map(|e| (e.field(sort.field).to_sort_value(), e.experiment_id.clone()))
                            .collect();
                        expected.sort();
                        if sort.descending {
                            expected.reverse();
                        }
                        let expected: Vec<String> =
                            expected.into_iter().map(|(_, id)| id).collect();
                        let mut got = Vec::new();
                        let mut after = None;
                        loop {
                            let page = store
                                .list_experiments(ListQuery {
                                    scope: scope.clone(),
                                    sort,
                                    filter: filter.clone(),
                                    after,
                                    page_size: 2,
                                })
                                .await
                                .unwrap();
                            assert_eq!(page.total_size as usize, expected.len());
                            got.extend(page.items.iter().map(|e| e.value.experiment_id.clone()));
                            match page.next {
                                Some(next) => after = Some(next),
                                None => break,
                            }
                        }
                        assert_eq!(got, expected, "{name}{direction} {scope:?}");
                    }
                }
            }
        }
    }

    pub async fn tallies_count_each_scope_by_storage_state(store: Arc<dyn Store>) {
        let runs = listing_data(&store).await;
        for scope in [
            Scope::All,
            Scope::Namespace("ns".into()),
            Scope::Namespace("other".into()),
            Scope::Experiment("e2".into()),
            Scope::Namespace("empty".into()),
        ] {
            let tally = store.run_tally(&scope).await.unwrap();
            let in_scope: Vec<_> = runs
                .iter()
                .filter(|r| scope.covers(&r.run_id, &r.experiment_id, &r.namespace))
                .collect();
            assert_eq!(tally.total() as usize, in_scope.len(), "{scope:?}");
            for group in &tally.groups {
                let expected = in_scope
                    .iter()
                    .filter(|r| r.storage_state == group.storage_state)
                    .filter(|r| group.state.is_none_or(|s| s == r.state))
                    .count();
                assert_eq!(group.count as usize, expected, "{scope:?} {group:?}");
            }
        }
    }

    pub async fn namespaces_are_those_holding_runs(store: Arc<dyn Store>) {
        assert!(store.namespaces().await.unwrap().is_empty());
        listing_data(&store).await;
        assert_eq!(store.namespaces().await.unwrap(), ["ns", "other"]);
        let page = store
            .list_runs(ListQuery {
                scope: Scope::Namespace("other".into()),
                sort: Sort::default(),
                filter: Filter::default(),
                after: None,
                page_size: 100,
            })
            .await
            .unwrap();
        let mut ops = Vec::new();
        for r in &page.items {
            ops.push(Op::DeleteRun {
                run_id: r.run_id().to_owned(),
                replaces: r.revision().clone(),
            });
        }
        write(&store, ops).await.unwrap();
        assert_eq!(store.namespaces().await.unwrap(), ["ns"]);
    }

    pub async fn the_change_feed_carries_every_change_in_commit_order(store: Arc<dyn Store>) {
        with_experiment(&store).await;
        let mut feed = store.subscribe(None).unwrap();
        write(&store, vec![put_new(run("r1", "e1", "ns", at(10, 0)))])
            .await
            .unwrap();
        let read = store.run("r1").await.unwrap().unwrap();
        let running = Run {
            state: RuntimeState::Running as i32,
            ..read.decode()
        };
        write(
            &store,
            vec![Op::PutRun {
                run: Box::new(running.clone()),
                replaces: Some(read.revision().clone()),
            }],
        )
        .await
        .unwrap();
        let latest = store.run("r1").await.unwrap().unwrap();
        write(
            &store,
            vec![Op::DeleteRun {
                run_id: "r1".into(),
                replaces: latest.revision().clone(),
            }],
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let change = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
                .await
                .expect("a change in time")
                .expect("feed open")
                .expect("no lag");
            got.push(change);
        }
        let kinds: Vec<_> = got.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Created,
                ChangeKind::Updated,
                ChangeKind::Deleted
            ]
        );
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "increasing");
        assert_eq!(got[1].run.decode(), running);
        assert_eq!(
            got[2].run.decode(),
            running,
            "a deletion carries the last state"
        );
        assert!(
            got.iter()
                .all(|c| c.experiment_id == "e1" && c.namespace == "ns")
        );
        // A subscriber resuming after the first change gets the other two again, in order.
        let mut resumed = store.subscribe(Some(got[0].seq)).unwrap();
        for expected in &got[1..] {
            let change = resumed.next().now_or_never().flatten().unwrap().unwrap();
            assert_eq!(change.seq, expected.seq);
        }
        // A conflict publishes nothing.
        assert!(is_conflict(
            write(
                &store,
                vec![Op::Expect(Expectation::ExperimentExists("x".into()))]
            )
            .await
        ));
        assert!(feed.next().now_or_never().is_none());
    }

    pub async fn settle_returns_and_the_token_key_is_stable(store: Arc<dyn Store>) {
        store.settle().await.unwrap();
        let key = store.token_key().await.unwrap();
        assert!(key.len() >= 32);
        assert_eq!(store.token_key().await.unwrap(), key);
    }
}

/// Instantiates every case for one backend: `suite!(name, opener)`, where the opener returns
/// None when the backend's component is not available (and has said so).
macro_rules! suite {
    ($backend:ident, $open:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = $open(stringify!($case)).await else { return };
                    super::cases::$case(backend.store.clone()).await;
                    backend.store.close().await.expect("close");
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        suite!(sled, crate::common::stores::sled, [$($case),*]);
        suite!(postgres, crate::common::stores::postgres, [$($case),*]);
    };
}

every_backend!(
    a_new_run_reads_back_whole_and_a_second_create_conflicts,
    a_stale_revision_conflicts_and_changes_nothing,
    a_write_with_one_failing_op_applies_none,
    deleting_a_run_needs_its_current_revision,
    experiment_names_are_unique_per_namespace,
    new_runs_raise_last_run_created_at,
    expectations_guard_a_write,
    a_default_experiment_is_set_once_and_cleared_with_it,
    archiving_an_experiments_runs_archives_them_all,
    every_sort_key_pages_in_both_directions_like_a_naive_sort,
    changes_between_pages_never_skip_or_repeat_an_unchanged_run,
    experiments_list_by_every_key_and_namespace,
    tallies_count_each_scope_by_storage_state,
    namespaces_are_those_holding_runs,
    the_change_feed_carries_every_change_in_commit_order,
    settle_returns_and_the_token_key_is_stable,
);
