//! The gRPC adapter: convert the request, call the core, convert the result. No business rule
//! lives here.
//!
//! Methods that answer with runs send them as they are stored (see [`RunRoutes`]).

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use prost::bytes::BufMut;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::api::experiment_service_server::ExperimentService;
use crate::api::run_service_server::RunService;
use crate::api::run_service_server::RunServiceServer;
use crate::api::*;
use crate::service::{Ledger, RunPage};
use crate::store::EncodedRun;

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

/// RunService with GetRun, ListRuns, CreateRun and ReportRunState answered from the stored
/// encodings: a stored run is the protobuf a client receives, so these copy bytes instead of
/// decoding every run (a deep pipeline_spec Struct) and encoding it again, which was most of
/// their cost. Every other method goes to the generated service.
#[derive(Clone)]
pub struct RunRoutes {
    generated: RunServiceServer<GrpcApi>,
    ledger: Arc<Ledger>,
    max_message_bytes: usize,
}

impl RunRoutes {
    pub fn new(
        ledger: Arc<Ledger>,
        generated: RunServiceServer<GrpcApi>,
        max_message_bytes: usize,
    ) -> Self {
        RunRoutes {
            generated,
            ledger,
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

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = Some(self.max_message_bytes);
        let ledger = self.ledger.clone();
        match request.uri().path() {
            CREATE_RUN => serve_stored(request, limit, move |r: CreateRunRequest| {
                let ledger = ledger.clone();
                async move { ledger.create_run_encoded(r.run.unwrap_or_default()).await }
            }),
            REPORT_RUN_STATE => serve_stored(request, limit, move |r: ReportRunStateRequest| {
                let ledger = ledger.clone();
                async move { ledger.report_run_state_encoded(r).await }
            }),
            GET_RUN => serve_stored(request, limit, move |r: GetRunRequest| {
                let ledger = ledger.clone();
                async move { ledger.get_run_encoded(&r.run_id) }
            }),
            LIST_RUNS => serve_stored(request, limit, move |r: ListRunsRequest| {
                let ledger = ledger.clone();
                async move { ledger.list_runs_encoded(&r) }
            }),
            _ => self.generated.call(request),
        }
    }
}

/// Serves one unary call whose request is decoded with prost and whose answer is written from
/// stored encodings (see [`StoredCodec`]).
fn serve_stored<B, Req, Resp, F, Fut>(
    request: http::Request<B>,
    limit: Option<usize>,
    handle: F,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: WriteProtobuf + Send + 'static,
    F: FnMut(Req) -> Fut + Send + 'static,
    Fut: Future<Output = crate::error::Result<Resp>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(StoredCodec::<Resp, Req>::default())
            .apply_max_message_size_config(limit, limit);
        Ok(grpc.unary(StoredUnary(handle), request).await)
    })
}

/// A core call as tonic's unary service: request message in, core result out.
struct StoredUnary<F>(F);

impl<Req, Resp, F, Fut> UnaryService<Req> for StoredUnary<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = crate::error::Result<Resp>> + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let answer = (self.0)(request.into_inner());
        Box::pin(async move { reply(answer.await) })
    }
}

/// A response whose protobuf encoding is (mostly) at hand.
trait WriteProtobuf {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>);
}

impl WriteProtobuf for EncodedRun {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>) {
        out.put_slice(self.as_protobuf());
    }
}

/// A ListRunsResponse: 1 runs (repeated Run), 2 total_size, 3 next_page_token.
impl WriteProtobuf for RunPage {
    fn write_protobuf(&self, out: &mut EncodeBuf<'_>) {
        use prost::encoding::{WireType, encode_key, encode_varint, int32, string};
        for run in &self.runs {
            let bytes = run.encoded.as_protobuf();
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(bytes.len() as u64, out);
            out.put_slice(bytes);
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
            // The client's bytes are wrong, not the server: INVALID_ARGUMENT, as for the
            // generated services (see server::fix_bad_request_codes).
            .map_err(|e| Status::invalid_argument(format!("cannot decode the request: {e}")))
    }
}
