//! `leadscore-train import` and `export`: a CRM export into the server's entity store, and
//! the store back out as files `train` reads ([`store::files`]).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use features::spec::{DatasetSpec, Task};
use store::{RedbStore, StoreOpen};

/// Loads the spec's history into the store in `store_dir`.
pub fn import(spec: &Path, data_dir: Option<PathBuf>, store_dir: &Path) -> Result<()> {
    let mut spec = DatasetSpec::from_file(spec)?;
    if let Some(dir) = data_dir {
        spec.base_dir = dir;
    }
    let store = RedbStore::open(StoreOpen::new(store_dir))
        .with_context(|| format!("opening the entity store in {}", store_dir.display()))?;
    let r = store::files::import(&spec, &store)?;
    let rate = r.events as f64 / r.write_seconds.max(1e-9);
    println!(
        "imported {} entities, {} events ({} already stored), {} outcomes into {}: files read in \
         {:.1} s, written durably in {:.1} s ({:.0} events/s)",
        r.entities,
        r.events,
        r.duplicates,
        r.outcomes,
        store.path().display(),
        r.load_seconds,
        r.write_seconds,
        rate
    );
    Ok(())
}

/// Writes the store's entities of `task` to `out` with a spec.
pub fn export(store_dir: &Path, out: &Path, task: Option<Task>, like: Option<&Path>) -> Result<()> {
    let like = like.map(DatasetSpec::from_file).transpose()?;
    let task = task
        .or(like.as_ref().map(|s| s.task))
        .unwrap_or(Task::Propensity);
    let store = RedbStore::open(StoreOpen::new(store_dir))
        .with_context(|| format!("opening the entity store in {}", store_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the export's runtime")?;
    let r = runtime.block_on(store::files::export(&store, out, task, like.as_ref()))?;
    println!(
        "exported {} entities, {} events, {} outcomes -> {}",
        r.entities,
        r.events,
        r.outcomes,
        r.spec.display()
    );
    Ok(())
}
