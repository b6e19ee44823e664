//! A registry on object storage (through the `object_store` crate: a folder, S3 or an
//! S3-compatible store, GCS, Azure), laid out as the folder registry is under a
//! prefix: `<model>/<version>/<file>`, `<model>/LIVE`, `history.jsonl`, `routing.toml`.
//!
//! Nothing reads the objects in place. A reader mirrors them into a local folder
//! ([`RemoteRegistry::pull`]) and reads that with [`Registry`](super::Registry), as it
//! reads any registry; a writer works on a local folder (pulled first) and uploads what
//! changed ([`RemoteRegistry::push`]). The order of the uploads and of the mirror's steps
//! keeps the folder registry's promise to readers, a complete bundle and a whole `LIVE`
//! name or nothing:
//!
//! * a bundle's files go up with its manifest last, and a mirror fetches only versions whose
//!   manifest is there, each into a temporary folder renamed into place;
//! * `LIVE` goes up after the bundle it names and the log, and a mirror takes a `LIVE` only
//!   when the version it names is in the mirror, replacing its own by a rename.
//!
//! Object stores have no file locks: writers take the registry's lock object
//! ([`RemoteRegistry::lock`], `remote_lock.rs`) around their pull, change and push, so one
//! writer works at a time, as on a folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path as FsPath, PathBuf};

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{BundleError, HISTORY_FILE, LIVE_FILE, MANIFEST_FILE, ROUTING_FILE, random_u64};

/// Files at the registry's root, copied whole when they differ: the log, the routing table.
const ROOT_FILES: [&str; 2] = [HISTORY_FILE, ROUTING_FILE];

/// A registry under `prefix` in an object store.
#[derive(Debug, Clone)]
pub struct RemoteRegistry {
    store: std::sync::Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The URL it came from, for messages.
    shown: String,
    /// The URL and the options it was opened with, to open a client of another runtime's
    /// (the lock's thread); `None` for a store given whole.
    opened: Option<(url::Url, Vec<(String, String)>)>,
}

/// What a [`RemoteRegistry::pull`] or [`RemoteRegistry::push`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Bundles copied, as `<model>/<version>`.
    pub bundles: Vec<String>,
    /// Models whose `LIVE` changed.
    pub live: Vec<String>,
    /// The log (or the routing table) changed.
    pub history: bool,
}

impl SyncReport {
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty() && self.live.is_empty() && !self.history
    }
}

/// Whether `--registry` names an object store (`file://`, `s3://`, `gs://`, `az://`, ...)
/// rather than a folder.
pub fn is_registry_url(registry: &str) -> bool {
    registry.contains("://")
}

/// What the objects under the prefix are, by their relative path.
struct Listing {
    /// Relative path → size, e-tag.
    objects: BTreeMap<String, (u64, Option<String>)>,
}

impl Listing {
    /// `(model, version)` of every complete bundle: its manifest is there.
    fn bundles(&self) -> BTreeSet<(String, String)> {
        self.objects
            .keys()
            .filter_map(|k| {
                let mut parts = k.split('/');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(m), Some(v), Some(MANIFEST_FILE), None) if !hidden(m) && !hidden(v) => {
                        Some((m.to_owned(), v.to_owned()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn files_of(&self, model: &str, version: &str) -> Vec<String> {
        let dir = format!("{model}/{version}/");
        self.objects
            .keys()
            .filter(|k| k.starts_with(&dir) && !k[dir.len()..].contains('/'))
            .cloned()
            .collect()
    }
}

/// A temporary or hidden entry (`.tmp-*`, `.lock`): never copied.
fn hidden(name: &str) -> bool {
    name.starts_with('.')
}

impl RemoteRegistry {
    /// The registry at `url`: `file:///srv/registry`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix` (credentials and endpoints from the
    /// `AWS_*`, `GOOGLE_*` and `AZURE_*` environment, as the `object_store` crate reads
    /// them).
    pub fn from_url(url: &str) -> Result<Self, BundleError> {
        let invalid = |message: String| BundleError::Invalid {
            path: PathBuf::from(url),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let (store, prefix) = object_store::parse_url_opts(&parsed, env.clone())
            .map_err(|e| invalid(format!("not an object store this build reaches: {e}")))?;
        Ok(RemoteRegistry {
            store: std::sync::Arc::from(store),
            prefix,
            shown: url.to_owned(),
            opened: Some((parsed, env)),
        })
    }

    /// A client of its own for the same store: a cloud store's client keeps connections on
    /// the runtime that made them, which a thread with another runtime must not share.
    pub(super) fn fresh_client(&self) -> Result<std::sync::Arc<dyn ObjectStore>, BundleError> {
        match &self.opened {
            Some((url, env)) => object_store::parse_url_opts(url, env.clone())
                .map(|(store, _)| std::sync::Arc::from(store))
                .map_err(|e| self.err("", e)),
            None => Ok(std::sync::Arc::clone(&self.store)),
        }
    }

    /// The store it is in (the client it reads and writes with).
    pub fn store(&self) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::clone(&self.store)
    }

    /// The URL it was opened with (or the name it was given).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The registry under `prefix` of `store`.
    pub fn new(store: std::sync::Arc<dyn ObjectStore>, prefix: &str, shown: &str) -> Self {
        RemoteRegistry {
            store,
            prefix: ObjectPath::from(prefix),
            shown: shown.to_owned(),
            opened: None,
        }
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> BundleError {
        BundleError::Invalid {
            path: PathBuf::from(format!("{}/{what}", self.shown.trim_end_matches('/'))),
            message: e.to_string(),
        }
    }

    pub(super) fn location(&self, relative: &str) -> ObjectPath {
        relative
            .split('/')
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    async fn list(&self) -> Result<Listing, BundleError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.err("", e))?;
        let mut objects = BTreeMap::new();
        for m in metas {
            let Some(parts) = m.location.prefix_match(&self.prefix) else {
                continue;
            };
            let relative = parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/");
            objects.insert(relative, (m.size, m.e_tag));
        }
        Ok(Listing { objects })
    }

    async fn fetch(&self, relative: &str) -> Result<Vec<u8>, BundleError> {
        let got = self
            .store
            .get(&self.location(relative))
            .await
            .map_err(|e| self.err(relative, e))?;
        Ok(got
            .bytes()
            .await
            .map_err(|e| self.err(relative, e))?
            .to_vec())
    }

    async fn upload(&self, relative: &str, bytes: Vec<u8>) -> Result<(), BundleError> {
        self.store
            .put(&self.location(relative), PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(relative, e))?;
        Ok(())
    }

    /// Mirrors the registry into the folder `cache` (created if missing): the complete
    /// bundles it lacks, the log and the routing table when they differ, then each `LIVE`
    /// whose version the mirror holds. A bundle already in the mirror is never fetched again (bundles never change).
    pub async fn pull(&self, cache: &FsPath) -> Result<SyncReport, BundleError> {
        let listing = self.list().await?;
        let mut report = SyncReport::default();
        std::fs::create_dir_all(cache).map_err(|e| BundleError::io(cache, e))?;
        for (model, version) in listing.bundles() {
            let target = cache.join(&model).join(&version);
            if target.exists() {
                continue;
            }
            let model_dir = cache.join(&model);
            std::fs::create_dir_all(&model_dir).map_err(|e| BundleError::io(&model_dir, e))?;
            let tmp = model_dir.join(format!(".tmp-{version}-pull-{:016x}", random_u64()));
            std::fs::create_dir(&tmp).map_err(|e| BundleError::io(&tmp, e))?;
            for relative in listing.files_of(&model, &version) {
                let bytes = self.fetch(&relative).await?;
                let name = relative.rsplit('/').next().unwrap_or(&relative);
                write_synced(&tmp.join(name), &bytes)?;
            }
            super::store::sync_dir(&tmp)?;
            std::fs::rename(&tmp, &target).map_err(|e| BundleError::io(&target, e))?;
            super::store::sync_dir(&model_dir)?;
            report.bundles.push(format!("{model}/{version}"));
        }
        for name in ROOT_FILES {
            if !listing.objects.contains_key(name) {
                continue;
            }
            let bytes = self.fetch(name).await?;
            if std::fs::read(cache.join(name)).ok().as_deref() != Some(&bytes[..]) {
                replace_file(cache, name, &bytes)?;
                report.history = true;
            }
        }
        let models: BTreeSet<&str> = listing
            .objects
            .keys()
            .filter_map(|k| k.strip_suffix(&format!("/{LIVE_FILE}")))
            .filter(|m| !m.contains('/') && !hidden(m))
            .collect();
        for model in models {
            let relative = format!("{model}/{LIVE_FILE}");
            let bytes = self.fetch(&relative).await?;
            let named = String::from_utf8_lossy(&bytes).trim().to_owned();
            let model_dir = cache.join(model);
            if named.is_empty() || hidden(&named) || !model_dir.join(&named).is_dir() {
                // Its bundle is not here yet (uploaded after the listing): next pull.
                continue;
            }
            if std::fs::read(model_dir.join(LIVE_FILE)).ok().as_deref() != Some(&bytes[..]) {
                replace_file(&model_dir, LIVE_FILE, &bytes)?;
                report.live.push(model.to_owned());
            }
        }
        Ok(report)
    }

    /// Uploads what the folder registry `local` has and the store lacks or holds otherwise:
    /// each complete bundle missing there (its manifest last), then the log, then each
    /// `LIVE`.
    pub async fn push(&self, local: &FsPath) -> Result<SyncReport, BundleError> {
        let listing = self.list().await?;
        let remote_bundles = listing.bundles();
        let mut report = SyncReport::default();
        let mut lives = Vec::new();
        for model in read_dir_names(local)? {
            let model_dir = local.join(&model);
            if hidden(&model) || !model_dir.is_dir() {
                continue;
            }
            for version in read_dir_names(&model_dir)? {
                let dir = model_dir.join(&version);
                if hidden(&version)
                    || !dir.join(MANIFEST_FILE).is_file()
                    || remote_bundles.contains(&(model.clone(), version.clone()))
                {
                    continue;
                }
                let mut files = read_dir_names(&dir)?;
                files.retain(|f| !hidden(f) && f != MANIFEST_FILE && dir.join(f).is_file());
                files.push(MANIFEST_FILE.to_owned());
                for f in files {
                    let path = dir.join(&f);
                    let bytes = std::fs::read(&path).map_err(|e| BundleError::io(&path, e))?;
                    self.upload(&format!("{model}/{version}/{f}"), bytes)
                        .await?;
                }
                report.bundles.push(format!("{model}/{version}"));
            }
            if model_dir.join(LIVE_FILE).is_file() {
                lives.push(model);
            }
        }
        for name in ROOT_FILES {
            let path = local.join(name);
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| BundleError::io(&path, e))?;
            let same = listing.objects.contains_key(name) && self.fetch(name).await? == bytes;
            if !same {
                self.upload(name, bytes).await?;
                report.history = true;
            }
        }
        for model in lives {
            let path = local.join(&model).join(LIVE_FILE);
            let bytes = std::fs::read(&path).map_err(|e| BundleError::io(&path, e))?;
            let relative = format!("{model}/{LIVE_FILE}");
            let same =
                listing.objects.contains_key(&relative) && self.fetch(&relative).await? == bytes;
            if !same {
                self.upload(&relative, bytes).await?;
                report.live.push(model);
            }
        }
        Ok(report)
    }
}

fn read_dir_names(dir: &FsPath) -> Result<Vec<String>, BundleError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| BundleError::io(dir, e))? {
        let entry = entry.map_err(|e| BundleError::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn write_synced(path: &FsPath, bytes: &[u8]) -> Result<(), BundleError> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).map_err(|e| BundleError::io(path, e))?;
    f.write_all(bytes).map_err(|e| BundleError::io(path, e))?;
    f.sync_all().map_err(|e| BundleError::io(path, e))
}

/// Replaces `dir/name` atomically: written and synced beside, renamed over.
fn replace_file(dir: &FsPath, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
    let tmp = dir.join(format!(
        "{}{name}-{:016x}",
        super::LIVE_TEMP_PREFIX,
        random_u64()
    ));
    write_synced(&tmp, bytes)?;
    let target = dir.join(name);
    std::fs::rename(&tmp, &target).map_err(|e| BundleError::io(&target, e))?;
    super::store::sync_dir(dir)
}
