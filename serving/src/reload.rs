//! Hot reload: picks up new bundle versions in the registry and changes to the thresholds
//! file without a restart and without a failed request.
//!
//! [`Reloader::reload_once`] (blocking; run it on the blocking pool) looks at the version
//! each task should serve ([`Registry::served_status`]: the live one, named by
//! `<task>/LIVE`, which promote and revert replace atomically; the newest complete version
//! when there was never a promotion) and at the thresholds file. When `LIVE` cannot be used
//! after promotions, the live version comes from the registry's log and the problem is
//! logged and reported; when not even the log says, the registry's error is logged and
//! reported and what is served keeps serving (an unpromoted version is never served in
//! its place). A version that differs from the one served is
//! loaded in full (checked bundle, ONNX Runtime sessions) before it is swapped in as a new
//! [`Served`](crate::state::Served) snapshot; requests in flight finish on the old one. A
//! bundle that fails to load is logged and refused, and the model already served keeps
//! serving. A failed version is remembered with a fingerprint of its folder (its files'
//! names, sizes and modification times): the scheduled reload ([`Reloader::watch`],
//! [`Reloader::reload_scheduled`]) tries it again once the folder changes (a bundle seen
//! while it was still being copied in loads once the copy is complete), an explicit reload
//! (`POST /admin/reload`, [`Reloader::reload_once`]) always. A version the thresholds
//! file in force does not fit (thresholds by capacity, a bundle without held-out
//! predictions) is refused too, and tried again when a new thresholds file is applied. A
//! thresholds file that does not parse, check or fit a served model is refused the same
//! way, until its content changes. Every report lists the versions that should be served
//! and are not, with the reason ([`ReloadReport::failed`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use features::spec::Task;
use models::bundle::Registry;
use serde::Serialize;

use crate::model::LoadedModel;
use crate::pool::PoolConfig;
use crate::state::AppState;
use models::thresholds_file::ThresholdsFile;

/// Where models and thresholds come from, and what was refused before.
#[derive(Debug)]
pub struct Reloader {
    registry: Registry,
    thresholds_path: Option<PathBuf>,
    pool: PoolConfig,
    drift_window: Duration,
    memory: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// `task/version` of bundles that failed to load or to fit, with why.
    failed: BTreeMap<String, Failure>,
    /// What was last logged about each task's `LIVE` (a warning or an error), so that the
    /// scheduled reload logs it when it changes, not at every tick.
    registry_problems: HashMap<&'static str, String>,
    /// The thresholds file's content last looked at (applied or refused).
    thresholds_seen: Option<String>,
}

/// A version that failed.
#[derive(Debug)]
struct Failure {
    /// [`folder_fingerprint`] of its folder when it failed: the scheduled reload tries it
    /// again only once this changes.
    fingerprint: u64,
    why: String,
    /// The thresholds file in force does not fit it: tried again when another file is
    /// applied.
    thresholds_misfit: bool,
}

/// What one reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// `task/version` now served that was not before.
    pub loaded: Vec<String>,
    /// `task/version: why`, for bundles refused by this reload.
    pub refused: Vec<String>,
    /// `task/version: why`, for every version that should be served and is not after this
    /// reload, refused now or before (and not tried again: its folder has not changed).
    pub failed: Vec<String>,
    /// `task: problem` when the registry cannot plainly say which version is live: `LIVE`
    /// missing or unusable (the version then comes from the log), or an error (nothing is
    /// switched).
    pub registry: Vec<String>,
    /// `applied` or `refused: why` when the thresholds file changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<String>,
    /// The models served after the reload, `task/version`.
    pub serving: Vec<String>,
}

const TASKS: [Task; 2] = [Task::Propensity, Task::Churn];

impl Reloader {
    pub fn new(registry: Registry, thresholds_path: Option<PathBuf>, pool: PoolConfig) -> Self {
        Reloader {
            registry,
            thresholds_path,
            pool,
            drift_window: crate::drift::DRIFT_WINDOW,
            memory: Mutex::default(),
        }
    }

    /// Drift statistics of the models it loads cover `window` (default
    /// [`DRIFT_WINDOW`](crate::drift::DRIFT_WINDOW)).
    pub fn with_drift_window(mut self, window: Duration) -> Self {
        self.drift_window = window;
        self
    }

    /// Brings `state` up to date with the registry and the thresholds file, trying again
    /// every version that failed before (what `POST /admin/reload` runs). Blocking.
    /// Concurrent calls run one after the other.
    pub fn reload_once(&self, state: &AppState) -> ReloadReport {
        self.reload(state, true)
    }

    /// What [`Reloader::watch`] runs: as [`Reloader::reload_once`], but a version that
    /// failed is tried again only when its folder changed (or, for a version the
    /// thresholds file did not fit, when another file is applied).
    pub fn reload_scheduled(&self, state: &AppState) -> ReloadReport {
        self.reload(state, false)
    }

    fn reload(&self, state: &AppState, retry_failed: bool) -> ReloadReport {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = ReloadReport::default();
        // Thresholds first, so that a new model starts with the thresholds in force.
        self.reload_thresholds(state, &mut memory, &mut report);
        for task in TASKS {
            self.reload_task(state, task, retry_failed, &mut memory, &mut report);
        }
        report.failed = memory
            .failed
            .iter()
            .map(|(name, failure)| format!("{name}: {}", failure.why))
            .collect();
        report.serving = state
            .served()
            .models()
            .map(|m| format!("{}/{}", m.model.task().as_str(), m.model.version()))
            .collect();
        if state.served().is_empty() {
            state.set_not_ready_reason(format!(
                "no loadable bundle in {} (looked for <task>/<version>/ of propensity and churn)",
                self.registry.root().display()
            ));
        }
        report
    }

    /// The version `task` should serve, or `None` (nothing to do); a problem with `LIVE`
    /// is logged (when it changed) and reported.
    fn wanted_version(
        &self,
        state: &AppState,
        task: Task,
        memory: &mut Memory,
        report: &mut ReloadReport,
    ) -> Option<String> {
        let name = task.as_str();
        let (wanted, problem) = match self.registry.served_status(task) {
            Ok(status) => {
                if let Some(problem) = &status.problem
                    && memory.registry_problems.get(name) != Some(problem)
                {
                    tracing::warn!(
                        task = name,
                        version = status.version.as_deref().unwrap_or(""),
                        problem = %problem,
                        "LIVE cannot be used: serving the live version the registry's log names"
                    );
                }
                (status.version, status.problem)
            }
            Err(e) => {
                let served = state.served();
                let keeps = served.get(task).map_or_else(
                    || "nothing is served for it".to_owned(),
                    |m| format!("{name}/{} keeps serving", m.model.version()),
                );
                let problem = format!("cannot tell the live version: {e}; {keeps}");
                if memory.registry_problems.get(name) != Some(&problem) {
                    tracing::error!(task = name, error = %e, "cannot tell the live version; what is served keeps serving");
                    state
                        .metrics()
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                (None, Some(problem))
            }
        };
        match problem {
            Some(problem) => {
                report.registry.push(format!("{name}: {problem}"));
                memory.registry_problems.insert(name, problem);
            }
            None => {
                memory.registry_problems.remove(name);
            }
        }
        wanted
    }

    fn reload_task(
        &self,
        state: &AppState,
        task: Task,
        retry_failed: bool,
        memory: &mut Memory,
        report: &mut ReloadReport,
    ) {
        let Some(wanted) = self.wanted_version(state, task, memory, report) else {
            return;
        };
        let name = format!("{}/{wanted}", task.as_str());
        // Only the version wanted now is worth reporting.
        let prefix = format!("{}/", task.as_str());
        memory
            .failed
            .retain(|failed, _| !failed.starts_with(&prefix) || *failed == name);
        let served = state.served();
        if served
            .get(task)
            .is_some_and(|m| m.model.version() == wanted)
        {
            memory.failed.remove(&name);
            return;
        }
        let fingerprint = folder_fingerprint(&self.registry.task_dir(task).join(&wanted));
        if !retry_failed
            && memory
                .failed
                .get(&name)
                .is_some_and(|f| f.fingerprint == fingerprint)
        {
            return;
        }
        // Err((why, whether the thresholds file in force is what does not fit)).
        let loaded = self
            .registry
            .load(task, &wanted)
            .map_err(|e| (e.to_string(), false))
            .and_then(|bundle| {
                if !bundle.has_model_digest() {
                    tracing::warn!(
                        task = task.as_str(),
                        version = %wanted,
                        "the bundle's manifest has no model_sha256 (made before bundles stored one): model.onnx is not checked"
                    );
                }
                LoadedModel::load(bundle, self.pool)
                    .map(|model| model.with_drift_window(self.drift_window))
                    .map_err(|e| (e.to_string(), false))
            })
            .and_then(|model| {
                // Swapped in only if the thresholds file in force fits it.
                state.update(|s| {
                    s.with_model(Arc::new(model)).map_err(|e| {
                        (
                            format!("the thresholds file in force does not fit it: {e}"),
                            true,
                        )
                    })
                })
            });
        match loaded {
            Ok(()) => {
                memory.failed.remove(&name);
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task = task.as_str(), version = %wanted, "serving model");
                report.loaded.push(name);
            }
            Err((error, thresholds_misfit)) => {
                // The same failure of the same folder (an explicit reload trying it again)
                // is reported, not logged and counted again.
                let repeated = memory
                    .failed
                    .get(&name)
                    .is_some_and(|f| f.fingerprint == fingerprint && f.why == error);
                if !repeated {
                    tracing::error!(
                        task = task.as_str(),
                        version = %wanted,
                        %error,
                        "bundle refused; the model already served (if any) keeps serving"
                    );
                    state
                        .metrics()
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                report.refused.push(format!("{name}: {error}"));
                memory.failed.insert(
                    name,
                    Failure {
                        fingerprint,
                        why: error,
                        thresholds_misfit,
                    },
                );
            }
        }
    }

    fn reload_thresholds(&self, state: &AppState, memory: &mut Memory, report: &mut ReloadReport) {
        let Some(path) = &self.thresholds_path else {
            return;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                let seen = format!("\0unreadable: {e}");
                if memory.thresholds_seen.as_deref() != Some(seen.as_str()) {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the thresholds file; the thresholds in force stay");
                    state
                        .metrics()
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    report.thresholds = Some(format!("refused: {}: {e}", path.display()));
                    memory.thresholds_seen = Some(seen);
                }
                return;
            }
        };
        if memory.thresholds_seen.as_deref() == Some(text.as_str()) {
            return;
        }
        let applied = ThresholdsFile::parse(&text)
            .and_then(|file| state.update(|served| served.with_thresholds(file)));
        match applied {
            Ok(()) => {
                // A version refused because the previous file did not fit it gets another
                // chance under this one.
                memory.failed.retain(|_, f| !f.thresholds_misfit);
                tracing::info!(path = %path.display(), "thresholds file applied");
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
                report.thresholds = Some("applied".into());
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "thresholds file refused; the thresholds in force stay");
                state
                    .metrics()
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                report.thresholds = Some(format!("refused: {}: {error}", path.display()));
            }
        }
        memory.thresholds_seen = Some(text);
    }

    /// Reloads ([`Reloader::reload_scheduled`]) every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, state: AppState, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reloader = Arc::clone(&self);
            let state = state.clone();
            if let Err(e) =
                tokio::task::spawn_blocking(move || reloader.reload_scheduled(&state)).await
            {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    }
}

/// A fingerprint of a bundle folder: its entries' names, sizes and modification times.
/// A copy in progress changes it; an unreadable folder has a fingerprint of its own.
fn folder_fingerprint(dir: &Path) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    let mut entries: Vec<(std::ffi::OsString, u64, u128)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|entry| {
                let (len, modified) = entry.metadata().map_or((u64::MAX, 0), |m| {
                    let modified = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    (m.len(), modified)
                });
                (entry.file_name(), len, modified)
            })
            .collect(),
        Err(e) => {
            e.kind().hash(&mut hasher);
            Vec::new()
        }
    };
    entries.sort();
    entries.hash(&mut hasher);
    hasher.finish()
}
