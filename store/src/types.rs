//! What the store holds and what a write says.

use features::history::{EntityHistory, Event, ProfileValue, TimestampMs};
use features::spec::Task;
use serde::{Deserialize, Serialize};

/// What an entity is, and so which models score it: a lead is scored by the propensity
/// models, a customer by the churn models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Lead,
    Customer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lead => "lead",
            Kind::Customer => "customer",
        }
    }

    /// The models of this task score entities of this kind.
    pub fn task(self) -> Task {
        match self {
            Kind::Lead => Task::Propensity,
            Kind::Customer => Task::Churn,
        }
    }

    /// The outcome that closes an entity of this kind (it leaves the sales queue).
    pub fn closing_outcome(self) -> OutcomeKind {
        match self {
            Kind::Lead => OutcomeKind::Converted,
            Kind::Customer => OutcomeKind::Churned,
        }
    }
}

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    Converted,
    Churned,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Converted => "converted",
            OutcomeKind::Churned => "churned",
        }
    }
}

/// An outcome and when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub at_ms: TimestampMs,
}

/// An event as sent: the client's id, when given, makes sending it again harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub ts_ms: TimestampMs,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

impl NewEvent {
    /// The event as the feature kernel reads it.
    pub fn to_event(&self) -> Event {
        Event {
            ts_ms: self.ts_ms,
            event_type: self.event_type.clone(),
            channel: self.channel.clone(),
            value: self.value,
        }
    }
}

/// How a write changes an entity's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileChange {
    /// The fields given are set; a field given as missing (`null`) is removed; the rest
    /// stay (`PATCH`, and profile fields sent with events).
    #[default]
    Merge,
    /// The fields given become the whole profile (`PUT`).
    Replace,
}

/// Everything one write does to one entity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityWrite {
    pub id: String,
    /// Set the kind (only when given; a new entity without one is a lead).
    pub kind: Option<Kind>,
    /// Set the creation time. A new entity without one is created at its earliest event
    /// (or, with none, at `now_ms`), and moves back with any earlier event until a creation
    /// time is given.
    pub created_at_ms: Option<TimestampMs>,
    pub profile: Vec<(String, ProfileValue)>,
    pub profile_change: ProfileChange,
    pub events: Vec<NewEvent>,
    pub outcomes: Vec<Outcome>,
    /// Scores to keep in the same commit, if the entity is still as the caller read it.
    pub scores_if: Option<ScoresIf>,
}

/// Scores a caller computed from the entity's history as [`predict`](crate::predict) says
/// the write leaves it: kept with the write only when the stored record is still
/// `record_before` (then the history after the write is the predicted one); else the write
/// goes alone and [`Written::scores_kept`] says so.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoresIf {
    /// The entity's record when the caller read its history; `None`: it was not stored.
    pub record_before: Option<EntityRecord>,
    pub scores: Vec<StoredScore>,
    /// The reasons of `scores[i]` at `i`, where the caller has them (missing past the end):
    /// a transition's webhook message carries them (they are not kept with the score).
    pub reasons: Vec<Option<serde_json::Value>>,
}

/// One write: any number of entities, applied all or nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub entities: Vec<EntityWrite>,
    /// The writer's clock: an entity's `updated_at`, and its creation time when nothing
    /// else gives one.
    pub now_ms: TimestampMs,
}

/// An entity as stored, without its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    pub kind: Kind,
    pub created_at_ms: TimestampMs,
    /// Whether the creation time was given (else it follows the earliest event).
    pub created_at_given: bool,
    pub profile: Profile,
    pub outcomes: Vec<Outcome>,
    /// Events stored now.
    pub event_count: u64,
    pub first_event_ms: Option<TimestampMs>,
    pub last_event_ms: Option<TimestampMs>,
    /// Events ever appended (stored or dropped since): a score computed from more of them
    /// is newer.
    pub events_appended: u64,
    pub updated_at_ms: TimestampMs,
}

impl EntityRecord {
    /// Not yet converted (a lead) or churned (a customer): in the sales queue.
    pub fn is_open(&self) -> bool {
        let closing = self.kind.closing_outcome();
        !self.outcomes.iter().any(|o| o.kind == closing)
    }

    /// When the entity last did something (its last event, else its creation).
    pub fn last_active_ms(&self) -> TimestampMs {
        self.last_event_ms.unwrap_or(self.created_at_ms)
    }
}

/// Profile fields in the order they were first sent (an export writes its columns in that
/// order, and a feature plan's column order follows the file's).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Profile(Vec<(String, ProfileValue)>);

impl Profile {
    pub fn get(&self, name: &str) -> Option<&ProfileValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets `name`; a new field goes last.
    pub fn insert(&mut self, name: String, value: ProfileValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fields in the order they were first sent.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ProfileValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(n, _)| n)
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub ts_ms: TimestampMs,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// An entity with its whole stored history, events in time order (ties in arrival order).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityWithEvents {
    pub id: String,
    pub record: EntityRecord,
    pub events: Vec<StoredEvent>,
}

impl EntityWithEvents {
    /// The history the feature kernel reads, with the profile in `fields`' order.
    pub fn to_history(&self, fields: &[String]) -> EntityHistory {
        EntityHistory {
            created_at_ms: self.record.created_at_ms,
            profile: fields
                .iter()
                .map(|f| {
                    self.record
                        .profile
                        .get(f)
                        .cloned()
                        .unwrap_or(ProfileValue::Missing)
                })
                .collect(),
            events: self
                .events
                .iter()
                .map(|e| Event {
                    ts_ms: e.ts_ms,
                    event_type: e.event_type.clone(),
                    channel: e.channel.clone(),
                    value: e.value,
                })
                .collect(),
        }
    }
}

/// A model's latest score of an entity. Its reasons are not kept: the stored history
/// scored again at `scored_at_ms` by the same version gives them back exactly (what the
/// server does when it shows a stored score), and a score without them is a fifth of the
/// bytes every commit rewrites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredScore {
    pub model: String,
    pub version: String,
    pub probability: f64,
    pub score: u8,
    pub grade: String,
    pub sales_ready: bool,
    /// The moment it was scored at (the features' cutoff).
    pub scored_at_ms: TimestampMs,
    /// [`EntityRecord::events_appended`] when it was scored.
    pub events_seen: u64,
}

/// A score to keep as an entity's latest.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreUpdate {
    pub entity: String,
    pub score: StoredScore,
    /// Its reasons, where the caller has them: a transition's webhook message carries them.
    pub reasons: Option<serde_json::Value>,
}

/// An entity and its latest scores, by model.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntity {
    pub id: String,
    pub record: EntityRecord,
    pub scores: Vec<StoredScore>,
}

/// What one write did to one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub id: String,
    /// The write created it.
    pub created: bool,
    pub events_added: u32,
    /// Events whose client id was already stored (or repeated in the batch).
    pub duplicates: u32,
    /// The oldest events dropped to keep the entity within the per-entity cap.
    pub dropped_at_cap: u32,
    pub record: EntityRecord,
    /// The write's [`EntityWrite::scores_if`] were kept with it.
    pub scores_kept: bool,
}

/// Counts and sizes of a store.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreStats {
    pub entities: u64,
    pub events: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// What a store keeps at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Events per entity: past it, the oldest are dropped as new ones arrive (the feature
    /// windows look at recent activity; the count over the whole history is capped).
    pub max_events_per_entity: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_events_per_entity: 10_000,
        }
    }
}

/// A part of the entities when the rescoring sweep is split between replicas: the entities
/// of part `index` of `of` (each backend splits by a hash of the id; every entity is in
/// exactly one part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: u32,
    pub of: u32,
}

impl Share {
    /// Every entity: one process sweeps them all.
    pub const ALL: Share = Share { index: 0, of: 1 };

    /// Whether an entity whose split hash is `hash` is in this part.
    pub fn holds(self, hash: u32) -> bool {
        self.of <= 1 || hash % self.of == self.index
    }
}
