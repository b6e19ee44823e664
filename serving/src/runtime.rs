//! Finding and initialising ONNX Runtime (process-wide, once).
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at
//! build time, and the shared library is loaded here at run time from
//!
//! 1. `$LEADSCORE_ORT_LIB`, when set and non-empty (it must exist), else
//! 2. `.onnxruntime/libonnxruntime.so.1.31.1` in the first ancestor of the
//!    executable's directory, the current directory, or (compile-time) this
//!    crate's source directory that has it — i.e. the repository checkout,
//!    where `scripts/fetch-onnxruntime` puts it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Version of ONNX Runtime the `ort` bindings are built for.
pub const ORT_VERSION: &str = "1.31.1";
/// File name of the shared library.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";
/// Directory, relative to the repository root, holding [`ORT_LIB_FILE`].
pub const ORT_LIB_DIR: &str = ".onnxruntime";
/// Environment variable overriding where the library is loaded from.
pub const ORT_LIB_ENV: &str = "LEADSCORE_ORT_LIB";

/// How to get the library, in one line.
pub const FETCH_HINT: &str =
    "run scripts/fetch-onnxruntime or set LEADSCORE_ORT_LIB=/path/to/libonnxruntime.so.1.31.1";

/// Why ONNX Runtime is not available. Every message is a single line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No library found in any searched place.
    #[error("ONNX Runtime library {ORT_LIB_FILE} not found (searched {searched}); {FETCH_HINT}")]
    NotFound { searched: String },
    /// `$LEADSCORE_ORT_LIB` names a file that does not exist.
    #[error("{ORT_LIB_ENV}={path} does not exist; {FETCH_HINT}")]
    EnvPathMissing { path: PathBuf },
    /// The library exists but could not be loaded (wrong file, wrong version).
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    /// The library loaded but the environment could not be created.
    #[error("cannot create the ONNX Runtime environment: {message}")]
    Environment { message: String },
}

impl RuntimeError {
    /// True when no library file was found at all (as opposed to a library
    /// that is present but broken).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::EnvPathMissing { .. })
    }
}

/// The process-wide ONNX Runtime: the loaded library and its environment.
#[derive(Debug)]
pub struct Runtime {
    library: PathBuf,
    env: ort::environment::Environment,
}

impl Runtime {
    /// Path the library was loaded from.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The environment sessions are created in.
    pub fn env(&self) -> &ort::environment::Environment {
        &self.env
    }
}

static RUNTIME: OnceLock<Result<Runtime, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime and creates its environment on first call; later calls
/// return the same runtime (or the same error: `ort` allows one environment
/// per process, so initialisation is never retried).
pub fn runtime() -> Result<&'static Runtime, RuntimeError> {
    RUNTIME.get_or_init(init).as_ref().map_err(Clone::clone)
}

fn init() -> Result<Runtime, RuntimeError> {
    let library = locate_library()?;
    let builder = ort::init_from(&library).map_err(|e| RuntimeError::Load {
        path: library.clone(),
        message: one_line(&e.to_string()),
    })?;
    let env = builder
        .with_name("leadscore")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Environment {
            message: one_line(&e.to_string()),
        })?;
    Ok(Runtime { library, env })
}

/// Where the library would be loaded from, without loading it.
pub fn locate_library() -> Result<PathBuf, RuntimeError> {
    let env_value = std::env::var_os(ORT_LIB_ENV).filter(|v| !v.is_empty());
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    let roots: Vec<PathBuf> = exe_dir
        .into_iter()
        .chain(cwd)
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR"))])
        .collect();
    locate_in(env_value.map(PathBuf::from), &roots)
}

/// [`locate_library`] with its inputs explicit.
fn locate_in(env_value: Option<PathBuf>, roots: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = env_value {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RuntimeError::EnvPathMissing { path })
        };
    }
    for root in roots {
        for dir in root.ancestors() {
            let candidate = dir.join(ORT_LIB_DIR).join(ORT_LIB_FILE);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let searched = roots
        .iter()
        .map(|r| format!("{}/ in ancestors of {}", ORT_LIB_DIR, r.display()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(RuntimeError::NotFound {
        searched: if searched.is_empty() {
            format!("{ORT_LIB_ENV} unset, no directories")
        } else {
            searched
        },
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("custom.so");
        std::fs::write(&lib, b"").unwrap();
        assert_eq!(locate_in(Some(lib.clone()), &[]).unwrap(), lib);

        let missing = dir.path().join("nope.so");
        let err = locate_in(Some(missing), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.is_missing());
        let msg = err.to_string();
        assert!(msg.contains(FETCH_HINT), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn finds_library_in_an_ancestor() {
        let repo = tempfile::tempdir().unwrap();
        let lib_dir = repo.path().join(ORT_LIB_DIR);
        std::fs::create_dir_all(&lib_dir).unwrap();
        std::fs::write(lib_dir.join(ORT_LIB_FILE), b"").unwrap();
        let deep = repo.path().join("target/debug/deps");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(
            locate_in(None, &[deep]).unwrap(),
            lib_dir.join(ORT_LIB_FILE)
        );
    }

    #[test]
    fn missing_library_error_is_one_line_with_the_fix() {
        let empty = tempfile::tempdir().unwrap();
        let err = locate_in(None, &[empty.path().to_path_buf()]).unwrap_err();
        assert!(err.is_missing());
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.ends_with(
                "run scripts/fetch-onnxruntime or set LEADSCORE_ORT_LIB=/path/to/libonnxruntime.so.1.31.1"
            ),
            "{msg}"
        );
    }
}
