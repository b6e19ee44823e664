//! Crash safety of the entity store, as an operator would meet it: a client sends 50,000
//! events in batches and records every acknowledgement while the server is killed with
//! SIGKILL at random moments five times and restarted. Afterwards every event is stored
//! exactly once (an unacknowledged batch is sent again; client event ids make that
//! harmless), every acknowledged one among them, and the store opened every time without
//! a repair.

mod common;
#[path = "support/process.rs"]
mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{copy_dir, ort_available, repo_root};
use models::gbdt::SplitMix64;
use process::Server;
use serde_json::json;
use store::{EntityStore, RedbStore, StoreOpen};

const KEY: &str = "crash-test-client-key-01";
const ADMIN: &str = "crash-test-admin-key-001";
const EVENTS: usize = 50_000;
const BATCH: usize = 100;
const ENTITIES: usize = 200;
const KILLS: usize = 5;

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = dir.path().join("registry");
    copy_dir(
        &repo_root().join("serving/tests/fixtures/registry"),
        &registry,
    );
    let store_dir = dir.path().join("store");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:0\"\nregistry = {:?}\nstore = {:?}\napi_keys = [\"{KEY}\"]\n\
             admin_keys = [\"{ADMIN}\"]\nsessions = 1\nmax_auth_failures = 0\n",
            registry.display().to_string(),
            store_dir.display().to_string()
        ),
    )
    .expect("config");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut rng = SplitMix64::new(7);
    let batches = EVENTS / BATCH;
    // Five batches, at random, during which the server is killed.
    let mut kill_at = BTreeSet::new();
    while kill_at.len() < KILLS {
        kill_at.insert(1 + (rng.next_f64() * (batches - 2) as f64) as usize);
    }
    let types = [
        "web_visit",
        "email_open",
        "email_click",
        "pricing_page_view",
        "demo_request",
    ];
    let mut server = Server::start(&config);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut logs = Vec::new();
    let kills = Arc::new(AtomicUsize::new(0));
    let mut resent = 0;
    for b in 0..batches {
        let events: Vec<serde_json::Value> = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                json!({
                    "entity": format!("L-{}", n % ENTITIES),
                    "id": format!("ev-{n}"),
                    "ts": now - 86_400_000 + n as i64,
                    "type": types[n % types.len()],
                    "channel": "web",
                })
            })
            .collect();
        let body = json!({ "events": events }).to_string();
        let killer = kill_at.contains(&b).then(|| {
            // SIGKILL a few milliseconds into this batch's request: while it is parsed,
            // committed or answered.
            let pid = server.child.id();
            let delay = Duration::from_micros((rng.next_f64() * 30_000.0) as u64);
            let kills = Arc::clone(&kills);
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let status = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .expect("kill");
                assert!(status.success());
                kills.fetch_add(1, Ordering::SeqCst);
            })
        });
        loop {
            match process::request(&server.addr, "POST", "/v1/events?reasons=false", KEY, &body) {
                Some((200, answer)) => {
                    let answer: serde_json::Value =
                        serde_json::from_str(&answer).expect("JSON answer");
                    let stored: u64 = answer["entities"]
                        .as_array()
                        .expect("entities")
                        .iter()
                        .map(|e| {
                            e["events_added"].as_u64().expect("n")
                                + e["duplicates"].as_u64().expect("n")
                        })
                        .sum();
                    assert_eq!(stored, BATCH as u64, "every event accounted for: {answer}");
                    acknowledged.extend((0..BATCH).map(|i| format!("ev-{}", b * BATCH + i)));
                    break;
                }
                Some((status, answer)) => panic!("batch {b}: {status} {answer}"),
                None => {
                    // The server is gone: restart it and send the batch again.
                    if let Some(k) = killer.as_ref() {
                        while !k.is_finished() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    let _ = server.child.wait();
                    logs.extend(server.log.lock().expect("log").drain(..));
                    server = Server::start(&config);
                    resent += 1;
                }
            }
        }
        if let Some(k) = killer {
            k.join().expect("killer");
            // Killed after the answer came back: the next request finds it gone.
            if server.child.try_wait().expect("wait").is_some()
                || process::request(&server.addr, "GET", "/healthz", KEY, "").is_none()
            {
                let _ = server.child.wait();
                logs.extend(server.log.lock().expect("log").drain(..));
                server = Server::start(&config);
            }
        }
    }
    assert_eq!(kills.load(Ordering::SeqCst), KILLS);
    eprintln!(
        "{KILLS} kills, {resent} batches sent again, {} events acknowledged",
        acknowledged.len()
    );
    logs.extend(server.log.lock().expect("log").drain(..));
    drop(server);
    let repairs = logs
        .iter()
        .filter(|l| l.contains("needed a full repair"))
        .count();
    assert_eq!(repairs, 0, "the store needed a repair on a restart");

    // Every event stored exactly once, the acknowledged ones among them.
    let repaired = Arc::new(AtomicUsize::new(0));
    let mut open = StoreOpen::new(&store_dir);
    let counter = Arc::clone(&repaired);
    open.on_repair = Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let store = RedbStore::open(open).expect("the store opens");
    assert_eq!(repaired.load(Ordering::SeqCst), 0, "opened without repair");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for e in 0..ENTITIES {
        let history = runtime
            .block_on(store.history(&format!("L-{e}")))
            .expect("read")
            .expect("entity");
        assert_eq!(history.record.event_count as usize, history.events.len());
        for event in history.events {
            *stored.entry(event.id.expect("id")).or_default() += 1;
        }
    }
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    assert_eq!(stored.len(), EVENTS, "every event sent is stored");
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
