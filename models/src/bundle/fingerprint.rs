//! Fingerprints of the data files a model was trained on, so that a bundle
//! says exactly which export it came from.

use std::io::Read;
use std::path::{Path, PathBuf};

use features::DatasetSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BundleError;

/// Size and SHA-256 of each data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// In the order given.
    pub files: Vec<FileFingerprint>,
}

/// One data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// The path as the spec gives it (usually relative to the spec file).
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// Fingerprints `paths`, each recorded as given and read from
/// `base_dir.join(path)` when relative. Files are streamed, never held in
/// memory; an error names the file.
pub fn fingerprint_files(
    base_dir: &Path,
    paths: &[PathBuf],
) -> Result<DataFingerprint, BundleError> {
    let files = paths
        .iter()
        .map(|path| {
            let actual = if path.is_absolute() {
                path.clone()
            } else {
                base_dir.join(path)
            };
            let (bytes, sha256) = hash_file(&actual)?;
            Ok(FileFingerprint {
                path: path.clone(),
                bytes,
                sha256,
            })
        })
        .collect::<Result<_, BundleError>>()?;
    Ok(DataFingerprint { files })
}

/// Fingerprints the data files a spec names (entities, events, outcomes or
/// table, in that order), resolved against the spec's folder.
pub fn fingerprint_spec(spec: &DatasetSpec) -> Result<DataFingerprint, BundleError> {
    let paths: Vec<PathBuf> = [
        spec.entities.as_ref().and_then(|e| e.path.clone()),
        spec.events.as_ref().map(|e| e.path.clone()),
        spec.outcomes.as_ref().map(|o| o.path.clone()),
        spec.table.as_ref().map(|t| t.path.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    fingerprint_files(&spec.base_dir, &paths)
}

/// SHA-256 of `bytes`, lower-case hex (as [`Manifest::model_sha256`](super::Manifest::model_sha256)
/// stores it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hash_file(path: &Path) -> Result<(u64, String), BundleError> {
    let mut file = std::fs::File::open(path).map_err(|e| BundleError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io(path, e)),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}
