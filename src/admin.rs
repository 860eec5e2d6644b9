//! The gRPC adapter of runledger's own administration API (`runledger.admin.v1.Admin`): convert
//! the request, call the core, stream the answer. No rule lives here.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::admin_api::admin_server::Admin;
use crate::admin_api::{BackupProgress, BackupRequest};
use crate::error::Result;
use crate::service::Services;
use crate::store;

/// Serves the Admin service over shared [`Services`].
#[derive(Clone)]
pub struct AdminApi {
    services: Arc<Services>,
}

impl AdminApi {
    pub fn new(services: Arc<Services>) -> Self {
        AdminApi { services }
    }
}

type Progress = Pin<Box<dyn Stream<Item = Result<BackupProgress, Status>> + Send>>;

/// A backup still running: its progress and its outcome.
type Running = (
    watch::Receiver<store::BackupProgress>,
    JoinHandle<Result<store::BackupProgress>>,
);

fn message(progress: &store::BackupProgress, to: &str) -> BackupProgress {
    BackupProgress {
        keys: progress.keys,
        bytes: progress.bytes,
        done: progress.done,
        runs: progress.runs,
        experiments: progress.experiments,
        changed_during: progress.changed_during,
        to: to.to_owned(),
    }
}

fn outcome(
    finished: std::result::Result<Result<store::BackupProgress>, tokio::task::JoinError>,
    to: &str,
) -> Result<BackupProgress, Status> {
    match finished {
        Ok(Ok(last)) => Ok(message(&last, to)),
        Ok(Err(e)) => Err(Status::from(e)),
        Err(e) => Err(Status::internal(format!("the backup task failed: {e}"))),
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    type BackupStream = Progress;

    /// Answers at once with the error when the backup cannot start (its directory, the
    /// caller's role); otherwise streams progress until the last message (done).
    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let ctx = crate::grpc::context_of(&self.services, &request)?;
        let to = request.into_inner().to;
        let run = self.services.admin.backup(&ctx, &to).await?;
        let (mut progress, mut finished) = (run.progress, run.outcome);
        tokio::select! {
            biased;
            done = &mut finished => {
                let last = outcome(done, &to)?;
                return Ok(Response::new(Box::pin(futures::stream::iter([Ok(last)]))));
            }
            _ = progress.changed() => {}
        }
        let first = message(&progress.borrow_and_update(), &to);
        let rest = futures::stream::unfold(
            Some((progress, finished)) as Option<Running>,
            move |state| {
                let to = to.clone();
                async move {
                    let (mut progress, mut finished) = state?;
                    tokio::select! {
                        biased;
                        done = &mut finished => Some((outcome(done, &to), None)),
                        changed = progress.changed() => match changed {
                            Ok(()) => {
                                let now = message(&progress.borrow_and_update(), &to);
                                Some((Ok(now), Some((progress, finished))))
                            }
                            Err(_) => Some((outcome(finished.await, &to), None)),
                        },
                    }
                }
            },
        );
        let stream = futures::stream::once(async move { Ok(first) }).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }
}
