//! A registry given as a URL (`file:///...`, `s3://...`, `gs://...`, `az://...`): the
//! command works on a local mirror of it (pulled before), and what it changed is uploaded
//! after it succeeded, bundles before the log and `LIVE` (see `models::bundle::remote`). A
//! command that changes the registry holds its lock on object storage from before the pull
//! to after the upload, so no other writer (another run, a promote through a server) works
//! between them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use models::bundle::{DEFAULT_REMOTE_LEASE, RemoteLock, RemoteRegistry, is_registry_url};

/// The mirror a command runs on, removed when dropped (and the lock released).
pub struct Mirror {
    remote: RemoteRegistry,
    local: PathBuf,
    runtime: tokio::runtime::Runtime,
    lock: Option<RemoteLock>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.local);
    }
}

impl Mirror {
    /// Uploads what the command changed.
    pub fn push(&self) -> Result<()> {
        if let Some(lock) = &self.lock {
            lock.check()?;
        }
        let report = self
            .runtime
            .block_on(self.remote.push(&self.local))
            .context("uploading the registry's changes")?;
        if !report.is_empty() {
            println!(
                "registry uploaded: {} bundle(s) {}{}{}",
                report.bundles.len(),
                report.bundles.join(", "),
                if report.history { "; the log" } else { "" },
                if report.live.is_empty() {
                    String::new()
                } else {
                    format!("; LIVE of {}", report.live.join(", "))
                }
            );
        }
        Ok(())
    }
}

/// When `registry` is a URL: pulls it into a fresh local folder, points `registry` there
/// and returns the mirror (to push after the command); a folder is left as it is. A
/// `writer` (what the command does, for whoever finds the lock taken) takes the registry's
/// lock first, or fails at once when another writer holds it.
pub fn mirror(registry: &mut PathBuf, writer: Option<&str>) -> Result<Option<Mirror>> {
    let url = registry.to_string_lossy().into_owned();
    if !is_registry_url(&url) {
        return Ok(None);
    }
    let remote = RemoteRegistry::from_url(&url)?;
    let lock = match writer {
        Some(command) => Some(remote.lock(command, DEFAULT_REMOTE_LEASE)?),
        None => None,
    };
    let local = std::env::temp_dir().join(format!(
        "leadscore-registry-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the object store's runtime")?;
    runtime
        .block_on(remote.pull(&local))
        .with_context(|| format!("reading the registry {url}"))?;
    *registry = local.clone();
    Ok(Some(Mirror {
        remote,
        local,
        runtime,
        lock,
    }))
}
