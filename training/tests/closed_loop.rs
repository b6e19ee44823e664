//! The loop closes: a generated CRM history replayed through the server's API in time
//! order (each lead created when it was, its events as they happened, its conversion when
//! it happened), exported from the entity store, gives the generator's own feature table
//! bit for bit and the same trained model; and importing the same files gives the same
//! export.

#[path = "../../serving/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use features::load::{CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, OUTCOME_AT, TS, VALUE};
use features::spec::ColumnKind;
use features::synthetic::{GeneratorParams, SyntheticKind};
use models::bundle::Registry;
use polars::prelude::DataFrame;
use serde_json::{Value, json};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app};
use store::{EntityStore, RedbStore, StoreOpen};
use tower::ServiceExt as _;
use training::evaluate::{FamilyParams, ModelFamily};
use training::pipeline::{Prepared, ValidationMode, prepare, validation_plan};
use training::train::{FamilyChoice, evaluate_families};

use common::{copy_dir, ort_available, repo_root};

const KEY: &str = "closed-loop-client-key-1";
const ADMIN: &str = "closed-loop-admin-key-01";

/// Events sent in one `POST /v1/events`.
const BATCH: usize = 400;

async fn send(app: &Router, method: &str, uri: &str, body: String) -> Value {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::from(body))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 26).await.expect("body");
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(
        status == StatusCode::OK || status == StatusCode::CREATED,
        "{method} {uri}: {status} {value}"
    );
    value
}

/// What happens, in time order: a lead created, an event, a conversion.
enum Happening {
    Created { row: usize },
    Event { row: usize },
    Converted { row: usize },
}

fn str_at(frame: &DataFrame, column: &str, row: usize) -> Option<String> {
    frame
        .column(column)
        .expect("column")
        .str()
        .expect("text")
        .get(row)
        .map(str::to_owned)
}

fn i64_at(frame: &DataFrame, column: &str, row: usize) -> Option<i64> {
    frame
        .column(column)
        .expect("column")
        .i64()
        .expect("integer")
        .get(row)
}

fn f64_at(frame: &DataFrame, column: &str, row: usize) -> Option<f64> {
    frame
        .column(column)
        .expect("column")
        .f64()
        .expect("number")
        .get(row)
}

/// The table's rows as (entity, cutoff) → (label, feature bits), for a comparison that
/// does not depend on the order rows were built in.
fn rows(p: &Prepared) -> Vec<(String, i64, u8, Vec<u32>)> {
    let t = &p.table;
    let mut out: Vec<_> = (0..t.n_rows())
        .map(|i| {
            (
                t.entity_ids[i].clone(),
                t.cutoffs_ms[i],
                t.labels[i],
                t.row(i).iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn gbdt_explainer(p: &Prepared) -> models::bundle::Explainer {
    // k-fold: the time split's last cutoff holds too few conversions at this size.
    let (plan, _) = validation_plan(p, ValidationMode::KFold, 3, 42).expect("validation plan");
    let evaluations = evaluate_families(
        p,
        &plan,
        FamilyChoice::Only(ModelFamily::Gbdt),
        &FamilyParams::default(),
        42,
        |_| {},
    )
    .expect("train");
    evaluations[0].model.kind_and_explainer().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_replayed_through_the_api_exports_to_the_same_features_and_model() {
    if !ort_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 2500,
        seed: 17,
        ..GeneratorParams::default()
    }
    .generate(&work.path().join("generated"))
    .expect("generate");
    let original = prepare(&generated.spec_path, None).expect("prepare the generator's files");
    let data = original
        .data("the closed loop")
        .expect("prepared from files");

    // The server: the fixture propensity model (the generator's fields), a fresh store.
    let registry = work.path().join("registry");
    copy_dir(
        &repo_root().join("serving/tests/fixtures/registry"),
        &registry,
    );
    let keys = KeySet::new(&[KEY.into()], &[ADMIN.into()]).expect("keys");
    let state = AppState::new(Limits::default(), keys, "loading");
    let reloader = Reloader::new(Registry::new(&registry), None, PoolConfig::default());
    assert!(reloader.reload_once(&state).refused.is_empty());
    let store =
        Arc::new(RedbStore::open(StoreOpen::new(work.path().join("store"))).expect("store"));
    state.set_store(Arc::clone(&store) as Arc<dyn EntityStore>);
    let app = app(state);

    // Everything that happened, in time order (a creation before what follows it).
    let entities = &data.entities;
    let events = data.events.as_ref().expect("events");
    let outcomes = data.outcomes.as_ref().expect("outcomes");
    let mut happenings: Vec<(i64, u8, Happening)> = Vec::new();
    for row in 0..entities.height() {
        let t = i64_at(entities, CREATED_AT, row).expect("created_at");
        happenings.push((t, 0, Happening::Created { row }));
    }
    for row in 0..events.height() {
        let t = i64_at(events, TS, row).expect("ts");
        happenings.push((t, 1, Happening::Event { row }));
    }
    for row in 0..outcomes.height() {
        let t = i64_at(outcomes, OUTCOME_AT, row).expect("outcome_at");
        happenings.push((t, 2, Happening::Converted { row }));
    }
    happenings.sort_by_key(|(t, order, _)| (*t, *order));

    let mut pending: Vec<Value> = Vec::new();
    let mut requests = 0;
    let app = &app;
    let flush = |pending: &mut Vec<Value>| {
        let body = json!({ "events": std::mem::take(pending) });
        async move { send(app, "POST", "/v1/events?reasons=false", body.to_string()).await }
    };
    for (t, _, happening) in &happenings {
        match happening {
            Happening::Event { row } => {
                pending.push(json!({
                    "entity": str_at(events, ENTITY_ID, *row),
                    "id": format!("e-{row}"),
                    "ts": t,
                    "type": str_at(events, EVENT_TYPE, *row),
                    "channel": str_at(events, CHANNEL, *row),
                    "value": f64_at(events, VALUE, *row),
                }));
                if pending.len() == BATCH {
                    flush(&mut pending).await;
                    requests += 1;
                }
            }
            Happening::Created { row } => {
                if !pending.is_empty() {
                    flush(&mut pending).await;
                    requests += 1;
                }
                // The fields in the file's column order, as a CRM sends its record (a JSON
                // object keeps the order it is written in; the store keeps the order sent).
                let fields: Vec<String> = data
                    .profile_columns
                    .iter()
                    .map(|column| {
                        let value = match column.kind {
                            ColumnKind::Numeric => json!(f64_at(entities, &column.name, *row)),
                            ColumnKind::Categorical => json!(str_at(entities, &column.name, *row)),
                        };
                        format!("{}: {value}", json!(column.name))
                    })
                    .collect();
                let id = str_at(entities, ENTITY_ID, *row).expect("id");
                let body = format!(
                    "{{\"kind\": \"lead\", \"created_at\": {t}, \"profile\": {{{}}}}}",
                    fields.join(", ")
                );
                send(
                    app,
                    "PUT",
                    &format!("/v1/entities/{id}?reasons=false"),
                    body,
                )
                .await;
                requests += 1;
            }
            Happening::Converted { row } => {
                if !pending.is_empty() {
                    flush(&mut pending).await;
                    requests += 1;
                }
                let body = json!({"outcomes": [{
                    "entity": str_at(outcomes, ENTITY_ID, *row),
                    "type": "converted",
                    "ts": t,
                }]});
                send(app, "POST", "/v1/outcomes", body.to_string()).await;
                requests += 1;
            }
        }
    }
    if !pending.is_empty() {
        flush(&mut pending).await;
        requests += 1;
    }
    eprintln!(
        "replayed {} entities, {} events, {} conversions in {requests} requests",
        entities.height(),
        events.height(),
        outcomes.height()
    );

    // Exported with the spec the generator wrote, then built and trained as any dataset.
    let generated_spec =
        features::spec::DatasetSpec::from_file(&generated.spec_path).expect("spec");
    let out = work.path().join("export");
    let report = store::files::export(
        store.as_ref(),
        &out,
        features::spec::Task::Propensity,
        Some(&generated_spec),
    )
    .await
    .expect("export");
    assert_eq!(report.entities, entities.height());
    assert_eq!(report.events, events.height());
    assert_eq!(report.outcomes, outcomes.height());
    let exported = prepare(&report.spec, None).expect("prepare the export");
    assert_eq!(
        exported.plan.data(),
        original.plan.data(),
        "the same feature plan"
    );
    assert_eq!(exported.table.feature_names, original.table.feature_names);
    assert_eq!(exported.table.n_rows(), original.table.n_rows());
    assert!(
        rows(&exported) == rows(&original),
        "the same feature table, bit for bit"
    );
    assert_eq!(
        exported.table.entity_ids, original.table.entity_ids,
        "in the same order"
    );
    assert_eq!(
        gbdt_explainer(&exported),
        gbdt_explainer(&original),
        "the same trained model"
    );

    // Importing the generator's files into another store gives the same export; importing
    // them again stores nothing twice.
    let imported = RedbStore::open(StoreOpen::new(work.path().join("imported"))).expect("store");
    let first = store::files::import(&generated_spec, &imported).expect("import");
    assert_eq!(first.events, events.height());
    let again = store::files::import(&generated_spec, &imported).expect("import again");
    assert_eq!(again.duplicates, events.height());
    let out2 = work.path().join("export2");
    let report2 = store::files::export(
        &imported,
        &out2,
        features::spec::Task::Propensity,
        Some(&generated_spec),
    )
    .await
    .expect("export");
    assert_eq!(report2.events, events.height());
    let reimported = prepare(&report2.spec, None).expect("prepare");
    assert!(
        rows(&reimported) == rows(&original),
        "import then export keeps every value"
    );
}
