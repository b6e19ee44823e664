//! The `drift` command against a running server: the table and alerts of what it scored,
//! exit status 3 with `--fail-on-alert`, a refused key named, and a saved answer read back.

// The serving tests' helpers for ONNX Runtime and fixture copies.
#[path = "../../serving/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use models::bundle::Registry;
use serde_json::{Value, json};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app};
use tower::ServiceExt as _;

const CLIENT_KEY: &str = "drift-cli-client-key-0001";
const ADMIN_KEY: &str = "drift-cli-admin-key-00001";
const AS_OF_MS: i64 = 1_760_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// Runs `leadscore-train drift` with `args`, off the async runtime.
async fn drift(args: Vec<String>, key: Option<&str>) -> Output {
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_leadscore-train"));
        command
            .arg("drift")
            .args(&args)
            .env_remove("LEADSCORE_API_KEY");
        if let Some(key) = key {
            command.env("LEADSCORE_API_KEY", key);
        }
        command.output().expect("runs")
    })
    .await
    .expect("joins")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A lead from a new lead source, with industry missing, a few web visits.
fn shifted_lead(i: usize) -> Value {
    json!({
        "id": format!("S{i}"),
        "as_of": AS_OF_MS,
        "created_at": AS_OF_MS - 40 * DAY_MS,
        "profile": {"industry": null, "employee_band": "51-200", "country": "United Kingdom",
                    "job_title": "VP Marketing", "seniority": "VP", "lead_source": "tiktok",
                    "annual_revenue_musd": 12.5},
        "events": (0..5).map(|k| json!({"ts": AS_OF_MS - 1 - k * DAY_MS, "type": "web_visit", "channel": "organic"}))
            .collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn the_drift_command_reads_the_server_and_alerts() {
    if !common::ort_available() {
        return;
    }
    let registry = tempfile::tempdir().expect("dir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../serving/tests/fixtures/registry");
    common::copy_dir(&fixtures, registry.path());
    let keys = KeySet::new(&[CLIENT_KEY.into()], &[ADMIN_KEY.into()]).expect("keys");
    let state = AppState::new(Limits::default(), keys, "loading");
    Reloader::new(Registry::new(registry.path()), None, PoolConfig::default()).reload_once(&state);
    let router = app(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(axum::serve(listener, router.clone()).into_future());

    // Nothing scored yet: figures absent, no alert, exit 0.
    let output = drift(
        vec!["--server".into(), server.clone(), "--fail-on-alert".into()],
        Some(CLIENT_KEY),
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("nothing scored in the window"),
        "{output:?}"
    );

    let entities: Vec<Value> = (0..600).map(shifted_lead).collect();
    for chunk in entities.chunks(200) {
        let request = Request::post("/v1/score/propensity/batch?reasons=false")
            .header(header::AUTHORIZATION, format!("Bearer {CLIENT_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"entities": chunk}).to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
    }

    let output = drift(
        vec![
            "--server".into(),
            server.clone(),
            "--task".into(),
            "propensity".into(),
            "--fail-on-alert".into(),
        ],
        Some(CLIENT_KEY),
    )
    .await;
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        table.contains("propensity fixture-leads-v1: 600 rows scored"),
        "{table}"
    );
    assert!(
        table.contains(
            "ALERT field `lead_source`: 100.0 % of rows have a level never seen in training"
        ),
        "{table}"
    );
    assert!(table.contains("ALERT field `industry`: PSI"), "{table}");

    // Without --fail-on-alert the same answer exits 0.
    let output = drift(vec!["--server".into(), server.clone()], Some(CLIENT_KEY)).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), table);

    // A wrong key: the server's refusal, named.
    let output = drift(
        vec!["--server".into(), server.clone()],
        Some("not-a-key-of-this-server"),
    )
    .await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("/v1/drift/propensity answered 401"),
        "{error}"
    );

    // A saved answer (what curl would write) reads the same.
    let request = Request::get("/v1/drift/propensity")
        .header(header::AUTHORIZATION, format!("Bearer {CLIENT_KEY}"))
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("answer");
    let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
    let saved = registry.path().join("drift.json");
    std::fs::write(&saved, &body).expect("write");
    let output = drift(
        vec![
            "--answer".into(),
            saved.display().to_string(),
            "--top".into(),
            "0".into(),
        ],
        None,
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let all = stdout(&output);
    assert!(
        all.contains("600 rows scored") && !all.contains("more below"),
        "{all}"
    );
    // Every feature and field has its line: one per numeric feature and field, plus the
    // heading, the column names and the verdict lines.
    let answer: Value = serde_json::from_slice(&body).expect("json");
    let listed = answer["drift"]["features"]
        .as_array()
        .expect("features")
        .len()
        + answer["drift"]["fields"].as_array().expect("fields").len();
    assert!(all.lines().count() >= listed + 3, "{all}");

    // Not an answer: said so, naming the file.
    std::fs::write(&saved, "{\"models\": []}").expect("write");
    let output = drift(vec!["--answer".into(), saved.display().to_string()], None).await;
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && error.contains("drift.json is not a drift answer"),
        "{error}"
    );
}
