//! What a trained lead-scoring model is, independent of how it was trained
//! or where it is served.
//!
//! * [`onnx`]: the ONNX IR as Rust types (generated from the vendored
//!   `proto/onnx.proto`, committed) and the writer turning a
//!   [`ScoringModel`] (a [`TreeEnsemble`] or a
//!   [`LinearModel`] plus its calibrator) into an ONNX graph with one
//!   `float32[N, F]` input `features` and one `float32[N, 1]` output
//!   `probability`, the calibrated probability, which the serving crate
//!   loads into ONNX Runtime.
//!
//! * [`metrics`]: ROC AUC, PR AUC, log loss, Brier, expected calibration
//!   error, lift by decile and threshold tables, checked against
//!   scikit-learn's values stored as fixtures.
//! * [`gbdt`]: a histogram gradient-boosted tree learner for binary
//!   classification (LightGBM-style leaf-wise growth, learned missing-value
//!   directions, `f32` thresholds that the exported ONNX graph reproduces
//!   exactly) with exact TreeSHAP explanations.
//! * [`calibration`]: Platt scaling and isotonic regression fitted on
//!   held-out scores, with the exact `f32` formula an ONNX graph evaluates.
//! * [`bundle`]: the model bundle on disk, `<registry>/<model>/<version>/`
//!   with `model.onnx`, a JSON manifest (features, feature plan, dataset and
//!   its fingerprint, metrics, calibration, thresholds and grade bands), an
//!   explainer, a report and the holdout scores; written atomically, read
//!   back with checks, listed by [`bundle::Registry`].
//! * [`capacity`]: thresholds by sales capacity, from a bundle's held-out
//!   predictions: leads a week, precision, share of conversions caught and
//!   expected conversions of a cut-off, and per grade band.
//! * [`health`]: a model's held-out curves (ROC, gains, calibration, deciles, the
//!   score histogram) and conversion by profile field, for the console.
//! * [`drift`]: the training distribution of a model's inputs stored in its
//!   bundle, counts of scored rows, and their drift (PSI, share missing, share
//!   of unknown categorical levels).
//! * [`thresholds_file`]: the thresholds file sales ops edit (cut-offs by
//!   probability or by capacity), read by the server and the `thresholds`
//!   command alike.
//!
//! ```
//! use models::onnx::{LinearModel, ToOnnx};
//!
//! let model = LinearModel { weights: vec![0.5, -1.0], bias: 0.25, missing_values: vec![0.0, 0.0] };
//! let bytes = model.to_onnx_bytes().unwrap();
//! assert!(!bytes.is_empty());
//! assert!((model.probability(&[1.0, 0.0]) - 0.679_178_699).abs() < 1e-6);
//! ```

pub mod bundle;
pub mod calibration;
pub mod capacity;
pub mod drift;
pub mod gbdt;
pub mod health;
pub mod metrics;
pub mod onnx;
pub mod thresholds_file;

pub use onnx::{LinearModel, ModelGraph, OnnxError, ScoringModel, ToOnnx, TreeEnsemble};
