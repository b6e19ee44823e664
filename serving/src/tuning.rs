//! Thresholds sales ops set from the console, by probability or by capacity (leads a week):
//! a proposal is previewed on the served bundle's held-out rows
//! (`POST /v1/thresholds/{model}/preview`, changes nothing) and saved
//! (`PUT /admin/thresholds/{model}`): the model's section of the thresholds file is
//! replaced (other sections, comments and layout kept, `toml_edit`), the file written
//! atomically, applied at once through the reloader as a changed file would be at the next
//! reload, and the change logged in the registry's history with who asked.
//!
//! A proposal is checked whole before anything is written, with the same rules as the file
//! ([`ThresholdsFile::parse`], then [`Served::with_thresholds`](crate::state::Served::with_thresholds) against every served
//! model), so a refused proposal leaves the file as it was.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use models::bundle::{GradeBands, Registry, RegistryEvent};
use models::thresholds_file::{BandsPerWeek, ThresholdsFile};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{ModelRef, model_for, read_body, thresholds_answer};
use crate::request::parse_json;
use crate::state::AppState;

/// Longest `by` (who saves) accepted.
pub const MAX_WHO_CHARS: usize = 100;

/// A change of one model's thresholds; any key may be left out (the bundle's value then
/// stays, as in the file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proposal {
    #[serde(default)]
    sales_ready: Option<f64>,
    #[serde(default)]
    grades: Option<GradeBands>,
    #[serde(default)]
    sales_ready_per_week: Option<f64>,
    #[serde(default)]
    grades_per_week: Option<BandsPerWeek>,
    #[serde(default)]
    volume_per_week: Option<f64>,
    /// Who saves (required to save, ignored by the preview).
    #[serde(default)]
    by: Option<String>,
}

impl Proposal {
    /// The section the proposal makes, as the file would hold it.
    fn table(&self) -> toml_edit::Table {
        let mut table = toml_edit::Table::new();
        let bands = |a: f64, b: f64, c: f64| {
            let mut t = toml_edit::InlineTable::new();
            t.insert("a", a.into());
            t.insert("b", b.into());
            t.insert("c", c.into());
            toml_edit::value(t)
        };
        if let Some(v) = self.sales_ready {
            table["sales_ready"] = toml_edit::value(v);
        }
        if let Some(v) = self.sales_ready_per_week {
            table["sales_ready_per_week"] = toml_edit::value(v);
        }
        if let Some(g) = &self.grades {
            table["grades"] = bands(g.a, g.b, g.c);
        }
        if let Some(g) = &self.grades_per_week {
            table["grades_per_week"] = bands(g.a, g.b, g.c);
        }
        if let Some(v) = self.volume_per_week {
            table["volume_per_week"] = toml_edit::value(v);
        }
        table
    }

    /// `by`, checked ([`check_who`]).
    fn who(&self) -> Result<String, ApiError> {
        match &self.by {
            None => Err(ApiError::bad_request(
                "by: say who saves (a name), for the registry's log",
                Some("by"),
            )),
            Some(who) => check_who(who),
        }
    }

    fn by_capacity(&self) -> bool {
        self.sales_ready_per_week.is_some() || self.grades_per_week.is_some()
    }
}

/// Who asks for a change, as the registry's log keeps it: 1 to [`MAX_WHO_CHARS`]
/// characters, no control characters (the OpenAPI document states the same rule).
pub fn check_who(who: &str) -> Result<String, ApiError> {
    let n = who.chars().count();
    if n == 0 || n > MAX_WHO_CHARS || who.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            format!("by: say who asks, 1 to {MAX_WHO_CHARS} characters, no control characters"),
            Some("by"),
        ));
    }
    Ok(who.to_owned())
}

/// The key a message of [`ThresholdsFile`]'s checks is about (they start with it), as the
/// error's field.
fn field_of(message: &str) -> Option<&'static str> {
    [
        ("sales_ready_per_week", "sales_ready_per_week"),
        ("sales_ready", "sales_ready"),
        ("grades_per_week", "grades_per_week"),
        ("grades", "grades"),
        ("grade bands", "grades"),
        ("grade ", "grades"),
        ("volume_per_week", "volume_per_week"),
    ]
    .into_iter()
    .find(|(said, _)| message.contains(said))
    .map(|(_, key)| key)
}

/// `name`'s section holding `table`, as TOML text.
fn section_text(name: &str, table: toml_edit::Table) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert(name, toml_edit::Item::Table(table));
    doc.to_string()
}

/// A message of the file's checks as the client's error: without the section name the
/// route already gives, with the key it is about as the field.
fn refused(message: &str, name: &str) -> ApiError {
    let message = message.replace(&format!("[{name}]: "), "");
    let field = field_of(&message);
    ApiError::bad_request(message, field)
}

/// `proposal` as a thresholds file of `name` alone, checked by the file's own rules (each
/// probability in (0, 1), `a > b > c`, capacities positive, each cut-off one way only).
fn resolve(name: &str, proposal: &Proposal) -> Result<ThresholdsFile, ApiError> {
    ThresholdsFile::parse(&section_text(name, proposal.table())).map_err(|e| refused(&e, name))
}

/// The served model `name` and the proposal in the body (read and parsed).
async fn read_proposal(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(crate::state::ServedModel, Proposal), ApiError> {
    let served = model_for(state, name)?;
    let bytes = read_body(state, headers, body).await?;
    Ok((served, parse_json(&bytes)?))
}

/// `POST /v1/thresholds/{model}/preview`: what the proposal would give, on the served
/// bundle's held-out rows; nothing is written.
pub async fn preview(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (served, proposal) = read_proposal(&state, &name, &headers, body).await?;
    let file = resolve(&name, &proposal)?;
    let model = &served.model;
    let held = model
        .held_out()
        .ok_or_else(|| ApiError::no_held_out(model))?;
    let thresholds = file
        .apply(&name, &model.manifest().thresholds, Some(held))
        .map_err(|e| refused(&e, &name))?;
    let volume_per_week = held
        .resolve_volume(proposal.volume_per_week)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("volume_per_week")))?;
    let mut answer = thresholds_answer(
        ModelRef::from(&served),
        held,
        volume_per_week,
        None,
        &thresholds,
    );
    answer["in_force"] = serde_json::json!(*served.thresholds);
    Ok(Json(answer))
}

/// One registry change at a time from this process: the registry's lock is a file lock,
/// which a second request of the same process would find taken. A mirror's pull from
/// object storage takes it too, so it never lands between a change and its upload.
static REGISTRY_CHANGES: Mutex<()> = Mutex::new(());

/// This process's turn to change the registry folder (or its mirror), held until dropped.
pub fn registry_turn() -> std::sync::MutexGuard<'static, ()> {
    REGISTRY_CHANGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Runs `change` holding the registry's lock (and this process's turn), on the blocking
/// pool. A lock held by another process (a training run) is a conflict: nothing changed.
///
/// With the registry on object storage (`remote`), the change is made in this replica's
/// mirror, pulled first, and uploaded before the lock is released.
pub async fn with_registry_lock<T: Send + 'static>(
    registry: Registry,
    remote: Option<models::bundle::RemoteRegistry>,
    command: &'static str,
    change: impl FnOnce(&Registry, &models::bundle::RegistryLock) -> Result<T, ApiError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _turn = registry_turn();
        let locked = |e: models::bundle::BundleError| match e {
            models::bundle::BundleError::Locked { holder, .. } => ApiError::RegistryConflict {
                message: format!(
                    "the registry is being changed by another process ({holder}); nothing was \
                     changed: try again when it has finished"
                ),
            },
            other => ApiError::Internal {
                message: other.to_string(),
            },
        };
        let lock = registry.lock(command).map_err(locked)?;
        // On object storage, the registry's lock there too (another replica, the nightly
        // run), then the change is made on the registry as it is now (a version uploaded
        // since the last mirror can be promoted at once).
        let remote_lock = match &remote {
            Some(remote) => Some(
                remote
                    .lock(command, models::bundle::DEFAULT_REMOTE_LEASE)
                    .map_err(locked)?,
            ),
            None => None,
        };
        if let Some(remote) = &remote {
            tokio::runtime::Handle::current()
                .block_on(remote.pull(registry.root()))
                .map_err(|e| ApiError::Internal {
                    message: format!("cannot read the registry on object storage: {e}"),
                })?;
        }
        let done = change(&registry, &lock)?;
        if let Some(remote) = remote {
            if let Some(remote_lock) = &remote_lock {
                remote_lock.check().map_err(|e| ApiError::Internal {
                    message: format!(
                        "the change was made in this replica's copy of the registry but not \
                         uploaded to object storage ({e}); the next mirror undoes it: try again"
                    ),
                })?;
            }
            tokio::runtime::Handle::current()
                .block_on(remote.push(registry.root()))
                .map_err(|e| ApiError::Internal {
                    message: format!(
                        "the change was made in this replica's copy of the registry but not \
                         uploaded to object storage ({e}); the next mirror undoes it: try again"
                    ),
                })?;
        }
        Ok(done)
    })
    .await
    .map_err(|e| ApiError::Internal {
        message: format!("registry change task failed: {e}"),
    })?
}

/// The server's thresholds file, or why it cannot be changed.
fn thresholds_path(state: &AppState) -> Result<(PathBuf, Registry), ApiError> {
    let reloader = state
        .reloader()
        .ok_or_else(|| ApiError::ThresholdsReadOnly {
            message: "this server has no registry, so it keeps no thresholds file".into(),
        })?;
    let path = reloader
        .thresholds_path()
        .ok_or_else(|| ApiError::ThresholdsReadOnly {
            message: "this server was started without a thresholds file, so thresholds \
                      cannot be saved: set `thresholds = \"/path/thresholds.toml\"` in its \
                      configuration (or --thresholds) and restart it"
                .into(),
        })?;
    Ok((path.to_path_buf(), reloader.registry().clone()))
}

/// The thresholds file's text with `name`'s section replaced by `table`, and a comment
/// saying who set it when.
fn edited(path: &Path, name: &str, table: toml_edit::Table, who: &str) -> Result<String, ApiError> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ApiError::ThresholdsReadOnly {
                message: format!("cannot read the thresholds file {shown}: {e}"),
            });
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| ApiError::ThresholdsReadOnly {
            message: format!(
                "the thresholds file {shown} does not parse, so it is not changed: {e}"
            ),
        })?;
    let mut table = table;
    table.decor_mut().set_prefix(format!(
        "\n# set by {} on {} (console)\n",
        who.replace(['\n', '\r'], " "),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    doc.insert(name, toml_edit::Item::Table(table));
    Ok(doc.to_string().trim_start().to_owned())
}

/// `PUT /admin/thresholds/{model}`: saves the proposal as the model's section of the
/// thresholds file, applies it and logs who set it.
pub async fn save(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (served, proposal) = read_proposal(&state, &name, &headers, body).await?;
    let who = proposal.who()?;
    resolve(&name, &proposal)?;
    if proposal.by_capacity() && served.model.held_out().is_none() {
        return Err(ApiError::no_held_out(&served.model));
    }
    let (path, registry) = thresholds_path(&state)?;
    let model_name = served.model.name().clone();
    let task = served.model.task();
    let version = served.model.version().to_owned();
    let state2 = state.clone();
    let name2 = name.clone();
    let table = proposal.table();
    // What was set, for the log: the section's lines after its header.
    let what = section_text(&name, table.clone())
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("; ");
    let remote = state.reloader().and_then(|r| r.remote().cloned());
    let logged: RegistryEvent =
        with_registry_lock(registry, remote, "leadscore-serve thresholds", move |registry, lock| {
            let next = edited(&path, model_name.as_str(), table, &who)?;
            // The whole file as it would be, checked and fitted to every served model first.
            let file = ThresholdsFile::parse(&next).map_err(|e| refused(&e, &name2))?;
            state2
                .served()
                .with_thresholds(file)
                .map_err(|e| refused(&e, &name2))?;
            crate::files::write_atomically(&path, &next, 0o644).map_err(|e| {
                ApiError::ThresholdsReadOnly {
                    message: format!(
                        "cannot write the thresholds file {}: {e}; nothing was changed",
                        path.display()
                    ),
                }
            })?;
            if let Some(reloader) = state2.reloader() {
                let report = reloader.reload_once(&state2);
                tracing::info!(model = %model_name, thresholds = ?report.thresholds, "thresholds saved from the console");
            }
            registry
                .record_thresholds(lock, task, &model_name, &version, &who, &what)
                .map_err(|e| ApiError::Internal {
                    message: format!("thresholds saved, but not logged: {e}"),
                })
        })
        .await?;
    let now = model_for(&state, &name)?;
    Ok(Json(serde_json::json!({
        "model": ModelRef::from(&now),
        "thresholds": *now.thresholds,
        "logged": logged,
    })))
}
