//! Fitting a model family under a validation plan, calibrating it on held-out scores, and
//! measuring it.
//!
//! * [`ValidationPlan::Holdout`] (event data): the model fitted on the training rows is the
//!   one shipped; its scores on the validation rows are the held-out scores.
//! * [`ValidationPlan::KFold`] (tabular data): one model per fold gives every row an
//!   out-of-fold score; the shipped model is refitted on all rows.
//!
//! Calibration is fitted on the held-out scores. So that the calibrated metrics are honest
//! too, they are *cross-fitted*: the held-out rows are split in two halves by entity, each
//! half is calibrated by a calibrator fitted on the other, and the metrics are computed on
//! the result. The calibrator shipped is then fitted on all held-out rows, with the method
//! (Platt or isotonic) that did better across the two halves.

use features::builder::FeatureTable;
use models::bundle::{Explainer, ModelKind};
use models::calibration::{
    Calibrator, MIN_ISOTONIC_CLASS_ROWS, MIN_ISOTONIC_ROWS, fit_isotonic, fit_platt,
};
use models::gbdt::GbdtParams;
use models::gbdt::sigmoid;
use models::metrics::{BinaryMetrics, log_loss, roc_auc};
use models::onnx::ModelGraph;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::fit::SIDE_BY_SIDE_MAX_CELLS;
use crate::fit::{
    BoostedModel, EarlyStopping, GbdtStart, LogisticParams, LogisticScorecard, fit_gbdt,
};
use crate::split::{Split, unit_interval_hash};

/// The model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// Gradient-boosted trees.
    Gbdt,
    /// Logistic-regression scorecard.
    Logistic,
}

impl ModelFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Gbdt => "gbdt",
            ModelFamily::Logistic => "logistic",
        }
    }
}

/// Hyperparameters of both families.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyParams {
    /// The trees' parameters; `n_trees` is the number grown when early stopping is off (or
    /// cannot be used).
    pub gbdt: GbdtParams,
    /// Choose the number of trees on an inner split of each training set (default), or grow
    /// `gbdt.n_trees` when `None`.
    pub gbdt_early_stopping: Option<EarlyStopping>,
    /// Where the trees' boosting starts.
    pub gbdt_start: GbdtStart,
    pub logistic: LogisticParams,
}

impl Default for FamilyParams {
    fn default() -> Self {
        FamilyParams {
            gbdt: GbdtParams::default(),
            gbdt_early_stopping: Some(EarlyStopping::default()),
            gbdt_start: GbdtStart::Auto,
            logistic: LogisticParams::default(),
        }
    }
}

/// Held-out rows the feature importance is measured on, at most.
pub const IMPORTANCE_ROWS: usize = 2000;

/// A fitted model of either family.
#[derive(Debug, Clone, PartialEq)]
pub enum FittedModel {
    Gbdt(BoostedModel),
    Logistic(LogisticScorecard),
}

impl FittedModel {
    /// The model part of the exported ONNX graph.
    pub fn to_graph(&self) -> ModelGraph {
        match self {
            FittedModel::Gbdt(model) => model.to_graph(),
            FittedModel::Logistic(model) => ModelGraph::Linear(model.to_linear_model()),
        }
    }

    /// A warning when the scorecard (the model, or the trees' start) did not converge.
    pub fn solver_warning(&self) -> Option<String> {
        let scorecard = match self {
            FittedModel::Logistic(model) => Some(model),
            FittedModel::Gbdt(model) => model.start.as_ref(),
        };
        scorecard.and_then(|s| s.convergence.warning())
    }

    /// The bundle's model kind and explainer for this model.
    pub fn kind_and_explainer(&self) -> (ModelKind, Explainer) {
        match self {
            FittedModel::Gbdt(BoostedModel { start: None, trees }) => {
                (ModelKind::Gbdt, Explainer::Gbdt(trees.clone()))
            }
            FittedModel::Gbdt(BoostedModel {
                start: Some(start),
                trees,
            }) => (
                ModelKind::GbdtOnLinear,
                Explainer::GbdtOnLinear {
                    weights: start.weights.clone(),
                    bias: start.bias,
                    reference: start.means.clone(),
                    trees: trees.clone(),
                },
            ),
            FittedModel::Logistic(model) => (
                ModelKind::Logistic,
                Explainer::Linear {
                    weights: model.weights.clone(),
                    bias: model.bias,
                    reference: model.means.clone(),
                },
            ),
        }
    }

    /// Mean absolute contribution of each feature to the log-odds over `rows` (at most
    /// [`IMPORTANCE_ROWS`] of them, evenly spaced), by the bundle's own explainer
    /// ([`Explainer::explain_into`]: TreeSHAP, exact linear contributions): one measure for
    /// every family, and the contributions the server gives as reasons.
    pub fn mean_abs_contributions(&self, table: &FeatureTable, rows: &[usize]) -> Vec<f64> {
        let (_, explainer) = self.kind_and_explainer();
        let step = rows.len().div_ceil(IMPORTANCE_ROWS).max(1);
        let sample: Vec<usize> = rows.iter().copied().step_by(step).collect();
        let per_row: Vec<Vec<f64>> = sample
            .par_iter()
            .map(|&row| explainer.explain(table.row(row)).1)
            .collect();
        let mut totals = vec![0.0; table.n_features()];
        for contributions in &per_row {
            for (total, c) in totals.iter_mut().zip(contributions) {
                *total += c.abs();
            }
        }
        let n = sample.len().max(1) as f64;
        totals.into_iter().map(|t| t / n).collect()
    }

    /// Uncalibrated log-odds of every row of `rows` as the exported graph computes them
    /// ([`ModelGraph::score`]): the input of the calibrator, so that the calibrator is fitted
    /// on exactly what it is applied to when served.
    pub fn logits(&self, table: &FeatureTable, rows: &[usize]) -> Vec<f64> {
        let graph = self.to_graph();
        rows.par_iter()
            .map(|&row| graph.score(table.row(row)))
            .collect()
    }
}

/// How a model is validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidationPlan {
    Holdout(Split),
    /// Fold index of every row.
    KFold {
        fold_of: Vec<usize>,
        k: usize,
        description: String,
    },
}

impl ValidationPlan {
    /// The role of every row of a table of `n_rows`: `train` or `valid` in a hold-out split
    /// (`unused` for rows on neither side, e.g. training rows whose label window overlaps the
    /// validation window), `fold<i>` in k-fold. Lets other tools train on the very same rows.
    pub fn row_roles(&self, n_rows: usize) -> Vec<String> {
        match self {
            ValidationPlan::Holdout(split) => {
                let mut roles = vec!["unused".to_string(); n_rows];
                for &row in &split.train {
                    roles[row] = "train".into();
                }
                for &row in &split.valid {
                    roles[row] = "valid".into();
                }
                roles
            }
            ValidationPlan::KFold { fold_of, .. } => {
                fold_of.iter().map(|fold| format!("fold{fold}")).collect()
            }
        }
    }

    pub fn description(&self) -> &str {
        match self {
            ValidationPlan::Holdout(split) => &split.description,
            ValidationPlan::KFold { description, .. } => description,
        }
    }
}

/// A fitted, calibrated and measured model.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub family: ModelFamily,
    /// The model to ship.
    pub model: FittedModel,
    /// The calibrator to ship, fitted on all held-out scores.
    pub calibrator: Calibrator,
    /// Why this calibration method.
    pub calibration_reason: String,
    /// Rows of the table with a held-out score.
    pub holdout_rows: Vec<usize>,
    pub holdout_labels: Vec<bool>,
    /// Uncalibrated held-out log-odds (the calibrator's input).
    pub raw_logits: Vec<f64>,
    /// Uncalibrated held-out probabilities, `sigmoid(raw_logits)`.
    pub raw_scores: Vec<f64>,
    /// Cross-fitted calibrated held-out scores (see the module docs).
    pub calibrated_scores: Vec<f64>,
    pub raw_metrics: BinaryMetrics,
    pub calibrated_metrics: BinaryMetrics,
    /// ROC AUC of each fold (k-fold only), as scikit-learn's `cross_val_score` reports them.
    pub fold_roc_auc: Vec<f64>,
    /// Seconds spent fitting the shipped model.
    pub fit_seconds: f64,
    /// Seconds of the whole evaluation: every validation fit, the shipped model's fit, the
    /// calibration and the importances.
    pub seconds: f64,
    /// Mean absolute contribution of each feature to the held-out log-odds
    /// ([`FittedModel::mean_abs_contributions`]).
    pub importance: Vec<f64>,
}

/// Fits, calibrates and measures one family.
pub fn evaluate(
    family: ModelFamily,
    params: &FamilyParams,
    table: &FeatureTable,
    plan: &ValidationPlan,
    seed: u64,
) -> Result<Evaluation, TrainError> {
    let evaluation_started = std::time::Instant::now();
    let fit = |rows: &[usize]| -> Result<FittedModel, TrainError> {
        Ok(match family {
            ModelFamily::Gbdt => FittedModel::Gbdt(match &params.gbdt_early_stopping {
                Some(stopping) => {
                    stopping
                        .fit(
                            &params.gbdt,
                            params.gbdt_start,
                            &params.logistic,
                            table,
                            rows,
                            seed,
                        )?
                        .0
                }
                None => fit_gbdt(
                    &params.gbdt,
                    params.gbdt_start,
                    &params.logistic,
                    table,
                    rows,
                    None,
                )?,
            }),
            ModelFamily::Logistic => FittedModel::Logistic(params.logistic.fit(table, rows)?),
        })
    };
    let (model, holdout_rows, raw_logits, fold_roc_auc, fit_seconds) = match plan {
        ValidationPlan::Holdout(split) => {
            let started = std::time::Instant::now();
            let model = fit(&split.train)?;
            let fit_seconds = started.elapsed().as_secs_f64();
            let logits = model.logits(table, &split.valid);
            (model, split.valid.clone(), logits, Vec::new(), fit_seconds)
        }
        ValidationPlan::KFold { fold_of, k, .. } => {
            // The k fold models and the shipped one are independent fits: on a small table
            // they run side by side (a small fit keeps two cores only half busy by itself);
            // each is the same whatever the threads, so the results do not change.
            let all: Vec<usize> = (0..table.n_rows()).collect();
            let fit_timed = |rows: &[usize]| -> Result<(FittedModel, f64), TrainError> {
                let started = std::time::Instant::now();
                let model = fit(rows)?;
                Ok((model, started.elapsed().as_secs_f64()))
            };
            let run_fold = |fold: usize| -> Result<(FittedModel, f64), TrainError> {
                if fold == *k {
                    return fit_timed(&all);
                }
                let kept: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| fold_of[i] != fold)
                    .collect();
                fit_timed(&kept)
            };
            let fits: Vec<(FittedModel, f64)> =
                if table.n_rows() * table.n_features() <= SIDE_BY_SIDE_MAX_CELLS {
                    (0..=*k)
                        .into_par_iter()
                        .map(run_fold)
                        .collect::<Result<_, _>>()?
                } else {
                    (0..=*k).map(run_fold).collect::<Result<_, _>>()?
                };
            let mut logits = vec![f64::NAN; table.n_rows()];
            let mut fold_roc_auc = Vec::with_capacity(*k);
            let mut fits = fits.into_iter();
            for fold in 0..*k {
                let Some((fold_model, _)) = fits.next() else {
                    unreachable!("one fit per fold and one for the shipped model")
                };
                let held: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| fold_of[i] == fold)
                    .collect();
                let fold_logits = fold_model.logits(table, &held);
                let fold_labels: Vec<bool> = held.iter().map(|&i| table.labels[i] == 1).collect();
                fold_roc_auc.push(roc_auc(&fold_logits, &fold_labels, None)?);
                for (row, logit) in held.into_iter().zip(fold_logits) {
                    logits[row] = logit;
                }
            }
            let Some((model, fit_seconds)) = fits.next() else {
                unreachable!("one fit per fold and one for the shipped model")
            };
            (model, all, logits, fold_roc_auc, fit_seconds)
        }
    };
    let holdout_labels: Vec<bool> = holdout_rows.iter().map(|&i| table.labels[i] == 1).collect();
    let raw_scores: Vec<f64> = raw_logits.iter().map(|&z| sigmoid(z)).collect();
    let raw_metrics = BinaryMetrics::compute(&raw_scores, &holdout_labels)?;
    let halves: Vec<bool> = holdout_rows
        .iter()
        .map(|&i| unit_interval_hash(&table.entity_ids[i], seed ^ 0x5eed) < 0.5)
        .collect();
    let calibration = cross_fitted_calibration(&raw_logits, &holdout_labels, &halves)?;
    let calibrated_metrics =
        BinaryMetrics::compute(&calibration.calibrated_scores, &holdout_labels)?;
    let importance = model.mean_abs_contributions(table, &holdout_rows);
    Ok(Evaluation {
        family,
        model,
        calibrator: calibration.calibrator,
        calibration_reason: calibration.reason,
        holdout_rows,
        holdout_labels,
        raw_logits,
        raw_scores,
        calibrated_scores: calibration.calibrated_scores,
        raw_metrics,
        calibrated_metrics,
        fold_roc_auc,
        fit_seconds,
        importance,
        seconds: evaluation_started.elapsed().as_secs_f64(),
    })
}

/// The outcome of [`cross_fitted_calibration`].
#[derive(Debug, Clone)]
pub struct CrossFittedCalibration {
    /// Fitted on all rows with the chosen method.
    pub calibrator: Calibrator,
    /// Each row calibrated by the calibrator fitted on the other half.
    pub calibrated_scores: Vec<f64>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Platt,
    Isotonic,
}

fn fit_method(method: Method, scores: &[f64], labels: &[bool]) -> Result<Calibrator, TrainError> {
    Ok(match method {
        Method::Platt => fit_platt(scores, labels)?,
        Method::Isotonic => fit_isotonic(scores, labels, None)?,
    })
}

fn isotonic_is_a_candidate(labels: &[bool]) -> bool {
    let positives = labels.iter().filter(|&&y| y).count();
    labels.len() >= MIN_ISOTONIC_ROWS
        && positives >= MIN_ISOTONIC_CLASS_ROWS
        && labels.len() - positives >= MIN_ISOTONIC_CLASS_ROWS
}

/// Calibrates `scores` by two-fold cross-fitting over `in_first_half`, choosing Platt or
/// isotonic by the pooled cross-fitted log loss (isotonic only when each half has
/// [`MIN_ISOTONIC_ROWS`] rows and [`MIN_ISOTONIC_CLASS_ROWS`] of each class; ties go to
/// Platt).
pub fn cross_fitted_calibration(
    scores: &[f64],
    labels: &[bool],
    in_first_half: &[bool],
) -> Result<CrossFittedCalibration, TrainError> {
    let pick = |first: bool| -> (Vec<f64>, Vec<bool>) {
        let mut s = Vec::new();
        let mut l = Vec::new();
        for i in 0..scores.len() {
            if in_first_half[i] == first {
                s.push(scores[i]);
                l.push(labels[i]);
            }
        }
        (s, l)
    };
    let halves = [pick(true), pick(false)];
    let mut methods = vec![Method::Platt];
    if halves.iter().all(|(_, l)| isotonic_is_a_candidate(l)) {
        methods.push(Method::Isotonic);
    }
    let mut best: Option<(Method, f64, Vec<f64>)> = None;
    let mut losses = Vec::new();
    for method in methods {
        let calibrators = [
            fit_method(method, &halves[1].0, &halves[1].1)?,
            fit_method(method, &halves[0].0, &halves[0].1)?,
        ];
        let calibrated: Vec<f64> = (0..scores.len())
            .map(|i| {
                let by = if in_first_half[i] { 0 } else { 1 };
                calibrators[by].apply(scores[i])
            })
            .collect();
        let loss = log_loss(&calibrated, labels, None)?;
        losses.push(format!("{method:?} {loss:.5}"));
        if best
            .as_ref()
            .is_none_or(|(_, best_loss, _)| loss < *best_loss)
        {
            best = Some((method, loss, calibrated));
        }
    }
    let Some((method, _, calibrated_scores)) = best else {
        return Err(TrainError::Data("no calibration method was tried".into()));
    };
    let calibrator = fit_method(method, scores, labels)?;
    let reason = format!(
        "{method:?}: cross-fitted held-out log loss {}{}",
        losses.join(", "),
        if losses.len() == 1 {
            " (isotonic needs more held-out rows of each class)"
        } else {
            ""
        }
    );
    Ok(CrossFittedCalibration {
        calibrator,
        calibrated_scores,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_fitting_calibrates_a_distorted_score() {
        // True probability p; the model reports p^3 (badly calibrated, same ranking). Enough
        // rows that isotonic regression, which can undo the distortion, beats Platt scaling,
        // which cannot (with 20,000 rows the two were within noise and Platt could win).
        let mut rng = models::gbdt::SplitMix64::new(99u64);
        let mut uniform = || rng.next_f64();
        let n = 100_000;
        let mut scores = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut halves = Vec::with_capacity(n);
        for i in 0..n {
            let p = 0.05 + 0.9 * uniform();
            let distorted: f64 = p * p * p;
            scores.push((distorted / (1.0 - distorted)).ln());
            labels.push(uniform() < p);
            halves.push(i % 2 == 0);
        }
        let probabilities: Vec<f64> = scores.iter().map(|&z| sigmoid(z)).collect();
        let raw = BinaryMetrics::compute(&probabilities, &labels).unwrap();
        let result = cross_fitted_calibration(&scores, &labels, &halves).unwrap();
        let calibrated = BinaryMetrics::compute(&result.calibrated_scores, &labels).unwrap();
        assert!(raw.ece > 0.15, "raw ECE {}", raw.ece);
        assert!(
            calibrated.ece < 0.02,
            "calibrated ECE {} ({})",
            calibrated.ece,
            result.reason
        );
        assert!(calibrated.log_loss < raw.log_loss);
        // Both methods were candidates, and the reason says which won.
        assert!(result.reason.contains("Platt") && result.reason.contains("Isotonic"));
        // The shipped calibrator maps the distorted score back near the truth.
        let logit_of_distorted_half = (0.125f64 / 0.875).ln();
        assert!((result.calibrator.apply(logit_of_distorted_half) - 0.5).abs() < 0.05);
    }
}
