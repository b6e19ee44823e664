//! The store contract ([`store::contract`]) against the embedded backend, and what only a
//! file-backed store can show: acknowledged writes survive reopening.

use std::ops::Deref;

use store::{EntityStore, EntityWrite, NewEvent, RedbStore, StoreLimits, StoreOpen, WriteBatch};

struct TempStore {
    store: RedbStore,
    _dir: tempfile::TempDir,
}

impl Deref for TempStore {
    type Target = RedbStore;
    fn deref(&self) -> &RedbStore {
        &self.store
    }
}

fn redb(limits: StoreLimits) -> TempStore {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut open = StoreOpen::new(dir.path());
    open.limits = limits;
    TempStore {
        store: RedbStore::open(open).expect("open store"),
        _dir: dir,
    }
}

store::contract_tests!(redb);

#[tokio::test]
async fn acknowledged_writes_are_there_after_reopening() {
    let dir = tempfile::tempdir().expect("temporary folder");
    {
        let store = RedbStore::open(StoreOpen::new(dir.path())).expect("open");
        let batch = WriteBatch {
            entities: vec![EntityWrite {
                id: "L-1".into(),
                events: vec![NewEvent {
                    id: Some("e-1".into()),
                    ts_ms: 1_000,
                    event_type: "web_visit".into(),
                    channel: None,
                    value: Some(3.5),
                }],
                ..Default::default()
            }],
            now_ms: 2_000,
        };
        store.write(batch).await.expect("write");
    }
    let store = RedbStore::open(StoreOpen::new(dir.path())).expect("reopen");
    let h = store.history("L-1").await.expect("read").expect("stored");
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.events[0].value, Some(3.5));
    assert_eq!(h.record.created_at_ms, 1_000);
}

/// The embedded backend keeps the sales queue in memory: opening the file rebuilds it from
/// the committed scores, open entities only, best first.
#[tokio::test]
async fn the_queue_is_rebuilt_when_the_file_opens() {
    use store::{Outcome, OutcomeKind, ScoreUpdate, StoredScore};
    let dir = tempfile::tempdir().expect("temporary folder");
    let score = |entity: &str, model: &str, probability: f64| ScoreUpdate {
        entity: entity.into(),
        score: StoredScore {
            model: model.into(),
            version: "v1".into(),
            probability,
            score: (probability * 100.0).round() as u8,
            grade: "B".into(),
            sales_ready: false,
            scored_at_ms: 2_000,
            events_seen: 0,
        },
        reasons: None,
    };
    {
        let store = RedbStore::open(StoreOpen::new(dir.path())).expect("open");
        let entities = ["L-1", "L-2", "L-3"]
            .into_iter()
            .map(|id| EntityWrite {
                id: id.into(),
                ..Default::default()
            })
            .collect();
        store
            .write(WriteBatch {
                entities,
                now_ms: 2_000,
            })
            .await
            .expect("write");
        store
            .put_scores(vec![
                score("L-1", "p", 0.4),
                score("L-2", "p", 0.7),
                score("L-3", "p", 0.9),
                score("L-1", "q", 0.1),
            ])
            .await
            .expect("scores");
        let converted = EntityWrite {
            id: "L-3".into(),
            outcomes: vec![Outcome {
                kind: OutcomeKind::Converted,
                at_ms: 2_500,
            }],
            ..Default::default()
        };
        store
            .write(WriteBatch {
                entities: vec![converted],
                now_ms: 3_000,
            })
            .await
            .expect("write");
    }
    let store = RedbStore::open(StoreOpen::new(dir.path())).expect("reopen");
    let ids =
        |top: Vec<(String, StoredScore)>| top.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.top("p", 10, None).await.expect("top")),
        ["L-2", "L-1"]
    );
    assert_eq!(ids(store.top("q", 10, None).await.expect("top")), ["L-1"]);
    assert_eq!(
        ids(store.top("p", 10, Some((0.5, 0.8))).await.expect("top")),
        ["L-2"]
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.entities, stats.events), (3, 0));
}

/// Delivery state is in the file: pending deliveries, with their attempts, are there after
/// reopening, and message ids go on from where they were (same epoch, next sequence).
#[tokio::test]
async fn the_outbox_survives_reopening() {
    use store::{EndpointFilter, Outbox, ScoreUpdate, StoredScore};
    let dir = tempfile::tempdir().expect("temporary folder");
    let ready = |ready: bool, seen: u64| StoredScore {
        model: "propensity".into(),
        version: "v1".into(),
        probability: 0.5,
        score: 50,
        grade: if ready { "A" } else { "B" }.into(),
        sales_ready: ready,
        scored_at_ms: 1_000,
        events_seen: seen,
    };
    let crm = vec![EndpointFilter {
        endpoint: "crm".into(),
        models: None,
        transitions: None,
    }];
    let first_id;
    {
        let store = RedbStore::open(StoreOpen::new(dir.path())).expect("open");
        store.set_endpoints(crm.clone());
        let batch = WriteBatch {
            entities: vec![EntityWrite {
                id: "L-1".into(),
                ..Default::default()
            }],
            now_ms: 2_000,
        };
        store.write(batch).await.expect("write");
        let put = |s| {
            store.put_scores(vec![ScoreUpdate {
                entity: "L-1".into(),
                score: s,
                reasons: None,
            }])
        };
        put(ready(true, 0)).await.expect("scores");
        let made = store.take_new();
        assert_eq!(made.len(), 1);
        first_id = made[0].message.id.clone();
        store
            .record_attempt(
                "crm".into(),
                made[0].message.seq,
                store::Attempt::Retry {
                    attempts: 1,
                    next_at_ms: 9_000,
                    error: "HTTP 503".into(),
                },
            )
            .await
            .expect("attempt");
        put(ready(false, 1)).await.expect("scores");
    }
    let store = RedbStore::open(StoreOpen::new(dir.path())).expect("reopen");
    let pending = store.pending(None, 10).await.expect("pending");
    assert_eq!(
        pending.len(),
        3,
        "sales-ready, then cooled and grade changed"
    );
    assert_eq!(pending[0].message.id, first_id);
    assert_eq!((pending[0].attempts, pending[0].next_at_ms), (1, 9_000));
    assert!(
        store.take_new().is_empty(),
        "taken before the restart or not, they are pending"
    );
    let mut adopted = store.adopt(2).await.expect("adopt");
    adopted.extend(store.adopt(2).await.expect("adopt"));
    assert_eq!(
        adopted, pending,
        "the delivery worker adopts them after the restart"
    );
    assert!(store.adopt(2).await.expect("adopt").is_empty(), "once");
    store.set_endpoints(crm);
    store
        .put_scores(vec![ScoreUpdate {
            entity: "L-1".into(),
            score: ready(true, 2),
            reasons: None,
        }])
        .await
        .expect("scores");
    let made = store.take_new();
    assert_eq!(made.len(), 2);
    assert_eq!(&made[0].message.id[..20], &first_id[..20], "same epoch");
    assert!(
        made[0].message.seq > pending[2].message.seq,
        "the sequence goes on"
    );
}
