//! Hot reload: picks up new bundle versions in the registry and changes to the thresholds
//! file without a restart and without a failed request.
//!
//! [`Reloader::reload_once`] (blocking; run it on the blocking pool) looks at the version
//! each task should serve ([`Registry::served`]: the live one, named by `<task>/LIVE`, which
//! promote and revert replace atomically; the newest complete version when there was never
//! a promotion) and at the thresholds file. A version that differs from the one served is
//! loaded in full (checked bundle, ONNX Runtime sessions) before it is swapped in as a new
//! [`Served`](crate::state::Served) snapshot; requests in flight finish on the old one. A
//! bundle that fails to load is logged and refused, and the model already served keeps
//! serving; the refused version is not retried (a new version is). A version the thresholds
//! file in force does not fit (thresholds by capacity, a bundle without held-out
//! predictions) is refused too, until a new thresholds file is applied. A
//! thresholds file that does not parse, check or fit a served model is refused the same
//! way, until its content changes.
//! [`Reloader::watch`] runs it every interval; `POST /admin/reload` runs it at once.

use std::collections::HashSet;
use std::path::PathBuf;
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
    /// `task/version` of bundles refused: not retried.
    refused: HashSet<String>,
    /// `task/version` of bundles the thresholds file in force does not fit: retried when
    /// another file is applied.
    misfits: HashSet<String>,
    /// The thresholds file's content last looked at (applied or refused).
    thresholds_seen: Option<String>,
}

/// What one reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// `task/version` now served that was not before.
    pub loaded: Vec<String>,
    /// `task/version: why`, for bundles refused by this reload.
    pub refused: Vec<String>,
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

    /// Brings `state` up to date with the registry and the thresholds file. Blocking.
    /// Concurrent calls run one after the other.
    pub fn reload_once(&self, state: &AppState) -> ReloadReport {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = ReloadReport::default();
        // Thresholds first, so that a new model starts with the thresholds in force.
        self.reload_thresholds(state, &mut memory, &mut report);
        for task in TASKS {
            self.reload_task(state, task, &mut memory, &mut report);
        }
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

    fn reload_task(
        &self,
        state: &AppState,
        task: Task,
        memory: &mut Memory,
        report: &mut ReloadReport,
    ) {
        let wanted = match self.registry.served(task) {
            Ok(Some(version)) => version,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(task = task.as_str(), error = %e, "cannot list the registry");
                state
                    .metrics()
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let served = state.served();
        if served
            .get(task)
            .is_some_and(|m| m.model.version() == wanted)
        {
            return;
        }
        let name = format!("{}/{wanted}", task.as_str());
        if memory.refused.contains(&name) || memory.misfits.contains(&name) {
            return;
        }
        // Err((why, whether the thresholds file in force is what does not fit)).
        let loaded = self
            .registry
            .load(task, &wanted)
            .map_err(|e| (e.to_string(), false))
            .and_then(|bundle| {
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
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task = task.as_str(), version = %wanted, "serving model");
                report.loaded.push(name);
            }
            Err((error, thresholds_misfit)) => {
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
                report.refused.push(format!("{name}: {error}"));
                if thresholds_misfit {
                    memory.misfits.insert(name);
                } else {
                    memory.refused.insert(name);
                }
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
                memory.misfits.clear();
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

    /// Reloads every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, state: AppState, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reloader = Arc::clone(&self);
            let state = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reloader.reload_once(&state)).await
            {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    }
}
