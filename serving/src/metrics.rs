//! Prometheus metrics, kept in atomics (no lock on the request path) and rendered in the
//! text exposition format at `GET /metrics`.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `leadscore_http_requests_total` | `route`, `status` | requests answered |
//! | `leadscore_http_request_duration_seconds` | `route` | latency histogram, from the request reaching the router to the response leaving it |
//! | `leadscore_scored_entities_total` | `model`, `task`, `version` | entities scored |
//! | `leadscore_score` | `model`, `task`, `version` | histogram of the calibrated probabilities given |
//! | `leadscore_model_info` | `model`, `task`, `version`, `kind` | 1 for each model being served |
//! | `leadscore_reloads_total` / `leadscore_reload_failures_total` | | registry, thresholds and routing reloads that changed something / that failed |
//! | `leadscore_drift_rows` | `model`, `task`, `version` | rows scored in the drift window (the last hour by default, [`crate::drift`]) |
//! | `leadscore_feature_psi` | `model`, `task`, `version`, `feature` | population stability index against training over the window; `feature` is a numeric or history feature, or a categorical field |
//! | `leadscore_feature_missing_share` / `..._training` | `model`, `task`, `version`, `feature` | share of rows missing the feature or field, over the window / in training |
//! | `leadscore_unknown_level_share` | `model`, `task`, `version`, `field` | share of rows whose categorical level was never seen in training |
//! | `leadscore_store_events_ingested_total` / `leadscore_store_duplicate_events_total` | | events stored / events not stored again because their client id was |
//! | `leadscore_store_events_dropped_at_cap_total` | | oldest events dropped to keep an entity within the per-entity cap |
//! | `leadscore_store_score_write_failures_total` | | fresh scores answered but not kept as the latest (the store failed) |
//! | `leadscore_store_write_duration_seconds` | | time from handing a write to the store to its durable commit |
//! | `leadscore_store_entities` / `leadscore_store_events` / `leadscore_store_bytes` | | what the entity store holds, and its file size |
//! | `leadscore_sweep_duration_seconds` / `leadscore_sweep_entities` | | the last rescoring sweep's time and entities rescored |
//! | `leadscore_sweeps_total` | | sweeps completed |
//!
//! Labels never carry request content: no ids, no profile values. Feature and field names
//! come from the bundle.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use models::drift::DriftReport;

/// The routes metrics are kept for, by their axum path template; anything else is
/// `other`.
pub const ROUTES: [&str; 34] = [
    "/v1/score/{model}",
    "/v1/score/{model}/batch",
    "/v1/models",
    "/v1/thresholds/{model}",
    "/v1/drift/{model}",
    "/v1/events",
    "/v1/outcomes",
    "/v1/entities/{id}",
    "/v1/entities/{id}/score/{model}",
    "/v1/leads/top/{model}",
    "/v1/entities/{id}/timeline",
    "/v1/models/{model}/health",
    "/v1/models/{model}/versions",
    "/v1/thresholds/{model}/preview",
    "/admin/reload",
    "/admin/thresholds/{model}",
    "/admin/models/{model}/promote",
    "/admin/models/{model}/revert",
    "/admin/store/reclaim",
    "/admin/store/sweep",
    "/admin/store/export",
    "/admin/webhooks",
    "/admin/webhooks/{id}/disable",
    "/admin/webhooks/{id}/enable",
    "/admin/webhooks/{id}/rotate",
    "/admin/webhooks/{id}/dead-letters",
    "/admin/webhooks/{id}/dead-letters/replay",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/console",
    "/console/{file}",
    "other",
];

/// The statuses counted one by one; any other is counted as `other`.
const STATUSES: [u16; 15] = [
    200, 201, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 500, 503, 0,
];

/// Latency buckets, seconds.
const LATENCY_BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Probability buckets.
const SCORE_BOUNDS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// A Prometheus histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, x: f64) {
        let slot = self.bounds.partition_point(|&b| b < x);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + x).to_bits())
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The distribution of one model's probabilities.
#[derive(Debug)]
pub struct ScoreHistogram(pub Histogram);

impl Default for ScoreHistogram {
    fn default() -> Self {
        ScoreHistogram(Histogram::new(&SCORE_BOUNDS))
    }
}

impl ScoreHistogram {
    pub fn observe(&self, p: f64) {
        self.0.observe(p);
    }
}

#[derive(Debug)]
struct RouteMetrics {
    statuses: Vec<AtomicU64>,
    latency: Histogram,
}

/// What the entity store did.
#[derive(Debug)]
pub struct StoreMetrics {
    pub events_ingested: AtomicU64,
    pub duplicates: AtomicU64,
    pub dropped_at_cap: AtomicU64,
    /// Fresh scores the store failed to keep (answered, not kept as the latest).
    pub score_write_failures: AtomicU64,
    pub write_latency: Histogram,
    pub sweeps: AtomicU64,
    /// The last sweep's duration, as `f64` bits.
    pub last_sweep_seconds: AtomicU64,
    pub last_sweep_entities: AtomicU64,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            events_ingested: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dropped_at_cap: AtomicU64::new(0),
            score_write_failures: AtomicU64::new(0),
            write_latency: Histogram::new(&LATENCY_BOUNDS),
            sweeps: AtomicU64::new(0),
            last_sweep_seconds: AtomicU64::new(0f64.to_bits()),
            last_sweep_entities: AtomicU64::new(0),
        }
    }
}

impl StoreMetrics {
    /// The store's figures; `stats` is what it holds now.
    pub fn render(&self, out: &mut String, stats: Option<store::StoreStats>) {
        let counters = [
            (
                "leadscore_store_events_ingested_total",
                "Events stored.",
                &self.events_ingested,
            ),
            (
                "leadscore_store_duplicate_events_total",
                "Events not stored again because their client event id already was.",
                &self.duplicates,
            ),
            (
                "leadscore_store_events_dropped_at_cap_total",
                "Oldest events dropped to keep an entity within the per-entity cap.",
                &self.dropped_at_cap,
            ),
            (
                "leadscore_store_score_write_failures_total",
                "Fresh scores answered but not kept as the entity's latest (the store failed).",
                &self.score_write_failures,
            ),
            (
                "leadscore_sweeps_total",
                "Rescoring sweeps completed.",
                &self.sweeps,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP leadscore_store_write_duration_seconds Time from handing a write to the entity store to its durable commit.\n",
        );
        out.push_str("# TYPE leadscore_store_write_duration_seconds histogram\n");
        self.write_latency
            .render(out, "leadscore_store_write_duration_seconds", "");
        let mut gauges = vec![
            (
                "leadscore_sweep_duration_seconds",
                "Time the last rescoring sweep took.",
                f64::from_bits(self.last_sweep_seconds.load(Ordering::Relaxed)),
            ),
            (
                "leadscore_sweep_entities",
                "Entities the last rescoring sweep rescored.",
                self.last_sweep_entities.load(Ordering::Relaxed) as f64,
            ),
        ];
        if let Some(stats) = stats {
            gauges.extend([
                (
                    "leadscore_store_entities",
                    "Entities in the entity store.",
                    stats.entities as f64,
                ),
                (
                    "leadscore_store_events",
                    "Events in the entity store.",
                    stats.events as f64,
                ),
                (
                    "leadscore_store_bytes",
                    "Size of the entity store's files.",
                    stats.bytes as f64,
                ),
            ]);
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
}

/// The server's request metrics.
#[derive(Debug)]
pub struct Metrics {
    routes: Vec<RouteMetrics>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: ROUTES
                .iter()
                .map(|_| RouteMetrics {
                    statuses: STATUSES.iter().map(|_| AtomicU64::new(0)).collect(),
                    latency: Histogram::new(&LATENCY_BOUNDS),
                })
                .collect(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }
}

/// One model's figures, as the renderer needs them.
pub struct ModelFigures<'a> {
    /// The model's name.
    pub model: &'a str,
    pub task: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub scores: &'a ScoreHistogram,
    /// Drift over the window, when the bundle has a training distribution.
    pub drift: Option<DriftReport>,
}

impl ModelFigures<'_> {
    /// `model="...",task="...",version="..."` (a model's name and version are plain
    /// names, checked when the bundle was read).
    fn labels(&self) -> String {
        format!(
            "model=\"{}\",task=\"{}\",version=\"{}\"",
            label_value(self.model),
            self.task,
            label_value(self.version)
        )
    }
}

/// `text` as a Prometheus label value: backslash, double quote and newline escaped.
pub(crate) fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The drift gauges of `models`, one family after the other.
fn render_drift(out: &mut String, models: &[ModelFigures<'_>]) {
    type Gauge = fn(&DriftReport) -> Vec<(&str, Option<f64>)>;
    let families: [(&str, &str, &str, Gauge); 4] = [
        (
            "leadscore_feature_psi",
            "Population stability index of a feature or categorical field against training, over the drift window.",
            "feature",
            |r| {
                r.features
                    .iter()
                    .map(|f| (f.feature.as_str(), f.psi))
                    .chain(r.fields.iter().map(|f| (f.field.as_str(), f.psi)))
                    .collect()
            },
        ),
        (
            "leadscore_feature_missing_share",
            "Share of rows scored over the drift window where a feature or categorical field was missing.",
            "feature",
            |r| {
                r.features
                    .iter()
                    .map(|f| (f.feature.as_str(), f.missing_share))
                    .chain(r.fields.iter().map(|f| (f.field.as_str(), f.missing_share)))
                    .collect()
            },
        ),
        (
            "leadscore_feature_missing_share_training",
            "Share of training rows where a feature or categorical field was missing.",
            "feature",
            |r| {
                r.features
                    .iter()
                    .map(|f| (f.feature.as_str(), Some(f.training_missing_share)))
                    .chain(
                        r.fields
                            .iter()
                            .map(|f| (f.field.as_str(), Some(f.training_missing_share))),
                    )
                    .collect()
            },
        ),
        (
            "leadscore_unknown_level_share",
            "Share of rows scored over the drift window whose categorical level was never seen in training.",
            "field",
            |r| {
                r.fields
                    .iter()
                    .map(|f| (f.field.as_str(), f.unknown_share))
                    .collect()
            },
        ),
    ];
    let with_drift = || {
        models
            .iter()
            .filter_map(|m| m.drift.as_ref().map(|d| (m, d)))
    };
    out.push_str("# HELP leadscore_drift_rows Rows scored over the drift window, by model.\n");
    out.push_str("# TYPE leadscore_drift_rows gauge\n");
    for (m, drift) in with_drift() {
        let _ = writeln!(out, "leadscore_drift_rows{{{}}} {}", m.labels(), drift.rows);
    }
    for (name, help, label, gauge) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (m, drift) in with_drift() {
            for (feature, value) in gauge(drift) {
                if let Some(value) = value {
                    let _ = writeln!(
                        out,
                        "{name}{{{},{label}=\"{}\"}} {value}",
                        m.labels(),
                        label_value(feature)
                    );
                }
            }
        }
    }
}

impl Metrics {
    /// Records one answered request on `route` (a path template of [`ROUTES`], anything
    /// else counts as `other`).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let r = ROUTES
            .iter()
            .position(|&known| known == route)
            .unwrap_or(ROUTES.len() - 1);
        let s = STATUSES
            .iter()
            .position(|&known| known == status)
            .unwrap_or(STATUSES.len() - 1);
        let route = &self.routes[r];
        route.statuses[s].fetch_add(1, Ordering::Relaxed);
        route.latency.observe(elapsed.as_secs_f64());
    }

    /// Requests answered on `route` with `status` so far.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let (Some(r), Some(s)) = (
            ROUTES.iter().position(|&known| known == route),
            STATUSES.iter().position(|&known| known == status),
        ) else {
            return 0;
        };
        self.routes[r].statuses[s].load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    pub fn render(&self, models: &[ModelFigures<'_>]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str(
            "# HELP leadscore_http_requests_total Requests answered, by route and status.\n",
        );
        out.push_str("# TYPE leadscore_http_requests_total counter\n");
        for (route, m) in ROUTES.iter().zip(&self.routes) {
            for (status, count) in STATUSES.iter().zip(&m.statuses) {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = if *status == 0 {
                    "other".to_string()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "leadscore_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP leadscore_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE leadscore_http_request_duration_seconds histogram\n");
        for (route, m) in ROUTES.iter().zip(&self.routes) {
            if m.latency.count() > 0 {
                m.latency.render(
                    &mut out,
                    "leadscore_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
        }
        out.push_str("# HELP leadscore_model_info Models being served.\n");
        out.push_str("# TYPE leadscore_model_info gauge\n");
        for m in models {
            let _ = writeln!(
                out,
                "leadscore_model_info{{{},kind=\"{}\"}} 1",
                m.labels(),
                m.kind
            );
        }
        out.push_str("# HELP leadscore_scored_entities_total Entities scored, by model.\n");
        out.push_str("# TYPE leadscore_scored_entities_total counter\n");
        for m in models {
            let _ = writeln!(
                out,
                "leadscore_scored_entities_total{{{}}} {}",
                m.labels(),
                m.scores.0.count()
            );
        }
        out.push_str("# HELP leadscore_score Calibrated probabilities given, by model.\n");
        out.push_str("# TYPE leadscore_score histogram\n");
        for m in models {
            m.scores.0.render(&mut out, "leadscore_score", &m.labels());
        }
        for (name, help, value) in [
            (
                "leadscore_reloads_total",
                "Reloads of the registry or the thresholds file that changed what is served.",
                &self.reloads,
            ),
            (
                "leadscore_reload_failures_total",
                "Bundles or thresholds files refused on reload (the previous ones kept serving).",
                &self.reload_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        render_drift(&mut out, models);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&SCORE_BOUNDS);
        for p in [0.05, 0.1, 0.15, 0.95, 1.0] {
            h.observe(p);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "task=\"t\"");
        assert!(out.contains("x_bucket{task=\"t\",le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{task=\"t\",le=\"0.2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{task=\"t\",le=\"0.9\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{task=\"t\",le=\"1\"} 5\n"), "{out}");
        assert!(
            out.contains("x_bucket{task=\"t\",le=\"+Inf\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("x_count{task=\"t\"} 5\n"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_sum{task=\"t\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 2.25).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn drift_gauges_escape_names_and_leave_out_figures_without_rows() {
        let report: DriftReport = serde_json::from_value(serde_json::json!({
            "rows": 3,
            "features": [
                {"feature": "visits \"web\"\\x", "psi": 0.25, "missing_share": 0.5,
                 "training_missing_share": 0.1}
            ],
            "fields": [
                {"field": "source", "psi": null, "missing_share": null,
                 "training_missing_share": 0.0, "unknown_share": 0.125, "other_share": 0.2,
                 "training_other_share": 0.05}
            ]
        }))
        .unwrap();
        let scores = ScoreHistogram::default();
        let figures = [ModelFigures {
            model: "propensity",
            task: "propensity",
            version: "v1",
            kind: "gbdt",
            scores: &scores,
            drift: Some(report),
        }];
        let text = Metrics::default().render(&figures);
        let labels = "model=\"propensity\",task=\"propensity\",version=\"v1\"";
        for line in [
            format!("leadscore_drift_rows{{{labels}}} 3"),
            format!("leadscore_feature_psi{{{labels},feature=\"visits \\\"web\\\"\\\\x\"}} 0.25"),
            format!(
                "leadscore_feature_missing_share{{{labels},feature=\"visits \\\"web\\\"\\\\x\"}} 0.5"
            ),
            format!("leadscore_feature_missing_share_training{{{labels},feature=\"source\"}} 0"),
            format!("leadscore_unknown_level_share{{{labels},field=\"source\"}} 0.125"),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        // No PSI or missing share where the report has none.
        assert!(!text.contains(
            "leadscore_feature_psi{model=\"propensity\",task=\"propensity\",version=\"v1\",feature=\"source\"}"
        ));
        assert!(!text.contains(
            "leadscore_feature_missing_share{model=\"propensity\",task=\"propensity\",version=\"v1\",feature=\"source\"}"
        ));
        assert!(text.contains("# TYPE leadscore_feature_psi gauge\n"));
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.record("/v1/score/{model}", 200, Duration::from_micros(300));
        m.record("/v1/score/{model}", 200, Duration::from_micros(700));
        m.record("/v1/score/{model}", 400, Duration::from_micros(50));
        m.record("/nowhere", 404, Duration::from_micros(10));
        m.record("/healthz", 418, Duration::from_micros(10));
        assert_eq!(m.requests("/v1/score/{model}", 200), 2);
        assert_eq!(m.requests("/v1/score/{model}", 400), 1);
        assert_eq!(m.requests("other", 404), 1);
        let text = m.render(&[]);
        assert!(text.contains(
            "leadscore_http_requests_total{route=\"/v1/score/{model}\",status=\"200\"} 2\n"
        ));
        assert!(
            text.contains("leadscore_http_requests_total{route=\"/healthz\",status=\"other\"} 1\n")
        );
        assert!(text.contains(
            "leadscore_http_request_duration_seconds_bucket{route=\"/v1/score/{model}\",le=\"0.0005\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "leadscore_http_request_duration_seconds_bucket{route=\"/v1/score/{model}\",le=\"0.001\"} 3\n"
        ));
    }
}
