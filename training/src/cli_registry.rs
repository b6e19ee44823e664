//! A registry given as a URL (`file:///...`, or a cloud store the build reaches): the
//! command works on a local mirror of it (pulled before), and what it changed is uploaded
//! after it succeeded, bundles before the log and `LIVE` (see `models::bundle::remote`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use models::bundle::{RemoteRegistry, is_registry_url};

/// The mirror a command runs on, removed when dropped.
pub struct Mirror {
    remote: RemoteRegistry,
    local: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.local);
    }
}

impl Mirror {
    /// Uploads what the command changed.
    pub fn push(&self) -> Result<()> {
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
/// and returns the mirror (to push after the command); a folder is left as it is.
pub fn mirror(registry: &mut PathBuf) -> Result<Option<Mirror>> {
    let url = registry.to_string_lossy().into_owned();
    if !is_registry_url(&url) {
        return Ok(None);
    }
    let remote = RemoteRegistry::from_url(&url)?;
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
    }))
}
