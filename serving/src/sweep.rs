//! The rescoring sweep: scores move with time even without events (recency decays, a
//! window empties), so the latest score of every entity active within a model's longest
//! window is recomputed at an interval and kept, and the sales queue stays fresh. The same
//! pass applies the event retention.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use features::history::DAY_MS;
use features::spec::Form;
use serde::Serialize;

use store::EntityStore;

use crate::entities::{Rescored, rescore, score_updates, to_stored};
use crate::error::ApiError;
use crate::state::{AppState, Served};

/// Entities read and rescored at a time.
pub const SWEEP_PAGE: usize = 256;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SweepReport {
    /// Entities rescored.
    pub entities: u64,
    /// Scores kept (an entity qualifies for one model or several).
    pub scores: u64,
    /// Events dropped by the retention.
    pub expired_events: u64,
    pub seconds: f64,
}

/// Rescores every entity active within the longest window of the event-form models
/// served, at `now_ms`; with `retention`, first drops events older than that.
pub async fn sweep_once(
    state: &AppState,
    now_ms: i64,
    retention: Option<Duration>,
) -> Result<SweepReport, ApiError> {
    let start = Instant::now();
    let store = Arc::clone(state.store()?);
    let mut report = SweepReport::default();
    // Replicas sharing the store split the sweep; the first of them applies the retention.
    let share = store.sweep_share().await?;
    if let Some(keep) = retention
        && share.index == 0
    {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        report.expired_events = store.expire_events(now_ms.saturating_sub(keep_ms)).await?;
    }
    let served = state.ready()?;
    // A tabular model's score moves only with the profile, which a write rescored.
    let longest_days = served
        .models()
        .filter(|m| m.model.manifest().feature_plan.form() == Form::Events)
        .flat_map(|m| m.model.manifest().feature_plan.data().windows_days.clone())
        .max();
    if let Some(days) = longest_days {
        let since = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let mut cursor = None;
        loop {
            let page = store
                .active_since(since, cursor.clone(), SWEEP_PAGE, share)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            cursor = Some(last.id.clone());
            let rescored = rescore(state, &served, page, now_ms, false).await?;
            let rescored =
                with_transition_reasons(state, &served, &store, rescored, now_ms).await?;
            let updates = score_updates(&rescored, now_ms);
            report.entities += rescored.len() as u64;
            report.scores += updates.len() as u64;
            if !updates.is_empty() {
                store.put_scores(updates).await?;
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    let m = state.store_metrics();
    m.sweeps.fetch_add(1, Ordering::Relaxed);
    m.last_sweep_seconds
        .store(report.seconds.to_bits(), Ordering::Relaxed);
    m.last_sweep_entities
        .store(report.entities, Ordering::Relaxed);
    Ok(report)
}

/// With webhook endpoints configured, the entities whose fresh score crosses a line
/// (sales-ready, a grade) against the stored one are scored again with reasons: the
/// transition's message carries them. The rest keep their scores without (most of a sweep).
async fn with_transition_reasons(
    state: &AppState,
    served: &Served,
    store: &Arc<dyn EntityStore>,
    rescored: Vec<Rescored>,
    now_ms: i64,
) -> Result<Vec<Rescored>, ApiError> {
    if !state.webhooks_active() {
        return Ok(rescored);
    }
    let mut kept = Vec::with_capacity(rescored.len());
    let mut again = Vec::new();
    for r in rescored {
        let stored = store.entity(&r.entity.id).await?;
        // The store's own rule (`store::transitions`), on the score as it would be kept.
        let crosses = r.scores.iter().any(|(model, _, fresh)| {
            let new = to_stored(model, &r.entity, fresh, now_ms);
            let old = stored
                .as_ref()
                .and_then(|e| e.scores.iter().find(|s| s.model == new.model));
            !store::transitions(r.entity.record.kind, old, &new).is_empty()
        });
        if crosses {
            again.push(r.entity);
        } else {
            kept.push(r);
        }
    }
    if !again.is_empty() {
        kept.extend(rescore(state, served, again, now_ms, true).await?);
    }
    Ok(kept)
}

/// Sweeps every `interval` until the process ends; a failed sweep is logged and the next
/// one runs on time.
pub fn spawn(
    state: AppState,
    interval: Duration,
    retention: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if state.ready().is_err() {
                continue;
            }
            let now_ms = crate::http::now_ms();
            match sweep_once(&state, now_ms, retention).await {
                Ok(r) => tracing::info!(
                    entities = r.entities,
                    scores = r.scores,
                    expired_events = r.expired_events,
                    seconds = r.seconds,
                    "sweep"
                ),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    })
}
