//! The entity store: what the server remembers of each lead and customer between requests.
//! Per entity it keeps the kind (lead or customer, which decides the models that score it),
//! the profile fields and creation time, the event log (idempotent by a client event id),
//! the outcomes (converted, churned) and the latest score of each model, with the queue
//! index the sales queue reads.
//!
//! * [`EntityStore`]: the one storage trait every backend implements. A write is one
//!   [`WriteBatch`], applied all or nothing and acknowledged only once durable.
//! * [`RedbStore`]: the embedded backend, a [redb](https://www.redb.org) file with group
//!   commit (one writer thread commits every write that queued while it flushed).
//! * [`PgStore`]: the PostgreSQL backend, which several server replicas share (one writer
//!   task per process, group commit, entities locked in one order across replicas).
//! * [`contract`]: the contract tests every backend passes, unchanged.
//! * [`predict`]: the history a write will leave, computed in memory by the same function
//!   the backends apply writes with, so a caller can score it before the write commits.
//! * [`Outbox`]: the webhook outbox, in the same store: transitions of a score (a lead
//!   turned sales-ready, cooled, changed grade; a customer at risk of churn) written with
//!   the score that caused them, a delivery for each endpoint that wants them.
//! * [`files`]: a dataset spec's history imported into a store, and a store exported as the
//!   files and spec the trainer reads.
//!
//! The store knows nothing of models beyond their names: the server decides which models
//! an entity qualifies for, scores it, and hands the scores back with
//! [`EntityStore::put_scores`].

pub mod contract;
pub mod files;
mod merge;
mod outbox;
mod pg_store;
mod redb_store;
mod types;

use std::future::Future;
use std::pin::Pin;

pub use merge::predict;
pub use outbox::{
    Attempt, Delivery, EndpointFilter, Message, Outbox, OutboxStats, Transition, transitions,
};
pub use pg_store::{PgOpen, PgStore};
pub use redb_store::{RedbStore, StoreOpen};
pub use types::*;

/// What every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Something the store could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (disk full, I/O error, a corrupt file); nothing of the
    /// write was applied.
    #[error("entity store {path}: {message}")]
    Storage { path: String, message: String },
    /// A value in the store could not be read back (written by an incompatible version).
    #[error("entity store {path}: {what} of entity {entity:?} cannot be read: {message}")]
    Corrupt {
        path: String,
        entity: String,
        what: &'static str,
        message: String,
    },
    /// The store is shutting down.
    #[error("entity store {path} is closed")]
    Closed { path: String },
}

/// The storage trait: one implementation per backend, each passing [`contract`].
///
/// **Invariant:** a future of [`write`](EntityStore::write), [`put_scores`](EntityStore::put_scores)
/// or [`erase`](EntityStore::erase) resolves `Ok` only once its change is durable: a crash
/// after that never loses it, and a failed write left nothing of itself behind.
///
/// Every backend is an [`Outbox`] too: a score change and the messages of its transitions
/// commit together.
pub trait EntityStore: Outbox + Send + Sync + std::fmt::Debug {
    /// Applies `batch` all or nothing: profiles merged or replaced, events appended
    /// (a client event id already stored is counted as a duplicate, not stored again),
    /// outcomes recorded. Returns each written entity as it now stands.
    fn write(&self, batch: WriteBatch) -> StoreFuture<'_, Vec<Written>>;

    /// The limits writes are applied under (what [`predict`] needs to agree with them).
    fn limits(&self) -> StoreLimits;

    /// The entity `id` with its latest scores, or `None`.
    fn entity(&self, id: &str) -> StoreFuture<'_, Option<StoredEntity>>;

    /// The entity `id` with its events in time order, or `None`.
    fn history(&self, id: &str) -> StoreFuture<'_, Option<EntityWithEvents>>;

    /// Keeps each score as its entity's latest for its model, unless a score already
    /// stored was computed from more of the entity's events (a slower writer racing a
    /// faster one never moves a score back). Scores of erased entities are dropped.
    ///
    /// The change is queued at the call, not at the future's first poll: a caller may
    /// leave the future to a task of its own, and a later [`settle`](EntityStore::settle)
    /// still waits for it.
    fn put_scores(&self, scores: Vec<ScoreUpdate>) -> StoreFuture<'static, ()>;

    /// Resolves once every change asked for before this call (writes, scores, erasures)
    /// is durable or has failed: a read after it sees them.
    fn settle(&self) -> StoreFuture<'_, ()>;

    /// The open entities (leads not converted, customers not churned) with the highest
    /// latest score of `model`, best first, at most `limit`; with `band` `(lo, hi)`, only
    /// those with a probability in `[lo, hi)` (a grade's band).
    fn top(
        &self,
        model: &str,
        limit: usize,
        band: Option<(f64, f64)>,
    ) -> StoreFuture<'_, Vec<(String, StoredScore)>>;

    /// Removes everything stored of `id` (profile, events, outcomes, scores); `false` when
    /// there was nothing. The bytes may stay in free space until [`EntityStore::reclaim`].
    fn erase(&self, id: &str) -> StoreFuture<'_, bool>;

    /// Rewrites the storage so that nothing erased remains in its files (see the backend's
    /// documentation for what that takes).
    fn reclaim(&self) -> StoreFuture<'_, ()>;

    /// Up to `limit` entities last active (their last event, else their creation) at or
    /// after `since_ms`, with their events, in id order after the id `after`: the
    /// rescoring sweep pages through them.
    ///
    /// Only the entities of `share` (the sweep split between replicas; [`Share::ALL`]: every
    /// one).
    fn active_since(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
        share: Share,
    ) -> StoreFuture<'_, Vec<EntityWithEvents>>;

    /// This process's part of the rescoring sweep: [`Share::ALL`] for an embedded store;
    /// for a shared one, its place among the replicas alive now.
    fn sweep_share(&self) -> StoreFuture<'_, Share>;

    /// Up to `limit` entities with their events in id order after `after`: the export pages
    /// through the whole store.
    fn scan(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<EntityWithEvents>>;

    /// Drops events older than `before_ms` (retention); returns how many.
    fn expire_events(&self, before_ms: i64) -> StoreFuture<'_, u64>;

    /// Counts and sizes for `/metrics`.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;

    /// Whether the store answers now (a replica's readiness): an embedded store always
    /// does; a database must answer a query.
    fn ping(&self) -> StoreFuture<'_, ()>;
}
