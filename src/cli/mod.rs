//! The command-line client: `runledger runs ...` and `runledger experiments ...`, over gRPC with
//! the generated tonic clients. `src/main.rs` only dispatches here.
//!
//! Exit codes: 0 ok, 1 usage or any other error, 3 NOT_FOUND, 4 PERMISSION_DENIED or
//! UNAUTHENTICATED. Errors go to stderr as `runledger: CODE: server message`.

mod output;
pub mod progress;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::api::experiment_service_client::ExperimentServiceClient;
use crate::api::run_service_client::RunServiceClient;
use crate::api::*;
use crate::proto::google::rpc;
use crate::wkt::StructBytes;
use output::Printer;
use progress::Progress;

/// How to reach the server, and how to print.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// gRPC endpoint of the server.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_SERVER",
        default_value = "http://127.0.0.1:8887"
    )]
    pub server: String,
    /// Bearer token, sent as `authorization: Bearer <token>` with every call.
    #[arg(long, global = true, env = "RUNLEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate(s) (PEM) that an https:// server's certificate must chain to, instead of
    /// the system's trusted CAs (e.g. the server's own self-signed certificate).
    #[arg(long, global = true, env = "RUNLEDGER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for a server that requires mutual TLS; needs --client-key.
    #[arg(long, global = true, env = "RUNLEDGER_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, env = "RUNLEDGER_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
}

/// Output formats.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    /// Aligned human columns.
    Table,
    /// The proto3 JSON the REST API gives (one object per line for `runs watch`).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// `runledger runs ...`
#[derive(Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// `runledger experiments ...`
#[derive(Args)]
pub struct ExperimentsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: ExperimentsCommand,
}

/// List paging and selection flags shared by `runs list` and `experiments list`.
#[derive(Args)]
pub struct ListArgs {
    /// Only this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// KFP filter, as JSON (`{"predicates":[{"key":"name","operation":"EQUALS","string_value":"x"}]}`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Sort order, e.g. `created_at desc`.
    #[arg(long)]
    pub sort_by: Option<String>,
    /// Items per page.
    #[arg(long)]
    pub page_size: Option<i32>,
    /// Continue from this page token.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Follow next_page_token until the last page and print everything.
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs.
    List {
        /// Only runs of this experiment.
        #[arg(long)]
        experiment: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one run.
    Get { run_id: String },
    /// Create a run.
    Create {
        /// Display name (required).
        #[arg(long)]
        name: String,
        /// Experiment id (default: the namespace's Default experiment).
        #[arg(long)]
        experiment: Option<String>,
        /// Compiled pipeline spec file, YAML or JSON.
        #[arg(long)]
        pipeline_spec: Option<PathBuf>,
        /// Id of an uploaded pipeline, instead of --pipeline-spec.
        #[arg(long, conflicts_with = "pipeline_spec")]
        pipeline_id: Option<String>,
        /// Run parameter `k=v` (repeatable); v is read as JSON when it parses, else as a string.
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// Namespace of the run.
        #[arg(long)]
        namespace: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Print one line per run change as it happens, until interrupted or the stream ends.
    Watch {
        /// Only this run.
        #[arg(long, group = "scope")]
        run: Option<String>,
        /// Only runs of this experiment.
        #[arg(long, group = "scope")]
        experiment: Option<String>,
        /// Only runs of this namespace.
        #[arg(long, group = "scope")]
        namespace: Option<String>,
    },
    /// Report a run's state (ReportRunState), e.g. `report RUN_ID RUNNING`.
    Report {
        run_id: String,
        /// PENDING, RUNNING, SUCCEEDED, SKIPPED, FAILED, CANCELING, CANCELED or PAUSED.
        state: String,
        /// Error message to record with the state.
        #[arg(long)]
        error: Option<String>,
    },
    /// Terminate a run.
    Terminate { run_id: String },
    /// Retry a failed or canceled run.
    Retry { run_id: String },
    /// Archive a run.
    Archive { run_id: String },
    /// Unarchive a run.
    Unarchive { run_id: String },
    /// Delete a run.
    Delete { run_id: String },
}

#[derive(Subcommand)]
pub enum ExperimentsCommand {
    /// List experiments.
    List {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one experiment.
    Get { experiment_id: String },
    /// Create an experiment.
    Create {
        /// Display name (required).
        #[arg(long)]
        name: String,
        /// Namespace of the experiment.
        #[arg(long)]
        namespace: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Archive an experiment (and its runs).
    Archive { experiment_id: String },
    /// Unarchive an experiment.
    Unarchive { experiment_id: String },
    /// Delete an experiment.
    Delete { experiment_id: String },
}

/// A failure of a client command, with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    pub message: String,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        CliError {
            exit: 1,
            message: message.into(),
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        let exit = match status.code() {
            Code::NotFound => 3,
            Code::PermissionDenied | Code::Unauthenticated => 4,
            _ => 1,
        };
        let mut message = format!("{}: {}", code_name(status.code()), status.message());
        if matches!(status.code(), Code::Unavailable | Code::Unknown) {
            // Connection failures (a TLS alert, a reset) say what happened only in the causes.
            let causes = causes(&status);
            if !causes.is_empty() {
                message.push_str(&format!(" ({causes})"));
            }
        }
        CliError { exit, message }
    }
}

/// The causes of an error, outermost first, joined with ": "; wrapping errors often repeat
/// their cause's text, so each part is said once.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) && !error.to_string().ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The canonical upper-case name of a gRPC code, as grpc-status docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

async fn connect(args: &ClientArgs) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(args.server.clone()).map_err(|e| {
        CliError::usage(format!(
            "--server {:?} is not a valid URL: {e}",
            args.server
        ))
    })?;
    let https = endpoint.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let endpoint = match tls_config(args, https)? {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|e| CliError::usage(format!("TLS settings for {}: {e}", args.server)))?,
        None => endpoint,
    };
    endpoint
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| {
            let mut message = format!("cannot connect to {}: {e}", args.server);
            let causes = causes(&e);
            if !causes.is_empty() && !message.ends_with(&causes) {
                message.push_str(&format!(": {causes}"));
            }
            if message.contains("invalid peer certificate") && args.ca_cert.is_none() {
                message
                    .push_str(" (for a server whose CA the system does not trust, pass --ca-cert)");
            }
            CliError::usage(message)
        })
}

/// The TLS settings an https:// `--server` is reached with (None for http://): the CA from
/// `--ca-cert` (else the system's), and the client certificate for mutual TLS. The files are
/// read and checked here, so a bad one is named before any connection is tried.
fn tls_config(args: &ClientArgs, https: bool) -> Result<Option<ClientTlsConfig>, CliError> {
    if !https {
        return match (&args.ca_cert, &args.client_cert, &args.client_key) {
            (None, None, None) => Ok(None),
            _ => Err(CliError::usage(format!(
                "--ca-cert, --client-cert and --client-key need an https:// --server (got {:?})",
                args.server
            ))),
        };
    }
    use crate::transport::tls::{parse_certs, parse_key};
    let mut config = match &args.ca_cert {
        Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(
            path,
            "--ca-cert",
            parse_certs,
        )?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    match (&args.client_cert, &args.client_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem(cert, "--client-cert", parse_certs)?,
                read_pem(key, "--client-key", parse_key)?,
            ));
        }
        (Some(_), None) => return Err(CliError::usage("--client-cert needs --client-key")),
        (None, Some(_)) => return Err(CliError::usage("--client-key needs --client-cert")),
    }
    Ok(Some(config))
}

/// Reads the PEM file given by `flag` and checks that `parse` finds in it what it should; the
/// error names the flag and the file.
fn read_pem<T>(
    path: &std::path::Path,
    flag: &str,
    parse: fn(&[u8]) -> Result<T, String>,
) -> Result<Vec<u8>, CliError> {
    let pem = std::fs::read(path)
        .map_err(|e| CliError::usage(format!("cannot read {flag} {}: {e}", path.display())))?;
    parse(&pem).map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))?;
    Ok(pem)
}

fn bearer(args: &ClientArgs) -> Result<Bearer, CliError> {
    match &args.token {
        None => Ok(Bearer(None)),
        Some(token) => format!("Bearer {token}")
            .parse()
            .map(|v| Bearer(Some(v)))
            .map_err(|_| CliError::usage("--token must be printable ASCII")),
    }
}

fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(future: F) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(future));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runledger: {}", e.message);
            ExitCode::from(e.exit)
        }
    }
}

/// Runs `runledger runs ...`; the exit code is documented in the module docs.
pub fn runs(args: RunsArgs) -> ExitCode {
    block_on(async move {
        let auth = bearer(&args.client)?;
        let channel = connect(&args.client).await?;
        let client = RunServiceClient::with_interceptor(channel, auth);
        let printer = Printer::new(args.client.output);
        runs_command(client, &printer, args.command).await
    })
}

/// Runs `runledger experiments ...`.
pub fn experiments(args: ExperimentsArgs) -> ExitCode {
    block_on(async move {
        let auth = bearer(&args.client)?;
        let channel = connect(&args.client).await?;
        let client = ExperimentServiceClient::with_interceptor(channel, auth);
        let printer = Printer::new(args.client.output);
        experiments_command(client, &printer, args.command).await
    })
}

async fn runs_command(
    mut client: RunServiceClient<Svc>,
    printer: &Printer,
    command: RunsCommand,
) -> Result<(), CliError> {
    match command {
        RunsCommand::List { experiment, list } => {
            let mut request = ListRunsRequest {
                namespace: list.namespace.unwrap_or_default(),
                experiment_id: experiment.unwrap_or_default(),
                page_token: list.page_token.unwrap_or_default(),
                page_size: list.page_size.unwrap_or_default(),
                sort_by: list.sort_by.unwrap_or_default(),
                filter: list.filter.unwrap_or_default(),
            };
            let mut all = client.list_runs(request.clone()).await?.into_inner();
            let mut progress = Progress::stderr("runs");
            progress.page(all.runs.len());
            while list.all && !all.next_page_token.is_empty() {
                request.page_token = std::mem::take(&mut all.next_page_token);
                let page = client.list_runs(request.clone()).await?.into_inner();
                progress.page(page.runs.len());
                all.runs.extend(page.runs);
                all.next_page_token = page.next_page_token;
                all.total_size = page.total_size;
            }
            progress.finish();
            printer.runs(&all)
        }
        RunsCommand::Get { run_id } => {
            let run = client
                .get_run(GetRunRequest {
                    run_id,
                    ..Default::default()
                })
                .await?;
            printer.run(&run.into_inner())
        }
        RunsCommand::Create {
            name,
            experiment,
            pipeline_spec,
            pipeline_id,
            params,
            namespace,
            description,
        } => {
            let pipeline_source = match (pipeline_spec, pipeline_id) {
                (Some(path), _) => Some(run::PipelineSource::PipelineSpec(read_spec(&path)?)),
                (None, Some(id)) => Some(run::PipelineSource::PipelineId(id)),
                (None, None) => None,
            };
            let mut parameters = HashMap::new();
            for param in &params {
                let (key, value) = parse_param(param)?;
                parameters.insert(key, value);
            }
            let run = Run {
                display_name: name,
                experiment_id: experiment.unwrap_or_default(),
                namespace: namespace.unwrap_or_default(),
                description: description.unwrap_or_default(),
                pipeline_source,
                runtime_config: (!parameters.is_empty()).then(|| RuntimeConfig {
                    parameters,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let run = client
                .create_run(CreateRunRequest {
                    run: Some(run),
                    ..Default::default()
                })
                .await?;
            printer.run(&run.into_inner())
        }
        RunsCommand::Watch {
            run,
            experiment,
            namespace,
        } => {
            let request = WatchRunsRequest {
                run_id: run.unwrap_or_default(),
                experiment_id: experiment.unwrap_or_default(),
                namespace: namespace.unwrap_or_default(),
                ..Default::default()
            };
            let mut stream = client.watch_runs(request).await?.into_inner();
            eprintln!("runledger: watching (interrupt to stop)");
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    event = stream.message() => match event? {
                        Some(event) => printer.event(&event)?,
                        None => return Ok(()),
                    },
                }
            }
        }
        RunsCommand::Report {
            run_id,
            state,
            error,
        } => {
            let parsed = RuntimeState::from_str_name(&state.to_ascii_uppercase())
                .filter(|s| *s != RuntimeState::Unspecified)
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "STATE {state:?} is not one of PENDING, RUNNING, SUCCEEDED, SKIPPED, \
                         FAILED, CANCELING, CANCELED, PAUSED"
                    ))
                })?;
            let run = client
                .report_run_state(ReportRunStateRequest {
                    run_id,
                    state: parsed as i32,
                    error: error.map(|message| rpc::Status {
                        code: Code::Unknown as i32,
                        message,
                        details: Vec::new(),
                    }),
                    ..Default::default()
                })
                .await?;
            printer.run(&run.into_inner())
        }
        RunsCommand::Terminate { run_id } => {
            client
                .terminate_run(TerminateRunRequest {
                    run_id: run_id.clone(),
                    ..Default::default()
                })
                .await?;
            printer.done("terminated run", &run_id)
        }
        RunsCommand::Retry { run_id } => {
            client
                .retry_run(RetryRunRequest {
                    run_id: run_id.clone(),
                    ..Default::default()
                })
                .await?;
            printer.done("retried run", &run_id)
        }
        RunsCommand::Archive { run_id } => {
            client
                .archive_run(ArchiveRunRequest {
                    run_id: run_id.clone(),
                    ..Default::default()
                })
                .await?;
            printer.done("archived run", &run_id)
        }
        RunsCommand::Unarchive { run_id } => {
            client
                .unarchive_run(UnarchiveRunRequest {
                    run_id: run_id.clone(),
                    ..Default::default()
                })
                .await?;
            printer.done("unarchived run", &run_id)
        }
        RunsCommand::Delete { run_id } => {
            client
                .delete_run(DeleteRunRequest {
                    run_id: run_id.clone(),
                    ..Default::default()
                })
                .await?;
            printer.done("deleted run", &run_id)
        }
    }
}

async fn experiments_command(
    mut client: ExperimentServiceClient<Svc>,
    printer: &Printer,
    command: ExperimentsCommand,
) -> Result<(), CliError> {
    match command {
        ExperimentsCommand::List { list } => {
            let mut request = ListExperimentsRequest {
                namespace: list.namespace.unwrap_or_default(),
                page_token: list.page_token.unwrap_or_default(),
                page_size: list.page_size.unwrap_or_default(),
                sort_by: list.sort_by.unwrap_or_default(),
                filter: list.filter.unwrap_or_default(),
            };
            let mut all = client.list_experiments(request.clone()).await?.into_inner();
            let mut progress = Progress::stderr("experiments");
            progress.page(all.experiments.len());
            while list.all && !all.next_page_token.is_empty() {
                request.page_token = std::mem::take(&mut all.next_page_token);
                let page = client.list_experiments(request.clone()).await?.into_inner();
                progress.page(page.experiments.len());
                all.experiments.extend(page.experiments);
                all.next_page_token = page.next_page_token;
                all.total_size = page.total_size;
            }
            progress.finish();
            printer.experiments(&all)
        }
        ExperimentsCommand::Get { experiment_id } => {
            let experiment = client
                .get_experiment(GetExperimentRequest { experiment_id })
                .await?;
            printer.experiment(&experiment.into_inner())
        }
        ExperimentsCommand::Create {
            name,
            namespace,
            description,
        } => {
            let experiment = Experiment {
                display_name: name,
                namespace: namespace.unwrap_or_default(),
                description: description.unwrap_or_default(),
                ..Default::default()
            };
            let experiment = client
                .create_experiment(CreateExperimentRequest {
                    experiment: Some(experiment),
                })
                .await?;
            printer.experiment(&experiment.into_inner())
        }
        ExperimentsCommand::Archive { experiment_id } => {
            client
                .archive_experiment(ArchiveExperimentRequest {
                    experiment_id: experiment_id.clone(),
                })
                .await?;
            printer.done("archived experiment", &experiment_id)
        }
        ExperimentsCommand::Unarchive { experiment_id } => {
            client
                .unarchive_experiment(UnarchiveExperimentRequest {
                    experiment_id: experiment_id.clone(),
                })
                .await?;
            printer.done("unarchived experiment", &experiment_id)
        }
        ExperimentsCommand::Delete { experiment_id } => {
            client
                .delete_experiment(DeleteExperimentRequest {
                    experiment_id: experiment_id.clone(),
                })
                .await?;
            printer.done("deleted experiment", &experiment_id)
        }
    }
}

/// Reads a pipeline spec file, YAML or JSON (YAML is a superset), which must hold an object.
fn read_spec(path: &std::path::Path) -> Result<StructBytes, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read --pipeline-spec {}: {e}",
            path.display()
        ))
    })?;
    let value: serde_json::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "--pipeline-spec {} is not YAML or JSON: {e}",
            path.display()
        ))
    })?;
    if !value.is_object() {
        return Err(CliError::usage(format!(
            "--pipeline-spec {} must hold an object (a compiled pipeline)",
            path.display()
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        CliError::usage(format!(
            "--pipeline-spec {} is not a valid pipeline spec: {e}",
            path.display()
        ))
    })
}

/// `k=v`: v as JSON when it parses (`3`, `true`, `"s"`, `[1]`), else the text as a string.
fn parse_param(param: &str) -> Result<(String, pbjson_types::Value), CliError> {
    let (key, value) = param
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| CliError::usage(format!("--param {param:?} is not of the form K=V")))?;
    let json = serde_json::from_str::<serde_json::Value>(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    let value =
        serde_json::from_value(json).map_err(|e| CliError::usage(format!("--param {key}: {e}")))?;
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_read_json_else_string() {
        let (k, v) = parse_param("lr=0.5").unwrap();
        assert_eq!(k, "lr");
        assert_eq!(serde_json::to_value(&v).unwrap(), serde_json::json!(0.5));
        let (_, v) = parse_param("name=abc=d").unwrap();
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!("abc=d")
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=1").is_err());
    }
}
