//! Training for leadscore: from a loaded dataset's point-in-time feature table to validated,
//! calibrated models.
//!
//! [`pipeline`] loads a dataset and builds its features; [`split`] makes honest validation
//! splits (time and entity for event data, stratified k-fold for tabular data); [`guards`]
//! refuses data a model cannot be trusted on and flags likely leakage; [`fit`] fits the two
//! model families (logistic scorecard and gradient-boosted trees); [`evaluate`] validates,
//! calibrates and measures a family ([`evaluate::Evaluation`]); [`train`] picks the family to
//! ship and assembles its bundle, with default thresholds from [`thresholds`] and the HTML
//! report from [`report`]; [`gate`] decides whether a new model may replace the live one;
//! [`drift`] reads a server's drift answer into the `drift` command's table and alerts;
//! [`requests`] writes score requests for a dataset's entities (what
//! the server takes); [`segments`] trains a model per level of a profile field and ships it
//! only where it beats the global model on the segment's held-out rows by more than the
//! noise. The `leadscore-train` binary is a thin command line over this
//! library.

pub mod drift;
pub mod error;
pub mod evaluate;
pub mod fit;
pub mod gate;
pub mod guards;
pub mod lbfgs;
pub mod pipeline;
pub mod prepared_table;
pub mod repeat;
pub mod report;
pub mod requests;
pub mod segments;
pub mod split;
pub mod svg;
pub mod thresholds;
pub mod train;
pub mod truth;
pub mod whiten;
pub mod words;

pub use error::TrainError;
