//! runledger: a run-tracking server for ML pipelines, wire-compatible with the Kubeflow Pipelines
//! v2beta1 Run API (plus Experiments), in one binary on an embedded sled database.
//!
//! # Layout
//! Modules follow the path a request takes:
//! - [`grpc`]: the tonic adapter (convert, call the core, convert back); [`admin`]: the same
//!   for runledger's own administration API (online backup).
//! - [`http`]: the JSON/HTTP adapter on KFP's REST routes, over the same core.
//! - [`ui`]: the web UI (embedded HTML/CSS/JS at `/`), a client of the JSON API and its watch.
//! - [`auth`]: identity: bearer tokens, the trusted proxy header, client certificates ->
//!   the principal of each request (what it may do is [`service::access`]).
//! - [`metrics`]: Prometheus metrics (`GET /metrics`), fed by a gRPC layer, an HTTP middleware
//!   and the store's observer interface.
//! - [`cli`]: the command-line client (`runledger runs|experiments ...`) over the gRPC API.
//! - [`transport`]: connections: one listener for both ports (TCP_NODELAY, TLS with reloadable
//!   certificates and optional client certificates), and the peer (address, client certificate
//!   name) of each request.
//! - [`server`]: wiring: gRPC services, health, reflection, the HTTP router, the scheduler,
//!   graceful shutdown.
//! - [`scheduler`]: the task that creates recurring runs' runs when they are due, on the
//!   services' (injectable) clock, one per store (a lease).
//! - [`service`]: the transport-free core, one service per resource (runs, experiments,
//!   pipelines, recurring runs), each call with a [`service::Context`] (principal, clock, ids):
//!   validation, defaults, the run state machine, watches, cron and schedules.
//! - [`query`]: backend-neutral list queries: filter / sort / page-token parsing into a
//!   [`query::ListQuery`] (pure; knows no store).
//! - [`store`]: the store interface (records, list queries, compare-and-set writes, the change
//!   feed) and its backends: [`store::sled`], the embedded one, is the only code that knows
//!   sled; [`store::postgres`], for several replicas on one database, the only code that knows
//!   PostgreSQL. [`store::open`] picks one.
//! - [`error`]: the one error enum and every mapping of it: gRPC codes, HTTP statuses and bodies.
//! - [`wkt`]: our `google.protobuf.Timestamp` (RFC 3339 `Z` in JSON).
//! - [`api`]: the generated KFP v2beta1 types and services.

pub mod wkt;
pub mod proto {
    pub mod google {
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
            include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
        }
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        }
    }
    pub mod runledger {
        pub mod admin {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/runledger.admin.v1.rs"));
                include!(concat!(env!("OUT_DIR"), "/runledger.admin.v1.serde.rs"));
            }
        }
    }
    pub mod kubeflow {
        pub mod pipelines {
            pub mod backend {
                pub mod api {
                    pub mod v2beta1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/kubeflow.pipelines.backend.api.v2beta1.rs"
                        ));
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/kubeflow.pipelines.backend.api.v2beta1.serde.rs"
                        ));
                    }
                }
            }
        }
    }
}

pub mod admin;
pub mod auth;
pub mod cli;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod query;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod transport;
pub mod ui;

/// The KFP v2beta1 API types (runs, experiments, pipelines, recurring runs, filters) and their
/// gRPC services.
pub use proto::kubeflow::pipelines::backend::api::v2beta1 as api;
/// runledger's own administration API (backups) and its gRPC service.
pub use proto::runledger::admin::v1 as admin_api;
