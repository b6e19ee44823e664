//! The data contract and the features of leadscore, shared by training and serving.
//!
//! A company's CRM history arrives as files described by a [`DatasetSpec`] (TOML): in *event
//! form* (entities, an event log, outcomes) or in *tabular form* (one row per entity with a
//! label). [`load::load_dataset`] reads and validates those files (CSV or Parquet) into a
//! [`LoadedDataset`] of canonical polars frames, naming the file, row, column and value of
//! anything wrong. [`FeaturePlan`] is fitted once on training data (event vocabulary,
//! categorical levels with rare ones grouped) and then turns one entity's history as of a
//! cutoff into a fixed, named vector of `f32` features. The batch [`builder`] (polars lazy
//! frames) and the server both call [`FeaturePlan::compute`], so a lead's features at serving
//! time are bit for bit those of its training row. [`reasons`] groups the features into what
//! a sales rep recognises (a profile field, an event type, a channel) and says each group's
//! value in words, for the reasons given with a score. [`parts`] builds one history's table in
//! parts (the Python package's Spark build) equal to one build of the whole. [`synthetic`] generates CRM histories with
//! a hidden ground-truth model for tests, benchmarks and the demo.

pub mod builder;
pub mod error;
pub mod history;
pub mod load;
pub mod parts;
pub mod plan;
pub mod reasons;
pub mod spec;
pub mod synthetic;

pub use error::{DataError, Location};
pub use history::{EntityHistory, Event, ProfileValue};
pub use load::LoadedDataset;
pub use plan::{FeaturePlan, FeaturePlanParams};
pub use spec::DatasetSpec;
