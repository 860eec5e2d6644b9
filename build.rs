//! Compiles `proto/` without a system `protoc` (protox is a pure-Rust compiler), generates the
//! prost/tonic code and the pbjson serde impls, and writes the descriptor set that gRPC
//! reflection serves and `runledger descriptor` exports.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["run.proto", "experiment.proto", "filter.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
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
        // RFC 3339 `Z` form KFP clients expect (pbjson-types prints `+00:00`).
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .compile_fds(compiler.file_descriptor_set())?;

    let descriptors = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .build(&[".kubeflow.pipelines.backend.api.v2beta1", ".google.rpc"])?;
    Ok(())
}
