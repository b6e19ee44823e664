//! Hot reload: picks up new models and bundle versions in the registry and changes to the
//! thresholds and routing files without a restart and without a failed request.
//!
//! [`Reloader::reload_once`] (blocking; run it on the blocking pool) looks at the version
//! each model of the registry ([`Registry::models`]) should serve
//! ([`Registry::served_status`]: the live one, named by `<model>/LIVE`, which promote and
//! revert replace atomically; the newest complete version
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
//! way, until its content changes. The routing file ([`crate::routing`]) is read after the
//! models, so a table and the segment models it names can arrive together; one that does
//! not parse or fit the models served is refused, and tried again when its content or the
//! models served change. Every report lists the versions that should be served and are not,
//! with the reason ([`ReloadReport::failed`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use models::bundle::{ModelName, Registry};
use serde::Serialize;

use crate::model::LoadedModel;
use crate::pool::PoolConfig;
use crate::routing::RoutingFile;
use crate::state::AppState;
use models::thresholds_file::ThresholdsFile;

/// Where models and thresholds come from, and what was refused before.
#[derive(Debug)]
pub struct Reloader {
    registry: Registry,
    /// The registry on object storage that `registry` mirrors, when it is one.
    remote: Option<models::bundle::RemoteRegistry>,
    thresholds_path: Option<PathBuf>,
    routing: Option<RoutingSource>,
    pool: PoolConfig,
    drift_window: Duration,
    memory: Mutex<Memory>,
}

/// Where the routing file is read from.
#[derive(Debug, Clone)]
pub struct RoutingSource {
    pub path: PathBuf,
    /// A missing file is an error (it was asked for by name); otherwise (the registry's
    /// `routing.toml`, looked for by default) a missing file is no routing.
    pub required: bool,
}

#[derive(Debug, Default)]
struct Memory {
    /// `model/version` of bundles that failed to load or to fit, with why.
    failed: BTreeMap<String, Failure>,
    /// What was last logged about each model's `LIVE` (a warning or an error), so that the
    /// scheduled reload logs it when it changes, not at every tick.
    registry_problems: HashMap<ModelName, String>,
    /// The thresholds file's content last looked at (applied or refused).
    thresholds_seen: Option<String>,
    /// The routing file last looked at.
    routing_seen: Option<RoutingSeen>,
}

/// The routing file's content last looked at, the models served then (`model/version`) and
/// whether it was applied: a file refused because a model it names was not served yet is
/// tried again once the models change.
#[derive(Debug, PartialEq)]
struct RoutingSeen {
    text: String,
    models: Vec<String>,
    applied: bool,
}

/// A version that failed.
#[derive(Debug)]
struct Failure {
    /// [`folder_fingerprint`] of its folder when it failed: the scheduled reload tries it
    /// again only once this changes.
    fingerprint: u64,
    why: String,
    /// The thresholds or routing file in force does not fit it: tried again when another
    /// file is applied.
    thresholds_misfit: bool,
}

/// What one reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// `model/version` now served that was not before.
    pub loaded: Vec<String>,
    /// `model/version: why`, for bundles refused by this reload.
    pub refused: Vec<String>,
    /// `model/version: why`, for every version that should be served and is not after this
    /// reload, refused now or before (and not tried again: its folder has not changed).
    pub failed: Vec<String>,
    /// `model: problem` when the registry cannot plainly say which version is live: `LIVE`
    /// missing or unusable (the version then comes from the log), or an error (nothing is
    /// switched).
    pub registry: Vec<String>,
    /// `applied` or `refused: why` when the thresholds file changed; `applied` names the
    /// sections of models not served, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<String>,
    /// `applied`, `removed` or `refused: why` when the routing file changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// The models served after the reload, `model/version`.
    pub serving: Vec<String>,
}

impl Reloader {
    pub fn new(registry: Registry, thresholds_path: Option<PathBuf>, pool: PoolConfig) -> Self {
        Reloader {
            registry,
            remote: None,
            thresholds_path,
            routing: None,
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

    /// Mirrors `remote` (a registry on object storage) into the registry folder before
    /// every scheduled look, so a promotion there is served within the reload interval.
    pub fn with_remote(mut self, remote: models::bundle::RemoteRegistry) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The registry on object storage the folder mirrors, when it is one.
    pub fn remote(&self) -> Option<&models::bundle::RemoteRegistry> {
        self.remote.as_ref()
    }

    /// Reads the routing table from `source` (see [`crate::routing`]).
    pub fn with_routing(mut self, source: RoutingSource) -> Self {
        self.routing = Some(source);
        self
    }

    /// Brings `state` up to date with the registry, the thresholds and routing files, trying again
    /// every version that failed before (what `POST /admin/reload` runs). Blocking.
    /// Concurrent calls run one after the other.
    /// The registry models come from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The thresholds file, when the server has one.
    pub fn thresholds_path(&self) -> Option<&std::path::Path> {
        self.thresholds_path.as_deref()
    }

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
        match self.registry.models() {
            Ok(models) => {
                for model in models {
                    self.reload_model(state, &model, retry_failed, &mut memory, &mut report);
                }
            }
            Err(e) => {
                let problem = format!("cannot list the models: {e}; what is served keeps serving");
                tracing::error!(error = %e, "cannot list the registry's models");
                report.registry.push(problem);
            }
        }
        self.reload_routing(state, &mut memory, &mut report);
        report.failed = memory
            .failed
            .iter()
            .map(|(name, failure)| format!("{name}: {}", failure.why))
            .collect();
        report.serving = state
            .served()
            .models()
            .map(|m| format!("{}/{}", m.model.name(), m.model.version()))
            .collect();
        if state.served().is_empty() {
            state.set_not_ready_reason(format!(
                "no loadable bundle in {} (looked for <model>/<version>/)",
                self.registry.root().display()
            ));
        }
        state.set_first_load_done();
        report
    }

    /// The version `model` should serve, or `None` (nothing to do); a problem with `LIVE`
    /// is logged (when it changed) and reported.
    fn wanted_version(
        &self,
        state: &AppState,
        model: &ModelName,
        memory: &mut Memory,
        report: &mut ReloadReport,
    ) -> Option<String> {
        let name = model.as_str();
        let (wanted, problem) = match self.registry.served_status(model) {
            Ok(status) => {
                if let Some(problem) = &status.problem
                    && memory.registry_problems.get(name) != Some(problem)
                {
                    tracing::warn!(
                        model = name,
                        version = status.version.as_deref().unwrap_or(""),
                        problem = %problem,
                        "LIVE cannot be used: serving the live version the registry's log names"
                    );
                }
                (status.version, status.problem)
            }
            Err(e) => {
                let served = state.served();
                let keeps = served.get(name).map_or_else(
                    || "nothing is served for it".to_owned(),
                    |m| format!("{name}/{} keeps serving", m.model.version()),
                );
                let problem = format!("cannot tell the live version: {e}; {keeps}");
                if memory.registry_problems.get(name) != Some(&problem) {
                    tracing::error!(model = name, error = %e, "cannot tell the live version; what is served keeps serving");
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
                memory.registry_problems.insert(model.clone(), problem);
            }
            None => {
                memory.registry_problems.remove(name);
            }
        }
        wanted
    }

    fn reload_model(
        &self,
        state: &AppState,
        model: &ModelName,
        retry_failed: bool,
        memory: &mut Memory,
        report: &mut ReloadReport,
    ) {
        let Some(wanted) = self.wanted_version(state, model, memory, report) else {
            return;
        };
        let name = format!("{model}/{wanted}");
        // Only the version wanted now is worth reporting.
        let prefix = format!("{model}/");
        memory
            .failed
            .retain(|failed, _| !failed.starts_with(&prefix) || *failed == name);
        let served = state.served();
        if served
            .get(model.as_str())
            .is_some_and(|m| m.model.version() == wanted)
        {
            memory.failed.remove(&name);
            return;
        }
        let fingerprint = folder_fingerprint(&self.registry.model_dir(model).join(&wanted));
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
            .load(model, &wanted)
            .map_err(|e| (e.to_string(), false))
            .and_then(|bundle| {
                if !bundle.has_model_digest() {
                    tracing::warn!(
                        model = model.as_str(),
                        version = %wanted,
                        "the bundle's manifest has no model_sha256 (made before bundles stored one): model.onnx is not checked"
                    );
                }
                LoadedModel::load(bundle, self.pool)
                    .map(|model| model.with_drift_window(self.drift_window))
                    .map_err(|e| (e.to_string(), false))
            })
            .and_then(|model| {
                // Swapped in only if the thresholds and routing files in force fit it.
                state.update(|s| {
                    s.with_model(Arc::new(model))
                        .map_err(|e| (format!("the files in force do not fit it: {e}"), true))
                })
            });
        match loaded {
            Ok(()) => {
                memory.failed.remove(&name);
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = model.as_str(), version = %wanted, "serving model");
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
                        model = model.as_str(),
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
                let served = state.served();
                let unserved = served
                    .thresholds_file()
                    .sections_not_in(served.models().map(|m| m.model.name().as_str()));
                if unserved.is_empty() {
                    tracing::info!(path = %path.display(), "thresholds file applied");
                    report.thresholds = Some("applied".into());
                } else {
                    let unserved = unserved.join(", ");
                    tracing::warn!(path = %path.display(), sections = %unserved, "thresholds file applied; some sections name no model served");
                    report.thresholds = Some(format!(
                        "applied; sections naming no model served (kept for when one is): {unserved}"
                    ));
                }
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
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

    fn reload_routing(&self, state: &AppState, memory: &mut Memory, report: &mut ReloadReport) {
        let Some(source) = &self.routing else {
            return;
        };
        let path = &source.path;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !source.required => None,
            Err(e) => {
                let seen = RoutingSeen {
                    text: format!("\0unreadable: {e}"),
                    models: Vec::new(),
                    applied: false,
                };
                if memory.routing_seen.as_ref() != Some(&seen) {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the routing file; the routing in force stays");
                    state
                        .metrics()
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    report.routing = Some(format!("refused: {}: {e}", path.display()));
                    memory.routing_seen = Some(seen);
                }
                return;
            }
        };
        let models: Vec<String> = state
            .served()
            .models()
            .map(|m| format!("{}/{}", m.model.name(), m.model.version()))
            .collect();
        let mut seen = RoutingSeen {
            text: text.clone().unwrap_or_default(),
            models,
            applied: false,
        };
        if memory.routing_seen.as_ref().is_some_and(|last| {
            last.text == seen.text && (last.applied || last.models == seen.models)
        }) {
            return;
        }
        let Some(text) = text else {
            // The default file is gone: no routing.
            if !state.served().routing().is_empty() {
                let _ = state.update(|s| s.with_routing(RoutingFile::default()));
                tracing::info!(path = %path.display(), "routing file removed; every route scores with its own model");
                report.routing = Some("removed".into());
            }
            seen.applied = true;
            memory.routing_seen = Some(seen);
            return;
        };
        let applied = RoutingFile::parse(&text)
            .and_then(|file| state.update(|served| served.with_routing(file)));
        match applied {
            Ok(()) => {
                tracing::info!(path = %path.display(), "routing file applied");
                // A version refused because the previous table did not fit it gets another
                // chance under this one (at the next reload: the models were looked at first).
                memory.failed.retain(|_, f| !f.thresholds_misfit);
                state.metrics().reloads.fetch_add(1, Ordering::Relaxed);
                report.routing = Some("applied".into());
                seen.applied = true;
            }
            Err(error) => {
                // The same refusal is not logged again when only the models changed.
                let repeated = memory
                    .routing_seen
                    .as_ref()
                    .is_some_and(|last| last.text == seen.text);
                if !repeated {
                    tracing::error!(path = %path.display(), %error, "routing file refused; the routing in force stays");
                    state
                        .metrics()
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                report.routing = Some(format!("refused: {}: {error}", path.display()));
            }
        }
        memory.routing_seen = Some(seen);
    }

    /// Mirrors the registry on object storage into the registry folder, when there is one,
    /// in this process's turn (never between a console's change and its upload). Blocking:
    /// on the blocking pool of a runtime.
    fn mirror(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let _turn = crate::tuning::registry_turn();
        match tokio::runtime::Handle::current().block_on(remote.pull(self.registry.root())) {
            Ok(report) if !report.is_empty() => tracing::info!(
                bundles = ?report.bundles,
                live = ?report.live,
                history = report.history,
                "registry mirrored from object storage"
            ),
            Ok(_) => {}
            // What is served stays; the next tick tries again.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registry on object storage")
            }
        }
    }

    /// Reloads ([`Reloader::reload_scheduled`]) every `interval` until the process ends.
    pub async fn watch(self: Arc<Self>, state: AppState, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let reloader = Arc::clone(&self);
            let state = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || {
                reloader.mirror();
                reloader.reload_scheduled(&state)
            })
            .await
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
