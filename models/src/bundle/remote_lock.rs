//! The lock of a registry on object storage: one writer at a time, as the folder registry's
//! file lock gives, for stores that have no file locks.
//!
//! The lock is the object `.lock` under the registry's prefix, holding who took it, a token
//! of the taker's own and when it expires. It is taken with a conditional write that fails
//! when the object exists (`If-None-Match: *` on S3, the same on GCS and Azure; a create
//! that fails when the file exists on a folder), renewed by a thread of its own every third
//! of the lease with a write conditional on the object being the one it wrote (`If-Match`),
//! and deleted when dropped. A writer killed leaves the object, which expires: the next
//! writer takes it over with a write conditional on the expired object's version, so of two
//! writers finding it expired, one wins.
//!
//! Expiry is judged by the machines' clocks: they must agree to well within the lease (NTP
//! does). A folder reached through `file://` has no conditional update: there a renewal or
//! a takeover checks the token, then overwrites (or deletes and creates), which leaves a
//! window between the check and the write that object stores do not have.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, PutResult, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use super::BundleError;
use super::random_u64;
use super::remote::RemoteRegistry;

/// The lock object's name under the registry's prefix (hidden: never mirrored).
pub const REMOTE_LOCK_OBJECT: &str = ".lock";

/// How long a lock stays taken without being renewed, unless the writer says otherwise.
pub const DEFAULT_REMOTE_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockBody {
    holder: String,
    token: String,
    expires_ms: u64,
}

/// A registry's lock on object storage, held (and renewed) until dropped.
#[derive(Debug)]
pub struct RemoteLock {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: Arc<AtomicBool>,
    shown: String,
}

impl RemoteLock {
    /// Fails when the lock was lost on the way (not renewed within its lease, and taken by
    /// another writer or expired): a writer checks this before it uploads.
    pub fn check(&self) -> Result<(), BundleError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(BundleError::Invalid {
                path: self.shown.clone().into(),
                message: "the registry's lock on object storage was lost (not renewed within \
                          its lease): nothing was uploaded, run the command again"
                    .into(),
            });
        }
        Ok(())
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        // The thread deletes the object (when it is still ours) and ends.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)
}

/// The lock as its thread sees it: the store (a client of the thread's own runtime), where
/// the object is, and the version of it this writer wrote last.
struct Held {
    store: Arc<dyn ObjectStore>,
    at: ObjectPath,
    body: LockBody,
    version: UpdateVersion,
}

/// What the lock's thread says when it has tried.
enum Answer {
    Held,
    Busy(String),
    Failed(String),
}

enum Taken {
    Yes(Held),
    /// Another writer holds it: who.
    No(String),
}

fn payload(body: &LockBody) -> PutPayload {
    PutPayload::from(serde_json::to_vec(body).unwrap_or_default())
}

fn put_mode(mode: PutMode) -> PutOptions {
    PutOptions {
        mode,
        ..PutOptions::default()
    }
}

async fn read_lock(
    store: &dyn ObjectStore,
    at: &ObjectPath,
) -> Result<Option<(Option<LockBody>, UpdateVersion)>, object_store::Error> {
    match store.get(at).await {
        Ok(got) => {
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let bytes = got.bytes().await?;
            Ok(Some((serde_json::from_slice(&bytes).ok(), version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn take(
    store: Arc<dyn ObjectStore>,
    at: ObjectPath,
    holder: String,
    lease: Duration,
) -> Result<Taken, object_store::Error> {
    let mut body = LockBody {
        holder,
        token: format!("{:016x}", random_u64()),
        expires_ms: now_ms().saturating_add(lease_ms(lease)),
    };
    // Two rounds at most: a lock that disappears between the create and the read (its
    // writer released it) is tried once more.
    for _ in 0..2 {
        match store
            .put_opts(&at, payload(&body), put_mode(PutMode::Create))
            .await
        {
            Ok(put) => return Ok(Taken::Yes(Held::new(store, at, body, put))),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some((current, version)) = read_lock(store.as_ref(), &at).await? else {
            continue;
        };
        if let Some(current) = &current
            && current.expires_ms > now_ms()
        {
            return Ok(Taken::No(current.holder.clone()));
        }
        // Expired (or unreadable): taken over, conditional on the version just read.
        let expired = current.map_or_else(|| "an unreadable lock".to_owned(), |c| c.holder);
        body.expires_ms = now_ms().saturating_add(lease_ms(lease));
        match store
            .put_opts(&at, payload(&body), put_mode(PutMode::Update(version)))
            .await
        {
            Ok(put) => {
                tracing::warn!(
                    lock = %at,
                    expired = %expired,
                    "took over the registry's expired lock on object storage"
                );
                return Ok(Taken::Yes(Held::new(store, at, body, put)));
            }
            Err(object_store::Error::Precondition { .. }) => {
                // Another writer took it over first.
                let holder = read_lock(store.as_ref(), &at)
                    .await?
                    .and_then(|(b, _)| b)
                    .map_or(expired, |b| b.holder);
                return Ok(Taken::No(holder));
            }
            Err(object_store::Error::NotImplemented { .. }) => {
                // A folder: delete the expired lock, then create as above.
                store.delete(&at).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Taken::No(
        "another writer (the lock changed while it was read)".into(),
    ))
}

/// The version a write made, for the next conditional write.
fn written(put: PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    }
}

impl Held {
    fn new(store: Arc<dyn ObjectStore>, at: ObjectPath, body: LockBody, put: PutResult) -> Self {
        Held {
            store,
            at,
            body,
            version: written(put),
        }
    }

    /// Writes the lock again with a later expiry; `false` when it is no longer ours.
    async fn renew(&mut self, lease: Duration) -> Result<bool, object_store::Error> {
        self.body.expires_ms = now_ms().saturating_add(lease_ms(lease));
        let put = match self
            .store
            .put_opts(
                &self.at,
                payload(&self.body),
                put_mode(PutMode::Update(self.version.clone())),
            )
            .await
        {
            Ok(put) => put,
            Err(object_store::Error::Precondition { .. }) => return Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                if !self.still_ours().await? {
                    return Ok(false);
                }
                self.store
                    .put_opts(&self.at, payload(&self.body), put_mode(PutMode::Overwrite))
                    .await?
            }
            Err(e) => return Err(e),
        };
        self.version = written(put);
        Ok(true)
    }

    async fn still_ours(&self) -> Result<bool, object_store::Error> {
        Ok(read_lock(self.store.as_ref(), &self.at)
            .await?
            .and_then(|(b, _)| b)
            .is_some_and(|b| b.token == self.body.token))
    }

    /// Deletes the lock when it is still ours.
    async fn release(self) -> Result<(), object_store::Error> {
        if self.still_ours().await? {
            self.store.delete(&self.at).await?;
        }
        Ok(())
    }
}

impl RemoteRegistry {
    /// Takes the registry's lock on object storage, or fails at once when another writer
    /// holds it (the error says who). `command` says what this writer is doing; `lease` is
    /// how long the lock outlives this process when it is killed (renewed every third of
    /// it while held).
    ///
    /// Blocking: call it from a thread that may block (a command line, `spawn_blocking`).
    /// The lock has a thread and a client of its own, so it is renewed while the caller
    /// works, in or out of an async runtime.
    pub fn lock(&self, command: &str, lease: Duration) -> Result<RemoteLock, BundleError> {
        let store = self.fresh_client()?;
        let at = self.location(REMOTE_LOCK_OBJECT);
        let shown = format!(
            "{}/{REMOTE_LOCK_OBJECT}",
            self.shown().trim_end_matches('/')
        );
        let holder = format!(
            "pid {} on {} ({command}) since {}",
            std::process::id(),
            host_name(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        let lost = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel::<Answer>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread_lost = Arc::clone(&lost);
        let thread_shown = shown.clone();
        let thread = std::thread::Builder::new()
            .name("registry-lock".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Answer::Failed(e.to_string()));
                        return;
                    }
                };
                let mut held = match runtime.block_on(take(store, at, holder, lease)) {
                    Ok(Taken::Yes(held)) => {
                        let _ = started_tx.send(Answer::Held);
                        held
                    }
                    Ok(Taken::No(holder)) => {
                        let _ = started_tx.send(Answer::Busy(holder));
                        return;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Answer::Failed(e.to_string()));
                        return;
                    }
                };
                let every = lease / 3;
                // Until the holder drops the lock (its sender gone).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(every) {
                    match runtime.block_on(held.renew(lease)) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(lock = %thread_shown, "the registry's lock was taken by another writer");
                            thread_lost.store(true, Ordering::SeqCst);
                        }
                        Err(e) => {
                            // Tried again at the next third; lost once the lease ran out.
                            tracing::warn!(lock = %thread_shown, error = %e, "cannot renew the registry's lock");
                            if now_ms() >= held.body.expires_ms {
                                thread_lost.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
                if let Err(e) = runtime.block_on(held.release()) {
                    tracing::warn!(lock = %thread_shown, error = %e, "cannot delete the registry's lock; it expires by itself");
                }
            })
            .map_err(|e| BundleError::Invalid {
                path: shown.clone().into(),
                message: format!("cannot start the lock's thread: {e}"),
            })?;
        let failed = |message: String| BundleError::Invalid {
            path: shown.clone().into(),
            message,
        };
        match started_rx.recv() {
            Ok(Answer::Held) => Ok(RemoteLock {
                stop: Some(stop_tx),
                thread: Some(thread),
                lost,
                shown,
            }),
            Ok(Answer::Busy(holder)) => {
                let _ = thread.join();
                Err(BundleError::Locked {
                    path: shown.into(),
                    holder,
                })
            }
            Ok(Answer::Failed(e)) => {
                let _ = thread.join();
                Err(failed(format!("cannot take the registry's lock: {e}")))
            }
            Err(_) => {
                let _ = thread.join();
                Err(failed("the lock's thread ended without an answer".into()))
            }
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}
