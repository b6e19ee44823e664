//! Which version of each model is live, the log of every change, and the lock that keeps two
//! writers apart.
//!
//! * `<root>/<model>/LIVE` holds the live version's name. It is replaced atomically (written
//!   and synced beside, then renamed over), so a reader sees the old name or the new one.
//!   A registry that was never promoted (no `LIVE`, no promotion in the log) serves its
//!   newest version ([`Registry::served`]). Once a model was promoted, a `LIVE` that is
//!   missing, unreadable or names an absent version never makes the newest version live:
//!   the log's last promote or revert says which version is live, and the problem is
//!   reported ([`Registry::live_status`]); failing that, it is an error.
//! * `<root>/history.jsonl` is the append-only log: one JSON [`RegistryEvent`] a line
//!   (who, when, what, why), synced after each append.
//! * `<root>/.lock` is locked (an advisory file lock, released by the operating system when
//!   the process ends, however it ends) by whoever changes the registry: a training run from
//!   start to finish, `promote`, `revert`. A second one is refused at once with the holder's
//!   pid, command and start time ([`Registry::lock`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use features::spec::Task;
use serde::{Deserialize, Serialize};

use super::store::{Registry, sync_dir};
use super::{BundleError, LIVE_TEMP_PREFIX, ModelName, check_version_name, random_u64};

/// File of a model folder naming its live version.
pub const LIVE_FILE: &str = "LIVE";
/// The registry's append-only log.
pub const HISTORY_FILE: &str = "history.jsonl";
/// The registry's lock file.
pub const LOCK_FILE: &str = ".lock";

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAction {
    /// A version made live.
    Promote,
    /// Back to the version live before the current one was promoted.
    Revert,
    /// A new version kept off: the publish gate found it worse than the live one.
    Refuse,
    /// The model's thresholds changed in the thresholds file (the console's Save); the
    /// version is the one served then, `why` says what was set.
    Thresholds,
}

impl RegistryAction {
    /// As written in the log: `promote`, `revert`, `refuse`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryAction::Promote => "promote",
            RegistryAction::Revert => "revert",
            RegistryAction::Refuse => "refuse",
            RegistryAction::Thresholds => "thresholds",
        }
    }
}

/// Which version of a model is live ([`Registry::live_status`]) or served
/// ([`Registry::served_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatus {
    /// The version; `None` when there is none (never promoted; for
    /// [`Registry::served_status`], also no bundle at all).
    pub version: Option<String>,
    /// Set when `LIVE` could not be used and the version was taken from the log: what is
    /// wrong with `LIVE`. Worth a warning: the registry needs a promote or revert to
    /// write `LIVE` again.
    pub problem: Option<String>,
}

/// One line of the registry's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEvent {
    pub at: DateTime<Utc>,
    /// Who asked (`--by`, else the user running the command).
    pub who: String,
    pub action: RegistryAction,
    /// The model's task.
    pub task: Task,
    /// The model; events logged before models had names have none and are about the model
    /// named after their task ([`RegistryEvent::model_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// The version the event is about: made live, or refused.
    pub version: String,
    /// The live version before the event, if any.
    pub previous: Option<String>,
    pub why: String,
}

impl RegistryEvent {
    /// The model the event is about: `model`, else the one named after `task`.
    pub fn model_name(&self) -> &str {
        self.model
            .as_ref()
            .map_or(self.task.as_str(), ModelName::as_str)
    }
}

/// The registry's lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RegistryLock {
    _file: File,
    root: PathBuf,
}

impl RegistryLock {
    /// The registry it locks.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }
}

impl Registry {
    /// Takes the registry's lock, or fails at once when another process holds it (the error
    /// says who). Creates the registry folder when needed.
    pub fn lock(&self, command: &str) -> Result<RegistryLock, BundleError> {
        let root = self.root();
        fs::create_dir_all(root).map_err(|e| BundleError::io(root, e))?;
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| BundleError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(BundleError::Locked {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(BundleError::io(&path, e)),
        }
        let holder = format!(
            "pid {} ({command}) since {}",
            std::process::id(),
            Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .map_err(|e| BundleError::io(&path, e))?;
        Ok(RegistryLock {
            _file: file,
            root: root.to_path_buf(),
        })
    }

    /// The live version of `model`, from its `LIVE` file; `None` when there is none.
    pub fn live(&self, model: &ModelName) -> Result<Option<String>, BundleError> {
        let path = self.model_dir(model).join(LIVE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BundleError::io(&path, e)),
        };
        let version = text.trim().to_owned();
        check_version_name(&version).map_err(|e| BundleError::invalid(&path, e))?;
        Ok(Some(version))
    }

    /// Which version of `model` is live, with what is wrong with `LIVE` when it cannot say.
    ///
    /// `LIVE` naming a version that is in the registry: that version. Otherwise (no `LIVE`,
    /// an unreadable one, a bad name, a version that is not there) the log decides: when
    /// it records a promote or revert of `model`, the last one's version, if that bundle is
    /// there, with [`LiveStatus::problem`] saying what is wrong with `LIVE`; when the model
    /// was never promoted and there is no `LIVE`, no live version (and no problem). Every
    /// other case is an error naming `LIVE` (or the log, when it cannot be read): the
    /// newest version is never made live behind the operator's back.
    pub fn live_status(&self, model: &ModelName) -> Result<LiveStatus, BundleError> {
        let path = self.model_dir(model).join(LIVE_FILE);
        let versions = self.versions(model)?;
        let live = self.live(model);
        let problem = match &live {
            Ok(Some(version)) if versions.contains(version) => {
                return Ok(LiveStatus {
                    version: Some(version.clone()),
                    problem: None,
                });
            }
            Ok(Some(version)) => format!(
                "{} names {version}, which is not in the registry",
                path.display()
            ),
            Ok(None) => format!("{} is missing", path.display()),
            Err(e) => format!("{e}"),
        };
        let history_path = self.root().join(HISTORY_FILE);
        let last = self.history()?.into_iter().rev().find(|e| {
            e.model_name() == model.as_str()
                && matches!(e.action, RegistryAction::Promote | RegistryAction::Revert)
        });
        match last {
            None if matches!(live, Ok(None)) => Ok(LiveStatus {
                version: None,
                problem: None,
            }),
            None => Err(BundleError::invalid(
                &path,
                format!(
                    "cannot be used ({problem}), and {} records no promotion of {} to fall \
                     back on",
                    history_path.display(),
                    model
                ),
            )),
            Some(event) if versions.contains(&event.version) => Ok(LiveStatus {
                problem: Some(format!(
                    "{problem}; the live version is {}, from the last {} in {} (promote or \
                     revert to write LIVE again)",
                    event.version,
                    event.action.as_str(),
                    history_path.display()
                )),
                version: Some(event.version),
            }),
            Some(event) => Err(BundleError::invalid(
                &path,
                format!(
                    "cannot be used ({problem}), and the last {} in {} names {}, which is not \
                     in the registry either; no version is made live in its place",
                    event.action.as_str(),
                    history_path.display(),
                    event.version
                ),
            )),
        }
    }

    /// The version a server should serve: the live one ([`Registry::live_status`]), else
    /// (a registry that was never promoted) the newest.
    pub fn served(&self, model: &ModelName) -> Result<Option<String>, BundleError> {
        Ok(self.served_status(model)?.version)
    }

    /// [`Registry::served`] with the problem of `LIVE` when the live version had to be taken
    /// from the log.
    pub fn served_status(&self, model: &ModelName) -> Result<LiveStatus, BundleError> {
        let status = self.live_status(model)?;
        if status.version.is_some() {
            return Ok(status);
        }
        Ok(LiveStatus {
            version: self.latest(model)?,
            problem: None,
        })
    }

    /// The live version as changes record it: [`Registry::live_status`]'s, or `LIVE`'s own
    /// name when that fails (a change under the lock repairs `LIVE`).
    fn live_for_log(&self, model: &ModelName) -> Option<String> {
        match self.live_status(model) {
            Ok(status) => status.version,
            Err(_) => self.live(model).ok().flatten(),
        }
    }

    /// Makes `version` of `model` live (it must load as a bundle) and logs it.
    pub fn promote(
        &self,
        lock: &RegistryLock,
        model: &ModelName,
        version: &str,
        who: &str,
        why: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        let task = self.load(model, version)?.manifest().task;
        let previous = self.live_for_log(model);
        self.set_live(model, version)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Promote,
            task,
            model: Some(model.clone()),
            version: version.to_owned(),
            previous,
            why: why.to_owned(),
        })
    }

    /// Makes live again the version that was live before the current one was promoted (a
    /// second revert goes one further back), and logs it.
    pub fn revert(
        &self,
        lock: &RegistryLock,
        model: &ModelName,
        who: &str,
        why: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        let history_path = self.root().join(HISTORY_FILE);
        let current = self.live_status(model)?.version.ok_or_else(|| {
            BundleError::invalid(&self.model_dir(model), "no live version to revert")
        })?;
        let before = self
            .history()?
            .into_iter()
            .rev()
            .find(|e| {
                e.model_name() == model.as_str()
                    && e.action == RegistryAction::Promote
                    && e.version == current
            })
            .and_then(|e| e.previous)
            .ok_or_else(|| {
                BundleError::invalid(
                    &history_path,
                    format!(
                        "{model} {current} was live before any promotion the log records: \
                         nothing to revert to"
                    ),
                )
            })?;
        let task = self.load(model, &before)?.manifest().task;
        self.set_live(model, &before)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Revert,
            task,
            model: Some(model.clone()),
            version: before,
            previous: Some(current),
            why: why.to_owned(),
        })
    }

    /// Logs that the publish gate kept `version` of `model` (a model of `task`) off.
    pub fn record_refusal(
        &self,
        lock: &RegistryLock,
        task: Task,
        model: &ModelName,
        version: &str,
        who: &str,
        why: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Refuse,
            task,
            model: Some(model.clone()),
            version: version.to_owned(),
            previous: self.live_for_log(model),
            why: why.to_owned(),
        })
    }

    /// Logs that `who` set the thresholds of `model` (served at `version`) to `what`.
    pub fn record_thresholds(
        &self,
        lock: &RegistryLock,
        task: Task,
        model: &ModelName,
        version: &str,
        who: &str,
        what: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Thresholds,
            task,
            model: Some(model.clone()),
            version: version.to_owned(),
            previous: self.live_for_log(model),
            why: what.to_owned(),
        })
    }

    /// Every logged change, oldest first. No log yet: none.
    pub fn history(&self) -> Result<Vec<RegistryEvent>, BundleError> {
        let path = self.root().join(HISTORY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BundleError::io(&path, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map_err(|e| BundleError::invalid(&path, format!("line {}: {e}", i + 1)))
            })
            .collect()
    }

    fn check_lock(&self, lock: &RegistryLock) -> Result<(), BundleError> {
        if lock.root() == self.root() {
            Ok(())
        } else {
            Err(BundleError::invalid(
                self.root(),
                format!(
                    "the lock held is of another registry ({})",
                    lock.root().display()
                ),
            ))
        }
    }

    /// Replaces `<model>/LIVE` atomically.
    fn set_live(&self, model: &ModelName, version: &str) -> Result<(), BundleError> {
        let dir = self.model_dir(model);
        let tmp = dir.join(format!("{LIVE_TEMP_PREFIX}{:016x}", random_u64()));
        let target = dir.join(LIVE_FILE);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{version}\n").as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &target));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(BundleError::io(&target, e));
        }
        sync_dir(&dir)
    }

    /// Appends `event` to the log, synced.
    fn append(&self, event: RegistryEvent) -> Result<RegistryEvent, BundleError> {
        let path = self.root().join(HISTORY_FILE);
        let line = serde_json::to_string(&event).map_err(|e| BundleError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| BundleError::io(&path, e))?;
        Ok(event)
    }
}
