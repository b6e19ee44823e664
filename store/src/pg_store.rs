//! The PostgreSQL backend: the entity store and its outbox in a database that several
//! servers share (`--store postgres://...`).
//!
//! * Tables and functions come from `store/migrations/`, embedded in the binary and applied
//!   when the store is first used, under the advisory lock sqlx's migrator takes (two
//!   replicas starting together apply them once).
//! * Every write goes through one writer task per process, which applies what queued while
//!   it committed in one transaction (group commit, as the embedded backend does).
//! * A transaction first locks the entities it touches (`lock_entities`: advisory locks in
//!   one order for every caller, stored or not yet), so writers on several replicas
//!   serialise per entity and never deadlock on each other; a deadlock or serialisation
//!   failure the database reports anyway is retried.
//! * A message's outbox sequence is drawn while its entity is locked: an entity's messages
//!   are in the outbox in the order of their transitions, whichever replica made them.
//! * A write is acknowledged when PostgreSQL has committed it (`synchronous_commit` as the
//!   database is configured: on by default, durable at acknowledgement).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use features::history::TimestampMs;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::merge::{EventLog, merge};
use crate::outbox::{Filing, deliveries};
use crate::redb_store::{random_epoch, wall_clock_ms};
use crate::{
    Attempt, Delivery, EndpointFilter, EntityRecord, EntityStore, EntityWithEvents, Message,
    NewEvent, Outbox, OutboxStats, ScoreUpdate, Share, StoreError, StoreFuture, StoreLimits,
    StoreStats, StoredEntity, StoredEvent, StoredScore, WriteBatch, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Jobs applied in one transaction at most.
const MAX_GROUP: usize = 512;

/// Entities handled per transaction by the retention.
const EXPIRE_CHUNK: i64 = 500;

/// Times a transaction the database aborted as a deadlock or a serialisation failure is
/// tried again.
const RETRIES: u32 = 5;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOpen {
    /// A libpq-style URL, `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema the store's tables live in (created when missing); `None`: the
    /// connection's default search path.
    pub schema: Option<String>,
    pub limits: StoreLimits,
    /// Connections this process keeps at most.
    pub max_connections: u32,
    /// How long an operation waits for a connection before it fails (the database down).
    pub acquire_timeout: Duration,
    /// A replica's lease on life: renewed every quarter of it while the process runs; once
    /// it runs out, the others adopt the replica's pending deliveries and take its part of
    /// the sweep.
    pub lease: Duration,
}

impl std::fmt::Debug for PgOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOpen")
            .field("url", &shown_url(&self.url))
            .field("schema", &self.schema)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PgOpen {
    /// From a URL as `--store` takes it: a `schema=NAME` query parameter names the schema
    /// (letters, digits and `_`), `lease_secs=S` sets [`PgOpen::lease`] (10 by default), the
    /// rest goes to the driver.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = None;
        let mut lease = Duration::from_secs(10);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", name)) => schema = Some(name.to_owned()),
                Some(("lease_secs", secs)) => {
                    lease = secs
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 3600.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| StoreError::Storage {
                            path: shown_url(url),
                            message: format!(
                                "lease_secs {secs:?}: a number of seconds from 0.1 to 3600"
                            ),
                        })?;
                }
                _ => rest.push(pair),
            }
        }
        if let Some(name) = &schema {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(StoreError::Storage {
                    path: shown_url(url),
                    message: format!(
                        "schema {name:?}: use lower-case letters, digits and '_', starting \
                         with a letter, at most 63 characters"
                    ),
                });
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok(PgOpen {
            url,
            schema,
            limits: StoreLimits::default(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lease,
        })
    }
}

/// `url` without its password, for messages.
fn shown_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) => {
            let user = &rest[..at.saturating_sub(scheme.len() + 3)];
            let user = user.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The store on PostgreSQL. Opening it connects lazily: the first operation (or
/// [`PgStore::ready`]) connects and applies the migrations; an unreachable database fails
/// each operation until it answers again.
pub struct PgStore {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shared.shown)
            .finish_non_exhaustive()
    }
}

struct Shared {
    pool: PgPool,
    /// The URL without its password, and the schema: what errors name.
    shown: String,
    schema: Option<String>,
    limits: StoreLimits,
    /// The outbox epoch, once the database was reached and migrated.
    epoch: OnceCell<u64>,
    /// The outbox's endpoints, deliveries not yet taken and signal.
    filing: Filing,
    /// This process's row of `counters`.
    slot: i32,
    /// This process's id among the replicas (random, new at every start).
    replica: String,
    lease_ms: i64,
}

/// An internal failure: the database's error (kept, to tell a retry from a failure) or one
/// of the store's own.
enum Fail {
    Db(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    /// A deadlock or a serialisation failure: the transaction was rolled back, trying it
    /// again is safe.
    fn retryable(&self) -> bool {
        match self {
            Fail::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }
}

type R<T> = Result<T, Fail>;

impl Shared {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Storage {
            path: self.shown.clone(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, entity: &str, what: &'static str, e: impl std::fmt::Display) -> Fail {
        Fail::Store(StoreError::Corrupt {
            path: self.shown.clone(),
            entity: entity.to_owned(),
            what,
            message: e.to_string(),
        })
    }

    fn store_error(&self, fail: Fail) -> StoreError {
        match fail {
            Fail::Db(e) => self.err(e),
            Fail::Store(e) => e,
        }
    }

    /// Connects, creates the schema, applies the migrations and reads the outbox epoch
    /// (drawn by the first store to get there), once.
    async fn ready(&self) -> Result<u64, StoreError> {
        self.epoch
            .get_or_try_init(|| async { self.init().await.map_err(|e| self.store_error(e)) })
            .await
            .copied()
    }

    /// Says this replica is alive for another lease; forgets replicas gone for a day.
    async fn renew_lease(&self) -> R<()> {
        sqlx::query(
            "INSERT INTO replicas (id, alive_until_ms) VALUES ($1, now_ms() + $2) \
             ON CONFLICT (id) DO UPDATE SET alive_until_ms = EXCLUDED.alive_until_ms",
        )
        .bind(&self.replica)
        .bind(self.lease_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM replicas WHERE alive_until_ms < now_ms() - 86400000")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn init(&self) -> R<u64> {
        if let Some(schema) = &self.schema {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(1280525134, 0)")
                .execute(&mut *tx)
                .await?;
            // The name was checked by `PgOpen::new` (letters, digits, '_').
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| self.err(format!("applying the migrations: {e}")))?;
        self.renew_lease().await?;
        let drawn = random_epoch() as i64;
        sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ('outbox_epoch', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(drawn)
        .execute(&self.pool)
        .await?;
        let epoch: i64 =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE name = 'outbox_epoch'")
                .fetch_one(&self.pool)
                .await?;
        Ok(epoch as u64)
    }
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

struct Job {
    op: Op,
    reply: Reply,
}

enum Op {
    Write(WriteBatch),
    Scores(Vec<ScoreUpdate>),
    Erase(String),
    Expire(TimestampMs),
    Reclaim,
    Settle,
    Attempt(String, u64, Attempt),
    Replay(String, Option<Vec<u64>>, TimestampMs),
}

enum Done {
    Written(Vec<Written>),
    Unit,
    Erased(bool),
    Expired(u64),
    Deliveries(Vec<Delivery>),
}

impl Op {
    /// The entities the op changes (locked before it runs).
    fn entities(&self) -> Vec<String> {
        match self {
            Op::Write(batch) => batch.entities.iter().map(|w| w.id.clone()).collect(),
            Op::Scores(scores) => scores.iter().map(|s| s.entity.clone()).collect(),
            Op::Erase(id) => vec![id.clone()],
            _ => Vec::new(),
        }
    }
}

impl PgStore {
    /// Opens the store (no connection yet: see [`PgStore::ready`]). Must be called within
    /// a Tokio runtime: the writer task starts here.
    pub fn open(open: PgOpen) -> Result<Self, StoreError> {
        let shown = match &open.schema {
            Some(s) => format!("{} (schema {s})", shown_url(&open.url)),
            None => shown_url(&open.url),
        };
        let mut options: PgConnectOptions = open.url.parse().map_err(|e| StoreError::Storage {
            path: shown.clone(),
            message: format!("not a PostgreSQL URL: {e}"),
        })?;
        if let Some(schema) = &open.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        options = options.application_name("leadscore");
        let pool = PgPoolOptions::new()
            .max_connections(open.max_connections.max(2))
            .acquire_timeout(open.acquire_timeout)
            .connect_lazy_with(options);
        let shared = Arc::new(Shared {
            pool,
            shown,
            schema: open.schema,
            limits: open.limits,
            epoch: OnceCell::new(),
            filing: Filing::default(),
            slot: (random_epoch() % 1024) as i32,
            replica: format!("{:016x}", random_epoch()),
            lease_ms: i64::try_from(open.lease.as_millis())
                .unwrap_or(i64::MAX)
                .max(100),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(Arc::clone(&shared), rx));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        Ok(PgStore { shared, jobs: tx })
    }

    /// Connects and applies the migrations now (the server calls it at start, so a wrong
    /// URL or an unreachable database is reported at once).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.shared.ready().await.map(|_| ())
    }

    /// Queues `op` at the call; the answer comes once its transaction committed.
    fn send<T: Send + 'static>(
        &self,
        op: Op,
        pick: fn(Done) -> Option<T>,
    ) -> StoreFuture<'static, T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Job { op, reply: tx }).is_ok();
        let closed = StoreError::Closed {
            path: self.shared.shown.clone(),
        };
        Box::pin(async move {
            if !sent {
                return Err(closed);
            }
            let done = rx.await.map_err(|_| closed.clone())??;
            pick(done).ok_or(closed)
        })
    }

    /// A read on the pool, its failures as the store's.
    fn read<'a, T: Send + 'a>(
        &'a self,
        f: impl std::future::Future<Output = R<T>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let shared = &self.shared;
        Box::pin(async move {
            shared.ready().await?;
            f.await.map_err(|e| shared.store_error(e))
        })
    }
}

/// Renews the replica's lease every quarter of it until the store is dropped (a killed
/// process stops renewing, and the others take over its work once the lease runs out).
async fn heartbeat(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        let every = Duration::from_millis((s.lease_ms / 4).max(25) as u64);
        if s.epoch.initialized()
            && let Err(e) = s.renew_lease().await
        {
            // The store has no logger of its own.
            eprintln!(
                "leadscore store: cannot renew this replica's lease: {}",
                s.store_error(e)
            );
        }
        drop(s);
        tokio::time::sleep(every).await;
    }
}

async fn writer(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // The retention and a reclaim run alone, after what was queued before them.
        let mut pending = Vec::with_capacity(group.len());
        for job in group {
            match job.op {
                Op::Expire(_) | Op::Reclaim => {
                    commit_group(&shared, std::mem::take(&mut pending)).await;
                    let result = match &job.op {
                        Op::Expire(before) => expire(&shared, *before).await.map(Done::Expired),
                        _ => reclaim(&shared).await.map(|()| Done::Unit),
                    };
                    let _ = job.reply.send(result.map_err(|e| shared.store_error(e)));
                }
                _ => pending.push(job),
            }
        }
        commit_group(&shared, pending).await;
    }
}

/// Applies `jobs` in one transaction and answers each once it committed. When the group
/// fails, each job is tried again alone, so one bad write fails only itself.
async fn commit_group(shared: &Shared, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let ops: Vec<&Op> = jobs.iter().map(|j| &j.op).collect();
    match attempt(shared, &ops).await {
        Ok((done, filed)) => {
            shared.filing.filed(filed);
            for (job, done) in jobs.into_iter().zip(done) {
                let _ = job.reply.send(Ok(done));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(shared.store_error(e)));
            }
        }
        Err(_) => {
            for job in jobs {
                let result = match attempt(shared, &[&job.op]).await {
                    Ok((mut done, filed)) => {
                        shared.filing.filed(filed);
                        Ok(done.remove(0))
                    }
                    Err(e) => Err(shared.store_error(e)),
                };
                let _ = job.reply.send(result);
            }
        }
    }
}

/// One transaction of `ops`, tried again when the database aborted it as a deadlock or a
/// serialisation failure.
async fn attempt(shared: &Shared, ops: &[&Op]) -> R<(Vec<Done>, Vec<Delivery>)> {
    let epoch = shared.ready().await?;
    let mut tries = 0;
    loop {
        match attempt_once(shared, epoch, ops).await {
            Err(e) if e.retryable() && tries < RETRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Entity and event counts a transaction changes.
#[derive(Default)]
struct Counts {
    entities: i64,
    events: i64,
}

async fn attempt_once(shared: &Shared, epoch: u64, ops: &[&Op]) -> R<(Vec<Done>, Vec<Delivery>)> {
    let mut tx = shared.pool.begin().await?;
    let ids: Vec<String> = ops.iter().flat_map(|op| op.entities()).collect();
    if !ids.is_empty() {
        sqlx::query("SELECT lock_entities($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
    }
    let mut group = Group::load(shared, &mut tx, ops).await?;
    let mut outbox = Vec::new();
    let mut counts = Counts::default();
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(match op {
            Op::Write(batch) => Done::Written(
                group
                    .write(shared, &mut tx, batch, &mut outbox, &mut counts)
                    .await?,
            ),
            Op::Scores(scores) => {
                group.put_scores(scores, &mut outbox);
                Done::Unit
            }
            Op::Erase(id) => {
                // Messages of this group not yet written go with the entity too.
                outbox.retain(|m: &Message| m.entity != *id);
                Done::Erased(group.erase(&mut tx, id, &mut counts).await?)
            }
            Op::Attempt(endpoint, seq, attempt) => {
                apply_attempt(shared, &mut tx, endpoint, *seq, attempt).await?;
                Done::Unit
            }
            Op::Replay(endpoint, seqs, now_ms) => Done::Deliveries(
                apply_replay(shared, &mut tx, endpoint, seqs.as_deref(), *now_ms).await?,
            ),
            Op::Settle | Op::Expire(_) | Op::Reclaim => Done::Unit,
        });
    }
    group.flush(shared, &mut tx).await?;
    let filed = write_messages(shared, &mut tx, epoch, outbox, wall_clock_ms()).await?;
    add_counts(shared, &mut tx, &counts).await?;
    tx.commit().await?;
    Ok((done, filed))
}

async fn add_counts(shared: &Shared, tx: &mut Tx, counts: &Counts) -> R<()> {
    if counts.entities == 0 && counts.events == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO counters (slot, entities, events) VALUES ($1, $2, $3) \
         ON CONFLICT (slot) DO UPDATE SET entities = counters.entities + EXCLUDED.entities, \
         events = counters.events + EXCLUDED.events",
    )
    .bind(shared.slot)
    .bind(counts.entities)
    .bind(counts.events)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn read_record(shared: &Shared, tx: &mut Tx, id: &str) -> R<Option<EntityRecord>> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT record::text FROM entities WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| shared.corrupt(id, "the record", e)))
        .transpose()
}

async fn put_record(shared: &Shared, tx: &mut Tx, id: &str, record: &EntityRecord) -> R<()> {
    let json = serde_json::to_string(record).map_err(|e| shared.corrupt(id, "the record", e))?;
    sqlx::query(
        "INSERT INTO entities (id, open, last_active_ms, record) VALUES ($1, $2, $3, $4::jsonb) \
         ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, \
         last_active_ms = EXCLUDED.last_active_ms, record = EXCLUDED.record",
    )
    .bind(id)
    .bind(record.is_open())
    .bind(record.last_active_ms())
    .bind(json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An entity's event log as [`merge`] sees it during a write: the stored client ids the
/// write names and the oldest stored events (read before), the write's new events (inserted
/// after).
struct PgLog {
    known_ids: HashSet<String>,
    /// The oldest stored events `(ts_ms, seq)`, in order: enough of them for the cap.
    oldest: Vec<(TimestampMs, i64)>,
    /// How many of `oldest` the cap drops.
    oldest_dropped: usize,
    appended: Vec<(i64, NewEvent)>,
}

impl EventLog for PgLog {
    type Error = Infallible;

    fn has_client_id(&mut self, client_id: &str) -> Result<bool, Infallible> {
        Ok(self.known_ids.contains(client_id))
    }

    fn append(&mut self, seq: u64, event: &NewEvent) -> Result<(), Infallible> {
        if let Some(id) = &event.id {
            self.known_ids.insert(id.clone());
        }
        self.appended.push((seq as i64, event.clone()));
        Ok(())
    }

    fn drop_oldest(&mut self, n: usize) -> Result<Option<TimestampMs>, Infallible> {
        // Stored and new events merged in (time, arrival) order; a new event arrived after
        // every stored one.
        self.appended.sort_by_key(|(seq, e)| (e.ts_ms, *seq));
        let (mut stored, mut new) = (0, 0);
        for _ in 0..n {
            let take_stored = match (self.oldest.get(stored), self.appended.get(new)) {
                (Some(s), Some((seq, e))) => *s <= (e.ts_ms, *seq),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_stored {
                stored += 1;
            } else {
                new += 1;
            }
        }
        self.oldest_dropped = stored;
        self.appended.drain(..new);
        let next_stored = self.oldest.get(stored).map(|s| s.0);
        let next_new = self.appended.first().map(|(_, e)| e.ts_ms);
        Ok(match (next_stored, next_new) {
            (Some(s), Some(a)) => Some(s.min(a)),
            (s, a) => s.or(a),
        })
    }
}

/// A score row as the group sees it: `None` once deleted.
#[derive(Debug, Clone)]
struct ScoreRow {
    score: Option<StoredScore>,
    queued: bool,
}

/// The entities of a group: read once when its transaction starts (each in one statement
/// for all), changed in memory by each op in turn (the order of the calls), written at the
/// end in one statement per table. A write costs a few round trips per group, not per
/// entity.
#[derive(Default)]
struct Group {
    /// Every entity the group names: its record (`None`: not stored).
    records: HashMap<String, Option<EntityRecord>>,
    /// Client ids stored (of those the group's events name) or appended, by entity.
    client_ids: HashMap<String, HashSet<String>>,
    /// Every stored score of the group's entities, by (entity, model).
    scores: HashMap<(String, String), ScoreRow>,
    dirty_records: BTreeSet<String>,
    dirty_scores: BTreeSet<(String, String)>,
    /// New events not yet inserted: (entity, arrival, event).
    new_events: Vec<(String, i64, NewEvent)>,
}

impl Group {
    async fn load(shared: &Shared, tx: &mut Tx, ops: &[&Op]) -> R<Group> {
        let mut group = Group::default();
        let mut ids: Vec<String> = ops.iter().flat_map(|op| op.entities()).collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(group);
        }
        for id in &ids {
            group.records.insert(id.clone(), None);
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, record::text FROM entities WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut **tx)
                .await?;
        for (id, text) in rows {
            let record =
                serde_json::from_str(&text).map_err(|e| shared.corrupt(&id, "the record", e))?;
            group.records.insert(id, Some(record));
        }
        let (mut named_entities, mut named_ids) = (Vec::new(), Vec::new());
        for op in ops {
            if let Op::Write(batch) = op {
                for w in &batch.entities {
                    for e in &w.events {
                        if let Some(c) = &e.id {
                            named_entities.push(w.id.clone());
                            named_ids.push(c.clone());
                        }
                    }
                }
            }
        }
        if !named_ids.is_empty() {
            let stored: Vec<(String, String)> = sqlx::query_as(
                "SELECT entity, client_id FROM events WHERE client_id IS NOT NULL AND \
                 (entity, client_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            )
            .bind(&named_entities)
            .bind(&named_ids)
            .fetch_all(&mut **tx)
            .await?;
            for (entity, client_id) in stored {
                group
                    .client_ids
                    .entry(entity)
                    .or_default()
                    .insert(client_id);
            }
        }
        let scores: Vec<(String, String, String, bool)> = sqlx::query_as(
            "SELECT entity, model, score::text, queued FROM scores WHERE entity = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        for (entity, model, text, queued) in scores {
            let score: StoredScore =
                serde_json::from_str(&text).map_err(|e| shared.corrupt(&entity, "a score", e))?;
            group.scores.insert(
                (entity, model),
                ScoreRow {
                    score: Some(score),
                    queued,
                },
            );
        }
        Ok(group)
    }

    fn record(&self, id: &str) -> Option<EntityRecord> {
        self.records.get(id).cloned().flatten()
    }

    fn set_record(&mut self, id: &str, record: EntityRecord) {
        self.records.insert(id.to_owned(), Some(record));
        self.dirty_records.insert(id.to_owned());
    }

    /// Changes every stored score of `id`: deleted, or out of the queue.
    fn change_scores(&mut self, id: &str, delete: bool) {
        for ((entity, model), row) in &mut self.scores {
            if entity == id && row.score.is_some() {
                if delete {
                    row.score = None;
                } else {
                    row.queued = false;
                }
                self.dirty_scores.insert((entity.clone(), model.clone()));
            }
        }
    }

    async fn write(
        &mut self,
        shared: &Shared,
        tx: &mut Tx,
        batch: &WriteBatch,
        outbox: &mut Vec<Message>,
        counts: &mut Counts,
    ) -> R<Vec<Written>> {
        let mut out = Vec::with_capacity(batch.entities.len());
        for write in &batch.entities {
            let id = write.id.as_str();
            let existing = self.record(id);
            let stored = existing.as_ref().map_or(0, |r| r.event_count);
            // The cap drops at most `stored + new - cap` events; one more tells the first
            // left. Rare: the events so far go to the table first, and the oldest are read.
            let cap = shared.limits.max_events_per_entity.max(1);
            let incoming = write.events.len() as u64;
            let oldest: Vec<(i64, i64, Option<String>)> = if stored > 0 && stored + incoming > cap {
                self.flush_events(tx).await?;
                let k = (stored + incoming - cap + 1).min(stored);
                sqlx::query_as(
                    "SELECT ts_ms, seq, client_id FROM events WHERE entity = $1 \
                     ORDER BY ts_ms, seq LIMIT $2",
                )
                .bind(id)
                .bind(k as i64)
                .fetch_all(&mut **tx)
                .await?
            } else {
                Vec::new()
            };
            let mut log = PgLog {
                known_ids: self.client_ids.remove(id).unwrap_or_default(),
                oldest: oldest.iter().map(|(t, s, _)| (*t, *s)).collect(),
                oldest_dropped: 0,
                appended: Vec::new(),
            };
            let Ok(merged) = merge(
                existing.as_ref(),
                write,
                batch.now_ms,
                &shared.limits,
                &mut log,
            );
            if log.oldest_dropped > 0 {
                let dropped = &oldest[..log.oldest_dropped];
                let ts: Vec<i64> = dropped.iter().map(|d| d.0).collect();
                let seq: Vec<i64> = dropped.iter().map(|d| d.1).collect();
                sqlx::query(
                    "DELETE FROM events WHERE entity = $1 AND (ts_ms, seq) IN \
                     (SELECT * FROM UNNEST($2::int8[], $3::int8[]))",
                )
                .bind(id)
                .bind(ts)
                .bind(seq)
                .execute(&mut **tx)
                .await?;
                for (_, _, client_id) in dropped {
                    if let Some(c) = client_id {
                        log.known_ids.remove(c);
                    }
                }
            }
            self.client_ids.insert(id.to_owned(), log.known_ids);
            self.new_events.extend(
                log.appended
                    .into_iter()
                    .map(|(seq, e)| (id.to_owned(), seq, e)),
            );
            let record = merged.record;
            // Leaving the queue: closed by an outcome, or scored by other models now.
            if merged.kind_changed {
                self.change_scores(id, true);
            } else if merged.was_open && !record.is_open() {
                self.change_scores(id, false);
            }
            self.set_record(id, record.clone());
            // The caller's scores, when they were computed from the history this write leaves.
            let scores_kept = match &write.scores_if {
                Some(scores_if) if scores_if.record_before == existing => {
                    for (i, score) in scores_if.scores.iter().enumerate() {
                        let reasons = scores_if.reasons.get(i).cloned().flatten();
                        self.keep_score(id, score, reasons, &record, batch.now_ms, outbox);
                    }
                    true
                }
                _ => false,
            };
            counts.entities += i64::from(merged.created);
            counts.events += i64::from(merged.added) - i64::from(merged.dropped);
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
        Ok(out)
    }

    /// Keeps `score` as `id`'s latest for its model unless the stored one saw more events;
    /// the messages of the transitions from the score it replaces go to `outbox` when the
    /// entity is open.
    fn keep_score(
        &mut self,
        id: &str,
        score: &StoredScore,
        reasons: Option<serde_json::Value>,
        record: &EntityRecord,
        now_ms: TimestampMs,
        outbox: &mut Vec<Message>,
    ) {
        let key = (id.to_owned(), score.model.clone());
        let old = self.scores.get(&key).and_then(|r| r.score.clone());
        if old
            .as_ref()
            .is_some_and(|o| o.events_seen > score.events_seen)
        {
            return;
        }
        let open = record.is_open();
        self.scores.insert(
            key.clone(),
            ScoreRow {
                score: Some(score.clone()),
                queued: open,
            },
        );
        self.dirty_scores.insert(key);
        if !open {
            return;
        }
        let kind = record.kind;
        for transition in crate::transitions(kind, old.as_ref(), score) {
            outbox.push(Message {
                id: String::new(),
                seq: 0,
                transition,
                entity: id.to_owned(),
                kind,
                score: score.clone(),
                previous_grade: old.as_ref().map(|o| o.grade.clone()),
                reasons: reasons.clone(),
                at_ms: now_ms,
            });
        }
    }

    fn put_scores(&mut self, updates: &[ScoreUpdate], outbox: &mut Vec<Message>) {
        let now_ms = wall_clock_ms();
        for update in updates {
            let Some(record) = self.record(&update.entity) else {
                continue;
            };
            self.keep_score(
                &update.entity,
                &update.score,
                update.reasons.clone(),
                &record,
                now_ms,
                outbox,
            );
        }
    }

    /// Removes everything of `id`, stored and pending.
    async fn erase(&mut self, tx: &mut Tx, id: &str, counts: &mut Counts) -> R<bool> {
        let Some(record) = self.record(id) else {
            return Ok(false);
        };
        for statement in [
            "DELETE FROM scores WHERE entity = $1",
            "DELETE FROM events WHERE entity = $1",
            "DELETE FROM deliveries WHERE entity = $1",
            "DELETE FROM entities WHERE id = $1",
        ] {
            sqlx::query(statement).bind(id).execute(&mut **tx).await?;
        }
        self.records.insert(id.to_owned(), None);
        self.dirty_records.remove(id);
        self.client_ids.remove(id);
        self.new_events.retain(|(entity, _, _)| entity != id);
        self.scores.retain(|(entity, _), _| entity != id);
        self.dirty_scores.retain(|(entity, _)| entity != id);
        counts.entities -= 1;
        counts.events -= i64::try_from(record.event_count).unwrap_or(i64::MAX);
        Ok(true)
    }

    /// Inserts the new events so far.
    async fn flush_events(&mut self, tx: &mut Tx) -> R<()> {
        if self.new_events.is_empty() {
            return Ok(());
        }
        let n = self.new_events.len();
        let (mut entity, mut ts, mut seq, mut client, mut kind, mut channel, mut value) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (id, s, e) in self.new_events.drain(..) {
            entity.push(id);
            ts.push(e.ts_ms);
            seq.push(s);
            client.push(e.id);
            kind.push(e.event_type);
            channel.push(e.channel);
            value.push(e.value);
        }
        sqlx::query(
            "INSERT INTO events (entity, ts_ms, seq, client_id, event_type, channel, value) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], \
             $6::text[], $7::float8[])",
        )
        .bind(entity)
        .bind(ts)
        .bind(seq)
        .bind(client)
        .bind(kind)
        .bind(channel)
        .bind(value)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Writes what the group changed: events, records, scores, one statement each.
    async fn flush(&mut self, shared: &Shared, tx: &mut Tx) -> R<()> {
        self.flush_events(tx).await?;
        let (mut ids, mut open, mut active, mut json) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for id in std::mem::take(&mut self.dirty_records) {
            if let Some(Some(record)) = self.records.get(&id) {
                open.push(record.is_open());
                active.push(record.last_active_ms());
                json.push(
                    serde_json::to_string(record)
                        .map_err(|e| shared.corrupt(&id, "the record", e))?,
                );
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO entities (id, open, last_active_ms, record) \
                 SELECT i, o, a, r::jsonb FROM UNNEST($1::text[], $2::bool[], $3::int8[], \
                 $4::text[]) AS t(i, o, a, r) \
                 ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, \
                 last_active_ms = EXCLUDED.last_active_ms, record = EXCLUDED.record",
            )
            .bind(ids)
            .bind(open)
            .bind(active)
            .bind(json)
            .execute(&mut **tx)
            .await?;
        }
        let (mut gone_entity, mut gone_model) = (Vec::new(), Vec::new());
        let (mut entity, mut model, mut queued, mut probability, mut seen, mut json) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for key in std::mem::take(&mut self.dirty_scores) {
            let Some(row) = self.scores.get(&key) else {
                continue;
            };
            match &row.score {
                None => {
                    gone_entity.push(key.0);
                    gone_model.push(key.1);
                }
                Some(score) => {
                    queued.push(row.queued);
                    probability.push(score.probability);
                    seen.push(score.events_seen as i64);
                    json.push(
                        serde_json::to_string(score)
                            .map_err(|e| shared.corrupt(&key.0, "a score", e))?,
                    );
                    entity.push(key.0);
                    model.push(key.1);
                }
            }
        }
        if !gone_entity.is_empty() {
            sqlx::query(
                "DELETE FROM scores WHERE (entity, model) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            )
            .bind(gone_entity)
            .bind(gone_model)
            .execute(&mut **tx)
            .await?;
        }
        if !entity.is_empty() {
            sqlx::query(
                "INSERT INTO scores (entity, model, queued, probability, events_seen, score) \
                 SELECT e, m, q, p, s, j::jsonb FROM UNNEST($1::text[], $2::text[], $3::bool[], \
                 $4::float8[], $5::int8[], $6::text[]) AS t(e, m, q, p, s, j) \
                 ON CONFLICT (entity, model) DO UPDATE SET queued = EXCLUDED.queued, \
                 probability = EXCLUDED.probability, events_seen = EXCLUDED.events_seen, \
                 score = EXCLUDED.score",
            )
            .bind(entity)
            .bind(model)
            .bind(queued)
            .bind(probability)
            .bind(seen)
            .bind(json)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// Gives `messages` their sequences and ids and files a delivery of each for every endpoint
/// that wants it; a message no endpoint wants is not kept. Returns the deliveries filed.
async fn write_messages(
    shared: &Shared,
    tx: &mut Tx,
    epoch: u64,
    messages: Vec<Message>,
    now_ms: TimestampMs,
) -> R<Vec<Delivery>> {
    let (endpoints, wanted) = shared.filing.wanted(messages);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut seqs: Vec<i64> =
        sqlx::query_scalar("SELECT nextval('outbox_seq') FROM generate_series(1, $1)")
            .bind(wanted.len() as i64)
            .fetch_all(&mut **tx)
            .await?;
    seqs.sort_unstable();
    let mut filed = Vec::new();
    let (mut keys, mut seq_col, mut entities, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (message, seq) in wanted.into_iter().zip(seqs) {
        for delivery in deliveries(&endpoints, message, seq as u64, epoch, now_ms) {
            let entity = &delivery.message.entity;
            keys.push(delivery.endpoint.clone());
            seq_col.push(seq);
            entities.push(entity.clone());
            bodies.push(
                serde_json::to_string(&delivery)
                    .map_err(|e| shared.corrupt(entity, "a delivery", e))?,
            );
            filed.push(delivery);
        }
    }
    sqlx::query(
        "INSERT INTO deliveries (endpoint, seq, entity, delivery, owner) \
         SELECT e, s, n, d::jsonb, $5 FROM UNNEST($1::text[], $2::int8[], $3::text[], \
         $4::text[]) AS t(e, s, n, d)",
    )
    .bind(keys)
    .bind(seq_col)
    .bind(entities)
    .bind(bodies)
    .bind(&shared.replica)
    .execute(&mut **tx)
    .await?;
    Ok(filed)
}

/// Drops events older than `before_ms`, a few hundred entities per transaction (each
/// locked like a write to it).
async fn expire(shared: &Shared, before_ms: TimestampMs) -> R<u64> {
    shared.ready().await?;
    let mut total = 0u64;
    loop {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT entity FROM events WHERE ts_ms < $1 LIMIT $2")
                .bind(before_ms)
                .bind(EXPIRE_CHUNK)
                .fetch_all(&shared.pool)
                .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut tries = 0;
        let n = loop {
            match expire_chunk(shared, before_ms, &ids).await {
                Err(e) if e.retryable() && tries < RETRIES => tries += 1,
                other => break other?,
            }
        };
        total += n;
    }
}

async fn expire_chunk(shared: &Shared, before_ms: TimestampMs, ids: &[String]) -> R<u64> {
    let mut tx = shared.pool.begin().await?;
    sqlx::query("SELECT lock_entities($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    let gone: Vec<String> = sqlx::query_scalar(
        "DELETE FROM events WHERE entity = ANY($1) AND ts_ms < $2 RETURNING entity",
    )
    .bind(ids)
    .bind(before_ms)
    .fetch_all(&mut *tx)
    .await?;
    let mut touched: BTreeMap<&str, u64> = BTreeMap::new();
    for id in &gone {
        *touched.entry(id.as_str()).or_default() += 1;
    }
    for (id, n) in &touched {
        let Some(mut record) = read_record(shared, &mut tx, id).await? else {
            continue;
        };
        record.event_count = record.event_count.saturating_sub(*n);
        record.first_event_ms =
            sqlx::query_scalar("SELECT min(ts_ms) FROM events WHERE entity = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        put_record(shared, &mut tx, id, &record).await?;
    }
    let counts = Counts {
        entities: 0,
        events: -(gone.len() as i64),
    };
    add_counts(shared, &mut tx, &counts).await?;
    tx.commit().await?;
    Ok(gone.len() as u64)
}

/// Rewrites the store's tables (`VACUUM FULL`): the rows of erased entities leave the
/// table files. It holds an exclusive lock on each table while it copies it.
async fn reclaim(shared: &Shared) -> R<()> {
    shared.ready().await?;
    sqlx::raw_sql("VACUUM FULL entities, events, scores, deliveries")
        .execute(&shared.pool)
        .await?;
    Ok(())
}

async fn lock_delivery(
    shared: &Shared,
    tx: &mut Tx,
    endpoint: &str,
    seq: u64,
    dead: bool,
) -> R<Option<Delivery>> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT delivery::text FROM deliveries WHERE endpoint = $1 AND seq = $2 AND dead = $3 \
         FOR UPDATE",
    )
    .bind(endpoint)
    .bind(seq as i64)
    .bind(dead)
    .fetch_optional(&mut **tx)
    .await?;
    text.map(|t| decode_delivery(shared, &t)).transpose()
}

fn decode_delivery(shared: &Shared, text: &str) -> R<Delivery> {
    serde_json::from_str(text).map_err(|e| shared.corrupt("", "a delivery", e))
}

/// Writes `d` back; a delivery moved back to pending (a replay) is this replica's to send.
async fn put_delivery(shared: &Shared, tx: &mut Tx, d: &Delivery) -> R<()> {
    let json =
        serde_json::to_string(d).map_err(|e| shared.corrupt(&d.message.entity, "a delivery", e))?;
    sqlx::query(
        "UPDATE deliveries SET dead = $3, delivery = $4::jsonb, \
         owner = CASE WHEN $3 THEN owner ELSE $5 END WHERE endpoint = $1 AND seq = $2",
    )
    .bind(&d.endpoint)
    .bind(d.message.seq as i64)
    .bind(d.dead_at_ms.is_some())
    .bind(json)
    .bind(&shared.replica)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_attempt(
    shared: &Shared,
    tx: &mut Tx,
    endpoint: &str,
    seq: u64,
    attempt: &Attempt,
) -> R<()> {
    if *attempt == Attempt::Delivered {
        sqlx::query("DELETE FROM deliveries WHERE endpoint = $1 AND seq = $2 AND NOT dead")
            .bind(endpoint)
            .bind(seq as i64)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let Some(mut delivery) = lock_delivery(shared, tx, endpoint, seq, false).await? else {
        return Ok(());
    };
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
        }
        Attempt::Dead {
            attempts,
            at_ms,
            error,
        } => {
            delivery.attempts = *attempts;
            delivery.last_error = Some(error.clone());
            delivery.dead_at_ms = Some(*at_ms);
        }
    }
    put_delivery(shared, tx, &delivery).await
}

async fn apply_replay(
    shared: &Shared,
    tx: &mut Tx,
    endpoint: &str,
    seqs: Option<&[u64]>,
    now_ms: TimestampMs,
) -> R<Vec<Delivery>> {
    let seqs: Option<Vec<i64>> = seqs.map(|s| s.iter().map(|&q| q as i64).collect());
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT delivery::text FROM deliveries WHERE endpoint = $1 AND dead \
         AND ($2::int8[] IS NULL OR seq = ANY($2)) ORDER BY seq FOR UPDATE",
    )
    .bind(endpoint)
    .bind(seqs)
    .fetch_all(&mut **tx)
    .await?;
    let mut moved = Vec::with_capacity(rows.len());
    for text in rows {
        let mut d = decode_delivery(shared, &text)?;
        d.attempts = 0;
        d.next_at_ms = now_ms;
        d.dead_at_ms = None;
        put_delivery(shared, tx, &d).await?;
        moved.push(d);
    }
    Ok(moved)
}

/// An entity's events as `json_agg` gives them: `[ts_ms, client_id, type, channel, value]`.
const EVENTS_JSON: &str = "(SELECT coalesce(json_agg(json_build_array(v.ts_ms, v.client_id, \
     v.event_type, v.channel, v.value) ORDER BY v.ts_ms, v.seq), '[]')::text \
     FROM events v WHERE v.entity = e.id)";

type EventRow = (
    TimestampMs,
    Option<String>,
    String,
    Option<String>,
    Option<f64>,
);

fn decode_entity(shared: &Shared, id: String, record: &str, events: &str) -> R<EntityWithEvents> {
    let record: EntityRecord =
        serde_json::from_str(record).map_err(|e| shared.corrupt(&id, "the record", e))?;
    let rows: Vec<EventRow> =
        serde_json::from_str(events).map_err(|e| shared.corrupt(&id, "an event", e))?;
    let events = rows
        .into_iter()
        .map(|(ts_ms, id, event_type, channel, value)| StoredEvent {
            id,
            ts_ms,
            event_type,
            channel,
            value,
        })
        .collect();
    Ok(EntityWithEvents { id, record, events })
}

impl PgStore {
    async fn history_now(&self, id: &str) -> R<Option<EntityWithEvents>> {
        let shared = &self.shared;
        let row: Option<(String, String)> = sqlx::query_as(&format!(
            "SELECT e.record::text, {EVENTS_JSON} FROM entities e WHERE e.id = $1"
        ))
        .bind(id)
        .fetch_optional(&shared.pool)
        .await?;
        row.map(|(r, ev)| decode_entity(shared, id.to_owned(), &r, &ev))
            .transpose()
    }

    async fn entity_now(&self, id: &str) -> R<Option<StoredEntity>> {
        let shared = &self.shared;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT e.record::text, (SELECT coalesce(json_agg(s.score ORDER BY s.model), '[]')::text \
             FROM scores s WHERE s.entity = e.id) FROM entities e WHERE e.id = $1",
        )
        .bind(id)
        .fetch_optional(&shared.pool)
        .await?;
        let Some((record, scores)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredEntity {
            id: id.to_owned(),
            record: serde_json::from_str(&record)
                .map_err(|e| shared.corrupt(id, "the record", e))?,
            scores: serde_json::from_str(&scores).map_err(|e| shared.corrupt(id, "a score", e))?,
        }))
    }

    async fn page_now(
        &self,
        since_ms: Option<TimestampMs>,
        after: Option<String>,
        limit: usize,
        share: Share,
    ) -> R<Vec<EntityWithEvents>> {
        let shared = &self.shared;
        let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT e.id, e.record::text, {EVENTS_JSON} FROM entities e \
             WHERE ($1::text IS NULL OR e.id > $1) AND ($2::int8 IS NULL OR e.last_active_ms >= $2) \
             AND ($4::int8 <= 1 OR (hashtext(e.id)::int8 & 2147483647) % $4 = $5) \
             ORDER BY e.id LIMIT $3"
        ))
        .bind(after)
        .bind(since_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::from(share.of))
        .bind(i64::from(share.index))
        .fetch_all(&shared.pool)
        .await?;
        rows.into_iter()
            .map(|(id, r, ev)| decode_entity(shared, id, &r, &ev))
            .collect()
    }

    async fn top_now(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> R<Vec<(String, StoredScore)>> {
        let shared = &self.shared;
        let (lo, hi) = band.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT entity, score::text FROM scores WHERE model = $1 AND queued \
             AND probability >= $2 AND probability < $3 \
             ORDER BY probability DESC, entity LIMIT $4",
        )
        .bind(model)
        .bind(lo)
        .bind(hi)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&shared.pool)
        .await?;
        rows.into_iter()
            .map(|(id, s)| {
                let score =
                    serde_json::from_str(&s).map_err(|e| shared.corrupt(&id, "a score", e))?;
                Ok((id, score))
            })
            .collect()
    }

    async fn stats_now(&self) -> R<StoreStats> {
        let (entities, events, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(entities), 0)::int8 FROM counters), \
             (SELECT coalesce(sum(events), 0)::int8 FROM counters), \
             (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
              JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = current_schema() AND c.relkind = 'r')",
        )
        .fetch_one(&self.shared.pool)
        .await?;
        Ok(StoreStats {
            entities: entities.max(0) as u64,
            events: events.max(0) as u64,
            bytes: bytes.max(0) as u64,
        })
    }

    async fn deliveries_now(
        &self,
        dead: bool,
        endpoint: Option<String>,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> R<Vec<Delivery>> {
        let shared = &self.shared;
        let (after_endpoint, after_seq) = match after {
            Some((e, s)) => (Some(e), Some(s as i64)),
            None => (None, None),
        };
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT delivery::text FROM deliveries WHERE dead = $1 \
             AND ($2::text IS NULL OR endpoint = $2) \
             AND ($3::text IS NULL OR (endpoint, seq) > ($3, $4::int8)) \
             ORDER BY endpoint, seq LIMIT $5",
        )
        .bind(dead)
        .bind(endpoint)
        .bind(after_endpoint)
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&shared.pool)
        .await?;
        rows.iter().map(|t| decode_delivery(shared, t)).collect()
    }

    async fn outbox_stats_now(&self) -> R<OutboxStats> {
        let rows: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT endpoint, dead, count(*) FROM deliveries GROUP BY endpoint, dead \
             ORDER BY endpoint",
        )
        .fetch_all(&self.shared.pool)
        .await?;
        let mut stats = OutboxStats::default();
        for (endpoint, dead, n) in rows {
            let into = if dead {
                &mut stats.dead
            } else {
                &mut stats.pending
            };
            into.push((endpoint, n.max(0) as u64));
        }
        Ok(stats)
    }

    async fn delivery_now(&self, endpoint: &str, seq: u64) -> R<Option<Delivery>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT delivery::text FROM deliveries WHERE endpoint = $1 AND seq = $2 AND NOT dead",
        )
        .bind(endpoint)
        .bind(seq as i64)
        .fetch_optional(&self.shared.pool)
        .await?;
        text.map(|t| decode_delivery(&self.shared, &t)).transpose()
    }
}

impl Outbox for PgStore {
    fn set_endpoints(&self, endpoints: Vec<EndpointFilter>) {
        self.shared.filing.set_endpoints(endpoints);
    }

    fn take_new(&self) -> Vec<Delivery> {
        self.shared.filing.take_new()
    }

    fn adopt(&self, limit: usize) -> StoreFuture<'_, Vec<Delivery>> {
        self.read(async move {
            let shared = &self.shared;
            // Rows another replica is adopting at this moment are passed over, not waited for.
            let rows: Vec<String> = sqlx::query_scalar(
                "UPDATE deliveries SET owner = $1 WHERE (endpoint, seq) IN ( \
                 SELECT endpoint, seq FROM deliveries WHERE NOT dead \
                 AND (owner IS NULL OR (owner <> $1 AND owner NOT IN \
                 (SELECT id FROM replicas WHERE alive_until_ms > now_ms()))) \
                 ORDER BY endpoint, seq LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING delivery::text",
            )
            .bind(&shared.replica)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&shared.pool)
            .await?;
            let mut out = rows
                .iter()
                .map(|t| decode_delivery(shared, t))
                .collect::<R<Vec<_>>>()?;
            out.sort_by(|a, b| (&a.endpoint, a.message.seq).cmp(&(&b.endpoint, b.message.seq)));
            Ok(out)
        })
    }

    fn pending(
        &self,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        self.read(self.deliveries_now(false, None, after, limit))
    }

    fn delivery(&self, endpoint: &str, seq: u64) -> StoreFuture<'_, Option<Delivery>> {
        let endpoint = endpoint.to_owned();
        self.read(async move { self.delivery_now(&endpoint, seq).await })
    }

    fn record_attempt(
        &self,
        endpoint: String,
        seq: u64,
        attempt: Attempt,
    ) -> StoreFuture<'static, ()> {
        self.send(Op::Attempt(endpoint, seq, attempt), |d| match d {
            Done::Unit => Some(()),
            _ => None,
        })
    }

    fn dead_letters(
        &self,
        endpoint: Option<String>,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        self.read(self.deliveries_now(true, endpoint, after, limit))
    }

    fn replay(
        &self,
        endpoint: String,
        seqs: Option<Vec<u64>>,
        now_ms: TimestampMs,
    ) -> StoreFuture<'_, Vec<Delivery>> {
        self.send(Op::Replay(endpoint, seqs, now_ms), |d| match d {
            Done::Deliveries(d) => Some(d),
            _ => None,
        })
    }

    fn outbox_stats(&self) -> StoreFuture<'_, OutboxStats> {
        self.read(self.outbox_stats_now())
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.shared.filing.signal()
    }
}

fn unit(d: Done) -> Option<()> {
    match d {
        Done::Unit => Some(()),
        _ => None,
    }
}

impl EntityStore for PgStore {
    fn write(&self, batch: WriteBatch) -> StoreFuture<'_, Vec<Written>> {
        self.send(Op::Write(batch), |d| match d {
            Done::Written(w) => Some(w),
            _ => None,
        })
    }

    fn limits(&self) -> StoreLimits {
        self.shared.limits
    }

    fn entity(&self, id: &str) -> StoreFuture<'_, Option<StoredEntity>> {
        let id = id.to_owned();
        self.read(async move { self.entity_now(&id).await })
    }

    fn history(&self, id: &str) -> StoreFuture<'_, Option<EntityWithEvents>> {
        let id = id.to_owned();
        self.read(async move { self.history_now(&id).await })
    }

    fn put_scores(&self, scores: Vec<ScoreUpdate>) -> StoreFuture<'static, ()> {
        self.send(Op::Scores(scores), unit)
    }

    fn settle(&self) -> StoreFuture<'_, ()> {
        self.send(Op::Settle, unit)
    }

    fn top(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> StoreFuture<'_, Vec<(String, StoredScore)>> {
        let model = model.to_owned();
        self.read(async move { self.top_now(&model, limit, band).await })
    }

    fn erase(&self, id: &str) -> StoreFuture<'_, bool> {
        self.send(Op::Erase(id.to_owned()), |d| match d {
            Done::Erased(b) => Some(b),
            _ => None,
        })
    }

    fn reclaim(&self) -> StoreFuture<'_, ()> {
        self.send(Op::Reclaim, unit)
    }

    fn active_since(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
        share: Share,
    ) -> StoreFuture<'_, Vec<EntityWithEvents>> {
        self.read(self.page_now(Some(since_ms), after, limit, share))
    }

    fn sweep_share(&self) -> StoreFuture<'_, Share> {
        self.read(async move {
            let shared = &self.shared;
            let alive: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM replicas WHERE alive_until_ms > now_ms() OR id = $1 ORDER BY id",
            )
            .bind(&shared.replica)
            .fetch_all(&shared.pool)
            .await?;
            let index = alive
                .iter()
                .position(|id| *id == shared.replica)
                .unwrap_or(0);
            Ok(Share {
                index: u32::try_from(index).unwrap_or(0),
                of: u32::try_from(alive.len()).unwrap_or(1).max(1),
            })
        })
    }

    fn scan(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<EntityWithEvents>> {
        self.read(self.page_now(None, after, limit, Share::ALL))
    }

    fn expire_events(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        self.send(Op::Expire(before_ms), |d| match d {
            Done::Expired(n) => Some(n),
            _ => None,
        })
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        self.read(self.stats_now())
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.read(async move {
            sqlx::query("SELECT 1").execute(&self.shared.pool).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_schema_and_hide_their_password() {
        let open =
            PgOpen::new("postgres://u:secret@h:5432/db?schema=ls_1&sslmode=disable&lease_secs=2.5")
                .expect("valid");
        assert_eq!(open.schema.as_deref(), Some("ls_1"));
        assert_eq!(open.lease, Duration::from_millis(2_500));
        assert!(PgOpen::new("postgres://h/db?lease_secs=0").is_err());
        assert_eq!(open.url, "postgres://u:secret@h:5432/db?sslmode=disable");
        assert_eq!(
            shown_url(&open.url),
            "postgres://u@h:5432/db?sslmode=disable"
        );
        assert!(!format!("{open:?}").contains("secret"));
        let bad = PgOpen::new("postgres://h/db?schema=x;drop").expect_err("invalid");
        assert!(bad.to_string().contains("schema"), "{bad}");
        assert_eq!(PgOpen::new("postgres://h/db").expect("valid").schema, None);
    }
}
