//! The offline loader: fills a store (a data directory, or a PostgreSQL database) with an
//! experiment and N runs through the store interface (the same writes CreateRun makes, so
//! records, indexes and counters are exactly what the server would have stored), many runs per
//! atomic write, before the server starts on it. Far faster than N CreateRun calls, and it
//! still exercises the real key layout or schema.

use std::path::Path;
use std::time::{Duration, Instant};

use runledger::api::{Experiment, experiment};
use runledger::store::{self, DataDirOptions, Durability, Location, Op, Write};
use runledger::wkt::StructBytes;
use runledger::wkt::Timestamp;

use super::workload::{Stage, spec_variant, stored_run};

/// Runs written per atomic write.
const BATCH: usize = 500;

/// Which pipeline specs the stored runs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecMix {
    /// Runs of this many distinct pipelines (run i uses pipeline i mod n): the normal case.
    Shared(usize),
    /// Every run its own spec.
    Distinct,
}

impl std::fmt::Display for SpecMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecMix::Shared(n) => write!(f, "{n} distinct pipelines"),
            SpecMix::Distinct => write!(f, "a distinct spec per run"),
        }
    }
}

/// What the loader wrote.
pub struct Loaded {
    pub experiment_id: String,
    /// Every run id, in creation order.
    pub run_ids: Vec<String>,
    /// Ids of the runs left PENDING (every other one), for ReportRunState.
    pub pending_ids: Vec<String>,
    pub seconds: f64,
    /// The store's size once everything was written, as it reports it.
    pub bytes_on_disk: Option<u64>,
}

/// Where the loader writes a data directory: buffered (nothing waits on the loader's writes;
/// closing the store makes them durable).
pub fn data_dir(dir: &Path) -> Location {
    Location::DataDir {
        dir: dir.to_owned(),
        options: DataDirOptions {
            durability: Durability::Buffered {
                flush_every_ms: 5_000,
            },
            event_buffer: 1,
            event_retain: 0,
            cache_bytes: 256 * 1024 * 1024,
            ..DataDirOptions::default()
        },
    }
}

/// Creates experiment `name` in the store at `location` and `runs` runs in it, created one
/// millisecond apart and ending now: every 100th run RUNNING, of the others every other one
/// finished (SUCCEEDED), the rest PENDING; their specs as `mix` says, made from `spec`.
/// `progress` is called with the number of runs written so far, every few seconds.
pub async fn load(
    location: &Location,
    name: &str,
    runs: usize,
    spec: &StructBytes,
    mix: SpecMix,
    mut progress: impl FnMut(usize, f64) + Send + 'static,
) -> Result<Loaded, String> {
    let started = Instant::now();
    let store = store::open(location).await.map_err(|e| e.to_string())?;
    let now = Timestamp::now();
    let experiment = Experiment {
        experiment_id: uuid::Uuid::new_v4().to_string(),
        display_name: name.to_owned(),
        description: "runs written by runledger-bench".into(),
        created_at: Some(now),
        storage_state: experiment::StorageState::Available as i32,
        ..Default::default()
    };
    let write = |ops| {
        let store = store.clone();
        async move {
            store
                .write(Write::new(ops))
                .await
                .map_err(|e| e.to_string())
        }
    };
    write(vec![Op::PutExperiment {
        experiment: experiment.clone(),
        replaces: None,
    }])
    .await?;

    let shared: Vec<StructBytes> = match mix {
        SpecMix::Shared(n) => (0..n.max(1) as u64)
            .map(|v| spec_variant(spec, v))
            .collect(),
        SpecMix::Distinct => Vec::new(),
    };
    let first_ms = now.seconds * 1000 - runs as i64;
    let mut run_ids = Vec::with_capacity(runs);
    let mut pending_ids = Vec::new();
    let mut last_report = Instant::now();
    while run_ids.len() < runs {
        let written = run_ids.len();
        let mut ops = Vec::with_capacity(BATCH);
        for i in written..(written + BATCH).min(runs) {
            let ms = first_ms + i as i64;
            let created = Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
            };
            let stage = if i % 100 == 1 {
                Stage::Running
            } else if i % 2 == 0 {
                Stage::Succeeded
            } else {
                Stage::Pending
            };
            let distinct;
            let spec = match mix {
                SpecMix::Shared(_) => &shared[i % shared.len()],
                SpecMix::Distinct => {
                    distinct = spec_variant(spec, i as u64);
                    &distinct
                }
            };
            let run = stored_run(
                &experiment.experiment_id,
                &experiment.namespace,
                spec,
                i as u64,
                created,
                stage,
            );
            if stage == Stage::Pending {
                pending_ids.push(run.run_id.clone());
            }
            run_ids.push(run.run_id.clone());
            ops.push(Op::PutRun {
                run: Box::new(run),
                replaces: None,
            });
        }
        write(ops).await?;
        if last_report.elapsed() > Duration::from_secs(5) || run_ids.len() == runs {
            progress(run_ids.len(), started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    store.settle().await.map_err(|e| e.to_string())?;
    let bytes_on_disk = store.size_on_disk().await.map_err(|e| e.to_string())?;
    store.close().await.map_err(|e| e.to_string())?;
    // The store's last handle goes with it: the server can open the directory.
    drop(store);
    Ok(Loaded {
        experiment_id: experiment.experiment_id,
        run_ids,
        pending_ids,
        seconds: started.elapsed().as_secs_f64(),
        bytes_on_disk,
    })
}
