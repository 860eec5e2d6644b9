//! The offline loader: fills a data directory with an experiment and N runs through the library
//! (the same `Txn::put_run` the server uses, so records, indexes and counters are exactly what
//! CreateRun would have written), many runs per atomic batch, before the server starts on it.
//! Far faster than N CreateRun calls, and it still exercises the real key layout.

use std::path::Path;
use std::time::{Duration, Instant};

use pbjson_types::Struct;

use super::workload::stored_run;
use crate::api::Experiment;
use crate::service::{Ledger, Limits};
use crate::store::{Durability, Store, StoreOptions};
use crate::wkt::Timestamp;

/// Runs written per atomic batch.
const BATCH: usize = 500;

/// What the loader wrote.
pub struct Loaded {
    pub experiment_id: String,
    /// Every run id, in creation order.
    pub run_ids: Vec<String>,
    /// Ids of the runs left PENDING (every other one), for ReportRunState.
    pub pending_ids: Vec<String>,
    pub seconds: f64,
}

/// Creates experiment `name` in `dir` and `runs` runs in it, created one millisecond apart and
/// ending now; every other run is finished (SUCCEEDED), the rest PENDING. `progress` is called
/// with the number of runs written so far, now and then.
pub async fn load(
    dir: &Path,
    name: &str,
    runs: usize,
    spec: &Struct,
    mut progress: impl FnMut(usize, f64) + Send + 'static,
) -> Result<Loaded, String> {
    let started = Instant::now();
    let store = Store::open(
        dir,
        StoreOptions {
            // Nothing waits on the loader's writes; one flush at the end makes them durable.
            durability: Durability::Buffered {
                flush_every_ms: 5_000,
            },
            event_buffer: 1,
            cache_bytes: 256 * 1024 * 1024,
        },
    )
    .map_err(|e| e.to_string())?;
    let ledger = Ledger::new(store.clone(), Limits::default()).map_err(|e| e.to_string())?;
    let experiment = ledger
        .create_experiment(Experiment {
            display_name: name.to_owned(),
            description: "runs written by runledger bench".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    drop(ledger);

    let spec = spec.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let now = Timestamp::now();
        let first_ms = now.seconds * 1000 - runs as i64;
        let mut run_ids = Vec::with_capacity(runs);
        let mut pending_ids = Vec::new();
        let mut last_report = Instant::now();
        let mut written = 0;
        while written < runs {
            let mut txn = store.begin();
            let mut last_created = None;
            for i in written..(written + BATCH).min(runs) {
                let ms = first_ms + i as i64;
                let created = Timestamp {
                    seconds: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                };
                let finished = i % 2 == 0;
                let run = stored_run(
                    &experiment.experiment_id,
                    &experiment.namespace,
                    &spec,
                    i as u64,
                    created,
                    finished,
                );
                txn.put_run(None, &run);
                if !finished {
                    pending_ids.push(run.run_id.clone());
                }
                run_ids.push(run.run_id);
                last_created = Some(created);
            }
            let current = txn
                .experiment(&experiment.experiment_id)
                .map_err(|e| e.to_string())?
                .ok_or("the bench experiment vanished while loading")?;
            let mut updated = current.clone();
            updated.last_run_created_at = last_created;
            txn.put_experiment(Some(&current), &updated);
            let _ticket = txn.commit().map_err(|e| e.to_string())?;
            written = run_ids.len();
            if last_report.elapsed() > Duration::from_secs(5) || written == runs {
                progress(written, started.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
        }
        store.close().map_err(|e| e.to_string())?;
        Ok::<_, String>(Loaded {
            experiment_id: experiment.experiment_id,
            run_ids,
            pending_ids,
            seconds: 0.0,
        })
    })
    .await
    .map_err(|e| format!("the loader failed: {e}"))??;
    // The store's last handle is gone with the closure: the server can open the directory.
    Ok(Loaded {
        seconds: started.elapsed().as_secs_f64(),
        ..loaded
    })
}
