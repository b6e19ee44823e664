//! The webhook outbox: what a score change tells the outside world, kept with the change.
//!
//! When a backend keeps an entity's new latest score for a model, it compares it with the
//! score it replaces ([`transitions`]) and files a [`Delivery`] of each transition's
//! [`Message`] for every endpoint that wants it ([`Outbox::set_endpoints`]) **in the same
//! transaction**: a transition committed has its deliveries, and a delivery exists only for
//! a committed transition. The pending deliveries are the outbox. The server's delivery
//! worker takes the new ones after each commit ([`Outbox::take_new`]), sends each endpoint's
//! deliveries, in outbox order per entity, and records every attempt
//! ([`Outbox::record_attempt`]): delivered (the row goes), to be retried (attempts and next
//! time kept), or dead (moved to the endpoint's dead letters, which [`Outbox::replay`]
//! moves back).
//!
//! Every step is a store commit, so delivery state survives a restart: after a crash the
//! worker adopts the pending deliveries ([`Outbox::adopt`]) and goes on (at least once: an
//! attempt whose answer was not yet recorded is made again, with the same message id). The
//! first attempt of a message waits for no commit but its transition's.
//!
//! Replicas sharing a store each deliver what they filed; a replica that stops (killed, its lease
//! on life not renewed) leaves its pending deliveries to the first of the others to adopt
//! them.

use features::history::TimestampMs;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::{Kind, StoreFuture, StoredScore};

/// What changed about an entity's score, as a webhook's `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transition {
    /// A lead's score crossed into sales-ready.
    #[serde(rename = "lead.sales_ready")]
    LeadSalesReady,
    /// A lead's score left sales-ready.
    #[serde(rename = "lead.cooled")]
    LeadCooled,
    /// A lead's grade changed.
    #[serde(rename = "lead.grade_changed")]
    LeadGradeChanged,
    /// A customer's churn score crossed its model's threshold.
    #[serde(rename = "customer.churn_risk")]
    CustomerChurnRisk,
}

impl Transition {
    pub const ALL: [Transition; 4] = [
        Transition::LeadSalesReady,
        Transition::LeadCooled,
        Transition::LeadGradeChanged,
        Transition::CustomerChurnRisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::LeadSalesReady => "lead.sales_ready",
            Transition::LeadCooled => "lead.cooled",
            Transition::LeadGradeChanged => "lead.grade_changed",
            Transition::CustomerChurnRisk => "customer.churn_risk",
        }
    }

    pub fn parse(s: &str) -> Option<Transition> {
        Transition::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The transitions from `old` (the entity's stored latest score of the model, if any) to
/// `new`, for an entity of `kind` that is open (a converted lead or a churned customer has
/// none). A first score counts as coming from below the threshold, with no grade before.
pub fn transitions(kind: Kind, old: Option<&StoredScore>, new: &StoredScore) -> Vec<Transition> {
    let was_ready = old.is_some_and(|o| o.sales_ready);
    let mut out = Vec::new();
    match kind {
        Kind::Lead => {
            if new.sales_ready && !was_ready {
                out.push(Transition::LeadSalesReady);
            }
            if !new.sales_ready && was_ready {
                out.push(Transition::LeadCooled);
            }
            if old.is_some_and(|o| o.grade != new.grade) {
                out.push(Transition::LeadGradeChanged);
            }
        }
        Kind::Customer => {
            if new.sales_ready && !was_ready {
                out.push(Transition::CustomerChurnRisk);
            }
        }
    }
    out
}

/// One transition, as the outbox keeps it: everything a webhook's body says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique to this message in this store (and across stores: the store's random epoch
    /// is part of it); the `webhook-id` of every attempt of every delivery of it.
    pub id: String,
    /// Its place in the outbox: later transitions have higher sequences.
    pub seq: u64,
    #[serde(rename = "type")]
    pub transition: Transition,
    pub entity: String,
    pub kind: Kind,
    /// The score after the transition.
    pub score: StoredScore,
    /// The grade of the score it replaced.
    pub previous_grade: Option<String>,
    /// The score's reasons, when the writer of the score gave them.
    #[serde(default)]
    pub reasons: Option<serde_json::Value>,
    /// When the transition was committed.
    pub at_ms: TimestampMs,
}

/// Which messages an endpoint receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFilter {
    /// The endpoint's key in the store (its deliveries and dead letters are filed under it).
    pub endpoint: String,
    /// Only these models' transitions; `None`: every model's.
    pub models: Option<Vec<String>>,
    /// Only these transitions; `None`: every one.
    pub transitions: Option<Vec<Transition>>,
}

impl EndpointFilter {
    pub fn wants(&self, message: &Message) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.contains(&message.score.model))
            && self
                .transitions
                .as_ref()
                .is_none_or(|t| t.contains(&message.transition))
    }
}

/// One message on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint: String,
    pub message: Message,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be attempted before.
    pub next_at_ms: TimestampMs,
    /// What went wrong with the last attempt (a status code or an error kind; never the
    /// receiver's body).
    pub last_error: Option<String>,
    /// When it was moved to the dead letters (`None` while pending).
    pub dead_at_ms: Option<TimestampMs>,
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The receiver took it: the delivery is done.
    Delivered,
    /// To be tried again at `next_at_ms`.
    Retry {
        attempts: u32,
        next_at_ms: TimestampMs,
        error: String,
    },
    /// The schedule is exhausted (or the endpoint refuses it for good): a dead letter.
    Dead {
        attempts: u32,
        at_ms: TimestampMs,
        error: String,
    },
}

/// How much is waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Deliveries pending, by endpoint.
    pub pending: Vec<(String, u64)>,
    /// Dead letters, by endpoint.
    pub dead: Vec<(String, u64)>,
}

/// The outbox side of a store: every [`EntityStore`](crate::EntityStore) backend is one, and
/// the contract tests check it the same way.
pub trait Outbox: Send + Sync {
    /// The endpoints the messages of later commits are filed for: in the commit of its
    /// transition, a message gets a delivery for every one of them that wants it, next
    /// attempt at once; a message none wants is not kept. None until set.
    fn set_endpoints(&self, endpoints: Vec<EndpointFilter>);

    /// The deliveries filed by the commits since the last call, in outbox order (each
    /// commit's after the one before). Every one is also in [`Outbox::pending`] until its
    /// outcome is recorded.
    fn take_new(&self) -> Vec<Delivery>;

    /// Pending deliveries no running delivery worker holds, now held by this process's, at
    /// most `limit` per call, in (endpoint, outbox) order. An embedded store: those pending
    /// when it was opened (after a restart), until they are all given, then none. A store
    /// replicas share: those filed or adopted by replicas that stopped renewing their
    /// lease. What this process filed comes from [`Outbox::take_new`] and is never adopted.
    fn adopt(&self, limit: usize) -> StoreFuture<'_, Vec<Delivery>>;

    /// Pending deliveries in (endpoint, outbox) order after `after`, at most `limit`.
    fn pending(&self, after: Option<(String, u64)>, limit: usize)
    -> StoreFuture<'_, Vec<Delivery>>;

    /// One pending delivery, or `None` (done, dead, or its entity erased).
    fn delivery(&self, endpoint: &str, seq: u64) -> StoreFuture<'_, Option<Delivery>>;

    /// Records an attempt of the pending delivery `(endpoint, seq)`; nothing when it is no
    /// longer pending. Queued at the call (like [`put_scores`](crate::EntityStore::put_scores)).
    fn record_attempt(
        &self,
        endpoint: String,
        seq: u64,
        attempt: Attempt,
    ) -> StoreFuture<'static, ()>;

    /// Dead letters of `endpoint` (or of every endpoint) in (endpoint, outbox) order after
    /// `after`, at most `limit`.
    fn dead_letters(
        &self,
        endpoint: Option<String>,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Delivery>>;

    /// Moves dead letters of `endpoint` back to pending, attempts reset, next attempt at
    /// `now_ms`: those of `seqs`, or all. Returns the deliveries moved.
    fn replay(
        &self,
        endpoint: String,
        seqs: Option<Vec<u64>>,
        now_ms: TimestampMs,
    ) -> StoreFuture<'_, Vec<Delivery>>;

    /// What is waiting, for `/metrics` and the admin routes.
    fn outbox_stats(&self) -> StoreFuture<'_, OutboxStats>;

    /// Notified after every commit that filed deliveries.
    fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
}

/// The in-process side of an outbox, the same for every backend: the endpoints messages
/// are filed for, the deliveries committed by this process and not yet taken, and the signal
/// the delivery worker waits on.
#[derive(Debug, Default)]
pub(crate) struct Filing {
    endpoints: RwLock<Vec<EndpointFilter>>,
    fresh: Mutex<Vec<Delivery>>,
    signal: Arc<tokio::sync::Notify>,
}

impl Filing {
    pub(crate) fn set_endpoints(&self, endpoints: Vec<EndpointFilter>) {
        *self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = endpoints;
    }

    pub(crate) fn take_new(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.fresh.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.signal)
    }

    /// Hands the deliveries a commit filed to [`Outbox::take_new`], and says so.
    pub(crate) fn filed(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        self.fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(deliveries);
        self.signal.notify_one();
    }

    /// The endpoints in force, and the messages one of them wants (the others are not kept).
    pub(crate) fn wanted(&self, messages: Vec<Message>) -> (Vec<EndpointFilter>, Vec<Message>) {
        let endpoints = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let wanted = messages
            .into_iter()
            .filter(|m| endpoints.iter().any(|e| e.wants(m)))
            .collect();
        (endpoints, wanted)
    }
}

/// Gives `message` its sequence and its id (the store's `epoch` and the sequence) and makes
/// a delivery of it, first attempt at `now_ms`, for every endpoint that wants it.
pub(crate) fn deliveries(
    endpoints: &[EndpointFilter],
    mut message: Message,
    seq: u64,
    epoch: u64,
    now_ms: TimestampMs,
) -> Vec<Delivery> {
    message.seq = seq;
    message.id = format!("msg_{epoch:016x}{seq:016x}");
    endpoints
        .iter()
        .filter(|e| e.wants(&message))
        .map(|e| Delivery {
            endpoint: e.endpoint.clone(),
            message: message.clone(),
            attempts: 0,
            next_at_ms: now_ms,
            last_error: None,
            dead_at_ms: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ready: bool, grade: &str) -> StoredScore {
        StoredScore {
            model: "propensity".into(),
            version: "v1".into(),
            probability: 0.5,
            score: 50,
            grade: grade.into(),
            sales_ready: ready,
            scored_at_ms: 0,
            events_seen: 1,
        }
    }

    #[test]
    fn transitions_follow_the_flag_and_the_grade() {
        use Transition::*;
        let lead = Kind::Lead;
        assert_eq!(transitions(lead, None, &s(false, "C")), vec![]);
        assert_eq!(transitions(lead, None, &s(true, "A")), vec![LeadSalesReady]);
        assert_eq!(
            transitions(lead, Some(&s(false, "B")), &s(true, "A")),
            vec![LeadSalesReady, LeadGradeChanged]
        );
        assert_eq!(
            transitions(lead, Some(&s(true, "A")), &s(false, "A")),
            vec![LeadCooled]
        );
        assert_eq!(
            transitions(lead, Some(&s(true, "A")), &s(true, "A")),
            vec![]
        );
        assert_eq!(
            transitions(lead, Some(&s(false, "D")), &s(false, "C")),
            vec![LeadGradeChanged]
        );
        let customer = Kind::Customer;
        assert_eq!(
            transitions(customer, Some(&s(false, "B")), &s(true, "A")),
            vec![CustomerChurnRisk]
        );
        assert_eq!(
            transitions(customer, Some(&s(true, "A")), &s(false, "B")),
            vec![]
        );
        for t in Transition::ALL {
            assert_eq!(Transition::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }
}
