//! The HTTP surface: [`app`] builds the router (tests call it with `oneshot`, no socket).
//!
//! | route | key | answer |
//! | --- | --- | --- |
//! | `POST /v1/score/{model}` | client | one entity's score, grade, sales-ready flag and reasons (`?reasons=false` to skip them); through the routing table when `{model}` is a route |
//! | `POST /v1/score/{model}/batch` | client | `{"entities": [...]}` → `{"model", "results": [...]}`, at most `max_batch` entities (routed: each result names its model) |
//! | `GET /v1/models` | client | the models served (name, task, version, kind, inputs, thresholds in force, validation figures) and the routing tables |
//! | `GET /v1/thresholds/{model}` | client | cut-offs for a sales capacity (`?capacity_per_week=N`) from the bundle's held-out predictions |
//! | `GET /v1/drift/{model}` | client | what the served model scored over the drift window (the last hour by default) against its training distribution: PSI, share missing, unknown levels |
//! | `GET /v1/models/{model}/health` | client | the served version's held-out curves (ROC, gains, calibration), conversion by score decile and by a profile field (`?by=`) |
//! | `GET /v1/models/{model}/versions` | client | the model's versions in the registry and its log (promotions, reverts, the publish gate's refusals, thresholds set) |
//! | `POST /v1/thresholds/{model}/preview` | client | what proposed thresholds (by probability or leads a week) would give; nothing written |
//! | `GET /v1/entities/{id}/timeline` | client | a stored entity's latest events and its score just after each |
//! | `POST /admin/reload` | admin | re-reads the registry and the thresholds file now; says what changed |
//! | `PUT /admin/thresholds/{model}` | admin | saves a model's thresholds into the thresholds file, applies and logs them |
//! | `POST /admin/models/{model}/promote`, `.../revert` | admin | changes the live version (under the registry's lock) and reloads |
//! | `GET /console` | none | the sales-ops console ([`crate::console`]); it asks for a key and calls the routes above |
//! | `GET /healthz` | none | `200 {"status":"ok"}` while the process is up |
//! | `GET /readyz` | none | `200` with the models once the registry's first load has ended with one loaded, else `503` |
//! | `GET /metrics` | client (none with `metrics_public`) | Prometheus text ([`crate::metrics`]) |
//! | `GET /openapi.json` | none | the OpenAPI document of this API (`serving/openapi.json`, with the served models' entity form and `max_batch`) |
//!
//! `{model}` is a served model's name (`propensity`, `churn`, `propensity-enterprise`, ...)
//! or, for the score routes, a route of the routing table ([`crate::routing`]), which picks
//! the model of each entity by a profile field; every answer names the model and version
//! that scored, and a routed one says which rule chose it and why. Every error is the JSON
//! body of [`ApiError`].
//!
//! A route's key is checked before its body is read; an address that sends too many missing
//! or wrong keys is answered 429 for a while ([`crate::auth::AuthThrottle`]). Bodies are read
//! within `body_timeout`; bodies over [`INLINE_BODY_MAX_BYTES`] are parsed and checked on the
//! blocking pool. Connection limits and timeouts are [`crate::serve`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use models::bundle::Thresholds;
use models::capacity::{CapacityRow, HeldOutScores};

use crate::auth::Scope;
use crate::entities;
use crate::error::ApiError;
use crate::model::{EntityScore, LoadedModel, ScoreOptions};
use crate::request::{BatchRequest, CheckContext, CheckedEntity, EntityRequest, parse_json};
use crate::routing::RouteChoice;
use crate::state::{AppState, Served, ServedModel};
use crate::webhooks;
use crate::{console, tuning, versions};

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The service's router.
///
/// Routes come in three groups by the key they need; the key is checked by a layer before
/// the handler runs, so before a byte of the body is read (a keyless client cannot make the
/// server buffer bodies), and a route added to a group inherits its check.
pub fn app(state: AppState) -> Router {
    let mut client = Router::new()
        .route("/v1/score/{model}", post(score_one))
        .route("/v1/score/{model}/batch", post(score_batch))
        .route("/v1/models", get(list_models))
        .route("/v1/thresholds/{model}", get(thresholds_for_capacity))
        .route("/v1/drift/{model}", get(drift))
        .route("/v1/events", post(entities::post_events))
        .route("/v1/outcomes", post(entities::post_outcomes))
        .route(
            "/v1/entities/{id}",
            get(entities::get_entity)
                .put(entities::put_entity)
                .patch(entities::patch_entity)
                .delete(entities::delete_entity),
        )
        .route(
            "/v1/entities/{id}/score/{model}",
            get(entities::score_stored),
        )
        .route("/v1/leads/top/{model}", get(entities::top))
        .route("/v1/entities/{id}/timeline", get(entities::timeline))
        .route("/v1/models/{model}/health", get(versions::health))
        .route("/v1/models/{model}/versions", get(versions::versions))
        .route("/v1/thresholds/{model}/preview", post(tuning::preview));
    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/console", get(console::index))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::style));
    if state.limits().metrics_public {
        public = public.route("/metrics", get(metrics));
    } else {
        client = client.route("/metrics", get(metrics));
    }
    let client = client.route_layer(middleware::from_fn_with_state(
        (state.clone(), Scope::Client),
        require_key,
    ));
    let admin = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/store/reclaim", post(entities::reclaim))
        .route("/admin/store/sweep", post(entities::sweep_now))
        .route("/admin/store/export", post(entities::export))
        .route(
            "/admin/thresholds/{model}",
            axum::routing::put(tuning::save),
        )
        .route("/admin/models/{model}/promote", post(versions::promote))
        .route("/admin/models/{model}/revert", post(versions::revert))
        .route(
            "/admin/webhooks",
            get(webhooks::routes::list).post(webhooks::routes::add),
        )
        .route(
            "/admin/webhooks/{id}/disable",
            post(webhooks::routes::disable),
        )
        .route(
            "/admin/webhooks/{id}/enable",
            post(webhooks::routes::enable),
        )
        .route(
            "/admin/webhooks/{id}/rotate",
            post(webhooks::routes::rotate),
        )
        .route(
            "/admin/webhooks/{id}/dead-letters",
            get(webhooks::routes::dead_letters),
        )
        .route(
            "/admin/webhooks/{id}/dead-letters/replay",
            post(webhooks::routes::replay),
        )
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Scope::Admin),
            require_key,
        ));
    Router::new()
        .merge(client)
        .merge(admin)
        .merge(public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The key check in front of a group of routes.
async fn require_key(
    State((state, scope)): State<(AppState, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match state.authorize(request.headers(), peer, scope) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The metrics label of a request path: its route template, or `other`.
fn route_label(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "score", _] => "/v1/score/{model}",
        ["v1", "score", _, "batch"] => "/v1/score/{model}/batch",
        ["v1", "models"] => "/v1/models",
        ["v1", "thresholds", _] => "/v1/thresholds/{model}",
        ["v1", "drift", _] => "/v1/drift/{model}",
        ["v1", "events"] => "/v1/events",
        ["v1", "outcomes"] => "/v1/outcomes",
        ["v1", "entities", _] => "/v1/entities/{id}",
        ["v1", "entities", _, "score", _] => "/v1/entities/{id}/score/{model}",
        ["v1", "leads", "top", _] => "/v1/leads/top/{model}",
        ["v1", "entities", _, "timeline"] => "/v1/entities/{id}/timeline",
        ["v1", "models", _, "health"] => "/v1/models/{model}/health",
        ["v1", "models", _, "versions"] => "/v1/models/{model}/versions",
        ["v1", "thresholds", _, "preview"] => "/v1/thresholds/{model}/preview",
        ["admin", "thresholds", _] => "/admin/thresholds/{model}",
        ["admin", "models", _, "promote"] => "/admin/models/{model}/promote",
        ["admin", "models", _, "revert"] => "/admin/models/{model}/revert",
        ["console"] => "/console",
        ["console", _] => "/console/{file}",
        ["admin", "reload"] => "/admin/reload",
        ["admin", "store", "reclaim"] => "/admin/store/reclaim",
        ["admin", "store", "sweep"] => "/admin/store/sweep",
        ["admin", "store", "export"] => "/admin/store/export",
        ["admin", "webhooks"] => "/admin/webhooks",
        ["admin", "webhooks", _, "disable"] => "/admin/webhooks/{id}/disable",
        ["admin", "webhooks", _, "enable"] => "/admin/webhooks/{id}/enable",
        ["admin", "webhooks", _, "rotate"] => "/admin/webhooks/{id}/rotate",
        ["admin", "webhooks", _, "dead-letters"] => "/admin/webhooks/{id}/dead-letters",
        ["admin", "webhooks", _, "dead-letters", "replay"] => {
            "/admin/webhooks/{id}/dead-letters/replay"
        }
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        _ => "other",
    }
}

/// Counts and times every request; logs it (route, status, time: nothing from its content)
/// at debug level.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(request.uri().path());
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state.metrics().record(route, status, elapsed);
    tracing::debug!(
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// A query string's `key=value` pairs, percent-decoded (`%2B` is `+`; a `+` stays a `+`,
/// as RFC 3986 has it, so `1e+2` and `1e%2B2` are the same number).
/// The value of the query's one parameter `name` (absent: `None`); any other parameter is
/// refused by name.
pub(crate) fn one_query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let mut value = None;
    for (key, v) in query_pairs(query)? {
        if key != name {
            return Err(ApiError::bad_request(
                format!("unknown query parameter {key:?}; the parameter is `{name}`"),
                Some(&key),
            ));
        }
        value = Some(v);
    }
    Ok(value)
}

pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| {
                ApiError::bad_request(
                    format!("the query part {part:?} is not UTF-8 once percent-decoded"),
                    None,
                )
            })
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// `?reasons=true|false` (default true); any other parameter is refused.
pub(crate) fn wants_reasons(query: Option<&str>) -> Result<bool, ApiError> {
    let mut reasons = true;
    for (key, value) in query_pairs(query)? {
        match (key.as_str(), value.as_str()) {
            ("reasons", "true" | "1") => reasons = true,
            ("reasons", "false" | "0") => reasons = false,
            ("reasons", other) => {
                return Err(ApiError::bad_request(
                    format!("reasons: expected true or false, got {other:?}"),
                    Some("reasons"),
                ));
            }
            (other, _) => {
                return Err(ApiError::bad_request(
                    format!("unknown query parameter {other:?}; the only one is `reasons`"),
                    Some(other),
                ));
            }
        }
    }
    Ok(reasons)
}

/// The body of a JSON request: `Content-Type` JSON (or none), no `Content-Encoding` but
/// `identity`, at most `max_body_bytes` (refused from `Content-Length` before reading when
/// it says so), received within `body_timeout`. Called after the key check.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType {
                message: "send the body as JSON with `Content-Type: application/json`".into(),
            });
        }
    }
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("?").trim();
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "Content-Encoding {coding:?} is not supported: send the body uncompressed"
                ),
            });
        }
    }
    let limits = state.limits();
    let limit = limits.max_body_bytes;
    let too_large = || ApiError::PayloadTooLarge {
        message: format!("the body is larger than {limit} bytes"),
        field: None,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::RequestTimeout {
            message: format!(
                "the body did not arrive within {} s",
                limits.body_timeout.as_secs_f64()
            ),
        }),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(
                    format!("cannot read the body: {e}"),
                    None,
                ))
            }
        }
    }
}

/// The model named `name`, once the server is ready.
pub(crate) fn model_for(state: &AppState, name: &str) -> Result<ServedModel, ApiError> {
    let served = state.ready()?;
    served
        .get(name)
        .cloned()
        .ok_or_else(|| unknown_model(&served, name))
}

pub(crate) fn unknown_model(served: &Served, name: &str) -> ApiError {
    let routes: Vec<&str> = served
        .routing()
        .routes()
        .map(|r| r.name().as_str())
        .collect();
    let routes = if routes.is_empty() {
        String::new()
    } else {
        format!("; the routes are: {}", routes.join(", "))
    };
    ApiError::UnknownModel {
        name: name.chars().take(64).collect(),
        served: format!("{}{routes}", served.names()),
    }
}

/// Bodies up to this size are parsed and checked on the async worker; larger ones (up to a
/// few milliseconds of work at 1 MiB) on the blocking pool, so they delay no other request.
pub const INLINE_BODY_MAX_BYTES: usize = 64 * 1024;

/// Runs `work` inline for a small body, on the blocking pool for a large one.
pub(crate) async fn off_worker_if_large<T: Send + 'static>(
    body_len: usize,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if body_len <= INLINE_BODY_MAX_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal {
            message: format!("request task failed: {e}"),
        })?
}

/// The JSON answer `render` makes of `payload`, serialised on the blocking pool when the
/// request was large (an answer echoing thousands of ignored field names).
async fn json_response<T: Send + 'static>(
    body_len: usize,
    payload: T,
    render: impl FnOnce(T) -> Response + Send + 'static,
) -> Result<Response, ApiError> {
    off_worker_if_large(body_len, move || Ok(render(payload))).await
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Which model answered: its name, task and version.
#[derive(Debug, Serialize)]
pub struct ModelRef<'a> {
    pub name: &'a str,
    pub task: &'static str,
    pub version: &'a str,
}

impl<'a> ModelRef<'a> {
    /// The reference to a loaded model (the Python package's answers name it as the server's do).
    pub fn of(model: &'a LoadedModel) -> Self {
        ModelRef {
            name: model.name().as_str(),
            task: model.task().as_str(),
            version: model.version(),
        }
    }
}

impl<'a> From<&'a ServedModel> for ModelRef<'a> {
    fn from(m: &'a ServedModel) -> Self {
        ModelRef::of(&m.model)
    }
}

/// The body of a score route's answer for one entity.
#[derive(Debug, Serialize)]
pub struct ScoreResponse<'a> {
    pub model: ModelRef<'a>,
    /// How the routing table chose the model (routed requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a RouteChoice>,
    #[serde(flatten)]
    pub score: &'a EntityScore,
}

#[derive(Debug, Serialize)]
struct BatchResponse<'a> {
    model: ModelRef<'a>,
    results: Vec<EntityScore>,
}

/// A routed batch: each result names its model and why.
#[derive(Debug, Serialize)]
struct RoutedBatchResponse<'a> {
    route: &'a str,
    results: Vec<ScoreResponse<'a>>,
}

/// What a score route's `{model}` names.
enum Target {
    Model(ServedModel),
    /// A route of the routing table in force, in this snapshot.
    Route(Arc<Served>, String),
}

/// What both score routes check before reading the body (the key was checked by the
/// route's layer): the model or route, and the query. Then the body. Returns the target,
/// whether reasons are wanted, and the body.
async fn checked_request(
    state: &AppState,
    name: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Target, bool, Bytes), ApiError> {
    let served = state.ready()?;
    let target = if served.routing().get(name).is_some() {
        Target::Route(Arc::clone(&served), name.to_owned())
    } else {
        Target::Model(
            served
                .get(name)
                .cloned()
                .ok_or_else(|| unknown_model(&served, name))?,
        )
    };
    let reasons = wants_reasons(query.as_deref())?;
    let body = read_body(state, headers, body).await?;
    Ok((target, reasons, body))
}

/// The model the route `name` of `served` picks for `request`, the choice, and the entity
/// checked against that model. `at` prefixes paths in errors (`entities[3].`).
fn route_entity(
    served: &Served,
    name: &str,
    request: EntityRequest,
    clock: RequestClock,
    at: &str,
) -> Result<(ServedModel, RouteChoice, CheckedEntity), ApiError> {
    let route = served
        .routing()
        .get(name)
        .ok_or_else(|| ApiError::Internal {
            message: format!("the route {name} vanished from its snapshot"),
        })?;
    let (fields, fields_name) = match (&request.profile, &request.row) {
        (Some(profile), _) => (Some(profile), "profile"),
        (None, Some(row)) => (Some(row), "row"),
        (None, None) => (None, "profile"),
    };
    let (model_name, choice) = route.choose(fields, at, fields_name)?;
    // The snapshot's routing fits its models (checked whenever either changes).
    let model = served
        .get(model_name.as_str())
        .cloned()
        .ok_or_else(|| ApiError::Internal {
            message: format!("the route {name} names {model_name}, which is not served"),
        })?;
    let entity = request.to_history(&clock.with_model(&model.model), at)?;
    Ok((model, choice, entity))
}

/// The clock a request's times are checked against, read once per request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestClock {
    pub(crate) now_ms: i64,
    pub(crate) allowed_skew_ms: i64,
}

impl RequestClock {
    pub(crate) fn now(state: &AppState) -> Self {
        RequestClock {
            now_ms: now_ms(),
            allowed_skew_ms: i64::try_from(state.limits().allowed_skew.as_millis())
                .unwrap_or(i64::MAX),
        }
    }

    fn with_model(self, model: &LoadedModel) -> CheckContext<'_> {
        CheckContext {
            plan: &model.manifest().feature_plan,
            profile_index: model.profile_index(),
            now_ms: self.now_ms,
            allowed_skew_ms: self.allowed_skew_ms,
        }
    }
}

async fn score_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, reasons, body) = checked_request(&state, &name, query, &headers, body).await?;
    let limits = state.limits();
    let body_len = body.len();
    let clock = RequestClock::now(&state);
    let (served, route, entity) = match target {
        Target::Model(served) => {
            let model = Arc::clone(&served.model);
            let entity = off_worker_if_large(body_len, move || {
                let request: EntityRequest = parse_json(&body)?;
                request.to_history(&clock.with_model(&model), "")
            })
            .await?;
            (served, None, entity)
        }
        Target::Route(snapshot, name) => {
            let (served, choice, entity) = off_worker_if_large(body_len, move || {
                let request: EntityRequest = parse_json(&body)?;
                route_entity(&snapshot, &name, request, clock, "")
            })
            .await?;
            (served, Some(choice), entity)
        }
    };
    let options = ScoreOptions {
        reasons,
        max_reasons: limits.max_reasons,
        small: limits.inline_max_entities >= 1 && body_len <= INLINE_BODY_MAX_BYTES,
    };
    let mut scores = served
        .model
        .score(vec![entity], Arc::clone(&served.thresholds), options)
        .await?;
    let score = scores.pop().ok_or_else(|| ApiError::Internal {
        message: "the model returned no score".into(),
    })?;
    json_response(
        body_len,
        (served, route, score),
        |(served, route, score)| {
            Json(ScoreResponse {
                model: ModelRef::from(&served),
                route: route.as_ref(),
                score: &score,
            })
            .into_response()
        },
    )
    .await
}

/// A batch body: parsed, its size checked against `max_batch` (a 400 naming `entities`, as
/// the store's routes answer too many items: the document's `maxItems`, not the body limit).
fn parse_batch(body: &[u8], max_batch: usize) -> Result<BatchRequest, ApiError> {
    let request: BatchRequest = parse_json(body)?;
    let n = request.entities.len();
    if n > max_batch {
        return Err(ApiError::bad_request(
            format!("entities: {n} entities, a batch may have at most {max_batch}"),
            Some("entities"),
        ));
    }
    Ok(request)
}

async fn score_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, reasons, body) = checked_request(&state, &name, query, &headers, body).await?;
    let limits = state.limits();
    let body_len = body.len();
    let max_batch = limits.max_batch;
    let clock = RequestClock::now(&state);
    let options = |n: usize| ScoreOptions {
        reasons,
        max_reasons: limits.max_reasons,
        small: n <= limits.inline_max_entities && body_len <= INLINE_BODY_MAX_BYTES,
    };
    let (snapshot, name) = match target {
        Target::Model(served) => {
            let model = Arc::clone(&served.model);
            let entities = off_worker_if_large(body_len, move || {
                let ctx = clock.with_model(&model);
                parse_batch(&body, max_batch)?
                    .entities
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| e.to_history(&ctx, &format!("entities[{i}].")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
            let n = entities.len();
            let results = served
                .model
                .score(entities, Arc::clone(&served.thresholds), options(n))
                .await?;
            return json_response(body_len, (served, results), |(served, results)| {
                let model = ModelRef::from(&served);
                Json(BatchResponse { model, results }).into_response()
            })
            .await;
        }
        Target::Route(snapshot, name) => (snapshot, name),
    };
    let route_name = name.clone();
    let routed = off_worker_if_large(body_len, move || {
        parse_batch(&body, max_batch)?
            .entities
            .into_iter()
            .enumerate()
            .map(|(i, e)| route_entity(&snapshot, &name, e, clock, &format!("entities[{i}].")))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    // One scoring job per model, in the order the models first appear; the answers go back
    // to the entities' places.
    let mut groups: Vec<(ServedModel, Vec<usize>, Vec<CheckedEntity>)> = Vec::new();
    let mut choices = Vec::with_capacity(routed.len());
    for (i, (served, choice, entity)) in routed.into_iter().enumerate() {
        let at = groups
            .iter()
            .position(|(g, _, _)| Arc::ptr_eq(&g.model, &served.model));
        let group = match at {
            Some(g) => g,
            None => {
                groups.push((served, Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        groups[group].1.push(i);
        groups[group].2.push(entity);
        choices.push((group, choice));
    }
    let mut scores: Vec<Option<EntityScore>> = Vec::new();
    scores.resize_with(choices.len(), || None);
    for (served, places, entities) in &mut groups {
        let n = entities.len();
        let results = served
            .model
            .score(
                std::mem::take(entities),
                Arc::clone(&served.thresholds),
                options(n),
            )
            .await?;
        for (&place, score) in places.iter().zip(results) {
            scores[place] = Some(score);
        }
    }
    let scores = scores
        .into_iter()
        .map(|s| {
            s.ok_or_else(|| ApiError::Internal {
                message: "a model returned fewer scores than entities".into(),
            })
        })
        .collect::<Result<Vec<EntityScore>, _>>()?;
    let models: Vec<ServedModel> = groups.into_iter().map(|(m, _, _)| m).collect();
    json_response(
        body_len,
        (route_name, models, choices, scores),
        |(route_name, models, choices, scores)| {
            let results = choices
                .iter()
                .zip(&scores)
                .map(|((group, choice), score)| ScoreResponse {
                    model: ModelRef::from(&models[*group]),
                    route: Some(choice),
                    score,
                })
                .collect();
            Json(RoutedBatchResponse {
                route: &route_name,
                results,
            })
            .into_response()
        },
    )
    .await
}

async fn list_models(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let served = state.served();
    let models: Vec<serde_json::Value> = served
        .models()
        .map(|m| {
            let manifest = m.model.manifest();
            let plan = &manifest.feature_plan;
            serde_json::json!({
                "name": m.model.name(),
                "task": manifest.task.as_str(),
                "version": manifest.version,
                "kind": manifest.model_kind,
                "created_at": manifest.created_at,
                "form": plan.form(),
                "profile_fields": plan.profile_fields(),
                "event_types": plan.data().event_types,
                "channels": plan.data().channels,
                "thresholds": *m.thresholds,
                // Ranking from the model's own held-out scores (calibration is monotone);
                // calibration error from the cross-fitted calibrated probabilities, the
                // held-out figure of the calibrated output (two calibrators on two halves
                // would blur a ranking figure: 0.749 against 0.808 seen on one run).
                "validation": validation_json(manifest),
            })
        })
        .collect();
    let routes: Vec<serde_json::Value> = served
        .routing()
        .routes()
        .map(crate::routing::Route::describe)
        .collect();
    Ok(Json(
        serde_json::json!({ "models": models, "routes": routes }),
    ))
}

/// A manifest's held-out figures as `/v1/models` and the health route give them: ranking
/// from the model's own held-out scores, calibration error of the cross-fitted calibrated
/// probabilities.
pub(crate) fn validation_json(manifest: &models::bundle::Manifest) -> serde_json::Value {
    serde_json::json!({
        "scheme": manifest.validation.scheme,
        "roc_auc": manifest.validation.raw.roc_auc,
        "pr_auc": manifest.validation.raw.pr_auc,
        "ece": manifest.validation.calibrated.ece,
        "rows": manifest.validation.raw.rows,
    })
}

/// `GET /v1/thresholds/{task}` query: `capacity_per_week` and `volume_per_week`, both
/// optional positive numbers.
fn capacity_query(query: Option<&str>) -> Result<(Option<f64>, Option<f64>), ApiError> {
    let (mut capacity, mut volume) = (None, None);
    for (key, value) in query_pairs(query)? {
        let key = key.as_str();
        let slot = match key {
            "capacity_per_week" => &mut capacity,
            "volume_per_week" => &mut volume,
            other => {
                return Err(ApiError::bad_request(
                    format!(
                        "unknown query parameter {other:?}; the parameters are \
                         `capacity_per_week` and `volume_per_week`"
                    ),
                    Some(other),
                ));
            }
        };
        let number = value
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("{key}: expected a positive number of leads a week, got {value:?}"),
                    Some(key),
                )
            })?;
        *slot = Some(number);
    }
    Ok((capacity, volume))
}

/// What the thresholds of a model mean for a sales team's week, from its bundle's held-out
/// predictions: the cut-off for `capacity_per_week` calls (when asked), the sales-ready
/// cut-off in force, and each grade band in force.
async fn thresholds_for_capacity(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let served = model_for(&state, &name)?;
    let (capacity, volume) = capacity_query(query.as_deref())?;
    let model = &served.model;
    let held = model
        .held_out()
        .ok_or_else(|| ApiError::no_held_out(model))?;
    let volume_per_week = held
        .resolve_volume(volume)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("volume_per_week")))?;
    let at_capacity = capacity
        .map(|c| held.at_capacity(c, volume_per_week))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("capacity_per_week")))?;
    Ok(Json(thresholds_answer(
        ModelRef::from(&served),
        held,
        volume_per_week,
        at_capacity,
        &served.thresholds,
    )))
}

/// What `thresholds` mean for a sales team's week on `held`, the model's held-out
/// predictions (the body of `GET /v1/thresholds/{model}` and of its preview, and the Python
/// package's capacity table).
pub fn thresholds_answer(
    model: ModelRef<'_>,
    held: &HeldOutScores,
    volume_per_week: f64,
    at_capacity: Option<CapacityRow>,
    thresholds: &Thresholds,
) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "held_out": {
            "rows": held.len(),
            "conversions": held.positives(),
            "weeks_covered": held.weeks(),
        },
        "volume_per_week": volume_per_week,
        "capacity": at_capacity,
        "thresholds": thresholds,
        "sales_ready": held.at_threshold(thresholds.sales_ready, volume_per_week),
        "grades": held.grade_table(&thresholds.grades, volume_per_week),
    })
}

async fn drift(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let served = model_for(&state, &name)?;
    let model = &served.model;
    let monitor = model.drift().ok_or_else(|| ApiError::NoDriftReference {
        model: model.name().to_string(),
        version: model.version().to_owned(),
    })?;
    Ok(Json(serde_json::json!({
        "model": ModelRef::from(&served),
        "window_seconds": monitor.window().as_secs(),
        "training_rows": monitor.reference().rows,
        "drift": monitor.report(),
    })))
}

async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(reloader) = state.reloader() else {
        return Err(ApiError::NotReady {
            reason: "this server has no registry to reload from".into(),
        });
    };
    let state2 = state.clone();
    let report = tokio::task::spawn_blocking(move || reloader.reload_once(&state2))
        .await
        .map_err(|e| ApiError::Internal {
            message: format!("reload task failed: {e}"),
        })?;
    Ok(Json(report).into_response())
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize)]
struct Ready {
    status: &'static str,
    models: Vec<String>,
}

/// Keyless: a load balancer's probe. While nothing is served, or the first pass over the
/// registry is still loading models, it says so without the reason (which names files of
/// the server); the server's log gives it.
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.first_load_pending() {
        return Err(ApiError::NotReady {
            reason: "the registry's models are still loading".into(),
        });
    }
    let served = state.ready().map_err(|_| ApiError::NotReady {
        reason: "no model is served yet; the server's log says why".into(),
    })?;
    // A store that does not answer (a database down) makes the replica unready until it
    // answers again: the load balancer sends its traffic to the others meanwhile.
    if !state.store_answers().await {
        return Err(ApiError::NotReady {
            reason: "the entity store does not answer; the server's log says why".into(),
        });
    }
    Ok(Json(Ready {
        status: "ready",
        models: served
            .models()
            .map(|m| format!("{}/{}", m.model.name(), m.model.version()))
            .collect(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let served = state.served();
    let figures: Vec<_> = served
        .models()
        .map(|m| crate::metrics::ModelFigures {
            model: m.model.name().as_str(),
            task: m.model.task().as_str(),
            version: m.model.version(),
            kind: model_kind_name(m),
            scores: &m.model.scores,
            drift: m.model.drift().map(|d| d.report()),
        })
        .collect();
    let mut text = state.metrics().render(&figures);
    if let Ok(store) = state.store() {
        let stats = store.stats().await.ok();
        state.store_metrics().render(&mut text, stats);
    }
    if let Ok(hub) = state.webhooks() {
        hub.render(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn model_kind_name(m: &ServedModel) -> &'static str {
    match m.model.kind() {
        models::bundle::ModelKind::Gbdt => "gbdt",
        models::bundle::ModelKind::Logistic => "logistic",
        models::bundle::ModelKind::GbdtOnLinear => "gbdt_on_linear",
    }
}

/// The OpenAPI document of this server: `serving/openapi.json` with what the deployment
/// decides filled in, so that every request valid by the document is one this server
/// accepts: the entity's form (event or tabular) of the models it serves, its `max_batch`,
/// and the names of its models and routes.
async fn openapi(State(state): State<AppState>) -> Response {
    static TEMPLATE: std::sync::OnceLock<Option<serde_json::Value>> = std::sync::OnceLock::new();
    let Some(template) = TEMPLATE.get_or_init(|| serde_json::from_str(OPENAPI_JSON).ok()) else {
        return ApiError::Internal {
            message: "serving/openapi.json is not JSON".into(),
        }
        .into_response();
    };
    let mut doc = template.clone();
    let served = state.served();
    let forms: std::collections::BTreeSet<&'static str> = served
        .models()
        .map(|m| match m.model.manifest().feature_plan.form() {
            features::spec::Form::Events => "EventEntity",
            features::spec::Form::Tabular => "TabularEntity",
        })
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    if let [form] = forms.into_iter().collect::<Vec<_>>()[..] {
        let description = schemas["Entity"]["description"].clone();
        schemas["Entity"] = serde_json::json!({
            "description": description,
            "$ref": format!("#/components/schemas/{form}"),
        });
    }
    let max_batch = state.limits().max_batch;
    schemas["Batch"]["properties"]["entities"]["maxItems"] = max_batch.into();
    schemas["EventsRequest"]["properties"]["events"]["maxItems"] = max_batch.into();
    schemas["OutcomesRequest"]["properties"]["outcomes"]["maxItems"] = max_batch.into();
    // The names this server answers to: its models, and for the score routes its routes.
    let models: Vec<String> = served
        .models()
        .map(|m| m.model.name().to_string())
        .collect();
    let mut targets = models.clone();
    targets.extend(served.routing().routes().map(|r| r.name().to_string()));
    targets.sort();
    targets.dedup();
    let parameters = &mut doc["components"]["parameters"];
    for (parameter, names) in [("model", models), ("target", targets)] {
        if !names.is_empty() {
            parameters[parameter]["schema"]["enum"] = names.into();
        }
    }
    Json(doc).into_response()
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().chars().take(200).collect(),
    }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_follow_the_templates() {
        assert_eq!(route_label("/v1/score/propensity"), "/v1/score/{model}");
        assert_eq!(
            route_label("/v1/score/nope/batch"),
            "/v1/score/{model}/batch"
        );
        assert_eq!(route_label("/healthz"), "/healthz");
        assert_eq!(
            route_label("/v1/thresholds/churn"),
            "/v1/thresholds/{model}"
        );
        assert_eq!(route_label("/v1/score"), "other");
        assert_eq!(route_label("/admin/reload/x"), "other");
    }

    #[test]
    fn the_capacity_parameters_are_checked() {
        assert_eq!(capacity_query(None).unwrap(), (None, None));
        assert_eq!(
            capacity_query(Some("capacity_per_week=50&volume_per_week=400.5")).unwrap(),
            (Some(50.0), Some(400.5))
        );
        // Percent-decoded, and a `+` is a plus (RFC 3986), not a space.
        for query in [
            "capacity_per_week=1e%2B2",
            "capacity_per_week=1e+2",
            "capacity%5Fper_week=100",
        ] {
            assert_eq!(capacity_query(Some(query)).unwrap(), (Some(100.0), None));
        }
        assert!(capacity_query(Some("capacity_per_week=%FF")).is_err());
        for (query, field) in [
            ("capacity_per_week=0", "capacity_per_week"),
            ("capacity_per_week=NaN", "capacity_per_week"),
            ("volume_per_week=lots", "volume_per_week"),
            ("capacity=5", "capacity"),
        ] {
            let err = capacity_query(Some(query)).unwrap_err();
            assert_eq!(err.body().error.field, Some(field), "{query}");
            assert_eq!(err.kind(), crate::error::ErrorKind::BadRequest);
        }
    }

    #[test]
    fn the_reasons_parameter_is_checked() {
        assert!(wants_reasons(None).unwrap());
        assert!(!wants_reasons(Some("reasons=false")).unwrap());
        assert!(wants_reasons(Some("reasons=1")).unwrap());
        // The document says boolean: an empty value is not one.
        assert!(wants_reasons(Some("reasons=")).is_err());
        let err = wants_reasons(Some("reasons=maybe")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reasons: expected true or false, got \"maybe\""
        );
        let err = wants_reasons(Some("explain=0")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown query parameter \"explain\"")
        );
    }
}
