//! What a write does to one entity, written once: every backend applies a write through
//! [`merge`] over its own event log, and [`predict`] runs the same function over a history
//! in memory, so a caller can score the history a write will leave before it is committed.

use features::history::{ProfileValue, TimestampMs};

use crate::{
    EntityRecord, EntityWithEvents, EntityWrite, NewEvent, ProfileChange, StoreLimits, StoredEvent,
};

/// An entity's event log as a backend keeps it, in time order (then order of arrival).
pub(crate) trait EventLog {
    type Error;
    /// Whether an event with this client id is stored.
    fn has_client_id(&mut self, client_id: &str) -> Result<bool, Self::Error>;
    /// Stores `event` as the entity's `seq`-th arrival.
    fn append(&mut self, seq: u64, event: &NewEvent) -> Result<(), Self::Error>;
    /// Drops the `n` oldest events (and their client ids); the time of the first left.
    fn drop_oldest(&mut self, n: usize) -> Result<Option<TimestampMs>, Self::Error>;
}

/// A write applied to one entity's record (its events went to the log).
pub(crate) struct Merged {
    pub record: EntityRecord,
    pub created: bool,
    /// It was stored and open before the write.
    pub was_open: bool,
    /// The write gave another kind: other models score it now.
    pub kind_changed: bool,
    pub added: u32,
    pub duplicates: u32,
    pub dropped: u32,
}

/// Applies `write` (its id and scores aside) to `existing`, appending its events to `log`.
pub(crate) fn merge<L: EventLog>(
    existing: Option<&EntityRecord>,
    write: &EntityWrite,
    now_ms: TimestampMs,
    limits: &StoreLimits,
    log: &mut L,
) -> Result<Merged, L::Error> {
    let created = existing.is_none();
    let mut record = existing.cloned().unwrap_or_else(|| EntityRecord {
        kind: write.kind.unwrap_or_default(),
        created_at_ms: write
            .created_at_ms
            .or_else(|| write.events.iter().map(|e| e.ts_ms).min())
            .unwrap_or(now_ms),
        created_at_given: write.created_at_ms.is_some(),
        profile: Default::default(),
        outcomes: Vec::new(),
        event_count: 0,
        first_event_ms: None,
        last_event_ms: None,
        events_appended: 0,
        updated_at_ms: now_ms,
    });
    let was_open = existing.is_some_and(EntityRecord::is_open);
    let kind_changed = write.kind.is_some_and(|k| k != record.kind);
    if let Some(k) = write.kind {
        record.kind = k;
    }
    if let Some(t) = write.created_at_ms {
        record.created_at_ms = t;
        record.created_at_given = true;
    }
    if write.profile_change == ProfileChange::Replace {
        record.profile.clear();
    }
    for (name, value) in &write.profile {
        if *value == ProfileValue::Missing {
            record.profile.remove(name);
        } else {
            record.profile.insert(name.clone(), value.clone());
        }
    }
    let mut added = 0u32;
    let mut duplicates = 0u32;
    for event in &write.events {
        if let Some(client_id) = &event.id
            && log.has_client_id(client_id)?
        {
            duplicates += 1;
            continue;
        }
        let seq = record.events_appended;
        record.events_appended += 1;
        log.append(seq, event)?;
        record.event_count += 1;
        added += 1;
        record.first_event_ms = Some(
            record
                .first_event_ms
                .map_or(event.ts_ms, |f| f.min(event.ts_ms)),
        );
        record.last_event_ms = Some(
            record
                .last_event_ms
                .map_or(event.ts_ms, |l| l.max(event.ts_ms)),
        );
        if !record.created_at_given && event.ts_ms < record.created_at_ms {
            record.created_at_ms = event.ts_ms;
        }
    }
    // The cap: the oldest events go.
    let max_events = limits.max_events_per_entity.max(1);
    let mut dropped = 0u32;
    if record.event_count > max_events {
        let excess = record.event_count - max_events;
        record.first_event_ms = log.drop_oldest(usize::try_from(excess).unwrap_or(usize::MAX))?;
        record.event_count = max_events;
        dropped = u32::try_from(excess).unwrap_or(u32::MAX);
    }
    for outcome in &write.outcomes {
        if !record.outcomes.contains(outcome) {
            record.outcomes.push(*outcome);
        }
    }
    record.outcomes.sort_by_key(|o| (o.at_ms, o.kind.as_str()));
    record.updated_at_ms = now_ms;
    Ok(Merged {
        record,
        created,
        was_open,
        kind_changed,
        added,
        duplicates,
        dropped,
    })
}

/// An event log in memory: a history's events.
struct InMemory<'a> {
    events: &'a mut Vec<StoredEvent>,
}

impl EventLog for InMemory<'_> {
    type Error = std::convert::Infallible;

    fn has_client_id(&mut self, client_id: &str) -> Result<bool, Self::Error> {
        Ok(self
            .events
            .iter()
            .any(|e| e.id.as_deref() == Some(client_id)))
    }

    fn append(&mut self, _seq: u64, event: &NewEvent) -> Result<(), Self::Error> {
        // A new arrival sorts after every stored event of the same time.
        let at = self.events.partition_point(|e| e.ts_ms <= event.ts_ms);
        self.events.insert(
            at,
            StoredEvent {
                id: event.id.clone(),
                ts_ms: event.ts_ms,
                event_type: event.event_type.clone(),
                channel: event.channel.clone(),
                value: event.value,
            },
        );
        Ok(())
    }

    fn drop_oldest(&mut self, n: usize) -> Result<Option<TimestampMs>, Self::Error> {
        self.events.drain(..n.min(self.events.len()));
        Ok(self.events.first().map(|e| e.ts_ms))
    }
}

/// The history `write` leaves, applied at `now_ms` to `before` (the entity's stored
/// history, `None` when it is not stored), exactly as a store with `limits` applies it.
pub fn predict(
    before: Option<EntityWithEvents>,
    write: &EntityWrite,
    now_ms: TimestampMs,
    limits: &StoreLimits,
) -> EntityWithEvents {
    let (record, mut events) = match before {
        Some(h) => (Some(h.record), h.events),
        None => (None, Vec::new()),
    };
    let mut log = InMemory {
        events: &mut events,
    };
    let Ok(merged) = merge(record.as_ref(), write, now_ms, limits, &mut log);
    EntityWithEvents {
        id: write.id.clone(),
        record: merged.record,
        events,
    }
}
