//! The store contract for pipelines, pipeline versions, recurring runs and leases, as a suite
//! every backend runs (`suite!` at the bottom, as in `store_conformance.rs`): unique names,
//! compare-and-set, the expectations that guard writes, cascading deletes, listing scopes with
//! their totals, the experiment-wide ops, and the lease.

mod common;

use std::sync::Arc;

use runledger::api::*;
use runledger::error::Error;
use runledger::query::{ListQuery, Scope};
use runledger::store::{Expectation, Op, RecurringRunRecord, ScheduleState, Store, Write};
use runledger::wkt::Timestamp;

fn at(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn pipeline(id: &str, name: &str, namespace: &str, created: i64) -> Pipeline {
    Pipeline {
        pipeline_id: id.into(),
        name: name.into(),
        display_name: name.into(),
        namespace: namespace.into(),
        created_at: Some(at(created)),
        ..Default::default()
    }
}

fn version(id: &str, pipeline_id: &str, name: &str, created: i64) -> PipelineVersion {
    let spec: pbjson_types::Struct =
        serde_json::from_value(serde_json::json!({"pipelineInfo": {"name": name}, "root": {}}))
            .unwrap();
    PipelineVersion {
        pipeline_version_id: id.into(),
        pipeline_id: pipeline_id.into(),
        name: name.into(),
        created_at: Some(at(created)),
        pipeline_spec: Some(spec.into()),
        ..Default::default()
    }
}

fn recurring(id: &str, experiment: &str, namespace: &str, created: i64) -> RecurringRunRecord {
    RecurringRunRecord {
        recurring_run: RecurringRun {
            recurring_run_id: id.into(),
            display_name: id.into(),
            experiment_id: experiment.into(),
            namespace: namespace.into(),
            created_at: Some(at(created)),
            updated_at: Some(at(created)),
            status: recurring_run::Status::Enabled as i32,
            mode: recurring_run::Mode::Enable as i32,
            ..Default::default()
        },
        schedule: ScheduleState::default(),
    }
}

fn put_pipeline(p: Pipeline) -> Op {
    Op::PutPipeline {
        pipeline: p,
        replaces: None,
    }
}

fn put_version(v: PipelineVersion) -> Op {
    Op::PutPipelineVersion {
        version: Box::new(v),
        replaces: None,
    }
}

fn put_recurring(r: RecurringRunRecord) -> Op {
    Op::PutRecurringRun {
        record: Box::new(r),
        replaces: None,
    }
}

async fn write(store: &Arc<dyn Store>, ops: Vec<Op>) -> runledger::error::Result<()> {
    store.write(Write::new(ops)).await.map(drop)
}

fn is_conflict(result: runledger::error::Result<()>) -> bool {
    matches!(result, Err(Error::Conflict(_)))
}

fn query(scope: Scope, page_size: usize) -> ListQuery {
    ListQuery {
        scope,
        sort: Default::default(),
        filter: Default::default(),
        after: None,
        page_size,
    }
}

mod cases {
    use super::*;

    pub async fn pipeline_names_are_unique_per_namespace(store: Arc<dyn Store>) {
        write(&store, vec![put_pipeline(pipeline("p1", "etl", "", 1))])
            .await
            .unwrap();
        assert!(is_conflict(
            write(&store, vec![put_pipeline(pipeline("p2", "etl", "", 2))]).await
        ));
        assert!(is_conflict(
            write(&store, vec![put_pipeline(pipeline("p1", "other", "", 2))]).await
        ));
        write(&store, vec![put_pipeline(pipeline("p2", "etl", "team", 2))])
            .await
            .unwrap();
        let found = store.pipeline_named("", "etl").await.unwrap().unwrap();
        assert_eq!(found.value.pipeline_id, "p1");
        assert!(store.pipeline_named("", "nope").await.unwrap().is_none());

        // Renaming frees the old name; a stale revision changes nothing.
        let renamed = Pipeline {
            name: "etl2".into(),
            ..found.value.clone()
        };
        write(
            &store,
            vec![Op::PutPipeline {
                pipeline: renamed,
                replaces: Some(found.revision.clone()),
            }],
        )
        .await
        .unwrap();
        assert!(store.pipeline_named("", "etl").await.unwrap().is_none());
        assert!(is_conflict(
            write(
                &store,
                vec![Op::PutPipeline {
                    pipeline: found.value.clone(),
                    replaces: Some(found.revision),
                }],
            )
            .await
        ));
        write(&store, vec![put_pipeline(pipeline("p3", "etl", "", 3))])
            .await
            .unwrap();
    }

    pub async fn pipelines_list_by_namespace_with_totals(store: Arc<dyn Store>) {
        for (i, ns) in ["", "a", "a", "b"].iter().enumerate() {
            write(
                &store,
                vec![put_pipeline(pipeline(
                    &format!("p{i}"),
                    &format!("n{i}"),
                    ns,
                    i as i64,
                ))],
            )
            .await
            .unwrap();
        }
        let page = store
            .list_pipelines(query(Scope::Namespace("a".into()), 1))
            .await
            .unwrap();
        assert_eq!(page.total_size, 2);
        assert_eq!(page.items[0].value.pipeline_id, "p1");
        let next = store
            .list_pipelines(ListQuery {
                after: page.next,
                ..query(Scope::Namespace("a".into()), 1)
            })
            .await
            .unwrap();
        assert_eq!(next.items[0].value.pipeline_id, "p2");
        assert!(next.next.is_none());
        let shared = store
            .list_pipelines(query(Scope::Namespace(String::new()), 10))
            .await
            .unwrap();
        assert_eq!(shared.total_size, 1);
    }

    pub async fn versions_are_unique_per_pipeline_and_the_latest_is_the_newest(
        store: Arc<dyn Store>,
    ) {
        write(
            &store,
            vec![
                put_pipeline(pipeline("p1", "a", "", 1)),
                put_pipeline(pipeline("p2", "b", "", 1)),
                put_version(version("v1", "p1", "one", 10)),
                put_version(version("v2", "p1", "two", 20)),
                put_version(version("w1", "p2", "one", 30)),
            ],
        )
        .await
        .unwrap();
        assert!(is_conflict(
            write(&store, vec![put_version(version("v3", "p1", "two", 40))]).await
        ));
        let latest = store.latest_pipeline_version("p1").await.unwrap().unwrap();
        assert_eq!(latest.value.pipeline_version_id, "v2");
        assert!(latest.value.pipeline_spec.is_some());
        assert_eq!(
            store
                .pipeline_version_named("p2", "one")
                .await
                .unwrap()
                .unwrap()
                .value
                .pipeline_version_id,
            "w1"
        );
        let versions = store
            .list_pipeline_versions(query(Scope::Pipeline("p1".into()), 10))
            .await
            .unwrap();
        assert_eq!(versions.total_size, 2);
        let ids: Vec<_> = versions
            .items
            .iter()
            .map(|v| v.value.pipeline_version_id.clone())
            .collect();
        assert_eq!(ids, ["v1", "v2"]);
        let got = store.pipeline_version("v1").await.unwrap().unwrap();
        assert_eq!(
            got.value.pipeline_spec.unwrap().to_struct().unwrap(),
            version("v1", "p1", "one", 10)
                .pipeline_spec
                .unwrap()
                .to_struct()
                .unwrap()
        );
    }

    pub async fn expectations_guard_pipeline_writes(store: Arc<dyn Store>) {
        // A version of a pipeline that does not exist.
        assert!(is_conflict(
            write(
                &store,
                vec![
                    Op::Expect(Expectation::PipelineExists("p1".into())),
                    put_version(version("v1", "p1", "one", 1)),
                ],
            )
            .await
        ));
        assert!(store.pipeline_version("v1").await.unwrap().is_none());
        write(
            &store,
            vec![
                put_pipeline(pipeline("p1", "a", "", 1)),
                put_version(version("v1", "p1", "one", 1)),
            ],
        )
        .await
        .unwrap();
        assert!(is_conflict(
            write(
                &store,
                vec![
                    Op::Expect(Expectation::NoPipelineVersions("p1".into())),
                    put_pipeline(pipeline("p9", "z", "", 1)),
                ],
            )
            .await
        ));
        assert!(store.pipeline("p9").await.unwrap().is_none());
        assert!(is_conflict(
            write(
                &store,
                vec![
                    Op::Expect(Expectation::PipelineVersionExists("gone".into())),
                    put_pipeline(pipeline("p9", "z", "", 1)),
                ],
            )
            .await
        ));
        write(
            &store,
            vec![
                Op::Expect(Expectation::PipelineVersionExists("v1".into())),
                Op::Expect(Expectation::NoPipelineVersions("p-other".into())),
                put_pipeline(pipeline("p9", "z", "", 1)),
            ],
        )
        .await
        .unwrap();
    }

    pub async fn deleting_a_pipeline_deletes_its_versions_and_frees_the_names(
        store: Arc<dyn Store>,
    ) {
        write(
            &store,
            vec![
                put_pipeline(pipeline("p1", "a", "", 1)),
                put_version(version("v1", "p1", "one", 1)),
                put_version(version("v2", "p1", "two", 2)),
            ],
        )
        .await
        .unwrap();
        let p = store.pipeline("p1").await.unwrap().unwrap();
        let v1 = store.pipeline_version("v1").await.unwrap().unwrap();
        write(
            &store,
            vec![Op::DeletePipelineVersion {
                pipeline_version_id: "v1".into(),
                replaces: v1.revision.clone(),
            }],
        )
        .await
        .unwrap();
        assert!(is_conflict(
            write(
                &store,
                vec![Op::DeletePipelineVersion {
                    pipeline_version_id: "v1".into(),
                    replaces: v1.revision,
                }],
            )
            .await
        ));
        write(
            &store,
            vec![Op::DeletePipeline {
                pipeline_id: "p1".into(),
                replaces: p.revision,
            }],
        )
        .await
        .unwrap();
        assert!(store.pipeline("p1").await.unwrap().is_none());
        assert!(store.pipeline_version("v2").await.unwrap().is_none());
        assert!(store.latest_pipeline_version("p1").await.unwrap().is_none());
        let versions = store
            .list_pipeline_versions(query(Scope::Pipeline("p1".into()), 10))
            .await
            .unwrap();
        assert_eq!(versions.total_size, 0);
        write(
            &store,
            vec![
                put_pipeline(pipeline("p2", "a", "", 3)),
                put_version(version("v3", "p2", "two", 3)),
            ],
        )
        .await
        .unwrap();
    }

    pub async fn recurring_runs_list_by_scope_and_compare_and_set(store: Arc<dyn Store>) {
        for (id, e, ns, t) in [
            ("r1", "e1", "a", 1),
            ("r2", "e1", "a", 2),
            ("r3", "e2", "b", 3),
        ] {
            write(&store, vec![put_recurring(recurring(id, e, ns, t))])
                .await
                .unwrap();
        }
        assert!(is_conflict(
            write(&store, vec![put_recurring(recurring("r1", "e1", "a", 9))]).await
        ));
        for (scope, ids) in [
            (Scope::All, vec!["r1", "r2", "r3"]),
            (Scope::Experiment("e1".into()), vec!["r1", "r2"]),
            (Scope::Namespace("b".into()), vec!["r3"]),
        ] {
            let page = store
                .list_recurring_runs(query(scope.clone(), 10))
                .await
                .unwrap();
            let got: Vec<_> = page.items.iter().map(|r| r.value.id().to_owned()).collect();
            assert_eq!(got, ids, "{scope:?}");
            assert_eq!(page.total_size, ids.len() as u64, "{scope:?}");
        }
        let r1 = store.recurring_run("r1").await.unwrap().unwrap();
        let mut advanced = r1.value.clone();
        advanced.schedule = ScheduleState {
            last_scheduled_at: Some(at(60)),
            runs_created: 1,
            unfinished_runs: vec!["run-1".into()],
        };
        write(
            &store,
            vec![Op::PutRecurringRun {
                record: Box::new(advanced.clone()),
                replaces: Some(r1.revision.clone()),
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            store.recurring_run("r1").await.unwrap().unwrap().value,
            advanced
        );
        assert!(is_conflict(
            write(
                &store,
                vec![Op::DeleteRecurringRun {
                    recurring_run_id: "r1".into(),
                    replaces: r1.revision,
                }],
            )
            .await
        ));
    }

    pub async fn experiment_wide_ops_touch_only_that_experiments_recurring_runs(
        store: Arc<dyn Store>,
    ) {
        let mut disabled = recurring("r2", "e1", "a", 2);
        disabled.recurring_run.status = recurring_run::Status::Disabled as i32;
        disabled.recurring_run.mode = recurring_run::Mode::Disable as i32;
        write(
            &store,
            vec![
                put_recurring(recurring("r1", "e1", "a", 1)),
                put_recurring(disabled.clone()),
                put_recurring(recurring("r3", "e2", "a", 3)),
            ],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![Op::DisableRecurringRunsOf {
                experiment_id: "e1".into(),
                at: at(100),
            }],
        )
        .await
        .unwrap();
        let r1 = store.recurring_run("r1").await.unwrap().unwrap().value;
        assert_eq!(
            r1.recurring_run.status,
            recurring_run::Status::Disabled as i32
        );
        assert_eq!(r1.recurring_run.mode, recurring_run::Mode::Disable as i32);
        assert_eq!(r1.recurring_run.updated_at, Some(at(100)));
        // Already disabled: untouched (its updated_at stays).
        assert_eq!(
            store.recurring_run("r2").await.unwrap().unwrap().value,
            disabled
        );
        let r3 = store.recurring_run("r3").await.unwrap().unwrap().value;
        assert_eq!(
            r3.recurring_run.status,
            recurring_run::Status::Enabled as i32
        );

        write(
            &store,
            vec![Op::DeleteRecurringRunsOf {
                experiment_id: "e1".into(),
            }],
        )
        .await
        .unwrap();
        let left = store
            .list_recurring_runs(query(Scope::All, 10))
            .await
            .unwrap();
        let ids: Vec<_> = left.items.iter().map(|r| r.value.id().to_owned()).collect();
        assert_eq!(ids, ["r3"]);
        assert_eq!(left.total_size, 1);
    }

    pub async fn a_lease_has_one_holder_until_it_expires(store: Arc<dyn Store>) {
        assert!(store.acquire_lease("l", "a", at(0), at(30)).await.unwrap());
        assert!(store.acquire_lease("l", "a", at(10), at(40)).await.unwrap());
        assert!(!store.acquire_lease("l", "b", at(39), at(69)).await.unwrap());
        // Leases are independent by name.
        assert!(
            store
                .acquire_lease("other", "b", at(39), at(69))
                .await
                .unwrap()
        );
        assert!(store.acquire_lease("l", "b", at(40), at(70)).await.unwrap());
        assert!(!store.acquire_lease("l", "a", at(41), at(71)).await.unwrap());
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
    pipeline_names_are_unique_per_namespace,
    pipelines_list_by_namespace_with_totals,
    versions_are_unique_per_pipeline_and_the_latest_is_the_newest,
    expectations_guard_pipeline_writes,
    deleting_a_pipeline_deletes_its_versions_and_frees_the_names,
    recurring_runs_list_by_scope_and_compare_and_set,
    experiment_wide_ops_touch_only_that_experiments_recurring_runs,
    a_lease_has_one_holder_until_it_expires,
);
