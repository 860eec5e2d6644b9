//! Compiles `proto/` without a system `protoc` (protox is a pure-Rust compiler), generates the
//! prost/tonic code and the pbjson serde impls, and writes the descriptor set that gRPC
//! reflection serves and `runledger descriptor` exports.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "run.proto",
    "experiment.proto",
    "filter.proto",
    "pipeline.proto",
    "recurring_run.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    record_commit_sha();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // Encoded by protox itself: going through prost-types would drop the google.api.http method
    // options that gateways (and `grpcurl describe`) read.
    let descriptor_path = out_dir.join("runledger_descriptor.bin");
    fs::write(&descriptor_path, compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        // Well-known types with proto3 JSON support; Timestamp is ours so that JSON shows the
        // RFC 3339 `Z` form KFP clients expect (pbjson-types prints `+00:00`), and Struct (the
        // pipeline spec) is ours so that it stays the bytes the client sent (src/wkt).
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf.Struct", "crate::wkt::StructBytes")
        .compile_fds(compiler.file_descriptor_set())?;

    let descriptors = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf.Struct", "crate::wkt::StructBytes")
        .build(&[".kubeflow.pipelines.backend.api.v2beta1", ".google.rpc"])?;
    Ok(())
}

/// Makes the git commit available to healthz's `commit_sha` (unless RUNLEDGER_COMMIT_SHA is set;
/// "unknown" outside a git checkout).
fn record_commit_sha() {
    println!("cargo:rerun-if-env-changed=RUNLEDGER_COMMIT_SHA");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if env::var_os("RUNLEDGER_COMMIT_SHA").is_some() {
        return;
    }
    let sha = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(sha) = sha {
        println!("cargo:rustc-env=RUNLEDGER_COMMIT_SHA={sha}");
    }
}
