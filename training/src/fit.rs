//! The two model families, fitted on rows of a [`FeatureTable`].
//!
//! * [`LogisticParams`] → [`LogisticScorecard`]: L2 logistic regression on standardised
//!   features, missing values imputed with the training mean, then folded back into one
//!   weight per raw feature, so that a score is `bias + Σ w_j x_j` and a feature's exact
//!   contribution is `w_j (x_j - mean_j)`. The penalised log loss is minimised by
//!   [`crate::lbfgs`] in the whitened coordinates of [`crate::whiten`] (far fewer passes on
//!   correlated features), over the table's own rows (no copy of the matrix), in parallel
//!   chunks summed in a fixed order (the same weights whatever the number of threads). It is the
//!   objective of linfa-logistic and of scikit-learn's `LogisticRegression(C = 1 / alpha)`,
//!   which the tests check against; linfa-logistic itself took 993 s on 383k x 196 rows
//!   where this takes seconds (ARCHITECTURE.md).
//! * gradient-boosted trees: [`models::gbdt`], fed the rows gathered by `BoostingRows`.

use features::builder::FeatureTable;
use models::gbdt::{Gbdt, GbdtParams, TrainData, ValidData};

use crate::error::TrainError;
use crate::whiten::Whitening;

/// Logistic-regression hyperparameters, checked before fitting.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogisticParams {
    /// L2 penalty on the standardised weights: the loss is `Σ logloss + alpha/2 |w|²`
    /// (scikit-learn's default `C = 1` is `alpha = 1`).
    pub alpha: f64,
    pub max_iterations: u64,
    /// Stop when no entry of the gradient of the *mean* penalised log loss exceeds this.
    pub gradient_tolerance: f64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams {
            alpha: 1.0,
            max_iterations: 1000,
            gradient_tolerance: 1e-5,
        }
    }
}

/// A fitted logistic regression in raw-feature space.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogisticScorecard {
    /// One weight per raw feature.
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Training mean of each feature: the value a missing feature takes, and the reference of
    /// each contribution.
    pub means: Vec<f64>,
    /// Training standard deviation of each feature (1 for a constant one).
    pub scales: Vec<f64>,
    /// How the solver ended.
    pub convergence: Convergence,
}

/// How the L-BFGS fit of a scorecard ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Convergence {
    pub iterations: usize,
    /// Largest absolute entry of the gradient of the mean penalised log loss at the end.
    pub gradient_max: f64,
    /// Whether `gradient_max` reached the tolerance; when not, the weights are the best found
    /// in `max_iterations` (as scikit-learn's ConvergenceWarning).
    pub converged: bool,
}

impl Convergence {
    /// A warning for the user when the solver did not converge.
    pub fn warning(&self) -> Option<String> {
        (!self.converged).then(|| {
            format!(
                "the scorecard's solver stopped after {} iterations before reaching its \
                 tolerance (largest gradient entry {:.1e}); the weights are usable but not \
                 fully converged",
                self.iterations, self.gradient_max
            )
        })
    }
}

impl LogisticParams {
    pub fn check(&self) -> Result<(), TrainError> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(TrainError::Logistic(format!(
                "alpha must be a finite number >= 0, not {}",
                self.alpha
            )));
        }
        if self.max_iterations == 0 {
            return Err(TrainError::Logistic(
                "max_iterations must be at least 1".into(),
            ));
        }
        if !(self.gradient_tolerance.is_finite() && self.gradient_tolerance > 0.0) {
            return Err(TrainError::Logistic(format!(
                "gradient_tolerance must be a finite number > 0, not {}",
                self.gradient_tolerance
            )));
        }
        Ok(())
    }

    /// Fits on `rows` of `table`.
    pub fn fit(
        &self,
        table: &FeatureTable,
        rows: &[usize],
    ) -> Result<LogisticScorecard, TrainError> {
        self.fit_from(table, rows, None)
    }

    /// [`LogisticParams::fit`], with the solver starting from `warm` (a scorecard fitted on
    /// similar rows, e.g. most of these) instead of zero: the same minimum to the tolerance,
    /// in far fewer passes over the rows.
    pub fn fit_from(
        &self,
        table: &FeatureTable,
        rows: &[usize],
        warm: Option<&LogisticScorecard>,
    ) -> Result<LogisticScorecard, TrainError> {
        self.fit_with(table, rows, warm, true)
    }

    /// [`LogisticParams::fit_from`], solving in whitened coordinates or not (the same minimum
    /// to the tolerance; the tests compare the two).
    fn fit_with(
        &self,
        table: &FeatureTable,
        rows: &[usize],
        warm: Option<&LogisticScorecard>,
        whiten: bool,
    ) -> Result<LogisticScorecard, TrainError> {
        self.check()?;
        if rows.is_empty() {
            return Err(TrainError::Logistic("no training rows".into()));
        }
        let n = table.n_features();
        let (means, scales, variances) = column_moments(table, rows);
        let problem = StandardisedProblem {
            table,
            rows,
            means: &means,
            inverse_scales: scales.iter().map(|s| 1.0 / s).collect(),
            alpha: self.alpha,
        };
        // Parameters: the standardised weights, then the intercept; the objective is the mean
        // penalised log loss, so the tolerance does not depend on the number of rows. A warm
        // start is the same scores in this standardisation: `w_j x_j` summed is
        // `(w_j scale_j) z_j` plus a constant that moves into the intercept.
        let start = match warm {
            Some(warm) if warm.weights.len() == n => {
                let mut theta: Vec<f64> = (0..n).map(|j| warm.weights[j] * scales[j]).collect();
                theta.push(warm.bias + (0..n).map(|j| warm.weights[j] * means[j]).sum::<f64>());
                theta
            }
            _ => vec![0.0; n + 1],
        };
        let whitening = (whiten && n <= WHITENING_MAX_FEATURES)
            .then(|| Whitening::from_sample(&problem.sample_second_moments(), &variances))
            .flatten();
        let minimum = self.solve(&problem, start, whitening.as_ref());
        if !minimum.value.is_finite() {
            return Err(TrainError::Logistic(format!(
                "the log loss is not finite after {} iterations",
                minimum.iterations
            )));
        }
        let weights: Vec<f64> = (0..n).map(|j| minimum.x[j] / scales[j]).collect();
        let bias = minimum.x[n] - weights.iter().zip(&means).map(|(w, m)| w * m).sum::<f64>();
        Ok(LogisticScorecard {
            weights,
            bias,
            means,
            scales,
            convergence: Convergence {
                iterations: minimum.iterations,
                gradient_max: minimum.gradient_max,
                converged: minimum.converged,
            },
        })
    }

    /// Minimises `problem` from `start` (standardised weights, then the intercept). With a
    /// `whitening`, the weights are solved for in its coordinates (crate::whiten), the
    /// intercept as it is, and the tolerance stays on the gradient of the weights themselves.
    fn solve(
        &self,
        problem: &StandardisedProblem<'_>,
        start: Vec<f64>,
        whitening: Option<&Whitening>,
    ) -> crate::lbfgs::Minimum {
        let n = problem.means.len();
        let max_iterations = usize::try_from(self.max_iterations).unwrap_or(usize::MAX);
        let Some(whitening) = whitening else {
            return crate::lbfgs::minimize(
                |theta, gradient| problem.mean_loss_and_gradient(theta, gradient),
                start,
                self.gradient_tolerance,
                max_iterations,
            );
        };
        let mut start_u = whitening.coordinates(&start[..n]);
        start_u.push(start[n]);
        let mut theta = vec![0.0; n + 1];
        let minimum = crate::lbfgs::minimize_measured(
            |u, gradient| {
                whitening.weights(&u[..n], &mut theta[..n]);
                theta[n] = u[n];
                let value = problem.mean_loss_and_gradient(&theta, gradient);
                whitening.to_coordinates_gradient(&mut gradient[..n]);
                value
            },
            start_u,
            |gradient| {
                whitening
                    .weights_gradient_max(&gradient[..n])
                    .max(gradient[n].abs())
            },
            self.gradient_tolerance,
            max_iterations,
        );
        let mut x = vec![0.0; n + 1];
        whitening.weights(&minimum.x[..n], &mut x[..n]);
        x[n] = minimum.x[n];
        crate::lbfgs::Minimum { x, ..minimum }
    }
}

impl LogisticScorecard {
    /// Log-odds of a row; a missing value counts as the training mean.
    pub fn logit(&self, row: &[f32]) -> f64 {
        self.bias
            + row
                .iter()
                .zip(&self.weights)
                .zip(&self.means)
                .map(|((x, w), m)| if x.is_nan() { w * m } else { w * f64::from(*x) })
                .sum::<f64>()
    }

    pub fn probability(&self, row: &[f32]) -> f64 {
        models::gbdt::sigmoid(self.logit(row))
    }

    /// The weights per standard deviation of each feature: comparable across features.
    pub fn standardised_weights(&self) -> Vec<f64> {
        self.weights
            .iter()
            .zip(&self.scales)
            .map(|(w, s)| w * s)
            .collect()
    }

    /// The exported form: weights, bias and means rounded to `f32`, missing values taking the
    /// mean.
    pub fn to_linear_model(&self) -> models::onnx::LinearModel {
        models::onnx::LinearModel {
            weights: self.weights.iter().map(|&w| w as f32).collect(),
            bias: self.bias as f32,
            missing_values: self.means.iter().map(|&m| m as f32).collect(),
        }
    }
}

/// Rows processed together by one thread; partial sums are added in chunk order, so the result
/// does not depend on the number of threads.
const CHUNK_ROWS: usize = 4096;

/// The penalised log loss on standardised features `z_j = (x_j - mean_j) / scale_j`, with
/// missing values at the mean (`z_j = 0`), computed from the table's rows as they are.
struct StandardisedProblem<'a> {
    table: &'a FeatureTable,
    rows: &'a [usize],
    means: &'a [f64],
    inverse_scales: Vec<f64>,
    alpha: f64,
}

impl StandardisedProblem<'_> {
    /// `Σ z zᵀ / m` over up to [`WHITENING_SAMPLE_ROWS`] rows taken at an even stride
    /// (row-major `p x p`, lower triangle filled).
    fn sample_second_moments(&self) -> Vec<f64> {
        let p = self.means.len();
        let stride = self.rows.len().div_ceil(WHITENING_SAMPLE_ROWS).max(1);
        let mut moments = vec![0.0; p * p];
        let mut z = vec![0.0; p];
        let mut sampled = 0usize;
        for &row in self.rows.iter().step_by(stride) {
            self.standardise(row, &mut z);
            for j in 0..p {
                let zj = z[j];
                if zj != 0.0 {
                    for (m, zk) in moments[j * p..=j * p + j].iter_mut().zip(&z[..=j]) {
                        *m += zj * zk;
                    }
                }
            }
            sampled += 1;
        }
        let m = sampled.max(1) as f64;
        moments.iter_mut().for_each(|v| *v /= m);
        moments
    }

    /// The standardised features of `row`, missing ones at 0, into `z`.
    #[inline(always)]
    fn standardise(&self, row: usize, z: &mut [f64]) {
        for (((zj, &x), mean), inverse_scale) in z
            .iter_mut()
            .zip(self.table.row(row))
            .zip(self.means)
            .zip(&self.inverse_scales)
        {
            // Computed for every value and then selected: a branch per value would keep the
            // loop from vectorising.
            let standardised = (f64::from(x) - mean) * inverse_scale;
            *zj = if x.is_nan() { 0.0 } else { standardised };
        }
    }

    /// The log loss summed over `chunk`'s rows and its gradient (weights, then intercept),
    /// unpenalised.
    #[inline(always)]
    fn chunk_loss_and_gradient(
        &self,
        chunk: &[usize],
        weights: &[f64],
        bias: f64,
    ) -> (f64, Vec<f64>) {
        let p = weights.len();
        let mut loss = 0.0;
        let mut grad = vec![0.0; p + 1];
        let mut z = vec![0.0; p];
        for &row in chunk {
            // Standardise the row first (vectorised), then the margin in independent lanes,
            // then the gradient.
            self.standardise(row, &mut z);
            let margin = bias + dot_in_lanes(&z, weights);
            let label = f64::from(self.table.labels[row]);
            loss += logit_log_loss(margin, label);
            let residual = models::gbdt::sigmoid(margin) - label;
            for (g, zj) in grad.iter_mut().zip(&z) {
                *g += residual * zj;
            }
            grad[p] += residual;
        }
        (loss, grad)
    }

    /// [`Self::chunk_loss_and_gradient`] compiled for AVX2: four `f64` per instruction where
    /// the portable build has two. The same operations in the same order (Rust fuses no
    /// multiply-add by itself), so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn chunk_loss_and_gradient_avx2(
        &self,
        chunk: &[usize],
        weights: &[f64],
        bias: f64,
    ) -> (f64, Vec<f64>) {
        self.chunk_loss_and_gradient(chunk, weights, bias)
    }

    /// `(Σ_i logloss_i + alpha/2 |w|²) / n` at `theta = (w, b)`, its gradient written into
    /// `gradient`. The intercept is not penalised.
    fn mean_loss_and_gradient(&self, theta: &[f64], gradient: &mut [f64]) -> f64 {
        use rayon::prelude::*;
        let p = self.means.len();
        let (weights, bias) = (&theta[..p], theta[p]);
        let partials: Vec<(f64, Vec<f64>)> = self
            .rows
            .par_chunks(CHUNK_ROWS)
            .map(|chunk| {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    return unsafe { self.chunk_loss_and_gradient_avx2(chunk, weights, bias) };
                }
                self.chunk_loss_and_gradient(chunk, weights, bias)
            })
            .collect();
        let n = self.rows.len() as f64;
        let mut loss = 0.5 * self.alpha * weights.iter().map(|w| w * w).sum::<f64>();
        gradient.iter_mut().for_each(|g| *g = 0.0);
        for (partial_loss, partial_gradient) in &partials {
            loss += partial_loss;
            for (g, pg) in gradient.iter_mut().zip(partial_gradient) {
                *g += pg;
            }
        }
        for j in 0..p {
            gradient[j] += self.alpha * weights[j];
        }
        gradient.iter_mut().for_each(|g| *g /= n);
        loss / n
    }
}

/// Independent partial sums of [`dot_in_lanes`]: one long chain of additions waits on each
/// addition in turn, [`LANES`] chains fill the vector registers. Added in a fixed order, so the
/// result is the same on every machine.
const LANES: usize = 8;

/// `Σ a_i b_i`, summed in [`LANES`] interleaved partial sums.
#[inline(always)]
fn dot_in_lanes(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (a_block, b_block) in a_blocks.zip(b_blocks) {
        for k in 0..LANES {
            lanes[k] += a_block[k] * b_block[k];
        }
    }
    for (k, (x, y)) in a_rest.iter().zip(b_rest).enumerate() {
        lanes[k] += x * y;
    }
    lanes.iter().sum()
}

/// Rows of the sample from which [`StandardisedProblem::sample_second_moments`] learns how the
/// features move together: enough for correlations to two decimals, and a few passes' cost.
const WHITENING_SAMPLE_ROWS: usize = 8192;

/// Above this many features the scorecard is solved without whitening: the sample's
/// covariance costs `rows x features² / 2` and its factor `features³ / 3`, which past here
/// would outweigh the passes it saves.
const WHITENING_MAX_FEATURES: usize = 512;

/// Mean and standard deviation (1 for a constant column) of each feature over `rows`,
/// ignoring missing values (a column without values has mean 0), and the variance of each
/// standardised feature with missing values at 0 (the share of rows with a value, 0 for a
/// constant column).
fn column_moments(table: &FeatureTable, rows: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = table.n_features();
    let mut count = vec![0usize; n];
    let mut mean = vec![0.0; n];
    let mut m2 = vec![0.0; n];
    for &row in rows {
        for (j, value) in table.row(row).iter().enumerate() {
            if value.is_nan() {
                continue;
            }
            // Welford: stable for large counts.
            count[j] += 1;
            let x = f64::from(*value);
            let delta = x - mean[j];
            mean[j] += delta / count[j] as f64;
            m2[j] += delta * (x - mean[j]);
        }
    }
    let sd: Vec<f64> = (0..n)
        .map(|j| (m2[j] / count[j].max(1) as f64).sqrt())
        .collect();
    let scale = sd
        .iter()
        .map(|&sd| if sd > 1e-12 { sd } else { 1.0 })
        .collect();
    let standardised_variance = sd
        .iter()
        .zip(&count)
        .map(|(&sd, &count)| {
            if sd > 1e-12 {
                count as f64 / rows.len().max(1) as f64
            } else {
                0.0
            }
        })
        .collect();
    (mean, scale, standardised_variance)
}

/// Row-major features and 0/1 labels of `rows`, as the tree learner takes them.
pub fn gather_rows(table: &FeatureTable, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(rows.len() * table.n_features());
    let mut y = Vec::with_capacity(rows.len());
    for &row in rows {
        x.extend_from_slice(table.row(row));
        y.push(f32::from(table.labels[row]));
    }
    (x, y)
}

/// Where boosting starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GbdtStart {
    /// The log-odds of the mean label, as LightGBM and XGBoost start.
    Constant,
    /// The log-odds of a logistic regression fitted on the same rows: the trees model what
    /// the linear part misses. Much better when the signal is a sum of many small effects
    /// (counts of many event kinds), which trees approximate only in steps.
    Linear,
    /// Both are tried on the early-stopping inner split (see [`EarlyStopping`]); the linear
    /// start wins when its inner log loss is clearly lower (see [`START_MIN_Z`]).
    /// Without early stopping, `Constant`.
    Auto,
}

impl GbdtStart {
    pub fn as_str(self) -> &'static str {
        match self {
            GbdtStart::Constant => "constant",
            GbdtStart::Linear => "linear",
            GbdtStart::Auto => "auto",
        }
    }
}

/// Gradient-boosted trees, optionally started from a logistic scorecard's log-odds.
#[derive(Debug, Clone, PartialEq)]
pub struct BoostedModel {
    /// The start: `None` for the mean label's log-odds (the trees' base score).
    pub start: Option<LogisticScorecard>,
    pub trees: Gbdt,
}

impl BoostedModel {
    /// Log-odds of a row: the start's plus the trees'.
    pub fn logit(&self, row: &[f32]) -> f64 {
        self.start.as_ref().map_or(0.0, |s| s.logit(row)) + self.trees.raw_score(row)
    }

    /// The exported form.
    pub fn to_graph(&self) -> models::onnx::ModelGraph {
        use models::onnx::ModelGraph;
        let trees = self.trees.to_tree_ensemble();
        match &self.start {
            None => ModelGraph::Trees(trees),
            Some(start) => ModelGraph::TreesOnLinear {
                linear: start.to_linear_model(),
                trees,
            },
        }
    }
}

/// The trees' training data for `rows`, with the start's log-odds as init scores.
struct BoostingRows {
    x: Vec<f32>,
    y: Vec<f32>,
    init: Option<Vec<f64>>,
}

impl BoostingRows {
    fn new(table: &FeatureTable, rows: &[usize], start: Option<&LogisticScorecard>) -> Self {
        let (x, y) = gather_rows(table, rows);
        let init = start.map(|s| rows.iter().map(|&r| s.logit(table.row(r))).collect());
        BoostingRows { x, y, init }
    }

    fn train_data(&self, n_features: usize) -> TrainData<'_> {
        let data = TrainData::new(&self.x, n_features, &self.y);
        match &self.init {
            Some(init) => data.with_init_scores(init),
            None => data,
        }
    }

    fn valid_data(&self) -> ValidData<'_> {
        ValidData {
            x: &self.x,
            y: &self.y,
            weights: None,
            init_scores: self.init.as_deref(),
        }
    }
}

/// Fits gradient-boosted trees on `rows` of `table` with `params` as given, from `start`
/// (`Linear` fits the scorecard with `logistic` first, from `warm` when given; `Auto` means
/// `Constant` here).
pub fn fit_gbdt(
    params: &GbdtParams,
    start: GbdtStart,
    logistic: &LogisticParams,
    table: &FeatureTable,
    rows: &[usize],
    warm: Option<&LogisticScorecard>,
) -> Result<BoostedModel, TrainError> {
    let scorecard = match start {
        GbdtStart::Linear => Some(logistic.fit_from(table, rows, warm)?),
        GbdtStart::Constant | GbdtStart::Auto => None,
    };
    let data = BoostingRows::new(table, rows, scorecard.as_ref());
    let trees = params.fit(&data.train_data(table.n_features()))?;
    Ok(BoostedModel {
        start: scorecard,
        trees,
    })
}

/// Up to this many cells (rows x features), independent fits (the k-fold fits of
/// [`crate::evaluate::evaluate`], the two probes of [`GbdtStart::Auto`]) run side by side: a
/// small fit keeps the cores only half busy by itself. Above it each fit keeps them busy, and
/// copies of its rows side by side would cost memory for nothing. Measured on 2 cores: the
/// 20,000 generator leads' probes (20M cells) took 8.3 s one after the other and 5.9 s side
/// by side; the 100,000 leads' (160M cells) 32.0 s either way, with 0.5 GB more memory side
/// by side. Every fit is the same whatever the threads, so this changes no result.
pub const SIDE_BY_SIDE_MAX_CELLS: usize = 64_000_000;

/// Under [`GbdtStart::Auto`] the linear start is chosen only when its inner log loss is lower
/// than the constant start's by more than this many standard errors of the mean per-row
/// difference (a paired test on the same inner rows): a difference within noise keeps the
/// simpler constant start.
pub const START_MIN_Z: f64 = 2.0;

/// What [`EarlyStopping::fit`] chose.
#[derive(Debug, Clone, PartialEq)]
pub struct StoppingChoice {
    /// Number of trees.
    pub trees: usize,
    /// The start (never `Auto`).
    pub start: GbdtStart,
    /// Mean inner validation log loss of each start tried, best round: the chosen start's
    /// on all the inner rows, another's on the rows the starts were compared on.
    pub inner_log_loss: Vec<(GbdtStart, f64)>,
    /// Training rows the starts were compared on (all the probes' rows, or a share of
    /// them above [`EarlyStopping::start_choice_rows`]).
    pub choice_rows: usize,
}

/// How many trees to grow, found on the training rows alone: a seeded share of the training
/// *entities* (all their rows, so no entity is on both sides) is held back, trees are grown
/// until that inner validation's log loss has not improved for `patience` rounds, and the
/// model is then refitted on all training rows with the best number of trees.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    /// Most trees grown.
    pub max_trees: usize,
    /// Rounds without improvement before stopping.
    pub patience: usize,
    /// Share of the training entities held back, in `(0, 1)`.
    pub inner_fraction: f64,
    /// Under [`GbdtStart::Auto`], when the probes would train on more rows than this, the two
    /// starts are compared on a seeded share of the entities of about this many training
    /// rows, and only the start chosen there is probed on all rows (for its number of
    /// trees). Below it both are probed on all rows.
    #[serde(default = "default_start_choice_rows")]
    pub start_choice_rows: usize,
}

fn default_start_choice_rows() -> usize {
    EarlyStopping::default().start_choice_rows
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            max_trees: 1000,
            patience: 50,
            inner_fraction: 0.2,
            start_choice_rows: 500_000,
        }
    }
}

/// Fewest positives (and negatives) on each side of the inner split for early stopping to be
/// used; with fewer, `params.n_trees` is kept.
pub const MIN_EARLY_STOPPING_CLASS_ROWS: usize = 20;

impl EarlyStopping {
    pub fn check(&self) -> Result<(), TrainError> {
        if self.max_trees == 0 || self.patience == 0 {
            return Err(TrainError::Data(
                "early stopping needs max_trees and patience of at least 1".into(),
            ));
        }
        if self.start_choice_rows < 1_000 {
            return Err(TrainError::Data(format!(
                "early stopping start_choice_rows must be at least 1000, not {}",
                self.start_choice_rows
            )));
        }
        if !(self.inner_fraction > 0.0 && self.inner_fraction < 1.0) {
            return Err(TrainError::Data(format!(
                "early stopping inner_fraction must be in (0, 1), not {}",
                self.inner_fraction
            )));
        }
        Ok(())
    }

    /// Fits on `rows` as described on [`EarlyStopping`], from `start` (with `Auto`, each
    /// start is tried on the inner split and the lower inner log loss wins, compared on a
    /// share of the entities above [`EarlyStopping::start_choice_rows`]); returns the model
    /// and what was chosen (`None` when the inner split had too few rows of a class: then
    /// `params.n_trees` trees are grown, from the constant start under `Auto`).
    pub fn fit(
        &self,
        params: &GbdtParams,
        start: GbdtStart,
        logistic: &LogisticParams,
        table: &FeatureTable,
        rows: &[usize],
        seed: u64,
    ) -> Result<(BoostedModel, Option<StoppingChoice>), TrainError> {
        self.check()?;
        let (inner, outer): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&row| {
            crate::split::unit_interval_hash(&table.entity_ids[row], seed ^ 0xea51_57a1)
                < self.inner_fraction
        });
        let class_counts = |side: &[usize]| {
            let positives = side.iter().filter(|&&r| table.labels[r] == 1).count();
            (positives, side.len() - positives)
        };
        let enough = |side: &[usize]| {
            let (positives, negatives) = class_counts(side);
            positives >= MIN_EARLY_STOPPING_CLASS_ROWS && negatives >= MIN_EARLY_STOPPING_CLASS_ROWS
        };
        if !enough(&inner) || !enough(&outer) {
            let model = fit_gbdt(params, start, logistic, table, rows, None)?;
            return Ok((model, None));
        }
        let searching = GbdtParams {
            n_trees: self.max_trees,
            early_stopping_rounds: Some(self.patience),
            ..params.clone()
        };
        let candidates: &[GbdtStart] = match start {
            GbdtStart::Auto => &[GbdtStart::Constant, GbdtStart::Linear],
            GbdtStart::Constant => &[GbdtStart::Constant],
            GbdtStart::Linear => &[GbdtStart::Linear],
        };
        // (start, trees, per-row inner log loss at the best round, the probe's scorecard).
        type Probe = (GbdtStart, usize, Vec<f64>, Option<LogisticScorecard>);
        let probe =
            |candidate: GbdtStart, outer: &[usize], inner: &[usize]| -> Result<Probe, TrainError> {
                // The scorecard of the probe sees the outer rows only, like its trees.
                let scorecard = match candidate {
                    GbdtStart::Linear => Some(logistic.fit(table, outer)?),
                    _ => None,
                };
                let train = BoostingRows::new(table, outer, scorecard.as_ref());
                let valid = BoostingRows::new(table, inner, scorecard.as_ref());
                let probe = searching.fit(
                    &train
                        .train_data(table.n_features())
                        .with_validation(valid.valid_data()),
                )?;
                let best = probe.best_iteration().unwrap_or(probe.trees().len()).max(1);
                let losses: Vec<f64> = inner
                    .iter()
                    .enumerate()
                    .map(|(i, &row)| {
                        let score = valid.init.as_ref().map_or(0.0, |init| init[i])
                            + probe.raw_score(table.row(row));
                        logit_log_loss(score, f64::from(valid.y[i]))
                    })
                    .collect();
                Ok((candidate, best, losses, scorecard))
            };
        // Every start on the same rows; the probes are independent, so a small table's run
        // side by side (each is the same whatever the threads). The lower inner log loss
        // wins, the linear start only when clearly lower.
        let probe_all = |outer: &[usize], inner: &[usize]| -> Result<Vec<Probe>, TrainError> {
            use rayon::prelude::*;
            if (outer.len() + inner.len()) * table.n_features() <= SIDE_BY_SIDE_MAX_CELLS {
                candidates
                    .par_iter()
                    .map(|&c| probe(c, outer, inner))
                    .collect()
            } else {
                candidates.iter().map(|&c| probe(c, outer, inner)).collect()
            }
        };
        let choose = |tried: &[Probe]| -> usize {
            match tried {
                [(_, _, constant, _), (_, _, linear, _)] if clearly_lower(linear, constant) => 1,
                _ => 0,
            }
        };
        // (the probes, the chosen one's index, the training rows the starts were compared on)
        let (tried, chosen_at, choice_rows) = if candidates.len() > 1
            && outer.len() > self.start_choice_rows
        {
            // A large table: the starts compared on a seeded share of the entities (both
            // sides of the inner split), then the chosen one alone probed on all rows.
            let share = self.start_choice_rows as f64 / outer.len() as f64;
            let sampled = |side: &[usize]| -> Vec<usize> {
                side.iter()
                    .copied()
                    .filter(|&row| {
                        crate::split::unit_interval_hash(&table.entity_ids[row], seed ^ 0x57a7_c401)
                            < share
                    })
                    .collect()
            };
            let (small_outer, small_inner) = (sampled(&outer), sampled(&inner));
            if enough(&small_inner) && enough(&small_outer) {
                let mut small = probe_all(&small_outer, &small_inner)?;
                let at = choose(&small);
                small[at] = probe(small[at].0, &outer, &inner)?;
                (small, at, small_outer.len())
            } else {
                let tried = probe_all(&outer, &inner)?;
                let at = choose(&tried);
                (tried, at, outer.len())
            }
        } else {
            let tried = probe_all(&outer, &inner)?;
            let at = choose(&tried);
            (tried, at, outer.len())
        };
        let (chosen, best) = (tried[chosen_at].0, tried[chosen_at].1);
        let final_params = GbdtParams {
            n_trees: best,
            early_stopping_rounds: None,
            ..params.clone()
        };
        // The final scorecard starts from the probe's, fitted on most of these rows.
        let warm = tried
            .iter()
            .find(|(start, ..)| *start == chosen)
            .and_then(|(_, _, _, scorecard)| scorecard.as_ref());
        let model = fit_gbdt(&final_params, chosen, logistic, table, rows, warm)?;
        Ok((
            model,
            Some(StoppingChoice {
                trees: best,
                start: chosen,
                inner_log_loss: tried
                    .iter()
                    .map(|(start, _, losses, _)| (*start, mean(losses)))
                    .collect(),
                choice_rows,
            }),
        ))
    }
}

/// Log loss of log-odds `z` for label `y` (0 or 1): `log(1 + e^z) - y z`, stable for any `z`.
fn logit_log_loss(z: f64, y: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p() - y * z
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Whether per-row losses `a` are lower than `b` (the same rows) by more than [`START_MIN_Z`]
/// standard errors of the mean difference.
fn clearly_lower(a: &[f64], b: &[f64]) -> bool {
    let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = differences.len() as f64;
    if n < 2.0 {
        return false;
    }
    let mean_difference = mean(&differences);
    let variance = differences
        .iter()
        .map(|d| (d - mean_difference).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    mean_difference < -START_MIN_Z * (variance / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tabular table of `width` features `x0..`, row-major `values`, one label a row.
    fn numbered_table(width: usize, values: Vec<f32>, labels: Vec<u8>) -> FeatureTable {
        let n = labels.len();
        assert_eq!(values.len(), n * width);
        FeatureTable {
            feature_names: (0..width).map(|j| format!("x{j}")).collect(),
            entity_ids: (0..n).map(|i| i.to_string()).collect(),
            cutoffs_ms: vec![0; n],
            labels,
            values,
        }
    }

    /// Rows whose log-odds are exactly `-1 + 2 x0 - x1`, with x1 missing in some rows.
    fn linear_table(n: usize) -> FeatureTable {
        let mut values = Vec::new();
        let mut labels = Vec::new();
        let mut rng = models::gbdt::SplitMix64::new(12345u64);
        let mut uniform = || rng.next_f64();
        for i in 0..n {
            let x0 = (uniform() * 4.0 - 2.0) as f32;
            let x1 = (uniform() * 4.0 - 2.0) as f32;
            let logit = -1.0 + 2.0 * f64::from(x0) - f64::from(x1);
            let p = 1.0 / (1.0 + (-logit).exp());
            labels.push(u8::from(uniform() < p));
            values.push(x0);
            values.push(if i % 10 == 0 { f32::NAN } else { x1 });
        }
        numbered_table(2, values, labels)
    }

    #[test]
    fn logistic_recovers_the_generating_weights_in_raw_space() {
        let table = linear_table(20_000);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let model = LogisticParams::default().fit(&table, &rows).unwrap();
        assert!((model.weights[0] - 2.0).abs() < 0.1, "{model:?}");
        assert!((model.weights[1] + 1.0).abs() < 0.1, "{model:?}");
        assert!((model.bias + 1.0).abs() < 0.15, "{model:?}");
        assert!(model.probability(&[1.0, 0.0]) > model.probability(&[0.0, 0.0]));
        // A missing value scores as the training mean.
        let at_mean = model.probability(&[0.5, model.means[1] as f32]);
        assert!((model.probability(&[0.5, f32::NAN]) - at_mean).abs() < 1e-6);
    }

    /// The same penalised objective as linfa-logistic (the solver the user named, too slow on
    /// large tables), on an imbalanced table with missing values: the same weights.
    #[test]
    fn logistic_matches_linfa_logistic_on_the_same_objective() {
        use linfa::prelude::*;
        let mut table = linear_table(3_000);
        // About 10 % positives, so that linfa's "positive" is the majority class `false`.
        table
            .labels
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .for_each(|(_, y)| *y = 0);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        for alpha in [1.0, 30.0] {
            let params = LogisticParams {
                alpha,
                gradient_tolerance: 1e-9,
                ..LogisticParams::default()
            };
            let ours = params.fit(&table, &rows).unwrap();
            let (means, scales, _) = column_moments(&table, &rows);
            let x = ndarray16::Array2::from_shape_fn((table.n_rows(), 2), |(i, j)| {
                let v = table.row(i)[j];
                if v.is_nan() {
                    0.0
                } else {
                    (f64::from(v) - means[j]) / scales[j]
                }
            });
            let y: ndarray16::Array1<bool> = table.labels.iter().map(|&l| l == 1).collect();
            let linfa_model = linfa_logistic::LogisticRegression::default()
                .alpha(alpha)
                .gradient_tolerance(1e-8)
                .max_iterations(1000)
                .fit(&linfa::Dataset::new(x, y))
                .unwrap();
            let sign = if linfa_model.labels().pos.class {
                1.0
            } else {
                -1.0
            };
            let linfa_weights: Vec<f64> = (0..2)
                .map(|j| sign * linfa_model.params()[j] / scales[j])
                .collect();
            for (j, (ours_weight, linfa_weight)) in
                ours.weights.iter().zip(&linfa_weights).enumerate()
            {
                assert!(
                    (ours_weight - linfa_weight).abs() < 1e-4,
                    "alpha {alpha}, weight {j}: ours {ours_weight} linfa {linfa_weight}"
                );
            }
            let linfa_bias = sign * linfa_model.intercept()
                - linfa_weights
                    .iter()
                    .zip(&means)
                    .map(|(w, m)| w * m)
                    .sum::<f64>();
            assert!((ours.bias - linfa_bias).abs() < 1e-4, "alpha {alpha}");
        }
    }

    #[test]
    fn the_exported_scorecard_fills_missing_values_with_the_mean() {
        let table = linear_table(5_000);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let model = LogisticParams::default().fit(&table, &rows).unwrap();
        let exported = model.to_linear_model();
        for row in [[0.5, f32::NAN], [-1.0, 1.5], [f32::NAN, f32::NAN]] {
            assert!(
                (exported.logit(&row) - model.logit(&row)).abs() < 1e-5,
                "{row:?}"
            );
        }
        let standardised = model.standardised_weights();
        assert!((standardised[0] - model.weights[0] * model.scales[0]).abs() < 1e-12);
    }

    #[test]
    fn early_stopping_grows_fewer_trees_on_noise_and_refits_on_all_rows() {
        // A weak signal in much noise: 1000 trees at 0.1 would overfit.
        let table = linear_table(4_000);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let params = GbdtParams {
            num_leaves: 63,
            min_data_in_leaf: 5,
            ..GbdtParams::default()
        };
        let stopping = EarlyStopping {
            max_trees: 400,
            patience: 20,
            inner_fraction: 0.25,
            ..EarlyStopping::default()
        };
        let logistic = LogisticParams::default();
        let (model, choice) = stopping
            .fit(&params, GbdtStart::Constant, &logistic, &table, &rows, 3)
            .unwrap();
        let choice = choice.expect("enough rows of each class to stop early");
        let best = choice.trees;
        assert!(best < 400, "stopped at {best}");
        assert_eq!(choice.start, GbdtStart::Constant);
        assert!(model.start.is_none());
        assert_eq!(
            model.trees.trees().len(),
            best,
            "refitted with the chosen number of trees"
        );
        // Too few positives for an inner split: the given number of trees is grown.
        let mut tiny = linear_table(200);
        tiny.labels.iter_mut().skip(15).for_each(|y| *y = 0);
        let tiny_rows: Vec<usize> = (0..tiny.n_rows()).collect();
        let few = GbdtParams {
            n_trees: 7,
            ..GbdtParams::default()
        };
        let (model, choice) = stopping
            .fit(&few, GbdtStart::Auto, &logistic, &tiny, &tiny_rows, 3)
            .unwrap();
        assert_eq!(choice, None);
        assert!(
            model.start.is_none(),
            "Auto without an inner split starts from the mean"
        );
        assert!(model.trees.trees().len() <= 7);
        let bad = EarlyStopping {
            inner_fraction: 1.0,
            ..stopping
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn auto_start_is_linear_for_a_sum_of_small_effects_and_constant_for_an_interaction() {
        let stopping = EarlyStopping {
            max_trees: 300,
            patience: 20,
            inner_fraction: 0.25,
            ..EarlyStopping::default()
        };
        let logistic = LogisticParams::default();
        let params = GbdtParams::default();

        // A sum of many small effects, which trees approximate only in steps.
        let n = 8_000;
        let width = 20;
        let mut rng = models::gbdt::SplitMix64::new(31);
        let mut values = Vec::with_capacity(n * width);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let mut logit = -1.0;
            for _ in 0..width {
                let x = (rng.next_f64() * 4.0 - 2.0) as f32;
                logit += 0.4 * f64::from(x);
                values.push(x);
            }
            labels.push(u8::from(rng.next_f64() < models::gbdt::sigmoid(logit)));
        }
        let additive = numbered_table(width, values, labels);
        let rows: Vec<usize> = (0..n).collect();
        let (model, choice) = stopping
            .fit(&params, GbdtStart::Auto, &logistic, &additive, &rows, 5)
            .unwrap();
        let choice = choice.expect("an inner split");
        assert_eq!(choice.start, GbdtStart::Linear, "{choice:?}");
        assert_eq!(choice.inner_log_loss.len(), 2);
        assert!(choice.choice_rows > 5_000, "all the outer rows: {choice:?}");
        // The starts compared on a share of the entities (about 2,000 of the 6,000 outer
        // rows): the same start chosen, and then the same model, since the chosen start's
        // probe and the refit run on all rows as before.
        let (sampled_model, sampled) = EarlyStopping {
            start_choice_rows: 2_000,
            ..stopping.clone()
        }
        .fit(&params, GbdtStart::Auto, &logistic, &additive, &rows, 5)
        .unwrap();
        let sampled = sampled.expect("an inner split");
        assert!(
            (1_500..2_500).contains(&sampled.choice_rows),
            "compared on a share: {sampled:?}"
        );
        assert_eq!(
            (sampled.start, sampled.trees),
            (choice.start, choice.trees),
            "{sampled:?} against {choice:?}"
        );
        assert_eq!(sampled.inner_log_loss[1], choice.inner_log_loss[1]);
        assert_ne!(
            sampled.inner_log_loss[0], choice.inner_log_loss[0],
            "the start not chosen was probed on the share only"
        );
        for i in [0, 17, 4242] {
            assert_eq!(
                sampled_model.logit(additive.row(i)),
                model.logit(additive.row(i))
            );
        }
        let start = model.start.as_ref().expect("a linear start");
        assert_eq!(model.trees.base_score(), 0.0);
        let graph = model.to_graph();
        for i in [0, 17, 4242] {
            let row = additive.row(i);
            let expected = start.logit(row) + model.trees.raw_score(row);
            assert!((model.logit(row) - expected).abs() < 1e-12);
            assert!((graph.logit(row) - expected).abs() < 1e-5, "row {i}");
        }

        // An interaction no linear model sees: logit = 3 sign(x0) sign(x1).
        let mut interaction = linear_table(8_000);
        let rows: Vec<usize> = (0..interaction.n_rows()).collect();
        let mut rng = models::gbdt::SplitMix64::new(77);
        for i in 0..interaction.n_rows() {
            let row = interaction.row(i).to_vec();
            let (x0, x1) = (row[0], if row[1].is_nan() { 0.1 } else { row[1] });
            let logit = 3.0 * f64::from(x0.signum() * x1.signum());
            interaction.labels[i] = u8::from(rng.next_f64() < models::gbdt::sigmoid(logit));
        }
        let (model, choice) = stopping
            .fit(&params, GbdtStart::Auto, &logistic, &interaction, &rows, 5)
            .unwrap();
        let choice = choice.expect("an inner split");
        assert_eq!(choice.start, GbdtStart::Constant, "{choice:?}");
        assert!(model.start.is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_pass_gives_the_portable_pass_bits() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        // 37 features (not a multiple of the lanes), some missing.
        let (n, p) = (3_000, 37);
        let mut rng = models::gbdt::SplitMix64::new(5u64);
        let mut values = Vec::with_capacity(n * p);
        for _ in 0..n * p {
            let v = rng.next_f64();
            values.push(if v < 0.1 {
                f32::NAN
            } else {
                (v * 9.0 - 3.0) as f32
            });
        }
        let labels = (0..n).map(|_| u8::from(rng.next_f64() < 0.3)).collect();
        let table = numbered_table(p, values, labels);
        let rows: Vec<usize> = (0..n).filter(|r| r % 7 != 3).collect();
        let (means, scales, _) = column_moments(&table, &rows);
        let problem = StandardisedProblem {
            table: &table,
            rows: &rows,
            means: &means,
            inverse_scales: scales.iter().map(|s| 1.0 / s).collect(),
            alpha: 1.0,
        };
        let weights: Vec<f64> = (0..p).map(|j| (j as f64 - 18.0) * 0.037).collect();
        let portable = problem.chunk_loss_and_gradient(&rows, &weights, -0.4);
        // SAFETY: the CPU has AVX2, checked above.
        let avx2 = unsafe { problem.chunk_loss_and_gradient_avx2(&rows, &weights, -0.4) };
        assert_eq!(portable.0.to_bits(), avx2.0.to_bits());
        let bits = |g: &[f64]| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&portable.1), bits(&avx2.1));
        assert!(portable.0 > 0.0 && portable.1.iter().any(|g| *g != 0.0));
    }

    #[test]
    fn whitening_reaches_the_same_minimum_in_fewer_passes_on_correlated_features() {
        // Five noisy copies of one signal and a rare feature: a narrow valley for the solver.
        let n = 5_000;
        let mut rng = models::gbdt::SplitMix64::new(99u64);
        let mut uniform = || rng.next_f64();
        let (mut values, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let signal = uniform() * 4.0 - 2.0;
            for k in 0..5 {
                let copy = signal + 0.05 * (uniform() - 0.5) * f64::from(k + 1);
                values.push(if (i + k as usize).is_multiple_of(17) {
                    f32::NAN
                } else {
                    copy as f32
                });
            }
            values.push(if i.is_multiple_of(500) { 3.0 } else { 0.0 });
            let p = 1.0 / (1.0 + (-(0.5 + 1.5 * signal)).exp());
            labels.push(u8::from(uniform() < p));
        }
        let table = numbered_table(6, values, labels);
        let rows: Vec<usize> = (0..n).collect();
        let params = LogisticParams {
            gradient_tolerance: 1e-8,
            ..LogisticParams::default()
        };
        let plain = params.fit_with(&table, &rows, None, false).unwrap();
        let whitened = params.fit_with(&table, &rows, None, true).unwrap();
        assert!(plain.convergence.converged && whitened.convergence.converged);
        for (a, b) in plain
            .standardised_weights()
            .iter()
            .zip(whitened.standardised_weights())
        {
            assert!(
                (a - b).abs() < 1e-4,
                "{:?} vs {:?}",
                plain.weights,
                whitened.weights
            );
        }
        assert!((plain.bias - whitened.bias).abs() < 1e-4);
        assert!(
            2 * whitened.convergence.iterations < plain.convergence.iterations,
            "whitened {} iterations, plain {}",
            whitened.convergence.iterations,
            plain.convergence.iterations
        );
    }

    #[test]
    fn the_scorecard_says_whether_its_solver_converged() {
        let table = linear_table(2_000);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let converged = LogisticParams::default().fit(&table, &rows).unwrap();
        assert!(
            converged.convergence.converged,
            "{:?}",
            converged.convergence
        );
        assert!(converged.convergence.warning().is_none());
        let cut_short = LogisticParams {
            max_iterations: 2,
            gradient_tolerance: 1e-12,
            ..LogisticParams::default()
        }
        .fit(&table, &rows)
        .unwrap();
        assert_eq!(cut_short.convergence.iterations, 2);
        let warning = cut_short.convergence.warning().expect("a warning");
        assert!(warning.contains("after 2 iterations"), "{warning}");
    }

    #[test]
    fn logistic_params_are_checked() {
        let bad = LogisticParams {
            alpha: f64::NAN,
            ..LogisticParams::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("alpha"));
    }
}
