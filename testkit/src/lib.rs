//! What runledger's tests and benchmarks need from the outside world, started for real.
//!
//! Layout:
//! - [`postgres`]: throwaway PostgreSQL clusters (initdb + postgres in a temp dir), for the
//!   PostgreSQL backend's tests and benchmarks.

pub mod postgres;
