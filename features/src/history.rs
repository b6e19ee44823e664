//! One entity's history as the feature kernel sees it: profile values and the events before
//! a cutoff. Both the batch builder and the server build these and nothing else reaches
//! [`crate::FeaturePlan::compute`].

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Every timestamp in the crate uses this unit.
pub type TimestampMs = i64;

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// One profile field of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProfileValue {
    Missing,
    Number(f64),
    Text(String),
}

/// One interaction of an entity with the company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ms: TimestampMs,
    pub event_type: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
}

/// An entity as of a cutoff: when it was created, its profile in the plan's profile-column
/// order, and its events (any order; the kernel only looks at those strictly before the
/// cutoff).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityHistory {
    pub created_at_ms: TimestampMs,
    pub profile: Vec<ProfileValue>,
    pub events: Vec<Event>,
}
