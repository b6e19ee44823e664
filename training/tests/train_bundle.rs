//! The `train` path end to end on the project's generator and on small tabular fixtures:
//! features → validation → both families → bundle in a registry → loaded back → scored by ONNX
//! Runtime on every row. And the data guards as a user meets them: refusals that say what is
//! missing, and a leakage warning.

// The serving tests' helpers for ONNX Runtime and Python onnxruntime.
#[path = "../../serving/tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use features::synthetic::{GeneratorParams, SyntheticKind};
use models::bundle::{Bundle, Registry};
use models::onnx::ScoringModel;
use ndarray::Array2;
use training::evaluate::FamilyParams;
use training::fit::{EarlyStopping, GbdtStart};
use training::pipeline::{Prepared, ValidationMode, prepare, validation_plan};
use training::train::{
    BundleInputs, FamilyChoice, assemble_bundle, choose_family, evaluate_families,
};
use training::truth::GroundTruth;

/// Largest accepted |ONNX Runtime − Rust| for a calibrated probability (the bar).
const PARITY_TOLERANCE: f64 = 1e-5;

/// Trains both families on `prepared` (early stopping capped at 150 trees to keep the test
/// short; the trees boosted from the scorecard, the graph with both parts) and writes a bundle
/// of each to `registry`; returns them with the chosen one first.
fn train_into(prepared: &Prepared, registry: &Path, truth: Option<&GroundTruth>) -> Vec<Bundle> {
    let started = Instant::now();
    let (plan, warnings) = validation_plan(prepared, ValidationMode::Auto, 5, 7).expect("plan");
    let params = FamilyParams {
        gbdt_early_stopping: Some(EarlyStopping {
            max_trees: 150,
            patience: 20,
            ..EarlyStopping::default()
        }),
        gbdt_start: GbdtStart::Linear,
        ..FamilyParams::default()
    };
    let evaluations = evaluate_families(prepared, &plan, FamilyChoice::Best, &params, 7, |_| {})
        .expect("evaluate");
    assert_eq!(evaluations.len(), 2);
    let best = choose_family(&evaluations).expect("a family");
    let order = [best, 1 - best];
    order
        .iter()
        .enumerate()
        .map(|(i, &shipped)| {
            let contents = assemble_bundle(&BundleInputs {
                prepared,
                plan: &plan,
                warnings: &warnings,
                evaluations: &evaluations,
                shipped,
                truth,
                model: None,
                version: format!("20260101T00000{i}Z-abcdef"),
                created_at: chrono::Utc::now(),
                code_version: "test".into(),
                started,
                segments: &[],
                repeated: &[],
            })
            .expect("assemble");
            let dir = Registry::new(registry).write(&contents).expect("write");
            Bundle::load(&dir).expect("load")
        })
        .collect()
}

/// Scores every row of the table through the bundle's `model.onnx` in ONNX Runtime and in
/// Python onnxruntime, and compares with the Rust scoring model rebuilt from the bundle
/// (explainer + calibrator).
async fn check_bundle_in_runtimes(bundle: &Bundle, prepared: &Prepared) {
    let scoring = ScoringModel::new(
        bundle.explainer().model_graph(),
        bundle.manifest().calibration.clone(),
    );
    let table = &prepared.table;
    let x = Array2::from_shape_vec((table.n_rows(), table.n_features()), table.values.clone())
        .expect("shape");
    let pool = serving::SessionPool::from_file(
        &bundle.model_path(),
        serving::PoolConfig {
            sessions: 1,
            intra_threads: 1,
        },
    )
    .expect("ONNX Runtime loads the bundle");
    let got = pool.score_rows(x.clone()).await.expect("score");
    let expected: Vec<f64> = (0..table.n_rows())
        .map(|r| scoring.probability(table.row(r)))
        .collect();
    let mut worst = 0.0_f64;
    for (r, (&g, &expected)) in got.iter().zip(&expected).enumerate() {
        let diff = (f64::from(g) - expected).abs();
        worst = worst.max(diff);
        assert!(
            diff <= PARITY_TOLERANCE,
            "row {r} ({}): ONNX Runtime {g}, Rust {expected}",
            table.entity_ids[r]
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "bundle parity ({:?}): {} rows, max |Δp| {worst:.3e}",
        bundle.manifest().model_kind,
        got.len()
    );
    let python = common::python();
    if common::python_ort_available(&python) {
        common::check_onnx_in_python(
            &python,
            &format!("bundle {:?}", bundle.manifest().model_kind),
            &bundle.model_path(),
            &x,
            &expected,
            PARITY_TOLERANCE,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generator_leads_train_to_bundles_that_onnx_runtime_scores_like_rust() {
    let data = tempfile::tempdir().expect("tempdir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 12_000,
        seed: 11,
        ..GeneratorParams::default()
    }
    .generate(data.path())
    .expect("generate");
    let prepared = prepare(&generated.spec_path, None).expect("prepare");
    let truth = GroundTruth::read(&data.path().join("truth.parquet")).expect("truth");
    let registry = tempfile::tempdir().expect("registry");
    let bundles = train_into(&prepared, registry.path(), Some(&truth));
    let bundle = &bundles[0];

    let manifest = bundle.manifest();
    assert_eq!(manifest.feature_names(), prepared.table.feature_names);
    assert!(
        manifest.validation.scheme.contains("time split"),
        "{}",
        manifest.validation.scheme
    );
    let truth_auc = manifest
        .validation
        .truth_roc_auc
        .expect("truth AUC recorded");
    // The model learns real signal, and cannot beat the truth by more than noise.
    assert!(
        manifest.validation.raw.roc_auc > 0.7,
        "{:?}",
        manifest.validation
    );
    assert!(manifest.validation.raw.roc_auc < truth_auc + 0.03);
    assert_eq!(manifest.dataset.rows, prepared.table.n_rows());
    assert!(!manifest.dataset.fingerprint.files.is_empty());
    // The drift reference counts the rows of the most recent cut-off (the generator scores
    // leads monthly), which against their own reference show no drift.
    let drift = manifest.drift.as_ref().expect("drift reference");
    let table = &prepared.table;
    let last = table.cutoffs_ms.iter().copied().max().expect("rows");
    let latest: Vec<usize> = (0..table.n_rows())
        .filter(|&i| table.cutoffs_ms[i] == last)
        .collect();
    assert!(latest.len() >= training::train::MIN_DRIFT_REFERENCE_ROWS);
    assert!(latest.len() < table.n_rows());
    assert_eq!(drift.rows, latest.len());
    assert_eq!(
        drift.numeric.len()
            + drift
                .categorical
                .iter()
                .map(|c| c.shares.len())
                .sum::<usize>(),
        manifest.n_features()
    );
    let counter = drift.counter();
    let mut cells = vec![0u64; counter.n_cells()];
    for &i in &latest {
        // Profile values only decide unknown levels, which this check leaves out.
        counter.for_each_cell(table.row(i), &[], |c| cells[c] += 1);
    }
    let report = counter.report(latest.len() as u64, &cells);
    for f in &report.features {
        assert!(f.psi.expect("rows counted") < 1e-9, "{f:?}");
    }
    for f in &report.fields {
        assert!(f.psi.expect("rows counted") < 1e-9, "{f:?}");
    }
    let holdout = std::fs::read_to_string(bundle.holdout_path()).expect("holdout.csv");
    assert_eq!(
        holdout.lines().count() - 1,
        manifest.validation.raw.rows,
        "one line per held-out row"
    );
    // Sales capacity reads the held-out rows back: the generator scores leads every 30
    // days and the time split holds out the last cut-off, so they stand for 30 days.
    let rows = bundle.read_holdout().expect("reads").expect("present");
    let held = models::capacity::HeldOutScores::from_holdout(&rows, &manifest.dataset.cutoffs)
        .expect("held-out scores");
    let weeks = held.weeks().expect("dated rows");
    assert!((weeks - 30.0 / 7.0).abs() < 1e-9, "{weeks}");
    assert_eq!(held.positives(), manifest.validation.raw.positives);

    let report = std::fs::read_to_string(bundle.report_path()).expect("report");
    for needle in [
        "ROC curve",
        "Precision-recall",
        "Calibration (",
        "Cumulative gains",
        "Lift by decile",
        "Feature importance",
        "Score distribution per class",
        "(shipped)",
        "logistic",
        "gbdt",
    ] {
        assert!(report.contains(needle), "report lacks {needle}");
    }
    assert_eq!(report.matches("<svg").count(), 7);

    // The registry lists both versions; the other family's bundle is checked too, so that
    // both exported graphs go through ONNX Runtime.
    let versions = Registry::new(registry.path())
        .versions(&manifest.name())
        .expect("versions");
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_ne!(bundles[1].manifest().model_kind, manifest.model_kind);

    if !common::ort_available() {
        return;
    }
    for bundle in &bundles {
        check_bundle_in_runtimes(bundle, &prepared).await;
    }
}

/// A tabular dataset of `rows` leads (a numeric and a categorical field, label `label_of(i)`,
/// and with `leaky` a column filled in after the outcome); returns the spec path.
fn tabular(dir: &Path, rows: usize, label_of: impl Fn(usize) -> u8, leaky: bool) -> PathBuf {
    let mut csv = String::from("id,visits,source,converted");
    if leaky {
        csv.push_str(",sales_status");
    }
    csv.push('\n');
    for i in 0..rows {
        let label = label_of(i);
        let visits = (i * 7919) % 23;
        let source = ["web", "ads", "event"][i % 3];
        csv.push_str(&format!("L{i},{visits},{source},{label}"));
        if leaky {
            // Almost the label: wrong one row in fifty.
            let status = if (label == 1) != (i % 50 == 0) { 9 } else { 1 };
            csv.push_str(&format!(",{status}"));
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("leads.csv"), csv).expect("csv");
    let spec = "name = \"tabular_fixture\"\ntask = \"propensity\"\n\n[table]\npath = \
                \"leads.csv\"\nid = \"id\"\nlabel = \"converted\"\n";
    let path = dir.join("spec.toml");
    std::fs::write(&path, spec).expect("spec");
    path
}

/// The message training on `spec` is refused with, when loading or when validating.
fn refusal(spec: &Path) -> String {
    let prepared = match prepare(spec, None) {
        Ok(prepared) => prepared,
        Err(e) => return e.to_string(),
    };
    match validation_plan(&prepared, ValidationMode::Auto, 5, 1) {
        Ok(_) => panic!("training on {} was not refused", spec.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn too_few_positives_are_refused_with_the_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 10 positives in 400 rows.
    let spec = tabular(dir.path(), 400, |i| u8::from(i % 40 == 0), false);
    let error = refusal(&spec);
    assert!(error.starts_with("cannot train"), "{error}");
    assert!(error.contains("positive"), "{error}");
    assert!(error.contains("20"), "names the minimum: {error}");
}

#[test]
fn a_constant_label_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = tabular(dir.path(), 300, |_| 0, false);
    let error = refusal(&spec);
    assert!(
        error.contains("`converted` is 0 on all 300 rows"),
        "{error}"
    );
}

#[test]
fn a_column_that_gives_the_label_away_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = tabular(dir.path(), 600, |i| u8::from((i * 31) % 7 < 2), true);
    let prepared = prepare(&spec, None).expect("prepare");
    let (_, warnings) = validation_plan(&prepared, ValidationMode::Auto, 5, 1).expect("plan");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("sales_status"), "{warnings:?}");
}
