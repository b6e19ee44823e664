//! Metrics and calibration against scikit-learn reference values.
//!
//! `tests/fixtures/metrics/cases.json` is written by
//! `tests/fixtures/metrics/make_fixtures.py` (scikit-learn, numpy and scipy
//! versions recorded in the file). Each quantity is compared with a named
//! tolerance: tight where the computation is the same sequence of float
//! operations up to summation order, looser where scikit-learn's own result
//! is only approximate (its L-BFGS fit of Platt's parameters).

use models::calibration::{Calibrator, fit_isotonic, fit_platt};
use models::metrics::{
    self, BinaryMetrics, calibration_curve, expected_calibration_error, lift_by_decile,
    precision_recall_curve, roc_curve, threshold_table,
};
use serde::Deserialize;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/metrics/cases.json"
);

/// ROC AUC, average precision, log loss, Brier, ECE: same formulas, summation
/// order may differ (numpy sums pairwise).
const METRIC_TOLERANCE: f64 = 1e-12;
/// Points of the ROC, precision-recall and calibration curves.
const CURVE_TOLERANCE: f64 = 1e-12;
/// Rates, lifts and captures of the lift table; precision, recall, F1 of the
/// threshold table.
const TABLE_TOLERANCE: f64 = 1e-12;
/// Our Platt fit against scikit-learn's: its L-BFGS-B stops at gradient
/// 1e-6, so its (a, b) are off the exact optimum by up to ~1e-6 (relative).
const PLATT_SKLEARN_TOLERANCE: f64 = 1e-5;
/// Our Platt fit against the generator's fully converged Newton reference
/// (relative to max(1, |value|)).
const PLATT_REFERENCE_TOLERANCE: f64 = 1e-8;
/// Platt's objective at our optimum may exceed the reference optimum by at
/// most this (relative): it is the same minimum.
const PLATT_OBJECTIVE_TOLERANCE: f64 = 1e-12;
/// `apply` with scikit-learn's (a, b) against its `_SigmoidCalibration.predict`.
const PLATT_PREDICT_TOLERANCE: f64 = 1e-15;
/// `apply_f32` (Platt) against numpy's float32 evaluation: `exp` in f32 may
/// differ by an ulp or two between libm and numpy's SIMD version.
const PLATT_F32_TOLERANCE: f32 = 4.0 * f32::EPSILON;
/// Isotonic thresholds and predictions of our fit against scikit-learn's
/// (values are means of 0/1 labels; only rounding can differ).
const ISOTONIC_TOLERANCE: f64 = 1e-12;
/// `apply` on scikit-learn's own thresholds against its `predict`: the same
/// `numpy.interp` operations; the margin covers an ulp lost in JSON parsing.
const ISOTONIC_PREDICT_TOLERANCE: f64 = 1e-15;

#[derive(Deserialize)]
struct Fixture {
    versions: Value,
    metric_cases: Vec<MetricCase>,
    platt_cases: Vec<PlattCase>,
    isotonic_cases: Vec<IsotonicCase>,
}

#[derive(Deserialize)]
struct MetricCase {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    weights: Option<Vec<f64>>,
    n_bins: usize,
    thresholds: Vec<f64>,
    expected: Expected,
    expected_weighted: Option<ExpectedWeighted>,
}

/// The metrics that accept weights.
#[derive(Deserialize)]
struct ExpectedWeighted {
    roc_auc: f64,
    pr_auc: f64,
    log_loss: f64,
    brier: f64,
    roc_curve: ExpectedRoc,
    precision_recall_curve: ExpectedPr,
}

#[derive(Deserialize)]
struct Expected {
    #[serde(flatten)]
    weighted_kind: ExpectedWeighted,
    ece: f64,
    calibration_curve: ExpectedCalibrationCurve,
    sklearn_calibration_curve: SklearnCalibrationCurve,
    lift_by_decile: Option<Vec<ExpectedDecile>>,
    threshold_table: Vec<ExpectedThresholdRow>,
}

#[derive(Deserialize)]
struct ExpectedRoc {
    fpr: Vec<f64>,
    tpr: Vec<f64>,
    /// `null` stands for +inf.
    thresholds: Vec<Option<f64>>,
}

#[derive(Deserialize)]
struct ExpectedPr {
    precision: Vec<f64>,
    recall: Vec<f64>,
    thresholds: Vec<f64>,
}

#[derive(Deserialize)]
struct ExpectedCalibrationCurve {
    count: Vec<usize>,
    mean_predicted: Vec<Option<f64>>,
    observed_rate: Vec<Option<f64>>,
}

#[derive(Deserialize)]
struct SklearnCalibrationCurve {
    prob_true: Vec<f64>,
    prob_pred: Vec<f64>,
}

#[derive(Deserialize)]
struct ExpectedDecile {
    decile: usize,
    rows: usize,
    positives: usize,
    min_score: f64,
    max_score: f64,
    rate: f64,
    lift: f64,
    cumulative_capture: f64,
    cumulative_lift: f64,
}

#[derive(Deserialize)]
struct ExpectedThresholdRow {
    threshold: f64,
    flagged: usize,
    true_positives: usize,
    precision: f64,
    recall: f64,
    f1: f64,
    flagged_share: f64,
}

#[derive(Deserialize)]
struct PlattCase {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    sklearn_a: f64,
    sklearn_b: f64,
    reference_a: f64,
    reference_b: f64,
    reference_objective: f64,
    grid: Vec<f64>,
    sklearn_predict_grid: Vec<f64>,
    f32_predict_grid: Vec<f32>,
}

#[derive(Deserialize)]
struct IsotonicCase {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    weights: Option<Vec<f64>>,
    x_thresholds: Vec<f64>,
    y_thresholds: Vec<f64>,
    grid: Vec<f64>,
    sklearn_predict_grid: Vec<f64>,
    f32_predict_grid: Vec<f32>,
}

fn load() -> Fixture {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURE}: {e}; run make_fixtures.py"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {FIXTURE}: {e}"))
}

fn bools(labels: &[u8]) -> Vec<bool> {
    labels.iter().map(|&y| y == 1).collect()
}

#[track_caller]
fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    let scale = expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance * scale,
        "{what}: got {actual:e}, expected {expected:e} (tolerance {tolerance:e})"
    );
}

#[track_caller]
fn assert_all_close(what: &str, actual: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert_close(&format!("{what}[{i}]"), a, e, tolerance);
    }
}

fn check_weighted_kind(
    case: &str,
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
    expected: &ExpectedWeighted,
) {
    let run = |name: &str, value: Result<f64, metrics::MetricError>, want: f64| {
        let got = value.unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
        assert_close(&format!("{case}: {name}"), got, want, METRIC_TOLERANCE);
    };
    run(
        "roc_auc",
        metrics::roc_auc(scores, labels, weights),
        expected.roc_auc,
    );
    run(
        "pr_auc",
        metrics::pr_auc(scores, labels, weights),
        expected.pr_auc,
    );
    run(
        "log_loss",
        metrics::log_loss(scores, labels, weights),
        expected.log_loss,
    );
    run(
        "brier",
        metrics::brier(scores, labels, weights),
        expected.brier,
    );

    let roc = roc_curve(scores, labels, weights).expect("roc curve");
    assert_all_close(
        &format!("{case}: roc fpr"),
        &roc.fpr,
        &expected.roc_curve.fpr,
        CURVE_TOLERANCE,
    );
    assert_all_close(
        &format!("{case}: roc tpr"),
        &roc.tpr,
        &expected.roc_curve.tpr,
        CURVE_TOLERANCE,
    );
    let thresholds: Vec<f64> = expected
        .roc_curve
        .thresholds
        .iter()
        .map(|t| t.unwrap_or(f64::INFINITY))
        .collect();
    assert_eq!(roc.thresholds, thresholds, "{case}: roc thresholds");

    let pr = precision_recall_curve(scores, labels, weights).expect("pr curve");
    let want = &expected.precision_recall_curve;
    assert_all_close(
        &format!("{case}: precision"),
        &pr.precision,
        &want.precision,
        CURVE_TOLERANCE,
    );
    assert_all_close(
        &format!("{case}: recall"),
        &pr.recall,
        &want.recall,
        CURVE_TOLERANCE,
    );
    assert_eq!(pr.thresholds, want.thresholds, "{case}: pr thresholds");
}

#[test]
fn fixture_records_the_reference_versions() {
    let fixture = load();
    let sklearn = fixture.versions["scikit-learn"]
        .as_str()
        .unwrap_or_default();
    assert!(sklearn.starts_with("1."), "scikit-learn version {sklearn}");
    assert!(fixture.metric_cases.len() >= 7);
}

#[test]
fn scalar_metrics_and_curves_match_sklearn() {
    for case in load().metric_cases {
        let labels = bools(&case.labels);
        check_weighted_kind(
            &case.name,
            &case.scores,
            &labels,
            None,
            &case.expected.weighted_kind,
        );
    }
}

#[test]
fn weighted_metrics_match_sklearn() {
    let mut seen = 0;
    for case in load().metric_cases {
        let (Some(weights), Some(expected)) = (&case.weights, &case.expected_weighted) else {
            continue;
        };
        seen += 1;
        let labels = bools(&case.labels);
        let name = format!("{} (weighted)", case.name);
        check_weighted_kind(&name, &case.scores, &labels, Some(weights), expected);
    }
    assert!(seen > 0, "no weighted case in the fixture");
}

#[test]
fn calibration_curve_and_ece_match_the_reference() {
    for case in load().metric_cases {
        let labels = bools(&case.labels);
        let name = &case.name;
        let bins = calibration_curve(&case.scores, &labels, case.n_bins).expect("curve");
        let want = &case.expected.calibration_curve;
        let counts: Vec<usize> = bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, want.count, "{name}: bin counts");
        for (k, bin) in bins.iter().enumerate() {
            for (what, got, expected) in [
                ("mean_predicted", bin.mean_predicted, want.mean_predicted[k]),
                ("observed_rate", bin.observed_rate, want.observed_rate[k]),
            ] {
                match (got, expected) {
                    (None, None) => {}
                    (Some(g), Some(e)) => {
                        assert_close(&format!("{name}: bin {k} {what}"), g, e, CURVE_TOLERANCE);
                    }
                    _ => panic!("{name}: bin {k} {what}: got {got:?}, expected {expected:?}"),
                }
            }
        }
        // scikit-learn's calibration_curve keeps the non-empty bins only.
        let non_empty: Vec<_> = bins.iter().filter(|b| b.count > 0).collect();
        let sk = &case.expected.sklearn_calibration_curve;
        let rates: Vec<f64> = non_empty.iter().filter_map(|b| b.observed_rate).collect();
        let means: Vec<f64> = non_empty.iter().filter_map(|b| b.mean_predicted).collect();
        assert_all_close(
            &format!("{name}: sklearn prob_true"),
            &rates,
            &sk.prob_true,
            CURVE_TOLERANCE,
        );
        assert_all_close(
            &format!("{name}: sklearn prob_pred"),
            &means,
            &sk.prob_pred,
            CURVE_TOLERANCE,
        );

        let ece = expected_calibration_error(&case.scores, &labels, case.n_bins).expect("ece");
        assert_close(
            &format!("{name}: ece"),
            ece,
            case.expected.ece,
            METRIC_TOLERANCE,
        );
    }
}

#[test]
fn lift_by_decile_matches_the_reference() {
    for case in load().metric_cases {
        let Some(want) = &case.expected.lift_by_decile else {
            continue;
        };
        let name = &case.name;
        let got = lift_by_decile(&case.scores, &bools(&case.labels)).expect("lift");
        assert_eq!(got.len(), want.len(), "{name}: deciles");
        for (g, w) in got.iter().zip(want) {
            let at = format!("{name}: decile {}", w.decile);
            assert_eq!(
                (g.decile, g.rows, g.positives, g.min_score, g.max_score),
                (w.decile, w.rows, w.positives, w.min_score, w.max_score),
                "{at}"
            );
            assert_close(&format!("{at} rate"), g.rate, w.rate, TABLE_TOLERANCE);
            assert_close(&format!("{at} lift"), g.lift, w.lift, TABLE_TOLERANCE);
            assert_close(
                &format!("{at} capture"),
                g.cumulative_capture,
                w.cumulative_capture,
                TABLE_TOLERANCE,
            );
            assert_close(
                &format!("{at} cumulative lift"),
                g.cumulative_lift,
                w.cumulative_lift,
                TABLE_TOLERANCE,
            );
        }
    }
}

#[test]
fn threshold_table_matches_sklearn() {
    for case in load().metric_cases {
        let name = &case.name;
        let got = threshold_table(&case.scores, &bools(&case.labels), &case.thresholds)
            .expect("threshold table");
        let want = &case.expected.threshold_table;
        assert_eq!(got.len(), want.len(), "{name}: rows");
        for (g, w) in got.iter().zip(want) {
            let at = format!("{name}: t = {}", w.threshold);
            assert_eq!(g.threshold, w.threshold, "{at}");
            assert_eq!(
                (g.flagged, g.true_positives),
                (w.flagged, w.true_positives),
                "{at}"
            );
            assert_close(
                &format!("{at} precision"),
                g.precision,
                w.precision,
                TABLE_TOLERANCE,
            );
            assert_close(&format!("{at} recall"), g.recall, w.recall, TABLE_TOLERANCE);
            assert_close(&format!("{at} f1"), g.f1, w.f1, TABLE_TOLERANCE);
            assert_close(
                &format!("{at} share"),
                g.flagged_share,
                w.flagged_share,
                TABLE_TOLERANCE,
            );
        }
    }
}

#[test]
fn summary_gathers_the_same_numbers() {
    for case in load().metric_cases {
        let labels = bools(&case.labels);
        let summary =
            BinaryMetrics::compute_with_bins(&case.scores, &labels, case.n_bins).expect("summary");
        let want = &case.expected;
        let name = &case.name;
        assert_eq!(summary.rows, case.scores.len());
        assert_eq!(summary.positives, labels.iter().filter(|&&y| y).count());
        assert_close(
            &format!("{name}: roc_auc"),
            summary.roc_auc,
            want.weighted_kind.roc_auc,
            METRIC_TOLERANCE,
        );
        assert_close(
            &format!("{name}: pr_auc"),
            summary.pr_auc,
            want.weighted_kind.pr_auc,
            METRIC_TOLERANCE,
        );
        assert_close(
            &format!("{name}: log_loss"),
            summary.log_loss,
            want.weighted_kind.log_loss,
            METRIC_TOLERANCE,
        );
        assert_close(
            &format!("{name}: brier"),
            summary.brier,
            want.weighted_kind.brier,
            METRIC_TOLERANCE,
        );
        assert_close(
            &format!("{name}: ece"),
            summary.ece,
            want.ece,
            METRIC_TOLERANCE,
        );
        let top = want.lift_by_decile.as_ref().map(|deciles| deciles[0].lift);
        assert_eq!(
            summary.top_decile_lift.is_some(),
            top.is_some(),
            "{name}: top decile lift"
        );
        if let (Some(got), Some(top)) = (summary.top_decile_lift, top) {
            assert_close(
                &format!("{name}: top decile lift"),
                got,
                top,
                TABLE_TOLERANCE,
            );
        }
    }
}

#[test]
fn platt_fit_matches_sklearn_sigmoid_calibration() {
    for case in load().platt_cases {
        let name = &case.name;
        let labels = bools(&case.labels);
        let fitted = fit_platt(&case.scores, &labels).expect("fit");
        let Calibrator::Platt { a, b } = fitted else {
            panic!("{name}: fit_platt returned {fitted:?}");
        };
        assert_close(
            &format!("{name}: a vs sklearn"),
            a,
            case.sklearn_a,
            PLATT_SKLEARN_TOLERANCE,
        );
        assert_close(
            &format!("{name}: b vs sklearn"),
            b,
            case.sklearn_b,
            PLATT_SKLEARN_TOLERANCE,
        );
        assert_close(
            &format!("{name}: a vs reference"),
            a,
            case.reference_a,
            PLATT_REFERENCE_TOLERANCE,
        );
        assert_close(
            &format!("{name}: b vs reference"),
            b,
            case.reference_b,
            PLATT_REFERENCE_TOLERANCE,
        );

        // Our optimum is at least as good as the reference (Platt's objective
        // with smoothed targets, recomputed here).
        let positives = labels.iter().filter(|&&y| y).count() as f64;
        let negatives = labels.len() as f64 - positives;
        let objective: f64 = case
            .scores
            .iter()
            .zip(&labels)
            .map(|(&s, &y)| {
                let t = if y {
                    (positives + 1.0) / (positives + 2.0)
                } else {
                    1.0 / (negatives + 2.0)
                };
                let p = Calibrator::Platt { a, b }.apply(s);
                -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
            })
            .sum();
        assert!(
            objective <= case.reference_objective * (1.0 + PLATT_OBJECTIVE_TOLERANCE),
            "{name}: objective {objective} above reference {}",
            case.reference_objective
        );

        let sklearn = Calibrator::Platt {
            a: case.sklearn_a,
            b: case.sklearn_b,
        };
        let predicted: Vec<f64> = case.grid.iter().map(|&s| sklearn.apply(s)).collect();
        assert_all_close(
            &format!("{name}: predict"),
            &predicted,
            &case.sklearn_predict_grid,
            PLATT_PREDICT_TOLERANCE,
        );
        for (&s, &want) in case.grid.iter().zip(&case.f32_predict_grid) {
            let got = sklearn.apply_f32(s as f32);
            assert!(
                (got - want).abs() <= PLATT_F32_TOLERANCE * want.abs().max(1.0),
                "{name}: f32 at {s}: got {got}, expected {want}"
            );
        }
    }
}

#[test]
fn isotonic_fit_matches_sklearn() {
    for case in load().isotonic_cases {
        let name = &case.name;
        let fitted =
            fit_isotonic(&case.scores, &bools(&case.labels), case.weights.as_deref()).expect("fit");
        fitted.validate().expect("a fitted table is valid");
        let Calibrator::Isotonic { x, y } = &fitted else {
            panic!("{name}: fit_isotonic returned {fitted:?}");
        };
        assert_all_close(
            &format!("{name}: x thresholds"),
            x,
            &case.x_thresholds,
            ISOTONIC_TOLERANCE,
        );
        assert_all_close(
            &format!("{name}: y thresholds"),
            y,
            &case.y_thresholds,
            ISOTONIC_TOLERANCE,
        );
        let predicted: Vec<f64> = case.grid.iter().map(|&s| fitted.apply(s)).collect();
        assert_all_close(
            &format!("{name}: predict"),
            &predicted,
            &case.sklearn_predict_grid,
            ISOTONIC_TOLERANCE,
        );

        // float32 evaluation: no transcendental functions, so bit for bit
        // (with sklearn's own thresholds, as the ONNX writer would get them).
        let reference = Calibrator::Isotonic {
            x: case.x_thresholds.clone(),
            y: case.y_thresholds.clone(),
        };
        let predicted: Vec<f64> = case.grid.iter().map(|&s| reference.apply(s)).collect();
        assert_all_close(
            &format!("{name}: predict on sklearn thresholds"),
            &predicted,
            &case.sklearn_predict_grid,
            ISOTONIC_PREDICT_TOLERANCE,
        );
        // On a threshold and outside the range the value is a table entry,
        // exactly (the JSON holds the same decimal for both).
        let (first, last) = (
            case.x_thresholds[0],
            case.x_thresholds[case.x_thresholds.len() - 1],
        );
        for ((&s, &got), &want) in case
            .grid
            .iter()
            .zip(&predicted)
            .zip(&case.sklearn_predict_grid)
        {
            if case.x_thresholds.contains(&s) || s <= first || s >= last {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name}: predict at threshold {s}: {got} vs {want}"
                );
            }
        }
        for (&s, &want) in case.grid.iter().zip(&case.f32_predict_grid) {
            let got = reference.apply_f32(s as f32);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{name}: f32 at {s}: got {got}, expected {want}"
            );
        }
    }
}
