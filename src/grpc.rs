//! The gRPC adapter: convert the request, call the core, convert the result. No business rule
//! lives here.
//!
//! Methods that answer with runs send them as they are stored (see [`RunRoutes`]).

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use futures::Stream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::api::experiment_service_server::ExperimentService;
use crate::api::pipeline_service_server::PipelineService;
use crate::api::recurring_run_service_server::RecurringRunService;
use crate::api::run_service_server::RunService;
use crate::api::run_service_server::RunServiceServer;
use crate::api::*;
use crate::service::{Context, Principal, RunPage, Services, run_event};
use crate::store::StoredRun;

/// Serves RunService, ExperimentService, PipelineService and RecurringRunService over shared
/// [`Services`].
#[derive(Clone)]
pub struct GrpcApi {
    services: Arc<Services>,
}

impl GrpcApi {
    pub fn new(services: Arc<Services>) -> Self {
        GrpcApi { services }
    }

    /// The context of a call: its principal is what the transport established for the request
    /// (anonymous when nobody did).
    fn context<T>(&self, request: &Request<T>) -> Result<Context, Status> {
        context_of(&self.services, request)
    }
}

/// UNAUTHENTICATED when the identifying layer rejected the request's credentials.
fn context_of<T>(services: &Services, request: &Request<T>) -> Result<Context, Status> {
    if let Some(crate::auth::Rejected(e)) = request.extensions().get() {
        return Err(Status::from(e.clone()));
    }
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_default();
    Ok(services.context(principal))
}

type Reply<T> = Result<Response<T>, Status>;

fn empty(result: crate::error::Result<()>) -> Reply<pbjson_types::Empty> {
    reply(result.map(|()| pbjson_types::Empty {}))
}

fn reply<T>(result: crate::error::Result<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

fn decoded(result: crate::error::Result<StoredRun>) -> Reply<Run> {
    reply(result.map(|stored| stored.decode()))
}

#[tonic::async_trait]
impl RunService for GrpcApi {
    async fn create_run(&self, request: Request<CreateRunRequest>) -> Reply<Run> {
        let ctx = self.context(&request)?;
        let run = request.into_inner().run.unwrap_or_default();
        decoded(self.services.runs.create(&ctx, run).await)
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Reply<Run> {
        let ctx = self.context(&request)?;
        decoded(
            self.services
                .runs
                .get(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Reply<ListRunsResponse> {
        let ctx = self.context(&request)?;
        let page = self.services.runs.list(&ctx, request.get_ref()).await;
        reply(page.map(|page| ListRunsResponse {
            runs: page.runs.iter().map(StoredRun::decode).collect(),
            total_size: page.total_size,
            next_page_token: page.next_page_token,
        }))
    }

    async fn archive_run(&self, request: Request<ArchiveRunRequest>) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        empty(
            self.services
                .runs
                .archive(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn unarchive_run(
        &self,
        request: Request<UnarchiveRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        empty(
            self.services
                .runs
                .unarchive(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn delete_run(&self, request: Request<DeleteRunRequest>) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        empty(
            self.services
                .runs
                .delete(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn terminate_run(
        &self,
        request: Request<TerminateRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        empty(
            self.services
                .runs
                .terminate(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn retry_run(&self, request: Request<RetryRunRequest>) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        empty(
            self.services
                .runs
                .retry(&ctx, &request.get_ref().run_id)
                .await,
        )
    }

    async fn report_run_state(&self, request: Request<ReportRunStateRequest>) -> Reply<Run> {
        let ctx = self.context(&request)?;
        decoded(
            self.services
                .runs
                .report_state(&ctx, request.into_inner())
                .await,
        )
    }

    type WatchRunsStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

    async fn watch_runs(&self, request: Request<WatchRunsRequest>) -> Reply<Self::WatchRunsStream> {
        let ctx = self.context(&request)?;
        let watch = self.services.runs.watch(&ctx, request.get_ref()).await?;
        let stream = futures::stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            match watch.next().await? {
                Ok(change) => Some((Ok(run_event(&change)), Some(watch))),
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
        let ctx = self.context(&request)?;
        let experiment = request.into_inner().experiment.unwrap_or_default();
        reply(self.services.experiments.create(&ctx, experiment).await)
    }

    async fn get_experiment(&self, request: Request<GetExperimentRequest>) -> Reply<Experiment> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().experiment_id;
        reply(self.services.experiments.get(&ctx, id).await)
    }

    async fn list_experiments(
        &self,
        request: Request<ListExperimentsRequest>,
    ) -> Reply<ListExperimentsResponse> {
        let ctx = self.context(&request)?;
        reply(
            self.services
                .experiments
                .list(&ctx, request.get_ref())
                .await,
        )
    }

    async fn archive_experiment(
        &self,
        request: Request<ArchiveExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().experiment_id;
        empty(self.services.experiments.archive(&ctx, id).await)
    }

    async fn unarchive_experiment(
        &self,
        request: Request<UnarchiveExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().experiment_id;
        empty(self.services.experiments.unarchive(&ctx, id).await)
    }

    async fn delete_experiment(
        &self,
        request: Request<DeleteExperimentRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().experiment_id;
        empty(self.services.experiments.delete(&ctx, id).await)
    }
}

#[tonic::async_trait]
impl PipelineService for GrpcApi {
    async fn create_pipeline(&self, request: Request<CreatePipelineRequest>) -> Reply<Pipeline> {
        let ctx = self.context(&request)?;
        let pipeline = request.into_inner().pipeline.unwrap_or_default();
        reply(self.services.pipelines.create(&ctx, pipeline).await)
    }

    async fn get_pipeline(&self, request: Request<GetPipelineRequest>) -> Reply<Pipeline> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().pipeline_id;
        reply(self.services.pipelines.get(&ctx, id).await)
    }

    async fn get_pipeline_by_name(
        &self,
        request: Request<GetPipelineByNameRequest>,
    ) -> Reply<Pipeline> {
        let ctx = self.context(&request)?;
        let r = request.get_ref();
        reply(
            self.services
                .pipelines
                .get_by_name(&ctx, &r.namespace, &r.name)
                .await,
        )
    }

    async fn list_pipelines(
        &self,
        request: Request<ListPipelinesRequest>,
    ) -> Reply<ListPipelinesResponse> {
        let ctx = self.context(&request)?;
        reply(self.services.pipelines.list(&ctx, request.get_ref()).await)
    }

    async fn delete_pipeline(
        &self,
        request: Request<DeletePipelineRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let r = request.get_ref();
        empty(
            self.services
                .pipelines
                .delete(&ctx, &r.pipeline_id, r.cascade)
                .await,
        )
    }

    async fn create_pipeline_and_version(
        &self,
        request: Request<CreatePipelineAndVersionRequest>,
    ) -> Reply<Pipeline> {
        let ctx = self.context(&request)?;
        let r = request.into_inner();
        let created = self
            .services
            .pipelines
            .create_with_version(
                &ctx,
                r.pipeline.unwrap_or_default(),
                r.pipeline_version.unwrap_or_default(),
            )
            .await;
        reply(created.map(|(pipeline, _)| pipeline))
    }

    async fn create_pipeline_version(
        &self,
        request: Request<CreatePipelineVersionRequest>,
    ) -> Reply<PipelineVersion> {
        let ctx = self.context(&request)?;
        let r = request.into_inner();
        let version = r.pipeline_version.unwrap_or_default();
        reply(
            self.services
                .pipelines
                .create_version(&ctx, &r.pipeline_id, version)
                .await,
        )
    }

    async fn get_pipeline_version(
        &self,
        request: Request<GetPipelineVersionRequest>,
    ) -> Reply<PipelineVersion> {
        let ctx = self.context(&request)?;
        let r = request.get_ref();
        reply(
            self.services
                .pipelines
                .get_version(&ctx, &r.pipeline_id, &r.pipeline_version_id)
                .await,
        )
    }

    async fn list_pipeline_versions(
        &self,
        request: Request<ListPipelineVersionsRequest>,
    ) -> Reply<ListPipelineVersionsResponse> {
        let ctx = self.context(&request)?;
        reply(
            self.services
                .pipelines
                .list_versions(&ctx, request.get_ref())
                .await,
        )
    }

    async fn delete_pipeline_version(
        &self,
        request: Request<DeletePipelineVersionRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let r = request.get_ref();
        empty(
            self.services
                .pipelines
                .delete_version(&ctx, &r.pipeline_id, &r.pipeline_version_id)
                .await,
        )
    }

    /// Over gRPC an empty tags map cannot be told from no tags: tags are replaced only when
    /// some are sent (the JSON route can clear them).
    async fn update_pipeline(&self, request: Request<UpdatePipelineRequest>) -> Reply<Pipeline> {
        let ctx = self.context(&request)?;
        let pipeline = request.into_inner().pipeline.unwrap_or_default();
        reply(self.services.pipelines.update(&ctx, pipeline, false).await)
    }

    async fn update_pipeline_version(
        &self,
        request: Request<UpdatePipelineVersionRequest>,
    ) -> Reply<PipelineVersion> {
        let ctx = self.context(&request)?;
        let version = request.into_inner().pipeline_version.unwrap_or_default();
        reply(
            self.services
                .pipelines
                .update_version(&ctx, version, false)
                .await,
        )
    }
}

#[tonic::async_trait]
impl RecurringRunService for GrpcApi {
    async fn create_recurring_run(
        &self,
        request: Request<CreateRecurringRunRequest>,
    ) -> Reply<RecurringRun> {
        let ctx = self.context(&request)?;
        let input = request.into_inner().recurring_run.unwrap_or_default();
        reply(self.services.recurring_runs.create(&ctx, input).await)
    }

    async fn get_recurring_run(
        &self,
        request: Request<GetRecurringRunRequest>,
    ) -> Reply<RecurringRun> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().recurring_run_id;
        reply(self.services.recurring_runs.get(&ctx, id).await)
    }

    async fn list_recurring_runs(
        &self,
        request: Request<ListRecurringRunsRequest>,
    ) -> Reply<ListRecurringRunsResponse> {
        let ctx = self.context(&request)?;
        reply(
            self.services
                .recurring_runs
                .list(&ctx, request.get_ref())
                .await,
        )
    }

    async fn enable_recurring_run(
        &self,
        request: Request<EnableRecurringRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().recurring_run_id;
        empty(self.services.recurring_runs.enable(&ctx, id).await)
    }

    async fn disable_recurring_run(
        &self,
        request: Request<DisableRecurringRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().recurring_run_id;
        empty(self.services.recurring_runs.disable(&ctx, id).await)
    }

    async fn delete_recurring_run(
        &self,
        request: Request<DeleteRecurringRunRequest>,
    ) -> Reply<pbjson_types::Empty> {
        let ctx = self.context(&request)?;
        let id = &request.get_ref().recurring_run_id;
        empty(self.services.recurring_runs.delete(&ctx, id).await)
    }
}

/// RunService with GetRun, ListRuns, CreateRun and ReportRunState answered from the stored
/// encodings: a stored run is the protobuf a client receives, so these copy bytes instead of
/// decoding every run (a deep pipeline_spec Struct) and encoding it again, which was most of
/// their cost. Every other method goes to the generated service.
#[derive(Clone)]
pub struct RunRoutes {
    generated: RunServiceServer<GrpcApi>,
    services: Arc<Services>,
    max_message_bytes: usize,
}

impl RunRoutes {
    pub fn new(
        services: Arc<Services>,
        generated: RunServiceServer<GrpcApi>,
        max_message_bytes: usize,
    ) -> Self {
        RunRoutes {
            generated,
            services,
            max_message_bytes,
        }
    }
}

impl NamedService for RunRoutes {
    const NAME: &'static str = <RunServiceServer<GrpcApi> as NamedService>::NAME;
}

const CREATE_RUN: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/CreateRun";
const GET_RUN: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/GetRun";
const REPORT_RUN_STATE: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/ReportRunState";
const LIST_RUNS: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/ListRuns";

impl<B> Service<http::Request<B>> for RunRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = Some(self.max_message_bytes);
        let services = self.services.clone();
        match request.uri().path() {
            CREATE_RUN => serve_stored(
                request,
                limit,
                services,
                |s, ctx, r: CreateRunRequest| async move {
                    s.runs.create(&ctx, r.run.unwrap_or_default()).await
                },
            ),
            REPORT_RUN_STATE => serve_stored(
                request,
                limit,
                services,
                |s, ctx, r: ReportRunStateRequest| async move { s.runs.report_state(&ctx, r).await },
            ),
            GET_RUN => serve_stored(
                request,
                limit,
                services,
                |s, ctx, r: GetRunRequest| async move { s.runs.get(&ctx, &r.run_id).await },
            ),
            LIST_RUNS => serve_stored(
                request,
                limit,
                services,
                |s, ctx, r: ListRunsRequest| async move { s.runs.list(&ctx, &r).await },
            ),
            _ => self.generated.call(request),
        }
    }
}

/// Serves one unary call whose request is decoded with prost and whose answer is written from
/// stored encodings (see [`StoredCodec`]). The call goes to the same service method, with the
/// same context, as the generated service's.
fn serve_stored<B, Req, Resp, F, Fut>(
    request: http::Request<B>,
    limit: Option<usize>,
    services: Arc<Services>,
    handle: F,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: WriteProtobuf + Send + 'static,
    F: FnMut(Arc<Services>, Context, Req) -> Fut + Send + 'static,
    Fut: Future<Output = crate::error::Result<Resp>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(StoredCodec::<Resp, Req>::default())
            .apply_max_message_size_config(limit, limit);
        Ok(grpc.unary(StoredUnary { services, handle }, request).await)
    })
}

/// A service call as tonic's unary service: request message in, service result out.
struct StoredUnary<F> {
    services: Arc<Services>,
    handle: F,
}

impl<Req, Resp, F, Fut> UnaryService<Req> for StoredUnary<F>
where
    F: FnMut(Arc<Services>, Context, Req) -> Fut,
    Fut: Future<Output = crate::error::Result<Resp>> + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let ctx = match context_of(&self.services, &request) {
            Ok(ctx) => ctx,
            Err(status) => return Box::pin(async move { Err(status) }),
        };
        let answer = (self.handle)(self.services.clone(), ctx, request.into_inner());
        Box::pin(async move { reply(answer.await) })
    }
}

/// A response whose protobuf encoding is (mostly) at hand.
trait WriteProtobuf {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>);
}

impl WriteProtobuf for StoredRun {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>) {
        StoredRun::write_protobuf(self, out);
    }
}

/// A ListRunsResponse: 1 runs (repeated Run), 2 total_size, 3 next_page_token.
impl WriteProtobuf for RunPage {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>) {
        use prost::encoding::{WireType, encode_key, encode_varint, int32, string};
        for run in &self.runs {
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(run.encoded_len() as u64, out);
            run.write_protobuf(out);
        }
        if self.total_size != 0 {
            int32::encode(2, &self.total_size, out);
        }
        if !self.next_page_token.is_empty() {
            string::encode(3, &self.next_page_token, out);
        }
    }
}

/// Requests decoded with prost, responses written from stored encodings.
struct StoredCodec<Resp, Req>(PhantomData<fn() -> (Resp, Req)>);

impl<Resp, Req> Default for StoredCodec<Resp, Req> {
    fn default() -> Self {
        StoredCodec(PhantomData)
    }
}

impl<Resp, Req> Codec for StoredCodec<Resp, Req>
where
    Resp: WriteProtobuf + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = StoredEncoder<Resp>;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        StoredEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

struct StoredEncoder<Resp>(PhantomData<fn(Resp)>);

impl<Resp: WriteProtobuf> Encoder for StoredEncoder<Resp> {
    type Item = Resp;
    type Error = Status;

    fn encode(&mut self, item: Resp, out: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_protobuf(out);
        Ok(())
    }
}

struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req: prost::Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(buf)
            .map(Some)
            .map_err(crate::error::grpc::undecodable_request)
    }
}
