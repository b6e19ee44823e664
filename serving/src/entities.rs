//! The routes of the entity store ([`store`]): events, profiles and outcomes in; stored
//! entities, scores by id and the sales queue out; erasure.
//!
//! | route | key | answer |
//! | --- | --- | --- |
//! | `POST /v1/events` | client | stores `{"events": [...]}` for any entities (all or nothing), rescores each touched entity with every model it qualifies for, answers the new scores |
//! | `PUT` / `PATCH /v1/entities/{id}` | client | sets (replaces / merges) the profile, kind and creation time; rescores |
//! | `GET /v1/entities/{id}` | client | what is stored: profile, event count, first and last event, outcomes, latest scores |
//! | `DELETE /v1/entities/{id}` | client | erasure: profile, events, outcomes and scores gone (`204`) |
//! | `POST /v1/outcomes` | client | `{"outcomes": [{"entity", "type": "converted" or "churned", "ts"}]}`: the labels of the next training |
//! | `GET /v1/entities/{id}/score/{model}` | client | scored now from the stored history, with reasons |
//! | `GET /v1/leads/top/{model}` | client | the sales queue: the open entities with the highest latest score (`?limit=N&grade=A`) |
//! | `POST /admin/store/reclaim` | admin | rewrites the store's file so nothing erased remains in it |
//! | `POST /admin/store/sweep` | admin | runs the rescoring sweep now ([`crate::sweep`]) and says what it did |
//! | `POST /admin/store/export` | admin | writes what the store holds as files `leadscore-train train` reads ([`store::files::export`]), in a new folder on the server's disk |
//!
//! **Which models score an entity.** An entity's kind (`lead` by default, or `customer`)
//! picks the task: leads are scored by the propensity models, customers by the churn
//! models; an event-form model scores the stored profile and events, a tabular one the
//! stored profile as its row. A model a route of the routing table names scores only the
//! entities that route sends to it; a model no route names scores every entity of its
//! task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use features::history::{ProfileValue, TimestampMs};
use features::spec::Form;
use serde::{Deserialize, Serialize};
use store::{
    EntityRecord, EntityStore, EntityWithEvents, EntityWrite, Kind, NewEvent, Outcome, OutcomeKind,
    ProfileChange, ScoreUpdate, ScoresIf, StoredScore, WriteBatch, Written,
};

use crate::error::ApiError;
use crate::http::{
    ModelRef, RequestClock, off_worker_if_large, one_query_param, query_pairs, read_body,
    unknown_model,
};
use crate::model::{EntityScore, ScoreOptions};
use crate::request::{CheckedEntity, Fields, Timestamp, parse_json, present, show_time};
use crate::routing::RouteChoice;
use crate::state::{AppState, Served, ServedModel};

/// Longest entity or event id, in characters.
pub const MAX_ID_CHARS: usize = 256;

/// `POST /v1/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    pub events: Vec<EventItem>,
}

/// One event of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventItem {
    /// The entity's id; an unknown one is created.
    pub entity: String,
    /// The client's event id: sending it again is harmless.
    #[serde(default)]
    pub id: Option<String>,
    pub ts: Timestamp,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    /// Profile fields to merge into the entity's.
    #[serde(default, deserialize_with = "present")]
    pub profile: Option<Fields>,
    /// The entity's kind, when this event creates it or changes it.
    #[serde(default, deserialize_with = "present")]
    pub kind: Option<Kind>,
}

/// `PUT`/`PATCH /v1/entities/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityBody {
    #[serde(default, deserialize_with = "present")]
    pub kind: Option<Kind>,
    #[serde(default, deserialize_with = "present")]
    pub created_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "present")]
    pub profile: Option<Fields>,
}

/// `POST /v1/outcomes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesRequest {
    pub outcomes: Vec<OutcomeItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeItem {
    pub entity: String,
    #[serde(rename = "type")]
    pub outcome: OutcomeKind,
    pub ts: Timestamp,
}

/// One model's fresh score of an entity.
#[derive(Debug, Serialize)]
pub struct ModelScore<'a> {
    pub model: ModelRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a RouteChoice>,
    #[serde(flatten)]
    pub score: &'a EntityScore,
}

/// A written entity and its new scores.
#[derive(Debug, Serialize)]
struct WrittenEntity<'a> {
    entity: &'a str,
    kind: &'static str,
    created: bool,
    events_added: u32,
    duplicates: u32,
    #[serde(skip_serializing_if = "is_zero")]
    dropped_at_cap: u32,
    scores: Vec<ModelScore<'a>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The models that score `record`, with the route choice that sent it to each (see the
/// module's documentation).
pub fn qualifying(
    served: &Served,
    record: &EntityRecord,
) -> Vec<(ServedModel, Option<RouteChoice>)> {
    let task = record.kind.task();
    let fields = Fields(
        record
            .profile
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let mut routed: BTreeMap<String, Option<RouteChoice>> = BTreeMap::new();
    for route in served.routing().routes() {
        for model in route.models() {
            routed.entry(model.to_string()).or_insert(None);
        }
        // A route whose field the profile cannot give (a number expected) sends it nowhere.
        if let Ok((model, choice)) = route.choose(Some(&fields), "", "profile") {
            routed.insert(model.to_string(), Some(choice));
        }
    }
    served
        .models()
        .filter(|m| m.model.task() == task)
        .filter_map(|m| match routed.get(m.model.name().as_str()) {
            None => Some((m.clone(), None)),
            Some(Some(choice)) => Some((m.clone(), Some(choice.clone()))),
            Some(None) => None,
        })
        .collect()
}

/// The moment `model` scores the stored `entity` at: `at_ms`, or now (past its last event
/// and creation).
fn cutoff_ms(
    model: &ServedModel,
    entity: &EntityWithEvents,
    at_ms: Option<TimestampMs>,
    now_ms: TimestampMs,
) -> TimestampMs {
    match (at_ms, model.model.manifest().feature_plan.form()) {
        (Some(t), _) => t,
        (None, Form::Tabular) => now_ms,
        (None, Form::Events) => {
            let after_events = entity
                .record
                .last_event_ms
                .map_or(i64::MIN, |t| t.saturating_add(1));
            now_ms.max(after_events).max(entity.record.created_at_ms)
        }
    }
}

/// The stored entity as `model` reads it, scored at `at_ms` (or now: past its last event
/// and creation).
fn checked(
    model: &ServedModel,
    entity: &EntityWithEvents,
    at_ms: Option<TimestampMs>,
    now_ms: TimestampMs,
) -> CheckedEntity {
    let plan = &model.model.manifest().feature_plan;
    let names: Vec<String> = plan
        .profile_fields()
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let mut history = entity.to_history(&names);
    let cutoff_ms = cutoff_ms(model, entity, at_ms, now_ms);
    if plan.form() == Form::Tabular {
        history.events.clear();
    }
    CheckedEntity {
        id: Some(entity.id.clone()),
        history,
        cutoff_ms,
        ignored_fields: Vec::new(),
        path_prefix: String::new(),
    }
}

/// One entity's fresh scores: by each model it qualifies for.
pub struct Rescored {
    pub entity: EntityWithEvents,
    pub scores: Vec<(ServedModel, Option<RouteChoice>, EntityScore)>,
}

/// Checked entities grouped into one scoring call per model, each with `P`, where its
/// answer goes.
struct ScoringJobs<P> {
    jobs: Vec<(ServedModel, Vec<P>, Vec<CheckedEntity>)>,
}

impl<P> ScoringJobs<P> {
    fn new() -> Self {
        ScoringJobs { jobs: Vec::new() }
    }

    fn push(&mut self, model: &ServedModel, place: P, entity: CheckedEntity) {
        let job = match self
            .jobs
            .iter()
            .position(|(m, _, _)| Arc::ptr_eq(&m.model, &model.model))
        {
            Some(j) => j,
            None => {
                self.jobs.push((model.clone(), Vec::new(), Vec::new()));
                self.jobs.len() - 1
            }
        };
        self.jobs[job].1.push(place);
        self.jobs[job].2.push(entity);
    }

    /// Scores every job (with `reasons` or not): each answer with its model and place.
    async fn run(
        self,
        state: &AppState,
        reasons: bool,
    ) -> Result<Vec<(ServedModel, P, EntityScore)>, ApiError> {
        let limits = state.limits();
        let mut out = Vec::new();
        for (model, places, checked) in self.jobs {
            let options = ScoreOptions {
                reasons,
                max_reasons: limits.max_reasons,
                small: checked.len() <= limits.inline_max_entities,
            };
            let scores = model
                .model
                .score(checked, Arc::clone(&model.thresholds), options)
                .await?;
            for (place, score) in places.into_iter().zip(scores) {
                out.push((model.clone(), place, score));
            }
        }
        Ok(out)
    }
}

/// Scores each of `entities` now with every model it qualifies for, one scoring job per
/// model; with `reasons` (only when they are answered: they are not stored).
pub async fn rescore(
    state: &AppState,
    served: &Served,
    entities: Vec<EntityWithEvents>,
    now_ms: TimestampMs,
    reasons: bool,
) -> Result<Vec<Rescored>, ApiError> {
    let mut jobs = ScoringJobs::new();
    for (i, entity) in entities.iter().enumerate() {
        for (model, choice) in qualifying(served, &entity.record) {
            jobs.push(&model, (i, choice), checked(&model, entity, None, now_ms));
        }
    }
    let scored = jobs.run(state, reasons).await?;
    let mut out: Vec<Rescored> = entities
        .into_iter()
        .map(|entity| Rescored {
            entity,
            scores: Vec::new(),
        })
        .collect();
    for (model, (i, choice), mut score) in scored {
        score.id = None;
        out[i].scores.push((model, choice, score));
    }
    Ok(out)
}

/// The scores of `rescored` to keep as the entities' latest.
pub(crate) fn score_updates(rescored: &[Rescored], now_ms: TimestampMs) -> Vec<ScoreUpdate> {
    rescored
        .iter()
        .flat_map(|r| {
            r.scores.iter().map(|(model, _, score)| ScoreUpdate {
                entity: r.entity.id.clone(),
                score: to_stored(model, &r.entity, score, now_ms),
                reasons: reasons_json(score),
            })
        })
        .collect()
}

/// A score's reasons as a webhook message carries them.
fn reasons_json(score: &EntityScore) -> Option<serde_json::Value> {
    score
        .reasons
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
}

/// Leaves the reasons out of scores computed with them for a webhook message only.
fn drop_reasons(rescored: &mut [Rescored]) {
    for (_, _, score) in rescored.iter_mut().flat_map(|r| &mut r.scores) {
        score.reasons = None;
    }
}

/// The stored form of a fresh score, scored now.
pub(crate) fn to_stored(
    model: &ServedModel,
    entity: &EntityWithEvents,
    score: &EntityScore,
    now_ms: TimestampMs,
) -> StoredScore {
    StoredScore {
        model: model.model.name().to_string(),
        version: model.model.version().to_owned(),
        probability: score.probability,
        score: score.score,
        grade: score.grade.as_str().to_owned(),
        sales_ready: score.sales_ready,
        scored_at_ms: cutoff_ms(model, entity, None, now_ms),
        events_seen: entity.record.events_appended,
    }
}

/// The reasons of stored scores, given back: each entity's stored history scored again at
/// the score's moment by the same version, when that version is still served and gives the
/// same probability (else `None`: the history or the model changed since; the next event or
/// sweep rescores it). One scoring job per model.
async fn stored_reasons(
    state: &AppState,
    served: &Served,
    store: &Arc<dyn EntityStore>,
    scores: &[(String, StoredScore)],
) -> Result<Vec<Option<serde_json::Value>>, ApiError> {
    let mut out = vec![None; scores.len()];
    let mut histories: HashMap<&str, Option<EntityWithEvents>> = HashMap::new();
    for (id, _) in scores {
        if !histories.contains_key(id.as_str()) {
            histories.insert(id.as_str(), store.history(id).await?);
        }
    }
    let mut jobs = ScoringJobs::new();
    for (i, (id, stored)) in scores.iter().enumerate() {
        let Some(Some(entity)) = histories.get(id.as_str()) else {
            continue;
        };
        let Some(model) = served
            .get(&stored.model)
            .filter(|m| m.model.version() == stored.version)
        else {
            continue;
        };
        let again = checked(
            model,
            entity,
            Some(stored.scored_at_ms),
            stored.scored_at_ms,
        );
        jobs.push(model, i, again);
    }
    for (_, i, score) in jobs.run(state, true).await? {
        if score.probability.to_bits() == scores[i].1.probability.to_bits() {
            out[i] = score
                .reasons
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok());
        }
    }
    Ok(out)
}

/// Writes `batch` and answers each entity's fresh scores (with `reasons`).
///
/// Each entity's history after the write is predicted from what is stored now
/// ([`store::predict`]: the function the store applies writes with) and scored before the
/// write, and the scores go with it ([`ScoresIf`]): kept in the same commit when nothing else
/// wrote the entity in between. Then one event changes the entity's page once, not twice.
/// Where something did write in between, the entity is scored again from its stored history
/// after the commit and those scores are kept in a commit of their own.
async fn write_and_score(
    state: &AppState,
    served: &Served,
    store: &Arc<dyn EntityStore>,
    mut batch: WriteBatch,
    reasons: bool,
) -> Result<(Vec<Written>, Vec<Rescored>), ApiError> {
    let now_ms = batch.now_ms;
    let limits = store.limits();
    let mut ids = HashSet::with_capacity(batch.entities.len());
    let unique = batch.entities.iter().all(|w| ids.insert(w.id.as_str()));
    let mut predicted = Vec::with_capacity(batch.entities.len());
    let mut before = Vec::with_capacity(batch.entities.len());
    if unique {
        for write in &batch.entities {
            let history = store.history(&write.id).await?;
            before.push(history.as_ref().map(|h| h.record.clone()));
            predicted.push(store::predict(history, write, now_ms, &limits));
        }
    }
    // With webhooks, a transition's message carries the reasons of its score: computed
    // whether or not the answer shows them.
    let with_reasons = reasons || state.webhooks_active();
    let mut rescored = rescore(state, served, predicted, now_ms, with_reasons).await?;
    for ((write, record_before), r) in batch.entities.iter_mut().zip(before).zip(&rescored) {
        let scores = r
            .scores
            .iter()
            .map(|(model, _, score)| to_stored(model, &r.entity, score, now_ms))
            .collect();
        let reasons = r.scores.iter().map(|(_, _, s)| reasons_json(s)).collect();
        write.scores_if = Some(ScoresIf {
            record_before,
            scores,
            reasons,
        });
    }
    if !reasons {
        drop_reasons(&mut rescored);
    }
    let written = write_counted(state, store, batch).await?;
    let mut again = Vec::new();
    for (i, w) in written.iter().enumerate() {
        let held = rescored
            .get(i)
            .is_some_and(|r| w.scores_kept && r.entity.record == w.record);
        if !held {
            if w.scores_kept {
                tracing::error!(entity = %w.id, "a write left another record than predicted; rescored");
            }
            again.push(w);
        }
    }
    if again.is_empty() {
        return Ok((written, rescored));
    }
    let mut histories = Vec::with_capacity(again.len());
    for w in again {
        // Erased in between: nothing to score.
        if let Some(h) = store.history(&w.id).await? {
            histories.push(h);
        }
    }
    let mut fresh = rescore(state, served, histories, now_ms, with_reasons).await?;
    let updates = score_updates(&fresh, now_ms);
    if !reasons {
        drop_reasons(&mut fresh);
    }
    if !updates.is_empty() {
        // Queued now, durable with the writer's next commit; not awaited: the answer does not
        // wait for a second commit. Reads of stored scores settle the store first.
        let pending = store.put_scores(updates);
        let metrics = state.clone();
        tokio::spawn(async move {
            if let Err(e) = pending.await {
                metrics
                    .store_metrics()
                    .score_write_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "keeping fresh scores failed; the next event or sweep rescores");
            }
        });
    }
    let fresh_ids: HashSet<&str> = fresh.iter().map(|r| r.entity.id.as_str()).collect();
    rescored.retain(|r| !fresh_ids.contains(r.entity.id.as_str()));
    rescored.extend(fresh);
    Ok((written, rescored))
}

fn check_id(id: &str, path: &str) -> Result<(), ApiError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_ID_CHARS {
        return Err(ApiError::bad_request(
            format!("{path}: an id is 1 to {MAX_ID_CHARS} characters, got {n}"),
            Some(path),
        ));
    }
    Ok(())
}

/// Checks profile values against every served model that uses the field.
fn check_fields(served: &Served, fields: &Fields, path: &str) -> Result<(), ApiError> {
    for (name, value) in &fields.0 {
        for m in served.models() {
            if let Some(&i) = m.model.profile_index().get(name) {
                m.model
                    .manifest()
                    .feature_plan
                    .encode_profile_value(i, value)
                    .map_err(|e| {
                        let field = format!("{path}.{name}");
                        ApiError::bad_request(
                            format!("{field}: {} (model {})", feature_text(&e), m.model.name()),
                            Some(&field),
                        )
                    })?;
            }
        }
    }
    Ok(())
}

fn feature_text(e: &features::plan::FeatureError) -> String {
    use features::plan::FeatureError;
    match e {
        FeatureError::NotANumber { value, .. } => format!("expected a number, got {value:?}"),
        FeatureError::NotFinite { value, .. } => format!("{value} is not a finite number"),
        other => other.to_string(),
    }
}

/// 1900-01-01T00:00:00Z: the store refuses earlier times (a CRM time before it is a
/// mistake, and RFC 3339 text, which the store answers, has no year before 0000).
pub const EARLIEST_STORED_MS: TimestampMs = -2_208_988_800_000;

fn check_time(t: Timestamp, clock: RequestClock, path: &str) -> Result<TimestampMs, ApiError> {
    if t.0 < EARLIEST_STORED_MS {
        return Err(ApiError::bad_request(
            format!("{path}: {} is before 1900", show_time(t.0)),
            Some(path),
        ));
    }
    if t.0 > clock.now_ms.saturating_add(clock.allowed_skew_ms) {
        return Err(ApiError::bad_request(
            format!("{path}: {} is in the future", show_time(t.0)),
            Some(path),
        ));
    }
    Ok(t.0)
}

/// The events body, checked: one write of every entity it names, in order of first
/// appearance.
fn events_batch(
    served: &Served,
    body: &[u8],
    clock: RequestClock,
    max_batch: usize,
) -> Result<WriteBatch, ApiError> {
    let request: EventsRequest = parse_json(body)?;
    let n = request.events.len();
    if n > max_batch {
        return Err(ApiError::bad_request(
            format!("events: {n} events, a request may have at most {max_batch}"),
            Some("events"),
        ));
    }
    let mut writes: Vec<EntityWrite> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for (i, item) in request.events.into_iter().enumerate() {
        let at = format!("events[{i}]");
        check_id(&item.entity, &format!("{at}.entity"))?;
        if let Some(id) = &item.id {
            check_id(id, &format!("{at}.id"))?;
        }
        if item.event_type.is_empty() {
            return Err(ApiError::bad_request(
                format!("{at}.type: an event type is not empty"),
                Some(&format!("{at}.type")),
            ));
        }
        let ts_ms = check_time(item.ts, clock, &format!("{at}.ts"))?;
        if let Some(v) = item.value
            && !features::plan::fits_f32(v)
        {
            let path = format!("{at}.value");
            return Err(ApiError::bad_request(
                format!("{path}: {v} is not a finite number within ±3.4e38"),
                Some(&path),
            ));
        }
        if let Some(profile) = &item.profile {
            check_fields(served, profile, &format!("{at}.profile"))?;
        }
        let w = match index.get(&item.entity) {
            Some(&w) => w,
            None => {
                index.insert(item.entity.clone(), writes.len());
                writes.push(EntityWrite {
                    id: item.entity.clone(),
                    ..Default::default()
                });
                writes.len() - 1
            }
        };
        let write = &mut writes[w];
        if let Some(kind) = item.kind {
            write.kind = Some(kind);
        }
        if let Some(profile) = item.profile {
            write.profile.extend(profile.0);
        }
        write.events.push(NewEvent {
            id: item.id,
            ts_ms,
            event_type: item.event_type,
            channel: item.channel,
            value: item.value,
        });
    }
    Ok(WriteBatch {
        entities: writes,
        now_ms: clock.now_ms,
    })
}

/// Writes `batch` and counts it.
async fn write_counted(
    state: &AppState,
    store: &Arc<dyn EntityStore>,
    batch: WriteBatch,
) -> Result<Vec<Written>, ApiError> {
    let start = Instant::now();
    let written = store.write(batch).await?;
    let m = state.store_metrics();
    m.write_latency.observe(start.elapsed().as_secs_f64());
    use std::sync::atomic::Ordering::Relaxed;
    for w in &written {
        m.events_ingested
            .fetch_add(u64::from(w.events_added), Relaxed);
        m.duplicates.fetch_add(u64::from(w.duplicates), Relaxed);
        m.dropped_at_cap
            .fetch_add(u64::from(w.dropped_at_cap), Relaxed);
    }
    Ok(written)
}

/// `?reasons=` of the store routes (default true).
fn reasons_query(query: Option<&str>) -> Result<bool, ApiError> {
    crate::http::wants_reasons(query)
}

fn written_response(written: &[Written], rescored: &[Rescored]) -> Response {
    let by_id: std::collections::HashMap<&str, &Rescored> =
        rescored.iter().map(|r| (r.entity.id.as_str(), r)).collect();
    let entities: Vec<WrittenEntity<'_>> = written
        .iter()
        .map(|w| WrittenEntity {
            entity: &w.id,
            kind: w.record.kind.as_str(),
            created: w.created,
            events_added: w.events_added,
            duplicates: w.duplicates,
            dropped_at_cap: w.dropped_at_cap,
            scores: by_id
                .get(w.id.as_str())
                .map(|r| model_scores(r))
                .unwrap_or_default(),
        })
        .collect();
    Json(serde_json::json!({ "entities": entities })).into_response()
}

fn model_scores(r: &Rescored) -> Vec<ModelScore<'_>> {
    r.scores
        .iter()
        .map(|(model, choice, score)| ModelScore {
            model: ModelRef::from(model),
            route: choice.as_ref(),
            score,
        })
        .collect()
}

/// `POST /v1/events`.
pub async fn post_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = Arc::clone(state.store()?);
    let served = state.ready()?;
    let reasons = reasons_query(query.as_deref())?;
    let body = read_body(&state, &headers, body).await?;
    let clock = RequestClock::now(&state);
    let max_batch = state.limits().max_batch;
    let body_len = body.len();
    let snapshot = Arc::clone(&served);
    let batch = off_worker_if_large(body_len, move || {
        events_batch(&snapshot, &body, clock, max_batch)
    })
    .await?;
    let (written, rescored) = write_and_score(&state, &served, &store, batch, reasons).await?;
    Ok(written_response(&written, &rescored))
}

/// `PUT /v1/entities/{id}`: the profile is replaced.
pub async fn put_entity(
    state: State<AppState>,
    path: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    set_entity(state, path, query, headers, body, ProfileChange::Replace).await
}

/// `PATCH /v1/entities/{id}`: the profile is merged.
pub async fn patch_entity(
    state: State<AppState>,
    path: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    set_entity(state, path, query, headers, body, ProfileChange::Merge).await
}

async fn set_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
    change: ProfileChange,
) -> Result<Response, ApiError> {
    let store = Arc::clone(state.store()?);
    let served = state.ready()?;
    check_id(&id, "id")?;
    let reasons = reasons_query(query.as_deref())?;
    let body = read_body(&state, &headers, body).await?;
    let clock = RequestClock::now(&state);
    let snapshot = Arc::clone(&served);
    let write = off_worker_if_large(body.len(), move || {
        let request: EntityBody = parse_json(&body)?;
        let created_at_ms = request
            .created_at
            .map(|t| check_time(t, clock, "created_at"))
            .transpose()?;
        let profile = request.profile.unwrap_or_default();
        check_fields(&snapshot, &profile, "profile")?;
        Ok(EntityWrite {
            id,
            kind: request.kind,
            created_at_ms,
            profile: profile.0,
            profile_change: change,
            ..Default::default()
        })
    })
    .await?;
    let batch = WriteBatch {
        entities: vec![write],
        now_ms: clock.now_ms,
    };
    let (written, rescored) = write_and_score(&state, &served, &store, batch, reasons).await?;
    let status = if written.first().is_some_and(|w| w.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = written_response(&written, &rescored);
    *response.status_mut() = status;
    Ok(response)
}

/// `POST /v1/outcomes`.
pub async fn post_outcomes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = Arc::clone(state.store()?);
    let body = read_body(&state, &headers, body).await?;
    let clock = RequestClock::now(&state);
    let max_batch = state.limits().max_batch;
    let request = off_worker_if_large(body.len(), move || {
        let request: OutcomesRequest = parse_json(&body)?;
        if request.outcomes.len() > max_batch {
            return Err(ApiError::bad_request(
                format!(
                    "outcomes: {} outcomes, a request may have at most {max_batch}",
                    request.outcomes.len()
                ),
                Some("outcomes"),
            ));
        }
        Ok(request)
    })
    .await?;
    let mut writes: Vec<EntityWrite> = Vec::new();
    for (i, item) in request.outcomes.into_iter().enumerate() {
        let at = format!("outcomes[{i}]");
        check_id(&item.entity, &format!("{at}.entity"))?;
        let at_ms = check_time(item.ts, clock, &format!("{at}.ts"))?;
        if store.entity(&item.entity).await?.is_none() {
            return Err(ApiError::UnknownEntity {
                id: shorten(&item.entity),
                field: Some(format!("{at}.entity")),
            });
        }
        let outcome = Outcome {
            kind: item.outcome,
            at_ms,
        };
        match writes.iter_mut().find(|w| w.id == item.entity) {
            Some(w) => w.outcomes.push(outcome),
            None => writes.push(EntityWrite {
                id: item.entity,
                outcomes: vec![outcome],
                ..Default::default()
            }),
        }
    }
    let written = write_counted(
        &state,
        &store,
        WriteBatch {
            entities: writes,
            now_ms: clock.now_ms,
        },
    )
    .await?;
    let entities: Vec<serde_json::Value> = written
        .iter()
        .map(|w| {
            serde_json::json!({
                "entity": w.id,
                "kind": w.record.kind.as_str(),
                "open": w.record.is_open(),
                "outcomes": outcomes_json(&w.record),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "entities": entities })).into_response())
}

fn outcomes_json(record: &EntityRecord) -> Vec<serde_json::Value> {
    record
        .outcomes
        .iter()
        .map(|o| serde_json::json!({"type": o.kind.as_str(), "ts": show_time(o.at_ms)}))
        .collect()
}

/// `GET /v1/entities/{id}`.
pub async fn get_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = Arc::clone(state.store()?);
    // The scores of writes answered before this request are kept first.
    store.settle().await?;
    let entity = store
        .entity(&id)
        .await?
        .ok_or_else(|| ApiError::UnknownEntity {
            id: shorten(&id),
            field: None,
        })?;
    let stored: Vec<(String, StoredScore)> = entity
        .scores
        .iter()
        .map(|s| (entity.id.clone(), s.clone()))
        .collect();
    let reasons = match state.ready() {
        Ok(served) => stored_reasons(&state, &served, &store, &stored).await?,
        Err(_) => vec![None; stored.len()],
    };
    let r = &entity.record;
    let profile: serde_json::Map<String, serde_json::Value> = r
        .profile
        .iter()
        .map(|(k, v)| {
            let value = match v {
                ProfileValue::Missing => serde_json::Value::Null,
                ProfileValue::Number(n) => serde_json::json!(n),
                ProfileValue::Text(t) => serde_json::json!(t),
            };
            (k.clone(), value)
        })
        .collect();
    // Grade and sales-ready flag by the thresholds in force now, as the queue gives them (a
    // thresholds change applies to stored scores at once); as stored when the model is no
    // longer served.
    let served = state.ready().ok();
    let scores: Vec<serde_json::Value> = entity
        .scores
        .iter()
        .zip(reasons)
        .map(|(s, reasons)| {
            let (grade, sales_ready) = match served.as_ref().and_then(|m| m.get(&s.model)) {
                Some(m) => (
                    serde_json::json!(m.thresholds.grade(s.probability)),
                    m.thresholds.is_sales_ready(s.probability),
                ),
                None => (serde_json::json!(s.grade), s.sales_ready),
            };
            serde_json::json!({
                "model": s.model,
                "version": s.version,
                "probability": s.probability,
                "score": s.score,
                "grade": grade,
                "sales_ready": sales_ready,
                "scored_at": show_time(s.scored_at_ms),
                "reasons": reasons,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "id": entity.id,
        "kind": r.kind.as_str(),
        "created_at": show_time(r.created_at_ms),
        "created_at_given": r.created_at_given,
        "profile": profile,
        "events": {
            "count": r.event_count,
            "first": r.first_event_ms.map(show_time),
            "last": r.last_event_ms.map(show_time),
        },
        "outcomes": outcomes_json(r),
        "open": r.is_open(),
        "updated_at": show_time(r.updated_at_ms),
        "scores": scores,
    })))
}

/// The stored entity `id` with its events, or [`ApiError::UnknownEntity`].
async fn stored_history(
    store: &Arc<dyn EntityStore>,
    id: &str,
) -> Result<EntityWithEvents, ApiError> {
    store
        .history(id)
        .await?
        .ok_or_else(|| ApiError::UnknownEntity {
            id: shorten(id),
            field: None,
        })
}

fn shorten(id: &str) -> String {
    id.chars().take(64).collect()
}

/// `DELETE /v1/entities/{id}`.
pub async fn delete_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store()?;
    if store.erase(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::UnknownEntity {
            id: shorten(&id),
            field: None,
        })
    }
}

/// `GET /v1/entities/{id}/score/{model}`: scored now from what is stored.
pub async fn score_stored(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let store = Arc::clone(state.store()?);
    let served = state.ready()?;
    let reasons = reasons_query(query.as_deref())?;
    let entity = stored_history(&store, &id).await?;
    let (model, choice) = if let Some(route) = served.routing().get(&name) {
        let fields = Fields(
            entity
                .record
                .profile
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let (model_name, choice) = route.choose(Some(&fields), "", "profile")?;
        let model = served
            .get(model_name.as_str())
            .cloned()
            .ok_or_else(|| unknown_model(&served, model_name.as_str()))?;
        (model, Some(choice))
    } else {
        let model = served
            .get(&name)
            .cloned()
            .ok_or_else(|| unknown_model(&served, &name))?;
        (model, None)
    };
    let task = model.model.task();
    if entity.record.kind.task() != task {
        return Err(ApiError::EntityNotScored {
            id: shorten(&id),
            kind: entity.record.kind.as_str(),
            model: model.model.name().to_string(),
            scores: match task {
                features::spec::Task::Propensity => "leads",
                features::spec::Task::Churn => "customers",
            },
        });
    }
    let now_ms = RequestClock::now(&state).now_ms;
    let checked = checked(&model, &entity, None, now_ms);
    let limits = state.limits();
    let options = ScoreOptions {
        reasons,
        max_reasons: limits.max_reasons,
        small: limits.inline_max_entities >= 1,
    };
    let mut scores = model
        .model
        .score(vec![checked], Arc::clone(&model.thresholds), options)
        .await?;
    let score = scores.pop().ok_or_else(|| ApiError::Internal {
        message: "the model returned no score".into(),
    })?;
    Ok(Json(serde_json::json!({
        "entity": entity.id,
        "model": ModelRef::from(&model),
        "route": choice,
        "scored_at": show_time(checked_cutoff(&model, &entity, now_ms)),
        "events": entity.record.event_count,
        "probability": score.probability,
        "score": score.score,
        "grade": score.grade,
        "sales_ready": score.sales_ready,
        "reasons": score.reasons,
    }))
    .into_response())
}

fn checked_cutoff(
    model: &ServedModel,
    entity: &EntityWithEvents,
    now_ms: TimestampMs,
) -> TimestampMs {
    checked(model, entity, None, now_ms).cutoff_ms
}

/// `?limit=N&grade=X` of the queue.
fn queue_query(query: Option<&str>) -> Result<(usize, Option<models::bundle::Grade>), ApiError> {
    use models::bundle::Grade;
    let (mut limit, mut grade) = (20usize, None);
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            format!("limit: expected a whole number from 1 to 1000, got {value:?}"),
                            Some("limit"),
                        )
                    })?;
            }
            "grade" => {
                grade = Some(match value.as_str() {
                    "A" => Grade::A,
                    "B" => Grade::B,
                    "C" => Grade::C,
                    "D" => Grade::D,
                    other => {
                        return Err(ApiError::bad_request(
                            format!("grade: expected A, B, C or D, got {other:?}"),
                            Some("grade"),
                        ));
                    }
                });
            }
            other => {
                return Err(ApiError::bad_request(
                    format!(
                        "unknown query parameter {other:?}; the parameters are `limit` and `grade`"
                    ),
                    Some(other),
                ));
            }
        }
    }
    Ok((limit, grade))
}

/// `GET /v1/leads/top/{model}`: the sales queue.
pub async fn top(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    use models::bundle::Grade;
    let store = Arc::clone(state.store()?);
    let served = state.ready()?;
    let model = served
        .get(&name)
        .cloned()
        .ok_or_else(|| unknown_model(&served, &name))?;
    let (limit, grade) = queue_query(query.as_deref())?;
    let t = &*model.thresholds;
    let g = &t.grades;
    // Grades by the thresholds in force, not those of when the score was kept.
    let band = grade.map(|grade| match grade {
        Grade::A => (g.a, f64::INFINITY),
        Grade::B => (g.b, g.a),
        Grade::C => (g.c, g.b),
        Grade::D => (0.0, g.c),
    });
    // The scores of writes answered before this request are kept first.
    store.settle().await?;
    let top = store.top(model.model.name().as_str(), limit, band).await?;
    let reasons = stored_reasons(&state, &served, &store, &top).await?;
    let leads: Vec<serde_json::Value> = top
        .into_iter()
        .zip(reasons)
        .map(|((id, s), reasons)| {
            serde_json::json!({
                "entity": id,
                "probability": s.probability,
                "score": s.score,
                "grade": t.grade(s.probability),
                "sales_ready": t.is_sales_ready(s.probability),
                "version": s.version,
                "scored_at": show_time(s.scored_at_ms),
                "reasons": reasons,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "model": ModelRef::from(&model),
        "leads": leads,
    }))
    .into_response())
}

/// `POST /admin/store/reclaim`.
pub async fn reclaim(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store()?;
    let start = Instant::now();
    let before = store.stats().await?.bytes;
    store.reclaim().await?;
    let after = store.stats().await?.bytes;
    Ok(Json(serde_json::json!({
        "bytes_before": before,
        "bytes_after": after,
        "seconds": start.elapsed().as_secs_f64(),
    }))
    .into_response())
}

/// `POST /admin/store/sweep`: one rescoring sweep now (the retention is the background
/// sweep's business).
pub async fn sweep_now(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.store()?;
    let report = crate::sweep::sweep_once(&state, crate::http::now_ms(), None).await?;
    Ok(Json(report).into_response())
}

/// `POST /admin/store/export` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The new folder's name in the server's export folder (`<store>/exports`): letters,
    /// digits, `.`, `_` and `-`, not starting with a dot.
    pub name: String,
    /// `propensity` (leads, the default) or `churn` (customers).
    #[serde(default)]
    pub task: Option<features::spec::Task>,
    /// The spec the model was trained from, on the server's disk: the export keeps its name,
    /// label, cutoffs, feature options and column kinds.
    #[serde(default)]
    pub like: Option<std::path::PathBuf>,
}

fn check_export_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!(
                "name: {:?} is not a folder name: 1 to 100 letters, digits, `.`, `_` or `-`, \
                 not starting with a dot",
                name.chars().take(100).collect::<String>()
            ),
            Some("name"),
        ))
    }
}

/// `POST /admin/store/export`: the loop closes from a running server.
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = Arc::clone(state.store()?);
    let root = state.export_dir().ok_or(ApiError::NoStore)?.to_path_buf();
    let body = read_body(&state, &headers, body).await?;
    let request: ExportRequest = parse_json(&body)?;
    check_export_name(&request.name)?;
    let out = root.join(&request.name);
    if out.exists() {
        return Err(ApiError::ExportExists {
            name: request.name.clone(),
        });
    }
    let like = match &request.like {
        None => None,
        Some(path) => Some(features::spec::DatasetSpec::from_file(path).map_err(|e| {
            // The reason may quote the file: logged, not answered.
            tracing::warn!(error = %e, "export: the like spec cannot be read");
            ApiError::bad_request(
                format!(
                    "like: {} is not a dataset spec this server reads (its log says why)",
                    path.display()
                ),
                Some("like"),
            )
        })?),
    };
    let task = request
        .task
        .or(like.as_ref().map(|s| s.task))
        .unwrap_or(features::spec::Task::Propensity);
    let start = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let folder = out.clone();
    // Writing Parquet files is blocking work: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        runtime.block_on(store::files::export(
            store.as_ref(),
            &folder,
            task,
            like.as_ref(),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal {
        message: format!("export task failed: {e}"),
    })?
    .map_err(|e| ApiError::Internal {
        message: format!("export to {}: {e}", out.display()),
    })?;
    Ok(Json(serde_json::json!({
        "spec": report.spec,
        "entities": report.entities,
        "events": report.events,
        "outcomes": report.outcomes,
        "seconds": start.elapsed().as_secs_f64(),
    }))
    .into_response())
}

/// Most events a timeline lists, newest first.
pub const TIMELINE_EVENTS: usize = 200;
/// Most moments a timeline scores: just after each of the latest events, and now.
pub const TIMELINE_SCORES: usize = 50;

/// `GET /v1/entities/{id}/timeline?model=NAME`: the entity's latest events, newest first,
/// and `model`'s score just after each of the latest [`TIMELINE_SCORES`] distinct event
/// times and now, oldest first: how its score moved with what it did. Without `model`, the
/// first served model of its kind's task.
pub async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = Arc::clone(state.store()?);
    let served = state.ready()?;
    let asked = one_query_param(query.as_deref(), "model")?;
    let entity = stored_history(&store, &id).await?;
    let task = entity.record.kind.task();
    let model = match &asked {
        Some(name) => {
            let model = served
                .get(name)
                .cloned()
                .ok_or_else(|| unknown_model(&served, name))?;
            if model.model.task() != task {
                return Err(ApiError::EntityNotScored {
                    id: shorten(&id),
                    kind: entity.record.kind.as_str(),
                    model: model.model.name().to_string(),
                    scores: match model.model.task() {
                        features::spec::Task::Propensity => "leads",
                        features::spec::Task::Churn => "customers",
                    },
                });
            }
            Some(model)
        }
        None => served.models().find(|m| m.model.task() == task).cloned(),
    };
    let events: Vec<serde_json::Value> = entity
        .events
        .iter()
        .rev()
        .take(TIMELINE_EVENTS)
        .map(|e| {
            serde_json::json!({
                "ts": show_time(e.ts_ms),
                "type": e.event_type,
                "channel": e.channel,
                "value": e.value,
            })
        })
        .collect();
    let scores = match &model {
        None => Vec::new(),
        Some(model) => {
            let now_ms = RequestClock::now(&state).now_ms;
            let mut moments: Vec<TimestampMs> = entity
                .events
                .iter()
                .map(|e| e.ts_ms.saturating_add(1))
                .collect();
            moments.sort_unstable();
            moments.dedup();
            let keep = moments.len().min(TIMELINE_SCORES - 1);
            let mut moments = moments.split_off(moments.len() - keep);
            let now = checked_cutoff(model, &entity, now_ms);
            moments.retain(|&t| t < now);
            moments.push(now);
            let batch: Vec<CheckedEntity> = moments
                .iter()
                .map(|&t| checked(model, &entity, Some(t), now_ms))
                .collect();
            let options = ScoreOptions {
                reasons: false,
                max_reasons: 0,
                small: false,
            };
            let scored = model
                .model
                .score(batch, Arc::clone(&model.thresholds), options)
                .await?;
            moments
                .iter()
                .zip(scored)
                .map(|(&t, s)| {
                    serde_json::json!({
                        "at": show_time(t),
                        "probability": s.probability,
                        "score": s.score,
                        "grade": s.grade,
                        "sales_ready": s.sales_ready,
                    })
                })
                .collect()
        }
    };
    Ok(Json(serde_json::json!({
        "entity": entity.id,
        "kind": entity.record.kind.as_str(),
        "model": model.as_ref().map(ModelRef::from),
        "events_total": entity.record.event_count,
        "events": events,
        "scores": scores,
    })))
}
