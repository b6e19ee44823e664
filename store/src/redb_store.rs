//! The embedded backend: one redb file, `<dir>/entities.redb`.
//!
//! Tables (keys sort as tuples, element by element; strings and bytes by their bytes):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `entity_data` | (id, 0, empty) | the record: 1 if open (0: closed by an outcome), last active time (8 bytes), then [`EntityRecord`] as JSON |
//! | `entity_data` | (id, 1, model) | the latest score: `events_seen` and the probability's bits (8 bytes each), then [`StoredScore`] as JSON |
//! | `entity_data` | (id, 2, time and sequence, 16 bytes big-endian) | an event: its id, type, channel and value as JSON |
//! | `entity_data` | (id, 3, client event id) | time and sequence of the stored event (idempotency) |
//! | `meta` | name | layout version, entity and event counts, the outbox's next sequence and random epoch |
//! | `deliveries` | (endpoint, sequence) | a pending [`Delivery`](crate::Delivery) (the outbox), as JSON |
//! | `dead_letters` | (endpoint, sequence) | a [`Delivery`](crate::Delivery) whose schedule ran out, as JSON |
//!
//! Everything of one entity sits together in `entity_data`: its history is one range scan,
//! and a write of one event, with the scores computed for it ([`crate::ScoresIf`]), changes
//! one page of it when the entity is small (the record and the scores side by side, the
//! log's end), where a table each would change a page in each. Every page a commit changes
//! is written whole, so the pages changed per event decide how many events a second the
//! disk takes. The sweep pages through the records and jumps over the entities not
//! recently active.
//!
//! The sales queue is not a table: it is an index in memory (per model, the open entities
//! by probability), built from the scores when the file opens and changed by the writer
//! after each commit. A table ordered by probability would change two pages at random (the old
//! rank and the new) with every score; in memory it costs about 60 bytes per scored open
//! entity and model, and a crash loses nothing, since it is rebuilt from what was committed.
//!
//! Writes go to one writer thread, which takes every write queued while it committed the
//! last ones and commits them together (group commit): one fsync for many requests, each
//! answered only after it. The writer thread only moves bytes: scores are encoded before
//! they reach it, and the prefixes above let it decide whether a score replaces the stored
//! one and whether the entity is in the queue without decoding JSON.
//! A score kept replaces the entity's stored one for its model; the writer compares the two
//! ([`crate::transitions`]) and files a delivery of each transition's message for every
//! endpoint that wants it in `deliveries`, in the same commit; after the commit it hands them
//! to [`Outbox::take_new`] and notifies [`Outbox::outbox_signal`].
//! Commits use quick repair, so a file left by a crash opens at once, without the full
//! repair walk (the crash test checks that no repair runs).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use features::history::TimestampMs;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::merge::{EventLog, merge};
use crate::outbox::{Filing, deliveries};
use crate::{
    Attempt, Delivery, EndpointFilter, EntityRecord, EntityStore, EntityWithEvents, Kind, Message,
    NewEvent, Outbox, OutboxStats, ScoreUpdate, Share, StoreError, StoreFuture, StoreLimits,
    StoreStats, StoredEntity, StoredEvent, StoredScore, WriteBatch, Written,
};

/// `(entity id, part, key within the part)`; the parts below.
type DataKey<'a> = (&'a str, u8, &'a [u8]);
const DATA: TableDefinition<DataKey<'static>, &[u8]> = TableDefinition::new("entity_data");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `(endpoint, outbox sequence)`.
type DeliveryKey<'a> = (&'a str, u64);
const DELIVERIES: TableDefinition<DeliveryKey<'static>, &[u8]> = TableDefinition::new("deliveries");
const DEAD: TableDefinition<DeliveryKey<'static>, &[u8]> = TableDefinition::new("dead_letters");

/// The parts of an entity in `entity_data`, in their key order.
const RECORD: u8 = 0;
const SCORE: u8 = 1;
const EVENT: u8 = 2;
const CLIENT_ID: u8 = 3;

/// `meta` keys.
const META_LAYOUT: &str = "layout";
const META_ENTITIES: &str = "entities";
const META_EVENTS: &str = "events";
const META_OUTBOX_SEQ: &str = "outbox_next";
const META_EPOCH: &str = "outbox_epoch";

/// The layout version written in `meta`; a file of another version is refused.
const LAYOUT_VERSION: u64 = 3;

/// The file inside the store folder.
pub const STORE_FILE: &str = "entities.redb";

/// Most writes committed together.
const MAX_GROUP: usize = 512;

/// How to open a store.
#[derive(Clone)]
pub struct StoreOpen {
    pub dir: PathBuf,
    pub limits: StoreLimits,
    /// Called when the file needed a full repair on opening (the crash test counts these).
    pub on_repair: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for StoreOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOpen")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish()
    }
}

impl StoreOpen {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreOpen {
            dir: dir.into(),
            limits: StoreLimits::default(),
            on_repair: None,
        }
    }
}

/// An entity store in a redb file.
#[derive(Debug)]
pub struct RedbStore {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    /// Swapped by [`EntityStore::reclaim`], which rewrites the file.
    db: RwLock<Arc<Database>>,
    path: PathBuf,
    limits: StoreLimits,
    /// The sales queue as of the last commit.
    queue: RwLock<Queue>,
    /// Part of every message id: random, drawn when the file was created.
    epoch: u64,
    /// The outbox's endpoints, deliveries not yet taken and signal.
    filing: Filing,
    /// What [`Outbox::adopt`] has left to give: the deliveries pending at opening.
    adopt: Mutex<Adoption>,
}

/// The deliveries pending when the file was opened, given by [`Outbox::adopt`] page by page.
#[derive(Debug)]
struct Adoption {
    /// Outbox sequences below it were filed before the opening.
    before_seq: u64,
    /// The last delivery given.
    after: Option<(String, u64)>,
    done: bool,
}

/// The sales queue: per model, the open entities' latest scores as `(rank, id)`, best first.
#[derive(Debug, Default)]
struct Queue {
    by_model: std::collections::HashMap<String, std::collections::BTreeSet<(u64, String)>>,
}

/// A change to the queue, made once the commit that caused it is durable.
enum QueueChange {
    Remove {
        model: String,
        rank: u64,
        id: String,
    },
    Insert {
        model: String,
        rank: u64,
        id: String,
    },
}

impl Queue {
    fn apply(&mut self, changes: Vec<QueueChange>) {
        for change in changes {
            match change {
                QueueChange::Remove { model, rank, id } => {
                    if let Some(set) = self.by_model.get_mut(&model) {
                        set.remove(&(rank, id));
                    }
                }
                QueueChange::Insert { model, rank, id } => {
                    self.by_model.entry(model).or_default().insert((rank, id));
                }
            }
        }
    }
}

impl Shared {
    fn db(&self) -> Arc<Database> {
        Arc::clone(&self.db.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Storage {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, entity: &str, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            entity: entity.to_owned(),
            what,
            message: e.to_string(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A score as the `scores` table keeps it, encoded before it reaches the writer.
struct EncodedScore {
    entity: String,
    model: String,
    events_seen: u64,
    probability: f64,
    bytes: Vec<u8>,
    /// As given (an outbox message carries it, with its reasons).
    score: StoredScore,
    reasons: Option<serde_json::Value>,
}

/// Bytes before a score's JSON: `events_seen`, then the probability's bits.
const SCORE_PREFIX: usize = 16;

fn encode_score(
    entity: String,
    score: &StoredScore,
    reasons: Option<serde_json::Value>,
) -> Result<EncodedScore, serde_json::Error> {
    let mut bytes = Vec::with_capacity(SCORE_PREFIX + 160);
    bytes.extend_from_slice(&score.events_seen.to_le_bytes());
    bytes.extend_from_slice(&score.probability.to_bits().to_le_bytes());
    serde_json::to_writer(&mut bytes, score)?;
    Ok(EncodedScore {
        entity,
        model: score.model.clone(),
        events_seen: score.events_seen,
        probability: score.probability,
        bytes,
        score: score.clone(),
        reasons,
    })
}

/// `events_seen` and the probability of a stored score, from its prefix.
fn score_prefix(bytes: &[u8]) -> Option<(u64, f64)> {
    let seen = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let bits = u64::from_le_bytes(bytes.get(8..SCORE_PREFIX)?.try_into().ok()?);
    Some((seen, f64::from_bits(bits)))
}

fn decode_score(bytes: &[u8]) -> Result<StoredScore, String> {
    let json = bytes
        .get(SCORE_PREFIX..)
        .ok_or_else(|| format!("{} bytes are too few for a score", bytes.len()))?;
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Bytes before a record's JSON: open or not, then the last active time.
const RECORD_PREFIX: usize = 9;

fn encode_record(record: &EntityRecord) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(u8::from(record.is_open()));
    bytes.extend_from_slice(&record.last_active_ms().to_le_bytes());
    serde_json::to_writer(&mut bytes, record)?;
    Ok(bytes)
}

fn decode_record(bytes: &[u8]) -> Result<EntityRecord, String> {
    let json = bytes
        .get(RECORD_PREFIX..)
        .ok_or_else(|| format!("{} bytes are too few for a record", bytes.len()))?;
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Whether a stored record is open, from its first byte.
fn record_is_open(bytes: &[u8]) -> bool {
    bytes.first() == Some(&1)
}

/// A stored record's last active time, from its prefix.
fn record_last_active(bytes: &[u8]) -> Option<TimestampMs> {
    Some(i64::from_le_bytes(
        bytes.get(1..RECORD_PREFIX)?.try_into().ok()?,
    ))
}

/// An event's key within its entity: time, then sequence, big-endian (the time's sign bit
/// flipped), so the bytes sort as the numbers do.
fn event_key(ts_ms: TimestampMs, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn decode_event_key(key: &[u8]) -> Option<(TimestampMs, u64)> {
    let ts = u64::from_be_bytes(key.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let seq = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((ts as i64, seq))
}

/// A client event id's value: where its event is (time and sequence, little-endian).
fn encode_place(ts_ms: TimestampMs, seq: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&ts_ms.to_le_bytes());
    value[8..].copy_from_slice(&seq.to_le_bytes());
    value
}

/// The first key of `id`'s `part` and the first key after it.
fn part_range(id: &str, part: u8) -> std::ops::Range<DataKey<'_>> {
    (id, part, &[][..])..(id, part + 1, &[][..])
}

/// Every key of `id`.
fn entity_range(id: &str) -> std::ops::Range<DataKey<'_>> {
    (id, RECORD, &[][..])..(id, u8::MAX, &[][..])
}

enum Job {
    Write(WriteBatch, Reply<Vec<Written>>),
    Scores(Vec<EncodedScore>, Reply<()>),
    /// Answered once every job queued before it is committed.
    Settle(Reply<()>),
    Erase(String, Reply<bool>),
    Expire(TimestampMs, Reply<u64>),
    Reclaim(Reply<()>),
    Attempt(String, u64, Attempt, Reply<()>),
    Replay(String, Option<Vec<u64>>, TimestampMs, Reply<Vec<Delivery>>),
}

/// What a job gives back once its group is committed.
enum Done {
    Write(Vec<Written>),
    Scores,
    Erase(bool),
    Expire(u64),
    Deliveries(Vec<Delivery>),
}

/// An event's stored value, as written (the same JSON as [`EventValue`]).
#[derive(Serialize)]
struct EventValueRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
}

/// An event's stored value (its time and sequence are in the key).
#[derive(Deserialize)]
struct EventValue {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    value: Option<f64>,
}

/// The hash [`Share`] splits entities by here (FNV-1a of the id's bytes).
fn split_hash(id: &str) -> u32 {
    id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn rank(probability: f64) -> u64 {
    // Probabilities are in [0, 1]: their bits order as they do; inverted, the best first.
    !probability.max(0.0).to_bits()
}

/// The first key after every `(id, ..)` key: `(id + "\0", ..)`.
fn after_id(id: &str) -> String {
    let mut next = String::with_capacity(id.len() + 1);
    next.push_str(id);
    next.push('\0');
    next
}

impl RedbStore {
    /// Opens the store in `open.dir` (created if missing).
    pub fn open(open: StoreOpen) -> Result<Self, StoreError> {
        let path = open.dir.join(STORE_FILE);
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| StoreError::Storage {
            path: shown.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&open.dir).map_err(|e| err(&e))?;
        let mut builder = Database::builder();
        if let Some(callback) = open.on_repair.clone() {
            builder.set_repair_callback(move |_| callback());
        }
        let db = builder.create(&path).map_err(|e| err(&e))?;
        let epoch = init_tables(&db).map_err(|e| err(&e))?;
        let queue = build_queue(&db).map_err(|e| err(&e))?;
        let before_seq = next_outbox_seq(&db).map_err(|e| err(&e))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Arc::new(db)),
            path,
            limits: open.limits,
            queue: RwLock::new(queue),
            epoch,
            filing: Filing::default(),
            adopt: Mutex::new(Adoption {
                before_seq,
                after: None,
                done: false,
            }),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_shared, &rx))
            .map_err(|e| err(&e))?;
        Ok(RedbStore {
            shared,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Queues the job at the call (not at the first poll), so jobs commit in call order.
    fn send<T: Send + 'static>(
        &self,
        job: impl FnOnce(Reply<T>) -> Job,
    ) -> StoreFuture<'static, T> {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|jobs| jobs.send(job(tx)).is_ok())
            .unwrap_or(false);
        let closed = StoreError::Closed {
            path: self.shared.path.display().to_string(),
        };
        Box::pin(async move {
            if !sent {
                return Err(closed);
            }
            rx.await.map_err(|_| closed)?
        })
    }

    /// Applies `batch` at once on this thread, in its own transaction (bulk import: large
    /// batches, no group to wait for).
    pub fn write_now(&self, batch: WriteBatch) -> Result<Vec<Written>, StoreError> {
        let shared = &self.shared;
        let db = shared.db();
        let mut txn = begin_write(shared, &db)?;
        let mut changes = Vec::new();
        let mut outbox = Vec::new();
        let written = apply_write(shared, &mut txn, &batch, &mut changes, &mut outbox)?;
        let filed = write_messages(shared, &mut txn, outbox, batch.now_ms)?;
        txn.commit().map_err(|e| shared.err(e))?;
        shared.filing.filed(filed);
        shared
            .queue
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(changes);
        Ok(written)
    }

    fn read_entity(&self, id: &str) -> Result<Option<StoredEntity>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
        let Some(record) = read_record(shared, &data, id)? else {
            return Ok(None);
        };
        let mut scores = Vec::new();
        for item in data
            .range(part_range(id, SCORE))
            .map_err(|e| shared.err(e))?
        {
            let (_, value) = item.map_err(|e| shared.err(e))?;
            scores.push(decode_score(value.value()).map_err(|e| shared.corrupt(id, "a score", e))?);
        }
        Ok(Some(StoredEntity {
            id: id.to_owned(),
            record,
            scores,
        }))
    }

    fn history_now(&self, id: &str) -> Result<Option<EntityWithEvents>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
        let mut range = data
            .range((id, RECORD, &[][..])..(id, EVENT + 1, &[][..]))
            .map_err(|e| shared.err(e))?;
        read_entity_at(shared, &mut range, None)
    }

    fn top_now(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> Result<Vec<(String, StoredScore)>, StoreError> {
        let shared = &self.shared;
        // A band [lo, hi): ranks from hi (exclusive) down to lo (inclusive).
        let (first, last) = match band {
            Some((lo, hi)) => (rank(hi).saturating_add(1), rank(lo)),
            None => (0, u64::MAX),
        };
        if first > last {
            return Ok(Vec::new());
        }
        // The queue first, then the file: a score the queue names is committed, and the
        // transaction begun after it sees it (or its entity's erasure).
        let ids: Vec<String> = {
            let queue = shared.queue.read().unwrap_or_else(PoisonError::into_inner);
            match queue.by_model.get(model) {
                Some(set) => set
                    .range((first, String::new())..)
                    .take_while(|(r, _)| *r <= last)
                    .take(limit)
                    .map(|(_, id)| id.clone())
                    .collect(),
                None => Vec::new(),
            }
        };
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(value) = data
                .get((id.as_str(), SCORE, model.as_bytes()))
                .map_err(|e| shared.err(e))?
            else {
                continue;
            };
            let score =
                decode_score(value.value()).map_err(|e| shared.corrupt(&id, "a score", e))?;
            out.push((id, score));
        }
        // A commit between the two reads may have moved a score: the order and the band are
        // those of the scores read.
        out.retain(|(_, s)| (first..=last).contains(&rank(s.probability)));
        out.sort_by_key(|(id, s)| (rank(s.probability), id.clone()));
        Ok(out)
    }

    /// Up to `limit` entities with their events, in id order after `after`, of those that
    /// pass `keep` (given the id and the stored record's bytes).
    fn page_now(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<Vec<EntityWithEvents>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
        let mut out = Vec::with_capacity(limit.min(10_000));
        let mut next = after.map(after_id).unwrap_or_default();
        while out.len() < limit {
            // The next entity's record is the first key at or after `(next, ..)`.
            let mut range = data
                .range((next.as_str(), RECORD, &[][..])..)
                .map_err(|e| shared.err(e))?;
            let Some(item) = range.next() else {
                break;
            };
            let (key, value) = item.map_err(|e| shared.err(e))?;
            let (id, part, _) = key.value();
            let id = id.to_owned();
            next = after_id(&id);
            if part != RECORD {
                return Err(shared.corrupt(&id, "the record", "missing before its other keys"));
            }
            if !keep(&id, value.value()) {
                continue;
            }
            let record =
                decode_record(value.value()).map_err(|e| shared.corrupt(&id, "the record", e))?;
            drop((key, value));
            if let Some(entity) = read_entity_at(shared, &mut range, Some((id, record)))? {
                out.push(entity);
            }
        }
        Ok(out)
    }

    fn stats_now(&self) -> Result<StoreStats, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let meta = txn.open_table(META).map_err(|e| shared.err(e))?;
        let count = |name: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(name)
                .map_err(|e| shared.err(e))?
                .map_or(0, |v| v.value()))
        };
        let bytes = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
        Ok(StoreStats {
            entities: count(META_ENTITIES)?,
            events: count(META_EVENTS)?,
            bytes,
        })
    }
}

/// Reads one entity and its events from `range`, which starts at its record (or, when the
/// record is given, just after it); passes over its scores, stops after its events.
fn read_entity_at(
    shared: &Shared,
    range: &mut redb::Range<'_, DataKey<'static>, &'static [u8]>,
    record: Option<(String, EntityRecord)>,
) -> Result<Option<EntityWithEvents>, StoreError> {
    let (id, record) = match record {
        Some(r) => r,
        None => {
            let Some(item) = range.next() else {
                return Ok(None);
            };
            let (key, value) = item.map_err(|e| shared.err(e))?;
            let (id, part, _) = key.value();
            if part != RECORD {
                return Ok(None);
            }
            let record =
                decode_record(value.value()).map_err(|e| shared.corrupt(id, "the record", e))?;
            (id.to_owned(), record)
        }
    };
    let mut events = Vec::with_capacity(usize::try_from(record.event_count).unwrap_or(0));
    for item in range {
        let (key, value) = item.map_err(|e| shared.err(e))?;
        let (key_id, part, sub) = key.value();
        if key_id != id || part > EVENT {
            break;
        }
        if part != EVENT {
            continue;
        }
        let (ts_ms, _) =
            decode_event_key(sub).ok_or_else(|| shared.corrupt(&id, "an event", "a short key"))?;
        let v: EventValue = serde_json::from_slice(value.value())
            .map_err(|e| shared.corrupt(&id, "an event", e))?;
        events.push(StoredEvent {
            id: v.id,
            ts_ms,
            event_type: v.event_type,
            channel: v.channel,
            value: v.value,
        });
    }
    Ok(Some(EntityWithEvents { id, record, events }))
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what was sent.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
        }
    }
}

/// Creates the tables a new file lacks and checks the layout of an old one; returns the
/// outbox epoch (drawn now for a new file).
fn init_tables(db: &Database) -> Result<u64, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let epoch;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let version = meta
            .get(META_LAYOUT)
            .map_err(|e| e.to_string())?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert(META_LAYOUT, LAYOUT_VERSION)
                    .map_err(|e| e.to_string())?;
            }
            Some(LAYOUT_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "the file has layout version {other}; this server reads version \
                     {LAYOUT_VERSION} (export the store with the server that wrote it, then \
                     import the export into a new store)"
                ));
            }
        }
        let stored = meta
            .get(META_EPOCH)
            .map_err(|e| e.to_string())?
            .map(|v| v.value());
        epoch = match stored {
            Some(v) => v,
            None => {
                let drawn = random_epoch();
                meta.insert(META_EPOCH, drawn).map_err(|e| e.to_string())?;
                drawn
            }
        };
        txn.open_table(DATA).map_err(|e| e.to_string())?;
        txn.open_table(DELIVERIES).map_err(|e| e.to_string())?;
        txn.open_table(DEAD).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(epoch)
}

/// 64 random bits from the system (a message id must not repeat when a store is recreated:
/// receivers drop a message whose id they have seen).
pub(crate) fn random_epoch() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let drawn = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if drawn.is_err() {
        // No /dev/urandom: the clock's nanoseconds and the process id, mixed.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = nanos ^ (u64::from(std::process::id()) << 32);
        bytes = mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

/// The sequence the next outbox message gets.
fn next_outbox_seq(db: &Database) -> Result<u64, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta = txn.open_table(META).map_err(|e| e.to_string())?;
    Ok(meta
        .get(META_OUTBOX_SEQ)
        .map_err(|e| e.to_string())?
        .map_or(1, |v| v.value()))
}

/// The sales queue from the committed scores: those of open entities.
fn build_queue(db: &Database) -> Result<Queue, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let data = txn.open_table(DATA).map_err(|e| e.to_string())?;
    let mut queue = Queue::default();
    let mut next = String::new();
    loop {
        // The next entity's record, then its scores; its events are jumped over.
        let mut range = data
            .range((next.as_str(), RECORD, &[][..])..)
            .map_err(|e| e.to_string())?;
        let Some(item) = range.next() else {
            break;
        };
        let (key, value) = item.map_err(|e| e.to_string())?;
        let id = key.value().0.to_owned();
        next = after_id(&id);
        if !record_is_open(value.value()) {
            continue;
        }
        for item in range {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let (key_id, part, model) = key.value();
            if key_id != id || part != SCORE {
                break;
            }
            let (_, probability) = score_prefix(value.value())
                .ok_or_else(|| format!("a score of entity {id:?} has too few bytes"))?;
            queue
                .by_model
                .entry(String::from_utf8_lossy(model).into_owned())
                .or_default()
                .insert((rank(probability), id.clone()));
        }
    }
    Ok(queue)
}

fn begin_write(shared: &Shared, db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(|e| shared.err(e))?;
    // The allocator state goes with every commit (and commits in two phases), so a file a
    // crash left opens without the full repair walk.
    txn.set_quick_repair(true);
    Ok(txn)
}

fn writer_loop(shared: &Shared, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A reclaim rewrites the file: alone, after the writes queued before it.
        let mut pending = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Reclaim(reply) => {
                    commit_group(shared, std::mem::take(&mut pending));
                    let _ = reply.send(reclaim(shared));
                }
                other => pending.push(other),
            }
        }
        commit_group(shared, pending);
    }
}

/// Applies `jobs` in one transaction and answers each once it is committed. When the group
/// fails, each job is tried again alone, so one bad write fails only itself.
fn commit_group(shared: &Shared, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let db = shared.db();
    let attempt = |jobs: &[Job]| -> Result<Vec<Done>, StoreError> {
        let mut txn = begin_write(shared, &db)?;
        let mut done = Vec::with_capacity(jobs.len());
        let mut changes = Vec::new();
        let mut outbox = Vec::new();
        for job in jobs {
            done.push(apply_job(shared, &mut txn, job, &mut changes, &mut outbox)?);
        }
        let filed = write_messages(shared, &mut txn, outbox, wall_clock_ms())?;
        txn.commit().map_err(|e| shared.err(e))?;
        shared
            .queue
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(changes);
        shared.filing.filed(filed);
        Ok(done)
    };
    match attempt(&jobs) {
        Ok(done) => {
            for (job, done) in jobs.into_iter().zip(done) {
                answer(job, Ok(done));
            }
        }
        Err(e) if jobs.len() == 1 => {
            for job in jobs {
                answer(job, Err(e.clone()));
            }
        }
        Err(_) => {
            for job in jobs {
                let result = attempt(std::slice::from_ref(&job)).map(|mut d| d.remove(0));
                answer(job, result);
            }
        }
    }
}

fn answer(job: Job, result: Result<Done, StoreError>) {
    match (job, result) {
        (Job::Write(_, reply), Ok(Done::Write(w))) => {
            let _ = reply.send(Ok(w));
        }
        (Job::Scores(_, reply) | Job::Settle(reply), Ok(Done::Scores)) => {
            let _ = reply.send(Ok(()));
        }
        (Job::Erase(_, reply), Ok(Done::Erase(b))) => {
            let _ = reply.send(Ok(b));
        }
        (Job::Expire(_, reply), Ok(Done::Expire(n))) => {
            let _ = reply.send(Ok(n));
        }
        (Job::Replay(.., reply), Ok(Done::Deliveries(d))) => {
            let _ = reply.send(Ok(d));
        }
        (Job::Attempt(.., reply), Ok(Done::Scores)) => {
            let _ = reply.send(Ok(()));
        }
        (Job::Replay(.., reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        (Job::Attempt(.., reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        (Job::Write(_, reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        (Job::Scores(_, reply) | Job::Settle(reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        (Job::Erase(_, reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        (Job::Expire(_, reply), Err(e)) => {
            let _ = reply.send(Err(e));
        }
        // Jobs and their results pair up by construction; a reclaim is answered where it
        // runs.
        (Job::Reclaim(reply), _) => {
            let _ = reply.send(Ok(()));
        }
        (_, Ok(_)) => {}
    }
}

fn apply_job(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    job: &Job,
    changes: &mut Vec<QueueChange>,
    outbox: &mut Vec<Message>,
) -> Result<Done, StoreError> {
    Ok(match job {
        Job::Write(batch, _) => Done::Write(apply_write(shared, txn, batch, changes, outbox)?),
        Job::Scores(scores, _) => {
            apply_scores(shared, txn, scores, changes, outbox)?;
            Done::Scores
        }
        Job::Erase(id, _) => {
            // Messages of this group not yet written go with the entity too.
            outbox.retain(|m| m.entity != *id);
            Done::Erase(apply_erase(shared, txn, id, changes)?)
        }
        Job::Expire(before, _) => Done::Expire(apply_expire(shared, txn, *before)?),
        Job::Reclaim(_) | Job::Settle(_) => Done::Scores,
        Job::Attempt(endpoint, seq, attempt, _) => {
            apply_attempt(shared, txn, endpoint, *seq, attempt)?;
            Done::Scores
        }
        Job::Replay(endpoint, seqs, now_ms, _) => Done::Deliveries(apply_replay(
            shared,
            txn,
            endpoint,
            seqs.as_deref(),
            *now_ms,
        )?),
    })
}

fn read_record(
    shared: &Shared,
    data: &impl ReadableTable<DataKey<'static>, &'static [u8]>,
    id: &str,
) -> Result<Option<EntityRecord>, StoreError> {
    data.get((id, RECORD, &[][..]))
        .map_err(|e| shared.err(e))?
        .map(|v| decode_record(v.value()).map_err(|e| shared.corrupt(id, "the record", e)))
        .transpose()
}

/// Adds `delta` to a count in `meta`.
fn add_count(
    shared: &Shared,
    meta: &mut redb::Table<'_, &'static str, u64>,
    name: &str,
    delta: i64,
) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    let now = meta
        .get(name)
        .map_err(|e| shared.err(e))?
        .map_or(0, |v| v.value());
    let next = now.saturating_add_signed(delta);
    meta.insert(name, next).map_err(|e| shared.err(e))?;
    Ok(())
}

fn apply_write(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    batch: &WriteBatch,
    changes: &mut Vec<QueueChange>,
    outbox: &mut Vec<Message>,
) -> Result<Vec<Written>, StoreError> {
    let mut data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
    let mut out = Vec::with_capacity(batch.entities.len());
    let (mut new_entities, mut new_events) = (0i64, 0i64);
    for write in &batch.entities {
        let id = write.id.as_str();
        let existing = read_record(shared, &data, id)?;
        let merged = {
            let mut log = RedbLog {
                shared,
                data: &mut data,
                id,
            };
            merge(
                existing.as_ref(),
                write,
                batch.now_ms,
                &shared.limits,
                &mut log,
            )?
        };
        let record = merged.record;
        // Leaving the queue: closed by an outcome, or scored by other models now.
        if merged.kind_changed || (merged.was_open && !record.is_open()) {
            drop_scores(shared, &mut data, changes, id, merged.kind_changed)?;
        }
        let bytes = encode_record(&record).map_err(|e| shared.corrupt(id, "the record", e))?;
        data.insert((id, RECORD, &[][..]), bytes.as_slice())
            .map_err(|e| shared.err(e))?;
        // The caller's scores, when they were computed from the history this write leaves.
        let scores_kept = match &write.scores_if {
            Some(scores_if) if scores_if.record_before == existing => {
                for (i, score) in scores_if.scores.iter().enumerate() {
                    let reasons = scores_if.reasons.get(i).cloned().flatten();
                    let encoded = encode_score(write.id.clone(), score, reasons)
                        .map_err(|e| shared.corrupt(id, "a score", e))?;
                    keep_score(
                        shared,
                        &mut data,
                        changes,
                        outbox,
                        &encoded,
                        record.is_open(),
                        Some(record.kind),
                        batch.now_ms,
                    )?;
                }
                true
            }
            _ => false,
        };
        new_entities += i64::from(merged.created);
        new_events += i64::from(merged.added) - i64::from(merged.dropped);
        out.push(Written {
            id: write.id.clone(),
            created: merged.created,
            events_added: merged.added,
            duplicates: merged.duplicates,
            dropped_at_cap: merged.dropped,
            record,
            scores_kept,
        });
    }
    let mut meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    add_count(shared, &mut meta, META_ENTITIES, new_entities)?;
    add_count(shared, &mut meta, META_EVENTS, new_events)?;
    Ok(out)
}

/// One entity's events in `entity_data`, as [`merge`] appends to them.
struct RedbLog<'a, 't> {
    shared: &'a Shared,
    data: &'a mut redb::Table<'t, DataKey<'static>, &'static [u8]>,
    id: &'a str,
}

impl EventLog for RedbLog<'_, '_> {
    type Error = StoreError;

    fn has_client_id(&mut self, client_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .data
            .get((self.id, CLIENT_ID, client_id.as_bytes()))
            .map_err(|e| self.shared.err(e))?
            .is_some())
    }

    fn append(&mut self, seq: u64, event: &NewEvent) -> Result<(), StoreError> {
        let (id, shared) = (self.id, self.shared);
        let value = serde_json::to_vec(&EventValueRef {
            id: event.id.as_deref(),
            event_type: &event.event_type,
            channel: event.channel.as_deref(),
            value: event.value,
        })
        .map_err(|e| shared.corrupt(id, "an event", e))?;
        self.data
            .insert(
                (id, EVENT, &event_key(event.ts_ms, seq)[..]),
                value.as_slice(),
            )
            .map_err(|e| shared.err(e))?;
        if let Some(client_id) = &event.id {
            self.data
                .insert(
                    (id, CLIENT_ID, client_id.as_bytes()),
                    &encode_place(event.ts_ms, seq)[..],
                )
                .map_err(|e| shared.err(e))?;
        }
        Ok(())
    }

    fn drop_oldest(&mut self, n: usize) -> Result<Option<TimestampMs>, StoreError> {
        let (id, shared) = (self.id, self.shared);
        for (key, client_id) in first_events(shared, &*self.data, id, n)? {
            self.data
                .remove((id, EVENT, &key[..]))
                .map_err(|e| shared.err(e))?;
            if let Some(c) = client_id {
                self.data
                    .remove((id, CLIENT_ID, c.as_bytes()))
                    .map_err(|e| shared.err(e))?;
            }
        }
        first_event_time(shared, &*self.data, id)
    }
}

/// An event's key within its entity and its client id.
type EventPlace = (Vec<u8>, Option<String>);

/// The keys and client ids of `id`'s first `n` events.
fn first_events(
    shared: &Shared,
    data: &impl ReadableTable<DataKey<'static>, &'static [u8]>,
    id: &str,
    n: usize,
) -> Result<Vec<EventPlace>, StoreError> {
    let mut out = Vec::with_capacity(n.min(10_000));
    for item in data
        .range(part_range(id, EVENT))
        .map_err(|e| shared.err(e))?
        .take(n)
    {
        let (key, value) = item.map_err(|e| shared.err(e))?;
        let v: EventValue =
            serde_json::from_slice(value.value()).map_err(|e| shared.corrupt(id, "an event", e))?;
        out.push((key.value().2.to_vec(), v.id));
    }
    Ok(out)
}

/// The time of `id`'s first stored event.
fn first_event_time(
    shared: &Shared,
    data: &impl ReadableTable<DataKey<'static>, &'static [u8]>,
    id: &str,
) -> Result<Option<TimestampMs>, StoreError> {
    let mut range = data
        .range(part_range(id, EVENT))
        .map_err(|e| shared.err(e))?;
    match range.next() {
        None => Ok(None),
        Some(item) => {
            let (key, _) = item.map_err(|e| shared.err(e))?;
            let (ts, _) = decode_event_key(key.value().2)
                .ok_or_else(|| shared.corrupt(id, "an event", "a short key"))?;
            Ok(Some(ts))
        }
    }
}

/// Takes `id` out of every queue; with `delete`, drops its scores too.
fn drop_scores(
    shared: &Shared,
    data: &mut redb::Table<'_, DataKey<'static>, &'static [u8]>,
    changes: &mut Vec<QueueChange>,
    id: &str,
    delete: bool,
) -> Result<(), StoreError> {
    let mut held = Vec::new();
    for item in data
        .range(part_range(id, SCORE))
        .map_err(|e| shared.err(e))?
    {
        let (key, value) = item.map_err(|e| shared.err(e))?;
        let (_, probability) = score_prefix(value.value())
            .ok_or_else(|| shared.corrupt(id, "a score", "too few bytes"))?;
        held.push((key.value().2.to_vec(), probability));
    }
    for (model, probability) in held {
        if delete {
            data.remove((id, SCORE, model.as_slice()))
                .map_err(|e| shared.err(e))?;
        }
        changes.push(QueueChange::Remove {
            model: String::from_utf8_lossy(&model).into_owned(),
            rank: rank(probability),
            id: id.to_owned(),
        });
    }
    Ok(())
}

/// Keeps `score` as its entity's latest for its model, unless the stored one saw more events;
/// the messages of the transitions from the score it replaces go to `outbox` (filed as
/// deliveries by [`write_messages`] before the commit) when the entity is `open` (its kind
/// read from its record when not given).
#[allow(clippy::too_many_arguments)]
fn keep_score(
    shared: &Shared,
    data: &mut redb::Table<'_, DataKey<'static>, &'static [u8]>,
    changes: &mut Vec<QueueChange>,
    outbox: &mut Vec<Message>,
    score: &EncodedScore,
    open: bool,
    kind: Option<Kind>,
    now_ms: TimestampMs,
) -> Result<(), StoreError> {
    let id = score.entity.as_str();
    let model = score.model.as_str();
    let key = (id, SCORE, model.as_bytes());
    let (old, old_score) = match data.get(key).map_err(|e| shared.err(e))? {
        None => (None, None),
        Some(v) => {
            let prefix = score_prefix(v.value())
                .ok_or_else(|| shared.corrupt(id, "a score", "too few bytes"))?;
            let decoded = if open && prefix.0 <= score.events_seen {
                Some(decode_score(v.value()).map_err(|e| shared.corrupt(id, "a score", e))?)
            } else {
                None
            };
            (Some(prefix), decoded)
        }
    };
    if let Some((old_seen, old_probability)) = old {
        if old_seen > score.events_seen {
            return Ok(());
        }
        changes.push(QueueChange::Remove {
            model: model.to_owned(),
            rank: rank(old_probability),
            id: id.to_owned(),
        });
    }
    data.insert(key, score.bytes.as_slice())
        .map_err(|e| shared.err(e))?;
    if open {
        changes.push(QueueChange::Insert {
            model: model.to_owned(),
            rank: rank(score.probability),
            id: id.to_owned(),
        });
        // Both kinds' rules first: only a possible transition reads the record.
        let new = &score.score;
        let old = old_score.as_ref();
        let possible = !crate::transitions(Kind::Lead, old, new).is_empty()
            || !crate::transitions(Kind::Customer, old, new).is_empty();
        if possible {
            let kind = match kind {
                Some(k) => k,
                None => read_record(shared, data, id)?
                    .map(|r| r.kind)
                    .ok_or_else(|| shared.corrupt(id, "the record", "missing beside a score"))?,
            };
            for transition in crate::transitions(kind, old, new) {
                outbox.push(Message {
                    id: String::new(),
                    seq: 0,
                    transition,
                    entity: id.to_owned(),
                    kind,
                    score: new.clone(),
                    previous_grade: old.map(|o| o.grade.clone()),
                    reasons: score.reasons.clone(),
                    at_ms: now_ms,
                });
            }
        }
    }
    Ok(())
}

/// Gives `messages` their sequences and ids and files a delivery of each for every endpoint
/// that wants it (the endpoints set with [`Outbox::set_endpoints`]); a message no endpoint
/// wants is not kept. Returns the deliveries filed.
fn write_messages(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    messages: Vec<Message>,
    now_ms: TimestampMs,
) -> Result<Vec<Delivery>, StoreError> {
    let (endpoints, wanted) = shared.filing.wanted(messages);
    let mut filed = Vec::new();
    if wanted.is_empty() {
        return Ok(filed);
    }
    let mut meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    let mut seq = meta
        .get(META_OUTBOX_SEQ)
        .map_err(|e| shared.err(e))?
        .map_or(1, |v| v.value());
    let mut table = txn.open_table(DELIVERIES).map_err(|e| shared.err(e))?;
    for message in wanted {
        for delivery in deliveries(&endpoints, message, seq, shared.epoch, now_ms) {
            put_delivery(shared, &mut table, &delivery)?;
            filed.push(delivery);
        }
        seq += 1;
    }
    meta.insert(META_OUTBOX_SEQ, seq)
        .map_err(|e| shared.err(e))?;
    Ok(filed)
}

fn apply_scores(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    updates: &[EncodedScore],
    changes: &mut Vec<QueueChange>,
    outbox: &mut Vec<Message>,
) -> Result<(), StoreError> {
    let now_ms = wall_clock_ms();
    let mut data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
    for update in updates {
        let Some(open) = data
            .get((update.entity.as_str(), RECORD, &[][..]))
            .map_err(|e| shared.err(e))?
            .map(|v| record_is_open(v.value()))
        else {
            continue;
        };
        keep_score(
            shared, &mut data, changes, outbox, update, open, None, now_ms,
        )?;
    }
    Ok(())
}

/// Now, by the system clock: when a transition happened.
pub(crate) fn wall_clock_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn apply_erase(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    id: &str,
    changes: &mut Vec<QueueChange>,
) -> Result<bool, StoreError> {
    let mut data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
    let Some(record) = read_record(shared, &data, id)? else {
        return Ok(false);
    };
    drop_scores(shared, &mut data, changes, id, true)?;
    data.retain_in(entity_range(id), |_, _| false)
        .map_err(|e| shared.err(e))?;
    drop(data);
    erase_messages(shared, txn, id)?;
    let mut meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    add_count(shared, &mut meta, META_ENTITIES, -1)?;
    let events = i64::try_from(record.event_count).unwrap_or(i64::MAX);
    add_count(shared, &mut meta, META_EVENTS, -events)?;
    Ok(true)
}

fn apply_expire(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    before_ms: TimestampMs,
) -> Result<u64, StoreError> {
    let mut data = txn.open_table(DATA).map_err(|e| shared.err(e))?;
    // Each entity's events older than the time: the first of its log.
    let mut expired: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
    let mut next = String::new();
    loop {
        let mut range = data
            .range((next.as_str(), RECORD, &[][..])..)
            .map_err(|e| shared.err(e))?;
        let Some(item) = range.next() else {
            break;
        };
        let (key, _) = item.map_err(|e| shared.err(e))?;
        let id = key.value().0.to_owned();
        next = after_id(&id);
        for item in range {
            let (key, value) = item.map_err(|e| shared.err(e))?;
            let (key_id, part, sub) = key.value();
            if key_id != id || part > EVENT {
                break;
            }
            if part != EVENT {
                continue;
            }
            let (ts, _) = decode_event_key(sub)
                .ok_or_else(|| shared.corrupt(&id, "an event", "a short key"))?;
            if ts >= before_ms {
                break;
            }
            let v: EventValue = serde_json::from_slice(value.value())
                .map_err(|e| shared.corrupt(&id, "an event", e))?;
            expired.push((id.clone(), sub.to_vec(), v.id));
        }
    }
    let mut touched: std::collections::BTreeMap<String, u64> = Default::default();
    for (id, key, client_id) in &expired {
        data.remove((id.as_str(), EVENT, key.as_slice()))
            .map_err(|e| shared.err(e))?;
        if let Some(c) = client_id {
            data.remove((id.as_str(), CLIENT_ID, c.as_bytes()))
                .map_err(|e| shared.err(e))?;
        }
        *touched.entry(id.clone()).or_default() += 1;
    }
    for (id, n) in touched {
        let Some(mut record) = read_record(shared, &data, &id)? else {
            continue;
        };
        record.event_count = record.event_count.saturating_sub(n);
        record.first_event_ms = first_event_time(shared, &data, &id)?;
        if record.event_count == 0 {
            record.first_event_ms = None;
        }
        let bytes = encode_record(&record).map_err(|e| shared.corrupt(&id, "the record", e))?;
        data.insert((id.as_str(), RECORD, &[][..]), bytes.as_slice())
            .map_err(|e| shared.err(e))?;
    }
    let mut meta = txn.open_table(META).map_err(|e| shared.err(e))?;
    let n = i64::try_from(expired.len()).unwrap_or(i64::MAX);
    add_count(shared, &mut meta, META_EVENTS, -n)?;
    Ok(expired.len() as u64)
}

fn put_delivery(
    shared: &Shared,
    table: &mut redb::Table<'_, DeliveryKey<'static>, &'static [u8]>,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(delivery)
        .map_err(|e| shared.corrupt(&delivery.message.entity, "a delivery", e))?;
    table
        .insert(
            (delivery.endpoint.as_str(), delivery.message.seq),
            bytes.as_slice(),
        )
        .map_err(|e| shared.err(e))?;
    Ok(())
}

fn decode_delivery(shared: &Shared, bytes: &[u8]) -> Result<Delivery, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| shared.corrupt("", "a delivery", e))
}

fn apply_attempt(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    endpoint: &str,
    seq: u64,
    attempt: &Attempt,
) -> Result<(), StoreError> {
    let mut deliveries = txn.open_table(DELIVERIES).map_err(|e| shared.err(e))?;
    let Some(bytes) = deliveries
        .remove((endpoint, seq))
        .map_err(|e| shared.err(e))?
        .map(|v| v.value().to_vec())
    else {
        return Ok(());
    };
    let mut delivery = decode_delivery(shared, &bytes)?;
    match attempt {
        Attempt::Delivered => {}
        Attempt::Retry {
            attempts,
            next_at_ms,
            error,
        } => {
            delivery.attempts = *attempts;
            delivery.next_at_ms = *next_at_ms;
            delivery.last_error = Some(error.clone());
            put_delivery(shared, &mut deliveries, &delivery)?;
        }
        Attempt::Dead {
            attempts,
            at_ms,
            error,
        } => {
            delivery.attempts = *attempts;
            delivery.last_error = Some(error.clone());
            delivery.dead_at_ms = Some(*at_ms);
            let mut dead = txn.open_table(DEAD).map_err(|e| shared.err(e))?;
            put_delivery(shared, &mut dead, &delivery)?;
        }
    }
    Ok(())
}

fn apply_replay(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    endpoint: &str,
    seqs: Option<&[u64]>,
    now_ms: TimestampMs,
) -> Result<Vec<Delivery>, StoreError> {
    let mut dead = txn.open_table(DEAD).map_err(|e| shared.err(e))?;
    let mut moved = Vec::new();
    match seqs {
        Some(seqs) => {
            for seq in seqs {
                if let Some(v) = dead.remove((endpoint, *seq)).map_err(|e| shared.err(e))? {
                    moved.push(decode_delivery(shared, v.value())?);
                }
            }
        }
        None => {
            for item in dead
                .extract_from_if((endpoint, 0)..=(endpoint, u64::MAX), |_, _| true)
                .map_err(|e| shared.err(e))?
            {
                let (_, v) = item.map_err(|e| shared.err(e))?;
                moved.push(decode_delivery(shared, v.value())?);
            }
        }
    }
    let mut deliveries = txn.open_table(DELIVERIES).map_err(|e| shared.err(e))?;
    for d in &mut moved {
        d.attempts = 0;
        d.next_at_ms = now_ms;
        d.dead_at_ms = None;
        put_delivery(shared, &mut deliveries, d)?;
    }
    moved.sort_by_key(|d| d.message.seq);
    Ok(moved)
}

/// Drops the deliveries and dead letters of entity `id` (its erasure).
fn erase_messages(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    id: &str,
) -> Result<(), StoreError> {
    #[derive(Deserialize)]
    struct Entity<'a> {
        #[serde(borrow)]
        entity: &'a str,
    }
    #[derive(Deserialize)]
    struct Of<'a> {
        #[serde(borrow)]
        message: Entity<'a>,
    }
    for table in [DELIVERIES, DEAD] {
        let mut t = txn.open_table(table).map_err(|e| shared.err(e))?;
        t.retain(|_, v| serde_json::from_slice::<Of>(v).map_or(true, |d| d.message.entity != id))
            .map_err(|e| shared.err(e))?;
    }
    Ok(())
}

/// Rewrites the file with only what is live: copies every table into a new file beside it,
/// commits it durably, renames it over the old one and serves from it. Freed pages of the
/// old file (where erased entities' bytes stay until overwritten: redb does not zero them)
/// go with the old file. Readers still on the old file finish there.
fn reclaim(shared: &Shared) -> Result<(), StoreError> {
    let old = shared.db();
    let fresh_path = shared.path.with_extension("redb.reclaim");
    let _ = std::fs::remove_file(&fresh_path);
    let fresh = Database::create(&fresh_path).map_err(|e| shared.err(e))?;
    {
        let read = old.begin_read().map_err(|e| shared.err(e))?;
        let mut txn = begin_write(shared, &fresh)?;
        copy_table(shared, &read, &mut txn, META)?;
        copy_table(shared, &read, &mut txn, DATA)?;
        copy_table(shared, &read, &mut txn, DELIVERIES)?;
        copy_table(shared, &read, &mut txn, DEAD)?;
        txn.commit().map_err(|e| shared.err(e))?;
    }
    std::fs::rename(&fresh_path, &shared.path).map_err(|e| shared.err(e))?;
    if let Some(dir) = shared.path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| shared.err(e))?;
    }
    *shared.db.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
    Ok(())
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    shared: &Shared,
    read: &redb::ReadTransaction,
    write: &mut redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = read.open_table(table).map_err(|e| shared.err(e))?;
    let mut to = write.open_table(table).map_err(|e| shared.err(e))?;
    for item in from.iter().map_err(|e| shared.err(e))? {
        let (k, v) = item.map_err(|e| shared.err(e))?;
        to.insert(k.value(), v.value()).map_err(|e| shared.err(e))?;
    }
    Ok(())
}

impl RedbStore {
    /// Rows of a delivery table in key order after `after`, of `endpoint` when given.
    fn deliveries_now(
        &self,
        table: TableDefinition<DeliveryKey<'static>, &'static [u8]>,
        endpoint: Option<&str>,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let t = txn.open_table(table).map_err(|e| shared.err(e))?;
        let start = match (&after, endpoint) {
            (Some((e, seq)), _) => (e.clone(), seq.saturating_add(1)),
            (None, Some(e)) => (e.to_owned(), 0),
            (None, None) => (String::new(), 0),
        };
        let mut out = Vec::new();
        for item in t
            .range((start.0.as_str(), start.1)..)
            .map_err(|e| shared.err(e))?
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| shared.err(e))?;
            if endpoint.is_some_and(|e| e != key.value().0) {
                break;
            }
            out.push(decode_delivery(shared, value.value())?);
        }
        Ok(out)
    }

    fn outbox_stats_now(&self) -> Result<OutboxStats, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let mut stats = OutboxStats::default();
        for (table, into) in [(DELIVERIES, &mut stats.pending), (DEAD, &mut stats.dead)] {
            let t = txn.open_table(table).map_err(|e| shared.err(e))?;
            for item in t.iter().map_err(|e| shared.err(e))? {
                let (key, _) = item.map_err(|e| shared.err(e))?;
                let endpoint = key.value().0;
                match into.last_mut() {
                    Some((e, n)) if e == endpoint => *n += 1,
                    _ => into.push((endpoint.to_owned(), 1)),
                }
            }
        }
        Ok(stats)
    }
}

impl Outbox for RedbStore {
    fn set_endpoints(&self, endpoints: Vec<EndpointFilter>) {
        self.shared.filing.set_endpoints(endpoints);
    }

    fn take_new(&self) -> Vec<Delivery> {
        self.shared.filing.take_new()
    }

    fn adopt(&self, limit: usize) -> StoreFuture<'_, Vec<Delivery>> {
        let result = (|| {
            let mut adopt = self
                .shared
                .adopt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if adopt.done || limit == 0 {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            // Pages until `limit` filed before the opening are found or the table ends.
            loop {
                let page = self.deliveries_now(DELIVERIES, None, adopt.after.clone(), limit)?;
                let full = page.len() == limit;
                for d in page {
                    if out.len() >= limit {
                        break;
                    }
                    adopt.after = Some((d.endpoint.clone(), d.message.seq));
                    if d.message.seq < adopt.before_seq {
                        out.push(d);
                    }
                }
                if out.len() >= limit {
                    break;
                }
                if !full {
                    adopt.done = true;
                    break;
                }
            }
            Ok(out)
        })();
        Box::pin(async move { result })
    }

    fn pending(
        &self,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        let result = self.deliveries_now(DELIVERIES, None, after, limit);
        Box::pin(async move { result })
    }

    fn delivery(&self, endpoint: &str, seq: u64) -> StoreFuture<'_, Option<Delivery>> {
        let shared = &self.shared;
        let result = (|| {
            let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
            let t = txn.open_table(DELIVERIES).map_err(|e| shared.err(e))?;
            t.get((endpoint, seq))
                .map_err(|e| shared.err(e))?
                .map(|v| decode_delivery(shared, v.value()))
                .transpose()
        })();
        Box::pin(async move { result })
    }

    fn record_attempt(
        &self,
        endpoint: String,
        seq: u64,
        attempt: Attempt,
    ) -> StoreFuture<'static, ()> {
        self.send(|reply| Job::Attempt(endpoint, seq, attempt, reply))
    }

    fn dead_letters(
        &self,
        endpoint: Option<String>,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        let result = self.deliveries_now(DEAD, endpoint.as_deref(), after, limit);
        Box::pin(async move { result })
    }

    fn replay(
        &self,
        endpoint: String,
        seqs: Option<Vec<u64>>,
        now_ms: TimestampMs,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        self.send(|reply| Job::Replay(endpoint, seqs, now_ms, reply))
    }

    fn outbox_stats(&self) -> StoreFuture<'_, OutboxStats> {
        let result = self.outbox_stats_now();
        Box::pin(async move { result })
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.shared.filing.signal()
    }
}

impl EntityStore for RedbStore {
    fn write(&self, batch: WriteBatch) -> StoreFuture<'_, Vec<Written>> {
        self.send(|reply| Job::Write(batch, reply))
    }

    fn limits(&self) -> StoreLimits {
        self.shared.limits
    }

    fn entity(&self, id: &str) -> StoreFuture<'_, Option<StoredEntity>> {
        let result = self.read_entity(id);
        Box::pin(async move { result })
    }

    fn history(&self, id: &str) -> StoreFuture<'_, Option<EntityWithEvents>> {
        let result = self.history_now(id);
        Box::pin(async move { result })
    }

    fn put_scores(&self, scores: Vec<ScoreUpdate>) -> StoreFuture<'static, ()> {
        let encoded: Result<Vec<EncodedScore>, StoreError> = scores
            .into_iter()
            .map(|u| {
                encode_score(u.entity.clone(), &u.score, u.reasons)
                    .map_err(|e| self.shared.corrupt(&u.entity, "a score", e))
            })
            .collect();
        match encoded {
            Ok(encoded) => self.send(|reply| Job::Scores(encoded, reply)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn settle(&self) -> StoreFuture<'_, ()> {
        self.send(Job::Settle)
    }

    fn top(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> StoreFuture<'_, Vec<(String, StoredScore)>> {
        let result = self.top_now(model, limit, band);
        Box::pin(async move { result })
    }

    fn erase(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_owned();
        self.send(|reply| Job::Erase(id, reply))
    }

    fn reclaim(&self) -> StoreFuture<'_, ()> {
        self.send(Job::Reclaim)
    }

    fn active_since(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
        share: Share,
    ) -> StoreFuture<'_, Vec<EntityWithEvents>> {
        let result = self.page_now(after.as_deref(), limit, |id, record| {
            share.holds(split_hash(id)) && record_last_active(record).is_some_and(|t| t >= since_ms)
        });
        Box::pin(async move { result })
    }

    fn sweep_share(&self) -> StoreFuture<'_, Share> {
        Box::pin(async { Ok(Share::ALL) })
    }

    fn scan(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<EntityWithEvents>> {
        let result = self.page_now(after.as_deref(), limit, |_, _| true);
        Box::pin(async move { result })
    }

    fn expire_events(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        self.send(|reply| Job::Expire(before_ms, reply))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        let result = self.stats_now();
        Box::pin(async move { result })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
