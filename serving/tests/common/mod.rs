//! Helpers shared by the integration tests that run exported models: ONNX Runtime through
//! the serving pool, and Python onnxruntime through `models/tests/python/check_onnx.py`.
//! Also included by the training crate's tests (`#[path]`), so each test binary uses part.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::Array2;

use serving::runtime;

/// True when ONNX Runtime is usable; false (after a notice) when the test
/// should be skipped; panics when it must run but cannot.
///
/// Skipped only when the library is absent and `LEADSCORE_REQUIRE_ORT` is
/// unset; CI sets `LEADSCORE_REQUIRE_ORT=1`.
pub fn ort_available() -> bool {
    match runtime::runtime() {
        Ok(_) => true,
        Err(e) => {
            let required = std::env::var_os("LEADSCORE_REQUIRE_ORT").is_some_and(|v| !v.is_empty());
            if e.is_missing() && !required {
                // Written to the raw stderr handle so the test harness does
                // not capture it: a skip must be visible in the log.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED (ONNX Runtime absent, LEADSCORE_REQUIRE_ORT unset): {e}"
                );
                false
            } else {
                panic!("ONNX Runtime unavailable: {e}");
            }
        }
    }
}

/// Python interpreter override for the Python onnxruntime check.
const PYTHON_ENV: &str = "LEADSCORE_PYTHON";
/// Set (non-empty) to fail instead of skipping without Python onnxruntime.
const REQUIRE_PYTHON_ENV: &str = "LEADSCORE_REQUIRE_PYTHON_ORT";

/// The workspace root (the parent of the crate running the test).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `$LEADSCORE_PYTHON`, else the repository's `.venv/bin/python`, else
/// `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// True when `python` imports numpy and onnxruntime; false (after a notice)
/// when the test should be skipped; panics when it must run but cannot.
pub fn python_ort_available(python: &Path) -> bool {
    let probe = Command::new(python)
        .args(["-c", "import numpy, onnxruntime"])
        .output();
    let problem = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    let required = std::env::var_os(REQUIRE_PYTHON_ENV).is_some_and(|v| !v.is_empty());
    if required {
        panic!(
            "Python onnxruntime unavailable with {} ({REQUIRE_PYTHON_ENV} is set): {problem}",
            python.display()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (Python onnxruntime unavailable with {}, {REQUIRE_PYTHON_ENV} unset): {problem}",
        python.display()
    );
    false
}

/// Writes a little-endian `.npy` file (format 1.0).
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let shape = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend(
        u16::try_from(header.len())
            .expect("short header")
            .to_le_bytes(),
    );
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).expect("write npy");
}

/// Runs `check_onnx.py` on the ONNX file `model` with `rows` and the `expected`
/// probabilities; panics with the script's output when a row differs by more than
/// `tolerance`.
pub fn check_onnx_in_python(
    python: &Path,
    what: &str,
    model: &Path,
    rows: &Array2<f32>,
    expected: &[f64],
    tolerance: f64,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let inputs_path = dir.path().join("inputs.npy");
    let expected_path = dir.path().join("expected.npy");
    let input_bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        &inputs_path,
        "<f4",
        &[rows.nrows(), rows.ncols()],
        &input_bytes,
    );
    let expected_bytes: Vec<u8> = expected.iter().flat_map(|p| p.to_le_bytes()).collect();
    write_npy(&expected_path, "<f8", &[expected.len()], &expected_bytes);
    let script = repo_root().join("models/tests/python/check_onnx.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(model)
        .arg(&inputs_path)
        .arg(&expected_path)
        .arg("--tolerance")
        .arg(tolerance.to_string())
        .output()
        .expect("run check_onnx.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = writeln!(std::io::stderr(), "python {what}: {}", stdout.trim());
    assert!(
        out.status.success(),
        "check_onnx.py failed for {what} ({}):\n{stdout}{stderr}",
        out.status
    );
}

/// Copies folder `from` into `to`, recursively (a fixture registry into a temporary one).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
