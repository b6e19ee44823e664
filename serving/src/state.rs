//! Shared server state: what is served (models, thresholds and the routing table, swapped
//! as a whole on reload), the limits and keys requests are checked against, and the metrics.
//!
//! A request takes the current [`Served`] snapshot once (an `Arc` clone under a read lock
//! held for nanoseconds) and scores with it to the end, so a reload that swaps in a new
//! snapshot never fails or mixes a request; the old models are dropped when the last
//! request using them ends.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use models::bundle::{ModelName, Thresholds};

use crate::auth::{AuthThrottle, KeySet, Scope};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::reload::Reloader;
use crate::routing::RoutingFile;
use models::thresholds_file::ThresholdsFile;

/// One model being served, with the thresholds in force for it.
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub model: Arc<LoadedModel>,
    pub thresholds: Arc<Thresholds>,
}

/// Everything scoring reads, as one immutable snapshot.
///
/// **Invariant:** the routing table in force fits the models served
/// ([`RoutingFile::check`]): every change ([`Served::with_model`], [`Served::with_routing`])
/// checks it, so a request never meets a route to a model that is not there.
#[derive(Debug, Clone, Default)]
pub struct Served {
    models: BTreeMap<ModelName, ServedModel>,
    thresholds_file: ThresholdsFile,
    routing: Arc<RoutingFile>,
}

impl Served {
    /// The model named `name`, if one is loaded.
    pub fn get(&self, name: &str) -> Option<&ServedModel> {
        self.models.get(name)
    }

    /// Models by name.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.values()
    }

    /// The names of the models served, in order, as one line (for messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.models.keys().map(ModelName::as_str).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    /// The routing table in force (empty when there is none).
    pub fn routing(&self) -> &RoutingFile {
        &self.routing
    }

    /// This snapshot with `routing` in force, if it fits the models served.
    pub fn with_routing(&self, routing: RoutingFile) -> Result<Served, String> {
        routing.check(&self.models)?;
        let mut next = self.clone();
        next.routing = Arc::new(routing);
        Ok(next)
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The thresholds file in force.
    pub fn thresholds_file(&self) -> &ThresholdsFile {
        &self.thresholds_file
    }

    /// This snapshot with `model` served under its name, under the thresholds file in
    /// force. Fails when the file's overrides do not fit the model (e.g. thresholds by
    /// capacity and a bundle without held-out predictions), or the routing table in force
    /// no longer fits once it is served (a field's kind changed, say): the message says
    /// which.
    pub fn with_model(&self, model: Arc<LoadedModel>) -> Result<Served, String> {
        let mut next = self.clone();
        let thresholds = Arc::new(next.thresholds_file.apply(
            model.name().as_str(),
            &model.manifest().thresholds,
            model.held_out(),
        )?);
        next.models
            .insert(model.name().clone(), ServedModel { model, thresholds });
        next.routing
            .check(&next.models)
            .map_err(|e| format!("the routing table in force would not fit it: {e}"))?;
        Ok(next)
    }

    /// This snapshot with `file`'s thresholds in force. Fails, naming the model, when an
    /// override does not fit a loaded bundle (e.g. grade bands overridden only in part).
    pub fn with_thresholds(&self, file: ThresholdsFile) -> Result<Served, String> {
        let mut next = self.clone();
        for served in next.models.values_mut() {
            let t = file.apply(
                served.model.name().as_str(),
                &served.model.manifest().thresholds,
                served.model.held_out(),
            )?;
            served.thresholds = Arc::new(t);
        }
        next.thresholds_file = file;
        Ok(next)
    }
}

/// Request limits and behaviour, fixed at start.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Most entities in one batch.
    pub max_batch: usize,
    /// Most reasons of each sign in a response.
    pub max_reasons: usize,
    /// How far in the future a timestamp may be (clock skew).
    pub allowed_skew: Duration,
    /// Requests of at most this many entities run inline on the async worker (see
    /// [`SessionPool::with_session`](crate::pool::SessionPool::with_session)); 0 sends
    /// every request to the blocking pool.
    pub inline_max_entities: usize,
    /// Time to receive a request's whole body once its headers are in (and its key
    /// checked); then 408 and the connection is closed.
    pub body_timeout: Duration,
    /// Requests with a missing or wrong key an address may send within
    /// `auth_failure_window` before it is answered 429 for the rest of the window; 0 turns
    /// this off.
    pub max_auth_failures: u32,
    pub auth_failure_window: Duration,
    /// `/metrics` without a key (for a scraper inside the network boundary); otherwise it
    /// needs a client key like the score routes.
    pub metrics_public: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            max_reasons: 3,
            allowed_skew: Duration::from_secs(300),
            inline_max_entities: 1,
            body_timeout: Duration::from_secs(30),
            max_auth_failures: 30,
            auth_failure_window: Duration::from_secs(60),
            metrics_public: false,
        }
    }
}

#[derive(Debug)]
struct Inner {
    served: RwLock<Arc<Served>>,
    /// Why nothing is served yet, while nothing is.
    not_ready: RwLock<Option<String>>,
    limits: Limits,
    keys: KeySet,
    throttle: AuthThrottle,
    metrics: Metrics,
    reloader: OnceLock<Arc<Reloader>>,
    /// The reloader's first pass over the registry has ended (every model it found is
    /// loaded or failed): until then `/readyz` does not say ready, so that a balancer never
    /// sends a request for a model still loading.
    first_load_done: std::sync::atomic::AtomicBool,
    store: OnceLock<Arc<dyn store::EntityStore>>,
    export_dir: OnceLock<std::path::PathBuf>,
    store_metrics: crate::metrics::StoreMetrics,
    webhooks: OnceLock<Arc<crate::webhooks::Webhooks>>,
    /// The last readiness probe of the store: when, and whether it answered.
    store_probe: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// How long readiness waits for the entity store to answer.
const STORE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a readiness probe's answer stands.
const STORE_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// State shared by all handlers; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// A state serving nothing yet, for `reason`.
    pub fn new(limits: Limits, keys: KeySet, reason: impl Into<String>) -> Self {
        AppState {
            inner: Arc::new(Inner {
                served: RwLock::new(Arc::new(Served::default())),
                not_ready: RwLock::new(Some(reason.into())),
                throttle: AuthThrottle::new(limits.max_auth_failures, limits.auth_failure_window),
                limits,
                keys,
                metrics: Metrics::default(),
                reloader: OnceLock::new(),
                first_load_done: std::sync::atomic::AtomicBool::new(false),
                store: OnceLock::new(),
                export_dir: OnceLock::new(),
                store_metrics: Default::default(),
                webhooks: OnceLock::new(),
                store_probe: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn keys(&self) -> &KeySet {
        &self.inner.keys
    }

    /// Checks the request's key for `scope`, holding back an address that sent too many
    /// wrong keys (see [`AuthThrottle`]). `peer` is `None` for requests that came without a
    /// socket (tests through `oneshot`).
    pub fn authorize(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
        scope: Scope,
    ) -> Result<(), ApiError> {
        if !self.inner.keys.is_enabled() {
            return Ok(());
        }
        if let Some(addr) = peer {
            self.inner.throttle.admit(addr)?;
        }
        let checked = self.inner.keys.check(headers, scope);
        if let (Err(ApiError::Unauthorized { .. }), Some(addr)) = (&checked, peer) {
            self.inner.throttle.failed(addr);
        }
        checked
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// What `/admin/reload` runs; set once by whoever owns the registry.
    pub fn set_reloader(&self, reloader: Arc<Reloader>) {
        let _ = self.inner.reloader.set(reloader);
    }

    /// Keeps entities in `store` (set once, at start; without one the store routes answer
    /// [`ApiError::NoStore`]).
    pub fn set_store(&self, store: Arc<dyn store::EntityStore>) {
        let _ = self.inner.store.set(store);
    }

    /// Whether the entity store answers (readiness; `true` without a store). At most one
    /// probe a second reaches the store, however often `/readyz` is asked (it is keyless):
    /// the others share the last answer.
    pub async fn store_answers(&self) -> bool {
        let Some(store) = self.inner.store.get() else {
            return true;
        };
        let mut last = self.inner.store_probe.lock().await;
        if let Some((at, answered)) = *last
            && at.elapsed() < STORE_PROBE_EVERY
        {
            return answered;
        }
        let answered = match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the entity store does not answer");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: the entity store did not answer within 2 s");
                false
            }
        };
        *last = Some((std::time::Instant::now(), answered));
        answered
    }

    /// The entity store, or [`ApiError::NoStore`].
    pub fn store(&self) -> Result<&Arc<dyn store::EntityStore>, ApiError> {
        self.inner.store.get().ok_or(ApiError::NoStore)
    }

    /// Delivers the store's webhook messages to `hub`'s endpoints (set once, at start, with
    /// the store): starts the delivery worker.
    pub fn set_webhooks(&self, hub: Arc<crate::webhooks::Webhooks>) -> Result<(), ApiError> {
        let store = Arc::clone(self.store()?);
        if self.inner.webhooks.set(Arc::clone(&hub)).is_ok() {
            hub.attach(Arc::clone(&store));
            crate::webhooks::deliver::spawn(hub, store);
        }
        Ok(())
    }

    /// Whether any webhook endpoint is configured (then scores are computed with their
    /// reasons where a transition's message may need them).
    pub fn webhooks_active(&self) -> bool {
        self.inner
            .webhooks
            .get()
            .is_some_and(|h| !h.endpoints().is_empty())
    }

    /// The webhooks' state, when the store (and so the outbox) is kept.
    pub fn webhooks(&self) -> Result<&Arc<crate::webhooks::Webhooks>, ApiError> {
        self.inner.webhooks.get().ok_or(ApiError::NoStore)
    }

    /// Where `POST /admin/store/export` writes (set once, at start).
    pub fn set_export_dir(&self, dir: std::path::PathBuf) {
        let _ = self.inner.export_dir.set(dir);
    }

    pub fn export_dir(&self) -> Option<&std::path::Path> {
        self.inner.export_dir.get().map(std::path::PathBuf::as_path)
    }

    /// Whether an entity store is kept.
    pub fn has_store(&self) -> bool {
        self.inner.store.get().is_some()
    }

    pub fn store_metrics(&self) -> &crate::metrics::StoreMetrics {
        &self.inner.store_metrics
    }

    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.inner.reloader.get().cloned()
    }

    /// Says that the reloader's first pass over the registry has ended.
    pub fn set_first_load_done(&self) {
        self.inner
            .first_load_done
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Models are still being loaded for the first time: a reloader is attached and its
    /// first pass has not ended.
    pub fn first_load_pending(&self) -> bool {
        self.inner.reloader.get().is_some()
            && !self
                .inner
                .first_load_done
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn served(&self) -> Arc<Served> {
        Arc::clone(
            &self
                .inner
                .served
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The current snapshot, or [`ApiError::NotReady`] while nothing is served.
    pub fn ready(&self) -> Result<Arc<Served>, ApiError> {
        let served = self.served();
        if served.is_empty() {
            let reason = self
                .inner
                .not_ready
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "no models loaded".into());
            return Err(ApiError::NotReady { reason });
        }
        Ok(served)
    }

    /// Replaces the snapshot by `update(current)`; the update runs under the write lock, so
    /// concurrent updates never lose one another.
    pub fn update<E>(&self, update: impl FnOnce(&Served) -> Result<Served, E>) -> Result<(), E> {
        let mut guard = self
            .inner
            .served
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let next = update(&guard)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Says why nothing is served (shown by `/readyz` while no model is loaded).
    pub fn set_not_ready_reason(&self, reason: impl Into<String>) {
        *self
            .inner
            .not_ready
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.into());
    }
}
