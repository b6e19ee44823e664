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
