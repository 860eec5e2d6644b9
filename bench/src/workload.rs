//! What the simulated clients send: a realistic pipeline spec, run records, and one request per
//! call for each scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use http::uri::PathAndQuery;
use pbjson_types::Struct;
use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runledger::wkt::StructBytes;
use serde_json::json;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;

use runledger::api::{
    CreateRunRequest, GetRunRequest, ListRunsRequest, ReportRunStateRequest, Run, RuntimeConfig,
    RuntimeDetails, RuntimeState, RuntimeStatus, run,
};
use runledger::wkt::Timestamp;

/// A compiled KFP pipeline (IR YAML as JSON: pipelineInfo, root DAG, components, executors) of
/// about `target_bytes` bytes of protobuf: a chain of tasks, each with its component and
/// container executor, grown until it is large enough.
pub fn pipeline_spec(target_bytes: usize) -> StructBytes {
    let mut tasks = serde_json::Map::new();
    let mut components = serde_json::Map::new();
    let mut executors = serde_json::Map::new();
    let mut spec = Struct::default();
    for i in 0.. {
        let name = format!("step-{i}");
        let mut task = json!({
            "taskInfo": {"name": name},
            "componentRef": {"name": format!("comp-{name}")},
            "inputs": {"parameters": {
                "learning_rate": {"componentInputParameter": "learning_rate"},
                "dataset_uri": {"componentInputParameter": "dataset_uri"}
            }},
            "cachingOptions": {"enableCache": true}
        });
        if i > 0 {
            task["dependentTasks"] = json!([format!("step-{}", i - 1)]);
        }
        tasks.insert(name.clone(), task);
        components.insert(
            format!("comp-{name}"),
            json!({
                "executorLabel": format!("exec-{name}"),
                "inputDefinitions": {"parameters": {
                    "learning_rate": {"parameterType": "NUMBER_DOUBLE"},
                    "dataset_uri": {"parameterType": "STRING"}
                }},
                "outputDefinitions": {"artifacts": {
                    "model": {"artifactType": {"schemaTitle": "system.Model", "schemaVersion": "0.0.1"}}
                }}
            }),
        );
        executors.insert(
            format!("exec-{name}"),
            json!({"container": {
                "image": "python:3.11-slim",
                "command": ["sh", "-c", "python3 -m kfp.dsl.executor_main \"$0\" \"$@\""],
                "args": ["--executor_input", "{{$}}", "--function_to_execute", format!("train_{i}")],
                "resources": {"cpuLimit": 2.0, "memoryLimit": 4.294967296}
            }}),
        );
        let document = json!({
            "pipelineInfo": {"name": "bench-training-pipeline", "description": "runledger bench"},
            "schemaVersion": "2.1.0",
            "sdkVersion": "kfp-2.7.0",
            "root": {
                "dag": {"tasks": tasks},
                "inputDefinitions": {"parameters": {
                    "learning_rate": {"parameterType": "NUMBER_DOUBLE", "defaultValue": 0.01},
                    "dataset_uri": {"parameterType": "STRING"}
                }}
            },
            "components": components,
            "deploymentSpec": {"executors": executors}
        });
        spec = serde_json::from_value(document).unwrap_or_default();
        if spec.encoded_len() >= target_bytes || i >= 1000 {
            break;
        }
    }
    StructBytes::from(spec)
}

fn parameters() -> RuntimeConfig {
    let mut config = RuntimeConfig {
        pipeline_root: "gs://bench-bucket/pipeline-root".into(),
        ..Default::default()
    };
    config.parameters.insert(
        "learning_rate".into(),
        serde_json::from_value(json!(0.01)).unwrap_or_default(),
    );
    config.parameters.insert(
        "dataset_uri".into(),
        serde_json::from_value(json!("gs://bench-bucket/data/train.csv")).unwrap_or_default(),
    );
    config
}

/// What a client sends in CreateRun.
pub fn new_run(experiment_id: &str, spec: &StructBytes, n: u64) -> Run {
    Run {
        experiment_id: experiment_id.to_owned(),
        display_name: format!("bench run {n}"),
        description: "created by runledger bench".into(),
        pipeline_source: Some(run::PipelineSource::PipelineSpec(spec.clone())),
        runtime_config: Some(parameters()),
        service_account: "pipeline-runner".into(),
        ..Default::default()
    }
}

/// One of `variants` distinct pipeline specs made from `base`: the base with a `variant` field
/// added (a Struct's encoding is its fields' entries, so appending one entry adds a field).
pub fn spec_variant(base: &StructBytes, variant: u64) -> StructBytes {
    let mut entry = Vec::new();
    prost::encoding::string::encode(1, &"variant".to_owned(), &mut entry);
    let value = pbjson_types::Value {
        kind: Some(pbjson_types::value::Kind::NumberValue(variant as f64)),
    };
    prost::encoding::message::encode(2, &value, &mut entry);
    let mut bytes = base.protobuf().to_vec();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut bytes);
    prost::encoding::encode_varint(entry.len() as u64, &mut bytes);
    bytes.extend_from_slice(&entry);
    StructBytes::from_protobuf(bytes.into())
}

/// Where a stored run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pending,
    Running,
    Succeeded,
}

/// A stored run as the server would have written it, for the offline loader: created at
/// `created`; PENDING, RUNNING (after PENDING) or SUCCEEDED (after PENDING and RUNNING, with
/// finished_at).
pub fn stored_run(
    experiment_id: &str,
    namespace: &str,
    spec: &StructBytes,
    n: u64,
    created: Timestamp,
    stage: Stage,
) -> Run {
    let mut run = new_run(experiment_id, spec, n);
    run.run_id = uuid::Uuid::new_v4().to_string();
    run.namespace = namespace.to_owned();
    run.storage_state = run::StorageState::Available as i32;
    run.created_at = Some(created);
    run.scheduled_at = Some(created);
    let status = |state: RuntimeState, seconds: i64| RuntimeStatus {
        update_time: Some(Timestamp {
            seconds: created.seconds + seconds,
            nanos: created.nanos,
        }),
        state: state as i32,
        error: None,
    };
    run.state_history = vec![status(RuntimeState::Pending, 0)];
    run.state = RuntimeState::Pending as i32;
    if stage != Stage::Pending {
        run.state_history.push(status(RuntimeState::Running, 5));
        run.state = RuntimeState::Running as i32;
    }
    if stage == Stage::Succeeded {
        run.state_history.push(status(RuntimeState::Succeeded, 600));
        run.state = RuntimeState::Succeeded as i32;
        run.finished_at = run.state_history.last().and_then(|s| s.update_time);
    }
    run
}

/// Runs that ReportRunState calls move through RUNNING ⇄ PAUSED. Client `c` of `n` owns the
/// runs at indexes `c, c + n, ...`, so two clients never report on one run and each knows the
/// current state of its runs without asking.
pub struct ReportPool {
    ids: Vec<String>,
    states: Vec<AtomicI32>,
}

impl ReportPool {
    /// `ids` must all be PENDING.
    pub fn new(ids: Vec<String>) -> Arc<ReportPool> {
        let states = ids
            .iter()
            .map(|_| AtomicI32::new(RuntimeState::Pending as i32))
            .collect();
        Arc::new(ReportPool { ids, states })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The request mix of one scenario.
pub enum Workload {
    /// grpc.health.v1 Health/Check: the no-op baseline.
    Health,
    Create {
        /// An encoded CreateRunRequest, sent as is (the server names every run itself).
        request: Bytes,
    },
    Get {
        ids: Arc<Vec<String>>,
    },
    /// The same ListRuns request over and over (first page, filtered page, or a later page's
    /// token).
    List {
        request: Bytes,
    },
    Report {
        pool: Arc<ReportPool>,
    },
    /// 10% create, 30% report, 50% get, 10% list (first page of 20).
    Mixed {
        create: Bytes,
        ids: Arc<Vec<String>>,
        pool: Arc<ReportPool>,
        list: Bytes,
    },
}

impl Workload {
    pub fn create(experiment_id: &str, spec: &StructBytes) -> Workload {
        Workload::Create {
            request: create_request(experiment_id, spec),
        }
    }

    pub fn list(request: &ListRunsRequest) -> Workload {
        Workload::List {
            request: request.encode_to_vec().into(),
        }
    }
}

pub fn create_request(experiment_id: &str, spec: &StructBytes) -> Bytes {
    CreateRunRequest {
        run: Some(new_run(experiment_id, spec, 0)),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

const CREATE_RUN: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/CreateRun";
const GET_RUN: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/GetRun";
const LIST_RUNS: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/ListRuns";
const WATCH_RUNS: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/WatchRuns";
const REPORT_RUN_STATE: &str = "/kubeflow.pipelines.backend.api.v2beta1.RunService/ReportRunState";

/// A gRPC call whose request is already encoded and whose response is only counted, not
/// decoded: the load generator shares the machine with the server, so it must spend as little
/// CPU per call as it can.
pub async fn call_raw(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    request: Bytes,
) -> Result<usize, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let response = grpc
        .unary(
            Request::new(request),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
    Ok(response.into_inner())
}

/// What a watcher reads of a RunEvent: when its run was created (prost skips the rest).
#[derive(Clone, PartialEq, Message)]
pub struct EventHead {
    #[prost(message, optional, tag = "2")]
    pub run: Option<RunHead>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RunHead {
    #[prost(message, optional, tag = "10")]
    pub created_at: Option<Timestamp>,
}

/// Opens WatchRuns with an encoded request; events are decoded only as far as [`EventHead`].
pub async fn watch_raw(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: Bytes,
) -> Result<tonic::Streaming<EventHead>, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let response = grpc
        .server_streaming(
            Request::new(request),
            PathAndQuery::from_static(WATCH_RUNS),
            HeadCodec,
        )
        .await?;
    Ok(response.into_inner())
}

#[derive(Clone, Copy)]
struct HeadCodec;

impl Codec for HeadCodec {
    type Encode = Bytes;
    type Decode = EventHead;
    type Encoder = RawCodec;
    type Decoder = HeadCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> HeadCodec {
        HeadCodec
    }
}

impl Decoder for HeadCodec {
    type Item = EventHead;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<EventHead>, Status> {
        EventHead::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode a RunEvent: {e}")))
    }
}

/// Sends bytes as they are; answers with the response's size.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = usize;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, out: &mut EncodeBuf<'_>) -> Result<(), Status> {
        out.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let size = buf.remaining();
        buf.advance(size);
        Ok(Some(size))
    }
}

/// One simulated client.
pub struct Worker {
    workload: Arc<Workload>,
    grpc: tonic::client::Grpc<Channel>,
    rng: StdRng,
    client: usize,
    clients: usize,
    /// Calls made so far; picks this client's next run in the report pool.
    calls: u64,
}

impl Worker {
    pub fn new(workload: Arc<Workload>, channel: Channel, client: usize, clients: usize) -> Self {
        Worker {
            workload,
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20),
            rng: StdRng::seed_from_u64(client as u64 + 1),
            client,
            clients: clients.max(1),
            calls: 0,
        }
    }

    /// Makes one call; the error names the call that failed.
    pub async fn call(&mut self) -> Result<(), String> {
        self.calls += 1;
        let workload = self.workload.clone();
        match &*workload {
            Workload::Health => self.health().await,
            Workload::Create { request } => self.create(request).await,
            Workload::Get { ids } => self.get(ids).await,
            Workload::List { request } => self.list(request).await,
            Workload::Report { pool } => self.report(pool).await,
            Workload::Mixed {
                create,
                ids,
                pool,
                list,
            } => match self.rng.gen_range(0..10) {
                0 => self.create(create).await,
                1..=3 => self.report(pool).await,
                4..=8 => self.get(ids).await,
                _ => self.list(list).await,
            },
        }
    }

    async fn health(&mut self) -> Result<(), String> {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        call_raw(
            &mut self.grpc,
            "/grpc.health.v1.Health/Check",
            request.encode_to_vec().into(),
        )
        .await
        .map(drop)
        .map_err(|e| format!("Health/Check: {e}"))
    }

    async fn create(&mut self, request: &Bytes) -> Result<(), String> {
        call_raw(&mut self.grpc, CREATE_RUN, request.clone())
            .await
            .map(drop)
            .map_err(|e| format!("CreateRun: {e}"))
    }

    async fn get(&mut self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Err("GetRun: no runs to get".into());
        }
        let request = GetRunRequest {
            run_id: ids[self.rng.gen_range(0..ids.len())].clone(),
            ..Default::default()
        };
        call_raw(&mut self.grpc, GET_RUN, request.encode_to_vec().into())
            .await
            .map(drop)
            .map_err(|e| format!("GetRun: {e}"))
    }

    async fn list(&mut self, request: &Bytes) -> Result<(), String> {
        let size = call_raw(&mut self.grpc, LIST_RUNS, request.clone())
            .await
            .map_err(|e| format!("ListRuns: {e}"))?;
        if size == 0 {
            return Err("ListRuns: an empty page".into());
        }
        Ok(())
    }

    async fn report(&mut self, pool: &ReportPool) -> Result<(), String> {
        // This client's runs are indexes client, client + clients, ...
        let owned = pool
            .len()
            .saturating_sub(self.client)
            .div_ceil(self.clients);
        if owned == 0 {
            return Err("ReportRunState: no runs for this client (raise --base-runs)".into());
        }
        let index = self.client + (self.calls as usize % owned) * self.clients;
        let current = pool.states[index].load(Ordering::Relaxed);
        let (next, details) = if current == RuntimeState::Running as i32 {
            (RuntimeState::Paused, None)
        } else {
            (
                RuntimeState::Running,
                Some(RuntimeDetails {
                    pipeline_context_id: 1000 + index as i64,
                    pipeline_run_context_id: 2000 + index as i64,
                    task_details: Vec::new(),
                }),
            )
        };
        let request = ReportRunStateRequest {
            run_id: pool.ids[index].clone(),
            state: next as i32,
            runtime_details: details,
            ..Default::default()
        };
        call_raw(
            &mut self.grpc,
            REPORT_RUN_STATE,
            request.encode_to_vec().into(),
        )
        .await
        .map_err(|e| format!("ReportRunState: {e}"))?;
        pool.states[index].store(next as i32, Ordering::Relaxed);
        Ok(())
    }
}
