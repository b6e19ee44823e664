//! The embedded backend: one redb file, `<dir>/entities.redb`.
//!
//! Tables (keys sort as tuples, element by element; strings by their bytes):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `entities` | id | one byte (1: open, 0: closed by an outcome), then [`EntityRecord`] as JSON |
//! | `events` | (id, ts, seq) | the event's id, type, channel and value as JSON |
//! | `event_ids` | (id, client event id) | (ts, seq) of the stored event |
//! | `scores` | (id, model) | `events_seen` and the probability's bits (8 bytes each, little-endian), then [`StoredScore`] as JSON |
//! | `queue` | (model, rank, id) | nothing: rank is the probability's bits inverted, so a range scan reads the best first |
//! | `active` | (last active ts, id) | nothing: the sweep's index of recent activity |
//!
//! One entity's history is one range scan of `events`. Writes go to one writer thread,
//! which takes every write queued while it committed the last ones and commits them
//! together (group commit): one fsync for many requests, each answered only after it.
//! The writer thread only moves bytes: scores are encoded before they reach it, and the
//! prefixes above let it decide whether a score replaces the stored one and whether the
//! entity is in the queue without decoding JSON.
//! Commits use quick repair, so a file left by a crash opens at once, without the full
//! repair walk (the crash test checks that no repair runs).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use features::history::{ProfileValue, TimestampMs};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    EntityRecord, EntityStore, EntityWithEvents, EntityWrite, ProfileChange, ScoreUpdate,
    StoreError, StoreFuture, StoreLimits, StoreStats, StoredEntity, StoredEvent, StoredScore,
    WriteBatch, Written,
};

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const EVENTS: TableDefinition<(&str, i64, u64), &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<(&str, &str), (i64, u64)> = TableDefinition::new("event_ids");
const SCORES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("scores");
const QUEUE: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("queue");
const ACTIVE: TableDefinition<(i64, &str), ()> = TableDefinition::new("active");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version written in `meta`; a file of another version is refused.
const LAYOUT_VERSION: u64 = 2;

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
}

/// Bytes before a score's JSON: `events_seen`, then the probability's bits.
const SCORE_PREFIX: usize = 16;

fn encode_score(entity: String, score: &StoredScore) -> Result<EncodedScore, serde_json::Error> {
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

fn encode_record(record: &EntityRecord) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(u8::from(record.is_open()));
    serde_json::to_writer(&mut bytes, record)?;
    Ok(bytes)
}

fn decode_record(bytes: &[u8]) -> Result<EntityRecord, String> {
    let json = bytes.get(1..).ok_or("an empty record")?;
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Whether a stored record is open, from its first byte.
fn record_is_open(bytes: &[u8]) -> bool {
    bytes.first() == Some(&1)
}

enum Job {
    Write(WriteBatch, Reply<Vec<Written>>),
    Scores(Vec<EncodedScore>, Reply<()>),
    /// Answered once every job queued before it is committed.
    Settle(Reply<()>),
    Erase(String, Reply<bool>),
    Expire(TimestampMs, Reply<u64>),
    Reclaim(Reply<()>),
}

/// What a job gives back once its group is committed.
enum Done {
    Write(Vec<Written>),
    Scores,
    Erase(bool),
    Expire(u64),
}

/// An event's stored value (its time and sequence are in the key).
#[derive(Serialize, Deserialize)]
struct EventValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
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
        init_tables(&db).map_err(|e| err(&e))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Arc::new(db)),
            path,
            limits: open.limits,
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
        let written = apply_write(shared, &mut txn, batch)?;
        txn.commit().map_err(|e| shared.err(e))?;
        Ok(written)
    }

    fn read_entity(&self, id: &str) -> Result<Option<StoredEntity>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
        let Some(record) = entities.get(id).map_err(|e| shared.err(e))? else {
            return Ok(None);
        };
        let record: EntityRecord =
            decode_record(record.value()).map_err(|e| shared.corrupt(id, "the record", e))?;
        let scores_table = txn.open_table(SCORES).map_err(|e| shared.err(e))?;
        let end = after_id(id);
        let mut scores = Vec::new();
        for item in scores_table
            .range((id, "")..(end.as_str(), ""))
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

    fn read_history(
        shared: &Shared,
        entities: &impl ReadableTable<&'static str, &'static [u8]>,
        events: &impl ReadableTable<(&'static str, i64, u64), &'static [u8]>,
        id: &str,
    ) -> Result<Option<EntityWithEvents>, StoreError> {
        let Some(record) = entities.get(id).map_err(|e| shared.err(e))? else {
            return Ok(None);
        };
        let record: EntityRecord =
            decode_record(record.value()).map_err(|e| shared.corrupt(id, "the record", e))?;
        let mut out = Vec::with_capacity(usize::try_from(record.event_count).unwrap_or(0));
        for item in events
            .range((id, i64::MIN, 0)..=(id, i64::MAX, u64::MAX))
            .map_err(|e| shared.err(e))?
        {
            let (key, value) = item.map_err(|e| shared.err(e))?;
            let (_, ts_ms, _) = key.value();
            let v: EventValue = serde_json::from_slice(value.value())
                .map_err(|e| shared.corrupt(id, "an event", e))?;
            out.push(StoredEvent {
                id: v.id,
                ts_ms,
                event_type: v.event_type,
                channel: v.channel,
                value: v.value,
            });
        }
        Ok(Some(EntityWithEvents {
            id: id.to_owned(),
            record,
            events: out,
        }))
    }

    fn history_now(&self, id: &str) -> Result<Option<EntityWithEvents>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
        let events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
        Self::read_history(shared, &entities, &events, id)
    }

    fn top_now(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> Result<Vec<(String, StoredScore)>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let queue = txn.open_table(QUEUE).map_err(|e| shared.err(e))?;
        let scores = txn.open_table(SCORES).map_err(|e| shared.err(e))?;
        // A band [lo, hi): ranks from hi (exclusive) down to lo (inclusive).
        let (first, last) = match band {
            Some((lo, hi)) => (rank(hi).saturating_add(1), rank(lo)),
            None => (0, u64::MAX),
        };
        let end = after_id(model);
        let range = if first <= last {
            queue.range((model, first, "")..(end.as_str(), 0, ""))
        } else {
            return Ok(Vec::new());
        }
        .map_err(|e| shared.err(e))?;
        let mut out = Vec::with_capacity(limit.min(1000));
        for item in range {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| shared.err(e))?;
            let (_, r, id) = key.value();
            if r > last {
                break;
            }
            let Some(value) = scores.get((id, model)).map_err(|e| shared.err(e))? else {
                continue;
            };
            let score =
                decode_score(value.value()).map_err(|e| shared.corrupt(id, "a score", e))?;
            out.push((id.to_owned(), score));
        }
        Ok(out)
    }

    fn active_now(
        &self,
        since_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let active = txn.open_table(ACTIVE).map_err(|e| shared.err(e))?;
        let mut out = Vec::with_capacity(limit.min(10_000));
        let range = match &after {
            Some((ts, id)) => {
                let next = after_id(id);
                active.range((*ts, next.as_str())..)
            }
            None => active.range((since_ms, "")..),
        }
        .map_err(|e| shared.err(e))?;
        for item in range.take(limit) {
            let (key, _) = item.map_err(|e| shared.err(e))?;
            let (ts, id) = key.value();
            out.push((ts, id.to_owned()));
        }
        Ok(out)
    }

    fn scan_now(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<EntityWithEvents>, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
        let events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
        let ids: Vec<String> = {
            let range = match &after {
                Some(id) => entities.range(after_id(id).as_str()..),
                None => entities.range::<&str>(..),
            }
            .map_err(|e| shared.err(e))?;
            let mut ids = Vec::new();
            for item in range.take(limit) {
                let (key, _) = item.map_err(|e| shared.err(e))?;
                ids.push(key.value().to_owned());
            }
            ids
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = Self::read_history(shared, &entities, &events, &id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn stats_now(&self) -> Result<StoreStats, StoreError> {
        let shared = &self.shared;
        let txn = shared.db().begin_read().map_err(|e| shared.err(e))?;
        let entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
        let events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
        let bytes = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
        Ok(StoreStats {
            entities: entities.len().map_err(|e| shared.err(e))?,
            events: events.len().map_err(|e| shared.err(e))?,
            bytes,
        })
    }
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

fn init_tables(db: &Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let version = meta
            .get("layout")
            .map_err(|e| e.to_string())?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert("layout", LAYOUT_VERSION)
                    .map_err(|e| e.to_string())?;
            }
            Some(LAYOUT_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "the file has layout version {other}; this server reads version \
                     {LAYOUT_VERSION}"
                ));
            }
        }
        txn.open_table(ENTITIES).map_err(|e| e.to_string())?;
        txn.open_table(EVENTS).map_err(|e| e.to_string())?;
        txn.open_table(EVENT_IDS).map_err(|e| e.to_string())?;
        txn.open_table(SCORES).map_err(|e| e.to_string())?;
        txn.open_table(QUEUE).map_err(|e| e.to_string())?;
        txn.open_table(ACTIVE).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
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
        for job in jobs {
            done.push(apply_job(shared, &mut txn, job)?);
        }
        txn.commit().map_err(|e| shared.err(e))?;
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
) -> Result<Done, StoreError> {
    Ok(match job {
        Job::Write(batch, _) => Done::Write(apply_write(shared, txn, batch.clone())?),
        Job::Scores(scores, _) => {
            apply_scores(shared, txn, scores)?;
            Done::Scores
        }
        Job::Erase(id, _) => Done::Erase(apply_erase(shared, txn, id)?),
        Job::Expire(before, _) => Done::Expire(apply_expire(shared, txn, *before)?),
        Job::Reclaim(_) | Job::Settle(_) => Done::Scores,
    })
}

fn read_record(
    shared: &Shared,
    entities: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<EntityRecord>, StoreError> {
    entities
        .get(id)
        .map_err(|e| shared.err(e))?
        .map(|v| decode_record(v.value()).map_err(|e| shared.corrupt(id, "the record", e)))
        .transpose()
}

fn apply_write(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    batch: WriteBatch,
) -> Result<Vec<Written>, StoreError> {
    let err = |e: redb::Error| shared.err(e);
    let mut entities = txn.open_table(ENTITIES).map_err(|e| err(e.into()))?;
    let mut events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
    let mut event_ids = txn.open_table(EVENT_IDS).map_err(|e| err(e.into()))?;
    let mut scores = txn.open_table(SCORES).map_err(|e| err(e.into()))?;
    let mut queue = txn.open_table(QUEUE).map_err(|e| err(e.into()))?;
    let mut active = txn.open_table(ACTIVE).map_err(|e| err(e.into()))?;
    let max_events = shared.limits.max_events_per_entity.max(1);
    let mut out = Vec::with_capacity(batch.entities.len());
    for write in batch.entities {
        let EntityWrite {
            id,
            kind,
            created_at_ms,
            profile,
            profile_change,
            events: new_events,
            outcomes,
        } = write;
        let existing = read_record(shared, &entities, &id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| EntityRecord {
            kind: kind.unwrap_or_default(),
            created_at_ms: created_at_ms
                .or_else(|| new_events.iter().map(|e| e.ts_ms).min())
                .unwrap_or(batch.now_ms),
            created_at_given: created_at_ms.is_some(),
            profile: Default::default(),
            outcomes: Vec::new(),
            event_count: 0,
            first_event_ms: None,
            last_event_ms: None,
            events_appended: 0,
            updated_at_ms: batch.now_ms,
        });
        let was_open = existing.as_ref().is_some_and(EntityRecord::is_open);
        let old_active = existing.as_ref().map(EntityRecord::last_active_ms);
        // A new kind means other models: the scores of the old ones go.
        let kind_changed = kind.is_some_and(|k| k != record.kind);
        if let Some(k) = kind {
            record.kind = k;
        }
        if let Some(t) = created_at_ms {
            record.created_at_ms = t;
            record.created_at_given = true;
        }
        if profile_change == ProfileChange::Replace {
            record.profile.clear();
        }
        for (name, value) in profile {
            if value == ProfileValue::Missing {
                record.profile.remove(&name);
            } else {
                record.profile.insert(name, value);
            }
        }
        let mut added = 0u32;
        let mut duplicates = 0u32;
        for event in new_events {
            if let Some(client_id) = &event.id
                && event_ids
                    .get((id.as_str(), client_id.as_str()))
                    .map_err(|e| err(e.into()))?
                    .is_some()
            {
                duplicates += 1;
                continue;
            }
            let seq = record.events_appended;
            record.events_appended += 1;
            let value = serde_json::to_vec(&EventValue {
                id: event.id.clone(),
                event_type: event.event_type,
                channel: event.channel,
                value: event.value,
            })
            .map_err(|e| shared.corrupt(&id, "an event", e))?;
            events
                .insert((id.as_str(), event.ts_ms, seq), value.as_slice())
                .map_err(|e| err(e.into()))?;
            if let Some(client_id) = &event.id {
                event_ids
                    .insert((id.as_str(), client_id.as_str()), (event.ts_ms, seq))
                    .map_err(|e| err(e.into()))?;
            }
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
        let mut dropped = 0u32;
        if record.event_count > max_events {
            let excess = usize::try_from(record.event_count - max_events).unwrap_or(usize::MAX);
            let mut oldest = Vec::with_capacity(excess);
            for item in events
                .range((id.as_str(), i64::MIN, 0)..=(id.as_str(), i64::MAX, u64::MAX))
                .map_err(|e| err(e.into()))?
                .take(excess)
            {
                let (key, value) = item.map_err(|e| err(e.into()))?;
                let (_, ts, seq) = key.value();
                let v: EventValue = serde_json::from_slice(value.value())
                    .map_err(|e| shared.corrupt(&id, "an event", e))?;
                oldest.push((ts, seq, v.id));
            }
            for (ts, seq, client_id) in oldest {
                events
                    .remove((id.as_str(), ts, seq))
                    .map_err(|e| err(e.into()))?;
                if let Some(c) = client_id {
                    event_ids
                        .remove((id.as_str(), c.as_str()))
                        .map_err(|e| err(e.into()))?;
                }
                record.event_count -= 1;
                dropped += 1;
            }
            record.first_event_ms = first_event(&events, &id).map_err(&err)?;
        }
        for outcome in outcomes {
            if !record.outcomes.contains(&outcome) {
                record.outcomes.push(outcome);
            }
        }
        record.outcomes.sort_by_key(|o| (o.at_ms, o.kind.as_str()));
        record.updated_at_ms = batch.now_ms;
        // Leaving the queue: closed by an outcome, or scored by other models now.
        if kind_changed || (was_open && !record.is_open()) {
            drop_scores(shared, &mut scores, &mut queue, &id, kind_changed)?;
        }
        let new_active = record.last_active_ms();
        if old_active != Some(new_active) {
            if let Some(old) = old_active {
                active
                    .remove((old, id.as_str()))
                    .map_err(|e| err(e.into()))?;
            }
            active
                .insert((new_active, id.as_str()), ())
                .map_err(|e| err(e.into()))?;
        }
        let bytes = encode_record(&record).map_err(|e| shared.corrupt(&id, "the record", e))?;
        entities
            .insert(id.as_str(), bytes.as_slice())
            .map_err(|e| err(e.into()))?;
        out.push(Written {
            id,
            created,
            events_added: added,
            duplicates,
            dropped_at_cap: dropped,
            record,
        });
    }
    Ok(out)
}

fn first_event(
    events: &impl ReadableTable<(&'static str, i64, u64), &'static [u8]>,
    id: &str,
) -> Result<Option<i64>, redb::Error> {
    let mut range = events.range((id, i64::MIN, 0)..=(id, i64::MAX, u64::MAX))?;
    Ok(match range.next() {
        Some(item) => Some(item?.0.value().1),
        None => None,
    })
}

/// Takes `id` out of every queue; with `delete`, drops its scores too.
fn drop_scores(
    shared: &Shared,
    scores: &mut redb::Table<(&'static str, &'static str), &'static [u8]>,
    queue: &mut redb::Table<(&'static str, u64, &'static str), ()>,
    id: &str,
    delete: bool,
) -> Result<(), StoreError> {
    let end = after_id(id);
    let mut held = Vec::new();
    for item in scores
        .range((id, "")..(end.as_str(), ""))
        .map_err(|e| shared.err(e))?
    {
        let (key, value) = item.map_err(|e| shared.err(e))?;
        let (_, probability) = score_prefix(value.value())
            .ok_or_else(|| shared.corrupt(id, "a score", "too few bytes"))?;
        held.push((key.value().1.to_owned(), probability));
    }
    for (model, probability) in held {
        queue
            .remove((model.as_str(), rank(probability), id))
            .map_err(|e| shared.err(e))?;
        if delete {
            scores
                .remove((id, model.as_str()))
                .map_err(|e| shared.err(e))?;
        }
    }
    Ok(())
}

fn apply_scores(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    updates: &[EncodedScore],
) -> Result<(), StoreError> {
    let entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
    let mut scores = txn.open_table(SCORES).map_err(|e| shared.err(e))?;
    let mut queue = txn.open_table(QUEUE).map_err(|e| shared.err(e))?;
    for update in updates {
        let id = update.entity.as_str();
        let Some(open) = entities
            .get(id)
            .map_err(|e| shared.err(e))?
            .map(|v| record_is_open(v.value()))
        else {
            continue;
        };
        let model = update.model.as_str();
        let old = match scores.get((id, model)).map_err(|e| shared.err(e))? {
            None => None,
            Some(v) => Some(
                score_prefix(v.value())
                    .ok_or_else(|| shared.corrupt(id, "a score", "too few bytes"))?,
            ),
        };
        if let Some((old_seen, old_probability)) = old {
            if old_seen > update.events_seen {
                continue;
            }
            queue
                .remove((model, rank(old_probability), id))
                .map_err(|e| shared.err(e))?;
        }
        scores
            .insert((id, model), update.bytes.as_slice())
            .map_err(|e| shared.err(e))?;
        if open {
            queue
                .insert((model, rank(update.probability), id), ())
                .map_err(|e| shared.err(e))?;
        }
    }
    Ok(())
}

fn apply_erase(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    id: &str,
) -> Result<bool, StoreError> {
    let mut entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
    let Some(record) = read_record(shared, &entities, id)? else {
        return Ok(false);
    };
    let mut events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
    let mut event_ids = txn.open_table(EVENT_IDS).map_err(|e| shared.err(e))?;
    let mut scores = txn.open_table(SCORES).map_err(|e| shared.err(e))?;
    let mut queue = txn.open_table(QUEUE).map_err(|e| shared.err(e))?;
    let mut active = txn.open_table(ACTIVE).map_err(|e| shared.err(e))?;
    drop_scores(shared, &mut scores, &mut queue, id, true)?;
    events
        .retain_in((id, i64::MIN, 0)..=(id, i64::MAX, u64::MAX), |_, _| false)
        .map_err(|e| shared.err(e))?;
    let end = after_id(id);
    event_ids
        .retain_in((id, "")..(end.as_str(), ""), |_, _| false)
        .map_err(|e| shared.err(e))?;
    active
        .remove((record.last_active_ms(), id))
        .map_err(|e| shared.err(e))?;
    entities.remove(id).map_err(|e| shared.err(e))?;
    Ok(true)
}

fn apply_expire(
    shared: &Shared,
    txn: &mut redb::WriteTransaction,
    before_ms: TimestampMs,
) -> Result<u64, StoreError> {
    let mut entities = txn.open_table(ENTITIES).map_err(|e| shared.err(e))?;
    let mut events = txn.open_table(EVENTS).map_err(|e| shared.err(e))?;
    let mut event_ids = txn.open_table(EVENT_IDS).map_err(|e| shared.err(e))?;
    let mut expired: Vec<(String, i64, u64, Option<String>)> = Vec::new();
    for item in events.iter().map_err(|e| shared.err(e))? {
        let (key, value) = item.map_err(|e| shared.err(e))?;
        let (id, ts, seq) = key.value();
        if ts < before_ms {
            let v: EventValue = serde_json::from_slice(value.value())
                .map_err(|e| shared.corrupt(id, "an event", e))?;
            expired.push((id.to_owned(), ts, seq, v.id));
        }
    }
    let mut touched: std::collections::BTreeMap<String, u64> = Default::default();
    for (id, ts, seq, client_id) in &expired {
        events
            .remove((id.as_str(), *ts, *seq))
            .map_err(|e| shared.err(e))?;
        if let Some(c) = client_id {
            event_ids
                .remove((id.as_str(), c.as_str()))
                .map_err(|e| shared.err(e))?;
        }
        *touched.entry(id.clone()).or_default() += 1;
    }
    for (id, n) in touched {
        let Some(mut record) = read_record(shared, &entities, &id)? else {
            continue;
        };
        record.event_count = record.event_count.saturating_sub(n);
        record.first_event_ms = first_event(&events, &id).map_err(|e| shared.err(e))?;
        if record.event_count == 0 {
            record.first_event_ms = None;
        }
        let bytes = encode_record(&record).map_err(|e| shared.corrupt(&id, "the record", e))?;
        entities
            .insert(id.as_str(), bytes.as_slice())
            .map_err(|e| shared.err(e))?;
    }
    Ok(expired.len() as u64)
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
        copy_table(shared, &read, &mut txn, ENTITIES)?;
        copy_table(shared, &read, &mut txn, EVENTS)?;
        copy_table(shared, &read, &mut txn, EVENT_IDS)?;
        copy_table(shared, &read, &mut txn, SCORES)?;
        copy_table(shared, &read, &mut txn, QUEUE)?;
        copy_table(shared, &read, &mut txn, ACTIVE)?;
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

impl EntityStore for RedbStore {
    fn write(&self, batch: WriteBatch) -> StoreFuture<'_, Vec<Written>> {
        self.send(|reply| Job::Write(batch, reply))
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
                encode_score(u.entity.clone(), &u.score)
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
        after: Option<(i64, String)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<(i64, String)>> {
        let result = self.active_now(since_ms, after, limit);
        Box::pin(async move { result })
    }

    fn scan(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<EntityWithEvents>> {
        let result = self.scan_now(after, limit);
        Box::pin(async move { result })
    }

    fn expire_events(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        self.send(|reply| Job::Expire(before_ms, reply))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        let result = self.stats_now();
        Box::pin(async move { result })
    }
}
