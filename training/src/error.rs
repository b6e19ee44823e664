//! Errors of the training library: each says what is wrong and, where it can, what to do.

use features::DataError;
use models::bundle::BundleError;
use models::calibration::CalibrationError;
use models::gbdt::GbdtError;
use models::metrics::MetricError;
use models::onnx::OnnxError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The dataset cannot train a model that can be trusted (too few positives, a constant
    /// label, a feature with no values...).
    #[error("cannot train: {0}")]
    Data(String),
    #[error(transparent)]
    Dataset(#[from] DataError),
    #[error("metrics: {0}")]
    Metric(#[from] MetricError),
    #[error("gradient-boosted trees: {0}")]
    Gbdt(#[from] GbdtError),
    #[error("calibration: {0}")]
    Calibration(#[from] CalibrationError),
    #[error("logistic regression: {0}")]
    Logistic(String),
    #[error("ONNX export: {0}")]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}
