//! Property tests of the pagination engine over an in-memory source: concatenating every page
//! equals a naive filter + sort of the same records, and mutations between pages never make a
//! page skip or repeat a record that existed throughout unchanged. Pages are requested the way
//! the service requests them: parsed into a ListQuery, answered, and continued by the token.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::{Direction, Source, list as answer};
use crate::api::{Run, run};
use crate::error::Result;
use crate::query::filter::Filter;
use crate::query::sort::Sort;
use crate::query::{
    ListQuery, ListRequest, QueryLimits, Record, Scope, SortValue, Tally, TallyGroup,
};
use crate::wkt::Timestamp;

const KEY: &[u8] = b"test key";

/// Records by id, scanned in (created_at, id) order like the store's index.
#[derive(Default, Clone)]
struct Memory(BTreeMap<String, Run>);

impl Source for Memory {
    type Item = Run;

    fn scan(
        &self,
        direction: Direction,
        after: Option<(Timestamp, &str)>,
    ) -> Box<dyn Iterator<Item = Result<Run>> + '_> {
        let mut runs: Vec<&Run> = self.0.values().collect();
        runs.sort_by(|a, b| {
            (a.created_at.unwrap_or_default(), &a.run_id)
                .cmp(&(b.created_at.unwrap_or_default(), &b.run_id))
        });
        if direction == Direction::Descending {
            runs.reverse();
        }
        let after = after.map(|(t, id)| (t, id.to_owned()));
        Box::new(
            runs.into_iter()
                .filter(move |r| match &after {
                    None => true,
                    Some(cursor) => {
                        let key = (r.created_at.unwrap_or_default(), r.run_id.clone());
                        if direction == Direction::Ascending {
                            key > *cursor
                        } else {
                            key < *cursor
                        }
                    }
                })
                .map(|r| Ok(r.clone())),
        )
    }

    fn tally(&self) -> Result<Tally> {
        let archived = self
            .0
            .values()
            .filter(|r| r.storage_state == run::StorageState::Archived as i32)
            .count() as u64;
        let group = |storage_state, count| TallyGroup {
            state: None,
            storage_state,
            count,
        };
        Ok(Tally {
            groups: vec![group(1, self.0.len() as u64 - archived), group(2, archived)],
        })
    }
}

/// One list request as a client sends it.
struct PageRequest<'a> {
    scope: String,
    page_size: i32,
    sort_by: &'a str,
    filter: &'a str,
    page_token: &'a str,
}

/// One page as a client receives it.
struct ClientPage {
    items: Vec<Run>,
    total_size: u64,
    next_page_token: String,
}

/// What the service does with a request: parse it, have the engine answer, issue the token.
fn list(
    source: &Memory,
    request: &PageRequest<'_>,
    key: &[u8],
    limits: &QueryLimits,
) -> Result<ClientPage> {
    let scope = match request.scope.split_once(':') {
        Some(("namespace", ns)) => Scope::Namespace(ns.to_owned()),
        _ => Scope::All,
    };
    let query = ListQuery::parse::<Run>(
        &ListRequest {
            scope,
            page_size: request.page_size,
            sort_by: request.sort_by,
            filter: request.filter,
            page_token: request.page_token,
        },
        key,
        limits,
    )?;
    let page = answer(source, &query)?;
    let next_page_token = query.next_page_token(&page, key);
    Ok(ClientPage {
        items: page.items,
        total_size: page.total_size,
        next_page_token,
    })
}

fn time(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

prop_compose! {
    fn arb_run(id: usize)(
        name in prop::sample::select(vec!["alpha", "beta", "beta", "gamma", "Beta", "a b"]),
        description in prop::sample::select(vec!["", "x", "y"]),
        created in (0i64..6, 0i32..3),
        scheduled in prop::option::of((0i64..6, 0i32..2)),
        finished in prop::option::of((0i64..6, 0i32..2)),
        state in 1i32..=8,
        archived in any::<bool>(),
        namespace in prop::sample::select(vec!["", "ns1", "ns2"]),
        experiment in prop::sample::select(vec!["e1", "e2"]),
        pipeline in prop::sample::select(vec!["p1", "p2", ""]),
        account in prop::sample::select(vec!["", "sa"]),
        recurring in prop::sample::select(vec!["", "job"]),
    ) -> Run {
        Run {
            run_id: format!("r{id:03}"),
            display_name: name.into(),
            description: description.into(),
            created_at: Some(time(created.0, created.1)),
            scheduled_at: scheduled.map(|(s, n)| time(s, n)),
            finished_at: finished.map(|(s, n)| time(s, n)),
            state,
            storage_state: if archived { 2 } else { 1 },
            namespace: namespace.into(),
            experiment_id: experiment.into(),
            pipeline_source: (!pipeline.is_empty()).then(|| run::PipelineSource::PipelineId(pipeline.into())),
            service_account: account.into(),
            recurring_run_id: recurring.into(),
            ..Default::default()
        }
    }
}

fn arb_runs() -> impl Strategy<Value = Vec<Run>> {
    (0usize..30).prop_flat_map(|n| (0..n).map(arb_run).collect::<Vec<_>>())
}

fn arb_sort() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = <Run as Record>::FIELDS.iter().map(|(n, _)| *n).collect();
    (
        prop::sample::select(names),
        prop::sample::select(vec!["", " asc", " desc"]),
    )
        .prop_map(|(n, d)| format!("{n}{d}"))
}

fn arb_predicate() -> impl Strategy<Value = String> {
    let text_keys = vec![
        "display_name",
        "run_id",
        "namespace",
        "experiment_id",
        "pipeline_id",
        "description",
    ];
    let ops = vec![
        "EQUALS",
        "NOT_EQUALS",
        "GREATER_THAN",
        "GREATER_THAN_EQUALS",
        "LESS_THAN",
        "LESS_THAN_EQUALS",
        "IS_SUBSTRING",
    ];
    let values = vec!["beta", "a", "ns1", "e2", "p1", "", "r005", "x"];
    let text = (
        prop::sample::select(text_keys),
        prop::sample::select(ops.clone()),
        prop::sample::select(values.clone()),
    )
        .prop_map(|(k, o, v)| format!(r#"{{"operation":"{o}","key":"{k}","string_value":"{v}"}}"#));
    let text_in = (
        prop::sample::select(vec!["display_name", "namespace"]),
        prop::collection::vec(prop::sample::select(values), 0..3),
    )
        .prop_map(|(k, vs)| {
            format!(
                r#"{{"operation":"IN","key":"{k}","stringValues":{{"values":{}}}}}"#,
                serde_json::to_string(&vs).unwrap()
            )
        });
    let states = (prop::sample::select(ops.clone()), 1i32..=8)
        .prop_map(|(o, s)| format!(r#"{{"operation":"{o}","key":"state","int_value":{s}}}"#));
    let storage = (
        prop::sample::select(vec!["EQUALS", "NOT_EQUALS"]),
        prop::sample::select(vec!["AVAILABLE", "ARCHIVED"]),
    )
        .prop_map(|(o, v)| {
            format!(r#"{{"operation":"{o}","key":"storage_state","string_value":"{v}"}}"#)
        });
    let times = (
        prop::sample::select(vec!["created_at", "scheduled_at", "finished_at"]),
        prop::sample::select(ops[..6].to_vec()),
        0i64..6,
        0i32..3,
    )
        .prop_map(|(k, o, s, n)| {
            let ts = serde_json::to_string(&time(s, n)).unwrap();
            format!(r#"{{"operation":"{o}","key":"{k}","timestampValue":{ts}}}"#)
        });
    prop_oneof![text, text_in, states, storage, times]
}

fn arb_filter() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_predicate(), 0..3).prop_map(|ps| {
        if ps.is_empty() {
            String::new()
        } else {
            format!(r#"{{"predicates":[{}]}}"#, ps.join(","))
        }
    })
}

/// The naive answer: filter, then sort by (value, id) in the requested direction.
fn naive(runs: &BTreeMap<String, Run>, sort_by: &str, filter: &str) -> Vec<String> {
    let sort = Sort::parse::<Run>(sort_by).unwrap();
    let filter = Filter::parse::<Run>(filter).unwrap();
    let mut matching: Vec<(SortValue, String)> = runs
        .values()
        .filter(|r| filter.matches(*r))
        .map(|r| (r.field(sort.field).to_sort_value(), r.run_id.clone()))
        .collect();
    matching.sort();
    if sort.descending {
        matching.reverse();
    }
    matching.into_iter().map(|(_, id)| id).collect()
}

/// A change made between two pages.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(Run),
    Delete(usize),
    Update(usize, Run),
}

fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            arb_run(900).prop_map(Mutation::Insert),
            (0usize..40).prop_map(Mutation::Delete),
            ((0usize..40), arb_run(0)).prop_map(|(i, r)| Mutation::Update(i, r)),
        ],
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn all_pages_together_equal_a_naive_filter_and_sort(
        runs in arb_runs(), sort_by in arb_sort(), filter in arb_filter(), page_size in 1i32..7,
    ) {
        let source = Memory(runs.into_iter().map(|r| (r.run_id.clone(), r)).collect());
        let expected = naive(&source.0, &sort_by, &filter);
        let mut got = Vec::new();
        let mut token = String::new();
        let mut first = true;
        loop {
            // Later pages send the token alone, or with the same sort and filter again.
            let (s, f) = if first || page_size % 2 == 0 { (sort_by.as_str(), filter.as_str()) } else { ("", "") };
            let page = list(&source, &PageRequest { scope: "all".into(), page_size, sort_by: s, filter: f, page_token: &token }, KEY, &QueryLimits::default()).unwrap();
            prop_assert_eq!(page.total_size as usize, expected.len());
            prop_assert!(page.items.len() <= page_size as usize);
            got.extend(page.items.iter().map(|r| r.run_id.clone()));
            if page.next_page_token.is_empty() {
                break;
            }
            prop_assert_eq!(page.items.len(), page_size as usize, "only the last page is short");
            token = page.next_page_token;
            first = false;
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn changes_between_pages_never_skip_or_repeat_a_record_that_stayed_unchanged(
        runs in arb_runs(), sort_by in arb_sort(), filter in arb_filter(), page_size in 1i32..5, mutations in arb_mutations(),
    ) {
        let mut source = Memory(runs.into_iter().map(|r| (r.run_id.clone(), r)).collect());
        let original = source.0.clone();
        let mut touched: Vec<String> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut mutations = mutations.into_iter();
        let mut token = String::new();
        let mut inserted = 0;
        loop {
            let page = list(&source, &PageRequest { scope: "all".into(), page_size, sort_by: &sort_by, filter: &filter, page_token: &token }, KEY, &QueryLimits::default()).unwrap();
            for r in &page.items {
                *seen.entry(r.run_id.clone()).or_default() += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            let ids: Vec<String> = source.0.keys().cloned().collect();
            match mutations.next() {
                Some(Mutation::Insert(mut r)) => {
                    inserted += 1;
                    r.run_id = format!("new{inserted:03}");
                    source.0.insert(r.run_id.clone(), r);
                }
                Some(Mutation::Delete(i)) if !ids.is_empty() => {
                    let id = ids[i % ids.len()].clone();
                    source.0.remove(&id);
                    touched.push(id);
                }
                Some(Mutation::Update(i, mut r)) if !ids.is_empty() => {
                    let id = ids[i % ids.len()].clone();
                    r.run_id = id.clone();
                    source.0.insert(id.clone(), r);
                    touched.push(id);
                }
                _ => {}
            }
        }
        // A record whose sort value changed may legitimately show up again; others never do.
        for (id, count) in &seen {
            if !touched.contains(id) {
                prop_assert_eq!(*count, 1, "{} was returned {} times", id, count);
            }
        }
        // Every record that existed throughout, unchanged, and matches is returned.
        for id in naive(&original, &sort_by, &filter) {
            if !touched.contains(&id) {
                prop_assert!(seen.contains_key(&id), "{} was skipped", id);
            }
        }
    }
}

#[test]
fn a_token_is_refused_with_another_scope_sort_or_filter() {
    let runs: BTreeMap<String, Run> = (0..5)
        .map(|i| {
            let r = Run {
                run_id: format!("r{i}"),
                created_at: Some(time(i, 0)),
                ..Default::default()
            };
            (r.run_id.clone(), r)
        })
        .collect();
    let source = Memory(runs);
    let filter = r#"{"predicates":[{"operation":"NOT_EQUALS","key":"name","string_value":"x"}]}"#;
    let first = list(
        &source,
        &PageRequest {
            scope: "namespace:a".into(),
            page_size: 2,
            sort_by: "name",
            filter,
            page_token: "",
        },
        KEY,
        &QueryLimits::default(),
    )
    .unwrap();
    let token = first.next_page_token.as_str();
    let attempts = [
        PageRequest {
            scope: "namespace:b".into(),
            page_size: 2,
            sort_by: "",
            filter: "",
            page_token: token,
        },
        PageRequest {
            scope: "all".into(),
            page_size: 2,
            sort_by: "",
            filter: "",
            page_token: token,
        },
        PageRequest {
            scope: "namespace:a".into(),
            page_size: 2,
            sort_by: "name desc",
            filter: "",
            page_token: token,
        },
        PageRequest {
            scope: "namespace:a".into(),
            page_size: 2,
            sort_by: "",
            filter: r#"{"predicates":[]}"#,
            page_token: token,
        },
        PageRequest {
            scope: "namespace:a".into(),
            page_size: 2,
            sort_by: "",
            filter: "",
            page_token: &token[1..],
        },
    ];
    for request in attempts {
        let err = list(&source, &request, KEY, &QueryLimits::default())
            .err()
            .expect("refused");
        assert!(
            matches!(err, crate::error::Error::InvalidArgument(_)),
            "{err:?}"
        );
    }
    // The same sort and filter sent again, or neither, continue the listing.
    for (sort_by, f) in [("name", filter), ("", ""), ("name asc", "")] {
        let next = list(
            &source,
            &PageRequest {
                scope: "namespace:a".into(),
                page_size: 2,
                sort_by,
                filter: f,
                page_token: token,
            },
            KEY,
            &QueryLimits::default(),
        )
        .unwrap();
        assert_eq!(next.items.len(), 2);
    }
}

#[test]
fn page_size_rules() {
    let runs: BTreeMap<String, Run> = (0..250)
        .map(|i| {
            let r = Run {
                run_id: format!("r{i:03}"),
                created_at: Some(time(i, 0)),
                ..Default::default()
            };
            (r.run_id.clone(), r)
        })
        .collect();
    let source = Memory(runs);
    let size = |n| {
        list(
            &source,
            &PageRequest {
                scope: "all".into(),
                page_size: n,
                sort_by: "",
                filter: "",
                page_token: "",
            },
            KEY,
            &QueryLimits::default(),
        )
        .map(|p| p.items.len())
    };
    assert_eq!(size(0).unwrap(), 20);
    assert_eq!(size(1).unwrap(), 1);
    assert_eq!(size(200).unwrap(), 200);
    assert_eq!(size(201).unwrap(), 200);
    assert!(matches!(
        size(-1),
        Err(crate::error::Error::InvalidArgument(_))
    ));
}
