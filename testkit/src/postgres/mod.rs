//! Throwaway PostgreSQL clusters: real servers from this machine's PostgreSQL installation,
//! each in its own temp directory, on 127.0.0.1 and a free port.
//!
//! ```no_run
//! use runledger_testkit::postgres;
//!
//! // Most tests: one database each, in the cluster shared by the whole test binary.
//! let Some(cluster) = postgres::shared_or_skip("lists_runs_by_creation_time") else {
//!     return;
//! };
//! let url = cluster.create_database("lists_runs_by_creation_time").expect("database");
//!
//! // Fault tests: a cluster of their own, to stop, kill and restart.
//! let Some(mut own) = postgres::cluster_or_skip("reconnects_after_a_restart") else {
//!     return;
//! };
//! own.kill().expect("kill");
//! own.start_again().expect("start again");
//! ```
//!
//! Layout:
//! - `cluster`    [`Cluster`]: start, databases, stop/start_again/kill, cleanup on drop.
//! - `skip`       [`shared`], [`cluster_or_skip`], [`shared_or_skip`]: the skip-unless-CI rule.
//! - `binaries`   where the server programs are (pg_config, /usr/lib/postgresql, PATH).
//! - `account`    who runs them: the caller, or the `postgres` user when the caller is root.
//! - `workdir`    the cluster's directory: data dir, socket, server log.
//! - `postmaster` the server process: spawn, readiness, signals, stray processes.
//! - `watchdog`   the guard process that cleans up when the test process dies.
//! - `command`    running one program with a time limit.
//! - `error`      [`Error`].

mod account;
mod binaries;
mod cluster;
mod command;
mod error;
mod postmaster;
mod skip;
mod watchdog;
mod workdir;

pub use cluster::{Cluster, DEFAULT_DATABASE, SUPERUSER};
pub use error::Error;
pub use skip::{cluster_or_skip, shared, shared_or_skip};
