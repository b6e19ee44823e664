//! Parity of the exported ONNX graphs (model + calibration) with the Rust
//! models, in ONNX Runtime through the serving pool and in Python
//! onnxruntime through `models/tests/python/check_onnx.py`.
//!
//! Reference models: a [`Gbdt`] trained on seeded synthetic rows (with
//! missing values), a fixed [`LinearModel`], and trees boosted from that
//! linear model's log-odds (`ModelGraph::TreesOnLinear`), each with no calibration,
//! Platt scaling and isotonic regression fitted by `models::calibration` on
//! separate rows' graph scores ([`ModelGraph::score`]). Reference inputs:
//! seeded rows, rows with NaNs, and rows whose values sit exactly on (and
//! one `f32` step beside) the trees' split thresholds. Reference outputs:
//!
//! * the Rust model, [`ScoringModel::probability`] (the calibrator applied
//!   in `f64` to the graph's score): within [`PARITY_TOLERANCE`];
//! * the graph's `f32` steps in Rust, [`ScoringModel::probability_f32`]:
//!   within [`PARITY_TOLERANCE`] (bit for bit for trees on one thread);
//! * the trained model in `f64` end to end (`gbdt.raw_score` or the linear
//!   logit, then `calibrator.apply`): within [`PARITY_TOLERANCE`] for no
//!   calibration and Platt. For isotonic calibration this is reported but
//!   not asserted: the `f32` rounding of the log-odds is multiplied by the
//!   slope of the isotonic segment, and between two nearby tree scores that
//!   slope can be steep, so a row can move by more than the tolerance. No
//!   `f32` graph can do better; that is why calibrators are fitted on the
//!   graph's score.
//!
//! Both runtimes run on one intra-op thread, as the server does: on several
//! threads ONNX Runtime may sum a batch's tree leaves in another order,
//! moving the log-odds by a few `f32` steps, which a steep isotonic segment
//! amplifies the same way (4e-5 seen with 2 threads in Python).
//!
//! ONNX Runtime tests are skipped (with a notice) only when the library is
//! absent and `LEADSCORE_REQUIRE_ORT` is unset. The Python test is skipped
//! only when Python onnxruntime is unavailable and
//! `LEADSCORE_REQUIRE_PYTHON_ORT` is unset; `scripts/test` sets both.

mod common;

use std::io::Write as _;
use std::path::Path;

use common::{ort_available, python, python_ort_available};
use models::calibration::{Calibrator, fit_isotonic, fit_platt};
use models::gbdt::{Gbdt, GbdtParams, SplitMix64, TrainData, TreeNode};
use models::onnx::{LinearModel, ModelGraph, Node, ScoringModel, ToOnnx, Tree, TreeEnsemble};
use ndarray::Array2;
use serving::{PoolConfig, SessionPool};

/// Largest accepted |ONNX Runtime − Rust| for a calibrated probability.
const PARITY_TOLERANCE: f32 = 1e-5;
/// Features of the synthetic rows.
const N_FEATURES: usize = 4;

/// One synthetic row: a continuous feature, an integer-valued one (ties on
/// thresholds), a skewed one, and one that is missing 25% of the time
/// (informatively).
fn row(rng: &mut SplitMix64) -> Vec<f32> {
    let x0 = (rng.next_f64() * 10.0) as f32;
    let x1 = rng.below(6) as f32;
    let x2 = (rng.next_f64() * rng.next_f64() * 100.0) as f32;
    let x3 = if rng.next_f64() < 0.25 {
        f32::NAN
    } else {
        (rng.next_f64() * 2.0 - 1.0) as f32
    };
    vec![x0, x1, x2, x3]
}

fn true_logit(row: &[f32]) -> f64 {
    let x3 = if row[3].is_nan() {
        0.8
    } else {
        -f64::from(row[3])
    };
    0.5 * (f64::from(row[0]) - 5.0) + 0.4 * f64::from(row[1]) - 1.0 + 0.02 * f64::from(row[2]) + x3
}

/// `n` rows (row-major) and their labels drawn from the true probability.
fn labelled(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
    let mut rng = SplitMix64::new(seed);
    let mut x = Vec::with_capacity(n * N_FEATURES);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let r = row(&mut rng);
        let p = 1.0 / (1.0 + (-true_logit(&r)).exp());
        y.push(rng.next_f64() < p);
        x.extend(r);
    }
    (x, y)
}

fn train_gbdt() -> Gbdt {
    let (x, y) = labelled(3000, 1);
    let y: Vec<f32> = y.iter().map(|&b| f32::from(u8::from(b))).collect();
    let params = GbdtParams {
        n_trees: 40,
        learning_rate: 0.2,
        num_leaves: 8,
        min_data_in_leaf: 10,
        seed: 7,
        ..GbdtParams::default()
    };
    params
        .fit(&TrainData::new(&x, N_FEATURES, &y))
        .expect("fit")
}

/// Trees boosted from [`linear_model`]'s log-odds (init scores).
fn train_gbdt_on_linear() -> Gbdt {
    let (x, y) = labelled(3000, 4);
    let y: Vec<f32> = y.iter().map(|&b| f32::from(u8::from(b))).collect();
    let linear = linear_model();
    let init: Vec<f64> = x.chunks(N_FEATURES).map(|r| linear.logit(r)).collect();
    let params = GbdtParams {
        n_trees: 30,
        learning_rate: 0.2,
        num_leaves: 8,
        min_data_in_leaf: 10,
        seed: 11,
        ..GbdtParams::default()
    };
    params
        .fit(&TrainData::new(&x, N_FEATURES, &y).with_init_scores(&init))
        .expect("fit")
}

fn linear_model() -> LinearModel {
    LinearModel {
        weights: vec![0.45, 0.35, 0.018, -0.9],
        bias: -3.1,
        missing_values: vec![5.0, 2.5, 25.0, 0.1],
    }
}

/// Identity, Platt and isotonic fitted on the graph scores
/// ([`ModelGraph::score`]) of 2000 fresh rows.
fn calibrators(model: &ModelGraph) -> Vec<(&'static str, Calibrator)> {
    let (x, y) = labelled(2000, 2);
    let scores: Vec<f64> = x.chunks(N_FEATURES).map(|r| model.score(r)).collect();
    vec![
        ("identity", Calibrator::Identity),
        ("platt", fit_platt(&scores, &y).expect("platt")),
        (
            "isotonic",
            fit_isotonic(&scores, &y, None).expect("isotonic"),
        ),
    ]
}

/// Validation rows: 200 seeded rows, 60 with extra NaNs, an all-NaN row,
/// and 120 rows with values exactly on a split threshold of `gbdt` or one
/// `f32` step either side.
fn validation_rows(gbdt: &Gbdt) -> Array2<f32> {
    let mut rng = SplitMix64::new(3);
    let mut rows: Vec<Vec<f32>> = (0..200).map(|_| row(&mut rng)).collect();
    for _ in 0..60 {
        let mut r = row(&mut rng);
        for v in r.iter_mut() {
            if rng.next_f64() < 0.5 {
                *v = f32::NAN;
            }
        }
        rows.push(r);
    }
    rows.push(vec![f32::NAN; N_FEATURES]);
    let thresholds: Vec<(usize, f32)> = gbdt
        .trees()
        .iter()
        .flat_map(|t| t.nodes())
        .filter_map(|n| match *n {
            TreeNode::Split {
                feature, threshold, ..
            } => Some((feature, threshold)),
            TreeNode::Leaf { .. } => None,
        })
        .collect();
    assert!(!thresholds.is_empty(), "the trees split");
    for i in 0..120 {
        let mut r = row(&mut rng);
        for _ in 0..2 {
            let (feature, threshold) = thresholds[rng.below(thresholds.len())];
            r[feature] = match i % 3 {
                0 => threshold,
                1 => threshold.next_up(),
                _ => threshold.next_down(),
            };
        }
        rows.push(r);
    }
    to_array(&rows)
}

/// Rows for the linear model: 300 seeded rows (a quarter miss feature 3)
/// and an all-NaN row.
fn linear_rows() -> Array2<f32> {
    let mut rng = SplitMix64::new(4);
    let mut rows: Vec<Vec<f32>> = (0..300).map(|_| row(&mut rng)).collect();
    rows.push(vec![f32::NAN; N_FEATURES]);
    to_array(&rows)
}

fn to_array(rows: &[Vec<f32>]) -> Array2<f32> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Array2::from_shape_vec((rows.len(), N_FEATURES), flat).expect("rectangular")
}

async fn score_in_ort(model: &ScoringModel, rows: &Array2<f32>) -> Vec<f32> {
    let bytes = model.to_onnx_bytes().expect("valid model");
    let pool = tokio::task::spawn_blocking(move || {
        SessionPool::from_bytes(
            &bytes,
            PoolConfig {
                sessions: 1,
                intra_threads: 1,
            },
        )
    })
    .await
    .expect("load task")
    .expect("ONNX Runtime loads the model");
    assert_eq!(pool.n_features(), model.n_features());
    pool.score_rows(rows.clone()).await.expect("score")
}

/// Largest |got - expected| over the rows, and how many rows exceed
/// [`PARITY_TOLERANCE`] (NaN counts as exceeding).
fn max_diff(got: &[f32], expected: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), expected.len(), "row count");
    got.iter()
        .zip(expected)
        .fold((0.0_f64, 0), |(worst, over), (&g, &e)| {
            let diff = (f64::from(g) - e).abs();
            let beyond = diff.is_nan() || diff > f64::from(PARITY_TOLERANCE);
            (worst.max(diff), over + usize::from(beyond))
        })
}

/// Panics naming the first row where `got` and `expected` differ by more
/// than [`PARITY_TOLERANCE`].
fn assert_parity(got: &[f32], expected: &[f64], what: &str) {
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let diff = (f64::from(g) - e).abs();
        assert!(
            diff <= f64::from(PARITY_TOLERANCE),
            "{what} row {i}: ONNX Runtime {g}, Rust {e} (|Δp| {diff:e} > {PARITY_TOLERANCE:e})"
        );
    }
}

fn each_row(rows: &Array2<f32>, f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    rows.outer_iter()
        .map(|r| f(r.as_slice().expect("standard layout")))
        .collect()
}

/// Scores `rows` in ONNX Runtime and compares with the Rust model, the
/// graph's `f32` steps in Rust and the trained model in `f64` (`trained`;
/// asserted unless the calibration is isotonic, see the module docs).
/// Reports the three maxima on stderr.
async fn check_parity(
    what: &str,
    model: &ScoringModel,
    rows: &Array2<f32>,
    trained: impl Fn(&[f32]) -> f64,
) {
    let got = score_in_ort(model, rows).await;
    let rust = each_row(rows, |r| model.probability(r));
    let f32_steps = each_row(rows, |r| f64::from(model.probability_f32(r)));
    let trained = each_row(rows, trained);
    assert_parity(&got, &rust, &format!("{what} vs Rust model"));
    assert_parity(&got, &f32_steps, &format!("{what} vs Rust f32 steps"));
    if !matches!(model.calibration, Calibrator::Isotonic { .. }) {
        assert_parity(&got, &trained, &format!("{what} vs trained model in f64"));
    }
    let (vs_rust, _) = max_diff(&got, &rust);
    let (vs_f32, _) = max_diff(&got, &f32_steps);
    let (vs_trained, over) = max_diff(&got, &trained);
    let _ = writeln!(
        std::io::stderr(),
        "parity {what}: {} rows, max |Δp| ONNX Runtime vs Rust model {vs_rust:.3e}, \
         vs Rust f32 steps {vs_f32:.3e}, vs trained model in f64 {vs_trained:.3e} \
         ({over} rows > {PARITY_TOLERANCE:e})",
        rows.nrows()
    );
}

#[tokio::test]
async fn gbdt_with_each_calibration_matches_onnx_runtime() {
    if !ort_available() {
        return;
    }
    let gbdt = train_gbdt();
    let trees = ModelGraph::Trees(gbdt.to_tree_ensemble());
    let rows = validation_rows(&gbdt);
    for (name, calibration) in calibrators(&trees) {
        let model = ScoringModel::new(trees.clone(), calibration.clone());
        check_parity(&format!("gbdt+{name}"), &model, &rows, |r| {
            calibration.apply(gbdt.raw_score(r))
        })
        .await;
    }
}

#[tokio::test]
async fn linear_with_each_calibration_matches_onnx_runtime() {
    if !ort_available() {
        return;
    }
    let linear = linear_model();
    let graph = ModelGraph::Linear(linear.clone());
    let rows = linear_rows();
    for (name, calibration) in calibrators(&graph) {
        let model = ScoringModel::new(graph.clone(), calibration.clone());
        check_parity(&format!("linear+{name}"), &model, &rows, |r| {
            calibration.apply(linear.logit(r))
        })
        .await;
    }
}

#[tokio::test]
async fn trees_on_linear_with_each_calibration_matches_onnx_runtime() {
    if !ort_available() {
        return;
    }
    let (linear, trees) = (linear_model(), train_gbdt_on_linear());
    let graph = ModelGraph::TreesOnLinear {
        linear: linear.clone(),
        trees: trees.to_tree_ensemble(),
    };
    let rows = validation_rows(&trees);
    for (name, calibration) in calibrators(&graph) {
        let model = ScoringModel::new(graph.clone(), calibration.clone());
        check_parity(&format!("trees-on-linear+{name}"), &model, &rows, |r| {
            calibration.apply(linear.logit(r) + trees.raw_score(r))
        })
        .await;
    }
}

/// ONNX Runtime's binary `TreeEnsembleClassifier` with the weights on class
/// id 1 and post-transform `NONE` puts the raw sum in column 1 whatever the
/// signs of the weights (the binary case's columns have changed between
/// releases, onnxruntime issue 27533). Pins that on hand-built ensembles:
/// all weights positive, all negative, and a single-leaf tree; a wrong
/// column (`1 - s`, `-s`, 0) would move the probability far more than the
/// tolerance.
#[tokio::test]
async fn binary_classifier_column_one_is_the_raw_sum_for_any_weight_signs() {
    if !ort_available() {
        return;
    }
    let stump = |lo: f32, hi: f32| Tree {
        nodes: vec![
            Node::Split {
                feature: 0,
                threshold: 0.5,
                left: 1,
                right: 2,
                missing_left: false,
            },
            Node::Leaf { value: lo },
            Node::Leaf { value: hi },
        ],
    };
    let ensembles = [
        (
            "all positive",
            0.25,
            vec![stump(0.25, 2.0), stump(0.0, 0.5)],
        ),
        (
            "all negative",
            -0.25,
            vec![stump(-0.25, -2.0), stump(-1.0, -0.5)],
        ),
        (
            "single leaf",
            0.0,
            vec![
                Tree {
                    nodes: vec![Node::Leaf { value: 0.3 }],
                },
                stump(0.5, -0.5),
            ],
        ),
    ];
    let rows = to_array(&[
        vec![0.0, 0.0, 0.0, 0.0],
        vec![0.5, 0.0, 0.0, 0.0],
        vec![1.0, 0.0, 0.0, 0.0],
        vec![f32::NAN, 0.0, 0.0, 0.0],
    ]);
    for (what, base_score, trees) in ensembles {
        let ensemble = TreeEnsemble {
            n_features: N_FEATURES,
            base_score,
            trees,
        };
        let model = ScoringModel::uncalibrated(ensemble.clone());
        let got = score_in_ort(&model, &rows).await;
        for (r, g) in rows.outer_iter().zip(&got) {
            let r = r.as_slice().expect("standard layout");
            let p = ensemble.probability(r);
            assert!(
                (f64::from(*g) - p).abs() <= 1e-6,
                "{what} {r:?}: ONNX Runtime {g}, sigmoid(logit) {p}"
            );
        }
    }
}

// ---- Python onnxruntime ---------------------------------------------------

/// Runs `check_onnx.py` on `model` with `rows` and the Rust probabilities.
fn check_in_python(python: &Path, what: &str, model: &ScoringModel, rows: &Array2<f32>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.onnx");
    std::fs::write(&model_path, model.to_onnx_bytes().expect("valid model")).expect("write");
    let expected: Vec<f64> = rows
        .outer_iter()
        .map(|r| model.probability(r.as_slice().expect("standard layout")))
        .collect();
    common::check_onnx_in_python(
        python,
        what,
        &model_path,
        rows,
        &expected,
        f64::from(PARITY_TOLERANCE),
    );
}

#[test]
fn exported_models_match_in_python_onnxruntime() {
    let python = python();
    if !python_ort_available(&python) {
        return;
    }
    let gbdt = train_gbdt();
    let trees = ModelGraph::Trees(gbdt.to_tree_ensemble());
    let rows = validation_rows(&gbdt);
    for (name, calibration) in calibrators(&trees) {
        let model = ScoringModel::new(trees.clone(), calibration);
        check_in_python(&python, &format!("gbdt+{name}"), &model, &rows);
    }
    let linear = ModelGraph::Linear(linear_model());
    let rows = linear_rows();
    for (name, calibration) in calibrators(&linear) {
        let model = ScoringModel::new(linear.clone(), calibration);
        check_in_python(&python, &format!("linear+{name}"), &model, &rows);
    }
    let on_linear = train_gbdt_on_linear();
    let graph = ModelGraph::TreesOnLinear {
        linear: linear_model(),
        trees: on_linear.to_tree_ensemble(),
    };
    let rows = validation_rows(&on_linear);
    for (name, calibration) in calibrators(&graph) {
        let model = ScoringModel::new(graph.clone(), calibration);
        check_in_python(&python, &format!("trees-on-linear+{name}"), &model, &rows);
    }
}
