//! A model's versions and health for the console: its versions in the registry with their
//! held-out figures and the registry's log (promotions, reverts, the publish gate's
//! refusals, thresholds set) (`GET /v1/models/{model}/versions`), promote and revert
//! (`POST /admin/models/{model}/promote|revert`, under the registry's lock as the training
//! binary's `registry promote|revert` take it, then reloaded at once), and the served
//! version's held-out curves (`GET /v1/models/{model}/health`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::HeaderMap;
use models::bundle::{BundleError, MANIFEST_FILE, Manifest, ModelName, Registry};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{ModelRef, model_for, one_query_param, read_body, validation_json};
use crate::request::parse_json;
use crate::state::AppState;
use crate::tuning::{check_who, with_registry_lock};

/// Most versions listed, newest first.
pub const MAX_VERSIONS: usize = 100;
/// Longest `why` of a promote or revert.
pub const MAX_WHY_CHARS: usize = 500;
/// Most log lines listed, newest first.
pub const MAX_LOG_LINES: usize = 200;

fn registry(state: &AppState) -> Result<Registry, ApiError> {
    state
        .reloader()
        .map(|r| r.registry().clone())
        .ok_or_else(|| ApiError::NotReady {
            reason: "this server has no registry".into(),
        })
}

fn model_name(name: &str) -> Result<ModelName, ApiError> {
    ModelName::new(name).map_err(|e| ApiError::bad_request(e, None))
}

fn internal(e: BundleError) -> ApiError {
    ApiError::Internal {
        message: e.to_string(),
    }
}

/// `GET /v1/models/{model}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let served = model_for(&state, &name)?;
    let registry = registry(&state)?;
    let model = model_name(&name)?;
    let served_version = served.model.version().to_owned();
    let answer = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let live = registry.live_status(&model).map_err(internal)?;
        let mut names = registry.versions(&model).map_err(internal)?;
        names.reverse();
        names.truncate(MAX_VERSIONS);
        let versions: Vec<serde_json::Value> = names
            .iter()
            .map(|version| {
                let path = registry.model_dir(&model).join(version).join(MANIFEST_FILE);
                // The manifest alone: listing does not read every model.
                let manifest: Option<Manifest> = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                let is_live = live.version.as_deref() == Some(version.as_str());
                match manifest {
                    Some(m) => serde_json::json!({
                        "version": version,
                        "created_at": m.created_at,
                        "kind": m.model_kind,
                        "roc_auc": m.validation.raw.roc_auc,
                        "pr_auc": m.validation.raw.pr_auc,
                        "ece": m.validation.calibrated.ece,
                        "rows": m.validation.raw.rows,
                        "live": is_live,
                        "served": *version == served_version,
                    }),
                    None => serde_json::json!({
                        "version": version,
                        "created_at": null,
                        "unreadable": format!("{MANIFEST_FILE} cannot be read"),
                        "live": is_live,
                        "served": *version == served_version,
                    }),
                }
            })
            .collect();
        let mut log: Vec<_> = registry
            .history()
            .map_err(internal)?
            .into_iter()
            .filter(|e| e.model_name() == model.as_str())
            .collect();
        log.reverse();
        log.truncate(MAX_LOG_LINES);
        Ok(serde_json::json!({
            "model": model.as_str(),
            "live": live.version,
            "live_problem": live.problem,
            "served": served_version,
            "versions": versions,
            "log": log,
        }))
    })
    .await
    .map_err(|e| ApiError::Internal {
        message: format!("versions task failed: {e}"),
    })??;
    Ok(Json(answer))
}

/// The body of promote and revert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    /// The version to make live (promote only).
    #[serde(default)]
    version: Option<String>,
    by: String,
    #[serde(default)]
    why: Option<String>,
}

impl Change {
    fn checked(body: &[u8]) -> Result<(Change, String, String), ApiError> {
        let change: Change = parse_json(body)?;
        let who = check_who(&change.by)?;
        let why = change.why.clone().unwrap_or_default();
        if why.chars().count() > MAX_WHY_CHARS || why.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::bad_request(
                format!(
                    "why: at most {MAX_WHY_CHARS} characters, no control characters but line breaks"
                ),
                Some("why"),
            ));
        }
        let why = if why.trim().is_empty() {
            "from the console".to_owned()
        } else {
            why.trim().to_owned()
        };
        Ok((change, who, why))
    }
}

/// A registry refusal the client can act on (no such version, nothing to revert to) as a
/// conflict; anything else is the server's.
fn refused(e: BundleError) -> ApiError {
    match e {
        BundleError::Invalid { .. } | BundleError::Missing { .. } => ApiError::RegistryConflict {
            message: e.to_string(),
        },
        other => internal(other),
    }
}

async fn change(
    state: AppState,
    name: String,
    headers: HeaderMap,
    body: Body,
    promote: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    model_for(&state, &name)?;
    let model = model_name(&name)?;
    let registry = registry(&state)?;
    let bytes = read_body(&state, &headers, body).await?;
    let (change, who, why) = Change::checked(&bytes)?;
    let remote = state.reloader().and_then(|r| r.remote().cloned());
    if let (true, Some(remote)) = (promote, &remote) {
        // A version uploaded to object storage since the last mirror can be promoted now.
        remote
            .pull(registry.root())
            .await
            .map_err(|e| ApiError::Internal {
                message: format!("cannot read the registry on object storage: {e}"),
            })?;
    }
    let version = match (promote, change.version) {
        (true, Some(v)) => {
            if !registry.versions(&model).map_err(internal)?.contains(&v) {
                return Err(ApiError::UnknownVersion {
                    model: name,
                    version: v.chars().take(100).collect(),
                });
            }
            Some(v)
        }
        (true, None) => {
            return Err(ApiError::bad_request(
                "version: say which version to promote",
                Some("version"),
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "version: a revert goes back to the version live before; it takes no version",
                Some("version"),
            ));
        }
        (false, None) => None,
    };
    let state2 = state.clone();
    let logged = with_registry_lock(
        registry,
        remote,
        "leadscore-serve console",
        move |registry, lock| {
            let logged = match &version {
                Some(v) => registry.promote(lock, &model, v, &who, &why),
                None => registry.revert(lock, &model, &who, &why),
            }
            .map_err(refused)?;
            if let Some(reloader) = state2.reloader() {
                reloader.reload_once(&state2);
            }
            Ok(logged)
        },
    )
    .await?;
    let now = model_for(&state, &name)?;
    Ok(Json(serde_json::json!({
        "logged": logged,
        "served": now.model.version(),
    })))
}

/// `POST /admin/models/{model}/promote`.
pub async fn promote(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    change(state, name, headers, body, true).await
}

/// `POST /admin/models/{model}/revert`.
pub async fn revert(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    change(state, name, headers, body, false).await
}

/// `GET /v1/models/{model}/health[?by=FIELD]`.
pub async fn health(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let served = model_for(&state, &name)?;
    let by = one_query_param(query.as_deref(), "by")?;
    let model = &served.model;
    let (held, health) = model
        .held_out()
        .zip(model.health())
        .ok_or_else(|| ApiError::no_held_out(model))?;
    let fields: Vec<&str> = health.by_field.fields().collect();
    let by = match by.filter(|f| !f.is_empty()) {
        None => serde_json::Value::Null,
        Some(field) => {
            let levels = health.by_field.levels(&field).ok_or_else(|| {
                let known = if fields.is_empty() {
                    "this bundle's held-out rows carry no profile fields (retrain to get them)"
                        .to_owned()
                } else {
                    format!("the fields are: {}", fields.join(", "))
                };
                ApiError::bad_request(
                    format!(
                        "by: the held-out rows carry no field {:?}; {known}",
                        field.chars().take(64).collect::<String>()
                    ),
                    Some("by"),
                )
            })?;
            serde_json::json!({ "field": field, "levels": levels })
        }
    };
    let manifest = model.manifest();
    let c = &health.curves;
    Ok(Json(serde_json::json!({
        "model": ModelRef::from(&served),
        "validation": validation_json(manifest),
        "held_out": {
            "rows": held.len(),
            "conversions": held.positives(),
            "base_rate": held.positives() as f64 / held.len() as f64,
            "weeks_covered": held.weeks(),
        },
        "roc_auc": c.roc_auc,
        "roc": c.roc,
        "gains": c.gains,
        "calibration": c.calibration,
        "deciles": c.deciles,
        "histogram": c.histogram,
        "fields": fields,
        "by": by,
    })))
}
