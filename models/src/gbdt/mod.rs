//! Gradient-boosted decision trees for binary classification, in the style
//! of LightGBM: histogram-based, leaf-wise (best-first) growth, logistic loss.
//!
//! [`GbdtParams`] holds the hyperparameters (LightGBM's defaults) and is
//! checked before fitting; [`GbdtParams::fit`] takes a [`TrainData`]
//! (row-major `f32` features where NaN means missing, 0/1 labels, optional
//! weights and optional validation data for early stopping) and returns a
//! fitted [`Gbdt`]. The model scores rows ([`Gbdt::raw_score`],
//! [`Gbdt::predict_proba`]), reports feature importance, explains single
//! rows with exact path-dependent TreeSHAP ([`Gbdt::shap_values`], or
//! [`Gbdt::shap_values_into`] with a reusable [`ShapScratch`] for serving;
//! precomputed per-leaf tables, built once, make it several times faster),
//! and converts itself to the [`TreeEnsemble`] the ONNX writer takes.
//!
//! The model is built so that `f32` inference in ONNX Runtime reproduces it:
//! every split threshold is a training value (the largest one on the left),
//! so `value <= threshold` in `f32` gives exactly the training partition, and
//! leaf values are stored as the `f32` that is exported; [`Gbdt::raw_score`]
//! sums those same `f32` values in `f64`. Training is deterministic for a
//! given seed, whatever the number of rayon threads.

mod binning;
mod learner;
mod rng;
mod shap;
mod shap_table;
mod tree;

use std::fmt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::onnx::{Node, Tree, TreeEnsemble};
use binning::BinnedMatrix;
use learner::{GradPair, GrowthConfig, TreeLearner};
pub use rng::SplitMix64;

pub use shap::ShapScratch;
pub use tree::{GbdtTree, TreeNode};

/// Rows per parallel task in the per-row passes (gradients, losses); fixed
/// so that sums do not depend on the number of threads.
const ROW_CHUNK: usize = 8192;

/// Hyperparameters of [`Gbdt`] training; the defaults are LightGBM's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GbdtParams {
    /// Boosting rounds (trees), at least 1.
    pub n_trees: usize,
    /// Shrinkage applied to every leaf value, in `(0, ∞)`.
    pub learning_rate: f64,
    /// Maximum leaves per tree, at least 2.
    pub num_leaves: usize,
    /// Maximum splits from the root to a leaf; `None` for no limit.
    pub max_depth: Option<usize>,
    /// Minimum training rows in a leaf.
    pub min_data_in_leaf: usize,
    /// Minimum sum of hessians in a leaf.
    pub min_sum_hessian_in_leaf: f64,
    /// L2 regularisation of leaf values.
    pub lambda_l2: f64,
    /// Minimum gain for a split to be made.
    pub min_gain_to_split: f64,
    /// Maximum value bins per feature (missing values get one more), in
    /// `2..=65535`; up to 255 the binned matrix uses one byte per cell.
    pub max_bins: usize,
    /// Fraction of the features each tree may split on, in `(0, 1]`.
    pub feature_fraction: f64,
    /// Fraction of the rows each tree is grown on (drawn anew every tree),
    /// in `(0, 1]`.
    pub bagging_fraction: f64,
    /// Seed of the binning sample, bagging and feature sampling.
    pub seed: u64,
    /// Stop when the validation log loss has not improved for this many
    /// rounds and keep the trees up to the best round; needs validation
    /// data.
    pub early_stopping_rounds: Option<usize>,
}

impl Default for GbdtParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 20,
            min_sum_hessian_in_leaf: 1e-3,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            max_bins: 255,
            feature_fraction: 1.0,
            bagging_fraction: 1.0,
            seed: 0,
            early_stopping_rounds: None,
        }
    }
}

/// Which part of [`TrainData`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSet {
    /// The rows trained on.
    Training,
    /// The rows watched for early stopping.
    Validation,
}

impl fmt::Display for DataSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataSet::Training => "training",
            DataSet::Validation => "validation",
        })
    }
}

/// Why hyperparameters, data or a model were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    /// A hyperparameter is out of range.
    #[error("invalid parameter {name} = {value}: must be {expected}")]
    InvalidParam {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// `n_features` is 0.
    #[error("n_features is 0: need at least one feature")]
    NoFeatures,
    /// A data set is empty.
    #[error("{set} data has no rows")]
    NoRows { set: DataSet },
    /// `x` or `weights` does not match the number of labels.
    #[error("{set} {what} has {actual} values, expected {expected}")]
    ShapeMismatch {
        set: DataSet,
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A label other than 0 or 1 (the first such row).
    #[error("{set} row {row}: label {value} is not 0 or 1")]
    LabelNotBinary {
        set: DataSet,
        row: usize,
        value: f32,
    },
    /// More rows than the `u32` row ids of training can address.
    #[error("{set} data has {rows} rows; at most {max} are supported", max = u32::MAX)]
    TooManyRows {
        /// Which data set.
        set: DataSet,
        /// Its number of rows.
        rows: usize,
    },
    /// A negative, infinite or NaN weight (the first such row).
    #[error("{set} row {row}: weight {value} is not a finite number >= 0")]
    InvalidWeight {
        set: DataSet,
        row: usize,
        value: f32,
    },
    /// A feature value of ±∞ (the first in row-major order).
    #[error("{set} row {row} column {column}: value {value} is infinite (use NaN for missing)")]
    InfiniteFeature {
        set: DataSet,
        row: usize,
        column: usize,
        value: f32,
    },
    /// Only one class has positive total weight.
    #[error("{set} labels (with positive weight) are all {label}: need both classes")]
    SingleClass { set: DataSet, label: f32 },
    /// A NaN or infinite init score (the first such row).
    #[error("{set} row {row}: init score {value} is not finite")]
    NonFiniteInitScore {
        set: DataSet,
        row: usize,
        value: f64,
    },
    /// Init scores for the training rows but not the validation rows, or
    /// the other way round.
    #[error("init scores must be given for both the training and the validation rows, or neither")]
    InitScoresOnOneSide,
    /// Early stopping was asked for without validation rows.
    #[error("early_stopping_rounds is set but no validation data was given")]
    EarlyStoppingWithoutValidation,
    /// A model (e.g. deserialised) whose trees are malformed.
    #[error("invalid model: {reason}")]
    InvalidModel { reason: String },
}

fn invalid(name: &'static str, value: impl fmt::Debug, expected: &'static str) -> GbdtError {
    GbdtError::InvalidParam {
        name,
        value: format!("{value:?}"),
        expected,
    }
}

impl GbdtParams {
    /// Checks every hyperparameter, naming the first bad one and its value.
    pub fn check(&self) -> Result<(), GbdtError> {
        if self.n_trees == 0 {
            return Err(invalid("n_trees", self.n_trees, "at least 1"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid(
                "learning_rate",
                self.learning_rate,
                "finite and > 0",
            ));
        }
        if self.num_leaves < 2 {
            return Err(invalid("num_leaves", self.num_leaves, "at least 2"));
        }
        if self.max_depth == Some(0) {
            return Err(invalid("max_depth", self.max_depth, "None or at least 1"));
        }
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !non_negative(self.min_sum_hessian_in_leaf) {
            return Err(invalid(
                "min_sum_hessian_in_leaf",
                self.min_sum_hessian_in_leaf,
                "finite and >= 0",
            ));
        }
        if !non_negative(self.lambda_l2) {
            return Err(invalid("lambda_l2", self.lambda_l2, "finite and >= 0"));
        }
        if !non_negative(self.min_gain_to_split) {
            return Err(invalid(
                "min_gain_to_split",
                self.min_gain_to_split,
                "finite and >= 0",
            ));
        }
        if !(2..=65_535).contains(&self.max_bins) {
            return Err(invalid("max_bins", self.max_bins, "in 2..=65535"));
        }
        let fraction = |v: f64| v > 0.0 && v <= 1.0;
        if !fraction(self.feature_fraction) {
            return Err(invalid(
                "feature_fraction",
                self.feature_fraction,
                "in (0, 1]",
            ));
        }
        if !fraction(self.bagging_fraction) {
            return Err(invalid(
                "bagging_fraction",
                self.bagging_fraction,
                "in (0, 1]",
            ));
        }
        if self.early_stopping_rounds == Some(0) {
            return Err(invalid(
                "early_stopping_rounds",
                self.early_stopping_rounds,
                "None or at least 1",
            ));
        }
        Ok(())
    }

    fn growth_config(&self) -> GrowthConfig {
        GrowthConfig {
            num_leaves: self.num_leaves,
            max_depth: self.max_depth,
            min_data_in_leaf: self.min_data_in_leaf,
            min_sum_hessian_in_leaf: self.min_sum_hessian_in_leaf,
            lambda_l2: self.lambda_l2,
            min_gain_to_split: self.min_gain_to_split,
            learning_rate: self.learning_rate,
        }
    }

    /// Checks the hyperparameters and the data, then trains the model.
    pub fn fit(&self, data: &TrainData<'_>) -> Result<Gbdt, GbdtError> {
        self.check()?;
        data.check()?;
        if self.early_stopping_rounds.is_some() && data.valid.is_none() {
            return Err(GbdtError::EarlyStoppingWithoutValidation);
        }
        let n_features = data.n_features;
        let n_rows = data.y.len();
        // With init scores the trees model a correction of a given score: no base score.
        let mean_log_odds = base_score(data.y, data.weights, DataSet::Training)?;
        let base_score = if data.init_scores.is_some() {
            0.0
        } else {
            mean_log_odds
        };
        let matrix = BinnedMatrix::build(data.x, n_features, self.max_bins, self.seed);
        let splittable: Vec<usize> = (0..n_features)
            .filter(|&f| matrix.features[f].is_splittable())
            .collect();

        let mut learner = TreeLearner::new(&matrix, self.growth_config());
        let mut rng = SplitMix64::new(self.seed);
        let mut scores = match data.init_scores {
            Some(init) => init.to_vec(),
            None => vec![f64::from(base_score); n_rows],
        };
        let mut grads: Vec<GradPair> = vec![[0.0; 2]; n_rows];
        let mut in_bag = vec![false; n_rows];
        let mut valid_scores = data.valid.as_ref().map(|v| match v.init_scores {
            Some(init) => init.to_vec(),
            None => vec![f64::from(base_score); v.y.len()],
        });
        let mut trees: Vec<GbdtTree> = Vec::with_capacity(self.n_trees);
        let mut best: Option<(usize, f64)> = None;

        for _ in 0..self.n_trees {
            logistic_gradients(&scores, data.y, data.weights, &mut grads);
            let features = sample_features(&splittable, self.feature_fraction, &mut rng);
            let bag = (self.bagging_fraction < 1.0).then(|| {
                let k = ((self.bagging_fraction * n_rows as f64).round() as usize).clamp(1, n_rows);
                rng.sample_sorted(n_rows, k)
                    .into_iter()
                    .map(|r| r as u32)
                    .collect::<Vec<u32>>()
            });
            let grown = learner.grow(&grads, bag.as_deref(), &features);
            let single_leaf = grown.tree.nodes().len() == 1;
            if single_leaf && !trees.is_empty() {
                break; // no leaf can be split any more: boosting has converged
            }
            let leaf_values: Vec<f64> = grown
                .tree
                .nodes()
                .iter()
                .map(|n| match *n {
                    TreeNode::Leaf { value, .. } => f64::from(value),
                    TreeNode::Split { .. } => 0.0,
                })
                .collect();
            let rows = learner.rows();
            for &(node, begin, end) in &grown.leaf_ranges {
                for &r in &rows[begin..end] {
                    scores[r as usize] += leaf_values[node];
                }
            }
            if bag.is_some() {
                in_bag.fill(false);
                for &r in rows {
                    in_bag[r as usize] = true;
                }
                scores
                    .par_iter_mut()
                    .zip(in_bag.par_iter())
                    .enumerate()
                    .filter(|(_, (_, bagged))| !**bagged)
                    .for_each(|(r, (score, _))| {
                        *score += leaf_values[grown.leaf_of_binned_row(&matrix, r)];
                    });
            }
            if let (Some(valid), Some(valid_scores)) = (&data.valid, valid_scores.as_mut()) {
                valid_scores
                    .par_iter_mut()
                    .zip(valid.x.par_chunks_exact(n_features))
                    .for_each(|(score, row)| *score += f64::from(grown.tree.leaf_value(row)));
                let loss = log_loss(valid_scores, valid.y, valid.weights);
                if best.is_none_or(|(_, best_loss)| loss < best_loss) {
                    best = Some((trees.len() + 1, loss));
                }
            }
            trees.push(grown.tree);
            if single_leaf {
                break;
            }
            if let (Some(rounds), Some((best_trees, _))) = (self.early_stopping_rounds, best)
                && trees.len() - best_trees >= rounds
            {
                break;
            }
        }
        let best_iteration = best.map(|(n, _)| n);
        if let (Some(_), Some(n)) = (self.early_stopping_rounds, best_iteration) {
            trees.truncate(n);
        }
        Gbdt::new(n_features, base_score, trees, best_iteration)
    }
}

/// Validation rows for early stopping; same columns as the training rows.
#[derive(Debug, Clone, Copy)]
pub struct ValidData<'a> {
    /// Row-major features, `y.len() x n_features`; NaN means missing.
    pub x: &'a [f32],
    /// Labels, 0 or 1.
    pub y: &'a [f32],
    /// Row weights (finite, `>= 0`); `None` means all 1.
    pub weights: Option<&'a [f32]>,
    /// The offsets of these rows, when the training rows have them
    /// ([`TrainData::init_scores`]).
    pub init_scores: Option<&'a [f64]>,
}

/// Training data: borrowed row-major features, labels, optional weights and
/// optional validation rows.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Row-major features, `y.len() x n_features`; NaN means missing,
    /// infinities are refused.
    pub x: &'a [f32],
    /// Width of a row.
    pub n_features: usize,
    /// Labels, 0 or 1.
    pub y: &'a [f32],
    /// Row weights (finite, `>= 0`); `None` means all 1.
    pub weights: Option<&'a [f32]>,
    /// Rows to watch for early stopping
    /// ([`GbdtParams::early_stopping_rounds`]).
    pub valid: Option<ValidData<'a>>,
    /// A log-odds offset per row that boosting starts from (LightGBM's
    /// `init_score`), e.g. a linear model's: the trees then model what the
    /// offset misses, the model has no base score, and its logit must be
    /// added to the offset's. `None`: start from the log-odds of the mean
    /// label.
    pub init_scores: Option<&'a [f64]>,
}

impl<'a> TrainData<'a> {
    /// Unweighted training data without validation rows.
    pub fn new(x: &'a [f32], n_features: usize, y: &'a [f32]) -> Self {
        Self {
            x,
            n_features,
            y,
            weights: None,
            valid: None,
            init_scores: None,
        }
    }

    /// Sets the offsets boosting starts from ([`TrainData::init_scores`]).
    pub fn with_init_scores(self, init_scores: &'a [f64]) -> Self {
        Self {
            init_scores: Some(init_scores),
            ..self
        }
    }

    /// Sets the row weights.
    pub fn with_weights(self, weights: &'a [f32]) -> Self {
        Self {
            weights: Some(weights),
            ..self
        }
    }

    /// Sets the validation rows.
    pub fn with_validation(self, valid: ValidData<'a>) -> Self {
        Self {
            valid: Some(valid),
            ..self
        }
    }

    /// Checks shapes, labels, weights and feature values of both sets.
    pub fn check(&self) -> Result<(), GbdtError> {
        if self.n_features == 0 {
            return Err(GbdtError::NoFeatures);
        }
        check_set(
            DataSet::Training,
            self.x,
            self.n_features,
            self.y,
            self.weights,
        )?;
        check_init_scores(DataSet::Training, self.y.len(), self.init_scores)?;
        if let Some(v) = &self.valid {
            check_set(DataSet::Validation, v.x, self.n_features, v.y, v.weights)?;
            check_init_scores(DataSet::Validation, v.y.len(), v.init_scores)?;
            if self.init_scores.is_some() != v.init_scores.is_some() {
                return Err(GbdtError::InitScoresOnOneSide);
            }
        }
        Ok(())
    }
}

fn check_init_scores(set: DataSet, n_rows: usize, init: Option<&[f64]>) -> Result<(), GbdtError> {
    let Some(init) = init else { return Ok(()) };
    if init.len() != n_rows {
        return Err(GbdtError::ShapeMismatch {
            set,
            what: "init_scores",
            expected: n_rows,
            actual: init.len(),
        });
    }
    if let Some(row) = init.iter().position(|v| !v.is_finite()) {
        return Err(GbdtError::NonFiniteInitScore {
            set,
            row,
            value: init[row],
        });
    }
    Ok(())
}

fn check_set(
    set: DataSet,
    x: &[f32],
    n_features: usize,
    y: &[f32],
    weights: Option<&[f32]>,
) -> Result<(), GbdtError> {
    if y.is_empty() {
        return Err(GbdtError::NoRows { set });
    }
    if u32::try_from(y.len()).is_err() {
        return Err(GbdtError::TooManyRows { set, rows: y.len() });
    }
    let expected = y.len().saturating_mul(n_features);
    if x.len() != expected {
        return Err(GbdtError::ShapeMismatch {
            set,
            what: "x",
            expected,
            actual: x.len(),
        });
    }
    if let Some(w) = weights {
        if w.len() != y.len() {
            return Err(GbdtError::ShapeMismatch {
                set,
                what: "weights",
                expected: y.len(),
                actual: w.len(),
            });
        }
        if let Some(row) = w.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(GbdtError::InvalidWeight {
                set,
                row,
                value: w[row],
            });
        }
    }
    if let Some(row) = y.iter().position(|&v| v != 0.0 && v != 1.0) {
        return Err(GbdtError::LabelNotBinary {
            set,
            row,
            value: y[row],
        });
    }
    if let Some(at) = x.iter().position(|v| v.is_infinite()) {
        return Err(GbdtError::InfiniteFeature {
            set,
            row: at / n_features,
            column: at % n_features,
            value: x[at],
        });
    }
    Ok(())
}

/// Log-odds of the weighted mean label, rounded to the `f32` that is
/// exported; refuses a single class.
fn base_score(y: &[f32], weights: Option<&[f32]>, set: DataSet) -> Result<f32, GbdtError> {
    let mut total = 0.0f64;
    let mut positive = 0.0f64;
    for (r, &label) in y.iter().enumerate() {
        let w = weights.map_or(1.0, |w| f64::from(w[r]));
        total += w;
        positive += w * f64::from(label);
    }
    if positive <= 0.0 || positive >= total {
        let label = if positive <= 0.0 { 0.0 } else { 1.0 };
        return Err(GbdtError::SingleClass { set, label });
    }
    let mean = positive / total;
    Ok((mean / (1.0 - mean)).ln() as f32)
}

/// The logistic function, without overflow for large `|z|`.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Gradient `(p - y) w` and hessian `p (1 - p) w` of the log loss at every
/// row's current score.
fn logistic_gradients(scores: &[f64], y: &[f32], weights: Option<&[f32]>, out: &mut [GradPair]) {
    out.par_chunks_mut(ROW_CHUNK)
        .zip(scores.par_chunks(ROW_CHUNK))
        .enumerate()
        .for_each(|(chunk, (out, scores))| {
            let first = chunk * ROW_CHUNK;
            for (i, (pair, &score)) in out.iter_mut().zip(scores).enumerate() {
                let r = first + i;
                let w = weights.map_or(1.0, |w| f64::from(w[r]));
                let p = sigmoid(score);
                let grad = (p - f64::from(y[r])) * w;
                let hess = (p * (1.0 - p)).max(1e-16) * w;
                *pair = [grad as f32, hess as f32];
            }
        });
}

/// Weighted mean log loss of logits `scores`; summed in fixed chunks so the
/// value does not depend on the thread count.
fn log_loss(scores: &[f64], y: &[f32], weights: Option<&[f32]>) -> f64 {
    let parts: Vec<(f64, f64)> = scores
        .par_chunks(ROW_CHUNK)
        .enumerate()
        .map(|(chunk, scores)| {
            let first = chunk * ROW_CHUNK;
            let mut loss = 0.0;
            let mut total = 0.0;
            for (i, &s) in scores.iter().enumerate() {
                let r = first + i;
                let w = weights.map_or(1.0, |w| f64::from(w[r]));
                // -log p(y | s) = softplus(s) - y s
                let softplus = s.max(0.0) + (-s.abs()).exp().ln_1p();
                loss += w * (softplus - f64::from(y[r]) * s);
                total += w;
            }
            (loss, total)
        })
        .collect();
    let (loss, total) = parts
        .iter()
        .fold((0.0, 0.0), |(l, t), (pl, pt)| (l + pl, t + pt));
    if total > 0.0 { loss / total } else { 0.0 }
}

/// The features a tree may use: all splittable ones, or a seeded sample of
/// `fraction` of them (at least one), in increasing order.
fn sample_features(splittable: &[usize], fraction: f64, rng: &mut SplitMix64) -> Vec<usize> {
    if fraction >= 1.0 || splittable.is_empty() {
        return splittable.to_vec();
    }
    let k = ((fraction * splittable.len() as f64).round() as usize).clamp(1, splittable.len());
    rng.sample_sorted(splittable.len(), k)
        .into_iter()
        .map(|i| splittable[i])
        .collect()
}

/// A fitted boosted ensemble: `logit = base_score + Σ_trees leaf(row)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gbdt {
    n_features: usize,
    base_score: f32,
    trees: Vec<GbdtTree>,
    best_iteration: Option<usize>,
    /// TreeSHAP's base value: `base_score + Σ_trees E[tree]`.
    expected_value: f64,
    /// Deepest tree's depth (sizes the TreeSHAP scratch).
    max_depth: usize,
    /// TreeSHAP's precomputed tables, built at the first explanation.
    shap_tables: LazyShapTables,
}

/// A [`Gbdt`]'s TreeSHAP tables, derived from its trees: built once on demand, left out of
/// equality (two models with the same trees are equal whether or not they explained a row).
#[derive(Clone, Default)]
struct LazyShapTables(std::sync::OnceLock<shap_table::ShapTables>);

impl LazyShapTables {
    fn get_or_init(
        &self,
        build: impl FnOnce() -> shap_table::ShapTables,
    ) -> &shap_table::ShapTables {
        self.0.get_or_init(build)
    }
}

impl PartialEq for LazyShapTables {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for LazyShapTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get() {
            Some(tables) => write!(f, "built ({} numbers)", tables.entries()),
            None => f.write_str("not built"),
        }
    }
}

/// The serialised form of [`Gbdt`]; derived fields are recomputed on load.
#[derive(Serialize, Deserialize)]
struct GbdtRepr {
    n_features: usize,
    base_score: f32,
    trees: Vec<GbdtTree>,
    best_iteration: Option<usize>,
}

#[derive(Serialize)]
struct GbdtReprRef<'a> {
    n_features: usize,
    base_score: f32,
    trees: &'a [GbdtTree],
    best_iteration: Option<usize>,
}

impl Serialize for Gbdt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        GbdtReprRef {
            n_features: self.n_features,
            base_score: self.base_score,
            trees: &self.trees,
            best_iteration: self.best_iteration,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Gbdt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = GbdtRepr::deserialize(deserializer)?;
        Gbdt::new(
            repr.n_features,
            repr.base_score,
            repr.trees,
            repr.best_iteration,
        )
        .map_err(serde::de::Error::custom)
    }
}

impl Gbdt {
    /// Assembles a model, validating the trees (see [`GbdtTree::nodes`]):
    /// well-formed, features in range, finite numbers, consistent covers.
    pub fn new(
        n_features: usize,
        base_score: f32,
        trees: Vec<GbdtTree>,
        best_iteration: Option<usize>,
    ) -> Result<Self, GbdtError> {
        if n_features == 0 {
            return Err(GbdtError::NoFeatures);
        }
        if !base_score.is_finite() {
            return Err(GbdtError::InvalidModel {
                reason: format!("base_score {base_score} is not finite"),
            });
        }
        for (t, tree) in trees.iter().enumerate() {
            tree.validate(n_features)
                .map_err(|reason| GbdtError::InvalidModel {
                    reason: format!("tree {t} {reason}"),
                })?;
        }
        let expected_value =
            f64::from(base_score) + trees.iter().map(GbdtTree::expected_value).sum::<f64>();
        let max_depth = trees.iter().map(GbdtTree::depth).max().unwrap_or(0);
        Ok(Self {
            n_features,
            base_score,
            trees,
            best_iteration,
            expected_value,
            max_depth,
            shap_tables: LazyShapTables::default(),
        })
    }

    /// Width of the rows the model scores.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Log-odds of the weighted mean training label (as the exported `f32`).
    pub fn base_score(&self) -> f32 {
        self.base_score
    }

    /// The trees, in boosting order.
    pub fn trees(&self) -> &[GbdtTree] {
        &self.trees
    }

    /// With validation data: the number of trees at which the validation
    /// log loss was lowest. With early stopping the model keeps exactly
    /// these trees; without, it keeps all of them.
    pub fn best_iteration(&self) -> Option<usize> {
        self.best_iteration
    }

    /// The logit `base_score + Σ_trees leaf(row)`, summed in `f64` over the
    /// `f32` leaf values that are exported.
    ///
    /// # Panics
    /// If `row.len() != n_features`.
    pub fn raw_score(&self, row: &[f32]) -> f64 {
        assert_eq!(row.len(), self.n_features, "row width");
        self.trees
            .iter()
            .fold(f64::from(self.base_score), |acc, tree| {
                acc + f64::from(tree.leaf_value(row))
            })
    }

    /// Probability of the positive class, `sigmoid(raw_score(row))`.
    ///
    /// # Panics
    /// If `row.len() != n_features`.
    pub fn predict_proba(&self, row: &[f32]) -> f64 {
        sigmoid(self.raw_score(row))
    }

    /// [`predict_proba`](Self::predict_proba) of every row of the row-major
    /// `x`, in parallel.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `n_features`.
    pub fn predict_proba_batch(&self, x: &[f32]) -> Vec<f64> {
        assert_eq!(x.len() % self.n_features, 0, "x is not whole rows");
        x.par_chunks_exact(self.n_features)
            .map(|row| self.predict_proba(row))
            .collect()
    }

    /// Total split gain per feature.
    pub fn feature_importance_gain(&self) -> Vec<f64> {
        let mut gains = vec![0.0; self.n_features];
        for node in self.trees.iter().flat_map(|t| t.nodes()) {
            if let TreeNode::Split { feature, gain, .. } = *node {
                gains[feature] += gain;
            }
        }
        gains
    }

    /// Number of splits per feature.
    pub fn feature_importance_splits(&self) -> Vec<usize> {
        let mut splits = vec![0; self.n_features];
        for node in self.trees.iter().flat_map(|t| t.nodes()) {
            if let TreeNode::Split { feature, .. } = *node {
                splits[feature] += 1;
            }
        }
        splits
    }

    /// The ensemble for the ONNX writer: same nodes, thresholds and `f32`
    /// leaf values, so `TreeEnsemble::logit` equals [`raw_score`](Self::raw_score).
    pub fn to_tree_ensemble(&self) -> TreeEnsemble {
        let trees = self
            .trees
            .iter()
            .map(|tree| Tree {
                nodes: tree
                    .nodes()
                    .iter()
                    .map(|node| match *node {
                        TreeNode::Split {
                            feature,
                            threshold,
                            missing_left,
                            left,
                            right,
                            ..
                        } => Node::Split {
                            feature,
                            threshold,
                            left,
                            right,
                            missing_left,
                        },
                        TreeNode::Leaf { value, .. } => Node::Leaf { value },
                    })
                    .collect(),
            })
            .collect();
        TreeEnsemble {
            n_features: self.n_features,
            base_score: self.base_score,
            trees,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows with two informative features (one with missing values whose
    /// missingness is informative too), one noise feature and a constant.
    pub(crate) fn synthetic(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = SplitMix64::new(seed);
        let mut x = Vec::with_capacity(n * 4);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a = rng.next_f64() as f32;
            let b = if rng.next_f64() < 0.2 {
                f32::NAN
            } else {
                (rng.next_f64() * 10.0).floor() as f32
            };
            let noise = rng.next_f64() as f32;
            let logit = 4.0 * (f64::from(a) - 0.5)
                + if b.is_nan() {
                    1.5
                } else {
                    0.3 * (f64::from(b) - 5.0)
                };
            let label = rng.next_f64() < sigmoid(logit);
            x.extend_from_slice(&[a, b, noise, 7.0]);
            y.push(if label { 1.0 } else { 0.0 });
        }
        (x, y)
    }

    pub(crate) fn auc(scores: &[f64], y: &[f32]) -> f64 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let (mut rank_sum, mut positives) = (0.0, 0.0);
        for (rank, &i) in order.iter().enumerate() {
            if y[i] == 1.0 {
                rank_sum += rank as f64 + 1.0;
                positives += 1.0;
            }
        }
        let negatives = scores.len() as f64 - positives;
        (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
    }

    fn small_params() -> GbdtParams {
        GbdtParams {
            n_trees: 30,
            num_leaves: 8,
            ..GbdtParams::default()
        }
    }

    #[test]
    fn check_names_the_bad_parameter() {
        assert!(GbdtParams::default().check().is_ok());
        let cases: Vec<(GbdtParams, &str)> = vec![
            (
                GbdtParams {
                    n_trees: 0,
                    ..Default::default()
                },
                "n_trees",
            ),
            (
                GbdtParams {
                    learning_rate: f64::NAN,
                    ..Default::default()
                },
                "learning_rate",
            ),
            (
                GbdtParams {
                    num_leaves: 1,
                    ..Default::default()
                },
                "num_leaves",
            ),
            (
                GbdtParams {
                    max_depth: Some(0),
                    ..Default::default()
                },
                "max_depth",
            ),
            (
                GbdtParams {
                    lambda_l2: -1.0,
                    ..Default::default()
                },
                "lambda_l2",
            ),
            (
                GbdtParams {
                    max_bins: 1,
                    ..Default::default()
                },
                "max_bins",
            ),
            (
                GbdtParams {
                    feature_fraction: 0.0,
                    ..Default::default()
                },
                "feature_fraction",
            ),
            (
                GbdtParams {
                    bagging_fraction: 1.5,
                    ..Default::default()
                },
                "bagging_fraction",
            ),
            (
                GbdtParams {
                    early_stopping_rounds: Some(0),
                    ..Default::default()
                },
                "early_stopping_rounds",
            ),
        ];
        for (params, field) in cases {
            match params.check() {
                Err(GbdtError::InvalidParam { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: {other:?}"),
            }
            // fit refuses before looking at the data
            let data = TrainData::new(&[], 1, &[]);
            assert!(matches!(
                params.fit(&data),
                Err(GbdtError::InvalidParam { .. })
            ));
        }
        let message = GbdtParams {
            max_bins: 70_000,
            ..Default::default()
        }
        .check()
        .map_err(|e| e.to_string());
        assert_eq!(
            message,
            Err("invalid parameter max_bins = 70000: must be in 2..=65535".to_string())
        );
    }

    #[test]
    fn data_errors_name_row_and_column() {
        let p = small_params();
        let x = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [0.0f32, 1.0, 0.0];
        let fit = |d: TrainData<'_>| p.fit(&d).err();
        assert_eq!(
            fit(TrainData::new(&x, 2, &[0.0, 1.0])),
            Some(GbdtError::ShapeMismatch {
                set: DataSet::Training,
                what: "x",
                expected: 4,
                actual: 6
            })
        );
        assert_eq!(
            fit(TrainData::new(&[], 2, &[])),
            Some(GbdtError::NoRows {
                set: DataSet::Training
            })
        );
        assert_eq!(fit(TrainData::new(&x, 0, &y)), Some(GbdtError::NoFeatures));
        assert_eq!(
            fit(TrainData::new(&x, 2, &[0.0, 2.0, 1.0])),
            Some(GbdtError::LabelNotBinary {
                set: DataSet::Training,
                row: 1,
                value: 2.0
            })
        );
        let mut bad = x;
        bad[5] = f32::NEG_INFINITY;
        assert_eq!(
            fit(TrainData::new(&bad, 2, &y)),
            Some(GbdtError::InfiniteFeature {
                set: DataSet::Training,
                row: 2,
                column: 1,
                value: f32::NEG_INFINITY
            })
        );
        let mut missing = x;
        missing[5] = f32::NAN;
        assert_eq!(fit(TrainData::new(&missing, 2, &y)), None);
        assert!(matches!(
            fit(TrainData::new(&x, 2, &y).with_weights(&[1.0, f32::NAN, 1.0])),
            Some(GbdtError::InvalidWeight {
                set: DataSet::Training,
                row: 1,
                ..
            })
        ));
        assert_eq!(
            fit(TrainData::new(&x, 2, &[1.0, 1.0, 1.0])),
            Some(GbdtError::SingleClass {
                set: DataSet::Training,
                label: 1.0
            })
        );
        // The positive class has zero weight: a single class in effect.
        assert_eq!(
            fit(TrainData::new(&x, 2, &y).with_weights(&[1.0, 0.0, 1.0])),
            Some(GbdtError::SingleClass {
                set: DataSet::Training,
                label: 0.0
            })
        );
        let valid = ValidData {
            x: &x[..4],
            y: &[0.0, 3.0],
            weights: None,
            init_scores: None,
        };
        assert_eq!(
            fit(TrainData::new(&x, 2, &y).with_validation(valid)),
            Some(GbdtError::LabelNotBinary {
                set: DataSet::Validation,
                row: 1,
                value: 3.0
            })
        );
        let early = GbdtParams {
            early_stopping_rounds: Some(5),
            ..small_params()
        };
        assert_eq!(
            early.fit(&TrainData::new(&x, 2, &y)).err(),
            Some(GbdtError::EarlyStoppingWithoutValidation)
        );
    }

    #[test]
    fn learns_signal_and_missingness() {
        let (x, y) = synthetic(4000, 1);
        let (x_test, y_test) = synthetic(2000, 2);
        let model = GbdtParams::default()
            .fit(&TrainData::new(&x, 4, &y))
            .expect("fit");
        let base = y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64;
        assert!((f64::from(model.base_score()) - (base / (1.0 - base)).ln()).abs() < 1e-6);
        let scores = model.predict_proba_batch(&x_test);
        let test_auc = auc(&scores, &y_test);
        // The Bayes AUC of this problem is about 0.83.
        assert!(test_auc > 0.78, "test AUC {test_auc}");
        // Missing b carries +1.5 logits: NaN scores above b = 5.
        let with_nan = model.raw_score(&[0.5, f32::NAN, 0.5, 7.0]);
        let middle = model.raw_score(&[0.5, 5.0, 0.5, 7.0]);
        assert!(with_nan > middle + 0.8, "{with_nan} vs {middle}");
        let splits = model.feature_importance_splits();
        let gains = model.feature_importance_gain();
        assert_eq!(splits[3], 0, "constant feature never splits");
        assert!(gains[0] > gains[2] && gains[1] > gains[2], "{gains:?}");
        assert_eq!(
            splits.iter().sum::<usize>(),
            model
                .trees()
                .iter()
                .map(|t| t.n_leaves() - 1)
                .sum::<usize>()
        );
        assert!(model.trees().iter().all(|t| t.n_leaves() <= 31));
    }

    #[test]
    fn limits_on_leaves_depth_and_leaf_size_hold() {
        let (x, y) = synthetic(3000, 3);
        let params = GbdtParams {
            n_trees: 5,
            num_leaves: 64,
            max_depth: Some(3),
            min_data_in_leaf: 50,
            ..GbdtParams::default()
        };
        let model = params.fit(&TrainData::new(&x, 4, &y)).expect("fit");
        for tree in model.trees() {
            assert!(tree.depth() <= 3);
            assert!(tree.n_leaves() <= 8);
            for node in tree.nodes() {
                if let TreeNode::Leaf { cover, .. } = node {
                    assert!(*cover >= 50.0);
                }
            }
        }
        let stumps = GbdtParams {
            n_trees: 3,
            num_leaves: 2,
            ..GbdtParams::default()
        }
        .fit(&TrainData::new(&x, 4, &y))
        .expect("fit");
        assert!(stumps.trees().iter().all(|t| t.n_leaves() == 2));
    }

    /// Rows that probe every threshold exactly, just above, and NaN.
    fn probe_rows(model: &Gbdt, seed: u64, n: usize) -> Vec<Vec<f32>> {
        let thresholds: Vec<(usize, f32)> = model
            .trees()
            .iter()
            .flat_map(|t| t.nodes())
            .filter_map(|node| match *node {
                TreeNode::Split {
                    feature, threshold, ..
                } => Some((feature, threshold)),
                TreeNode::Leaf { .. } => None,
            })
            .collect();
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let mut row: Vec<f32> = (0..model.n_features())
                    .map(|_| rng.next_f64() as f32 * 10.0)
                    .collect();
                for value in row.iter_mut() {
                    if rng.next_f64() < 0.1 {
                        *value = f32::NAN;
                    }
                }
                for _ in 0..3 {
                    let (feature, threshold) = thresholds[rng.below(thresholds.len())];
                    row[feature] = match rng.below(3) {
                        0 => threshold,
                        1 => f32::from_bits(threshold.to_bits() + 1),
                        _ => f32::from_bits(threshold.to_bits().wrapping_sub(1)),
                    };
                }
                row
            })
            .collect()
    }

    #[test]
    fn exported_ensemble_scores_exactly_like_raw_score() {
        let (x, y) = synthetic(3000, 4);
        let model = small_params().fit(&TrainData::new(&x, 4, &y)).expect("fit");
        let ensemble = model.to_tree_ensemble();
        assert_eq!(ensemble.trees.len(), model.trees().len());
        assert_eq!(ensemble.base_score, model.base_score());
        for row in probe_rows(&model, 5, 2000).iter().chain(
            x.chunks(4)
                .take(500)
                .map(|r| r.to_vec())
                .collect::<Vec<_>>()
                .iter(),
        ) {
            let exported = ensemble
                .trees
                .iter()
                .fold(f64::from(ensemble.base_score), |acc, t| {
                    acc + f64::from(t.leaf_value(row))
                });
            let raw = model.raw_score(row);
            assert!(
                (exported - raw).abs() <= 1e-6 * raw.abs().max(1.0),
                "{exported} vs {raw}"
            );
        }
    }

    #[test]
    fn thresholds_reproduce_the_training_partition() {
        // With full-batch training every training row's score is
        // base + Σ leaf via bins; raw_score re-derives it from raw values,
        // so the two agree exactly only if every threshold partitions the
        // training values like the bins do. Values are chosen to be close.
        let mut rng = SplitMix64::new(6);
        let n = 3000;
        let mut x = Vec::with_capacity(n * 2);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a = 1.0 + (rng.next_f64() * 1e-5) as f32; // many nearby f32 values
            let b = (rng.next_f64() * 1000.0) as f32;
            x.extend_from_slice(&[a, b]);
            y.push(if rng.next_f64() < f64::from((a - 1.0) * 1e5) {
                1.0
            } else {
                0.0
            });
        }
        let params = GbdtParams {
            max_bins: 16,
            ..small_params()
        };
        let matrix = BinnedMatrix::build(&x, 2, params.max_bins, params.seed);
        let mut learner = TreeLearner::new(&matrix, params.growth_config());
        let grads: Vec<GradPair> = y.iter().map(|&v| [0.5 - v, 0.25]).collect();
        let grown = learner.grow(&grads, None, &[0, 1]);
        assert!(grown.tree.n_leaves() >= 4);
        let mut leaf_of_row = vec![usize::MAX; n];
        for &(node, begin, end) in &grown.leaf_ranges {
            for &r in &learner.rows()[begin..end] {
                leaf_of_row[r as usize] = node;
            }
        }
        for (r, row) in x.chunks(2).enumerate() {
            assert_eq!(grown.tree.leaf_index(row), leaf_of_row[r], "row {r}");
            assert_eq!(
                grown.leaf_of_binned_row(&matrix, r),
                leaf_of_row[r],
                "row {r}"
            );
        }
    }

    #[test]
    fn same_model_for_one_and_two_threads() {
        let (x, y) = synthetic(3000, 7);
        let (xv, yv) = synthetic(500, 8);
        let params = GbdtParams {
            bagging_fraction: 0.7,
            feature_fraction: 0.75,
            seed: 42,
            early_stopping_rounds: Some(10),
            ..small_params()
        };
        let data = TrainData::new(&x, 4, &y).with_validation(ValidData {
            x: &xv,
            y: &yv,
            weights: None,
            init_scores: None,
        });
        let fit_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| params.fit(&data)).expect("fit")
        };
        let one = fit_with(1);
        let two = fit_with(2);
        assert_eq!(one, two);
        let other_seed = GbdtParams {
            seed: 43,
            ..params.clone()
        }
        .fit(&data)
        .expect("fit");
        assert_ne!(one, other_seed);
    }

    #[test]
    fn boosting_from_init_scores_learns_only_what_they_miss() {
        // logit = offset + (x0 > 0.5 ? 1 : -1); the offset is not a feature.
        let mut rng = SplitMix64::new(21);
        let n = 20_000;
        let mut x = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let x0 = rng.next_f64() as f32;
            let offset = rng.next_f64() * 6.0 - 3.0;
            let logit = offset + if x0 > 0.5 { 1.0 } else { -1.0 };
            x.push(x0);
            offsets.push(offset);
            y.push(if rng.next_f64() < sigmoid(logit) {
                1.0
            } else {
                0.0
            });
        }
        let params = GbdtParams {
            n_trees: 50,
            num_leaves: 2,
            ..GbdtParams::default()
        };
        let with_offsets = params
            .fit(&TrainData::new(&x, 1, &y).with_init_scores(&offsets))
            .expect("fit");
        assert_eq!(with_offsets.base_score(), 0.0);
        let step = |m: &Gbdt| m.raw_score(&[0.9]) - m.raw_score(&[0.1]);
        assert!(
            (step(&with_offsets) - 2.0).abs() < 0.3,
            "step {}",
            step(&with_offsets)
        );
        // Without the offsets the same step is attenuated (the ignored
        // offset blurs it), so the test tells the two apart.
        let without = params.fit(&TrainData::new(&x, 1, &y)).expect("fit");
        assert!(step(&without) < 1.6, "step {}", step(&without));

        let short = &offsets[..10];
        assert!(matches!(
            params.fit(&TrainData::new(&x, 1, &y).with_init_scores(short)),
            Err(GbdtError::ShapeMismatch {
                what: "init_scores",
                ..
            })
        ));
        let mut bad = offsets.clone();
        bad[7] = f64::NAN;
        assert!(matches!(
            params.fit(&TrainData::new(&x, 1, &y).with_init_scores(&bad)),
            Err(GbdtError::NonFiniteInitScore { row: 7, .. })
        ));
        let valid = ValidData {
            x: &x[..100],
            y: &y[..100],
            weights: None,
            init_scores: None,
        };
        assert!(matches!(
            params.fit(
                &TrainData::new(&x, 1, &y)
                    .with_init_scores(&offsets)
                    .with_validation(valid)
            ),
            Err(GbdtError::InitScoresOnOneSide)
        ));
    }

    #[test]
    fn early_stopping_keeps_the_best_round() {
        // Pure noise labels: validation loss stops improving quickly.
        let mut rng = SplitMix64::new(9);
        let x: Vec<f32> = (0..4000 * 3).map(|_| rng.next_f64() as f32).collect();
        let y: Vec<f32> = (0..4000)
            .map(|_| if rng.next_f64() < 0.3 { 1.0 } else { 0.0 })
            .collect();
        let (xv, yv) = (&x[..1000 * 3], &y[..1000]);
        let (xt, yt) = (&x[1000 * 3..], &y[1000..]);
        let params = GbdtParams {
            n_trees: 200,
            early_stopping_rounds: Some(5),
            ..GbdtParams::default()
        };
        let model = params
            .fit(&TrainData::new(xt, 3, yt).with_validation(ValidData {
                x: xv,
                y: yv,
                weights: None,
                init_scores: None,
            }))
            .expect("fit");
        let best = model.best_iteration().expect("validation given");
        assert_eq!(model.trees().len(), best);
        assert!(best < 50, "best {best}");
        let val_loss = |m: &Gbdt, trees: usize| {
            let scores: Vec<f64> = xv
                .chunks(3)
                .map(|row| {
                    m.trees()[..trees]
                        .iter()
                        .fold(f64::from(m.base_score()), |a, t| {
                            a + f64::from(t.leaf_value(row))
                        })
                })
                .collect();
            log_loss(&scores, yv, None)
        };
        let full = GbdtParams {
            n_trees: best + 5,
            early_stopping_rounds: None,
            ..params.clone()
        }
        .fit(&TrainData::new(xt, 3, yt).with_validation(ValidData {
            x: xv,
            y: yv,
            weights: None,
            init_scores: None,
        }))
        .expect("fit");
        assert_eq!(full.best_iteration(), Some(best));
        let best_loss = val_loss(&full, best);
        for n in 1..=best + 5 {
            assert!(val_loss(&full, n) >= best_loss, "round {n}");
        }
    }

    #[test]
    fn weights_act_like_repeated_rows() {
        let (x, y) = synthetic(1500, 10);
        let weights: Vec<f32> = (0..1500).map(|r| (r % 3) as f32).collect();
        let mut x_rep = Vec::new();
        let mut y_rep = Vec::new();
        for (r, w) in weights.iter().enumerate() {
            for _ in 0..*w as usize {
                x_rep.extend_from_slice(&x[r * 4..r * 4 + 4]);
                y_rep.push(y[r]);
            }
        }
        // min_data_in_leaf counts rows, so disable it to compare.
        // Enough bins for one per distinct value in both data sets.
        let params = GbdtParams {
            min_data_in_leaf: 0,
            max_bins: 5000,
            ..small_params()
        };
        let weighted = params
            .fit(&TrainData::new(&x, 4, &y).with_weights(&weights))
            .expect("fit");
        let repeated = params.fit(&TrainData::new(&x_rep, 4, &y_rep)).expect("fit");
        assert_eq!(weighted.base_score(), repeated.base_score());
        // Rows of weight 0 may fall either side of a threshold between
        // positive-weight values, so compare on the others.
        for row in x
            .chunks(4)
            .zip(&weights)
            .filter(|(_, w)| **w > 0.0)
            .map(|(r, _)| r)
        {
            let (a, b) = (weighted.raw_score(row), repeated.raw_score(row));
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn serde_round_trip_and_validation_on_load() {
        let (x, y) = synthetic(1000, 11);
        let model = small_params().fit(&TrainData::new(&x, 4, &y)).expect("fit");
        let json = serde_json::to_string(&model).expect("serialise");
        let back: Gbdt = serde_json::from_str(&json).expect("deserialise");
        // f32 values round-trip exactly through JSON; f64 gains within an ulp.
        assert_eq!(back.to_tree_ensemble(), model.to_tree_ensemble());
        assert_eq!(back.best_iteration(), model.best_iteration());
        for (a, b) in back
            .feature_importance_gain()
            .iter()
            .zip(model.feature_importance_gain())
        {
            assert!((a - b).abs() <= 1e-12 * b.abs());
        }
        let broken = json.replacen("\"feature\":", "\"feature\":9", 1);
        let err = serde_json::from_str::<Gbdt>(&broken).expect_err("feature out of range");
        assert!(err.to_string().contains("tree 0"), "{err}");
        let params: GbdtParams = serde_json::from_str(r#"{"n_trees": 7}"#).expect("params");
        assert_eq!(
            params,
            GbdtParams {
                n_trees: 7,
                ..GbdtParams::default()
            }
        );
    }
}
