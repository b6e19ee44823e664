//! Where one score request's time goes, step by step, on the committed leads fixture bundle
//! (`serving/tests/fixtures/`) and a seeded 100-tree model for the reasons:
//!
//! * `parse`: the request body (a lead, its profile and 20 events) into `EntityRequest`;
//! * `check`: the entity checked against the feature plan into an `EntityHistory`;
//! * `features`: `FeaturePlan::compute_into`;
//! * `onnx_one_row`: ONNX Runtime on one row (a pooled session, inline);
//! * `explain_100_trees`: exact TreeSHAP of a 100-tree, 31-leaf model on one row, plus the
//!   grouping into reasons' sums.
//!
//! `cargo bench -p leadscore-serving --bench score` (needs ONNX Runtime, see the README).

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use features::history::DAY_MS;
use models::bundle::{Bundle, ExplainScratch, Explainer};
use models::gbdt::{GbdtParams, SplitMix64, TrainData};
use serving::request::{CheckContext, EntityRequest, parse_json};
use serving::{PoolConfig, SessionPool};

const AS_OF_MS: i64 = 1_760_000_000_000;

fn lead_body() -> String {
    let kinds = [
        ("email_open", "email"),
        ("email_click", "email"),
        ("web_visit", "organic"),
        ("pricing_page_view", "organic"),
        ("demo_request", "paid_search"),
    ];
    let events: Vec<String> = (0..20)
        .map(|i| {
            let (kind, channel) = kinds[i % kinds.len()];
            format!(
                r#"{{"ts": {}, "type": "{kind}", "channel": "{channel}", "value": {}}}"#,
                AS_OF_MS - (60 - 3 * i as i64) * DAY_MS,
                if kind == "web_visit" { "95" } else { "null" }
            )
        })
        .collect();
    format!(
        r#"{{"id": "L-1", "as_of": {AS_OF_MS}, "created_at": {}, "profile": {{"industry": "Software",
        "employee_band": "51-200", "country": "United Kingdom", "job_title": "VP Marketing",
        "seniority": "VP", "lead_source": "webinar", "annual_revenue_musd": 12.5}},
        "events": [{}]}}"#,
        AS_OF_MS - 75 * DAY_MS,
        events.join(", ")
    )
}

fn seeded_trees(width: usize) -> Explainer {
    let mut rng = SplitMix64::new(17);
    let n = 20_000;
    let x: Vec<f32> = (0..n * width).map(|_| rng.next_f64() as f32).collect();
    let y: Vec<f32> = x
        .chunks(width)
        .map(|r| f32::from(r[0] + r[1] * r[2] + 0.3 * r[3] > 0.9 + 0.3 * rng.next_f64() as f32))
        .collect();
    let trees = GbdtParams {
        n_trees: 100,
        num_leaves: 31,
        min_data_in_leaf: 20,
        ..GbdtParams::default()
    }
    .fit(&TrainData::new(&x, width, &y))
    .expect("fit");
    Explainer::Gbdt(trees)
}

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry/propensity/fixture-leads-v1");
    let bundle = Bundle::load(&dir).expect("fixture bundle");
    let plan = &bundle.manifest().feature_plan;
    let profile_index: HashMap<String, usize> = plan
        .profile_fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    let ctx = CheckContext {
        plan,
        profile_index: &profile_index,
        now_ms: AS_OF_MS + DAY_MS,
        allowed_skew_ms: 300_000,
    };
    let body = lead_body();
    let request: EntityRequest = parse_json(body.as_bytes()).expect("body");
    let entity = request.clone().to_history(&ctx, "").expect("entity");
    let mut row = vec![0f32; plan.n_features()];

    let mut group = c.benchmark_group("score_request");
    group.bench_function("parse", |b| {
        b.iter(|| parse_json::<EntityRequest>(body.as_bytes()).expect("body"))
    });
    group.bench_function("check", |b| {
        b.iter(|| request.clone().to_history(&ctx, "").expect("entity"))
    });
    group.bench_function("features", |b| {
        b.iter(|| {
            plan.compute_into(&entity.history, entity.cutoff_ms, &mut row)
                .expect("features")
        })
    });

    if let Ok(pool) = SessionPool::from_bytes(
        bundle.onnx_bytes(),
        PoolConfig {
            sessions: 1,
            intra_threads: 1,
        },
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let rows = ndarray::Array2::from_shape_vec((1, row.len()), row.clone()).expect("row");
        group.bench_function("onnx_one_row", |b| {
            b.iter(|| {
                let rows = rows.clone();
                rt.block_on(pool.with_session(true, move |s| s.run(rows.view())))
                    .expect("task")
                    .expect("run")
            })
        });
    } else {
        eprintln!("onnx_one_row skipped: ONNX Runtime is not available");
    }

    let explainer = seeded_trees(row.len());
    let mut scratch = ExplainScratch::new(&explainer);
    let mut contributions = vec![0.0; row.len()];
    let groups = plan.feature_groups();
    group.bench_function("explain_100_trees", |b| {
        b.iter(|| {
            let base = explainer.explain_into(&row, &mut scratch, &mut contributions);
            let sums: Vec<f64> = groups
                .iter()
                .map(|g| g.columns.iter().map(|&c| contributions[c]).sum())
                .collect();
            (base, sums)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
