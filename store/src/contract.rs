//! The contract every [`EntityStore`] backend passes, unchanged: one async function per
//! rule, each given a fresh, empty store. [`contract_tests!`](crate::contract_tests) turns
//! them into `#[tokio::test]`s for a backend:
//!
//! ```ignore
//! store::contract_tests!(|limits| open_my_backend(limits));
//! ```
//!
//! The functions panic on a broken rule, naming it.

use features::history::ProfileValue;

use crate::{
    Attempt, EndpointFilter, EntityStore, EntityWrite, Kind, NewEvent, Outcome, OutcomeKind,
    ProfileChange, ScoreUpdate, ScoresIf, Share, StoreLimits, StoredScore, Transition, WriteBatch,
};

/// The limits [`cap_drops_the_oldest_events`] runs under.
pub const SMALL_CAP: StoreLimits = StoreLimits {
    max_events_per_entity: 3,
};

const NOW: i64 = 1_790_000_000_000;
const HOUR: i64 = 3_600_000;

fn event(id: Option<&str>, ts_ms: i64, event_type: &str) -> NewEvent {
    NewEvent {
        id: id.map(str::to_owned),
        ts_ms,
        event_type: event_type.into(),
        channel: Some("web".into()),
        value: None,
    }
}

fn events_of(id: &str, events: Vec<NewEvent>) -> WriteBatch {
    WriteBatch {
        entities: vec![EntityWrite {
            id: id.into(),
            events,
            ..Default::default()
        }],
        now_ms: NOW,
    }
}

fn score(model: &str, probability: f64, events_seen: u64) -> StoredScore {
    StoredScore {
        model: model.into(),
        version: "v1".into(),
        probability,
        score: (probability * 100.0).round() as u8,
        grade: "B".into(),
        sales_ready: probability > 0.5,
        scored_at_ms: NOW,
        events_seen,
    }
}

async fn put(store: &dyn EntityStore, entity: &str, s: StoredScore) {
    store
        .put_scores(vec![ScoreUpdate {
            entity: entity.into(),
            score: s,
            reasons: None,
        }])
        .await
        .expect("put_scores");
}

/// A partial update merges; `null` removes a field; a replace sets the whole profile.
pub async fn profiles_merge_and_replace(store: &dyn EntityStore) {
    let write = |fields: Vec<(&str, ProfileValue)>, change| WriteBatch {
        entities: vec![EntityWrite {
            id: "L-1".into(),
            profile: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            profile_change: change,
            ..Default::default()
        }],
        now_ms: NOW,
    };
    let w = store
        .write(write(
            vec![
                ("industry", ProfileValue::Text("software".into())),
                ("employees", ProfileValue::Number(120.0)),
            ],
            ProfileChange::Merge,
        ))
        .await
        .expect("write");
    assert!(w[0].created, "the first write creates the entity");
    assert_eq!(
        w[0].record.kind,
        Kind::Lead,
        "an entity is a lead by default"
    );
    assert_eq!(
        w[0].record.created_at_ms, NOW,
        "without events or a creation time, an entity is created at the writer's clock"
    );
    store
        .write(write(
            vec![
                ("employees", ProfileValue::Number(150.0)),
                ("industry", ProfileValue::Missing),
                ("country", ProfileValue::Text("DE".into())),
            ],
            ProfileChange::Merge,
        ))
        .await
        .expect("write");
    let e = store.entity("L-1").await.expect("read").expect("stored");
    let profile: Vec<(&str, &ProfileValue)> = e
        .record
        .profile
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert_eq!(
        profile,
        vec![
            ("employees", &ProfileValue::Number(150.0)),
            ("country", &ProfileValue::Text("DE".into())),
        ],
        "a merge sets what it gives, removes what it gives as null, keeps the rest, \
         in the order first sent"
    );
    store
        .write(write(
            vec![("source", ProfileValue::Text("ads".into()))],
            ProfileChange::Replace,
        ))
        .await
        .expect("write");
    let e = store.entity("L-1").await.expect("read").expect("stored");
    assert_eq!(
        e.record.profile.len(),
        1,
        "a replace sets the whole profile"
    );
    assert_eq!(
        e.record.profile.get("source"),
        Some(&ProfileValue::Text("ads".into()))
    );
    assert!(store.entity("L-2").await.expect("read").is_none());
}

/// A client event id stored once is never stored twice, within a batch or across batches;
/// events without an id are all stored.
pub async fn events_are_idempotent_by_client_id(store: &dyn EntityStore) {
    let w = store
        .write(events_of(
            "L-1",
            vec![
                event(Some("e-1"), NOW - 3 * HOUR, "web_visit"),
                event(Some("e-1"), NOW - 3 * HOUR, "web_visit"),
                event(None, NOW - 2 * HOUR, "email_open"),
            ],
        ))
        .await
        .expect("write");
    assert_eq!((w[0].events_added, w[0].duplicates), (2, 1));
    let w = store
        .write(events_of(
            "L-1",
            vec![
                event(Some("e-1"), NOW - 3 * HOUR, "web_visit"),
                event(Some("e-2"), NOW - HOUR, "demo_request"),
                event(None, NOW - 2 * HOUR, "email_open"),
            ],
        ))
        .await
        .expect("write");
    assert_eq!((w[0].events_added, w[0].duplicates), (2, 1));
    assert_eq!(w[0].record.event_count, 4);
    // The same client id on another entity is another event.
    let w = store
        .write(events_of(
            "L-2",
            vec![event(Some("e-1"), NOW - HOUR, "web_visit")],
        ))
        .await
        .expect("write");
    assert_eq!((w[0].events_added, w[0].duplicates), (1, 0));
    let h = store.history("L-1").await.expect("read").expect("stored");
    let types: Vec<&str> = h.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["web_visit", "email_open", "email_open", "demo_request"],
        "events come back in time order, ties in arrival order"
    );
    assert_eq!(h.events[0].id.as_deref(), Some("e-1"));
    assert_eq!(h.events[0].channel.as_deref(), Some("web"));
    assert_eq!(h.record.first_event_ms, Some(NOW - 3 * HOUR));
    assert_eq!(h.record.last_event_ms, Some(NOW - HOUR));
}

/// An entity created by its events starts at the earliest and moves back with an earlier
/// one, until a creation time is given.
pub async fn creation_follows_the_earliest_event_until_given(store: &dyn EntityStore) {
    let w = store
        .write(events_of(
            "L-1",
            vec![
                event(None, NOW - 2 * HOUR, "a"),
                event(None, NOW - 5 * HOUR, "b"),
            ],
        ))
        .await
        .expect("write");
    assert_eq!(w[0].record.created_at_ms, NOW - 5 * HOUR);
    assert!(!w[0].record.created_at_given);
    let w = store
        .write(events_of("L-1", vec![event(None, NOW - 9 * HOUR, "c")]))
        .await
        .expect("write");
    assert_eq!(w[0].record.created_at_ms, NOW - 9 * HOUR);
    let given = WriteBatch {
        entities: vec![EntityWrite {
            id: "L-1".into(),
            created_at_ms: Some(NOW - 7 * HOUR),
            ..Default::default()
        }],
        now_ms: NOW,
    };
    store.write(given).await.expect("write");
    let w = store
        .write(events_of("L-1", vec![event(None, NOW - 20 * HOUR, "d")]))
        .await
        .expect("write");
    assert_eq!(
        w[0].record.created_at_ms,
        NOW - 7 * HOUR,
        "a given creation time stays"
    );
    assert!(w[0].record.created_at_given);
}

/// The latest score per model is kept; an older one (fewer events seen) never replaces a
/// newer; the queue reads the best first, by band, and only open entities.
pub async fn scores_and_the_queue(store: &dyn EntityStore) {
    for id in ["L-1", "L-2", "L-3", "L-4"] {
        store
            .write(events_of(id, vec![event(None, NOW - HOUR, "web_visit")]))
            .await
            .expect("write");
    }
    put(store, "L-1", score("propensity", 0.30, 1)).await;
    put(store, "L-2", score("propensity", 0.90, 1)).await;
    put(store, "L-3", score("propensity", 0.60, 1)).await;
    put(store, "L-4", score("propensity", 0.60, 1)).await;
    put(store, "L-1", score("other", 0.99, 1)).await;
    let top = store.top("propensity", 10, None).await.expect("top");
    let order: Vec<(&str, f64)> = top
        .iter()
        .map(|(id, s)| (id.as_str(), s.probability))
        .collect();
    assert_eq!(
        order,
        vec![("L-2", 0.9), ("L-3", 0.6), ("L-4", 0.6), ("L-1", 0.3)],
        "best first, ties by id; another model's scores are another queue"
    );
    assert_eq!(
        store.top("propensity", 2, None).await.expect("top").len(),
        2
    );
    let band = store
        .top("propensity", 10, Some((0.5, 0.9)))
        .await
        .expect("top");
    let ids: Vec<&str> = band.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["L-3", "L-4"], "a band is [lo, hi)");
    // A score from fewer events never moves the latest back; one from as many replaces it.
    put(store, "L-2", score("propensity", 0.10, 0)).await;
    put(store, "L-3", score("propensity", 0.95, 1)).await;
    let top = store.top("propensity", 10, None).await.expect("top");
    let order: Vec<&str> = top.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(order, vec!["L-3", "L-2", "L-4", "L-1"]);
    let e = store.entity("L-1").await.expect("read").expect("stored");
    let mut models: Vec<&str> = e.scores.iter().map(|s| s.model.as_str()).collect();
    models.sort_unstable();
    assert_eq!(models, vec!["other", "propensity"]);
    // A converted lead leaves the queue and stays out when scored again; its scores stay.
    let converted = WriteBatch {
        entities: vec![EntityWrite {
            id: "L-3".into(),
            outcomes: vec![Outcome {
                kind: OutcomeKind::Converted,
                at_ms: NOW,
            }],
            ..Default::default()
        }],
        now_ms: NOW,
    };
    let w = store.write(converted.clone()).await.expect("write");
    assert!(!w[0].record.is_open());
    put(store, "L-3", score("propensity", 0.97, 2)).await;
    let top = store.top("propensity", 10, None).await.expect("top");
    assert!(
        top.iter().all(|(id, _)| id != "L-3"),
        "closed entities leave the queue"
    );
    let e = store.entity("L-3").await.expect("read").expect("stored");
    assert_eq!(e.scores[0].probability, 0.97);
    // The same outcome twice is one outcome.
    let w = store.write(converted).await.expect("write");
    assert_eq!(w[0].record.outcomes.len(), 1);
    // A score of an entity that is not stored is dropped.
    put(store, "L-9", score("propensity", 0.5, 1)).await;
    assert!(store.entity("L-9").await.expect("read").is_none());
}

/// A customer is closed by churning, not by converting; a new kind drops the scores of the
/// old kind's models.
pub async fn kinds_decide_what_closes_and_what_scores(store: &dyn EntityStore) {
    let customer = WriteBatch {
        entities: vec![EntityWrite {
            id: "C-1".into(),
            kind: Some(Kind::Customer),
            outcomes: vec![Outcome {
                kind: OutcomeKind::Converted,
                at_ms: NOW - HOUR,
            }],
            ..Default::default()
        }],
        now_ms: NOW,
    };
    let w = store.write(customer).await.expect("write");
    assert!(
        w[0].record.is_open(),
        "a converted customer is still a customer"
    );
    put(store, "C-1", score("churn", 0.4, 0)).await;
    assert_eq!(store.top("churn", 5, None).await.expect("top").len(), 1);
    let lead = WriteBatch {
        entities: vec![EntityWrite {
            id: "C-1".into(),
            kind: Some(Kind::Lead),
            ..Default::default()
        }],
        now_ms: NOW,
    };
    store.write(lead).await.expect("write");
    assert!(store.top("churn", 5, None).await.expect("top").is_empty());
    let e = store.entity("C-1").await.expect("read").expect("stored");
    assert!(
        e.scores.is_empty(),
        "the churn model's score went with the kind"
    );
}

/// Erasure removes the profile, events, outcomes, scores and queue entries; the id can be
/// used again from nothing.
pub async fn erasure_removes_everything(store: &dyn EntityStore) {
    let mut batch = events_of(
        "L-1",
        vec![
            event(Some("e-1"), NOW - HOUR, "web_visit"),
            event(None, NOW - 2 * HOUR, "email_open"),
        ],
    );
    batch.entities[0].profile = vec![("industry".into(), ProfileValue::Text("retail".into()))];
    batch.entities[0].outcomes = vec![Outcome {
        kind: OutcomeKind::Churned,
        at_ms: NOW,
    }];
    store.write(batch).await.expect("write");
    store
        .write(events_of("L-2", vec![event(None, NOW - HOUR, "web_visit")]))
        .await
        .expect("write");
    put(store, "L-1", score("propensity", 0.8, 2)).await;
    put(store, "L-2", score("propensity", 0.7, 1)).await;
    assert!(store.erase("L-1").await.expect("erase"));
    assert!(!store.erase("L-1").await.expect("erase"), "erased once");
    assert!(store.entity("L-1").await.expect("read").is_none());
    assert!(store.history("L-1").await.expect("read").is_none());
    let top = store.top("propensity", 10, None).await.expect("top");
    let ids: Vec<&str> = top.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["L-2"]);
    let active = store
        .active_since(i64::MIN, None, 10, Share::ALL)
        .await
        .expect("active");
    assert!(active.iter().all(|e| e.id != "L-1"));
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.entities, stats.events), (1, 1));
    // The client event id is free again.
    let w = store
        .write(events_of(
            "L-1",
            vec![event(Some("e-1"), NOW - HOUR, "web_visit")],
        ))
        .await
        .expect("write");
    assert!(w[0].created);
    assert_eq!((w[0].events_added, w[0].duplicates), (1, 0));
    assert!(w[0].record.outcomes.is_empty());
    assert!(w[0].record.profile.is_empty());
    store.reclaim().await.expect("reclaim");
    let e = store.entity("L-2").await.expect("read").expect("kept");
    assert_eq!(e.scores.len(), 1, "reclaiming keeps what is live");
    assert_eq!(store.stats().await.expect("stats").events, 2);
}

/// Past the cap the oldest events go (run with [`SMALL_CAP`]).
pub async fn cap_drops_the_oldest_events(store: &dyn EntityStore) {
    let w = store
        .write(events_of(
            "L-1",
            (0..5)
                .map(|i| event(Some(&format!("e-{i}")), NOW - (10 - i) * HOUR, "v"))
                .collect(),
        ))
        .await
        .expect("write");
    assert_eq!(w[0].events_added, 5);
    assert_eq!(w[0].dropped_at_cap, 2);
    assert_eq!(w[0].record.event_count, 3);
    assert_eq!(w[0].record.first_event_ms, Some(NOW - 8 * HOUR));
    let h = store.history("L-1").await.expect("read").expect("stored");
    let ids: Vec<&str> = h.events.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, vec!["e-2", "e-3", "e-4"]);
    // An older event than all kept goes at once.
    let w = store
        .write(events_of("L-1", vec![event(None, NOW - 50 * HOUR, "old")]))
        .await
        .expect("write");
    assert_eq!((w[0].events_added, w[0].dropped_at_cap), (1, 1));
    let h = store.history("L-1").await.expect("read").expect("stored");
    assert!(h.events.iter().all(|e| e.event_type == "v"));
}

/// The sweep pages through the recently active entities with their events, the export
/// through all, both in id order.
pub async fn paging_through_active_and_all_entities(store: &dyn EntityStore) {
    for i in 0..25 {
        store
            .write(events_of(
                &format!("L-{i:02}"),
                vec![event(None, NOW - i64::from(i) * HOUR, "v")],
            ))
            .await
            .expect("write");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .active_since(NOW - 9 * HOUR, cursor.clone(), 4, Share::ALL)
            .await
            .expect("active");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        cursor = page.last().map(|e| e.id.clone());
        assert!(
            page.iter().all(|e| e.events.len() == 1),
            "with their events"
        );
        seen.extend(page.into_iter().map(|e| e.id));
    }
    let expected: Vec<String> = (0..10).map(|i| format!("L-{i:02}")).collect();
    assert_eq!(
        seen, expected,
        "active at or after the time, each once, in id order"
    );
    // Split three ways (replicas sharing the sweep), the parts are disjoint and cover it.
    let mut parts: Vec<String> = Vec::new();
    for index in 0..3 {
        let share = Share { index, of: 3 };
        let part = store
            .active_since(NOW - 9 * HOUR, None, 100, share)
            .await
            .expect("active");
        parts.extend(part.into_iter().map(|e| e.id));
    }
    parts.sort();
    assert_eq!(parts, expected, "every active entity in exactly one part");
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan(after.clone(), 7).await.expect("scan");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.id.clone());
        all.extend(page.into_iter().map(|e| (e.id, e.events.len())));
    }
    assert_eq!(all.len(), 25);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in id order");
    assert!(all.iter().all(|(_, n)| *n == 1));
}

/// Retention drops events older than a time and keeps the counts true.
pub async fn retention_expires_old_events(store: &dyn EntityStore) {
    store
        .write(events_of(
            "L-1",
            vec![
                event(Some("old"), NOW - 100 * HOUR, "v"),
                event(None, NOW - HOUR, "v"),
            ],
        ))
        .await
        .expect("write");
    let n = store.expire_events(NOW - 10 * HOUR).await.expect("expire");
    assert_eq!(n, 1);
    let h = store.history("L-1").await.expect("read").expect("stored");
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.record.event_count, 1);
    assert_eq!(h.record.first_event_ms, Some(NOW - HOUR));
}

/// Many writes queued at once (the embedded backend commits them in groups): every
/// acknowledged event is stored exactly once.
pub async fn queued_writes_are_each_applied_once(store: &dyn EntityStore) {
    let writes = (0..200).map(|i| {
        store.write(events_of(
            &format!("L-{}", i % 7),
            vec![event(
                Some(&format!("e-{}", i % 150)),
                NOW - i64::from(i),
                "v",
            )],
        ))
    });
    // Each write is sent when called; awaiting them in order lets the writer group them.
    let pending: Vec<_> = writes.collect();
    let mut added = 0;
    for write in pending {
        added += write.await.expect("write")[0].events_added;
    }
    let stats = store.stats().await.expect("stats");
    assert_eq!(u64::from(added), stats.events);
    // e-0..e-149 per entity: i and i+150 collide only when they name the same entity.
    let expected = (0..200)
        .map(|i| (i % 7, i % 150))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(stats.events, expected as u64);
}

/// Scores left to a task of their own (not awaited by the caller) are kept once `settle`
/// resolves, in the order asked: what the server does after answering a write.
pub async fn settle_waits_for_scores_not_awaited(store: &dyn EntityStore) {
    for i in 0..20u32 {
        store
            .write(events_of(
                &format!("S-{i}"),
                vec![event(None, NOW - HOUR, "web_visit")],
            ))
            .await
            .expect("write");
    }
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        // Two scores of one entity asked in order: the later one is kept.
        for p in [0.2, 0.4 + f64::from(i) / 100.0] {
            let pending = store.put_scores(vec![ScoreUpdate {
                entity: format!("S-{i}"),
                score: score("propensity", p, 1),
                reasons: None,
            }]);
            tasks.push(tokio::spawn(pending));
        }
    }
    store.settle().await.expect("settle");
    let top = store.top("propensity", 100, None).await.expect("top");
    assert_eq!(top.len(), 20, "every score asked before settle is kept");
    assert_eq!(top[0].0, "S-19");
    assert!(
        top.iter().all(|(_, s)| s.probability >= 0.4),
        "the later score of each entity is its latest"
    );
    for task in tasks {
        task.await.expect("task").expect("put_scores");
    }
}

/// One `#[tokio::test]` per contract rule, for the backend `make(limits)` opens fresh.
/// [`predict`](crate::predict) gives, write after write, the history the store is left with:
/// merges, replaces and removed fields, duplicates within and across writes, events out of
/// order and at the same time, a new kind, outcomes, and (under [`SMALL_CAP`]) the cap.
pub async fn predict_agrees_with_the_store(store: &dyn EntityStore) {
    let field = |name: &str, value: ProfileValue| (name.to_owned(), value);
    let writes = vec![
        EntityWrite {
            id: "L-1".into(),
            profile: vec![field("source", ProfileValue::Text("web".into()))],
            events: vec![
                event(Some("a"), NOW - 5 * HOUR, "web_visit"),
                event(Some("a"), NOW - 5 * HOUR, "web_visit"),
                event(None, NOW - 7 * HOUR, "email_open"),
            ],
            ..Default::default()
        },
        EntityWrite {
            id: "L-1".into(),
            profile: vec![
                field("employees", ProfileValue::Number(40.0)),
                field("source", ProfileValue::Missing),
            ],
            events: vec![
                event(Some("b"), NOW - 5 * HOUR, "pricing_page_view"),
                event(Some("a"), NOW - 4 * HOUR, "web_visit"),
                event(None, NOW - 9 * HOUR, "email_open"),
            ],
            ..Default::default()
        },
        EntityWrite {
            id: "L-1".into(),
            created_at_ms: Some(NOW - 20 * HOUR),
            profile: vec![field("industry", ProfileValue::Text("retail".into()))],
            profile_change: ProfileChange::Replace,
            events: vec![event(Some("c"), NOW - 30 * HOUR, "form_submit")],
            outcomes: vec![Outcome {
                kind: OutcomeKind::Converted,
                at_ms: NOW - HOUR,
            }],
            ..Default::default()
        },
        EntityWrite {
            id: "L-1".into(),
            kind: Some(Kind::Customer),
            events: vec![
                event(Some("d"), NOW - 2 * HOUR, "purchase"),
                event(Some("e"), NOW - 2 * HOUR, "purchase"),
            ],
            ..Default::default()
        },
        EntityWrite {
            id: "L-2".into(),
            kind: Some(Kind::Customer),
            ..Default::default()
        },
    ];
    let limits = store.limits();
    for (i, write) in writes.into_iter().enumerate() {
        let before = store.history(&write.id).await.expect("read");
        let predicted = crate::predict(before, &write, NOW + i as i64, &limits);
        let id = write.id.clone();
        store
            .write(WriteBatch {
                entities: vec![write],
                now_ms: NOW + i as i64,
            })
            .await
            .expect("write");
        let after = store.history(&id).await.expect("read").expect("stored");
        assert_eq!(
            predicted, after,
            "write {i}: predicted and stored histories"
        );
    }
}

/// Scores sent with a write ([`ScoresIf`]) are kept in its commit when the entity is still
/// as the caller read it, and not otherwise.
pub async fn scores_go_with_a_write_only_if_the_entity_is_as_read(store: &dyn EntityStore) {
    let limits = store.limits();
    let with_scores = |write: EntityWrite, before: Option<crate::EntityRecord>, p: f64| {
        let seen = before.as_ref().map_or(0, |r| r.events_appended) + write.events.len() as u64;
        EntityWrite {
            scores_if: Some(ScoresIf {
                record_before: before,
                scores: vec![score("propensity", p, seen)],
                reasons: Vec::new(),
            }),
            ..write
        }
    };
    // A new entity, read as absent.
    let first = EntityWrite {
        id: "L-1".into(),
        events: vec![event(Some("e-1"), NOW - HOUR, "web_visit")],
        ..Default::default()
    };
    let w = store
        .write(WriteBatch {
            entities: vec![with_scores(first, None, 0.4)],
            now_ms: NOW,
        })
        .await
        .expect("write");
    assert!(w[0].scores_kept, "a new entity read as absent");
    // The next event, read as it is.
    let before = store.history("L-1").await.expect("read").expect("stored");
    let read = before.record.clone();
    let second = EntityWrite {
        id: "L-1".into(),
        events: vec![event(Some("e-2"), NOW - HOUR / 2, "demo_request")],
        ..Default::default()
    };
    let predicted = crate::predict(Some(before), &second, NOW + 1, &limits);
    let w = store
        .write(WriteBatch {
            entities: vec![with_scores(second, Some(read.clone()), 0.7)],
            now_ms: NOW + 1,
        })
        .await
        .expect("write");
    assert!(w[0].scores_kept);
    assert_eq!(w[0].record, predicted.record);
    let e = store.entity("L-1").await.expect("read").expect("stored");
    assert_eq!(e.scores.len(), 1);
    assert_eq!(e.scores[0].probability, 0.7);
    let top = store.top("propensity", 10, None).await.expect("top");
    assert_eq!(top.len(), 1);
    assert_eq!((top[0].0.as_str(), top[0].1.probability), ("L-1", 0.7));
    // Read before the last write: the write goes, its scores do not.
    let third = EntityWrite {
        id: "L-1".into(),
        events: vec![event(Some("e-3"), NOW - HOUR / 4, "web_visit")],
        ..Default::default()
    };
    let w = store
        .write(WriteBatch {
            entities: vec![with_scores(third, Some(read), 0.9)],
            now_ms: NOW + 2,
        })
        .await
        .expect("write");
    assert!(!w[0].scores_kept, "the entity changed since it was read");
    assert_eq!(w[0].events_added, 1);
    let e = store.entity("L-1").await.expect("read").expect("stored");
    assert_eq!(e.scores[0].probability, 0.7, "the stored score stays");
    assert_eq!(e.record.event_count, 3);
}

fn graded(model: &str, ready: bool, grade: &str, events_seen: u64) -> StoredScore {
    StoredScore {
        sales_ready: ready,
        grade: grade.into(),
        ..score(model, if ready { 0.8 } else { 0.2 }, events_seen)
    }
}

fn every(endpoint: &str) -> EndpointFilter {
    EndpointFilter {
        endpoint: endpoint.into(),
        models: None,
        transitions: None,
    }
}

/// A kept score that crosses the sales-ready line, leaves it or changes grade writes its
/// transitions to the outbox with it, in order; a score not kept, a closed entity and an
/// unchanged score write none. A write's own scores ([`ScoresIf`]) do the same.
pub async fn score_changes_write_their_transitions(store: &dyn EntityStore) {
    store.set_endpoints(vec![every("crm")]);
    let customer = WriteBatch {
        entities: vec![EntityWrite {
            id: "C-1".into(),
            kind: Some(Kind::Customer),
            ..Default::default()
        }],
        now_ms: NOW,
    };
    store.write(customer).await.expect("write");
    store
        .write(events_of("L-1", vec![event(None, NOW - HOUR, "web_visit")]))
        .await
        .expect("write");
    put(store, "L-1", graded("propensity", false, "C", 1)).await;
    put(store, "L-1", graded("propensity", true, "A", 1)).await;
    put(store, "L-1", graded("propensity", true, "A", 1)).await;
    // Fewer events seen than the stored score: not kept, no transition.
    put(store, "L-1", graded("propensity", false, "D", 0)).await;
    put(store, "L-1", graded("propensity", false, "A", 1)).await;
    put(store, "C-1", graded("churn", true, "A", 0)).await;
    // Through a write: the event and the scores computed for it, in one commit.
    let record_before = store.entity("L-1").await.expect("read").map(|e| e.record);
    let mut write = events_of("L-1", vec![event(None, NOW - 1, "demo_request")]);
    write.entities[0].scores_if = Some(ScoresIf {
        record_before,
        scores: vec![graded("propensity", true, "B", 2)],
        reasons: vec![Some(serde_json::json!({"positive": ["a demo request"]}))],
    });
    let w = store.write(write).await.expect("write");
    assert!(w[0].scores_kept);
    let deliveries = store.take_new();
    let seen: Vec<(&str, Transition, Option<&str>, &str)> = deliveries
        .iter()
        .map(|d| {
            (
                d.message.entity.as_str(),
                d.message.transition,
                d.message.previous_grade.as_deref(),
                d.message.score.grade.as_str(),
            )
        })
        .collect();
    use Transition::*;
    assert_eq!(
        seen,
        vec![
            ("L-1", LeadSalesReady, Some("C"), "A"),
            ("L-1", LeadGradeChanged, Some("C"), "A"),
            ("L-1", LeadCooled, Some("A"), "A"),
            ("C-1", CustomerChurnRisk, None, "A"),
            ("L-1", LeadSalesReady, Some("A"), "B"),
            ("L-1", LeadGradeChanged, Some("A"), "B"),
        ],
        "transitions in commit order, each against the score it replaced"
    );
    assert!(deliveries[..4].iter().all(|d| d.message.reasons.is_none()));
    assert!(
        deliveries[4..]
            .iter()
            .all(|d| d.message.reasons == Some(serde_json::json!({"positive": ["a demo request"]}))),
        "a message carries the reasons given with its score"
    );
    let seqs: Vec<u64> = deliveries.iter().map(|d| d.message.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let mut ids: Vec<&str> = deliveries.iter().map(|d| d.message.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), deliveries.len(), "message ids are unique");
    assert!(
        deliveries
            .iter()
            .all(|d| d.attempts == 0 && d.last_error.is_none())
    );
    assert_eq!(
        store.pending(None, 100).await.expect("pending"),
        deliveries,
        "what take_new gives is pending in the store"
    );
    // A closed lead makes no transitions.
    let converted = WriteBatch {
        entities: vec![EntityWrite {
            id: "L-1".into(),
            outcomes: vec![Outcome {
                kind: OutcomeKind::Converted,
                at_ms: NOW,
            }],
            ..Default::default()
        }],
        now_ms: NOW,
    };
    store.write(converted).await.expect("write");
    put(store, "L-1", graded("propensity", false, "D", 3)).await;
    let after = store.take_new();
    assert!(after.is_empty(), "{after:?}");
}

/// A message is filed as a delivery for each endpoint that wants it; none is filed before
/// endpoints are set; attempts move a delivery (retry, delivered, dead); replay brings dead
/// letters back; erasure drops an entity's deliveries.
pub async fn deliveries_move_through_attempts(store: &dyn EntityStore) {
    store
        .write(events_of("L-0", vec![event(None, NOW - HOUR, "web_visit")]))
        .await
        .expect("write");
    put(store, "L-0", graded("propensity", true, "A", 1)).await;
    assert!(store.take_new().is_empty(), "no endpoints yet");
    let endpoints = vec![
        every("all"),
        EndpointFilter {
            endpoint: "only-other".into(),
            models: Some(vec!["other".into()]),
            transitions: None,
        },
        EndpointFilter {
            endpoint: "only-cooled".into(),
            models: None,
            transitions: Some(vec![Transition::LeadCooled]),
        },
    ];
    store.set_endpoints(endpoints);
    for id in ["L-1", "L-2"] {
        store
            .write(events_of(id, vec![event(None, NOW - HOUR, "web_visit")]))
            .await
            .expect("write");
        put(store, id, graded("propensity", true, "A", 1)).await;
    }
    put(store, "L-1", graded("other", true, "A", 1)).await;
    let made = store.take_new();
    let filed: Vec<(&str, &str, &str)> = made
        .iter()
        .map(|d| {
            (
                d.endpoint.as_str(),
                d.message.entity.as_str(),
                d.message.score.model.as_str(),
            )
        })
        .collect();
    assert_eq!(
        filed,
        vec![
            ("all", "L-1", "propensity"),
            ("all", "L-2", "propensity"),
            ("all", "L-1", "other"),
            ("only-other", "L-1", "other"),
        ]
    );
    assert!(store.take_new().is_empty(), "taken once");
    assert!(
        store.adopt(100).await.expect("adopt").is_empty(),
        "what this store filed is taken, never adopted"
    );
    assert_eq!(
        made[2].message, made[3].message,
        "one message, two deliveries"
    );
    let stats = store.outbox_stats().await.expect("stats");
    assert_eq!(
        stats.pending,
        vec![("all".to_string(), 3), ("only-other".to_string(), 1)]
    );
    let pending = store.pending(None, 100).await.expect("pending");
    assert_eq!(pending.len(), 4);
    let page = store
        .pending(Some(("all".into(), made[1].message.seq)), 1)
        .await
        .expect("pending");
    assert_eq!(page, vec![made[2].clone()], "paging after a key");
    let (first, second) = (&made[0], &made[1]);
    store
        .record_attempt(
            "all".into(),
            first.message.seq,
            Attempt::Retry {
                attempts: 1,
                next_at_ms: NOW + 5_000,
                error: "503".into(),
            },
        )
        .await
        .expect("attempt");
    let again = store
        .delivery("all", first.message.seq)
        .await
        .expect("read")
        .expect("pending");
    assert_eq!((again.attempts, again.next_at_ms), (1, NOW + 5_000));
    assert_eq!(again.last_error.as_deref(), Some("503"));
    assert_eq!(again.message, first.message, "the message is kept as made");
    store
        .record_attempt("all".into(), first.message.seq, Attempt::Delivered)
        .await
        .expect("attempt");
    assert!(
        store
            .delivery("all", first.message.seq)
            .await
            .expect("read")
            .is_none()
    );
    store
        .record_attempt(
            "all".into(),
            second.message.seq,
            Attempt::Dead {
                attempts: 8,
                at_ms: NOW + 1,
                error: "timeout".into(),
            },
        )
        .await
        .expect("attempt");
    let dead = store
        .dead_letters(Some("all".into()), None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].dead_at_ms), (8, Some(NOW + 1)));
    assert!(
        store
            .dead_letters(Some("only-other".into()), None, 10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    // Recording an attempt of what is no longer pending changes nothing.
    store
        .record_attempt("all".into(), second.message.seq, Attempt::Delivered)
        .await
        .expect("attempt");
    assert_eq!(
        store
            .dead_letters(None, None, 10)
            .await
            .expect("dead")
            .len(),
        1
    );
    let replayed = store
        .replay("all".into(), None, NOW + 9)
        .await
        .expect("replay");
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        (
            replayed[0].attempts,
            replayed[0].next_at_ms,
            replayed[0].dead_at_ms
        ),
        (0, NOW + 9, None)
    );
    assert_eq!(replayed[0].message, second.message);
    assert!(
        store
            .dead_letters(None, None, 10)
            .await
            .expect("dead")
            .is_empty()
    );
    // Erasing L-1 drops its deliveries (those filed by its last score too).
    put(store, "L-1", graded("propensity", false, "C", 2)).await;
    assert!(store.erase("L-1").await.expect("erase"));
    let left: Vec<String> = store
        .pending(None, 100)
        .await
        .expect("pending")
        .into_iter()
        .map(|d| d.message.entity)
        .collect();
    assert_eq!(left, vec!["L-2".to_string()]);
}

#[macro_export]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!($make, skip_unless = || true);
    };
    // `available()` false: each test says so and passes (a backend whose server the
    // environment does not provide; its harness decides when that is an error).
    ($make:expr, skip_unless = $available:expr) => {
        $crate::contract_tests!(@each $make; $available;
            profiles_merge_and_replace,
            events_are_idempotent_by_client_id,
            creation_follows_the_earliest_event_until_given,
            scores_and_the_queue,
            kinds_decide_what_closes_and_what_scores,
            erasure_removes_everything,
            paging_through_active_and_all_entities,
            retention_expires_old_events,
            queued_writes_are_each_applied_once,
            settle_waits_for_scores_not_awaited,
            predict_agrees_with_the_store,
            scores_go_with_a_write_only_if_the_entity_is_as_read,
            score_changes_write_their_transitions,
            deliveries_move_through_attempts,
        );
        #[tokio::test]
        async fn cap_drops_the_oldest_events() {
            if !($available)() {
                return;
            }
            let store = ($make)($crate::contract::SMALL_CAP);
            $crate::contract::cap_drops_the_oldest_events(&*store).await;
        }
        #[tokio::test]
        async fn predict_agrees_with_the_store_at_the_cap() {
            if !($available)() {
                return;
            }
            let store = ($make)($crate::contract::SMALL_CAP);
            $crate::contract::predict_agrees_with_the_store(&*store).await;
        }
    };
    (@each $make:expr; $available:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if !($available)() {
                    return;
                }
                let store = ($make)($crate::StoreLimits::default());
                $crate::contract::$name(&*store).await;
            }
        )*
    };
}
