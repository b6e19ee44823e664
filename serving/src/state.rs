//! Shared server state: which models are loaded, or why none are.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::ApiError;
use crate::pool::{LoadError, PoolConfig, Scorer, SessionPool};

/// Loaded models by name.
#[derive(Clone, Default)]
pub struct ModelSet {
    models: BTreeMap<String, Arc<dyn Scorer>>,
}

impl std::fmt::Debug for ModelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.models.keys()).finish()
    }
}

impl ModelSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a model.
    pub fn insert(&mut self, name: impl Into<String>, model: Arc<dyn Scorer>) {
        self.models.insert(name.into(), model);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Scorer>> {
        self.models.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Loads every `<dir>/<task>/<version>/model.onnx` (the registry layout
    /// of ARCHITECTURE.md) as the model `<task>/<version>`. Other files and
    /// directories are ignored. Provisional: bundles' `manifest.json` (feature
    /// plan, validation) is not read until the `models` bundle format exists.
    ///
    /// Blocking: call it from a blocking context.
    pub fn load_dir(dir: &Path, config: PoolConfig) -> Result<Self, RegistryError> {
        let mut found = Vec::new();
        for task in subdirs(dir)? {
            for version in subdirs(&task)? {
                let model = version.join(MODEL_FILE);
                if model.is_file() {
                    let name = format!("{}/{}", file_name(&task), file_name(&version));
                    found.push((name, model));
                }
            }
        }
        found.sort();
        let mut set = Self::new();
        for (name, path) in found {
            let pool =
                SessionPool::from_file(&path, config).map_err(|source| RegistryError::Model {
                    path: path.display().to_string(),
                    source,
                })?;
            set.insert(name, Arc::new(pool));
        }
        Ok(set)
    }
}

/// File name of a bundle's ONNX model inside `<task>/<version>/`.
pub const MODEL_FILE: &str = "model.onnx";

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The directories directly inside `dir`, sorted.
fn subdirs(dir: &Path) -> Result<Vec<std::path::PathBuf>, RegistryError> {
    let read_err = |source| RegistryError::Read {
        dir: dir.display().to_string(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Why the registry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read registry {dir}: {source}")]
    Read { dir: String, source: std::io::Error },
    #[error("cannot load model {path}: {source}")]
    Model { path: String, source: LoadError },
}

#[derive(Debug, Clone)]
enum Readiness {
    NotReady(String),
    Ready(Arc<ModelSet>),
}

/// State shared by all handlers; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    readiness: Arc<RwLock<Readiness>>,
}

impl AppState {
    /// A state that is not ready, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            readiness: Arc::new(RwLock::new(Readiness::NotReady(reason.into()))),
        }
    }

    /// A state serving `models` (not ready if the set is empty).
    pub fn with_models(models: ModelSet) -> Self {
        let state = Self::not_ready("starting");
        state.set_models(models);
        state
    }

    /// Starts serving `models`; an empty set makes the service not ready.
    pub fn set_models(&self, models: ModelSet) {
        let next = if models.is_empty() {
            Readiness::NotReady("no models loaded".into())
        } else {
            Readiness::Ready(Arc::new(models))
        };
        *self.write() = next;
    }

    /// Stops serving, for `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.write() = Readiness::NotReady(reason.into());
    }

    /// The loaded models, or [`ApiError::NotReady`] with the reason.
    pub fn models(&self) -> Result<Arc<ModelSet>, ApiError> {
        match &*self
            .readiness
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Readiness::Ready(models) => Ok(Arc::clone(models)),
            Readiness::NotReady(reason) => Err(ApiError::NotReady {
                reason: reason.clone(),
            }),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Readiness> {
        self.readiness
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
