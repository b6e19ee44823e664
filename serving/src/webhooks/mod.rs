//! Webhooks: the CRM hears the moment a lead turns hot.
//!
//! The entity store writes a message for every transition of a kept score (a lead turned
//! sales-ready, cooled or changed grade; a customer crossed its churn threshold) in the
//! same commit as the score ([`store::Outbox`]). This module delivers them:
//!
//! * [`endpoints`]: the subscriptions, `[[webhooks]]` tables of the configuration file,
//!   read again at the reload interval and edited in place by the admin routes;
//! * [`deliver`]: the delivery worker (one lane per entity and endpoint, retries on
//!   a schedule with jitter, `Retry-After`, dead letters, 410 disables the endpoint);
//! * [`sign`]: Standard Webhooks 1.0 signatures;
//! * [`guard`]: no delivery to loopback, private or link-local addresses unless allowed;
//! * [`routes`]: the admin routes (list, add, disable, enable, rotate, dead letters, replay).
//!
//! [`Webhooks`] holds what they share: the endpoints in force, the delivery settings and
//! the per-endpoint metrics.

pub mod deliver;
pub mod endpoints;
pub mod guard;
pub mod routes;
pub mod sign;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use store::Delivery;

use crate::metrics::{Histogram, label_value};
use endpoints::{Edit, Endpoint, WebhookConfig};

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The wait before each retry: the n-th after the n-th failed attempt. Once it is
    /// exhausted, the message is a dead letter. Standard Webhooks' schedule by default.
    pub schedule: Vec<Duration>,
    /// Each wait is drawn from `[1 - jitter, 1 + jitter]` times the schedule's.
    pub jitter: f64,
    /// Time for one attempt: connection, request and answer.
    pub timeout: Duration,
    /// How long the previous secret still signs after a rotation.
    pub rotation_overlap: Duration,
    /// Attempts in flight at once per endpoint (each for another entity).
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let s = Duration::from_secs;
        DeliverySettings {
            // Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            schedule: vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
            jitter: 0.2,
            timeout: s(15),
            rotation_overlap: s(24 * 3600),
            concurrency: 16,
        }
    }
}

/// Delivery latency buckets, seconds: from the transition's commit to the receiver's 2xx.
const DELIVERY_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 1800.0, 7200.0, 36_000.0,
];

/// What one endpoint's deliveries came to.
#[derive(Debug)]
pub struct EndpointMetrics {
    pub delivered: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Attempts that failed (timeouts, refused connections, non-2xx answers).
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub latency: Histogram,
    /// Deliveries pending now.
    pub pending: AtomicU64,
}

impl Default for EndpointMetrics {
    fn default() -> Self {
        EndpointMetrics {
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            latency: Histogram::new(&DELIVERY_BOUNDS),
            pending: AtomicU64::new(0),
        }
    }
}

/// The webhooks' shared state.
#[derive(Debug)]
pub struct Webhooks {
    /// The configuration file the `[[webhooks]]` tables are in (`None`: the server was
    /// started without one; the admin routes cannot add endpoints).
    config_path: Option<PathBuf>,
    settings: DeliverySettings,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// The file's text last looked at.
    seen: Mutex<Option<String>>,
    /// One edit of the file at a time.
    edits: tokio::sync::Mutex<()>,
    /// Wakes the worker: endpoints changed, dead letters replayed.
    wake: tokio::sync::Notify,
    /// Deliveries replayed, for the worker to take.
    replayed: Mutex<Vec<Delivery>>,
    metrics: Mutex<BTreeMap<String, Arc<EndpointMetrics>>>,
    /// The store the endpoints in force are given to (it files their deliveries).
    store: std::sync::OnceLock<Arc<dyn store::EntityStore>>,
}

impl Webhooks {
    /// The endpoints of `tables` (from `config_path`, read at start) in force.
    pub fn new(
        config_path: Option<PathBuf>,
        tables: &[WebhookConfig],
        settings: DeliverySettings,
    ) -> Result<Self, String> {
        let origin = origin(config_path.as_deref());
        let built = endpoints::endpoints(tables, settings.timeout, &origin)?;
        let seen = match &config_path {
            Some(p) => std::fs::read_to_string(p).ok(),
            None => None,
        };
        Ok(Webhooks {
            config_path,
            settings,
            endpoints: RwLock::new(Arc::new(built)),
            seen: Mutex::new(seen),
            edits: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            replayed: Mutex::new(Vec::new()),
            metrics: Mutex::new(BTreeMap::new()),
            store: std::sync::OnceLock::new(),
        })
    }

    /// Files the messages of `store`'s later commits for the endpoints in force, now and
    /// after every change of them.
    pub fn attach(&self, store: Arc<dyn store::EntityStore>) {
        if self.store.set(store).is_ok() {
            self.filters_changed();
        }
    }

    /// Tells the store which enabled endpoints want which messages.
    fn filters_changed(&self) {
        if let Some(store) = self.store.get() {
            let filters = self
                .endpoints()
                .iter()
                .filter(|e| !e.config.disabled)
                .map(|e| e.filter())
                .collect();
            store.set_endpoints(filters);
        }
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// The endpoints in force.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        Arc::clone(
            &self
                .endpoints
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The endpoint filed under `key`.
    pub fn endpoint(&self, key: &str) -> Option<Arc<Endpoint>> {
        self.endpoints().iter().find(|e| e.key() == key).cloned()
    }

    /// Reads the configuration file again; when its text changed, its endpoints are put in
    /// force (or refused, and those in force stay). Returns what happened, when anything did.
    pub fn reload(&self) -> Option<Result<usize, String>> {
        let path = self.config_path.as_ref()?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                let marker = format!("\0unreadable: {e}");
                if seen.as_deref() == Some(marker.as_str()) {
                    return None;
                }
                *seen = Some(marker);
                return Some(Err(format!("{}: {e}", path.display())));
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.as_deref() == Some(text.as_str()) {
                return None;
            }
            *seen = Some(text.clone());
        }
        Some(self.apply(&text))
    }

    fn apply(&self, text: &str) -> Result<usize, String> {
        let origin = origin(self.config_path.as_deref());
        let tables = endpoints::parse_section(text, &origin)?;
        let built = endpoints::endpoints(&tables, self.settings.timeout, &origin)?;
        let n = built.len();
        *self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(built);
        self.filters_changed();
        self.wake.notify_one();
        Ok(n)
    }

    /// Changes the configuration file (see [`endpoints::edit_file`]) and puts the result in
    /// force at once.
    pub async fn edit(&self, edit: Edit) -> Result<(), String> {
        let Some(path) = self.config_path.clone() else {
            return Err(
                "the server was started without a configuration file (--config): \
                 webhook endpoints are kept there, so they cannot be changed through the API"
                    .into(),
            );
        };
        let _one_at_a_time = self.edits.lock().await;
        let text = tokio::task::spawn_blocking(move || endpoints::edit_file(&path, &edit))
            .await
            .map_err(|e| e.to_string())??;
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(text.clone());
        self.apply(&text).map(|_| ())
    }

    /// Stops deliveries to the endpoint `key` at once (it answered 410 Gone), then says so
    /// in the configuration file. Should the file not be writable, the endpoint stays
    /// disabled until the file changes.
    pub fn disable_gone(self: &Arc<Self>, key: &str) {
        let Some(endpoint) = self.endpoint(key) else {
            return;
        };
        if endpoint.config.disabled {
            return;
        }
        let reason = format!(
            "answered 410 Gone at {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        {
            let mut in_force = self
                .endpoints
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut next: Vec<Arc<Endpoint>> = in_force.as_ref().clone();
            for e in &mut next {
                if e.key() == key {
                    let mut off = e.as_ref().clone();
                    off.config.disabled = true;
                    off.config.disabled_reason = Some(reason.clone());
                    *e = Arc::new(off);
                }
            }
            *in_force = Arc::new(next);
        }
        self.filters_changed();
        tracing::warn!(endpoint = %key, "the webhook endpoint answered 410 Gone: disabled");
        let hub = Arc::clone(self);
        let edit = Edit::SetDisabled {
            key: key.to_owned(),
            disabled: true,
            reason: Some(reason),
        };
        let key = key.to_owned();
        tokio::spawn(async move {
            if let Err(e) = hub.edit(edit).await {
                tracing::error!(endpoint = %key, error = %e, "cannot disable the webhook endpoint in the configuration file");
            }
        });
    }

    /// Hands replayed deliveries to the worker.
    pub fn replay(&self, deliveries: Vec<Delivery>) {
        self.replayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(deliveries);
        self.wake.notify_one();
    }

    fn take_replayed(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.replayed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The metrics of the endpoint filed under `key`.
    pub fn metrics(&self, key: &str) -> Arc<EndpointMetrics> {
        let mut all = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(key.to_owned()).or_default())
    }

    /// The webhook figures for `/metrics`.
    pub fn render(&self, out: &mut String) {
        let all: Vec<(String, Arc<EndpointMetrics>)> = self
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, m)| (k.clone(), Arc::clone(m)))
            .collect();
        type Counter = fn(&EndpointMetrics) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 4] = [
            (
                "leadscore_webhook_delivered_total",
                "Webhook messages the endpoint took (2xx).",
                |m| &m.delivered,
            ),
            (
                "leadscore_webhook_retried_total",
                "Failed webhook attempts scheduled again.",
                |m| &m.retried,
            ),
            (
                "leadscore_webhook_failed_attempts_total",
                "Webhook attempts that failed (timeout, connection, non-2xx answer).",
                |m| &m.failed,
            ),
            (
                "leadscore_webhook_dead_lettered_total",
                "Webhook messages moved to the dead letters (schedule exhausted).",
                |m| &m.dead_lettered,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (key, m) in &all {
                let _ = writeln!(
                    out,
                    "{name}{{endpoint=\"{}\"}} {}",
                    label_value(key),
                    get(m).load(Ordering::Relaxed)
                );
            }
        }
        let name = "leadscore_webhook_pending";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook deliveries waiting for the endpoint (the outbox depth).\n# TYPE {name} gauge"
        );
        for (key, m) in &all {
            let _ = writeln!(
                out,
                "{name}{{endpoint=\"{}\"}} {}",
                label_value(key),
                m.pending.load(Ordering::Relaxed)
            );
        }
        let name = "leadscore_webhook_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a transition's commit to the endpoint's 2xx.\n# TYPE {name} histogram"
        );
        for (key, m) in &all {
            m.latency
                .render(out, name, &format!("endpoint=\"{}\"", label_value(key)));
        }
    }
}

/// Reads the configuration file's `[[webhooks]]` again every `interval` until the process
/// ends (see [`Webhooks::reload`]).
pub fn spawn_reload(hub: Arc<Webhooks>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let hub2 = Arc::clone(&hub);
            match tokio::task::spawn_blocking(move || hub2.reload()).await {
                Ok(Some(Ok(n))) => tracing::info!(endpoints = n, "webhook endpoints applied"),
                Ok(Some(Err(e))) => {
                    tracing::error!(error = %e, "webhook endpoints refused; those in force stay")
                }
                Ok(None) | Err(_) => {}
            }
        }
    })
}

fn origin(path: Option<&std::path::Path>) -> String {
    path.map_or_else(
        || "the configuration".to_string(),
        |p| p.display().to_string(),
    )
}
