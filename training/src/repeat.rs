//! Repeated validation splits: one held-out split of a few thousand entities leaves a few
//! hundred validation rows, and its ROC AUC moves with the seed by about 0.01. With
//! `--repeats N`, the split is drawn again with seeds `seed + 1 ... seed + N - 1` and each
//! family fitted and measured on each, so the summary and the report give the mean and the
//! spread of the held-out ROC AUC. The model shipped is still the one of the first split.
//! A split that is not random (`--holdout-share all` at calendar cutoffs: every entity
//! validates) is not repeated: it would give the same figure N times.

use crate::error::TrainError;
use crate::evaluate::{Evaluation, FamilyParams, ModelFamily, ValidationPlan};
use crate::pipeline::{Prepared, ValidationMode, validation_plan_with};
use crate::split::HoldoutShare;
use crate::train::{FamilyChoice, evaluate_families};

/// One family's held-out ROC AUC over repeated splits.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedAuc {
    pub family: ModelFamily,
    /// The seed of each split, the first the run's own.
    pub seeds: Vec<u64>,
    /// ROC AUC of the model's own score on each split's held-out rows (k-fold: the
    /// out-of-fold scores), in `seeds` order.
    pub roc_auc: Vec<f64>,
}

impl RepeatedAuc {
    pub fn mean(&self) -> f64 {
        self.roc_auc.iter().sum::<f64>() / self.roc_auc.len().max(1) as f64
    }

    /// Sample standard deviation (0 for one split).
    pub fn sd(&self) -> f64 {
        let n = self.roc_auc.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.mean();
        (self.roc_auc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }

    pub fn min(&self) -> f64 {
        self.roc_auc.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.roc_auc
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// `mean ± sd (min–max, N splits)`.
    pub fn describe(&self) -> String {
        format!(
            "{:.4} ± {:.4} ({:.4}–{:.4}, {} splits)",
            self.mean(),
            self.sd(),
            self.min(),
            self.max(),
            self.roc_auc.len()
        )
    }
}

/// What a repeated run needs beside the prepared data.
pub struct RepeatSettings<'a> {
    pub mode: ValidationMode,
    pub folds: usize,
    pub seed: u64,
    pub holdout: HoldoutShare,
    pub choice: FamilyChoice,
    pub params: &'a FamilyParams,
    /// Splits in all, the run's own included.
    pub repeats: usize,
}

/// Whether `plan` is drawn at random (so repeating it with other seeds says something).
pub fn is_random(plan: &ValidationPlan, holdout: HoldoutShare) -> bool {
    match plan {
        ValidationPlan::KFold { .. } => true,
        ValidationPlan::Holdout(_) => holdout != HoldoutShare::AllAtLastCutoff,
    }
}

/// Each family's ROC AUC on the run's own split (`first`) and on `repeats - 1` more splits
/// drawn with the next seeds. `on_split` is told each split as it starts (for progress).
pub fn repeated_roc_auc(
    prepared: &Prepared,
    first: &[Evaluation],
    settings: &RepeatSettings<'_>,
    mut on_split: impl FnMut(usize),
) -> Result<Vec<RepeatedAuc>, TrainError> {
    let mut out: Vec<RepeatedAuc> = first
        .iter()
        .map(|e| RepeatedAuc {
            family: e.family,
            seeds: vec![settings.seed],
            roc_auc: vec![e.raw_metrics.roc_auc],
        })
        .collect();
    for k in 1..settings.repeats {
        on_split(k + 1);
        let seed = settings.seed.wrapping_add(k as u64);
        let (plan, _) = validation_plan_with(
            prepared,
            settings.mode,
            settings.folds,
            seed,
            settings.holdout,
        )?;
        let evaluations = evaluate_families(
            prepared,
            &plan,
            settings.choice,
            settings.params,
            seed,
            |_| {},
        )?;
        for e in evaluations {
            if let Some(r) = out.iter_mut().find(|r| r.family == e.family) {
                r.seeds.push(seed);
                r.roc_auc.push(e.raw_metrics.roc_auc);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_spread() {
        let r = RepeatedAuc {
            family: ModelFamily::Logistic,
            seeds: vec![1, 2, 3],
            roc_auc: vec![0.70, 0.72, 0.74],
        };
        assert!((r.mean() - 0.72).abs() < 1e-12);
        assert!((r.sd() - 0.02).abs() < 1e-12);
        assert_eq!(r.describe(), "0.7200 ± 0.0200 (0.7000–0.7400, 3 splits)");
    }
}
