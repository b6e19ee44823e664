//! The two model families, fitted on rows of a [`FeatureTable`].
//!
//! * [`LogisticParams`] → [`LogisticScorecard`]: L2 logistic regression (linfa-logistic) on
//!   standardised features, missing values imputed with the training mean, then folded back
//!   into one weight per raw feature, so that a score is `bias + Σ w_j x_j` and a feature's
//!   exact contribution is `w_j (x_j - mean_j)`.
//! * gradient-boosted trees: [`models::gbdt`], fed through [`gbdt_train_data`].

use features::builder::FeatureTable;
use linfa::prelude::*;
use models::gbdt::{Gbdt, GbdtParams, TrainData, ValidData};

use crate::error::TrainError;

/// Logistic-regression hyperparameters, checked before fitting.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogisticParams {
    /// L2 penalty on the standardised weights: the loss is `Σ logloss + alpha/2 |w|²`
    /// (scikit-learn's default `C = 1` is `alpha = 1`).
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams {
            alpha: 1.0,
            max_iterations: 500,
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
        Ok(())
    }

    /// Fits on `rows` of `table`.
    pub fn fit(
        &self,
        table: &FeatureTable,
        rows: &[usize],
    ) -> Result<LogisticScorecard, TrainError> {
        self.check()?;
        let n = table.n_features();
        let (means, scales) = column_moments(table, rows);
        let mut x = ndarray16::Array2::<f64>::zeros((rows.len(), n));
        for (r, &row) in rows.iter().enumerate() {
            for (j, value) in table.row(row).iter().enumerate() {
                if !value.is_nan() {
                    x[[r, j]] = (f64::from(*value) - means[j]) / scales[j];
                }
            }
        }
        let y: ndarray16::Array1<bool> = rows.iter().map(|&i| table.labels[i] == 1).collect();
        let dataset = linfa::Dataset::new(x, y);
        let model = linfa_logistic::LogisticRegression::default()
            .alpha(self.alpha)
            .max_iterations(self.max_iterations)
            .fit(&dataset)
            .map_err(|e| TrainError::Logistic(e.to_string()))?;
        // linfa-logistic models P(its positive class), the more frequent one: flip the signs
        // when that is `false`.
        let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
        let standardised = model.params();
        let weights: Vec<f64> = (0..n).map(|j| sign * standardised[j] / scales[j]).collect();
        let bias =
            sign * model.intercept() - weights.iter().zip(&means).map(|(w, m)| w * m).sum::<f64>();
        Ok(LogisticScorecard {
            weights,
            bias,
            means,
            scales,
        })
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

/// Mean and standard deviation (1 for a constant column) of each feature over `rows`,
/// ignoring missing values (a column without values has mean 0).
fn column_moments(table: &FeatureTable, rows: &[usize]) -> (Vec<f64>, Vec<f64>) {
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
    let scale = (0..n)
        .map(|j| {
            let sd = (m2[j] / count[j].max(1) as f64).sqrt();
            if sd > 1e-12 { sd } else { 1.0 }
        })
        .collect();
    (mean, scale)
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

/// Fits gradient-boosted trees on `rows` of `table` with `params` as given.
pub fn fit_gbdt(
    params: &GbdtParams,
    table: &FeatureTable,
    rows: &[usize],
) -> Result<Gbdt, TrainError> {
    let (x, y) = gather_rows(table, rows);
    Ok(params.fit(&TrainData::new(&x, table.n_features(), &y))?)
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
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            max_trees: 1000,
            patience: 50,
            inner_fraction: 0.2,
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
        if !(self.inner_fraction > 0.0 && self.inner_fraction < 1.0) {
            return Err(TrainError::Data(format!(
                "early stopping inner_fraction must be in (0, 1), not {}",
                self.inner_fraction
            )));
        }
        Ok(())
    }

    /// Fits on `rows` as described on [`EarlyStopping`]; returns the model and the number of
    /// trees chosen (`None` when the inner split had too few rows of a class and
    /// `params.n_trees` was used).
    pub fn fit(
        &self,
        params: &GbdtParams,
        table: &FeatureTable,
        rows: &[usize],
        seed: u64,
    ) -> Result<(Gbdt, Option<usize>), TrainError> {
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
            return Ok((fit_gbdt(params, table, rows)?, None));
        }
        let (x, y) = gather_rows(table, &outer);
        let (vx, vy) = gather_rows(table, &inner);
        let searching = GbdtParams {
            n_trees: self.max_trees,
            early_stopping_rounds: Some(self.patience),
            ..params.clone()
        };
        let probe = searching.fit(&TrainData::new(&x, table.n_features(), &y).with_validation(
            ValidData {
                x: &vx,
                y: &vy,
                weights: None,
            },
        ))?;
        let best = probe.best_iteration().unwrap_or(probe.trees().len()).max(1);
        let final_params = GbdtParams {
            n_trees: best,
            early_stopping_rounds: None,
            ..params.clone()
        };
        Ok((fit_gbdt(&final_params, table, rows)?, Some(best)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        FeatureTable {
            feature_names: vec!["x0".into(), "x1".into()],
            entity_ids: (0..n).map(|i| i.to_string()).collect(),
            cutoffs_ms: vec![0; n],
            labels,
            values,
        }
    }

    #[test]
    fn logistic_recovers_the_generating_weights_in_raw_space() {
        let table = linear_table(20_000);
        let rows: Vec<usize> = (0..table.n_rows()).collect();
        let model = LogisticParams::default().fit(&table, &rows).unwrap();
        assert!((model.weights[0] - 2.0).abs() < 0.1, "{model:?}");
        assert!((model.weights[1] + 1.0).abs() < 0.1, "{model:?}");
        assert!((model.bias + 1.0).abs() < 0.15, "{model:?}");
        // Whichever class linfa took as positive, P(label = 1) rises with x0.
        assert!(model.probability(&[1.0, 0.0]) > model.probability(&[0.0, 0.0]));
        // A missing value scores as the training mean.
        let at_mean = model.probability(&[0.5, model.means[1] as f32]);
        assert!((model.probability(&[0.5, f32::NAN]) - at_mean).abs() < 1e-6);
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
        };
        let (model, best) = stopping.fit(&params, &table, &rows, 3).unwrap();
        let best = best.expect("enough rows of each class to stop early");
        assert!(best < 400, "stopped at {best}");
        assert_eq!(
            model.trees().len(),
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
        let (model, best) = stopping.fit(&few, &tiny, &tiny_rows, 3).unwrap();
        assert_eq!(best, None);
        assert!(model.trees().len() <= 7);
        let bad = EarlyStopping {
            inner_fraction: 1.0,
            ..stopping
        };
        assert!(bad.check().is_err());
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
