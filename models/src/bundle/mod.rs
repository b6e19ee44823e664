//! The model bundle: everything the server needs to score, grade and explain
//! with one trained model, as one folder of the registry.
//!
//! A bundle lives at `<registry>/<model>/<version>/` (a registry holds any number of
//! models by [`ModelName`]; a model's manifest says its task) and holds [`MODEL_FILE`]
//! (the ONNX graph, one `float32[N, F]` input `features`), [`MANIFEST_FILE`]
//! (a readable JSON [`Manifest`]: feature names, order and kinds, the fitted
//! [`FeaturePlan`](features::FeaturePlan), the dataset spec and a fingerprint
//! of its files, validation metrics, calibration, the sales-ready threshold
//! and A–D grade bands, creation time and code version), [`EXPLAINER_FILE`]
//! (what explanations need: the trees for TreeSHAP or the linear weights and
//! their baseline, see [`Explainer`]; [`Explainer::explain_into`] gives each
//! feature's exact contribution to a score), [`REPORT_FILE`] (the HTML report) and
//! [`HOLDOUT_FILE`] (the calibrated validation scores as CSV).
//!
//! [`write_bundle`] writes a bundle atomically: every file goes into a
//! temporary directory `.tmp-<version>-<random>` beside the final one (same
//! filesystem), is synced, and the directory is then renamed into place. An
//! interrupted run leaves at most a `.tmp-*` directory, which readers ignore
//! and [`clean_stale_temp_dirs`] removes; an existing version is never
//! overwritten. [`Bundle::load`] reads a bundle back and checks it (format
//! version, model name and version against the folders, feature plan, explainer,
//! `model.onnx` against the manifest's SHA-256 when it has one, and the ONNX
//! input width against the features), naming the file and the problem
//! when something is wrong. [`Registry`] lists its models and the complete versions of
//! each, says which is live (`<model>/LIVE`), promotes and reverts under the
//! registry's lock and logs every change (`history.jsonl`, see [`RegistryEvent`]).
//! [`RemoteRegistry`] keeps a registry on object storage: readers mirror it into a folder,
//! writers upload a folder's changes, in an order that keeps the same promise to readers.
//! The serving crate reads bundles only through this module.

mod explain;
mod fingerprint;
mod live;
mod manifest;
mod name;
mod remote;
mod remote_lock;
mod store;

use std::path::{Path, PathBuf};

pub use explain::ExplainScratch;
pub use fingerprint::{
    DataFingerprint, FileFingerprint, fingerprint_files, fingerprint_spec, sha256_hex,
};
pub use live::{
    HISTORY_FILE, LIVE_FILE, LOCK_FILE, LiveStatus, RegistryAction, RegistryEvent, RegistryLock,
};
pub use manifest::{
    DatasetInfo, Explainer, ExplanationKind, FeatureDescription, FeatureKind, Grade, GradeBands,
    Manifest, ModelKind, Thresholds, ValidationSummary, describe_features,
};
pub use name::{MAX_MODEL_NAME_LEN, ModelName, check_model_name};
pub use remote::{RemoteRegistry, SyncReport, is_registry_url};
pub use remote_lock::{DEFAULT_REMOTE_LEASE, REMOTE_LOCK_OBJECT, RemoteLock};
pub use store::{
    Bundle, BundleContents, Holdout, HoldoutRow, Registry, clean_stale_temp_dirs, onnx_input_width,
    write_bundle,
};

/// Version of the on-disk format this build writes and reads; stored in
/// every manifest as `format_version`.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// The ONNX model.
pub const MODEL_FILE: &str = "model.onnx";
/// The JSON [`Manifest`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// The JSON [`Explainer`].
pub const EXPLAINER_FILE: &str = "explainer.json";
/// The HTML report.
pub const REPORT_FILE: &str = "report.html";
/// The validation rows and their calibrated scores ([`HoldoutRow`]) as CSV.
pub const HOLDOUT_FILE: &str = "holdout.csv";
/// Prefix of the temporary directories bundles are written into; readers
/// skip entries starting with it (and every other hidden entry).
pub const TEMP_DIR_PREFIX: &str = ".tmp-";
/// Prefix of the temporary file a new `LIVE` marker is written to before it
/// is renamed into place.
pub const LIVE_TEMP_PREFIX: &str = ".tmp-live-";

/// The registry's routing file (`<registry>/routing.toml`): the segment routing tables a
/// server on the registry reads by default; `train --segment-by` writes its table there.
pub const ROUTING_FILE: &str = "routing.toml";

/// Longest accepted version name.
pub const MAX_VERSION_LEN: usize = 100;

/// Why a bundle could not be written or read. Every variant names the file
/// or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// An operating-system error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the bundle must have is not there.
    #[error("{}: missing (not a complete bundle)", path.display())]
    Missing { path: PathBuf },
    /// A file could not be parsed (JSON syntax or structure, protobuf).
    #[error("{}: cannot be read: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// The manifest was written in a format this build does not read.
    #[error(
        "{}: bundle format version {found}, this build reads version {supported} only",
        path.display()
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// The file parses but its content is wrong or inconsistent.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// The version directory (or something else of that name) already
    /// exists: bundles are never overwritten.
    #[error("{}: already exists; a bundle is never overwritten", path.display())]
    AlreadyExists { path: PathBuf },
    /// Another process holds the registry's lock.
    #[error("{}: the registry is locked by another run ({holder}); try again when it ends", path.display())]
    Locked { path: PathBuf, holder: String },
}

impl BundleError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        BundleError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        BundleError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A new version name for a bundle created at `now`:
/// `YYYYMMDDTHHMMSSZ-<6 random hex digits>`, e.g. `20250301T120000Z-3fa9c1`.
/// Names sort by creation time (to the second) and two runs in the same
/// second differ by their random part.
pub fn new_version_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        random_u64() & 0xff_ffff
    )
}

/// Checks a version name: 1 to [`MAX_VERSION_LEN`] ASCII letters, digits,
/// `-`, `_` or `.`, not starting with `.` (so never `.`, `..`, hidden or
/// temporary). The name becomes a directory name, so nothing else is safe.
pub fn check_version_name(version: &str) -> Result<(), String> {
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "version name {version:?} must have 1 to {MAX_VERSION_LEN} characters"
        ));
    }
    if version.starts_with('.') {
        return Err(format!("version name {version:?} must not start with `.`"));
    }
    if let Some(c) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "version name {version:?} contains {c:?}; use ASCII letters, digits, `-`, `_`, `.`"
        ));
    }
    Ok(())
}

/// 64 random bits without a random-number crate: std's `RandomState` is
/// keyed from the operating system's randomness; the time, process id and a
/// counter make successive calls differ.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}
