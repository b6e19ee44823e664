//! Models written by `models::onnx` load into ONNX Runtime through the
//! serving runtime and score as computed by hand.
//!
//! Skipped (with a notice) only when the ONNX Runtime library is absent and
//! `LEADSCORE_REQUIRE_ORT` is unset; CI sets `LEADSCORE_REQUIRE_ORT=1`.

mod common;

use std::sync::Arc;

use common::ort_available;
use models::onnx::{LinearModel, Node, ToOnnx, Tree, TreeEnsemble};
use ndarray::{Array2, array};
use serving::pool::{LoadError, ScoreError};
use serving::{PoolConfig, SessionPool};

/// Largest accepted |ONNX Runtime − expected| for a probability.
const PROBABILITY_TOLERANCE: f64 = 1e-6;

/// Two trees over 3 features; logits worked out by hand in `tree_rows`.
fn tree_model() -> TreeEnsemble {
    let split = |feature, threshold, left, right, missing_left| Node::Split {
        feature,
        threshold,
        left,
        right,
        missing_left,
    };
    let leaf = |value| Node::Leaf { value };
    TreeEnsemble {
        n_features: 3,
        base_score: -0.25,
        trees: vec![
            Tree {
                nodes: vec![
                    split(0, 0.5, 1, 2, false),
                    split(2, -1.0, 3, 4, true),
                    leaf(0.75),
                    leaf(-0.5),
                    leaf(0.25),
                ],
            },
            Tree {
                nodes: vec![split(1, 10.0, 1, 2, false), leaf(0.125), leaf(-1.0)],
            },
        ],
    }
}

/// Rows and their expected probabilities, computed by hand:
/// `logit = base_score + tree0 + tree1`, `p = 1 / (1 + e^-logit)`.
fn tree_rows() -> (Array2<f32>, Vec<f64>) {
    let nan = f32::NAN;
    let rows = array![
        [0.0, 5.0, -2.0], // -0.25 + (-0.5) + 0.125 = -0.625
        [0.5, 10.0, 0.0], // -0.25 + 0.25 + 0.125 = 0.125 (ties go left)
        [1.0, 11.0, 3.0], // -0.25 + 0.75 + (-1.0) = -0.5
        [0.0, nan, nan],  // -0.25 + (-0.5: NaN left) + (-1.0: NaN right) = -1.75
        [nan, 0.0, 0.0],  // -0.25 + (0.75: NaN right) + 0.125 = 0.625
    ];
    let expected = vec![
        0.348_645_135_333_945_75, // sigmoid(-0.625)
        0.531_209_373_373_756_3,  // sigmoid(0.125)
        0.377_540_668_798_145_4,  // sigmoid(-0.5)
        0.148_047_198_031_689_48, // sigmoid(-1.75)
        0.651_354_864_666_054_2,  // sigmoid(0.625)
    ];
    (rows, expected)
}

fn linear_model() -> LinearModel {
    LinearModel {
        weights: vec![0.5, -1.25, 2.0],
        bias: -0.25,
        missing_values: vec![0.0, 0.0, 0.0],
    }
}

fn linear_rows() -> (Array2<f32>, Vec<f64>) {
    let rows = array![
        [1.0, 2.0, 0.5],   // 0.5 - 2.5 + 1.0 - 0.25 = -1.25
        [0.0, 0.0, 0.0],   // -0.25
        [-2.0, 0.4, 1.5],  // -1.0 - 0.5 + 3.0 - 0.25 = 1.25
        [4.0, 1.0, -0.75], // 2.0 - 1.25 - 1.5 - 0.25 = -1.0
    ];
    let expected = vec![
        0.222_700_138_825_308_84, // sigmoid(-1.25)
        0.437_823_499_114_201_93, // sigmoid(-0.25)
        0.777_299_861_174_691_1,  // sigmoid(1.25)
        0.268_941_421_369_995_1,  // sigmoid(-1.0)
    ];
    (rows, expected)
}

fn assert_close(got: &[f32], expected: &[f64], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: row count");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let diff = (f64::from(*g) - e).abs();
        assert!(
            diff <= PROBABILITY_TOLERANCE,
            "{what} row {i}: got {g}, expected {e} (|diff| {diff:e} > {PROBABILITY_TOLERANCE:e})"
        );
    }
}

fn onnx(model: &impl ToOnnx) -> Vec<u8> {
    model.to_onnx_bytes().expect("valid model")
}

/// Writes `model` to a temp `.onnx` file and loads it as a pool.
fn load(model: &impl ToOnnx, sessions: usize) -> (tempfile::TempDir, SessionPool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, onnx(model)).unwrap();
    let pool = SessionPool::from_file(
        &path,
        PoolConfig {
            sessions,
            intra_threads: 1,
        },
    )
    .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    (dir, pool)
}

#[tokio::test]
async fn tree_ensemble_scores_match_hand_computed_probabilities() {
    if !ort_available() {
        return;
    }
    let model = tree_model();
    let (rows, expected) = tree_rows();
    // The Rust reference evaluator agrees with the hand computation...
    for (row, e) in rows.outer_iter().zip(&expected) {
        let p = model.probability(row.as_slice().unwrap());
        assert!((p - e).abs() <= 1e-12, "reference {p} vs hand {e}");
    }
    // ...and so does ONNX Runtime.
    let (_dir, pool) = load(&model, 1);
    assert_eq!(pool.n_features(), 3);
    let got = pool.score_rows(rows).await.unwrap();
    assert_close(&got, &expected, "tree ensemble");
}

#[tokio::test]
async fn linear_model_scores_match_hand_computed_probabilities() {
    if !ort_available() {
        return;
    }
    let model = linear_model();
    let (rows, expected) = linear_rows();
    let (_dir, pool) = load(&model, 1);
    assert_eq!(pool.n_features(), 3);
    let got = pool.score_rows(rows).await.unwrap();
    assert_close(&got, &expected, "linear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_serves_concurrent_requests_with_fewer_sessions() {
    if !ort_available() {
        return;
    }
    let (_dir, pool) = load(&tree_model(), 2);
    assert_eq!(pool.size(), 2);
    let pool = Arc::new(pool);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            let (rows, expected) = tree_rows();
            // Vary the batch: the first k rows.
            let k = 1 + i % rows.nrows();
            let rows = rows.slice(ndarray::s![..k, ..]).to_owned();
            let got = pool.score_rows(rows).await.unwrap();
            assert_close(&got, &expected[..k], "concurrent tree ensemble");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every session went back to the pool.
    let (rows, expected) = tree_rows();
    let (a, b) = tokio::join!(pool.score_rows(rows.clone()), pool.score_rows(rows));
    assert_close(&a.unwrap(), &expected, "after contention");
    assert_close(&b.unwrap(), &expected, "after contention");
}

#[tokio::test]
async fn wrong_width_and_empty_batches() {
    if !ort_available() {
        return;
    }
    let (_dir, pool) = load(&linear_model(), 1);
    let err = pool.score_rows(Array2::zeros((2, 4))).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScoreError::WidthMismatch {
                expected: 3,
                got: 4
            }
        ),
        "{err}"
    );
    assert_eq!(
        pool.score_rows(Array2::zeros((0, 3))).await.unwrap(),
        Vec::<f32>::new()
    );
}

#[tokio::test]
async fn model_without_the_expected_signature_is_rejected() {
    if !ort_available() {
        return;
    }
    let mut proto = linear_model().to_onnx().unwrap();
    let graph = proto.graph.as_mut().unwrap();
    graph.input[0].name = Some("x".into());
    for input in graph.node.iter_mut().flat_map(|n| n.input.iter_mut()) {
        if input == "features" {
            *input = "x".into();
        }
    }
    let bytes = prost::Message::encode_to_vec(&proto);
    let err = SessionPool::from_bytes(&bytes, PoolConfig::default()).unwrap_err();
    assert!(matches!(err, LoadError::Signature(_)), "{err}");
    assert!(err.to_string().contains("`features`"), "{err}");
}
