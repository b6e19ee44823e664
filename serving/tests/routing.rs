//! Named models and segment routing through the router (`oneshot`, no socket), with real
//! bundles: the fixture registry's `propensity` bundle installed again under two more names
//! (`propensity-enterprise`, `propensity-smb`), so every answer can be checked against the
//! model it names, scored directly.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use models::bundle::{ROUTING_FILE, Registry};
use serde_json::{Value, json};
use serving::reload::{ReloadReport, RoutingSource};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app};
use tower::ServiceExt as _;

use common::{copy_dir, ort_available, repo_root};

const KEY: &str = "client-key-for-tests-0001";
/// 2025-10-09T08:53:20Z: inside the generator's time range, in the past.
const AS_OF_MS: i64 = 1_760_000_000_000;

struct Server {
    app: Router,
    state: AppState,
    reloader: Arc<Reloader>,
    registry: tempfile::TempDir,
}

impl Server {
    fn routing_path(&self) -> std::path::PathBuf {
        self.registry.path().join(ROUTING_FILE)
    }

    fn write_routing(&self, text: &str) {
        std::fs::write(self.routing_path(), text).expect("write routing");
    }

    fn reload(&self) -> ReloadReport {
        self.reloader.reload_once(&self.state)
    }
}

/// A copy of the fixture registry with `propensity` also installed as each of `names`
/// (the same bundle under another name: the manifest's `model` follows the folder).
fn registry_with(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixtures = repo_root().join("serving/tests/fixtures/registry");
    copy_dir(&fixtures, dir.path());
    let registry = Registry::new(dir.path());
    let global = models::bundle::ModelName::new("propensity").expect("name");
    let version = registry
        .served(&global)
        .expect("registry")
        .expect("a propensity version");
    for name in names {
        let from = dir.path().join("propensity").join(&version);
        let to = dir.path().join(name).join(&version);
        copy_dir(&from, &to);
        let _ = std::fs::remove_file(dir.path().join(name).join("LIVE"));
        let path = to.join("manifest.json");
        let mut manifest: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        manifest["model"] = json!(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
    }
    dir
}

fn server(registry: tempfile::TempDir, routing: Option<&str>) -> Server {
    if let Some(text) = routing {
        std::fs::write(registry.path().join(ROUTING_FILE), text).expect("write routing");
    }
    let keys = KeySet::new(&[KEY.into()], &["admin-key-for-tests-00001".into()]).expect("keys");
    let state = AppState::new(Limits::default(), keys, "loading");
    let reloader = Arc::new(
        Reloader::new(
            Registry::new(registry.path()),
            None,
            PoolConfig {
                sessions: 2,
                intra_threads: 1,
            },
        )
        .with_routing(RoutingSource {
            path: registry.path().join(ROUTING_FILE),
            required: false,
        }),
    );
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

async fn call(app: &Router, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 24).await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// A lead of the generator's form with `employee_band` set (or left out) and revenue.
fn lead(band: Option<&str>, revenue: Option<f64>, visits: i64) -> Value {
    let day = 86_400_000;
    let mut profile = json!({
        "industry": "software",
        "country": "United States",
        "seniority": "manager",
        "lead_source": "webinar",
    });
    if let Some(band) = band {
        profile["employee_band"] = json!(band);
    }
    if let Some(revenue) = revenue {
        profile["annual_revenue_musd"] = json!(revenue);
    }
    let events: Vec<Value> = (0..visits)
        .map(|k| json!({"ts": AS_OF_MS - (k + 1) * day / 3, "type": "web_visit", "channel": "organic"}))
        .collect();
    json!({
        "id": "L-1",
        "as_of": AS_OF_MS,
        "created_at": AS_OF_MS - 40 * day,
        "profile": profile,
        "events": events,
    })
}

/// Two levels of `employee_band` the propensity fixture saw in training.
fn two_bands(server: &Server) -> (String, String) {
    let served = server.state.served();
    let plan = &served
        .get("propensity")
        .expect("propensity served")
        .model
        .manifest()
        .feature_plan;
    let field = plan
        .profile_fields()
        .iter()
        .find(|f| f.name == "employee_band")
        .expect("employee_band");
    match &field.kind {
        features::plan::ProfileFeatureKind::Categorical { levels } => {
            (levels[0].clone(), levels[1].clone())
        }
        other => panic!("employee_band is {other:?}"),
    }
}

fn band_routing(a: &str, b: &str, first: &str, second: &str) -> String {
    format!(
        "[propensity]\nfield = \"employee_band\"\nfallback = \"propensity\"\nrules = [\n  \
         {{ levels = [\"{a}\"], model = \"{first}\" }},\n  {{ levels = [\"{b}\"], model = \
         \"{second}\" }},\n]\n\n[propensity-by-revenue]\nfield = \"annual_revenue_musd\"\n\
         fallback = \"propensity\"\nrules = [\n  {{ min = 100, model = \"{first}\" }},\n  \
         {{ min = 10, max = 100, model = \"{second}\" }},\n]\n"
    )
}

#[tokio::test]
async fn each_rule_the_fallback_and_an_unknown_level_score_with_the_model_they_name() {
    if !ort_available() {
        return;
    }
    let s = server(
        registry_with(&["propensity-enterprise", "propensity-smb"]),
        None,
    );
    let (a, b) = two_bands(&s);
    s.write_routing(&band_routing(
        &a,
        &b,
        "propensity-enterprise",
        "propensity-smb",
    ));
    let report = s.reload();
    assert_eq!(report.routing.as_deref(), Some("applied"), "{report:?}");

    // Every answer names the model and why; its score is what that model gives directly.
    for (body, model, rule, why) in [
        (
            lead(Some(&a), Some(5.0), 3),
            "propensity-enterprise",
            json!(1),
            format!("employee_band is \"{a}\" (rule 1)"),
        ),
        (
            lead(Some(&b), Some(5.0), 6),
            "propensity-smb",
            json!(2),
            format!("employee_band is \"{b}\" (rule 2)"),
        ),
        (
            lead(Some("no such band"), None, 2),
            "propensity",
            Value::Null,
            "employee_band is \"no such band\", which no rule takes: the fallback".into(),
        ),
        (
            lead(None, None, 1),
            "propensity",
            Value::Null,
            "employee_band is missing: the fallback".into(),
        ),
    ] {
        let (status, routed) = call(&s.app, "POST", "/v1/score/propensity", Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{routed}");
        assert_eq!(routed["model"]["name"], model, "{routed}");
        assert_eq!(routed["model"]["task"], "propensity");
        assert!(routed["model"]["version"].is_string());
        assert_eq!(routed["route"]["route"], "propensity");
        assert_eq!(routed["route"]["field"], "employee_band");
        assert_eq!(routed["route"]["rule"], rule, "{routed}");
        assert_eq!(routed["route"]["why"], why.as_str());
        // The route named `propensity` takes the place of the model's own route, so the
        // fallback cannot be asked directly; the rules' models can.
        if model == "propensity" {
            continue;
        }
        let (status, direct) =
            call(&s.app, "POST", &format!("/v1/score/{model}"), Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{direct}");
        assert!(direct.get("route").is_none(), "{direct}");
        assert_eq!(direct["model"]["name"], model);
        assert_eq!(routed["probability"], direct["probability"]);
        assert_eq!(routed["reasons"], direct["reasons"]);
    }

    // A numeric route: half-open ranges, the fallback below them; a text that is not a
    // number is refused naming the field.
    for (revenue, model, rule) in [
        (json!(250.0), "propensity-enterprise", json!(1)),
        (json!(100.0), "propensity-enterprise", json!(1)),
        (json!(99.5), "propensity-smb", json!(2)),
        (json!(3.0), "propensity", Value::Null),
    ] {
        let mut body = lead(Some(&a), None, 1);
        body["profile"]["annual_revenue_musd"] = revenue.clone();
        let (status, routed) = call(
            &s.app,
            "POST",
            "/v1/score/propensity-by-revenue",
            Some(&body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{routed}");
        assert_eq!(routed["model"]["name"], model, "{revenue}: {routed}");
        assert_eq!(routed["route"]["rule"], rule, "{revenue}");
    }
    let mut body = lead(Some(&a), None, 1);
    body["profile"]["annual_revenue_musd"] = json!("lots");
    let (status, err) = call(
        &s.app,
        "POST",
        "/v1/score/propensity-by-revenue",
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["field"], "profile.annual_revenue_musd");

    // A batch: each result names its model and rule, in the request's order, scored as the
    // single requests were.
    let entities = vec![
        lead(Some(&b), Some(5.0), 6),
        lead(Some(&a), Some(5.0), 3),
        lead(None, None, 1),
        lead(Some(&a), Some(5.0), 0),
    ];
    let (status, batch) = call(
        &s.app,
        "POST",
        "/v1/score/propensity/batch",
        Some(&json!({ "entities": entities })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["route"], "propensity");
    assert!(batch.get("model").is_none());
    let names: Vec<&str> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["model"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "propensity-smb",
            "propensity-enterprise",
            "propensity",
            "propensity-enterprise"
        ]
    );
    for (entity, result) in entities
        .iter()
        .zip(batch["results"].as_array().expect("results"))
    {
        let (_, single) = call(&s.app, "POST", "/v1/score/propensity", Some(entity)).await;
        assert_eq!(result["probability"], single["probability"]);
        assert_eq!(result["route"], single["route"]);
    }
    // A batch for a model, not a route, is answered as before.
    let (status, plain) = call(
        &s.app,
        "POST",
        "/v1/score/propensity-smb/batch",
        Some(&json!({ "entities": entities })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["model"]["name"], "propensity-smb");
    assert!(plain["results"][0].get("model").is_none());

    // The models and routes are listed, and the OpenAPI document names them.
    let (_, listed) = call(&s.app, "GET", "/v1/models", None).await;
    let names: Vec<&str> = listed["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "churn",
            "propensity",
            "propensity-enterprise",
            "propensity-smb"
        ]
    );
    assert_eq!(listed["routes"][0]["name"], "propensity");
    assert_eq!(listed["routes"][0]["rules"][1]["model"], "propensity-smb");
    let (_, doc) = call(&s.app, "GET", "/openapi.json", None).await;
    assert_eq!(
        doc["components"]["parameters"]["target"]["schema"]["enum"],
        json!([
            "churn",
            "propensity",
            "propensity-by-revenue",
            "propensity-enterprise",
            "propensity-smb"
        ])
    );
    assert_eq!(
        doc["components"]["parameters"]["model"]["schema"]["enum"],
        json!([
            "churn",
            "propensity",
            "propensity-enterprise",
            "propensity-smb"
        ])
    );
    // A name that is neither is 404 with what is served.
    let (status, err) = call(
        &s.app,
        "POST",
        "/v1/score/propensity-mid",
        Some(&lead(None, None, 0)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("propensity-enterprise, propensity-smb; the routes are: propensity, propensity-by-revenue"),
        "{message}"
    );
    // Routes are for scoring: capacity and drift are asked of a model.
    let (status, _) = call(&s.app, "GET", "/v1/drift/propensity-by-revenue", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s.app, "GET", "/v1/drift/propensity-smb", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn routing_that_does_not_fit_is_refused_and_the_table_in_force_stays() {
    if !ort_available() {
        return;
    }
    let s = server(registry_with(&["propensity-enterprise"]), None);
    let (a, b) = two_bands(&s);
    let good = format!(
        "[propensity]\nfield = \"employee_band\"\nfallback = \"propensity\"\nrules = [{{ levels = [\"{a}\"], model = \"propensity-enterprise\" }}]\n"
    );
    s.write_routing(&good);
    assert_eq!(s.reload().routing.as_deref(), Some("applied"));
    let table = |field: &str, rules: &str| {
        format!("[propensity]\nfield = \"{field}\"\nfallback = \"propensity\"\nrules = [{rules}]\n")
    };
    for (text, message) in [
        (
            table(
                "employee_band",
                &format!("{{ levels = [\"{a}\"], model = \"propensity-smb\" }}"),
            ),
            "rule 1's model propensity-smb is not served",
        ),
        (
            table(
                "employee_band",
                &format!(
                    "{{ levels = [\"{a}\", \"{b}\"], model = \"propensity-enterprise\" }}, {{ levels = [\"{b}\"], model = \"propensity\" }}"
                ),
            ),
            "rules 1 and 2 overlap",
        ),
        (
            table(
                "employee_band",
                "{ levels = [\"Enterprise-ish\"], model = \"propensity-enterprise\" }",
            ),
            "was never seen in training",
        ),
        (
            table(
                "employe_band",
                &format!("{{ levels = [\"{a}\"], model = \"propensity-enterprise\" }}"),
            ),
            "did you mean employee_band?",
        ),
        (
            table(
                "employee_band",
                "{ min = 3, model = \"propensity-enterprise\" }",
            ),
            "is categorical to the route's models",
        ),
        (
            table(
                "annual_revenue_musd",
                "{ levels = [\"x\"], model = \"propensity-enterprise\" }",
            ),
            "is numeric to the route's models",
        ),
        (
            table(
                "employee_band",
                &format!("{{ levels = [\"{a}\"], model = \"churn\" }}"),
            ),
            "is a churn model and the fallback propensity a propensity model",
        ),
    ] {
        s.write_routing(&text);
        let report = s.reload();
        let said = report.routing.clone().unwrap_or_default();
        assert!(
            said.starts_with("refused: ") && said.contains(message),
            "{text}\n{said}"
        );
        // The table in force stays.
        let (status, body) = call(
            &s.app,
            "POST",
            "/v1/score/propensity",
            Some(&lead(Some(&a), None, 1)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["model"]["name"], "propensity-enterprise", "{body}");
    }
    // A refused file is not applied again until it changes; removing the file removes the
    // routing: the route is the model again.
    assert_eq!(s.reload().routing, None);
    std::fs::remove_file(s.routing_path()).expect("remove");
    assert_eq!(s.reload().routing.as_deref(), Some("removed"));
    let (_, body) = call(
        &s.app,
        "POST",
        "/v1/score/propensity",
        Some(&lead(Some(&a), None, 1)),
    )
    .await;
    assert_eq!(body["model"]["name"], "propensity");
    assert!(body.get("route").is_none());

    // A table naming a model that is not there yet is taken once the model arrives.
    s.write_routing(&good.replace("propensity-enterprise", "propensity-late"));
    assert!(
        s.reload()
            .routing
            .unwrap_or_default()
            .contains("propensity-late is not served")
    );
    let version = std::fs::read_dir(s.registry.path().join("propensity-enterprise"))
        .expect("dir")
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("version")
        .file_name();
    let from = s
        .registry
        .path()
        .join("propensity-enterprise")
        .join(&version);
    let tmp = s.registry.path().join("propensity-late").join(".tmp-copy");
    copy_dir(&from, &tmp);
    let path = tmp.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    manifest["model"] = json!("propensity-late");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
    std::fs::rename(
        &tmp,
        s.registry.path().join("propensity-late").join(&version),
    )
    .expect("rename");
    let report = s.reload();
    assert_eq!(report.routing.as_deref(), Some("applied"), "{report:?}");
    let (_, body) = call(
        &s.app,
        "POST",
        "/v1/score/propensity",
        Some(&lead(Some(&a), None, 1)),
    )
    .await;
    assert_eq!(body["model"]["name"], "propensity-late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_that_changes_the_table_under_load_fails_no_request() {
    if !ort_available() {
        return;
    }
    let s = server(
        registry_with(&["propensity-enterprise", "propensity-smb"]),
        None,
    );
    let (a, b) = two_bands(&s);
    s.write_routing(&band_routing(
        &a,
        &b,
        "propensity-enterprise",
        "propensity-smb",
    ));
    assert_eq!(s.reload().routing.as_deref(), Some("applied"));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let seen: Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..6 {
        let (app, stop, failed, seen) = (
            s.app.clone(),
            Arc::clone(&stop),
            Arc::clone(&failed),
            Arc::clone(&seen),
        );
        let body = lead(Some(&a), Some(5.0), c % 4);
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let (status, answer) =
                    call(&app, "POST", "/v1/score/propensity", Some(&body)).await;
                if status == StatusCode::OK {
                    let name = answer["model"]["name"].as_str().unwrap_or("?").to_owned();
                    *seen.lock().expect("lock").entry(name).or_default() += 1;
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    // Swap the models of the two rules, back and forth, while the clients score.
    for round in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let (first, second) = if round % 2 == 0 {
            ("propensity-smb", "propensity-enterprise")
        } else {
            ("propensity-enterprise", "propensity-smb")
        };
        s.write_routing(&band_routing(&a, &b, first, second));
        let reloader = Arc::clone(&s.reloader);
        let state = s.state.clone();
        let report = tokio::task::spawn_blocking(move || reloader.reload_once(&state))
            .await
            .expect("reload");
        assert_eq!(report.routing.as_deref(), Some("applied"), "{report:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        total += client.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {total} requests");
    let seen = seen.lock().expect("lock").clone();
    // Both tables were in force during the run, and only the two rule models answered.
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["propensity-enterprise", "propensity-smb"],
        "{seen:?}"
    );
    // The last table (round 5: enterprise first) is the one in force.
    let (_, body) = call(
        &s.app,
        "POST",
        "/v1/score/propensity",
        Some(&lead(Some(&a), None, 1)),
    )
    .await;
    assert_eq!(body["model"]["name"], "propensity-enterprise");
    let _: &Path = s.registry.path();
}
