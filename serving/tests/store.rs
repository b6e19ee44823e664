//! The entity store's routes through the router (`oneshot`), on the fixture bundles and a
//! store in a temporary folder: events in and scores out, the same scores as the stateless
//! route given the same entity in full, scores by id, the sales queue, outcomes, erasure
//! down to the file's bytes, bad input that writes nothing, and the sweep.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use features::history::DAY_MS;
use models::bundle::Registry;
use serde_json::{Value, json};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app};
use store::{RedbStore, StoreOpen};
use tower::ServiceExt as _;

use common::{copy_dir, ort_available, repo_root};

const CLIENT_KEY: &str = "client-key-for-tests-0001";
const ADMIN_KEY: &str = "admin-key-for-tests-00001";

/// Probabilities of one entity by two routes, same features: ONNX Runtime gives the same
/// `f32` for the same row; kept apart only by the JSON round trip of `f64`.
const SAME_SCORE: f64 = 1e-12;

struct Server {
    app: Router,
    state: AppState,
    store_dir: tempfile::TempDir,
    _registry: tempfile::TempDir,
}

fn server(with_store: bool) -> Server {
    let registry = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &repo_root().join("serving/tests/fixtures/registry"),
        registry.path(),
    );
    let keys = KeySet::new(&[CLIENT_KEY.into()], &[ADMIN_KEY.into()]).expect("keys");
    let limits = Limits {
        max_batch: 50,
        ..Limits::default()
    };
    let state = AppState::new(limits, keys, "loading");
    let reloader = Arc::new(Reloader::new(
        Registry::new(registry.path()),
        None,
        PoolConfig {
            sessions: 1,
            intra_threads: 1,
        },
    ));
    let report = reloader.reload_once(&state);
    assert!(report.refused.is_empty(), "{report:?}");
    let store_dir = tempfile::tempdir().expect("temp dir");
    if with_store {
        let store = RedbStore::open(StoreOpen::new(store_dir.path())).expect("store");
        state.set_store(Arc::new(store));
        state.set_export_dir(store_dir.path().join("exports"));
    }
    Server {
        app: app(state.clone()),
        state,
        store_dir,
        _registry: registry,
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 24).await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock")
}

fn lead_profile(source: &str) -> Value {
    json!({
        "industry": "Software",
        "employee_band": "51-200",
        "country": "Germany",
        "job_title": "VP Marketing",
        "seniority": "VP",
        "lead_source": source,
        "annual_revenue_musd": 12.5,
    })
}

/// Events of one lead as `POST /v1/events` items, the last `n` days.
fn lead_events(entity: &str, n: i64, now: i64) -> Vec<Value> {
    let types = [
        "web_visit",
        "email_open",
        "pricing_page_view",
        "demo_request",
    ];
    (0..n)
        .map(|i| {
            json!({
                "entity": entity,
                "id": format!("{entity}-e{i}"),
                "ts": now - (n - i) * DAY_MS / 2,
                "type": types[(i as usize) % types.len()],
                "channel": "web",
            })
        })
        .collect()
}

#[tokio::test]
async fn events_in_scores_out_the_same_as_the_stateless_route() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    let mut events = lead_events("L-1", 6, now);
    events[0]["profile"] = lead_profile("webinar");
    let (status, body) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": events})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let written = &body["entities"][0];
    assert_eq!(written["entity"], "L-1");
    assert_eq!(written["kind"], "lead");
    assert_eq!(written["created"], true);
    assert_eq!(written["events_added"], 6);
    let scores = written["scores"].as_array().expect("scores");
    assert_eq!(
        scores.len(),
        1,
        "a lead is scored by the propensity model only: {body}"
    );
    assert_eq!(scores[0]["model"]["name"], "propensity");
    assert!(scores[0]["reasons"]["positive"].is_array(), "{body}");

    // What is stored, and the stored score against the stateless route at the same moment.
    let (status, entity) = call(&s.app, "GET", "/v1/entities/L-1", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{entity}");
    assert_eq!(entity["events"]["count"], 6);
    assert_eq!(entity["profile"]["lead_source"], "webinar");
    assert_eq!(entity["open"], true);
    let stored = &entity["scores"][0];
    let scored_at = stored["scored_at"].as_str().expect("scored_at");
    let full = json!({
        "as_of": scored_at,
        "created_at": entity["created_at"],
        "profile": lead_profile("webinar"),
        "events": lead_events("L-1", 6, now).iter().map(|e| json!({
            "ts": e["ts"], "type": e["type"], "channel": e["channel"],
        })).collect::<Vec<_>>(),
    });
    let (status, stateless) = call(
        &s.app,
        "POST",
        "/v1/score/propensity",
        CLIENT_KEY,
        Some(&full),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stateless}");
    let p = stateless["probability"].as_f64().expect("p");
    assert!(
        (stored["probability"].as_f64().expect("p") - p).abs() < SAME_SCORE,
        "{stored} vs {stateless}"
    );
    assert!((scores[0]["probability"].as_f64().expect("p") - p).abs() < SAME_SCORE);
    assert_eq!(
        stored["reasons"], stateless["reasons"],
        "the stored reasons are the route's"
    );

    // Sending the same events again stores nothing; one more event moves the score.
    let (_, again) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": lead_events("L-1", 6, now)})),
    )
    .await;
    assert_eq!(again["entities"][0]["events_added"], 0);
    assert_eq!(again["entities"][0]["duplicates"], 6);
    let demo = json!({"events": [{"entity": "L-1", "ts": now - 1000, "type": "demo_request", "channel": "web"}]});
    let (_, moved) = call(
        &s.app,
        "POST",
        "/v1/events?reasons=false",
        CLIENT_KEY,
        Some(&demo),
    )
    .await;
    assert_eq!(moved["entities"][0]["events_added"], 1);
    assert!(moved["entities"][0]["scores"][0].get("reasons").is_none());
    let (_, entity) = call(&s.app, "GET", "/v1/entities/L-1", CLIENT_KEY, None).await;
    assert_eq!(entity["events"]["count"], 7);
    assert!(
        entity["scores"][0]["reasons"].is_object(),
        "the stored score's reasons are given back"
    );

    // Scored now from the stored history: the stateless route given it all at that moment.
    let (status, by_id) = call(
        &s.app,
        "GET",
        "/v1/entities/L-1/score/propensity",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert_eq!(by_id["events"], 7);
    let mut all = lead_events("L-1", 6, now);
    all.push(demo["events"][0].clone());
    let full = json!({
        "as_of": by_id["scored_at"],
        "created_at": entity["created_at"],
        "profile": lead_profile("webinar"),
        "events": all.iter().map(|e| json!({"ts": e["ts"], "type": e["type"], "channel": e["channel"]})).collect::<Vec<_>>(),
    });
    let (_, stateless) = call(
        &s.app,
        "POST",
        "/v1/score/propensity",
        CLIENT_KEY,
        Some(&full),
    )
    .await;
    assert!(
        (by_id["probability"].as_f64().expect("p") - stateless["probability"].as_f64().expect("p"))
            .abs()
            < SAME_SCORE
    );
    assert_eq!(by_id["reasons"], stateless["reasons"]);
    let (status, err) = call(
        &s.app,
        "GET",
        "/v1/entities/L-1/score/churn",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["kind"], "entity_not_scored");
    let (status, err) = call(
        &s.app,
        "GET",
        "/v1/entities/L-404/score/propensity",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["kind"], "unknown_entity");
}

#[tokio::test]
async fn the_queue_ranks_open_leads_and_customers_go_to_churn() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    // Leads with more or less activity, from different sources.
    let sources = [
        "webinar",
        "cold outbound",
        "referral",
        "trade show",
        "paid search",
    ];
    for (i, source) in sources.iter().enumerate() {
        let id = format!("L-{i}");
        let mut events = lead_events(&id, 1 + 3 * i as i64, now);
        events[0]["profile"] = lead_profile(source);
        let (status, body) = call(
            &s.app,
            "POST",
            "/v1/events",
            CLIENT_KEY,
            Some(&json!({"events": events})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let customer = json!({"kind": "customer", "created_at": now - 200 * DAY_MS,
        "profile": {"plan": "pro", "industry": "Retail", "country": "France", "seats": 12, "monthly_fee": 400}});
    let (status, body) = call(
        &s.app,
        "PUT",
        "/v1/entities/C-1",
        CLIENT_KEY,
        Some(&customer),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["entities"][0]["scores"][0]["model"]["name"], "churn");
    assert_eq!(
        body["entities"][0]["scores"].as_array().map(Vec::len),
        Some(1)
    );

    let (status, queue) = call(
        &s.app,
        "GET",
        "/v1/leads/top/propensity?limit=10",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    let leads = queue["leads"].as_array().expect("leads");
    assert_eq!(leads.len(), 5, "{queue}");
    let probabilities: Vec<f64> = leads
        .iter()
        .map(|l| l["probability"].as_f64().expect("p"))
        .collect();
    assert!(
        probabilities.windows(2).all(|w| w[0] >= w[1]),
        "best first: {probabilities:?}"
    );
    assert!(leads.iter().all(|l| l["reasons"]["positive"].is_array()));
    let (_, churn_queue) = call(&s.app, "GET", "/v1/leads/top/churn", CLIENT_KEY, None).await;
    assert_eq!(churn_queue["leads"][0]["entity"], "C-1");
    // A grade filter gives just the leads of that grade.
    let grade = leads[0]["grade"].as_str().expect("grade").to_owned();
    let (_, graded) = call(
        &s.app,
        "GET",
        &format!("/v1/leads/top/propensity?grade={grade}"),
        CLIENT_KEY,
        None,
    )
    .await;
    let graded = graded["leads"].as_array().expect("leads");
    assert!(!graded.is_empty() && graded.iter().all(|l| l["grade"] == grade.as_str()));
    assert_eq!(
        graded.len(),
        leads
            .iter()
            .filter(|l| l["grade"] == grade.as_str())
            .count()
    );

    // The best lead converts: it leaves the queue.
    let best = leads[0]["entity"].as_str().expect("id").to_owned();
    let converted = json!({"outcomes": [{"entity": best, "type": "converted", "ts": now - 1000}]});
    let (status, body) = call(&s.app, "POST", "/v1/outcomes", CLIENT_KEY, Some(&converted)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entities"][0]["open"], false);
    let (_, queue) = call(&s.app, "GET", "/v1/leads/top/propensity", CLIENT_KEY, None).await;
    assert_eq!(queue["leads"].as_array().map(Vec::len), Some(4));
    assert!(
        queue["leads"]
            .as_array()
            .expect("leads")
            .iter()
            .all(|l| l["entity"] != best.as_str())
    );
    let unknown = json!({"outcomes": [{"entity": "nobody", "type": "converted", "ts": now}]});
    let (status, err) = call(&s.app, "POST", "/v1/outcomes", CLIENT_KEY, Some(&unknown)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["field"], "outcomes[0].entity");
    for bad in [
        "/v1/leads/top/propensity?limit=0",
        "/v1/leads/top/propensity?grade=E",
        "/v1/leads/top/propensity?top=3",
    ] {
        let (status, _) = call(&s.app, "GET", bad, CLIENT_KEY, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // The sweep rescores the recently active at its own moment: the five leads, not the
    // customer, created 200 days ago with no event since (beyond the 90-day window).
    let later = now + 3_600_000;
    let report = serving::sweep::sweep_once(&s.state, later, None)
        .await
        .expect("sweep");
    assert_eq!(report.entities, 5, "{report:?}");
    let (_, entity) = call(&s.app, "GET", "/v1/entities/L-1", CLIENT_KEY, None).await;
    let scored_at =
        chrono::DateTime::parse_from_rfc3339(entity["scores"][0]["scored_at"].as_str().expect("t"))
            .expect("time")
            .timestamp_millis();
    assert_eq!(scored_at, later);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    let cases = [
        (
            json!({"events": [{"entity": "A", "ts": now, "type": "v"}, {"entity": "B", "ts": now + 3_600_000, "type": "v"}]}),
            "events[1].ts",
        ),
        (
            json!({"events": [{"entity": "A", "ts": now, "type": "v", "colour": "red"}]}),
            "events[0].colour",
        ),
        (
            json!({"events": [{"entity": "A", "ts": now, "type": "v", "profile": {"annual_revenue_musd": "lots"}}]}),
            "events[0].profile.annual_revenue_musd",
        ),
        (
            json!({"events": [{"entity": "", "ts": now, "type": "v"}]}),
            "events[0].entity",
        ),
        (
            json!({"events": [{"entity": "A", "ts": now, "type": ""}]}),
            "events[0].type",
        ),
        (
            json!({"events": [{"entity": "A", "ts": now, "type": "v", "kind": "prospect"}]}),
            "events[0].kind",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = call(&s.app, "POST", "/v1/events", CLIENT_KEY, Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"entity": "A", "ts": now - i, "type": "v"}))
        .collect();
    let (status, err) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": many})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["field"], "events");
    let (status, err) = call(
        &s.app,
        "PUT",
        "/v1/entities/A",
        CLIENT_KEY,
        Some(&json!({"created_at": now + 3_600_000})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["field"], "created_at");
    // Nothing of any refused request was written.
    let stats = s
        .state
        .store()
        .expect("store")
        .stats()
        .await
        .expect("stats");
    assert_eq!((stats.entities, stats.events), (0, 0));
    for (method, uri) in [("GET", "/v1/entities/A"), ("DELETE", "/v1/entities/A")] {
        let (status, err) = call(&s.app, method, uri, CLIENT_KEY, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(err["error"]["kind"], "unknown_entity");
    }
    // The store routes need a key; reclaiming needs the admin key.
    let (status, _) = call(
        &s.app,
        "GET",
        "/v1/leads/top/propensity",
        "wrong-key-wrong-key",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&s.app, "POST", "/admin/store/reclaim", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn without_a_store_the_store_routes_say_so() {
    if !ort_available() {
        return;
    }
    let s = server(false);
    let (status, err) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": []})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["kind"], "no_store");
    let (status, _) = call(&s.app, "GET", "/v1/entities/x", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).expect("read store file");
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn an_erased_entity_leaves_the_store_file_once_reclaimed() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    let id = "erase-me-7f3a9c51d2";
    let secret = "Secret Industries 8c1e";
    let mut events = lead_events(id, 5, now);
    events[0]["profile"] = json!({"industry": secret});
    let (status, body) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": events})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for i in 0..20 {
        let other = lead_events(&format!("keep-{i}"), 3, now);
        call(
            &s.app,
            "POST",
            "/v1/events",
            CLIENT_KEY,
            Some(&json!({"events": other})),
        )
        .await;
    }
    let file = s.store_dir.path().join("entities.redb");
    assert!(
        file_contains(&file, id.as_bytes()),
        "the id is in the file before"
    );
    assert!(file_contains(&file, secret.as_bytes()));
    let (status, _) = call(
        &s.app,
        "DELETE",
        &format!("/v1/entities/{id}"),
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &s.app,
        "GET",
        &format!("/v1/entities/{id}"),
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let lingering = file_contains(&file, id.as_bytes());
    eprintln!("erased id still in the file's free pages before reclaiming: {lingering}");
    let (status, body) = call(&s.app, "POST", "/admin/store/reclaim", ADMIN_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for name in std::fs::read_dir(s.store_dir.path()).expect("dir") {
        let path = name.expect("entry").path();
        assert!(
            !file_contains(&path, id.as_bytes()),
            "{} still holds the id",
            path.display()
        );
        assert!(!file_contains(&path, secret.as_bytes()));
    }
    // What was not erased is all there.
    let (_, queue) = call(
        &s.app,
        "GET",
        "/v1/leads/top/propensity?limit=100",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(queue["leads"].as_array().map(Vec::len), Some(20));
    let (status, entity) = call(&s.app, "GET", "/v1/entities/keep-3", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entity["events"]["count"], 3);
}

#[tokio::test]
async fn a_running_server_exports_what_it_holds_for_training() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    for i in 0..3 {
        let mut events = lead_events(&format!("L-{i}"), 4, now);
        events[0]["profile"] = lead_profile("webinar");
        call(
            &s.app,
            "POST",
            "/v1/events",
            CLIENT_KEY,
            Some(&json!({"events": events})),
        )
        .await;
    }
    let converted = json!({"outcomes": [{"entity": "L-1", "type": "converted", "ts": now - 10}]});
    call(&s.app, "POST", "/v1/outcomes", CLIENT_KEY, Some(&converted)).await;
    let (status, body) = call(
        &s.app,
        "POST",
        "/admin/store/export",
        ADMIN_KEY,
        Some(&json!({"name": "nightly-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["entities"].as_u64(),
            body["events"].as_u64(),
            body["outcomes"].as_u64()
        ),
        (Some(3), Some(12), Some(1))
    );
    let spec_path = s.store_dir.path().join("exports/nightly-1/spec.toml");
    let spec = features::spec::DatasetSpec::from_file(&spec_path).expect("the exported spec reads");
    let data = features::load::load_dataset(&spec).expect("the exported files load");
    assert_eq!(data.entities.height(), 3);
    assert_eq!(data.outcomes.as_ref().map(|o| o.height()), Some(1));
    assert_eq!(
        data.profile_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        // `json!` writes an object's keys in alphabetical order: the order they were sent.
        [
            "annual_revenue_musd",
            "country",
            "employee_band",
            "industry",
            "job_title",
            "lead_source",
            "seniority"
        ],
        "the columns in the order first sent"
    );
    // A second export of the same name: 409, the first left as it was.
    let (status, err) = call(
        &s.app,
        "POST",
        "/admin/store/export",
        ADMIN_KEY,
        Some(&json!({"name": "nightly-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(
        (&err["error"]["kind"], &err["error"]["field"]),
        (&json!("export_exists"), &json!("name"))
    );
    for (body, field) in [
        (json!({"name": "../escape"}), "name"),
        (json!({"name": "x", "like": "/nowhere/spec.toml"}), "like"),
    ] {
        let (status, err) = call(
            &s.app,
            "POST",
            "/admin/store/export",
            ADMIN_KEY,
            Some(&body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["field"], field);
    }
    let (status, _) = call(
        &s.app,
        "POST",
        "/admin/store/export",
        CLIENT_KEY,
        Some(&json!({"name": "y"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Many single events for one lead at once: each answer is scored from the history its write
/// left (a write that found the lead changed since it was read is scored again after the
/// commit), and the score kept is that of the whole history: its reasons come back, which
/// they do only when the stored history gives the stored probability again.
#[tokio::test]
async fn concurrent_events_for_one_lead_keep_the_score_of_the_whole_history() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    let mut first = lead_events("L-1", 1, now);
    first[0]["profile"] = lead_profile("webinar");
    let (status, body) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": first})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sends = (0..24).map(|i| {
        let app = s.app.clone();
        let event_type = ["web_visit", "pricing_page_view", "demo_request"][i as usize % 3];
        let event = json!({"events": [{
            "entity": "L-1",
            "id": format!("c-{i}"),
            "ts": now - 1000 - i,
            "type": event_type,
            "channel": "web",
        }]});
        tokio::spawn(
            async move { call(&app, "POST", "/v1/events", CLIENT_KEY, Some(&event)).await },
        )
    });
    let mut answered = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        let (status, body) = send.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        let probability = body["entities"][0]["scores"][0]["probability"]
            .as_f64()
            .expect("a probability");
        answered.push(probability);
    }
    let (status, entity) = call(&s.app, "GET", "/v1/entities/L-1", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{entity}");
    assert_eq!(entity["events"]["count"], 25);
    let stored = &entity["scores"][0];
    assert!(
        stored["reasons"]["positive"].is_array(),
        "the stored score is the whole history's: {entity}"
    );
    let probability = stored["probability"].as_f64().expect("a probability");
    assert!(
        answered
            .iter()
            .any(|p| p.to_bits() == probability.to_bits()),
        "the last answer's score is the one kept: {probability} not in {answered:?}"
    );
}

#[tokio::test]
async fn a_timeline_gives_the_events_and_the_score_after_each() {
    if !ort_available() {
        return;
    }
    let s = server(true);
    let now = now_ms();
    let mut events = lead_events("L-7", 6, now);
    events[0]["profile"] = lead_profile("webinar");
    let (status, body) = call(
        &s.app,
        "POST",
        "/v1/events",
        CLIENT_KEY,
        Some(&json!({"events": events})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, entity) = call(&s.app, "GET", "/v1/entities/L-7", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{entity}");
    let (status, timeline) = call(
        &s.app,
        "GET",
        "/v1/entities/L-7/timeline?model=propensity",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    assert_eq!(timeline["model"]["name"], "propensity");
    assert_eq!(timeline["events_total"], 6);
    let listed = timeline["events"].as_array().expect("events");
    assert_eq!(listed.len(), 6);
    // Newest first.
    assert_eq!(listed[0]["type"], events[5]["type"]);
    let scores = timeline["scores"].as_array().expect("scores");
    assert_eq!(
        scores.len(),
        7,
        "after each of 6 events, and now: {timeline}"
    );
    // The score after the third event is the stateless route's for the history up to it,
    // scored just after it.
    let third = &scores[2];
    let as_of = events[2]["ts"].as_i64().expect("ts") + 1;
    let history = json!({
        "as_of": as_of,
        "created_at": entity["created_at"],
        "profile": lead_profile("webinar"),
        "events": events[..3].iter().map(|e| json!({
            "ts": e["ts"], "type": e["type"], "channel": e["channel"],
        })).collect::<Vec<_>>(),
    });
    let (status, stateless) = call(
        &s.app,
        "POST",
        "/v1/score/propensity?reasons=false",
        CLIENT_KEY,
        Some(&history),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stateless}");
    assert!(
        (third["probability"].as_f64().expect("p") - stateless["probability"].as_f64().expect("p"))
            .abs()
            < SAME_SCORE,
        "{third} vs {stateless}"
    );
    assert_eq!(third["grade"], stateless["grade"]);
    // Without a model: the first of its task; a customer model for a lead: refused.
    let (status, default) =
        call(&s.app, "GET", "/v1/entities/L-7/timeline", CLIENT_KEY, None).await;
    assert_eq!(status, StatusCode::OK, "{default}");
    assert_eq!(default["model"]["name"], "propensity");
    let (status, refused) = call(
        &s.app,
        "GET",
        "/v1/entities/L-7/timeline?model=churn",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["kind"], "entity_not_scored");
    let (status, _) = call(
        &s.app,
        "GET",
        "/v1/entities/nobody/timeline",
        CLIENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
