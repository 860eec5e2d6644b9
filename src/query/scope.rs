//! Which records a listing, a watch or a counter covers. One type for every use: ListRuns
//! (every run, a namespace's, an experiment's), ListExperiments (every one, a namespace's),
//! WatchRuns (those, or one run), ListPipelines (a namespace's), ListPipelineVersions (a
//! pipeline's) and ListRecurringRuns (like runs). It is also the access boundary a page token
//! is bound to.

use serde::{Deserialize, Serialize};

use crate::api::Run;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Everything.
    All,
    /// One namespace's records (the empty namespace is a namespace like any other).
    Namespace(String),
    /// One experiment's runs.
    Experiment(String),
    /// One run (watches only).
    Run(String),
    /// One pipeline's versions.
    Pipeline(String),
}

impl Scope {
    /// The scope's name inside page tokens. Kept as tokens have always spelled it, so tokens
    /// issued before an upgrade stay valid after it.
    pub fn token_name(&self) -> String {
        match self {
            Scope::All => "all".to_owned(),
            Scope::Namespace(ns) => format!("namespace:{ns}"),
            Scope::Experiment(id) => format!("experiment:{id}"),
            Scope::Run(id) => format!("run:{id}"),
            Scope::Pipeline(id) => format!("pipeline:{id}"),
        }
    }

    /// Whether the run with these ids belongs to the scope.
    pub fn covers(&self, run_id: &str, experiment_id: &str, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespace(ns) => namespace == ns,
            Scope::Experiment(id) => experiment_id == id,
            Scope::Run(id) => run_id == id,
            Scope::Pipeline(_) => false,
        }
    }

    /// The scopes a run is counted and indexed in.
    pub fn of_run(run: &Run) -> [Scope; 3] {
        [
            Scope::All,
            Scope::Experiment(run.experiment_id.clone()),
            Scope::Namespace(run.namespace.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_covered_by_its_own_scopes_only() {
        let run = Run {
            run_id: "r".into(),
            experiment_id: "e".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        for scope in Scope::of_run(&run)
            .into_iter()
            .chain([Scope::Run("r".into())])
        {
            assert!(scope.covers("r", "e", "ns"), "{scope:?}");
        }
        for scope in [
            Scope::Run("r2".into()),
            Scope::Experiment("e2".into()),
            Scope::Namespace(String::new()),
        ] {
            assert!(!scope.covers("r", "e", "ns"), "{scope:?}");
        }
    }

    #[test]
    fn token_names_are_distinct_per_scope() {
        let names = [
            Scope::All,
            Scope::Namespace("x".into()),
            Scope::Experiment("x".into()),
            Scope::Run("x".into()),
            Scope::Pipeline("x".into()),
        ]
        .map(|s| s.token_name());
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
