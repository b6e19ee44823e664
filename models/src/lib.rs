//! What a trained lead-scoring model is, independent of how it was trained
//! or where it is served.
//!
//! * [`onnx`]: the ONNX IR as Rust types (generated from the vendored
//!   `proto/onnx.proto`, committed) and writers turning a [`TreeEnsemble`]
//!   or a [`LinearModel`] into an ONNX graph with one `float32[N, F]` input
//!   `features` and one `float32[N, 1]` output `probability`, which the
//!   serving crate loads into ONNX Runtime.
//!
//! * [`metrics`]: ROC AUC, PR AUC, log loss, Brier, expected calibration
//!   error, lift by decile and threshold tables, checked against
//!   scikit-learn's values stored as fixtures.
//! * [`calibration`]: Platt scaling and isotonic regression fitted on
//!   held-out scores, with the exact `f32` formula an ONNX graph evaluates.
//!
//! The bundle format (model + feature plan + metadata on disk) is still to
//! come.
//!
//! ```
//! use models::onnx::{LinearModel, ToOnnx};
//!
//! let model = LinearModel { weights: vec![0.5, -1.0], bias: 0.25 };
//! let bytes = model.to_onnx_bytes().unwrap();
//! assert!(!bytes.is_empty());
//! assert!((model.probability(&[1.0, 0.0]) - 0.679_178_699).abs() < 1e-6);
//! ```

pub mod calibration;
pub mod metrics;
pub mod onnx;

pub use onnx::{LinearModel, OnnxError, ToOnnx, TreeEnsemble};
