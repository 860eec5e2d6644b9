//! The query engine over the real store: random runs in random experiments and namespaces,
//! random scopes, sorts, filters and page sizes; all pages together equal a naive filter + sort
//! of the runs read back one by one, with creates and deletes between pages.

use std::sync::Arc;

use proptest::prelude::*;
use runledger::api::*;
use runledger::query::Record;
use runledger::query::filter::Filter;
use runledger::query::sort::Sort;
use runledger::service::{Context, Limits, Principal, Services};
use runledger::store::{self, DataDirOptions, Durability};

async fn services(dir: &std::path::Path) -> Arc<Services> {
    let options = DataDirOptions {
        durability: Durability::Buffered {
            flush_every_ms: 1000,
        },
        ..Default::default()
    };
    Services::new(
        store::open_data_dir(dir, options).unwrap(),
        Limits::default(),
    )
    .await
    .unwrap()
}

fn ctx() -> Context {
    Context::system(Principal::Anonymous)
}

#[derive(Debug, Clone)]
struct NewRun {
    name: &'static str,
    place: usize,
    scheduled: Option<i64>,
    state: i32,
    archived: bool,
}

fn arb_new_run() -> impl Strategy<Value = NewRun> {
    (
        prop::sample::select(vec!["a", "b", "b", "c"]),
        0usize..5,
        prop::option::of(0i64..4),
        prop::sample::select(vec![1, 2, 3, 5]),
        any::<bool>(),
    )
        .prop_map(|(name, place, scheduled, state, archived)| NewRun {
            name,
            place,
            scheduled,
            state,
            archived,
        })
}

#[derive(Debug, Clone)]
struct Query {
    scope: usize,
    sort_by: String,
    filter: String,
    page_size: i32,
}

fn arb_query() -> impl Strategy<Value = Query> {
    let names: Vec<&'static str> = <Run as Record>::FIELDS.iter().map(|(n, _)| *n).collect();
    let filters = vec![
        String::new(),
        r#"{"predicates":[{"operation":"EQUALS","key":"storage_state","string_value":"ARCHIVED"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"NOT_EQUALS","key":"storage_state","string_value":"ARCHIVED"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"GREATER_THAN","key":"display_name","string_value":"a"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["RUNNING","FAILED"]}}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"LESS_THAN","key":"finished_at","timestamp_value":"2000-01-01T00:00:00Z"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"EQUALS","key":"state","string_value":"PENDING"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"IN","key":"state","string_values":{"values":["PENDING","SUCCEEDED"]}},{"operation":"EQUALS","key":"storage_state","string_value":"AVAILABLE"}]}"#.to_owned(),
        r#"{"predicates":[{"operation":"EQUALS","key":"state","string_value":"FAILED"},{"operation":"EQUALS","key":"display_name","string_value":"b"}]}"#.to_owned(),
    ];
    (
        0usize..6,
        prop::sample::select(names),
        prop::sample::select(vec!["", " desc"]),
        prop::sample::select(filters),
        1i32..5,
    )
        .prop_map(|(scope, name, dir, filter, page_size)| Query {
            scope,
            sort_by: format!("{name}{dir}"),
            filter,
            page_size,
        })
}

/// Experiments 0..3 in namespaces ns0, ns0, ns1; places 3 and 4 are the default experiments of
/// ns0 and ns1.
async fn create(services: &Services, experiments: &[Experiment], spec: &NewRun) -> Run {
    let mut run = Run {
        display_name: spec.name.into(),
        pipeline_source: Some(run::PipelineSource::PipelineId("p".into())),
        scheduled_at: spec.scheduled.map(|s| runledger::wkt::Timestamp {
            seconds: s,
            nanos: 0,
        }),
        ..Default::default()
    };
    match spec.place {
        p @ 0..=2 => run.experiment_id = experiments[p].experiment_id.clone(),
        3 => run.namespace = "ns0".into(),
        _ => run.namespace = "ns1".into(),
    }
    let run = services.runs.create(&ctx(), run).await.unwrap().decode();
    if spec.state != RuntimeState::Pending as i32 {
        services
            .runs
            .report_state(
                &ctx(),
                ReportRunStateRequest {
                    run_id: run.run_id.clone(),
                    state: spec.state,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    if spec.archived {
        services.runs.archive(&ctx(), &run.run_id).await.unwrap();
    }
    services
        .runs
        .get(&ctx(), &run.run_id)
        .await
        .unwrap()
        .decode()
}

fn request(experiments: &[Experiment], q: &Query, token: &str) -> ListRunsRequest {
    let mut request = ListRunsRequest {
        page_size: q.page_size,
        sort_by: q.sort_by.clone(),
        filter: q.filter.clone(),
        page_token: token.to_owned(),
        ..Default::default()
    };
    match q.scope {
        s @ 0..=2 => request.experiment_id = experiments[s].experiment_id.clone(),
        3 => request.namespace = "ns0".into(),
        4 => request.namespace = "ns1".into(),
        _ => {}
    }
    request
}

fn in_scope(experiments: &[Experiment], q: &Query, run: &Run) -> bool {
    match q.scope {
        s @ 0..=2 => run.experiment_id == experiments[s].experiment_id,
        3 => run.namespace == "ns0",
        4 => run.namespace == "ns1",
        _ => true,
    }
}

fn naive(runs: &[Run], experiments: &[Experiment], q: &Query) -> Vec<String> {
    let sort = Sort::parse::<Run>(&q.sort_by).unwrap();
    let filter = Filter::parse::<Run>(&q.filter).unwrap();
    let mut keyed: Vec<_> = runs
        .iter()
        .filter(|r| in_scope(experiments, q, r) && filter.matches(*r))
        .map(|r| (r.field(sort.field).to_sort_value(), r.run_id.clone()))
        .collect();
    keyed.sort();
    if sort.descending {
        keyed.reverse();
    }
    keyed.into_iter().map(|(_, id)| id).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn listing_the_real_store_equals_the_naive_answer(
        specs in prop::collection::vec(arb_new_run(), 0..25),
        queries in prop::collection::vec(arb_query(), 1..4),
        churn in prop::collection::vec(arb_new_run(), 0..4),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let services = services(dir.path()).await;
            let mut experiments = Vec::new();
            for (i, ns) in ["ns0", "ns0", "ns1"].into_iter().enumerate() {
                experiments.push(
                    services
                        .experiments
                        .create(&ctx(), Experiment { display_name: format!("e{i}"), namespace: ns.into(), ..Default::default() })
                        .await
                        .unwrap(),
                );
            }
            let mut runs = Vec::new();
            for spec in &specs {
                runs.push(create(&services, &experiments, spec).await);
            }
            for q in &queries {
                // Without changes between pages: exactly the naive answer, total_size included.
                let expected = naive(&runs, &experiments, q);
                let mut got = Vec::new();
                let mut token = String::new();
                loop {
                    let page = services.runs.list(&ctx(), &request(&experiments, q, &token)).await.unwrap();
                    prop_assert_eq!(page.total_size as usize, expected.len(), "{:?}", q);
                    got.extend(page.runs.iter().map(|r| r.run_id().to_owned()));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                prop_assert_eq!(&got, &expected, "{:?}", q);
            }
            // With creates, deletes and state changes between pages: no run that stayed
            // unchanged is skipped or repeated.
            let q = &queries[0];
            let before = naive(&runs, &experiments, q);
            let mut touched = Vec::new();
            let mut seen = Vec::new();
            let mut token = String::new();
            let mut churn = churn.iter();
            loop {
                let page = services.runs.list(&ctx(), &request(&experiments, q, &token)).await.unwrap();
                seen.extend(page.runs.iter().map(|r| r.run_id().to_owned()));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
                if let Some(spec) = churn.next() {
                    create(&services, &experiments, spec).await;
                    if let Some(victim) = before.get(seen.len() % before.len().max(1))
                        && !touched.contains(victim) {
                            services.runs.delete(&ctx(), victim).await.unwrap();
                            touched.push(victim.clone());
                        }
                    // A run that finishes moves in the state and finished_at orders.
                    if let Some(mover) = before.iter().rev().find(|id| !touched.contains(*id)) {
                        let moved = services.runs.report_state(&ctx(), ReportRunStateRequest {
                            run_id: mover.clone(),
                            state: RuntimeState::Succeeded as i32,
                            ..Default::default()
                        }).await;
                        // A run already finished cannot move on: it stays unchanged.
                        if moved.is_ok() {
                            touched.push(mover.clone());
                        }
                    }
                }
            }
            for id in &before {
                if !touched.contains(id) {
                    prop_assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "{} in {:?}", id, q);
                }
            }
            Ok(())
        })?;
    }
}
