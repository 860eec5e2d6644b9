//! The `runledger` binary: parse flags, set up logging, bind listeners, run. Everything else is in
//! the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use runledger::query::QueryLimits;
use runledger::server::{self, Listeners, ServerOptions};
use runledger::service::{Limits, Services};
use runledger::store::{self, DataDirOptions, Durability, Location, PostgresOptions};
use runledger::transport::Limits as TransportLimits;
use runledger::transport::tls::{Tls, TlsFiles};

/// glibc's malloc with at most two arenas. By default it keeps up to 8 per core, one for each
/// thread that allocates at the same time as another (readers, the blocking pool that grows with
/// demand, sled's threads), each holding on to pages it freed: RSS then grows far past
/// `--cache-mb`. Two arenas keep memory near what is in use, at no measurable CPU cost here.
/// mimalloc was tried and kept ~4x more memory under concurrent creates (BENCHMARKS.md,
/// "Memory").
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called first thing in main, before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A run-tracking server for ML pipelines, wire-compatible with the Kubeflow Pipelines v2beta1
/// Run API. Every flag can also be set as RUNLEDGER_<FLAG> (e.g. RUNLEDGER_DATA_DIR).
#[derive(Parser)]
#[command(name = "runledger", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC and JSON/HTTP APIs on a data directory.
    Serve(Box<ServeArgs>),
    /// Write the protobuf descriptor set of the API (with its google.api.http routes), for a
    /// gateway such as Envoy's gRPC-JSON transcoder or grpc-gateway.
    Descriptor(DescriptorArgs),
    /// Check a data directory offline (stop the server first), or a database (--database-url;
    /// replicas may keep serving): every index entry, name and counter must agree with the
    /// records and every value must decode. Exits 1 on any problem.
    Check(CheckArgs),
    /// Upgrade a store offline to this build: a data directory's data format (stop the server
    /// first; a migration that was interrupted resumes where it stopped), or a PostgreSQL
    /// database's schema (--database-url; replicas may keep serving). Servers also do it at
    /// startup.
    Migrate(MigrateArgs),
    /// Write every experiment, pipeline spec and run of a store as JSON Lines (a portable
    /// backup; stop writers first for a snapshot of one instant).
    Export(ExportArgs),
    /// Read an export into an empty store (either backend), ids and timestamps kept.
    Import(ImportArgs),
    /// Client: list, create, watch and change runs on a server (over gRPC).
    Runs(runledger::cli::RunsArgs),
    /// Client: list, create and change experiments on a server (over gRPC).
    Experiments(runledger::cli::ExperimentsArgs),
    /// Client: have the running server write a consistent copy of its store (an online backup)
    /// to a new directory on its machine, checked before it succeeds.
    Backup(runledger::cli::BackupArgs),
    /// Authentication helpers: hash a token, check an --auth-config file.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Read a token on standard input and print its SHA-256 (hex), for `token_sha256`.
    HashToken,
    /// Validate an auth config file and print its principals and grants (exit 1 if invalid).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Args)]
struct DescriptorArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Rebuild every index entry and counter from the records (one atomic batch), then check
    /// again.
    #[arg(long)]
    repair: bool,
}

/// Which store a command reads or writes: a PostgreSQL database when --database-url is given,
/// else the embedded store in --data-dir.
#[derive(Args)]
struct StoreArgs {
    /// Directory of the embedded database.
    #[arg(long, env = "RUNLEDGER_DATA_DIR", default_value = "./runledger-data")]
    data_dir: PathBuf,
    /// PostgreSQL database instead of a data dir:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=FILE].
    #[arg(long, env = "RUNLEDGER_DATABASE_URL")]
    database_url: Option<String>,
}

impl StoreArgs {
    fn location(&self, pool_size: usize) -> Location {
        match &self.database_url {
            Some(url) => Location::Database {
                url: url.clone(),
                options: PostgresOptions {
                    pool_size,
                    ..PostgresOptions::default()
                },
            },
            None => Location::DataDir {
                dir: self.data_dir.clone(),
                options: DataDirOptions::default(),
            },
        }
    }
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Runs converted per atomic batch of a data dir's migration (each batch records the
    /// migration's progress with it).
    #[arg(long, default_value_t = store::MigrateOptions::default().chunk, conflicts_with = "database_url")]
    chunk_runs: usize,
    /// For crash tests: abort once this many batches are on disk, as a kill would.
    #[arg(long, hide = true, conflicts_with = "database_url")]
    abort_after_chunks: Option<usize>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The export to read; `-` (the default) reads standard input.
    #[arg(default_value = "-")]
    file: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityMode {
    /// Acknowledge a write only once it is on disk (concurrent writes share one flush).
    Durable,
    /// Acknowledge at once; flush every --flush-every-ms (a crash may lose that window).
    Buffered,
}

#[derive(Args)]
struct ServeArgs {
    /// Address of the gRPC API.
    #[arg(long, env = "RUNLEDGER_GRPC_ADDR", default_value = "127.0.0.1:8887")]
    grpc_addr: SocketAddr,
    /// Address of the JSON/HTTP API (KFP's REST routes; what `kfp.Client(host=...)` talks to).
    #[arg(long, env = "RUNLEDGER_HTTP_ADDR", default_value = "127.0.0.1:8888")]
    http_addr: SocketAddr,
    /// Directory of the embedded database (created if missing).
    #[arg(long, env = "RUNLEDGER_DATA_DIR", default_value = "./runledger-data")]
    data_dir: PathBuf,
    /// Keep the data in PostgreSQL instead of --data-dir, so that several runledger processes
    /// (replicas) can serve the same data: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    /// [?sslmode=verify-full&sslrootcert=FILE]. The schema is created or upgraded at startup.
    #[arg(long, env = "RUNLEDGER_DATABASE_URL")]
    database_url: Option<String>,
    /// Most connections to the database this process holds (with --database-url).
    #[arg(long, env = "RUNLEDGER_DATABASE_POOL_SIZE", default_value_t = PostgresOptions::default().pool_size, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    database_pool_size: usize,
    /// Log filter: error, warn, info, debug, trace, or a tracing EnvFilter directive.
    #[arg(long, env = "RUNLEDGER_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// When a write is acknowledged (the embedded store; with --database-url, once committed
    /// and flushed, always).
    #[arg(
        long,
        env = "RUNLEDGER_DURABILITY",
        value_enum,
        default_value = "durable"
    )]
    durability: DurabilityMode,
    /// Background flush interval in buffered mode, in milliseconds.
    #[arg(long, env = "RUNLEDGER_FLUSH_EVERY_MS", default_value_t = 500)]
    flush_every_ms: u64,
    /// Largest gRPC message accepted or sent, in bytes (larger requests: RESOURCE_EXHAUSTED).
    #[arg(long, env = "RUNLEDGER_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Largest JSON/HTTP request body accepted, in bytes (larger requests: 413).
    #[arg(long, env = "RUNLEDGER_MAX_HTTP_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_http_body_bytes: usize,
    /// Longest run or experiment display_name, in bytes.
    #[arg(long, env = "RUNLEDGER_MAX_NAME_BYTES", default_value_t = Limits::default().max_name_bytes)]
    max_name_bytes: usize,
    /// Longest run or experiment description, in bytes.
    #[arg(long, env = "RUNLEDGER_MAX_DESCRIPTION_BYTES", default_value_t = Limits::default().max_description_bytes)]
    max_description_bytes: usize,
    /// Most runtime_config.parameters entries in a run.
    #[arg(long, env = "RUNLEDGER_MAX_PARAMETERS", default_value_t = Limits::default().max_parameters)]
    max_parameters: usize,
    /// Most concurrent WatchRuns streams.
    #[arg(long, env = "RUNLEDGER_MAX_WATCHERS", default_value_t = Limits::default().max_watchers)]
    max_watchers: usize,
    /// Largest ListRuns / ListExperiments page; larger page_size requests are cut to it.
    #[arg(long, env = "RUNLEDGER_MAX_PAGE_SIZE", default_value_t = QueryLimits::default().max_page_size, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_page_size: usize,
    /// Most predicates in one list filter.
    #[arg(long, env = "RUNLEDGER_MAX_FILTER_PREDICATES", default_value_t = QueryLimits::default().max_predicates)]
    max_filter_predicates: usize,
    /// Longest list filter, in bytes.
    #[arg(long, env = "RUNLEDGER_MAX_FILTER_BYTES", default_value_t = QueryLimits::default().max_filter_bytes)]
    max_filter_bytes: usize,
    /// Change events buffered for WatchRuns; a watcher further behind is stopped.
    #[arg(long, env = "RUNLEDGER_EVENT_BUFFER", default_value_t = DataDirOptions::default().event_buffer)]
    event_buffer: usize,
    /// Authentication and per-namespace authorization (TOML: principals, trusted_header,
    /// grants; see README "Securing runledger"). Without it every caller may do everything.
    /// SIGHUP reloads it.
    #[arg(long, env = "RUNLEDGER_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,
    /// Serve TLS on both ports with this certificate chain (PEM, leaf first); needs --tls-key.
    /// SIGHUP reloads it (new connections get the new certificate).
    #[arg(long, env = "RUNLEDGER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "RUNLEDGER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate signed by one of these CAs (PEM);
    /// the certificate's subject CN names the principal for --auth-config.
    #[arg(long, env = "RUNLEDGER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// sled page cache size, in MiB.
    #[arg(long, env = "RUNLEDGER_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Writes are refused (RESOURCE_EXHAUSTED "disk full", HTTP 507) while the data dir's
    /// filesystem has less free space than this, in MiB; reads keep working and writes resume by
    /// themselves once space is freed. 0: only a real full disk stops writes.
    #[arg(long, env = "RUNLEDGER_MIN_FREE_DISK_MB", default_value_t = DataDirOptions::default().min_free_bytes / (1024 * 1024))]
    min_free_disk_mb: u64,
    /// Open connections per port; at the limit the longest-idle connection is closed to make
    /// room (a new one is refused only when every connection has a request in flight).
    #[arg(long, env = "RUNLEDGER_MAX_CONNECTIONS", default_value_t = TransportLimits::default().max_connections, value_parser = at_least_one)]
    max_connections: usize,
    /// Requests served at once, over both ports (health, reflection, metrics and watch streams
    /// excepted); more wait in the queue.
    #[arg(long, env = "RUNLEDGER_MAX_CONCURRENT_REQUESTS", default_value_t = TransportLimits::default().max_concurrent_requests, value_parser = at_least_one)]
    max_concurrent_requests: usize,
    /// Requests waiting for a slot; more are shed at once (UNAVAILABLE / 503 with retry-after).
    #[arg(long, env = "RUNLEDGER_MAX_QUEUED_REQUESTS", default_value_t = TransportLimits::default().max_queued_requests)]
    max_queued_requests: usize,
    /// Longest wait for a request slot before the request is shed, in milliseconds.
    #[arg(long, env = "RUNLEDGER_QUEUE_TIMEOUT_MS", default_value_t = millis(TransportLimits::default().queue_timeout))]
    queue_timeout_ms: u64,
    /// An HTTP/1 request head must be complete this long after its first byte (or after the
    /// connection opened), and with TLS the handshake this long after the connection was
    /// accepted, in milliseconds; else the connection is closed.
    #[arg(long, env = "RUNLEDGER_HEADER_TIMEOUT_MS", default_value_t = millis(TransportLimits::default().header_timeout), value_parser = at_least_one_ms)]
    header_timeout_ms: u64,
    /// A request body must be complete this long after its head, in milliseconds; else 408
    /// (gRPC DEADLINE_EXCEEDED).
    #[arg(long, env = "RUNLEDGER_BODY_TIMEOUT_MS", default_value_t = millis(TransportLimits::default().body_timeout), value_parser = at_least_one_ms)]
    body_timeout_ms: u64,
    /// A connection with no request in flight is closed after this many milliseconds.
    #[arg(long, env = "RUNLEDGER_IDLE_TIMEOUT_MS", default_value_t = millis(TransportLimits::default().idle_timeout), value_parser = at_least_one_ms)]
    idle_timeout_ms: u64,
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{value:?} is not a whole number of at least 1")),
    }
}

fn at_least_one_ms(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a number of milliseconds of at least 1"
        )),
    }
}

fn main() -> ExitCode {
    bound_malloc_arenas();
    // Usage errors exit 1 (not clap's 2): the client's documented codes are 0, 1, 3 and 4.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args).map(|()| true),
        Command::Descriptor(args) => descriptor(args).map(|()| true),
        Command::Check(args) => check(args),
        Command::Migrate(args) => migrate(args),
        Command::Export(args) => export(args).map(|()| true),
        Command::Import(args) => import(args).map(|()| true),
        Command::Auth(command) => auth(command),
        Command::Runs(args) => return runledger::cli::runs(args),
        Command::Experiments(args) => return runledger::cli::experiments(args),
        Command::Backup(args) => return runledger::cli::backup(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("runledger: {message}");
            ExitCode::FAILURE
        }
    }
}

fn descriptor(args: DescriptorArgs) -> Result<(), String> {
    use std::io::Write;
    match args.out {
        Some(path) => std::fs::write(&path, server::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => std::io::stdout()
            .lock()
            .write_all(server::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("cannot write to standard output: {e}")),
    }
}

/// Prints the check (or repair) report; Ok(false) when problems remain.
fn check(args: CheckArgs) -> Result<bool, String> {
    if let Some(url) = &args.store.database_url {
        if args.repair {
            return Err(
                "--repair rebuilds a data dir's indexes and counters; a database's are rebuilt \
                 by exporting it and importing that into an empty database (drop --repair to \
                 check it)"
                    .into(),
            );
        }
        let db = store::postgres::DatabaseUrl::parse(url).map_err(|e| e.to_string())?;
        let report = runtime()?
            .block_on(store::check_database(url))
            .map_err(|e| e.to_string())?;
        print!("{db}: {report}");
        return Ok(report.is_consistent());
    }
    let dir = &args.store.data_dir;
    if args.repair {
        let report = store::repair_data_dir(dir).map_err(|e| e.to_string())?;
        print!("{}: {report}", dir.display());
        Ok(report.after.is_consistent())
    } else {
        let report = store::check_data_dir(dir).map_err(|e| e.to_string())?;
        print!("{}: {report}", dir.display());
        Ok(report.is_consistent())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn migrate(args: MigrateArgs) -> Result<bool, String> {
    if let Some(url) = &args.store.database_url {
        let db = store::postgres::DatabaseUrl::parse(url).map_err(|e| e.to_string())?;
        let migrated = runtime()?
            .block_on(store::migrate_database(&db))
            .map_err(|e| e.to_string())?;
        println!("{db}: {migrated}");
        return Ok(true);
    }
    let options = store::MigrateOptions {
        chunk: args.chunk_runs,
        abort_after_chunks: args.abort_after_chunks,
    };
    let dir = &args.store.data_dir;
    let report = store::migrate_data_dir(dir, &options).map_err(|e| e.to_string())?;
    println!("{}: {report}", dir.display());
    Ok(true)
}

/// Opens the store of an offline command (export, import).
async fn open_store(
    args: &StoreArgs,
    creating: bool,
) -> Result<std::sync::Arc<dyn store::Store>, String> {
    if args.database_url.is_none() && !creating && !args.data_dir.is_dir() {
        return Err(format!(
            "{} is not a data dir (it does not exist); give --data-dir or --database-url",
            args.data_dir.display()
        ));
    }
    store::open(&args.location(2))
        .await
        .map_err(|e| e.to_string())
}

/// Counts records on a progress line (stderr, when it is a terminal).
fn progress_line(label: &str) -> impl FnMut(u64) {
    let mut line = runledger::cli::progress::Progress::stderr(label);
    let mut shown = 0u64;
    move |total| {
        line.page(total.saturating_sub(shown) as usize);
        shown = total;
    }
}

fn export(args: ExportArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let store = open_store(&args.store, false).await?;
        let source = args.store.location(1).to_string();
        let result = match &args.out {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let mut out = std::io::BufWriter::new(file);
                store::portable::export(&store, &source, &mut out, progress_line("exported")).await
            }
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                store::portable::export(&store, &source, &mut out, progress_line("exported")).await
            }
        };
        let closed = store.close().await;
        let totals = result.map_err(|e| e.to_string())?;
        closed.map_err(|e| e.to_string())?;
        eprintln!("exported {totals} from {source}");
        Ok(())
    })
}

fn import(args: ImportArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let input: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(&args.file)
                .map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
            Box::new(std::io::BufReader::new(file))
        };
        let store = open_store(&args.store, true).await?;
        let target = args.store.location(1).to_string();
        let result = store::portable::import(&store, input, progress_line("imported")).await;
        let closed = store.close().await;
        let totals = result.map_err(|e| e.to_string())?;
        closed.map_err(|e| e.to_string())?;
        eprintln!("imported {totals} into {target}");
        Ok(())
    })
}

fn auth(command: AuthCommand) -> Result<bool, String> {
    match command {
        AuthCommand::HashToken => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)
                .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
            // `echo token | ...` adds a newline that is not part of the token.
            let token = token.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return Err("no token on standard input".into());
            }
            println!("{}", runledger::auth::hash_token(token));
            Ok(true)
        }
        AuthCommand::CheckConfig { file } => {
            let auth = runledger::auth::Auth::load(&file)?;
            print!("{}: ok\n{}", file.display(), auth.summary());
            Ok(true)
        }
    }
}

fn init_logging(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log-level {filter:?} is not a valid filter: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args.log_level)?;
    // Before the store opens: a bad certificate or auth config is a usage error, not a
    // half-started server.
    let tls = TlsFiles::from_flags(
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_client_ca.clone(),
    )?
    .map(Tls::load)
    .transpose()?
    .map(std::sync::Arc::new);
    let auth = match &args.auth_config {
        Some(path) => Some(std::sync::Arc::new(runledger::auth::Auth::load(path)?)),
        None => None,
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let durability = match args.durability {
            DurabilityMode::Durable => Durability::Durable,
            DurabilityMode::Buffered => Durability::Buffered {
                flush_every_ms: args.flush_every_ms,
            },
        };
        let location = match &args.database_url {
            Some(url) => Location::Database {
                url: url.clone(),
                options: PostgresOptions {
                    pool_size: args.database_pool_size,
                    event_buffer: args.event_buffer,
                    event_retain: args.event_buffer,
                    ..PostgresOptions::default()
                },
            },
            None => Location::DataDir {
                dir: args.data_dir.clone(),
                options: DataDirOptions {
                    durability,
                    event_buffer: args.event_buffer,
                    event_retain: args.event_buffer,
                    cache_bytes: args.cache_mb * 1024 * 1024,
                    min_free_bytes: args.min_free_disk_mb.saturating_mul(1024 * 1024),
                    ..DataDirOptions::default()
                },
            },
        };
        let store = store::open(&location).await.map_err(|e| e.to_string())?;
        let limits = Limits {
            max_name_bytes: args.max_name_bytes,
            max_description_bytes: args.max_description_bytes,
            max_parameters: args.max_parameters,
            max_watchers: args.max_watchers,
            query: QueryLimits {
                max_page_size: args.max_page_size,
                max_predicates: args.max_filter_predicates,
                max_filter_bytes: args.max_filter_bytes,
            },
        };
        let services = Services::new(store, limits)
            .await
            .map_err(|e| e.to_string())?;
        let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
            .await
            .map_err(|e| format!("cannot listen on --grpc-addr {}: {e}", args.grpc_addr))?;
        let http = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .map_err(|e| format!("cannot listen on --http-addr {}: {e}", args.http_addr))?;
        let grpc_addr = grpc.local_addr().map_err(|e| e.to_string())?;
        let http_addr = http.local_addr().map_err(|e| e.to_string())?;
        // Before the line that says where it listens, which tests and scripts wait for.
        if let Some(tls) = &tls {
            tls.log_in_force("TLS on both ports");
        }
        if tls.is_none() {
            for (flag, addr) in [("--grpc-addr", grpc_addr), ("--http-addr", http_addr)] {
                if runledger::transport::beyond_loopback(addr) {
                    tracing::warn!(
                        %addr,
                        "{flag} is not a loopback address and TLS is off: tokens and data cross \
                         the network in clear text (pass --tls-cert and --tls-key)"
                    );
                }
            }
        }
        let durability = match location {
            Location::DataDir { .. } => format!("{durability:?}"),
            Location::Database { .. } => "committed and flushed".to_owned(),
        };
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            store = %location,
            durability,
            tls = match &tls {
                None => "off",
                Some(tls) if tls.mutual() => "on, client certificates required",
                Some(_) => "on",
            },
            "runledger listening"
        );
        let mut reload_hooks: Vec<Box<dyn Fn() + Send + Sync>> = Vec::new();
        if let Some(auth) = auth.clone() {
            reload_hooks.push(Box::new(move || auth.reload_and_log()));
        }
        if let Some(tls) = tls.clone() {
            reload_hooks.push(Box::new(move || tls.reload_and_log()));
        }
        on_reload_signal(reload_hooks);
        let ms = std::time::Duration::from_millis;
        let options = ServerOptions {
            max_message_bytes: args.max_message_bytes,
            max_http_body_bytes: args.max_http_body_bytes,
            auth,
            limits: TransportLimits {
                max_connections: args.max_connections,
                max_concurrent_requests: args.max_concurrent_requests,
                max_queued_requests: args.max_queued_requests,
                queue_timeout: ms(args.queue_timeout_ms),
                header_timeout: ms(args.header_timeout_ms),
                body_timeout: ms(args.body_timeout_ms),
                idle_timeout: ms(args.idle_timeout_ms),
            },
            tls,
        };
        raise_open_file_limit(args.max_connections, options.tls.is_some());
        server::run(
            services,
            Listeners { grpc, http },
            options,
            shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
    })
}

/// Raises the soft limit on open files to the hard limit (as Go does at startup): each
/// connection takes a descriptor, and the usual soft limit (1024) is below what
/// `--max-connections` allows on two ports (with TLS, plus the handshakes under way). Warns
/// when even the hard limit is too low.
fn raise_open_file_limit(max_connections: usize, tls: bool) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read or write the struct passed by reference.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        // Two ports of connections (and of handshakes), plus the store's files, listeners and
        // spare.
        let handshakes = if tls {
            runledger::transport::listener::MAX_PENDING_HANDSHAKES
        } else {
            0
        };
        let needed = (2 * (max_connections + handshakes) + 256) as libc::rlim_t;
        if limit.rlim_cur < needed {
            tracing::warn!(
                open_files = limit.rlim_cur,
                needed,
                "the open-file limit is below what --max-connections allows on both ports; \
                 raise it (ulimit -n) or lower --max-connections"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (max_connections, tls);
}

/// Runs every hook on each SIGHUP (reloading configuration; a hook logs its own outcome).
fn on_reload_signal(hooks: Vec<Box<dyn Fn() + Send + Sync>>) {
    #[cfg(unix)]
    {
        if hooks.is_empty() {
            return;
        }
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; configuration reload is off");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                for hook in &hooks {
                    hook();
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(hooks);
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
