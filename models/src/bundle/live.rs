//! Which version of each task is live, the log of every change, and the lock that keeps two
//! writers apart.
//!
//! * `<root>/<task>/LIVE` holds the live version's name. It is replaced atomically (written
//!   and synced beside, then renamed over), so a reader sees the old name or the new one.
//!   A registry without it serves its newest version ([`Registry::served`]).
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
use super::{BundleError, LIVE_TEMP_PREFIX, check_version_name, random_u64};

/// File of a task folder naming its live version.
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
}

/// One line of the registry's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEvent {
    pub at: DateTime<Utc>,
    /// Who asked (`--by`, else the user running the command).
    pub who: String,
    pub action: RegistryAction,
    pub task: Task,
    /// The version the event is about: made live, or refused.
    pub version: String,
    /// The live version before the event, if any.
    pub previous: Option<String>,
    pub why: String,
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

    /// The live version of `task`, from its `LIVE` file; `None` when there is none.
    pub fn live(&self, task: Task) -> Result<Option<String>, BundleError> {
        let path = self.task_dir(task).join(LIVE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BundleError::io(&path, e)),
        };
        let version = text.trim().to_owned();
        check_version_name(&version).map_err(|e| BundleError::invalid(&path, e))?;
        Ok(Some(version))
    }

    /// The version a server should serve: the live one, else (a registry that never had a
    /// promotion) the newest.
    pub fn served(&self, task: Task) -> Result<Option<String>, BundleError> {
        match self.live(task)? {
            Some(version) => Ok(Some(version)),
            None => self.latest(task),
        }
    }

    /// Makes `version` of `task` live (it must load as a bundle) and logs it.
    pub fn promote(
        &self,
        lock: &RegistryLock,
        task: Task,
        version: &str,
        who: &str,
        why: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        self.load(task, version)?;
        let previous = self.live(task)?;
        self.set_live(task, version)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Promote,
            task,
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
        task: Task,
        who: &str,
        why: &str,
    ) -> Result<RegistryEvent, BundleError> {
        self.check_lock(lock)?;
        let history_path = self.root().join(HISTORY_FILE);
        let current = self.live(task)?.ok_or_else(|| {
            BundleError::invalid(&self.task_dir(task), "no live version to revert")
        })?;
        let before = self
            .history()?
            .into_iter()
            .rev()
            .find(|e| e.task == task && e.action == RegistryAction::Promote && e.version == current)
            .and_then(|e| e.previous)
            .ok_or_else(|| {
                BundleError::invalid(
                    &history_path,
                    format!(
                        "{} {current} was live before any promotion the log records: nothing to \
                         revert to",
                        task.as_str()
                    ),
                )
            })?;
        self.load(task, &before)?;
        self.set_live(task, &before)?;
        self.append(RegistryEvent {
            at: Utc::now(),
            who: who.to_owned(),
            action: RegistryAction::Revert,
            task,
            version: before,
            previous: Some(current),
            why: why.to_owned(),
        })
    }

    /// Logs that the publish gate kept `version` of `task` off.
    pub fn record_refusal(
        &self,
        lock: &RegistryLock,
        task: Task,
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
            version: version.to_owned(),
            previous: self.live(task)?,
            why: why.to_owned(),
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

    /// Replaces `<task>/LIVE` atomically.
    fn set_live(&self, task: Task, version: &str) -> Result<(), BundleError> {
        let dir = self.task_dir(task);
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
