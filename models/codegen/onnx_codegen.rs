//! Shared by `examples/regen_onnx.rs` (writes the file) and
//! `tests/onnx_codegen.rs` (checks the committed file is current): turns the
//! vendored `proto/onnx.proto` into Rust with protox (no `protoc` binary) and
//! prost-build.

use std::error::Error;
use std::path::{Path, PathBuf};

/// The vendored schema, relative to the `models` crate root.
pub const PROTO: &str = "proto/onnx.proto";
/// The committed generated code, relative to the `models` crate root.
pub const GENERATED: &str = "src/onnx/generated.rs";
/// How to bring the committed file up to date.
pub const REGEN_HINT: &str = "cargo run -p leadscore-models --example regen_onnx";

const HEADER: &str = "\
// @generated from models/proto/onnx.proto (onnx 1.23.2, see models/proto/README.md)
// by protox + prost-build. Do not edit: regenerate with
// `cargo run -p leadscore-models --example regen_onnx`.
";

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the Rust source for `package onnx`, header included.
pub fn generate(scratch: &Path) -> Result<String, Box<dyn Error>> {
    let root = crate_dir();
    let proto_dir = root.join("proto");
    let fds = protox::compile([root.join(PROTO)], [&proto_dir])?;
    prost_build::Config::new()
        .out_dir(scratch)
        .compile_fds(fds)?;
    let body = std::fs::read_to_string(scratch.join("onnx.rs"))?;
    Ok(format!("{HEADER}{body}"))
}
