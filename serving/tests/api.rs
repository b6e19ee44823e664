//! The score API end to end through the router (`oneshot`, no socket), with real bundles
//! written by `leadscore-train` (`serving/tests/fixtures/`, made by
//! `scripts/make-serving-fixtures`), ONNX Runtime and the feature plan.
//!
//! Reference: for every entity the test computes the features with the bundle's plan and
//! the probability with the bundle's model in Rust (`ScoringModel`, the model math the ONNX
//! graph was exported from); the server's answer must agree to [`PROBABILITY_TOLERANCE`],
//! and its reasons must add up to the model's log-odds to [`LOG_ODDS_TOLERANCE`].

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use features::history::{DAY_MS, EntityHistory, Event, ProfileValue};
use features::plan::ProfileFeatureKind;
use features::spec::Form;
use models::bundle::{Bundle, Registry};
use models::gbdt::SplitMix64;
use models::onnx::ScoringModel;
use serde_json::{Value, json};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app};
use tower::ServiceExt as _;

use common::{copy_dir, ort_available, repo_root};

/// ONNX Runtime computes in `f32`; the reference in `f64` from the same `f32` features.
const PROBABILITY_TOLERANCE: f64 = 1e-5;
/// Reasons are computed in `f64` from the exported (f32-rounded) model part.
const LOG_ODDS_TOLERANCE: f64 = 1e-4;

const CLIENT_KEY: &str = "client-key-for-tests-0001";
const ADMIN_KEY: &str = "admin-key-for-tests-00001";

/// 2025-10-09T08:53:20Z: inside the generator's time range, in the past.
const AS_OF_MS: i64 = 1_760_000_000_000;

fn fixtures() -> PathBuf {
    repo_root().join("serving/tests/fixtures")
}

/// Copies a fixture registry into a temporary folder the test may change.
fn copy_registry(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(from, dir.path());
    dir
}

/// Installs a copy of bundle `from` as `<registry>/<task>/<version>` (the manifest's
/// version follows the folder), the way a writer does: complete in a hidden folder, then
/// renamed into place.
fn install_as(from: &Path, registry: &Path, task: &str, version: &str) -> PathBuf {
    let tmp = registry.join(task).join(format!(".tmp-{version}"));
    copy_dir(from, &tmp);
    let manifest_path = tmp.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("json");
    manifest["version"] = json!(version);
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("write");
    let target = registry.join(task).join(version);
    std::fs::rename(&tmp, &target).expect("rename");
    target
}

struct Server {
    app: Router,
    state: AppState,
    reloader: Arc<Reloader>,
    registry: tempfile::TempDir,
}

fn server_with(registry: tempfile::TempDir, thresholds: Option<PathBuf>, limits: Limits) -> Server {
    let keys = KeySet::new(&[CLIENT_KEY.into()], &[ADMIN_KEY.into()]).expect("keys");
    let state = AppState::new(limits, keys, "loading");
    let reloader = Arc::new(Reloader::new(
        Registry::new(registry.path()),
        thresholds,
        PoolConfig {
            sessions: 2,
            intra_threads: 1,
        },
    ));
    state.set_reloader(Arc::clone(&reloader));
    let report = reloader.reload_once(&state);
    assert!(report.refused.is_empty(), "{report:?}");
    Server {
        app: app(state.clone()),
        state,
        reloader,
        registry,
    }
}

fn server() -> Server {
    let limits = Limits {
        max_reasons: 1000,
        ..Limits::default()
    };
    server_with(copy_registry(&fixtures().join("registry")), None, limits)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Body,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 24).await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn post(app: &Router, uri: &str, body: &Value) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        uri,
        Some(CLIENT_KEY),
        Body::from(body.to_string()),
    )
    .await
}

/// A random entity for `bundle`'s plan: every profile field (some missing, some levels the
/// model never saw), 20 events of known and unknown types over the last 120 days.
fn random_entity(bundle: &Bundle, rng: &mut SplitMix64, i: usize) -> Value {
    let plan = &bundle.manifest().feature_plan;
    let mut fields = serde_json::Map::new();
    for field in plan.profile_fields() {
        let value = match (&field.kind, rng.next_f64()) {
            (_, u) if u < 0.1 => Value::Null,
            (ProfileFeatureKind::Numeric, u) => json!((u * 40.0 * 8.0).round() / 8.0),
            (ProfileFeatureKind::Categorical { .. }, u) if u < 0.2 => json!("never-seen-level"),
            (ProfileFeatureKind::Categorical { levels }, u) => {
                json!(levels[(u * levels.len() as f64) as usize % levels.len()])
            }
        };
        fields.insert(field.name.clone(), value);
    }
    if plan.form() == Form::Tabular {
        return json!({"id": format!("T{i}"), "row": fields});
    }
    let data = plan.data();
    let events: Vec<Value> = (0..20)
        .map(|_| {
            let age_ms = (rng.next_f64() * 120.0 * DAY_MS as f64) as i64;
            let k = (rng.next_f64() * (data.event_types.len() + 1) as f64) as usize;
            let event_type = data
                .event_types
                .get(k)
                .map_or("unknown_kind", String::as_str);
            let channel = data
                .channels
                .get((rng.next_f64() * data.channels.len() as f64) as usize);
            let valued = data.valued_event_types.iter().any(|t| t == event_type);
            json!({
                "ts": AS_OF_MS - 1 - age_ms,
                "type": event_type,
                "channel": channel,
                "value": valued.then(|| (rng.next_f64() * 500.0).round()),
            })
        })
        .collect();
    let created = AS_OF_MS - ((30.0 + rng.next_f64() * 300.0) * DAY_MS as f64) as i64;
    json!({
        "id": format!("E{i}"),
        "as_of": AS_OF_MS,
        "created_at": chrono::DateTime::from_timestamp_millis(created).expect("time").to_rfc3339(),
        "profile": fields,
        "events": events,
    })
}

/// The reference: features by the plan, probability and log-odds by the model in Rust.
fn reference(bundle: &Bundle, entity: &Value) -> (f64, f64) {
    let plan = &bundle.manifest().feature_plan;
    let fields = entity
        .get("profile")
        .or_else(|| entity.get("row"))
        .expect("fields");
    let profile = plan
        .profile_fields()
        .iter()
        .map(|f| match &fields[&f.name] {
            Value::Null => ProfileValue::Missing,
            Value::Number(n) => ProfileValue::Number(n.as_f64().expect("number")),
            Value::String(s) => ProfileValue::Text(s.clone()),
            other => panic!("unexpected {other}"),
        })
        .collect();
    let (history, cutoff) = match plan.form() {
        Form::Tabular => (
            EntityHistory {
                created_at_ms: 0,
                profile,
                events: Vec::new(),
            },
            0,
        ),
        Form::Events => {
            let created =
                chrono::DateTime::parse_from_rfc3339(entity["created_at"].as_str().expect("text"))
                    .expect("time")
                    .timestamp_millis();
            let events = entity["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| Event {
                    ts_ms: e["ts"].as_i64().expect("ts"),
                    event_type: e["type"].as_str().expect("type").to_owned(),
                    channel: e["channel"].as_str().map(str::to_owned),
                    value: e["value"].as_f64(),
                })
                .collect();
            (
                EntityHistory {
                    created_at_ms: created,
                    profile,
                    events,
                },
                AS_OF_MS,
            )
        }
    };
    let row = plan.compute(&history, cutoff).expect("features");
    let graph = bundle.explainer().model_graph();
    let logit = graph.logit(&row);
    let model = ScoringModel::new(graph, bundle.manifest().calibration.clone());
    (model.probability(&row), logit)
}

fn check_against_reference(bundle: &Bundle, entity: &Value, got: &Value, what: &str) {
    let (p, logit) = reference(bundle, entity);
    let served = got["probability"].as_f64().expect("probability");
    assert!(
        (served - p).abs() <= PROBABILITY_TOLERANCE,
        "{what}: served {served}, reference {p}"
    );
    assert_eq!(
        got["score"],
        json!((served * 100.0).round() as u64),
        "{what}"
    );
    let thresholds = &bundle.manifest().thresholds;
    assert_eq!(
        got["grade"],
        json!(thresholds.grade(served).as_str()),
        "{what}"
    );
    assert_eq!(
        got["sales_ready"],
        json!(thresholds.is_sales_ready(served)),
        "{what}"
    );
    let reasons = &got["reasons"];
    let total: f64 = ["positive", "negative"]
        .iter()
        .flat_map(|side| reasons[side].as_array().expect("reasons").iter())
        .map(|r| r["contribution"].as_f64().expect("contribution"))
        .sum::<f64>()
        + reasons["baseline_log_odds"].as_f64().expect("baseline");
    assert!(
        (total - logit).abs() <= LOG_ODDS_TOLERANCE,
        "{what}: reasons add up to {total}, the model's log-odds are {logit}"
    );
    for r in reasons["positive"].as_array().expect("positive") {
        assert!(r["contribution"].as_f64().expect("c") > 0.0, "{what}: {r}");
        assert!(
            !r["value"].as_str().expect("value").is_empty(),
            "{what}: {r}"
        );
    }
    for r in reasons["negative"].as_array().expect("negative") {
        assert!(r["contribution"].as_f64().expect("c") < 0.0, "{what}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_and_reasons_match_the_bundles_model_for_every_kind() {
    if !ort_available() {
        return;
    }
    let cases = [
        (
            "registry",
            "propensity",
            "fixture-leads-v1",
            "gbdt_on_linear",
        ),
        ("registry", "churn", "fixture-churn-v1", "logistic"),
        ("tabular", "propensity", "fixture-tabular-v1", "gbdt"),
    ];
    for (registry, task, version, kind) in cases {
        let limits = Limits {
            max_reasons: 1000,
            ..Limits::default()
        };
        let server = server_with(copy_registry(&fixtures().join(registry)), None, limits);
        let bundle =
            Bundle::load(&server.registry.path().join(task).join(version)).expect("bundle");
        assert_eq!(
            serde_json::to_value(bundle.manifest().model_kind).expect("kind"),
            json!(kind),
            "fixture {task}/{version}: rerun scripts/make-serving-fixtures"
        );
        assert!(
            bundle.has_model_digest(),
            "fixture {task}/{version} has no model_sha256: rerun scripts/make-serving-fixtures"
        );
        let mut rng = SplitMix64::new(7);
        let entities: Vec<Value> = (0..40)
            .map(|i| random_entity(&bundle, &mut rng, i))
            .collect();
        for (i, entity) in entities.iter().enumerate() {
            let (status, body) = post(&server.app, &format!("/v1/score/{task}"), entity).await;
            assert_eq!(status, StatusCode::OK, "{task} entity {i}: {body}");
            assert_eq!(
                body["model"],
                json!({"name": task, "task": task, "version": version})
            );
            assert_eq!(body["id"], entity["id"]);
            check_against_reference(&bundle, entity, &body, &format!("{task} {kind} entity {i}"));
        }
        // The batch gives the same answers in the same order, on the blocking pool.
        let (status, body) = post(
            &server.app,
            &format!("/v1/score/{task}/batch"),
            &json!({"entities": entities}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), entities.len());
        for (i, (entity, got)) in entities.iter().zip(results).enumerate() {
            assert_eq!(got["id"], entity["id"]);
            check_against_reference(&bundle, entity, got, &format!("{task} batch entity {i}"));
        }
    }
}

/// The first leads fixture entity, a fixed one.
fn lead(server: &Server) -> (Bundle, Value) {
    let bundle =
        Bundle::load(&server.registry.path().join("propensity/fixture-leads-v1")).expect("bundle");
    let mut rng = SplitMix64::new(3);
    let entity = random_entity(&bundle, &mut rng, 0);
    (bundle, entity)
}

#[tokio::test]
async fn unknown_levels_score_as_other_and_unused_fields_are_reported() {
    if !ort_available() {
        return;
    }
    let server = server();
    let (_, mut entity) = lead(&server);
    entity["profile"]["industry"] = json!("Zoology");
    let (status, a) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    entity["profile"]["industry"] = json!("Basket weaving");
    entity["profile"]["favourite_colour"] = json!("green");
    let (status, b) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(a["probability"], b["probability"]);
    assert_eq!(b["ignored_fields"], json!(["favourite_colour"]));
    assert!(a.get("ignored_fields").is_none(), "{a}");
    // Every group with a contribution is listed (max_reasons 1000): the unseen level is
    // shown as the caller sent it.
    let industry = b["reasons"]
        .as_object()
        .expect("reasons")
        .iter()
        .filter_map(|(_, side)| side.as_array())
        .flatten()
        .find(|r| r["feature"] == "industry")
        .unwrap_or_else(|| panic!("no industry reason in {b}"));
    assert_eq!(industry["value"], "Basket weaving (rare)");
    // Without reasons on request.
    let (status, c) = post(&server.app, "/v1/score/propensity?reasons=false", &entity).await;
    assert_eq!(status, StatusCode::OK);
    assert!(c.get("reasons").is_none(), "{c}");
    assert_eq!(c["probability"], b["probability"]);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_names_the_field() {
    if !ort_available() {
        return;
    }
    let limits = Limits {
        max_batch: 3,
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = server_with(copy_registry(&fixtures().join("registry")), None, limits);
    let (_, entity) = lead(&server);
    let future = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut e = entity.clone();
        edit(&mut e);
        e.to_string()
    };
    let numeric = "annual_revenue_musd";
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (
            "malformed",
            "{\"profile\": ".into(),
            400,
            "bad_request",
            None,
        ),
        (
            "NaN literal",
            with(&|e| e["as_of"] = json!(1)).replace("\"as_of\":1", "\"as_of\":NaN"),
            400,
            "bad_request",
            None,
        ),
        (
            "text for a number",
            with(&|e| e["profile"][numeric] = json!("lots")),
            400,
            "bad_request",
            Some("profile.annual_revenue_musd"),
        ),
        (
            "NaN as text",
            with(&|e| e["profile"][numeric] = json!("NaN")),
            400,
            "bad_request",
            Some("profile.annual_revenue_musd"),
        ),
        (
            "object for a field",
            with(&|e| e["profile"]["industry"] = json!({"a": 1})),
            400,
            "bad_request",
            Some("profile.industry"),
        ),
        (
            "wrong type of events",
            with(&|e| e["events"] = json!("many")),
            400,
            "bad_request",
            Some("events"),
        ),
        (
            "event without type",
            with(&|e| e["events"][1] = json!({"ts": 1})),
            400,
            "bad_request",
            Some("events[1]"),
        ),
        (
            "event time not a time",
            with(&|e| e["events"][2]["ts"] = json!("last tuesday")),
            400,
            "bad_request",
            Some("events[2].ts"),
        ),
        (
            "event in the future",
            with(&|e| e["events"][4]["ts"] = json!(future)),
            400,
            "bad_request",
            Some("events[4].ts"),
        ),
        (
            "scoring time in the future",
            with(&|e| e["as_of"] = json!(future)),
            400,
            "bad_request",
            Some("as_of"),
        ),
        (
            "created after the scoring time",
            with(&|e| e["created_at"] = json!(AS_OF_MS + 1)),
            400,
            "bad_request",
            Some("created_at"),
        ),
        (
            "a time out of range",
            with(&|e| e["created_at"] = json!(i64::MIN)),
            400,
            "bad_request",
            Some("created_at"),
        ),
        (
            "an event value out of range",
            with(&|e| e["events"][0]["value"] = json!(1)).replacen(
                "\"value\":1",
                "\"value\":1e400",
                1,
            ),
            400,
            "bad_request",
            None,
        ),
        (
            "a number beyond f32",
            with(&|e| e["profile"][numeric] = json!(1e39)),
            400,
            "bad_request",
            Some("profile.annual_revenue_musd"),
        ),
        (
            "a number beyond f32 as text",
            with(&|e| e["profile"][numeric] = json!("-1e39")),
            400,
            "bad_request",
            Some("profile.annual_revenue_musd"),
        ),
        (
            "an event value beyond f32",
            with(&|e| e["events"][0]["value"] = json!(1e39)),
            400,
            "bad_request",
            Some("events[0].value"),
        ),
        (
            "event values that sum past f32",
            with(&|e| {
                // Two web visits of 3e38 each in the last 90 days: their value sum is not an
                // f32 (the model has `value_sum_web_visit_90d`).
                let day = 86_400_000;
                e["events"][0] = json!({"ts": AS_OF_MS - day, "type": "web_visit", "value": 3e38});
                e["events"][1] =
                    json!({"ts": AS_OF_MS - 2 * day, "type": "web_visit", "value": 3e38});
            }),
            400,
            "bad_request",
            Some("events"),
        ),
        (
            "null for a field that takes a value",
            with(&|e| e["as_of"] = Value::Null),
            400,
            "bad_request",
            Some("as_of"),
        ),
        (
            "null row",
            with(&|e| e["row"] = Value::Null),
            400,
            "bad_request",
            Some("row"),
        ),
        (
            "missing created_at",
            with(&|e| {
                e.as_object_mut().expect("object").remove("created_at");
            }),
            400,
            "bad_request",
            Some("created_at"),
        ),
        (
            "missing profile",
            with(&|e| {
                e.as_object_mut().expect("object").remove("profile");
            }),
            400,
            "bad_request",
            Some("profile"),
        ),
        (
            "tabular row for an event model",
            with(&|e| e["row"] = json!({})),
            400,
            "bad_request",
            Some("row"),
        ),
        (
            "unknown top-level field",
            with(&|e| e["evnts"] = json!([])),
            400,
            "bad_request",
            None,
        ),
        (
            "body too large",
            json!({"id": "x".repeat(70 * 1024)}).to_string(),
            413,
            "payload_too_large",
            None,
        ),
    ];
    for (what, body, status, kind, field) in cases {
        let (got, answer) = call(
            &server.app,
            "POST",
            "/v1/score/propensity",
            Some(CLIENT_KEY),
            Body::from(body),
        )
        .await;
        assert_eq!(got.as_u16(), status, "{what}: {answer}");
        assert_eq!(answer["error"]["kind"], kind, "{what}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{what}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains(field),
                "{what}: {answer}"
            );
        }
    }

    // Times before 1970 are times.
    let (status, answer) = post(
        &server.app,
        "/v1/score/propensity",
        &serde_json::from_str::<Value>(&with(&|e| e["created_at"] = json!("1969-07-20T20:17:00Z")))
            .expect("json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Without `as_of`, times a little ahead of the server's clock (within the skew) are the
    // caller's clock running ahead: creation and events then count as now.
    let ahead = chrono::Utc::now().timestamp_millis() + 2_000;
    let now_entity = |events: usize| {
        let mut e = entity.clone();
        e.as_object_mut().expect("object").remove("as_of");
        e["created_at"] = json!(ahead);
        e["events"] = json!(vec![json!({"ts": ahead, "type": "demo_request"}); events]);
        e
    };
    let (status, none) = post(&server.app, "/v1/score/propensity", &now_entity(0)).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    let (status, three) = post(&server.app, "/v1/score/propensity", &now_entity(3)).await;
    assert_eq!(status, StatusCode::OK, "{three}");
    assert_ne!(
        none["probability"], three["probability"],
        "the three demo requests 2 s ahead were not counted"
    );

    // The batch: too many entities, and a bad one named by its position.
    let (status, answer) = post(
        &server.app,
        "/v1/score/propensity/batch",
        &json!({"entities": vec![entity.clone(); 4]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "entities");
    let mut bad = entity.clone();
    bad["events"][0]["ts"] = json!(future);
    let (status, answer) = post(
        &server.app,
        "/v1/score/propensity/batch",
        &json!({"entities": [entity.clone(), bad]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "entities[1].events[0].ts");

    // Routes, models, keys and media types.
    let (status, answer) = post(&server.app, "/v1/score/upsell", &entity).await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_model"))
    );
    let (status, answer) = call(
        &server.app,
        "POST",
        "/v1/score/propensity",
        None,
        Body::from(entity.to_string()),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = call(
        &server.app,
        "POST",
        "/v1/score/propensity",
        Some("wrong-key-wrong-key-wrong"),
        Body::from(entity.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, answer) = call(
        &server.app,
        "POST",
        "/admin/reload",
        Some(CLIENT_KEY),
        Body::empty(),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let request = Request::post("/v1/score/propensity")
        .header(header::CONTENT_TYPE, "text/csv")
        .header(header::AUTHORIZATION, format!("Bearer {CLIENT_KEY}"))
        .body(Body::from(entity.to_string()))
        .expect("request");
    let response = server
        .app
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, answer) = call(
        &server.app,
        "GET",
        "/v1/score/propensity",
        Some(CLIENT_KEY),
        Body::empty(),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (status, answer) = post(&server.app, "/v1/score/propensity?explain=1", &entity).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("explain"))
    );

    // No request was answered with a server error.
    let metrics = server.state.metrics();
    for route in ["/v1/score/{model}", "/v1/score/{model}/batch", "other"] {
        assert_eq!(metrics.requests(route, 500), 0, "{route}");
    }
}

/// `/metrics` read with a client key.
async fn metrics_text(app: &Router) -> String {
    let (status, text) = call(app, "GET", "/metrics", Some(CLIENT_KEY), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    text.as_str().expect("text").to_owned()
}

/// A request body that never arrives: reading it waits for ever.
struct EndlessBody;

impl http_body::Body for EndlessBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// Sends `request` from `peer` (as the accept loop marks it) and gives up after 5 s.
async fn send_from(
    app: &Router,
    peer: &str,
    mut request: Request<Body>,
) -> axum::response::Response {
    let addr: std::net::SocketAddr = peer.parse().expect("address");
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(request))
        .await
        .expect("answered within 5 s")
        .expect("infallible")
}

#[tokio::test]
async fn hostile_requests_are_answered_before_their_body_is_read() {
    if !ort_available() {
        return;
    }
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        body_timeout: Duration::from_millis(300),
        max_auth_failures: 3,
        ..Limits::default()
    };
    let server = server_with(copy_registry(&fixtures().join("registry")), None, limits);
    let score = |key: Option<&str>, body: Body| {
        let mut request =
            Request::post("/v1/score/propensity").header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        request.body(body).expect("request")
    };
    let me = "192.0.2.1:40000";

    // No key: 401 at once, the body never read (it never ends).
    let response = send_from(&server.app, me, score(None, Body::new(EndlessBody))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A key, a body that does not arrive: 408 after body_timeout, and the connection closes.
    let response = send_from(
        &server.app,
        me,
        score(Some(CLIENT_KEY), Body::new(EndlessBody)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    // A declared length over the limit: 413 before reading, and the connection closes.
    let mut request = score(Some(CLIENT_KEY), Body::new(EndlessBody));
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, (1u64 << 20).into());
    let response = send_from(&server.app, me, request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()[header::CONNECTION], "close");
    // A compressed body is refused, not read as JSON.
    let mut request = score(Some(CLIENT_KEY), Body::from(vec![0x1f_u8, 0x8b]));
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().expect("value"));
    let response = send_from(&server.app, me, request).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bytes = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    assert!(
        String::from_utf8_lossy(&bytes).contains("Content-Encoding \\\"gzip\\\" is not supported"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );

    // Query strings are percent-decoded (`%66alse` is `false`; numbers in
    // `the_capacity_parameters_are_checked`).
    let (_, entity) = lead(&server);
    for (query, reasons) in [("reasons=%66alse", false), ("reason%73=true", true)] {
        let request = Request::post(format!("/v1/score/propensity?{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {CLIENT_KEY}"))
            .body(Body::from(entity.to_string()))
            .expect("request");
        let response = send_from(&server.app, me, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let answer: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            answer.get("reasons").is_some(),
            reasons,
            "{query}: {answer}"
        );
    }

    // A proxy's Basic credentials do not hide the X-API-Key.
    let request = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .header("x-api-key", CLIENT_KEY)
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send_from(&server.app, me, request).await.status(),
        StatusCode::OK
    );

    // Wrong keys: after 3 from one address, 429 with Retry-After, even for a right key;
    // another address is not held back.
    let guesser = "198.51.100.7:5000";
    for _ in 0..3 {
        let response = send_from(
            &server.app,
            guesser,
            score(Some("a-wrong-key-0123456789"), Body::from("{}")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = send_from(
        &server.app,
        guesser,
        score(Some(CLIENT_KEY), Body::from("{}")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let response = send_from(
        &server.app,
        me,
        score(Some(CLIENT_KEY), Body::from(entity.to_string())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Clients scoring one entity in a loop until told to stop, counting answers and failures
/// and noting which versions answered.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    versions: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyLoad {
    fn start(app: &Router, entity: &Value, clients: usize) -> SteadyLoad {
        let mut load = SteadyLoad {
            stop: Arc::default(),
            failures: Arc::default(),
            answered: Arc::default(),
            versions: Arc::default(),
            clients: Vec::new(),
        };
        for _ in 0..clients {
            let (app, entity) = (app.clone(), entity.clone());
            let (stop, failures, answered, versions) = (
                load.stop.clone(),
                load.failures.clone(),
                load.answered.clone(),
                load.versions.clone(),
            );
            load.clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = post(&app, "/v1/score/propensity", &entity).await;
                    if status == StatusCode::OK {
                        versions
                            .lock()
                            .expect("lock")
                            .insert(body["model"]["version"].as_str().expect("v").to_owned());
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    // A request answered inline never waits on anything: without a socket
                    // in between, let the other tasks (and the timer) run.
                    tokio::task::yield_now().await;
                }
            }));
        }
        load
    }

    /// Stops the clients; asserts no request failed and more than `min_answered` were
    /// answered; returns the versions that answered.
    async fn finish(self, min_answered: usize) -> std::collections::BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("load task");
        }
        assert_eq!(self.failures.load(Ordering::Relaxed), 0, "failed requests");
        let answered = self.answered.load(Ordering::Relaxed);
        assert!(answered > min_answered, "{answered} answered");
        self.versions.lock().expect("lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_versions_and_thresholds_are_picked_up_without_a_failed_request() {
    if !ort_available() {
        return;
    }
    let thresholds_dir = tempfile::tempdir().expect("dir");
    let thresholds = thresholds_dir.path().join("thresholds.toml");
    std::fs::write(&thresholds, "").expect("write");
    let server = server_with(
        copy_registry(&fixtures().join("registry")),
        Some(thresholds.clone()),
        Limits::default(),
    );
    let (bundle, entity) = lead(&server);
    let (status, first) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let p = first["probability"].as_f64().expect("p");
    assert_eq!(
        first["sales_ready"],
        json!(bundle.manifest().thresholds.is_sales_ready(p))
    );

    // Steady load while versions change underneath.
    let load = SteadyLoad::start(&server.app, &entity, 4);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new version: loaded and served.
    let registry = server.registry.path().to_path_buf();
    install_as(
        &registry.join("propensity/fixture-leads-v1"),
        &registry,
        "propensity",
        "fixture-leads-v2",
    );
    let reloader = Arc::clone(&server.reloader);
    let state = server.state.clone();
    let report = tokio::task::spawn_blocking(move || reloader.reload_once(&state))
        .await
        .expect("reload");
    assert_eq!(report.loaded, ["propensity/fixture-leads-v2"], "{report:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A broken newer version: refused, v2 keeps serving (also through the admin route).
    let broken = install_as(
        &registry.join("propensity/fixture-leads-v1"),
        &registry,
        "propensity",
        "fixture-leads-v3",
    );
    std::fs::write(broken.join("model.onnx"), b"not a model").expect("write");
    let (status, report) = admin_reload(&server.app).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let refused = report["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{report}");
    assert_eq!(report["failed"], report["refused"], "{report}");
    assert!(
        refused[0]
            .as_str()
            .expect("text")
            .starts_with("propensity/fixture-leads-v3: "),
        "{report}"
    );
    assert!(
        report["serving"]
            .as_array()
            .expect("serving")
            .contains(&json!("propensity/fixture-leads-v2")),
        "{report}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Thresholds: a new file applies at the next reload, a broken one is refused.
    std::fs::write(
        &thresholds,
        "[propensity]\nsales_ready = 0.0001\ngrades = { a = 0.0003, b = 0.0002, c = 0.0001 }\n",
    )
    .expect("write");
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(report["thresholds"], "applied", "{report}");
    let (_, after) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(
        (after["sales_ready"].clone(), after["grade"].clone()),
        (json!(true), json!("A")),
        "{after}"
    );
    std::fs::write(&thresholds, "[propensity]\nsales_ready = 2\n").expect("write");
    let (_, report) = admin_reload(&server.app).await;
    assert!(
        report["thresholds"]
            .as_str()
            .expect("text")
            .starts_with("refused: "),
        "{report}"
    );
    let (_, still) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(still["sales_ready"], json!(true), "{still}");

    let seen = load.finish(10).await;
    assert!(seen.contains("fixture-leads-v2"), "{seen:?}");
    assert!(!seen.contains("fixture-leads-v3"), "{seen:?}");
    let text = server.state.metrics().render(&[]);
    assert!(
        text.contains("leadscore_reload_failures_total 2\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_and_revert_switch_the_served_version_under_load() {
    if !ort_available() {
        return;
    }
    let server = server_with(
        copy_registry(&fixtures().join("registry")),
        None,
        Limits::default(),
    );
    let registry_root = server.registry.path().to_path_buf();
    let v1 = registry_root.join("propensity/fixture-leads-v1");
    let (_, entity) = lead(&server);
    let registry = Registry::new(&registry_root);
    let lock = registry.lock("test").expect("lock");
    registry
        .promote(
            &lock,
            &models::bundle::ModelName::of_task(features::spec::Task::Propensity),
            "fixture-leads-v1",
            "test",
            "first",
        )
        .expect("promote v1");
    let load = SteadyLoad::start(&server.app, &entity, 4);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A newer version that is not promoted is not served.
    install_as(&v1, &registry_root, "propensity", "fixture-leads-v2");
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(report["loaded"], json!([]), "{report}");
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v1");

    // Promoted: served at the next reload. Reverted: back.
    registry
        .promote(
            &lock,
            &models::bundle::ModelName::of_task(features::spec::Task::Propensity),
            "fixture-leads-v2",
            "test",
            "better",
        )
        .expect("promote v2");
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(
        report["loaded"],
        json!(["propensity/fixture-leads-v2"]),
        "{report}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v2");
    registry
        .revert(
            &lock,
            &models::bundle::ModelName::of_task(features::spec::Task::Propensity),
            "test",
            "worse in production",
        )
        .expect("revert");
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(
        report["loaded"],
        json!(["propensity/fixture-leads-v1"]),
        "{report}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v1");

    let seen = load.finish(10).await;
    assert!(
        seen.contains("fixture-leads-v1") && seen.contains("fixture-leads-v2"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_live_file_keeps_the_promoted_version_served_and_says_so() {
    if !ort_available() {
        return;
    }
    let server = server_with(
        copy_registry(&fixtures().join("registry")),
        None,
        Limits::default(),
    );
    let root = server.registry.path().to_path_buf();
    let registry = Registry::new(&root);
    let task = &models::bundle::ModelName::of_task(features::spec::Task::Propensity);
    {
        let lock = registry.lock("test").expect("lock");
        registry
            .promote(&lock, task, "fixture-leads-v1", "test", "first")
            .expect("promote v1");
    }
    // A newer version, never promoted.
    install_as(
        &root.join("propensity/fixture-leads-v1"),
        &root,
        "propensity",
        "fixture-leads-v2",
    );
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(report["loaded"], json!([]), "{report}");
    assert_eq!(report["registry"], json!([]), "{report}");

    // LIVE deleted: v1 stays served, and the reload says why.
    let live = root.join("propensity/LIVE");
    std::fs::remove_file(&live).expect("remove LIVE");
    let (status, report) = admin_reload(&server.app).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["loaded"], json!([]), "{report}");
    assert!(
        report["serving"]
            .as_array()
            .expect("serving")
            .contains(&json!("propensity/fixture-leads-v1")),
        "{report}"
    );
    let said = report["registry"].to_string();
    assert!(
        said.contains("propensity: ")
            && said.contains("LIVE is missing")
            && said.contains("the live version is fixture-leads-v1, from the last promote"),
        "{report}"
    );
    let (_, entity) = lead(&server);
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v1", "{body}");

    // A server started now (nothing served yet) serves v1 too, not the newest.
    let restarted = server_with(copy_registry(&root), None, Limits::default());
    let (_, body) = post(&restarted.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v1", "{body}");

    // The promoted version gone too: an error, reported; what is served keeps serving and
    // the unpromoted v2 is not loaded.
    std::fs::remove_dir_all(root.join("propensity/fixture-leads-v1")).expect("remove v1");
    let (status, report) = admin_reload(&server.app).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["loaded"], json!([]), "{report}");
    let said = report["registry"].to_string();
    assert!(
        said.contains("cannot tell the live version")
            && said.contains("names fixture-leads-v1, which is not in the registry either")
            && said.contains("propensity/fixture-leads-v1 keeps serving"),
        "{report}"
    );
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v1", "{body}");
}

/// Starts copying bundle `from` into `<registry>/<task>/<version>` in place, the way a
/// plain `cp -r` does: the folder and the (edited) manifest first, then only `files`.
fn copy_in_part(
    from: &Path,
    registry: &Path,
    task: &str,
    version: &str,
    files: &[&str],
) -> PathBuf {
    let target = registry.join(task).join(version);
    std::fs::create_dir_all(&target).expect("create");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(from.join("manifest.json")).expect("read"))
            .expect("json");
    manifest["version"] = json!(version);
    std::fs::write(
        target.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("write");
    for file in files {
        std::fs::copy(from.join(file), target.join(file)).expect("copy");
    }
    target
}

/// The `failed` entries of a reload report.
fn failed(report: &Value) -> Vec<String> {
    report["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .map(|v| v.as_str().expect("text").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_seen_half_copied_is_served_once_the_copy_is_complete() {
    if !ort_available() {
        return;
    }
    let server = server_with(
        copy_registry(&fixtures().join("registry")),
        None,
        Limits::default(),
    );
    let root = server.registry.path().to_path_buf();
    let v1 = root.join("propensity/fixture-leads-v1");
    let scheduled = |server: &Server| {
        serde_json::to_value(server.reloader.reload_scheduled(&server.state)).expect("json")
    };

    // Seen with its manifest but no model.onnx yet: refused, and reported as failed.
    let v2 = copy_in_part(
        &v1,
        &root,
        "propensity",
        "fixture-leads-v2",
        &["explainer.json"],
    );
    let report = scheduled(&server);
    assert_eq!(report["loaded"], json!([]), "{report}");
    let failures = failed(&report);
    assert_eq!(failures.len(), 1, "{report}");
    assert!(
        failures[0].starts_with("propensity/fixture-leads-v2: ")
            && failures[0].contains("model.onnx: missing"),
        "{report}"
    );
    // Not tried again while nothing changes, still reported.
    let report = scheduled(&server);
    assert_eq!(report["refused"], json!([]), "{report}");
    assert_eq!(failed(&report).len(), 1, "{report}");

    // Half of model.onnx: the folder changed, tried again, refused for the digest.
    let model = std::fs::read(v1.join("model.onnx")).expect("read");
    std::fs::write(v2.join("model.onnx"), &model[..model.len() / 2]).expect("write");
    let report = scheduled(&server);
    let failures = failed(&report);
    assert!(
        failures.len() == 1
            && failures[0].contains("model.onnx: SHA-256 is")
            && failures[0].contains("the manifest's `model_sha256` is"),
        "{report}"
    );

    // The copy completes: served at the next scheduled reload, nothing failed any more.
    std::fs::write(v2.join("model.onnx"), &model).expect("write");
    let report = scheduled(&server);
    assert_eq!(
        report["loaded"],
        json!(["propensity/fixture-leads-v2"]),
        "{report}"
    );
    assert_eq!(report["failed"], json!([]), "{report}");

    // A copier that sets the file's size first and its time last: when the folder looks
    // the same once complete, only an explicit reload tries it again, and it loads.
    let v3 = copy_in_part(
        &v1,
        &root,
        "propensity",
        "fixture-leads-v3",
        &["explainer.json"],
    );
    let v3_model = v3.join("model.onnx");
    std::fs::write(&v3_model, vec![0u8; model.len()]).expect("write");
    let stamp = std::fs::metadata(&v3_model)
        .and_then(|m| m.modified())
        .expect("mtime");
    let report = scheduled(&server);
    assert!(
        failed(&report)
            .iter()
            .any(|f| f.starts_with("propensity/fixture-leads-v3: ")),
        "{report}"
    );
    std::fs::write(&v3_model, &model).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&v3_model)
        .and_then(|f| f.set_modified(stamp))
        .expect("set mtime");
    let report = scheduled(&server);
    assert_eq!(report["loaded"], json!([]), "{report}");
    assert_eq!(failed(&report).len(), 1, "{report}");
    let (status, report) = admin_reload(&server.app).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["loaded"],
        json!(["propensity/fixture-leads-v3"]),
        "{report}"
    );
    assert_eq!(report["failed"], json!([]), "{report}");
    let (_, entity) = lead(&server);
    let (_, body) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(body["model"]["version"], "fixture-leads-v3", "{body}");
}

/// Ten held-out leads, undated (so the volume comes from the caller), four conversions:
/// the hand-computed table is in `models::capacity`'s tests.
const HOLDOUT_CSV: &str = "entity_id,cutoff,label,score\n\
    L1,,1,0.3\nL2,,1,0.9\nL3,,0,0.05\nL4,,1,0.6\nL5,,0,0.2\n\
    L6,,1,0.8\nL7,,0,0.5\nL8,,0,0.1\nL9,,0,0.7\nL10,,0,0.4\n";

/// `POST /admin/reload` with the admin key.
async fn admin_reload(app: &Router) -> (StatusCode, Value) {
    call(app, "POST", "/admin/reload", Some(ADMIN_KEY), Body::empty()).await
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    call(app, "GET", uri, Some(CLIENT_KEY), Body::empty()).await
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[tokio::test]
async fn capacity_questions_are_answered_and_capacity_thresholds_applied_on_reload() {
    if !ort_available() {
        return;
    }
    let registry = copy_registry(&fixtures().join("registry"));
    let v1 = registry.path().join("propensity/fixture-leads-v1");
    std::fs::write(v1.join("holdout.csv"), HOLDOUT_CSV).expect("write");
    let thresholds_dir = tempfile::tempdir().expect("dir");
    let thresholds = thresholds_dir.path().join("thresholds.toml");
    std::fs::write(
        &thresholds,
        "[propensity]\ngrades = { a = 0.75, b = 0.45, c = 0.15 }\n",
    )
    .expect("write");
    let server = server_with(registry, Some(thresholds.clone()), Limits::default());

    // "We can call 2 of the 5 leads a week": cut-off 0.6, 3 of 4 flagged converted, 3 of
    // all 4 conversions caught, 1.5 expected a week.
    let (status, answer) = get(
        &server.app,
        "/v1/thresholds/propensity?capacity_per_week=2&volume_per_week=5",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let capacity = &answer["capacity"];
    assert!(close(&capacity["threshold"], 0.6), "{answer}");
    assert!(close(&capacity["leads_per_week"], 2.0), "{answer}");
    assert!(close(&capacity["precision"], 0.75), "{answer}");
    assert!(close(&capacity["share_of_conversions"], 0.75), "{answer}");
    assert!(
        close(&capacity["expected_conversions_per_week"], 1.5),
        "{answer}"
    );
    assert_eq!(answer["held_out"]["rows"], 10);
    assert_eq!(answer["held_out"]["conversions"], 4);
    assert_eq!(answer["held_out"]["weeks_covered"], Value::Null);
    // The grade table of the bands in force (the file's): A 2 leads, 2 conversions; B 3
    // leads, 1; C 3 leads, 1; D 2 leads, none.
    let grades = answer["grades"].as_array().expect("grades");
    let per_band: Vec<(String, f64, f64, f64)> = grades
        .iter()
        .map(|g| {
            (
                g["grade"].as_str().expect("grade").to_owned(),
                g["leads_per_week"].as_f64().expect("n"),
                g["precision"].as_f64().expect("precision"),
                g["cumulative_share_of_conversions"]
                    .as_f64()
                    .expect("recall"),
            )
        })
        .collect();
    let expected = [
        ("A", 1.0, 1.0, 0.5),
        ("B", 1.5, 1.0 / 3.0, 0.75),
        ("C", 1.5, 1.0 / 3.0, 1.0),
        ("D", 1.0, 0.0, 1.0),
    ];
    assert_eq!(per_band.len(), 4, "{answer}");
    for (got, want) in per_band.iter().zip(expected) {
        assert_eq!(got.0, want.0);
        for (g, w) in [(got.1, want.1), (got.2, want.2), (got.3, want.3)] {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
    }

    // Undated held-out rows need the volume; a bundle without held-out rows cannot answer.
    let (status, body) = get(&server.app, "/v1/thresholds/propensity?capacity_per_week=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "volume_per_week", "{body}");
    let (status, body) = get(&server.app, "/v1/thresholds/churn").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["kind"], "no_held_out_predictions", "{body}");
    let (status, _) = call(
        &server.app,
        "GET",
        "/v1/thresholds/propensity",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Sales ops switch to capacities: applied at the next reload, no restart; scores follow.
    std::fs::write(
        &thresholds,
        "[propensity]\nsales_ready_per_week = 2\nvolume_per_week = 5\n\
         grades_per_week = { a = 1, b = 1, c = 1 }\n",
    )
    .expect("write");
    let (_, report) = admin_reload(&server.app).await;
    assert_eq!(report["thresholds"], "applied", "{report}");
    let (_, answer) = get(&server.app, "/v1/thresholds/propensity?volume_per_week=5").await;
    let t = &answer["thresholds"];
    assert!(close(&t["sales_ready"], 0.6), "{answer}");
    assert!(
        close(&t["grades"]["a"], 0.8)
            && close(&t["grades"]["b"], 0.6)
            && close(&t["grades"]["c"], 0.4),
        "{answer}"
    );
    assert!(
        close(&answer["sales_ready"]["leads_per_week"], 2.0),
        "{answer}"
    );
    let (_, entity) = lead(&server);
    let (status, scored) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(status, StatusCode::OK, "{scored}");
    let p = scored["probability"].as_f64().expect("p");
    let grade = if p >= 0.8 {
        "A"
    } else if p >= 0.6 {
        "B"
    } else if p >= 0.4 {
        "C"
    } else {
        "D"
    };
    assert_eq!(scored["grade"], grade, "{scored}");
    assert_eq!(scored["sales_ready"], json!(p >= 0.6), "{scored}");

    // A new version without held-out predictions cannot take capacities: refused, v1
    // keeps serving.
    let v2 = install_as(
        &v1,
        server.registry.path(),
        "propensity",
        "fixture-leads-v2",
    );
    std::fs::remove_file(v2.join("holdout.csv")).expect("remove");
    let (_, report) = admin_reload(&server.app).await;
    let refused = report["refused"].to_string();
    assert!(
        refused.contains("fixture-leads-v2") && refused.contains("holdout.csv"),
        "{report}"
    );
    let (_, scored) = post(&server.app, "/v1/score/propensity", &entity).await;
    assert_eq!(scored["model"]["version"], "fixture-leads-v1", "{scored}");
}

#[tokio::test]
async fn readiness_models_metrics_and_the_openapi_document() {
    if !ort_available() {
        return;
    }
    // Before anything is loaded: not ready. The reason names the server's files, so the
    // keyless probe does not get it; a keyed score request does.
    let empty = tempfile::tempdir().expect("dir");
    let keys = KeySet::new(&[CLIENT_KEY.into()], &[ADMIN_KEY.into()]).expect("keys");
    let state = AppState::new(Limits::default(), keys, "loading models from somewhere");
    let (status, body) = call(&app(state.clone()), "GET", "/readyz", None, Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["error"]["message"],
        "no model is served yet; the server's log says why"
    );
    Reloader::new(Registry::new(empty.path()), None, PoolConfig::default()).reload_once(&state);
    let (status, body) = call(&app(state.clone()), "GET", "/readyz", None, Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let folder = empty.path().display().to_string();
    assert!(!body.to_string().contains(&folder), "{body}");
    let (status, body) = post(&app(state), "/v1/score/propensity", &json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("text")
            .starts_with("no loadable bundle in "),
        "{body}"
    );

    let server = server();
    let (status, body) = call(&server.app, "GET", "/healthz", None, Body::empty()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = call(&server.app, "GET", "/readyz", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["models"],
        json!(["churn/fixture-churn-v1", "propensity/fixture-leads-v1"])
    );

    let (status, body) = call(
        &server.app,
        "GET",
        "/v1/models",
        Some(CLIENT_KEY),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let models = body["models"].as_array().expect("models");
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["task"], "propensity");
    assert_eq!(models[1]["kind"], "gbdt_on_linear");
    assert!(models[1]["validation"]["roc_auc"].as_f64().expect("auc") > 0.6);
    // Ranking from the model's own scores, calibration error from its calibrated output.
    let manifest = Bundle::load(&server.registry.path().join("propensity/fixture-leads-v1"))
        .expect("bundle")
        .manifest()
        .clone();
    assert_eq!(
        models[1]["validation"]["roc_auc"].as_f64(),
        Some(manifest.validation.raw.roc_auc)
    );
    assert_eq!(
        models[1]["validation"]["ece"].as_f64(),
        Some(manifest.validation.calibrated.ece)
    );

    // The OpenAPI document: its paths are the router's, and its example scores.
    let (status, doc) = call(&server.app, "GET", "/openapi.json", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    let mut routes: Vec<&str> = serving::metrics::ROUTES
        .iter()
        .copied()
        .filter(|r| *r != "other")
        .collect();
    routes.sort_unstable();
    assert_eq!(paths, routes);
    let example = &doc["paths"]["/v1/score/{model}"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    let (status, body) = post(&server.app, "/v1/score/propensity", example).await;
    assert_eq!(status, StatusCode::OK, "the OpenAPI example: {body}");
    assert_eq!(
        body["ignored_fields"],
        Value::Null,
        "the example uses only model fields: {body}"
    );

    // Metrics: behind a client key unless made public; the requests above, and the score
    // distribution.
    let (status, _) = call(&server.app, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let public = app(AppState::new(
        Limits {
            metrics_public: true,
            ..Limits::default()
        },
        KeySet::new(&[CLIENT_KEY.into()], &[ADMIN_KEY.into()]).expect("keys"),
        "loading",
    ));
    let (status, _) = call(&public, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics_text(&server.app).await;
    assert!(
        text.contains(
            "leadscore_http_requests_total{route=\"/v1/score/{model}\",status=\"200\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("leadscore_http_requests_total{route=\"/readyz\",status=\"200\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "leadscore_score_count{model=\"propensity\",task=\"propensity\",version=\"fixture-leads-v1\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("leadscore_model_info{model=\"churn\",task=\"churn\",version=\"fixture-churn-v1\",kind=\"logistic\"} 1\n"), "{text}");
    assert!(!text.contains("L-1042"), "no request content in metrics");
}

/// Scores `entities` in batches of 100 and returns the drift the server reports after.
async fn score_and_read_drift(app: &Router, task: &str, entities: &[Value]) -> Value {
    for chunk in entities.chunks(100) {
        let (status, body) = post(
            app,
            &format!("/v1/score/{task}/batch?reasons=false"),
            &json!({"entities": chunk}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = get(app, &format!("/v1/drift/{task}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The figure `key` of categorical field `field` (or numeric feature, when `of` is
/// `features`) in a drift answer.
fn drift_figure(drift: &Value, of: &str, name: &str, key: &str) -> f64 {
    let name_key = if of == "fields" { "field" } else { "feature" };
    drift["drift"][of]
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f[name_key] == name)
        .and_then(|f| f[key].as_f64())
        .unwrap_or_else(|| panic!("no {key} of {name} in {drift}"))
}

#[tokio::test]
async fn drift_statistics_move_when_the_scored_traffic_shifts() {
    if !ort_available() {
        return;
    }
    let server = server();
    let (bundle, _) = lead(&server);
    let mut rng = SplitMix64::new(21);
    let steady: Vec<Value> = (0..400)
        .map(|i| random_entity(&bundle, &mut rng, i))
        .collect();
    let share_of = |entities: &[Value], field: &str, value: &Value| {
        entities
            .iter()
            .filter(|e| e["profile"][field] == *value)
            .count() as f64
            / entities.len() as f64
    };
    let before = score_and_read_drift(&server.app, "propensity", &steady).await;
    assert_eq!(before["model"]["version"], "fixture-leads-v1");
    assert_eq!(before["window_seconds"], 3600);
    assert_eq!(before["drift"]["rows"], 400);
    assert!(before["training_rows"].as_u64().expect("rows") > 1_000);
    // Shares counted exactly: the random leads' missing and never-seen industries.
    let missing = drift_figure(&before, "fields", "industry", "missing_share");
    assert_eq!(missing, share_of(&steady, "industry", &Value::Null));
    let unknown = drift_figure(&before, "fields", "industry", "unknown_share");
    assert_eq!(
        unknown,
        share_of(&steady, "industry", &json!("never-seen-level"))
    );
    assert!(unknown > 0.05, "{before}");
    let training_missing = drift_figure(
        &before,
        "features",
        "annual_revenue_musd",
        "training_missing_share",
    );
    let manifest_missing =
        bundle.manifest().drift.as_ref().expect("reference").numeric[0].missing_share;
    assert_eq!(training_missing, manifest_missing);

    // The traffic shifts: industry and revenue no longer sent, a new lead source
    // everywhere, a storm of web visits (60 in the last 60 hours, as a bot would).
    let shifted: Vec<Value> = steady
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["profile"]["industry"] = Value::Null;
            e["profile"]["lead_source"] = json!("tiktok");
            e["profile"]["annual_revenue_musd"] = Value::Null;
            e["events"] = (0..60)
                .map(|k| json!({"ts": AS_OF_MS - 1 - k * 3_600_000, "type": "web_visit", "channel": "web"}))
                .collect();
            e
        })
        .collect();
    let after = score_and_read_drift(&server.app, "propensity", &shifted).await;
    assert_eq!(after["drift"]["rows"], 800);
    let missing_after = drift_figure(&after, "fields", "industry", "missing_share");
    assert_eq!(missing_after, (missing * 400.0 + 400.0) / 800.0);
    let revenue_missing = drift_figure(&before, "features", "annual_revenue_musd", "missing_share");
    assert_eq!(
        revenue_missing,
        share_of(&steady, "annual_revenue_musd", &Value::Null)
    );
    assert_eq!(
        drift_figure(&after, "features", "annual_revenue_musd", "missing_share"),
        (revenue_missing * 400.0 + 400.0) / 800.0
    );
    let unknown_source = drift_figure(&after, "fields", "lead_source", "unknown_share");
    let unknown_source_before = drift_figure(&before, "fields", "lead_source", "unknown_share");
    assert!(
        unknown_source >= 0.5 && unknown_source > unknown_source_before + 0.4,
        "{unknown_source_before} -> {unknown_source}"
    );
    for (of, name) in [
        ("fields", "industry"),
        ("fields", "lead_source"),
        ("features", "count_web_visit_30d"),
        ("features", "decayed_web_visit"),
    ] {
        let psi_before = drift_figure(&before, of, name, "psi");
        let psi_after = drift_figure(&after, of, name, "psi");
        assert!(
            psi_after > psi_before + 0.1,
            "PSI of {name}: {psi_before} -> {psi_after}"
        );
    }
    // A feature the shift left alone stays where it was: tenure comes from created_at.
    let tenure_before = drift_figure(&before, "features", "tenure_days", "psi");
    let tenure_after = drift_figure(&after, "features", "tenure_days", "psi");
    assert!(
        (tenure_after - tenure_before).abs() < 0.05,
        "{tenure_before} -> {tenure_after}"
    );

    // /metrics carries the same figures.
    let text = metrics_text(&server.app).await;
    let gauge = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {text}"))
    };
    let labels = "model=\"propensity\",task=\"propensity\",version=\"fixture-leads-v1\"";
    assert_eq!(gauge(&format!("leadscore_drift_rows{{{labels}}}")), 800.0);
    assert_eq!(
        gauge(&format!(
            "leadscore_feature_psi{{{labels},feature=\"industry\"}}"
        )),
        drift_figure(&after, "fields", "industry", "psi")
    );
    assert_eq!(
        gauge(&format!(
            "leadscore_unknown_level_share{{{labels},field=\"lead_source\"}}"
        )),
        unknown_source
    );
    assert_eq!(
        gauge(&format!(
            "leadscore_feature_missing_share{{{labels},feature=\"industry\"}}"
        )),
        missing_after
    );
    // The churn model scored nothing: its figures are absent, its row count zero.
    assert_eq!(
        gauge("leadscore_drift_rows{model=\"churn\",task=\"churn\",version=\"fixture-churn-v1\"}"),
        0.0
    );
    assert!(
        !text.contains("leadscore_feature_psi{model=\"churn\""),
        "{text}"
    );
}

/// The ten held-out leads of [`HOLDOUT_CSV`] with their lead source.
const HOLDOUT_WITH_SOURCE_CSV: &str = "entity_id,cutoff,label,score,profile.lead_source\n\
    L1,,1,0.3,webinar\nL2,,1,0.9,webinar\nL3,,0,0.05,partner\nL4,,1,0.6,\n\
    L5,,0,0.2,partner\nL6,,1,0.8,webinar\nL7,,0,0.5,partner\nL8,,0,0.1,webinar\n\
    L9,,0,0.7,partner\nL10,,0,0.4,webinar\n";

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(app, method, uri, Some(key), Body::from(body.to_string())).await
}

#[tokio::test]
async fn thresholds_are_previewed_then_saved_applied_and_logged() {
    if !ort_available() {
        return;
    }
    let registry = copy_registry(&fixtures().join("registry"));
    let v1 = registry.path().join("propensity/fixture-leads-v1");
    std::fs::write(v1.join("holdout.csv"), HOLDOUT_WITH_SOURCE_CSV).expect("write");
    let registry_root = registry.path().to_path_buf();
    let dir = tempfile::tempdir().expect("dir");
    let thresholds = dir.path().join("thresholds.toml");
    let churn_section = "# the account team's bands\n[churn]\nsales_ready = 0.4\n";
    std::fs::write(&thresholds, churn_section).expect("write");
    let server = server_with(registry, Some(thresholds.clone()), Limits::default());
    let before = get(&server.app, "/v1/models").await.1;
    let in_force = before["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "propensity"))
        .map(|m| m["thresholds"].clone())
        .expect("propensity");

    // The preview of "2 leads a week out of 5" is GET /v1/thresholds' answer for 2: 0.6.
    let proposal = json!({"sales_ready_per_week": 2, "volume_per_week": 5,
                          "grades": {"a": 0.75, "b": 0.45, "c": 0.15}});
    let (status, preview) = send(
        &server.app,
        "POST",
        "/v1/thresholds/propensity/preview",
        CLIENT_KEY,
        proposal.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let (_, asked) = get(
        &server.app,
        "/v1/thresholds/propensity?capacity_per_week=2&volume_per_week=5",
    )
    .await;
    assert!(
        close(&preview["thresholds"]["sales_ready"], 0.6),
        "{preview}"
    );
    assert_eq!(
        preview["thresholds"]["sales_ready"],
        asked["capacity"]["threshold"]
    );
    assert_eq!(preview["sales_ready"]["precision"], json!(0.75));
    assert_eq!(preview["in_force"], in_force);
    assert_eq!(preview["grades"].as_array().map(Vec::len), Some(4));
    // A preview writes nothing.
    assert_eq!(
        std::fs::read_to_string(&thresholds).expect("read"),
        churn_section
    );

    // Refused, naming the field, and nothing written: a client key, no `by`, bad bands,
    // a capacity of 0, an unknown key.
    let (status, _) = send(
        &server.app,
        "PUT",
        "/admin/thresholds/propensity",
        CLIENT_KEY,
        json!({"sales_ready": 0.5, "by": "Dana"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({"sales_ready": 0.5}), "by"),
        (
            json!({"grades": {"a": 0.2, "b": 0.3, "c": 0.1}, "by": "Dana"}),
            "grades",
        ),
        (
            json!({"sales_ready_per_week": 0, "by": "Dana"}),
            "sales_ready_per_week",
        ),
        (json!({"sales_ready": 1.5, "by": "Dana"}), "sales_ready"),
    ] {
        let (status, answer) = send(
            &server.app,
            "PUT",
            "/admin/thresholds/propensity",
            ADMIN_KEY,
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = send(
        &server.app,
        "PUT",
        "/admin/thresholds/propensity",
        ADMIN_KEY,
        json!({"sales_ready": 0.5, "sales_redy": 1, "by": "Dana"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        std::fs::read_to_string(&thresholds).expect("read"),
        churn_section
    );
    assert_eq!(get(&server.app, "/v1/models").await.1, before);

    // Saved: the section is in the file beside the other one (its comment kept), in force
    // at once, and logged with who.
    let mut save = proposal.clone();
    save["by"] = json!("Dana Smith");
    let (status, saved) = send(
        &server.app,
        "PUT",
        "/admin/thresholds/propensity",
        ADMIN_KEY,
        save,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(close(&saved["thresholds"]["sales_ready"], 0.6), "{saved}");
    let text = std::fs::read_to_string(&thresholds).expect("read");
    assert!(text.starts_with(churn_section), "{text}");
    assert!(
        text.contains("[propensity]") && text.contains("sales_ready_per_week = 2"),
        "{text}"
    );
    let file = models::thresholds_file::ThresholdsFile::parse(&text).expect("parses");
    assert_eq!(
        file.get("churn").and_then(|c| c.sales_ready),
        Some(0.4),
        "{text}"
    );
    let (_, models) = get(&server.app, "/v1/models").await;
    let propensity = models["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "propensity"))
        .expect("propensity");
    assert!(close(&propensity["thresholds"]["sales_ready"], 0.6));
    assert!(close(&propensity["thresholds"]["grades"]["a"], 0.75));
    let log = Registry::new(&registry_root).history().expect("log");
    let last = log.last().expect("logged");
    assert_eq!(last.action, models::bundle::RegistryAction::Thresholds);
    assert_eq!(last.who, "Dana Smith");
    assert_eq!(last.version, "fixture-leads-v1");
    assert!(
        last.why.contains("sales_ready_per_week = 2"),
        "{}",
        last.why
    );
    // The next scores use it.
    let (bundle, _) = lead(&server);
    let mut rng = SplitMix64::new(17);
    for i in 0..40 {
        let entity = random_entity(&bundle, &mut rng, i);
        let (_, score) = send(
            &server.app,
            "POST",
            "/v1/score/propensity?reasons=false",
            CLIENT_KEY,
            entity,
        )
        .await;
        let p = score["probability"].as_f64().expect("probability");
        assert_eq!(score["sales_ready"], json!(p >= 0.6), "{score}");
    }
}

#[tokio::test]
async fn without_a_thresholds_file_saving_is_refused() {
    if !ort_available() {
        return;
    }
    let server = server();
    let (status, answer) = send(
        &server.app,
        "PUT",
        "/admin/thresholds/propensity",
        ADMIN_KEY,
        json!({"sales_ready": 0.5, "by": "Dana"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["kind"], "thresholds_read_only");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("thresholds ="))
    );
}

#[tokio::test]
async fn health_gives_the_held_out_curves_and_conversion_by_field() {
    if !ort_available() {
        return;
    }
    let registry = copy_registry(&fixtures().join("registry"));
    let v1 = registry.path().join("propensity/fixture-leads-v1");
    std::fs::write(v1.join("holdout.csv"), HOLDOUT_WITH_SOURCE_CSV).expect("write");
    let server = server_with(registry, None, Limits::default());
    let (status, health) = get(&server.app, "/v1/models/propensity/health?by=lead_source").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["held_out"]["rows"], 10);
    assert_eq!(health["held_out"]["conversions"], 4);
    assert_eq!(health["fields"], json!(["lead_source"]));
    // Ranked by hand: of the 24 (converted, not) pairs, 20 are in order.
    assert!(
        close(&health["roc_auc"], 20.0 / 24.0),
        "{}",
        health["roc_auc"]
    );
    let levels = health["by"]["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 3);
    assert_eq!(levels[0]["level"], "webinar");
    assert_eq!(levels[0]["rows"], 5);
    assert_eq!(levels[0]["conversions"], 3);
    assert_eq!(levels[1]["level"], "partner");
    assert_eq!(levels[1]["conversions"], 0);
    assert_eq!(levels[2]["level"], "");
    let deciles = health["deciles"].as_array().expect("deciles");
    assert_eq!(deciles.len(), 10);
    assert_eq!(deciles[0]["to"], json!(0.9));
    assert_eq!(deciles[0]["conversions"], 1);
    let (status, answer) = get(&server.app, "/v1/models/propensity/health?by=country").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["field"], "by");
    // Held-out rows written before profile fields were kept: curves, no fields.
    std::fs::write(v1.join("holdout.csv"), HOLDOUT_CSV).expect("write");
    let server = server_with(
        copy_registry(server.registry.path()),
        None,
        Limits::default(),
    );
    let (status, health) = get(&server.app, "/v1/models/propensity/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["fields"], json!([]));
    assert_eq!(health["by"], Value::Null);
    // A bundle without held-out rows says so.
    let (status, answer) = get(&server.app, "/v1/models/churn/health").await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["kind"], "no_held_out_predictions");
}

#[tokio::test]
async fn versions_are_listed_promoted_and_reverted_under_the_registry_lock() {
    if !ort_available() {
        return;
    }
    let registry = copy_registry(&fixtures().join("registry"));
    let root = registry.path().to_path_buf();
    install_as(
        &root.join("propensity/fixture-leads-v1"),
        &root,
        "propensity",
        "fixture-leads-v2",
    );
    let server = server_with(registry, None, Limits::default());
    let served = |v: &Value| v["served"].clone();
    let (status, list) = get(&server.app, "/v1/models/propensity/versions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["live"], Value::Null);
    assert_eq!(served(&list), "fixture-leads-v2");
    let versions: Vec<&str> = list["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions, ["fixture-leads-v2", "fixture-leads-v1"]);

    let promote = |version: &str| json!({"version": version, "by": "Dana", "why": "test"});
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/promote",
        CLIENT_KEY,
        promote("fixture-leads-v1"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/promote",
        ADMIN_KEY,
        promote("fixture-leads-v1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(served(&answer), "fixture-leads-v1");
    assert_eq!(answer["logged"]["who"], "Dana");
    let (_, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/promote",
        ADMIN_KEY,
        promote("fixture-leads-v2"),
    )
    .await;
    assert_eq!(served(&answer), "fixture-leads-v2");
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/revert",
        ADMIN_KEY,
        json!({"by": "Dana"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(served(&answer), "fixture-leads-v1");
    assert_eq!(answer["logged"]["action"], "revert");
    // Nothing before the first promotion: a conflict, nothing changed.
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/revert",
        ADMIN_KEY,
        json!({"by": "Dana"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["kind"], "registry_conflict");
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/promote",
        ADMIN_KEY,
        promote("fixture-leads-v9"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["kind"], "unknown_version");
    assert_eq!(answer["error"]["field"], "version");
    // A training run holding the registry's lock: refused, nothing changed.
    let lock = Registry::new(&root)
        .lock("a test's training run")
        .expect("lock");
    let (status, answer) = send(
        &server.app,
        "POST",
        "/admin/models/propensity/promote",
        ADMIN_KEY,
        promote("fixture-leads-v2"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a test's training run"))
    );
    drop(lock);
    let (_, list) = get(&server.app, "/v1/models/propensity/versions").await;
    assert_eq!(list["live"], "fixture-leads-v1");
    assert_eq!(served(&list), "fixture-leads-v1");
    let actions: Vec<&str> = list["log"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["revert", "promote", "promote"]);
}

#[tokio::test]
async fn the_console_is_served_with_its_policy_and_no_key() {
    let server = server();
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let response = server
            .app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}"
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            serving::console::CONTENT_SECURITY_POLICY
        );
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        // No address of another origin (the SVG namespace is a name, not a request; the
        // browser test records every request the page makes).
        let text = String::from_utf8_lossy(&body).replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "{path}"
        );
    }
}
