//! The committed `src/onnx/generated.rs` must be exactly what protox +
//! prost-build produce from the vendored `proto/onnx.proto`.

#[path = "../codegen/onnx_codegen.rs"]
mod onnx_codegen;

#[test]
fn generated_onnx_code_is_up_to_date() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let fresh =
        onnx_codegen::generate(scratch.path()).expect("generate code from proto/onnx.proto");
    let path = onnx_codegen::crate_dir().join(onnx_codegen::GENERATED);
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `{}`",
            path.display(),
            onnx_codegen::REGEN_HINT
        )
    });
    assert!(
        fresh == committed,
        "{} is out of date with {}; run `{}` and commit the result",
        onnx_codegen::GENERATED,
        onnx_codegen::PROTO,
        onnx_codegen::REGEN_HINT
    );
}
