//! The store contract ([`store::contract`]) against PostgreSQL, each test in a schema of its
//! own on the server `LEADSCORE_TEST_POSTGRES` names (`scripts/test` starts a throw-away
//! cluster with `scripts/pg-env` and sets it). Without it the tests pass saying they were
//! skipped, unless `LEADSCORE_REQUIRE_POSTGRES=1` makes that a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use store::{EntityStore, PgOpen, PgStore, StoreLimits};

fn available() -> bool {
    if std::env::var_os("LEADSCORE_TEST_POSTGRES").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("LEADSCORE_REQUIRE_POSTGRES").is_none(),
        "LEADSCORE_REQUIRE_POSTGRES is set but LEADSCORE_TEST_POSTGRES is not \
         (scripts/pg-env start DIR prints it)"
    );
    eprintln!("skipped: LEADSCORE_TEST_POSTGRES is not set");
    false
}

/// A schema no other test (of this run or an earlier one on the same cluster) uses.
fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "contract_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn postgres(limits: StoreLimits) -> Box<PgStore> {
    let url = std::env::var("LEADSCORE_TEST_POSTGRES").expect("checked by available()");
    let mut open = PgOpen::new(&url).expect("LEADSCORE_TEST_POSTGRES is a PostgreSQL URL");
    open.schema = Some(fresh_schema());
    open.limits = limits;
    Box::new(PgStore::open(open).expect("open"))
}

store::contract_tests!(postgres, skip_unless = available);

fn one_event(store: &PgStore, i: u32) -> store::StoreFuture<'_, Vec<store::Written>> {
    use store::{EntityWrite, NewEvent, WriteBatch};
    store.write(WriteBatch {
        entities: vec![EntityWrite {
            id: format!("L-{}", i % 5),
            events: vec![NewEvent {
                id: Some(format!("e-{i}")),
                ts_ms: 1_000 + i64::from(i),
                event_type: "web_visit".into(),
                channel: None,
                value: None,
            }],
            ..Default::default()
        }],
        now_ms: 10_000,
    })
}

/// Two stores on one database (two replicas): what one writes the other reads, and their
/// concurrent writes to the same entities are each applied once, whichever commits first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_share_everything() {
    if !available() {
        return;
    }
    let url = std::env::var("LEADSCORE_TEST_POSTGRES").expect("checked");
    let schema = fresh_schema();
    let open = |schema: &str| {
        let mut o = PgOpen::new(&url).expect("url");
        o.schema = Some(schema.to_owned());
        PgStore::open(o).expect("open")
    };
    let (a, b) = (open(&schema), open(&schema));
    // Both apply the migrations at once: one does, the other finds them applied.
    let (ra, rb) = tokio::join!(a.ready(), b.ready());
    ra.expect("first replica ready");
    rb.expect("second replica ready");
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(one_event(&a, i));
        pending.push(one_event(&b, i));
    }
    let mut added = 0;
    for p in pending {
        added += p.await.expect("write")[0].events_added;
    }
    assert_eq!(
        added, 100,
        "each event id stored once across the two replicas"
    );
    for i in 0..5 {
        let h = b
            .history(&format!("L-{i}"))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(h.events.len(), 20);
        assert_eq!(h.record.event_count, 20);
        assert!(h.events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    }
    let (sa, sb) = (
        a.stats().await.expect("stats"),
        b.stats().await.expect("stats"),
    );
    assert_eq!((sa.entities, sa.events), (5, 100));
    assert_eq!((sa.entities, sa.events), (sb.entities, sb.events));
}

/// A replica that stops (its lease not renewed) leaves its pending deliveries to the
/// others: the first to adopt them holds them, once; replicas alive split the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replicas_deliveries_are_adopted_once() {
    use std::time::Duration;
    use store::{EndpointFilter, Outbox, ScoreUpdate, Share, StoredScore};
    if !available() {
        return;
    }
    let url = std::env::var("LEADSCORE_TEST_POSTGRES").expect("checked");
    let schema = fresh_schema();
    let open = || {
        let mut o = PgOpen::new(&url).expect("url");
        o.schema = Some(schema.clone());
        o.lease = Duration::from_millis(400);
        PgStore::open(o).expect("open")
    };
    let crm = vec![EndpointFilter {
        endpoint: "crm".into(),
        models: None,
        transitions: None,
    }];
    let (a, b, c) = (open(), open(), open());
    for s in [&a, &b, &c] {
        s.ready().await.expect("ready");
        s.set_endpoints(crm.clone());
    }
    let mut parts = Vec::new();
    for s in [&a, &b, &c] {
        let share = s.sweep_share().await.expect("share");
        assert_eq!(share.of, 3, "three replicas alive");
        parts.push(share.index);
    }
    parts.sort_unstable();
    assert_eq!(parts, [0, 1, 2], "each its own part");
    for i in 0..6 {
        one_event(&a, i).await.expect("write");
    }
    let ready = |entity: String| ScoreUpdate {
        entity,
        score: StoredScore {
            model: "propensity".into(),
            version: "v1".into(),
            probability: 0.9,
            score: 90,
            grade: "A".into(),
            sales_ready: true,
            scored_at_ms: 10_000,
            events_seen: 9,
        },
        reasons: None,
    };
    a.put_scores((0..5).map(|i| ready(format!("L-{i}"))).collect())
        .await
        .expect("scores");
    assert_eq!(a.take_new().len(), 5, "filed by the first replica");
    assert!(
        b.adopt(100).await.expect("adopt").is_empty(),
        "held by a replica alive"
    );
    drop(a);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (from_b, from_c) = tokio::join!(b.adopt(3), c.adopt(100));
    let (from_b, from_c) = (from_b.expect("adopt"), from_c.expect("adopt"));
    let mut seqs: Vec<u64> = from_b
        .iter()
        .chain(&from_c)
        .map(|d| d.message.seq)
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        from_b.len() + from_c.len(),
        5,
        "each of the stopped replica's deliveries adopted by one replica"
    );
    assert_eq!(seqs.len(), 5);
    assert!(b.adopt(100).await.expect("adopt").is_empty());
    assert!(c.adopt(100).await.expect("adopt").is_empty());
    let share = b.sweep_share().await.expect("share");
    assert_eq!(share.of, 2, "the stopped replica left the sweep");
    assert_ne!(share, Share::ALL);
}
