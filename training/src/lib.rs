//! Training for leadscore: from a loaded dataset's point-in-time feature table to validated,
//! calibrated models.
//!
//! [`split`] makes honest validation splits (time and entity for event data, stratified k-fold
//! for tabular data), [`guards`] refuses data a model cannot be trusted on and flags likely
//! leakage, and [`fit`] fits the two model families (logistic scorecard and gradient-boosted
//! trees). The `leadscore-train` binary is a thin command line over this library.

pub mod error;
pub mod evaluate;
pub mod fit;
pub mod guards;
pub mod pipeline;
pub mod split;
pub mod truth;

pub use error::TrainError;
