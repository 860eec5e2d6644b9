//! The gRPC adapter: convert the request, call the core, convert the result. No business rule
//! lives here.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::experiment_service_server::ExperimentService;
use crate::api::run_service_server::RunService;
use crate::api::*;
use crate::service::Ledger;

/// Serves RunService and ExperimentService over a shared [`Ledger`].
#[derive(Clone)]
pub struct GrpcApi {
    ledger: Arc<Ledger>,
}

impl GrpcApi {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        GrpcApi { ledger }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn empty(result: crate::error::Result<()>) -> Reply<pbjson_types::Empty> {
    reply(result.map(|()| pbjson_types::Empty {}))
}

fn reply<T>(result: crate::error::Result<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl RunService for GrpcApi {
    async fn create_run(&self, request: Request<CreateRunRequest>) -> Reply<Run> {
        let run = request.into_inner().run.unwrap_or_default();
        reply(self.ledger.create_run(run).await)
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Reply<Run> {
        reply(self.ledger.get_run(&request.get_ref().run_id))
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Reply<ListRunsResponse> {
        reply(self.ledger.list_runs(request.get_ref()))
    }

    async fn archive_run(&self, request: Request<ArchiveRunRequest>) -> Reply<pbjson_types::Empty> {
        empty(self.ledger.archive_run(&request.get_ref().run_id).await)
    }

    async fn unarchive_run(
        &self,
        request: Request<UnarchiveRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        empty(self.ledger.unarchive_run(&request.get_ref().run_id).await)
    }

    async fn delete_run(&self, request: Request<DeleteRunRequest>) -> Reply<pbjson_types::Empty> {
        empty(self.ledger.delete_run(&request.get_ref().run_id).await)
    }

    async fn terminate_run(
        &self,
        request: Request<TerminateRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        empty(self.ledger.terminate_run(&request.get_ref().run_id).await)
    }

    async fn retry_run(&self, request: Request<RetryRunRequest>) -> Reply<pbjson_types::Empty> {
        empty(self.ledger.retry_run(&request.get_ref().run_id).await)
    }

    async fn report_run_state(&self, request: Request<ReportRunStateRequest>) -> Reply<Run> {
        reply(self.ledger.report_run_state(request.into_inner()).await)
    }

    type WatchRunsStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

    async fn watch_runs(&self, request: Request<WatchRunsRequest>) -> Reply<Self::WatchRunsStream> {
        let watch = self.ledger.watch_runs(request.get_ref())?;
        let stream = futures::stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            match watch.next().await? {
                Ok(event) => Some((Ok(RunEvent::clone(&event)), Some(watch))),
                // The stream ends after the error (the watcher has fallen behind).
                Err(e) => Some((Err(Status::from(e)), None)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl ExperimentService for GrpcApi {
    async fn create_experiment(
        &self,
        request: Request<CreateExperimentRequest>,
    ) -> Reply<Experiment> {
        let experiment = request.into_inner().experiment.unwrap_or_default();
        reply(self.ledger.create_experiment(experiment).await)
    }

    async fn get_experiment(&self, request: Request<GetExperimentRequest>) -> Reply<Experiment> {
        reply(self.ledger.get_experiment(&request.get_ref().experiment_id))
    }

    async fn list_experiments(
        &self,
        request: Request<ListExperimentsRequest>,
    ) -> Reply<ListExperimentsResponse> {
        reply(self.ledger.list_experiments(request.get_ref()))
    }

    async fn archive_experiment(
        &self,
        request: Request<ArchiveExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        empty(
            self.ledger
                .archive_experiment(&request.get_ref().experiment_id)
                .await,
        )
    }

    async fn unarchive_experiment(
        &self,
        request: Request<UnarchiveExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        empty(
            self.ledger
                .unarchive_experiment(&request.get_ref().experiment_id)
                .await,
        )
    }

    async fn delete_experiment(
        &self,
        request: Request<DeleteExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        empty(
            self.ledger
                .delete_experiment(&request.get_ref().experiment_id)
                .await,
        )
    }
}
