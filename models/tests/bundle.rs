//! The bundle format: write → load round trips, atomicity (nothing is left
//! behind by a failed write, nothing is ever overwritten), precise errors
//! on damaged bundles, the registry listing, thresholds and grades.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use features::plan::{PlanInputs, ProfileInput};
use features::spec::{ColumnKind, FeatureOptions, Form, Task};
use features::{DatasetSpec, EntityHistory, Event, FeaturePlan, FeaturePlanParams, ProfileValue};
use models::bundle::{
    self, Bundle, BundleContents, BundleError, DataFingerprint, DatasetInfo, Explainer,
    ExplanationKind, FeatureKind, FileFingerprint, Grade, GradeBands, HoldoutRow, Manifest,
    ModelKind, ModelName, Registry, Thresholds, ValidationSummary,
};
use models::calibration::Calibrator;
use models::drift::DriftReference;
use models::gbdt::Gbdt;
use models::metrics::BinaryMetrics;
use models::onnx::{LinearModel, ModelGraph, ScoringModel, ToOnnx};

const SPEC: &str = r#"
name = "tiny"
task = "propensity"

[entities]
path = "leads.csv"
id = "lead_id"
created_at = "created_at"

[events]
path = "events.csv"
entity_id = "lead_id"
timestamp = "ts"
event_type = "type"
channel = "channel"
value = "value"

[outcomes]
path = "outcomes.csv"
entity_id = "lead_id"
timestamp = "converted_at"

[label]
horizon_days = 30
cutoffs = { dates = ["2025-02-01", "2025-03-01"] }

[features]
windows_days = [7, 30]
half_life_days = 10.0
min_level_count = 2
max_levels = 5
"#;

fn spec() -> DatasetSpec {
    DatasetSpec::from_toml(SPEC, Path::new("tiny.toml"), PathBuf::new()).expect("valid spec")
}

/// Events form: `industry` (Software kept, Retail rare → `<other>`),
/// `employees` numeric, two event types, two channels.
fn profile_inputs() -> Vec<ProfileInput> {
    vec![
        ProfileInput {
            name: "industry".into(),
            kind: ColumnKind::Categorical,
            level_counts: [("Software".to_string(), 5), ("Retail".to_string(), 1)].into(),
        },
        ProfileInput {
            name: "employees".into(),
            kind: ColumnKind::Numeric,
            level_counts: HashMap::new(),
        },
    ]
}

fn plan() -> FeaturePlan {
    FeaturePlanParams::new(FeatureOptions {
        windows_days: vec![7, 30],
        half_life_days: 10.0,
        min_level_count: 2,
        max_levels: 5,
        creation_calendar: false,
        whole_history: true,
    })
    .fit(&PlanInputs {
        form: Form::Events,
        profile: profile_inputs(),
        event_types: [
            ("email_open".to_string(), false),
            ("web_visit".to_string(), true),
        ]
        .into(),
        channels: vec!["web".into(), "email".into()],
    })
    .expect("plan fits")
}

/// A one-tree model splitting on `employees` (feature 3).
fn gbdt(n_features: usize) -> Gbdt {
    serde_json::from_value(serde_json::json!({
        "n_features": n_features,
        "base_score": -0.5,
        "trees": [{"nodes": [
            {"type": "split", "feature": 3, "threshold": 50.0, "missing_left": true,
             "left": 1, "right": 2, "gain": 1.5, "cover": 8.0},
            {"type": "leaf", "value": -0.25, "cover": 5.0},
            {"type": "leaf", "value": 0.75, "cover": 3.0},
        ]}],
        "best_iteration": null,
    }))
    .expect("valid trees")
}

/// Metrics with short decimals: serde_json without its `float_roundtrip`
/// feature may read a 17-digit float back one ulp off (see
/// `computed_metrics_round_trip_to_within_an_ulp`).
fn metrics(shift: f64) -> BinaryMetrics {
    BinaryMetrics {
        rows: 12,
        positives: 6,
        base_rate: 0.5,
        roc_auc: 0.8125 * shift,
        pr_auc: 0.875,
        log_loss: 0.46875,
        brier: 0.15625,
        ece: 0.03125,
        ece_bins: 10,
        top_decile_lift: Some(2.0),
    }
}

fn thresholds() -> Thresholds {
    Thresholds {
        sales_ready: 0.5,
        grades: GradeBands {
            a: 0.6,
            b: 0.3,
            c: 0.1,
        },
    }
}

/// The drift reference of three leads' feature rows.
fn drift_reference(plan: &FeaturePlan) -> DriftReference {
    let lead = |industry: ProfileValue, employees: ProfileValue, visits: i64| EntityHistory {
        created_at_ms: 0,
        profile: vec![industry, employees],
        events: (0..visits)
            .map(|i| Event {
                ts_ms: i * 3_600_000,
                event_type: "web_visit".into(),
                channel: Some("web".into()),
                value: Some(1.0),
            })
            .collect(),
    };
    let rows = [
        lead(
            ProfileValue::Text("Software".into()),
            ProfileValue::Number(10.0),
            3,
        ),
        lead(
            ProfileValue::Text("Retail".into()),
            ProfileValue::Missing,
            0,
        ),
        lead(ProfileValue::Missing, ProfileValue::Number(2000.0), 1),
    ]
    .map(|h| plan.compute(&h, 10 * 86_400_000).expect("features"));
    DriftReference::fit(plan, rows.iter().map(Vec::as_slice), &profile_inputs())
        .expect("reference fits")
}

fn propensity() -> ModelName {
    ModelName::of_task(Task::Propensity)
}

fn churn() -> ModelName {
    ModelName::of_task(Task::Churn)
}

fn manifest(version: &str, kind: ModelKind) -> Manifest {
    let plan = plan();
    let drift = drift_reference(&plan);
    Manifest {
        format_version: bundle::BUNDLE_FORMAT_VERSION,
        task: Task::Propensity,
        model: None,
        version: version.into(),
        model_kind: kind,
        created_at: Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap(),
        code_version: "0.1.0 (abc1234)".into(),
        features: bundle::describe_features(&plan),
        feature_plan: plan,
        dataset: DatasetInfo {
            name: "tiny".into(),
            spec: spec(),
            fingerprint: DataFingerprint {
                files: vec![FileFingerprint {
                    path: "events.csv".into(),
                    bytes: 3,
                    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                        .into(),
                }],
            },
            rows: 12,
            positives: 6,
            cutoffs: vec!["2025-02-01".into(), "2025-03-01".into()],
        },
        validation: ValidationSummary {
            scheme: "time split: train cutoffs < 2025-03-01, validate 2025-03-01".into(),
            raw: metrics(1.0),
            calibrated: metrics(0.5),
            truth_roc_auc: Some(0.875),
        },
        calibration: Calibrator::Platt { a: -1.5, b: 0.25 },
        thresholds: thresholds(),
        explanation: kind.explanation(),
        drift: Some(drift),
        model_sha256: None,
    }
}

fn holdout() -> Vec<HoldoutRow> {
    vec![
        HoldoutRow {
            entity_id: "L-1".into(),
            cutoff: Some("2025-03-01".into()),
            label: 1,
            score: 0.875,
            profile: vec!["webinar".into()],
        },
        HoldoutRow {
            entity_id: "Acme, \"Inc\"".into(),
            cutoff: None,
            label: 0,
            score: 0.0,
            profile: vec!["partner, \"EU\"".into()],
        },
    ]
}

const HOLDOUT_CSV: &str = "entity_id,cutoff,label,score,profile.lead_source\nL-1,2025-03-01,1,0.875,webinar\n\
     \"Acme, \"\"Inc\"\"\",,0,0,\"partner, \"\"EU\"\"\"\n";

fn gbdt_contents(version: &str) -> BundleContents {
    let mut manifest = manifest(version, ModelKind::Gbdt);
    let model = gbdt(manifest.n_features());
    let onnx = model.to_tree_ensemble().to_onnx_bytes().expect("onnx");
    manifest.model_sha256 = Some(bundle::sha256_hex(&onnx));
    BundleContents {
        onnx,
        explainer: Explainer::Gbdt(model),
        manifest,
        report_html: "<html><body>report</body></html>\n".into(),
        holdout: holdout(),
        holdout_fields: vec!["lead_source".into()],
    }
}

fn linear_contents(version: &str) -> BundleContents {
    let mut manifest = manifest(version, ModelKind::Logistic);
    let n = manifest.n_features();
    let weights: Vec<f64> = (0..n).map(|j| (j as f64 - 10.0) / 8.0).collect();
    let model = LinearModel {
        weights: weights.iter().map(|&w| w as f32).collect(),
        bias: -0.5,
        missing_values: (0..n).map(|j| j as f32 / 4.0).collect(),
    };
    let onnx = model.to_onnx_bytes().expect("onnx");
    manifest.model_sha256 = Some(bundle::sha256_hex(&onnx));
    BundleContents {
        onnx,
        explainer: Explainer::Linear {
            weights,
            bias: -0.5,
            reference: (0..n).map(|j| j as f64 / 4.0).collect(),
        },
        manifest,
        report_html: "<html>linear</html>".into(),
        holdout: holdout(),
        holdout_fields: vec!["lead_source".into()],
    }
}

/// Names in a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn error_path(err: &BundleError) -> &Path {
    match err {
        BundleError::Io { path, .. }
        | BundleError::Missing { path }
        | BundleError::Corrupt { path, .. }
        | BundleError::UnsupportedFormat { path, .. }
        | BundleError::Invalid { path, .. }
        | BundleError::AlreadyExists { path }
        | BundleError::Locked { path, .. } => path,
    }
}

#[test]
fn gbdt_bundle_round_trips() {
    let root = tempfile::tempdir().expect("tempdir");
    let contents = gbdt_contents("20250304T050607Z-a1b2c3");
    let dir = bundle::write_bundle(root.path(), &contents).expect("written");
    assert_eq!(
        dir,
        root.path()
            .join("propensity")
            .join("20250304T050607Z-a1b2c3")
    );
    assert_eq!(
        entries(&dir),
        [
            "explainer.json",
            "holdout.csv",
            "manifest.json",
            "model.onnx",
            "report.html"
        ]
    );
    assert_eq!(
        entries(&root.path().join("propensity")),
        ["20250304T050607Z-a1b2c3"]
    );

    let loaded = Bundle::load(&dir).expect("loads");
    assert_eq!(loaded.manifest(), &contents.manifest);
    assert_eq!(loaded.explainer(), &contents.explainer);
    assert_eq!(loaded.onnx_bytes(), contents.onnx.as_slice());
    assert_eq!(
        loaded.manifest().feature_names(),
        contents.manifest.feature_plan.feature_names()
    );
    let report = fs::read_to_string(loaded.report_path()).expect("report");
    assert_eq!(report, contents.report_html);
    let csv = fs::read_to_string(loaded.holdout_path()).expect("holdout");
    assert_eq!(csv, HOLDOUT_CSV);
    // Read back, quoting and all.
    assert_eq!(
        loaded.read_holdout().expect("holdout parses"),
        Some(holdout())
    );
    let table = loaded
        .read_holdout_table()
        .expect("holdout parses")
        .expect("has one");
    assert_eq!(table.fields, ["lead_source"]);
    // A row with a profile value short is named.
    fs::write(
        loaded.holdout_path(),
        "entity_id,cutoff,label,score,profile.lead_source\nL-1,,1,0.5,web\nL-2,,0,0.5\n",
    )
    .expect("write");
    let err = loaded.read_holdout().expect_err("short row");
    assert!(
        err.to_string().contains("line 3: 4 fields, expected 5"),
        "{err}"
    );
    // A broken line is named; a missing file is no held-out rows, not an error.
    fs::write(
        loaded.holdout_path(),
        "entity_id,cutoff,label,score\nL-1,,1,0.5\nL-2,,2,0.5\n",
    )
    .expect("write");
    let err = loaded.read_holdout().expect_err("label 2");
    assert!(
        err.to_string().contains("line 3: label `2` is not 0 or 1"),
        "{err}"
    );
    fs::write(
        loaded.holdout_path(),
        "entity_id,cutoff,label,score\n\"L-1,,1,0.5\n",
    )
    .expect("write");
    let err = loaded.read_holdout().expect_err("open quote");
    assert!(
        err.to_string()
            .contains("line 2: a quoted field is not closed"),
        "{err}"
    );
    fs::remove_file(loaded.holdout_path()).expect("remove");
    assert_eq!(loaded.read_holdout().expect("no file is fine"), None);

    // The manifest is readable JSON with the documented field names.
    let text = fs::read_to_string(dir.join(bundle::MANIFEST_FILE)).expect("manifest");
    assert!(text.contains("\n  \"format_version\": 1,\n"), "{text}");
    assert!(text.contains("\"created_at\": \"2025-03-04T05:06:07Z\""));
    assert!(text.contains("\"explanation\": \"tree_shap\""));
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["task"], "propensity");
    assert_eq!(json["model_kind"], "gbdt");
    assert_eq!(
        json["features"][1],
        serde_json::json!({"name": "industry=<other>", "index": 1, "kind": "categorical",
                           "field": "industry", "level": "<other>"})
    );
    assert_eq!(
        json["features"][3],
        serde_json::json!({"name": "employees", "index": 3, "kind": "numeric",
                           "field": "employees"})
    );
    assert_eq!(json["thresholds"]["grades"]["b"], 0.3);
    let explainer: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(bundle::EXPLAINER_FILE)).unwrap())
            .unwrap();
    assert_eq!(explainer["kind"], "gbdt");
}

#[test]
fn linear_bundle_round_trips_through_the_registry() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    let contents = linear_contents("v1");
    registry.write(&contents).expect("written");
    let loaded = registry.load(&propensity(), "v1").expect("loads");
    assert_eq!(loaded.manifest(), &contents.manifest);
    assert_eq!(loaded.explainer(), &contents.explainer);
    assert_eq!(
        loaded.manifest().explanation,
        ExplanationKind::LinearContributions
    );
    assert_eq!(
        registry.latest(&propensity()).unwrap().as_deref(),
        Some("v1")
    );
    assert!(registry.load(&propensity(), "../v1").is_err());
}

#[test]
fn trees_on_linear_bundle_round_trips_and_its_explainer_rebuilds_the_graph() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    let manifest = manifest("v1", ModelKind::GbdtOnLinear);
    let n = manifest.n_features();
    let trees = gbdt(n);
    let explainer = Explainer::GbdtOnLinear {
        weights: (0..n).map(|j| (j as f64 - 3.0) / 5.0).collect(),
        bias: 0.25,
        reference: (0..n).map(|j| j as f64 / 2.0).collect(),
        trees,
    };
    let graph = explainer.model_graph();
    assert!(matches!(graph, ModelGraph::TreesOnLinear { .. }));
    let contents = BundleContents {
        onnx: ScoringModel::uncalibrated(graph.clone())
            .to_onnx_bytes()
            .expect("onnx"),
        explainer,
        manifest,
        report_html: "<html>trees on linear</html>".into(),
        holdout: holdout(),
        holdout_fields: vec!["lead_source".into()],
    };
    assert_eq!(
        contents.manifest.explanation,
        ExplanationKind::LinearAndTreeShap
    );
    registry.write(&contents).expect("written");
    let loaded = registry.load(&propensity(), "v1").expect("loads");
    assert_eq!(loaded.explainer(), &contents.explainer);
    assert_eq!(loaded.explainer().model_graph(), graph);

    // The explainer must be the kind the manifest names.
    let mut wrong = contents.clone();
    wrong.explainer = Explainer::Gbdt(gbdt(n));
    let other = tempfile::tempdir().expect("tempdir");
    let err = Registry::new(other.path())
        .write(&wrong)
        .expect_err("refused");
    assert!(err.to_string().contains("the manifest says"), "{err}");
}

#[test]
fn features_are_described_from_the_plan() {
    let plan = plan();
    let described = bundle::describe_features(&plan);
    assert_eq!(described.len(), plan.n_features());
    let kinds: Vec<&FeatureKind> = described.iter().map(|d| &d.kind).collect();
    let cat = |level: &str| FeatureKind::Categorical {
        field: "industry".into(),
        level: level.into(),
    };
    assert_eq!(kinds[0], &cat("Software"));
    assert_eq!(kinds[1], &cat("<other>"));
    assert_eq!(kinds[2], &cat("<missing>"));
    assert_eq!(
        kinds[3],
        &FeatureKind::Numeric {
            field: "employees".into()
        }
    );
    assert_eq!(described[4].name, "tenure_days");
    assert!(kinds[4..].iter().all(|k| **k == FeatureKind::History));
    for (i, d) in described.iter().enumerate() {
        assert_eq!(d.index, i);
        assert_eq!(d.name, plan.feature_names()[i]);
    }
}

#[test]
fn an_existing_version_is_never_overwritten() {
    let root = tempfile::tempdir().expect("tempdir");
    let task_dir = root.path().join("propensity");
    let first = gbdt_contents("v1");
    bundle::write_bundle(root.path(), &first).expect("first write");
    let mut second = gbdt_contents("v1");
    second.report_html = "<html>second</html>".into();
    let err = bundle::write_bundle(root.path(), &second).expect_err("exists");
    assert!(
        matches!(&err, BundleError::AlreadyExists { path } if *path == task_dir.join("v1")),
        "{err}"
    );
    let report = fs::read_to_string(task_dir.join("v1").join(bundle::REPORT_FILE)).unwrap();
    assert_eq!(report, first.report_html);

    // An empty directory (which a bare rename would replace) and a file.
    fs::create_dir(task_dir.join("v2")).unwrap();
    let err = bundle::write_bundle(root.path(), &gbdt_contents("v2")).expect_err("exists");
    assert!(matches!(err, BundleError::AlreadyExists { .. }), "{err}");
    assert!(entries(&task_dir.join("v2")).is_empty());
    fs::write(task_dir.join("v3"), "not a bundle").unwrap();
    let err = bundle::write_bundle(root.path(), &gbdt_contents("v3")).expect_err("exists");
    assert!(matches!(err, BundleError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        fs::read_to_string(task_dir.join("v3")).unwrap(),
        "not a bundle"
    );

    assert_eq!(
        entries(&task_dir),
        ["v1", "v2", "v3"],
        "no temporary directory left"
    );
}

#[test]
fn a_failure_halfway_leaves_nothing_behind() {
    let root = tempfile::tempdir().expect("tempdir");
    let task_dir = root.path().join("propensity");

    // Holdout rows are checked as they are written, after the model, the
    // explainer and the report: the temporary directory has content by then.
    let mut contents = gbdt_contents("v1");
    contents.holdout.push(HoldoutRow {
        entity_id: "L-3".into(),
        cutoff: None,
        label: 1,
        score: f64::NAN,
        profile: vec![String::new()],
    });
    let err = bundle::write_bundle(root.path(), &contents).expect_err("bad holdout");
    assert!(matches!(err, BundleError::Invalid { .. }), "{err}");
    assert_eq!(error_path(&err), task_dir.join("v1").join("holdout.csv"));
    assert!(err.to_string().contains("row 3"), "{err}");
    assert!(task_dir.is_dir());
    assert!(entries(&task_dir).is_empty(), "{:?}", entries(&task_dir));

    let mut contents = gbdt_contents("v1");
    contents.holdout[0].label = 2;
    let err = bundle::write_bundle(root.path(), &contents).expect_err("bad label");
    assert!(err.to_string().contains("row 1: label 2"), "{err}");
    assert!(entries(&task_dir).is_empty());

    // An explainer inconsistent with the features is refused up front.
    let mut contents = linear_contents("v1");
    if let Explainer::Linear { reference, .. } = &mut contents.explainer {
        reference.pop();
    }
    let err = bundle::write_bundle(root.path(), &contents).expect_err("bad explainer");
    assert_eq!(error_path(&err), task_dir.join("v1").join("explainer.json"));
    assert!(err.to_string().contains("reference values"), "{err}");
    assert!(entries(&task_dir).is_empty());

    // A metric that JSON cannot carry (NaN would be written as null).
    let mut contents = gbdt_contents("v1");
    contents.manifest.validation.raw.roc_auc = f64::NAN;
    let err = bundle::write_bundle(root.path(), &contents).expect_err("NaN metric");
    assert_eq!(error_path(&err), task_dir.join("v1").join("manifest.json"));
    assert!(entries(&task_dir).is_empty());

    // Finally the same version writes fine.
    bundle::write_bundle(root.path(), &gbdt_contents("v1")).expect("written");
    assert_eq!(entries(&task_dir), ["v1"]);
}

#[test]
fn inconsistent_contents_are_refused_naming_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("propensity").join("v1");
    let refused = |contents: BundleContents, file: &str, words: &str| {
        let err = bundle::write_bundle(root.path(), &contents).expect_err("refused");
        assert_eq!(error_path(&err), dir.join(file), "{err}");
        assert!(err.to_string().contains(words), "{err}");
    };

    let mut c = gbdt_contents("v1");
    c.manifest.features.swap(0, 1);
    refused(c, "manifest.json", "`features` entry 0");
    let mut c = gbdt_contents("v1");
    c.manifest.explanation = ExplanationKind::LinearContributions;
    refused(c, "manifest.json", "explained by TreeShap");
    let mut c = gbdt_contents("v1");
    c.manifest.thresholds.grades.b = 0.7;
    refused(c, "manifest.json", "a > b > c");
    let mut c = gbdt_contents("v1");
    c.manifest.dataset.spec.task = Task::Churn;
    refused(c, "manifest.json", "task is churn");
    let mut c = gbdt_contents("v1");
    c.explainer = Explainer::Gbdt(gbdt(c.manifest.n_features() + 1));
    refused(c, "explainer.json", "the model has");
    let mut c = linear_contents("v1");
    c.explainer = Explainer::Gbdt(gbdt(c.manifest.n_features()));
    c.manifest.model_kind = ModelKind::Logistic;
    refused(c, "explainer.json", "the manifest says");
    // A digest that does not match what is written.
    let mut c = gbdt_contents("v1");
    let middle = c.onnx.len() / 2;
    c.onnx[middle] ^= 0x01;
    refused(c, "model.onnx", "the manifest's `model_sha256` is");
    let mut c = gbdt_contents("v1");
    c.manifest.model_sha256 = Some("ABC".into());
    refused(c, "manifest.json", "`model_sha256` is \"ABC\"");
    // The ONNX checks themselves, on bundles without a digest.
    let mut c = gbdt_contents("v1");
    c.manifest.model_sha256 = None;
    c.onnx = LinearModel {
        weights: vec![1.0, 2.0],
        bias: 0.0,
        missing_values: vec![0.0, 0.0],
    }
    .to_onnx_bytes()
    .unwrap();
    refused(c, "model.onnx", "float32[N, 2]");
    let mut c = gbdt_contents("v1");
    c.manifest.model_sha256 = None;
    c.onnx.clear();
    refused(c, "model.onnx", "is empty");

    let mut c = gbdt_contents("../escape");
    c.manifest.version = "../escape".into();
    let err = bundle::write_bundle(root.path(), &c).expect_err("bad name");
    assert!(err.to_string().contains("version name"), "{err}");
    assert!(!root.path().join("escape").exists());
    assert!(entries(&root.path().join("propensity")).is_empty());
}

/// Writes a bundle, lets `damage` change it, and returns the load error.
fn load_error(damage: impl FnOnce(&Path)) -> (PathBuf, BundleError) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = bundle::write_bundle(root.path(), &gbdt_contents("v1")).expect("written");
    damage(&dir);
    let err = Bundle::load(&dir).expect_err("damaged");
    (dir, err)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

#[test]
fn damaged_bundles_give_precise_errors() {
    let (dir, err) = load_error(|dir| {
        let path = dir.join("manifest.json");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
    });
    assert!(matches!(err, BundleError::Corrupt { .. }), "{err}");
    assert_eq!(error_path(&err), dir.join("manifest.json"));

    let (dir, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m["format_version"] = 2.into()
        })
    });
    assert!(
        matches!(
            err,
            BundleError::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(error_path(&err), dir.join("manifest.json"));

    // The format version is checked before fields that may have changed.
    let (_, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m["format_version"] = 7.into();
            m["features"] = "a later layout".into();
        })
    });
    assert!(
        matches!(err, BundleError::UnsupportedFormat { found: 7, .. }),
        "{err}"
    );

    let (_, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m.as_object_mut().unwrap().remove("format_version");
        })
    });
    assert!(err.to_string().contains("no `format_version`"), "{err}");

    let (dir, err) = load_error(|dir| fs::remove_file(dir.join("model.onnx")).unwrap());
    assert!(matches!(err, BundleError::Missing { .. }), "{err}");
    assert_eq!(error_path(&err), dir.join("model.onnx"));

    // Not an ONNX model: the digest tells first; without one, the decoder.
    let (dir, err) = load_error(|dir| fs::write(dir.join("model.onnx"), b"\xff\xff\xff").unwrap());
    assert!(matches!(err, BundleError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256 is"), "{err}");
    assert_eq!(error_path(&err), dir.join("model.onnx"));
    let (dir, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m.as_object_mut().unwrap().remove("model_sha256");
        });
        fs::write(dir.join("model.onnx"), b"\xff\xff\xff").unwrap();
    });
    assert!(matches!(err, BundleError::Corrupt { .. }), "{err}");
    assert_eq!(error_path(&err), dir.join("model.onnx"));

    let (dir, err) = load_error(|dir| fs::remove_file(dir.join("manifest.json")).unwrap());
    assert!(matches!(err, BundleError::Missing { .. }), "{err}");
    assert_eq!(error_path(&err), dir.join("manifest.json"));

    // A feature plan whose stored names differ from what it derives.
    let (_, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m["feature_plan"]["feature_names"][0] = "industry=Hardware".into()
        })
    });
    assert!(matches!(err, BundleError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("stored feature names"), "{err}");

    let (dir, err) =
        load_error(|dir| edit_json(&dir.join("explainer.json"), |e| e["n_features"] = 40.into()));
    assert!(matches!(err, BundleError::Invalid { .. }), "{err}");
    assert_eq!(error_path(&err), dir.join("explainer.json"));

    let (dir, err) = load_error(|dir| {
        edit_json(&dir.join("manifest.json"), |m| {
            m["thresholds"]["sales_ready"] = 1.5.into()
        })
    });
    assert!(err.to_string().contains("sales_ready is 1.5"), "{err}");
    assert_eq!(error_path(&err), dir.join("manifest.json"));
}

#[test]
fn the_folder_must_match_task_and_version() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = bundle::write_bundle(root.path(), &gbdt_contents("v1")).expect("written");
    let moved = root.path().join("propensity").join("v2");
    fs::rename(&dir, &moved).unwrap();
    let err = Bundle::load(&moved).expect_err("renamed");
    assert!(err.to_string().contains("version is \"v1\""), "{err}");

    let churn = root.path().join("churn");
    fs::create_dir(&churn).unwrap();
    fs::rename(&moved, churn.join("v1")).unwrap();
    let err = Bundle::load(&churn.join("v1")).expect_err("wrong task");
    assert!(
        err.to_string().contains(
            "the model's name is propensity (its task's: the manifest names no model) but the \
             bundle is in the folder \"churn\""
        ),
        "{err}"
    );
}

#[test]
fn versions_lists_complete_bundles_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    assert!(registry.versions(&propensity()).unwrap().is_empty());
    assert_eq!(registry.latest(&churn()).unwrap(), None);

    let early = bundle::new_version_name(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap());
    let late = bundle::new_version_name(Utc.with_ymd_and_hms(2025, 11, 2, 3, 4, 5).unwrap());
    registry.write(&gbdt_contents(&late)).unwrap();
    registry.write(&gbdt_contents(&early)).unwrap();

    let task_dir = registry.model_dir(&propensity());
    // A run killed while writing: a temporary directory, even with a manifest.
    let tmp = task_dir.join(format!(".tmp-{late}-0123456789ab"));
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("manifest.json"), "{}").unwrap();
    // A run killed between claiming its name and renaming: an empty directory.
    fs::create_dir(task_dir.join("20991231T235959Z-ffffff")).unwrap();
    fs::create_dir(task_dir.join(".hidden")).unwrap();
    fs::write(task_dir.join("notes.txt"), "x").unwrap();
    // A promotion killed between writing the new LIVE and renaming it.
    let live_tmp = task_dir.join(".tmp-live-00000000000000ab");
    fs::write(&live_tmp, format!("{late}\n")).unwrap();

    assert_eq!(
        registry.versions(&propensity()).unwrap(),
        [early.clone(), late.clone()]
    );
    assert_eq!(registry.latest(&propensity()).unwrap(), Some(late.clone()));

    let removed =
        bundle::clean_stale_temp_dirs(root.path(), &propensity(), Duration::ZERO).unwrap();
    assert_eq!(
        removed,
        [tmp, live_tmp, task_dir.join("20991231T235959Z-ffffff")]
    );
    assert_eq!(
        entries(&task_dir),
        [
            ".hidden".to_string(),
            early.clone(),
            late.clone(),
            "notes.txt".into()
        ]
    );
    // Recent leftovers are kept.
    let tmp = task_dir.join(".tmp-x-1");
    fs::create_dir(&tmp).unwrap();
    let removed =
        bundle::clean_stale_temp_dirs(root.path(), &propensity(), Duration::from_secs(3600))
            .unwrap();
    assert!(removed.is_empty());
    assert!(tmp.exists());
    for version in [early, late] {
        registry.load(&propensity(), &version).expect("still loads");
    }
}

#[test]
fn version_names_sort_and_are_checked() {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
    let a = bundle::new_version_name(at);
    let b = bundle::new_version_name(at);
    assert_eq!(a.len(), "20250301T120000Z-".len() + 6);
    assert!(a.starts_with("20250301T120000Z-"), "{a}");
    assert!(
        a[17..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_ne!(a, b, "random parts differ");
    assert!(bundle::check_version_name(&a).is_ok());
    let later = bundle::new_version_name(at + chrono::Duration::seconds(1));
    assert!(later > a && later > b);
    for bad in [
        "",
        ".",
        "..",
        ".tmp-x",
        "../x",
        "a/b",
        "a b",
        "é",
        &"x".repeat(101),
    ] {
        assert!(bundle::check_version_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn thresholds_are_checked_and_grade() {
    let t = thresholds();
    assert_eq!(t.check(), Ok(()));
    assert_eq!(t.grade(0.6), Grade::A);
    assert_eq!(t.grade(1.0), Grade::A);
    assert_eq!(t.grade(0.599_999), Grade::B);
    assert_eq!(t.grade(0.3), Grade::B);
    assert_eq!(t.grade(0.299_999), Grade::C);
    assert_eq!(t.grade(0.1), Grade::C);
    assert_eq!(t.grade(0.099_999), Grade::D);
    assert_eq!(t.grade(0.0), Grade::D);
    assert_eq!(t.grade(f64::NAN), Grade::D);
    assert!(t.is_sales_ready(0.5) && !t.is_sales_ready(0.499) && !t.is_sales_ready(f64::NAN));
    assert_eq!(Grade::B.to_string(), "B");
    assert_eq!(serde_json::to_string(&Grade::C).unwrap(), "\"C\"");

    let with = |a: f64, b: f64, c: f64, sales_ready: f64| Thresholds {
        sales_ready,
        grades: GradeBands { a, b, c },
    };
    for bad in [
        with(0.3, 0.3, 0.1, 0.5),
        with(0.6, 0.1, 0.3, 0.5),
        with(0.6, 0.3, 0.0, 0.5),
        with(1.0, 0.3, 0.1, 0.5),
        with(f64::NAN, 0.3, 0.1, 0.5),
        with(0.6, 0.3, 0.1, f64::NAN),
        with(0.6, 0.3, 0.1, 0.0),
        with(0.6, 0.3, -0.1, 0.5),
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
    assert!(with(0.9, 0.5, 0.2, 0.05).check().is_ok());
}

#[test]
fn data_files_are_fingerprinted() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("events.csv"), "abc").unwrap();
    fs::write(dir.path().join("leads.csv"), "").unwrap();
    let fp = bundle::fingerprint_files(
        dir.path(),
        &[PathBuf::from("events.csv"), PathBuf::from("leads.csv")],
    )
    .expect("fingerprint");
    assert_eq!(
        fp.files[0],
        FileFingerprint {
            path: "events.csv".into(),
            bytes: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        }
    );
    assert_eq!(
        fp.files[1].sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );

    let mut spec = spec();
    spec.base_dir = dir.path().to_path_buf();
    let err = bundle::fingerprint_spec(&spec).expect_err("outcomes.csv is missing");
    assert_eq!(error_path(&err), dir.path().join("outcomes.csv"));
    fs::write(dir.path().join("outcomes.csv"), "x").unwrap();
    let fp = bundle::fingerprint_spec(&spec).expect("fingerprint");
    let paths: Vec<&Path> = fp.files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("leads.csv"),
            Path::new("events.csv"),
            Path::new("outcomes.csv")
        ]
    );
}

#[test]
fn onnx_input_width_reads_the_graph() {
    let n = plan().n_features();
    let bytes = gbdt(n).to_tree_ensemble().to_onnx_bytes().unwrap();
    assert_eq!(bundle::onnx_input_width(&bytes), Ok(n));
    assert!(bundle::onnx_input_width(b"\x08").is_err());
}

/// serde_json as the workspace builds it (without `float_roundtrip`) may
/// read a float of 17 significant digits back one ulp off; nothing else
/// may change. When the workspace turns that feature on, this becomes exact.
#[test]
fn computed_metrics_and_cut_offs_round_trip_exactly() {
    let scores = [
        0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.15, 0.85,
    ];
    let labels = [
        false, false, true, false, false, true, true, false, true, true, false, true,
    ];
    let computed = BinaryMetrics::compute(&scores, &labels).expect("metrics");
    let root = tempfile::tempdir().expect("tempdir");
    let mut contents = gbdt_contents("v1");
    contents.manifest.validation.raw = computed.clone();
    contents.manifest.calibration = Calibrator::Platt {
        a: -1.234_567_890_123_456_7,
        b: 0.474_589_985_400_304_84,
    };
    // A cut-off the default float parser read one step high (0.023221032115031): a lead at
    // exactly this probability left grade A.
    contents.manifest.thresholds.grades.a = 0.023_221_032_115_030_998;
    contents.manifest.thresholds.grades.b = 0.02;
    contents.manifest.thresholds.grades.c = 0.01;
    contents.manifest.thresholds.sales_ready = 0.015;
    let dir = bundle::write_bundle(root.path(), &contents).expect("written");
    let loaded = Bundle::load(&dir).expect("loads");
    let back = &loaded.manifest().validation.raw;
    let ulps = |x: f64, y: f64| x.to_bits().abs_diff(y.to_bits());
    assert_eq!((back.rows, back.positives, back.ece_bins), (12, 6, 10));
    for (x, y) in [
        (back.base_rate, computed.base_rate),
        (back.roc_auc, computed.roc_auc),
        (back.pr_auc, computed.pr_auc),
        (back.log_loss, computed.log_loss),
        (back.brier, computed.brier),
        (back.ece, computed.ece),
    ] {
        assert_eq!(ulps(x, y), 0, "{x} read back as {y}");
    }
    assert_eq!(loaded.manifest().thresholds, contents.manifest.thresholds);
    let Calibrator::Platt { a, b } = loaded.manifest().calibration else {
        panic!("not Platt");
    };
    assert_eq!((a, b), (-1.234_567_890_123_456_7, 0.474_589_985_400_304_84));
}

#[test]
fn promote_and_revert_move_the_live_version_and_log_who_when_why() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    for version in ["v1", "v2", "v3"] {
        registry.write(&linear_contents(version)).expect("written");
    }
    // Never promoted: the newest is served.
    assert_eq!(registry.live(&propensity()).unwrap(), None);
    assert_eq!(
        registry.served(&propensity()).unwrap().as_deref(),
        Some("v3")
    );

    let lock = registry.lock("test").expect("lock");
    let first = registry
        .promote(&lock, &propensity(), "v1", "ann", "first model")
        .expect("promote v1");
    assert_eq!(
        (first.previous.as_deref(), first.version.as_str()),
        (None, "v1")
    );
    registry
        .promote(&lock, &propensity(), "v2", "cron", "nightly: better")
        .expect("promote v2");
    // The live version is served, not the newest.
    assert_eq!(
        registry.served(&propensity()).unwrap().as_deref(),
        Some("v2")
    );
    let text = fs::read_to_string(root.path().join("propensity").join(bundle::LIVE_FILE)).unwrap();
    assert_eq!(text, "v2\n");

    // A version that does not load is not promoted; the live one stays.
    let err = registry
        .promote(&lock, &propensity(), "v9", "ann", "typo")
        .expect_err("no such version");
    assert!(matches!(err, BundleError::Missing { .. }), "{err}");
    assert_eq!(registry.live(&propensity()).unwrap().as_deref(), Some("v2"));

    // Revert goes back one promotion at a time, and no further than the log knows.
    let back = registry
        .revert(&lock, &propensity(), "bob", "v2 mis-grades webinar leads")
        .expect("revert");
    assert_eq!(
        (back.version.as_str(), back.previous.as_deref()),
        ("v1", Some("v2"))
    );
    assert_eq!(registry.live(&propensity()).unwrap().as_deref(), Some("v1"));
    let err = registry
        .revert(&lock, &propensity(), "bob", "again")
        .expect_err("nothing before v1");
    assert!(err.to_string().contains("nothing to revert to"), "{err}");

    // Every change is in the log, in order, with who and why; refusals too.
    registry
        .record_refusal(
            &lock,
            Task::Propensity,
            &propensity(),
            "v3",
            "cron",
            "ROC AUC 0.01 lower",
        )
        .expect("refusal logged");
    let history = registry.history().expect("history");
    let summary: Vec<(bundle::RegistryAction, &str, &str, &str)> = history
        .iter()
        .map(|e| (e.action, e.version.as_str(), e.who.as_str(), e.why.as_str()))
        .collect();
    use bundle::RegistryAction::{Promote, Refuse, Revert};
    assert_eq!(
        summary,
        [
            (Promote, "v1", "ann", "first model"),
            (Promote, "v2", "cron", "nightly: better"),
            (Revert, "v1", "bob", "v2 mis-grades webinar leads"),
            (Refuse, "v3", "cron", "ROC AUC 0.01 lower"),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(history[3].previous.as_deref(), Some("v1"));
}

#[test]
fn a_second_writer_is_refused_while_the_lock_is_held() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    let held = registry.lock("train --spec a.toml").expect("first lock");
    let err = registry.lock("promote").expect_err("second lock");
    let text = err.to_string();
    assert!(matches!(err, BundleError::Locked { .. }), "{text}");
    assert!(
        text.contains(&format!("pid {} (train --spec a.toml)", std::process::id())),
        "{text}"
    );
    // A lock of another registry does not open this one.
    let other = tempfile::tempdir().expect("tempdir");
    let other_registry = Registry::new(other.path());
    other_registry
        .write(&linear_contents("v1"))
        .expect("written");
    assert!(
        other_registry
            .promote(&held, &propensity(), "v1", "x", "y")
            .is_err()
    );
    drop(held);
    registry.lock("promote").expect("free again once dropped");
}

/// Flips the lowest bit of the byte in the middle of `path`.
fn flip_one_bit(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_model_onnx_that_changed_after_training_is_refused_on_load_and_on_promote() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    for version in ["v1", "v2"] {
        registry.write(&gbdt_contents(version)).expect("written");
    }
    let written = registry.load(&propensity(), "v2").expect("loads");
    let expected = written.manifest().model_sha256.clone().expect("digest");
    assert_eq!(expected, bundle::sha256_hex(written.onnx_bytes()));
    assert!(written.has_model_digest());
    let lock = registry.lock("test").expect("lock");
    registry
        .promote(&lock, &propensity(), "v1", "ann", "first")
        .expect("promote v1");

    // One bit flipped: refused, naming the file and both digests.
    let model = root.path().join("propensity/v2/model.onnx");
    flip_one_bit(&model);
    let found = bundle::sha256_hex(&fs::read(&model).unwrap());
    let err = registry
        .load(&propensity(), "v2")
        .expect_err("changed model");
    let text = err.to_string();
    assert!(matches!(err, BundleError::Invalid { .. }), "{text}");
    assert_eq!(error_path(&err), model);
    assert!(
        text.contains(&format!("SHA-256 is {found}"))
            && text.contains(&format!("`model_sha256` is {expected}")),
        "{text}"
    );

    // Promote loads the bundle: refused, naming the file; v1 stays live and nothing is
    // logged.
    let err = registry
        .promote(&lock, &propensity(), "v2", "ann", "better")
        .expect_err("changed model");
    assert_eq!(error_path(&err), model, "{err}");
    assert_eq!(registry.live(&propensity()).unwrap().as_deref(), Some("v1"));
    assert_eq!(registry.history().unwrap().len(), 1);
}

#[test]
fn a_manifest_without_the_model_digest_still_loads() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    // As written before the digest was stored: no `model_sha256` key at all.
    let mut old = gbdt_contents("v1");
    old.manifest.model_sha256 = None;
    let dir = registry.write(&old).expect("written");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.get("model_sha256").is_none(), "{manifest}");
    let loaded = Bundle::load(&dir).expect("an old bundle loads");
    assert!(!loaded.has_model_digest());
    assert_eq!(loaded.manifest(), &old.manifest);
    let lock = registry.lock("test").expect("lock");
    registry
        .promote(&lock, &propensity(), "v1", "ann", "old bundle")
        .expect("an old bundle is promoted");

    // A new one stores it, and it reads back.
    let new = registry.write(&gbdt_contents("v2")).expect("written");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(new.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["model_sha256"],
        bundle::sha256_hex(&fs::read(new.join("model.onnx")).unwrap())
    );
}

#[test]
fn a_missing_live_file_after_promotions_never_serves_an_unpromoted_version() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    for version in ["v1", "v2", "v3"] {
        registry.write(&linear_contents(version)).expect("written");
    }
    let live_path = root.path().join("propensity").join(bundle::LIVE_FILE);
    // Never promoted: the newest, and nothing to report.
    let fresh = registry.served_status(&propensity()).expect("status");
    assert_eq!(
        (fresh.version.as_deref(), fresh.problem),
        (Some("v3"), None)
    );

    let lock = registry.lock("test").expect("lock");
    registry
        .promote(&lock, &propensity(), "v1", "ann", "first")
        .expect("promote v1");
    registry
        .promote(&lock, &propensity(), "v2", "ann", "second")
        .expect("promote v2");
    registry
        .revert(&lock, &propensity(), "bob", "worse")
        .expect("revert to v1");

    // LIVE deleted: the log's last change (the revert to v1) says what is live, not the
    // newest (v3, never promoted), and the problem is reported naming LIVE.
    fs::remove_file(&live_path).unwrap();
    let status = registry.served_status(&propensity()).expect("status");
    assert_eq!(status.version.as_deref(), Some("v1"));
    let problem = status.problem.expect("reported");
    assert!(
        problem.contains(&format!("{} is missing", live_path.display()))
            && problem.contains("the live version is v1, from the last revert in"),
        "{problem}"
    );
    assert_eq!(
        registry.served(&propensity()).unwrap().as_deref(),
        Some("v1")
    );
    // A revert still knows where it stands (v1, first promoted with nothing before it).
    let err = registry
        .revert(&lock, &propensity(), "bob", "again")
        .expect_err("nothing before v1");
    assert!(err.to_string().contains("nothing to revert to"), "{err}");

    // LIVE naming a version that is not there, or garbage: the same.
    fs::write(&live_path, "v9\n").unwrap();
    let status = registry.live_status(&propensity()).expect("status");
    assert_eq!(status.version.as_deref(), Some("v1"));
    assert!(
        status
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("names v9, which is not in the registry")),
        "{status:?}"
    );
    fs::write(&live_path, "../../etc\n").unwrap();
    let status = registry.live_status(&propensity()).expect("status");
    assert_eq!(status.version.as_deref(), Some("v1"), "{status:?}");

    // The log's version gone too: an error naming LIVE, never the newest.
    fs::remove_file(&live_path).unwrap();
    fs::remove_dir_all(root.path().join("propensity/v1")).unwrap();
    let err = registry
        .served(&propensity())
        .expect_err("nothing promoted is there");
    assert_eq!(error_path(&err), live_path);
    assert!(
        err.to_string().contains("the last revert in")
            && err
                .to_string()
                .contains("names v1, which is not in the registry either"),
        "{err}"
    );

    // A promotion repairs it, and logs the live version it replaces as best known.
    registry
        .promote(&lock, &propensity(), "v2", "ann", "repair")
        .expect("promote v2");
    let status = registry.live_status(&propensity()).expect("status");
    assert_eq!(
        (status.version.as_deref(), status.problem),
        (Some("v2"), None)
    );

    // A LIVE that exists but cannot be used, in a registry whose log has no promotion:
    // an error too (only a registry never promoted serves its newest).
    let other = tempfile::tempdir().expect("tempdir");
    let other_registry = Registry::new(other.path());
    other_registry
        .write(&linear_contents("v1"))
        .expect("written");
    let other_live = other.path().join("propensity").join(bundle::LIVE_FILE);
    fs::write(&other_live, "v7\n").unwrap();
    let err = other_registry
        .served(&propensity())
        .expect_err("LIVE names nothing");
    assert_eq!(error_path(&err), other_live);
    assert!(err.to_string().contains("records no promotion"), "{err}");
}

#[test]
fn a_registry_holds_models_by_name_each_with_its_own_live_version_and_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    let enterprise = ModelName::new("propensity-enterprise").unwrap();
    // A bundle without a name goes to the folder of its task; a named one to its own.
    registry.write(&gbdt_contents("v1")).expect("written");
    let mut named = gbdt_contents("v2");
    named.manifest.model = Some(enterprise.clone());
    let dir = registry.write(&named).expect("written");
    assert_eq!(dir, root.path().join("propensity-enterprise").join("v2"));
    // Folders that are not model names are not models.
    fs::create_dir(root.path().join("Not A Model")).unwrap();
    fs::create_dir(root.path().join(".hidden")).unwrap();
    assert_eq!(
        registry.models().unwrap(),
        [propensity(), enterprise.clone()]
    );
    assert_eq!(registry.versions(&enterprise).unwrap(), ["v2"]);
    assert_eq!(registry.versions(&propensity()).unwrap(), ["v1"]);
    let loaded = registry.load(&enterprise, "v2").expect("loads");
    assert_eq!(loaded.manifest().name(), enterprise);
    assert_eq!(loaded.manifest().task, Task::Propensity);

    // Promotions and reverts are per model.
    let lock = registry.lock("test").expect("lock");
    registry
        .promote(&lock, &propensity(), "v1", "ann", "global")
        .expect("promoted");
    let mut newer = gbdt_contents("v3");
    newer.manifest.model = Some(enterprise.clone());
    registry.write(&newer).expect("written");
    registry
        .promote(&lock, &enterprise, "v2", "ann", "segment")
        .expect("promoted");
    registry
        .promote(&lock, &enterprise, "v3", "ann", "segment, nightly")
        .expect("promoted");
    assert_eq!(registry.live(&enterprise).unwrap().as_deref(), Some("v3"));
    registry
        .revert(&lock, &enterprise, "bob", "worse")
        .expect("reverted");
    assert_eq!(registry.live(&enterprise).unwrap().as_deref(), Some("v2"));
    assert_eq!(registry.live(&propensity()).unwrap().as_deref(), Some("v1"));
    // The global model was promoted once: nothing to revert to, whatever the segment did.
    let err = registry
        .revert(&lock, &propensity(), "bob", "again")
        .expect_err("nothing before v1");
    assert!(err.to_string().contains("nothing to revert to"), "{err}");
    let history = registry.history().unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.model_name()).collect();
    assert_eq!(
        names,
        [
            "propensity",
            "propensity-enterprise",
            "propensity-enterprise",
            "propensity-enterprise"
        ]
    );
    assert!(history.iter().all(|e| e.task == Task::Propensity));

    // A bundle whose manifest names another model than its folder is refused on load.
    let moved = root.path().join("propensity").join("v2");
    fs::rename(root.path().join("propensity-enterprise").join("v2"), &moved).unwrap();
    let err = Bundle::load(&moved).expect_err("wrong folder");
    assert!(
        err.to_string()
            .contains("the model's name is propensity-enterprise but the bundle is in the folder \"propensity\""),
        "{err}"
    );
}

#[test]
fn a_log_written_before_models_had_names_still_says_what_is_live() {
    let root = tempfile::tempdir().expect("tempdir");
    let registry = Registry::new(root.path());
    registry.write(&gbdt_contents("v1")).expect("written");
    registry.write(&gbdt_contents("v2")).expect("written");
    // Lines as the registry wrote them before: a task and no model.
    let old = [
        r#"{"at":"2026-01-01T00:00:00Z","who":"ann","action":"promote","task":"propensity","version":"v1","previous":null,"why":"first"}"#,
        r#"{"at":"2026-01-02T00:00:00Z","who":"ann","action":"promote","task":"propensity","version":"v2","previous":"v1","why":"better"}"#,
        r#"{"at":"2026-01-03T00:00:00Z","who":"ann","action":"promote","task":"churn","version":"c9","previous":null,"why":"churn"}"#,
    ];
    fs::write(
        root.path().join(bundle::HISTORY_FILE),
        old.join("\n") + "\n",
    )
    .unwrap();
    // No LIVE: the log decides, and only its propensity lines count.
    let status = registry.live_status(&propensity()).expect("status");
    assert_eq!(status.version.as_deref(), Some("v2"));
    assert!(status.problem.is_some());
    let lock = registry.lock("test").expect("lock");
    let event = registry
        .revert(&lock, &propensity(), "bob", "worse")
        .expect("reverted");
    assert_eq!(event.version, "v1");
    assert_eq!(event.model_name(), "propensity");
    // The new line names its model.
    let text = fs::read_to_string(root.path().join(bundle::HISTORY_FILE)).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.contains(r#""model":"propensity""#), "{last}");
    // Its churn line is about the model churn, whose c9 is not there.
    let err = registry.live_status(&churn()).expect_err("c9 is absent");
    assert!(err.to_string().contains("names c9"), "{err}");
}
