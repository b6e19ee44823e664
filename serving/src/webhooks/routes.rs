//! The admin routes of the webhooks (admin key):
//!
//! | route | does |
//! | --- | --- |
//! | `GET /admin/webhooks` | the endpoints (secrets left out), each with its pending deliveries and dead letters |
//! | `POST /admin/webhooks` | adds an endpoint to the configuration file (a secret is made when none is given, and answered once) |
//! | `POST /admin/webhooks/{id}/disable`, `/enable` | stops or resumes deliveries to it (pending ones wait) |
//! | `POST /admin/webhooks/{id}/rotate` | a new secret; the old one signs too for a day (`previous_secret_until`) |
//! | `GET /admin/webhooks/{id}/dead-letters` | its dead letters, oldest first (`?limit=`, `?after=` a sequence) |
//! | `POST /admin/webhooks/{id}/dead-letters/replay` | moves them back to pending (`{"seqs": [...]}`, or all) |

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::endpoints::{Edit, Endpoint, WebhookConfig};
use super::sign::Secret;
use crate::error::ApiError;
use crate::http::read_body;
use crate::request::{parse_json, present};
use crate::state::AppState;

/// A JSON body, or the default when there is none.
async fn body_or_default<T: DeserializeOwned + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

/// Most dead letters listed at once.
const MAX_LIST: usize = 1000;

fn endpoint_json(e: &Endpoint, pending: u64, dead: u64) -> serde_json::Value {
    let c = &e.config;
    json!({
        "id": e.key(),
        "url": c.url,
        "models": c.models,
        "events": c.events,
        "allow_private": c.allow_private,
        "disabled": c.disabled,
        "disabled_reason": c.disabled_reason,
        "previous_secret_until": c.previous_secret_until,
        "pending": pending,
        "dead_letters": dead,
    })
}

/// The count of `key` in a list of counts by endpoint.
fn count(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

/// `GET /admin/webhooks`.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let hub = state.webhooks()?;
    let stats = state.store()?.outbox_stats().await?;
    let endpoints = hub.endpoints();
    let listed: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| {
            endpoint_json(
                e,
                count(&stats.pending, e.key()),
                count(&stats.dead, e.key()),
            )
        })
        .collect();
    // Deliveries filed under a key no endpoint has now (its table was removed or renamed).
    let orphaned: Vec<serde_json::Value> = stats
        .pending
        .iter()
        .chain(&stats.dead)
        .filter(|(k, _)| endpoints.iter().all(|e| e.key() != k))
        .map(|(k, _)| serde_json::Value::String(k.clone()))
        .collect();
    Ok(Json(json!({
        "endpoints": listed,
        "orphaned": orphaned,
    }))
    .into_response())
}

/// The body of `POST /admin/webhooks` (no `Debug`: it holds a secret).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    url: String,
    // Optional, but never `null` (the document says a string or a list when given).
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secret: Option<String>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    events: Option<Vec<String>>,
    #[serde(default)]
    allow_private: bool,
}

/// An edit's error as the client sees it: a table that does not check is the request's
/// fault (naming the field); a file that cannot be changed is a conflict.
fn edit_error(message: String) -> ApiError {
    if let Some(rest) = message.strip_prefix("body: webhooks[0].") {
        let field = rest.split(':').next().unwrap_or("");
        return ApiError::bad_request(rest.to_owned(), Some(field));
    }
    ApiError::WebhooksReadOnly { message }
}

/// `POST /admin/webhooks`.
pub async fn add(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hub = state.webhooks()?;
    let bytes = read_body(&state, &headers, body).await?;
    let body: NewEndpoint = parse_json(&bytes)?;
    let secret = match body.secret {
        Some(s) => s,
        None => Secret::generate().map_err(|e| ApiError::Internal {
            message: format!("cannot draw a webhook secret: {e}"),
        })?,
    };
    let id = match body.id {
        Some(id) => id,
        None => {
            // Short and path-safe: the URL would need escaping in the routes' paths.
            let random = Secret::generate().map_err(|e| ApiError::Internal {
                message: format!("cannot draw an endpoint id: {e}"),
            })?;
            let digits: String = random
                .trim_start_matches("whsec_")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect();
            format!("ep_{digits}")
        }
    };
    let config = WebhookConfig {
        id: Some(id.clone()),
        url: body.url,
        secret: secret.clone(),
        models: body.models,
        events: body.events,
        allow_private: body.allow_private,
        disabled: false,
        disabled_reason: None,
        previous_secret: None,
        previous_secret_until: None,
    };
    super::endpoints::endpoints(
        std::slice::from_ref(&config),
        hub.settings().timeout,
        "body",
    )
    .map_err(edit_error)?;
    hub.edit(Edit::Add(config)).await.map_err(edit_error)?;
    let endpoint = hub.endpoint(&id).ok_or_else(|| ApiError::Internal {
        message: format!("the endpoint {id:?} was written but is not in force"),
    })?;
    let mut out = endpoint_json(&endpoint, 0, 0);
    out["secret"] = serde_json::Value::String(secret);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

fn known(state: &AppState, key: &str) -> Result<(), ApiError> {
    state
        .webhooks()?
        .endpoint(key)
        .map(|_| ())
        .ok_or_else(|| ApiError::UnknownWebhook {
            key: key.to_owned(),
        })
}

async fn set_disabled(state: &AppState, key: String, disabled: bool) -> Result<Response, ApiError> {
    known(state, &key)?;
    let hub = state.webhooks()?;
    let reason = disabled.then(|| "disabled through the admin API".to_owned());
    hub.edit(Edit::SetDisabled {
        key: key.clone(),
        disabled,
        reason,
    })
    .await
    .map_err(edit_error)?;
    let endpoint = hub
        .endpoint(&key)
        .ok_or_else(|| ApiError::UnknownWebhook { key: key.clone() })?;
    let stats = state.store()?.outbox_stats().await?;
    Ok(Json(endpoint_json(
        &endpoint,
        count(&stats.pending, &key),
        count(&stats.dead, &key),
    ))
    .into_response())
}

/// `POST /admin/webhooks/{id}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, key, true).await
}

/// `POST /admin/webhooks/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, key, false).await
}

/// The body of `POST /admin/webhooks/{id}/rotate` (optional; no `Debug`: it holds a secret).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    #[serde(default, deserialize_with = "present")]
    secret: Option<String>,
}

/// `POST /admin/webhooks/{id}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    known(&state, &key)?;
    let hub = state.webhooks()?;
    let rotation: Rotation = body_or_default(&state, &headers, body).await?;
    let secret = match rotation.secret {
        Some(s) => {
            Secret::parse(&s)
                .map_err(|e| ApiError::bad_request(format!("secret: {e}"), Some("secret")))?;
            s
        }
        None => Secret::generate().map_err(|e| ApiError::Internal {
            message: format!("cannot draw a webhook secret: {e}"),
        })?,
    };
    let overlap = chrono::Duration::from_std(hub.settings().rotation_overlap)
        .unwrap_or(chrono::Duration::days(1));
    let until = chrono::Utc::now() + overlap;
    hub.edit(Edit::Rotate {
        key: key.clone(),
        secret: secret.clone(),
        until,
    })
    .await
    .map_err(edit_error)?;
    Ok(Json(json!({
        "id": key,
        "secret": secret,
        "previous_secret_until": until,
    }))
    .into_response())
}

/// `GET /admin/webhooks/{id}/dead-letters`: `?limit=` (default 100, at most 1000) and
/// `?after=` (a sequence: the page after it).
pub async fn dead_letters(
    State(state): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let store = state.store()?;
    let (mut limit, mut after) = (100usize, None);
    for (name, value) in crate::http::query_pairs(query.as_deref())? {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIST).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            format!("limit: a whole number from 1 to {MAX_LIST}, got {value:?}"),
                            Some("limit"),
                        )
                    })?;
            }
            "after" => {
                after = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        format!("after: a message sequence, got {value:?}"),
                        Some("after"),
                    )
                })?);
            }
            other => {
                return Err(ApiError::bad_request(
                    format!("unknown query parameter {other:?} (known: limit, after)"),
                    Some(other),
                ));
            }
        }
    }
    let list = store
        .dead_letters(Some(key.clone()), after.map(|s| (key.clone(), s)), limit)
        .await?;
    let next = (list.len() == limit)
        .then(|| list.last().map(|d| d.message.seq))
        .flatten();
    let items: Vec<serde_json::Value> = list
        .iter()
        .map(|d| {
            json!({
                "seq": d.message.seq,
                "message_id": d.message.id,
                "type": d.message.transition.as_str(),
                "entity": d.message.entity,
                "model": d.message.score.model,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "dead_at_ms": d.dead_at_ms,
                "at_ms": d.message.at_ms,
            })
        })
        .collect();
    Ok(Json(json!({"dead_letters": items, "next_after": next})).into_response())
}

/// The body of `POST /admin/webhooks/{id}/dead-letters/replay` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    #[serde(default, deserialize_with = "whole_numbers")]
    seqs: Option<Vec<u64>>,
}

/// Sequences as JSON numbers: `7` or `7.0` (JSON does not tell them apart).
fn whole_numbers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    let numbers: Option<Vec<serde_json::Number>> = Option::deserialize(d)?;
    numbers
        .map(|list| {
            list.iter()
                .map(|n| {
                    n.as_u64()
                        .or_else(|| {
                            n.as_f64()
                                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                                .map(|f| f as u64)
                        })
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!("{n} is not a message sequence"))
                        })
                })
                .collect()
        })
        .transpose()
}

/// `POST /admin/webhooks/{id}/dead-letters/replay`.
pub async fn replay(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = state.store()?;
    let request: Replay = body_or_default(&state, &headers, body).await?;
    let seqs = request.seqs;
    let moved = store.replay(key, seqs, crate::http::now_ms()).await?;
    let n = moved.len();
    state.webhooks()?.replay(moved);
    Ok(Json(json!({"replayed": n})).into_response())
}
