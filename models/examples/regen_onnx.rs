//! Regenerates `models/src/onnx/generated.rs` from the vendored
//! `models/proto/onnx.proto`:
//!
//! ```sh
//! cargo run -p leadscore-models --example regen_onnx
//! ```

#[path = "../codegen/onnx_codegen.rs"]
#[allow(dead_code, reason = "shared with tests/onnx_codegen.rs")]
mod onnx_codegen;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let code = onnx_codegen::generate(scratch.path())?;
    let dest = onnx_codegen::crate_dir().join(onnx_codegen::GENERATED);
    let tmp = dest.with_extension("rs.tmp");
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, &dest)?;
    println!("wrote {}", dest.display());
    Ok(())
}
