//! What runledger's tests and benchmarks need from the outside world, started for real.
//!
//! Layout:
//! - [`postgres`]: throwaway PostgreSQL clusters (initdb + postgres in a temp dir), for the
//!   PostgreSQL backend's tests and benchmarks.
//! - [`every_backend`]: an attribute that runs one async integration test once per store
//!   backend (see the README).

pub mod postgres;

pub use runledger_testkit_macros::every_backend;
