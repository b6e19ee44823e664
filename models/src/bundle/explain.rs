//! Explaining one score: each feature's contribution to the model's
//! log-odds, exact for every [`Explainer`] kind, so that
//! `base + Σ contributions` is the log-odds of the model part
//! ([`Explainer::model_graph`]) before calibration.
//!
//! * linear part: `w_j (x_j - mean_j)`, 0 for a missing value (it scores as
//!   the mean); the base is the log-odds at the means;
//! * trees: exact path-dependent TreeSHAP ([`Gbdt::shap_values_into`]); the
//!   base is the trees' expected value over the training rows;
//! * trees boosted from a linear part: both, added feature by feature.

use super::manifest::Explainer;
use crate::gbdt::{Gbdt, ShapScratch};

/// Reusable working memory for [`Explainer::explain_into`]: create one per
/// worker thread; explaining then allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct ExplainScratch {
    shap: ShapScratch,
}

impl ExplainScratch {
    /// A scratch sized for `explainer`'s trees (it grows if needed).
    pub fn new(explainer: &Explainer) -> Self {
        let shap = match explainer.trees() {
            Some(trees) => ShapScratch::new(trees),
            None => ShapScratch::default(),
        };
        Self { shap }
    }
}

impl Explainer {
    /// The trees, for the kinds that have them.
    pub fn trees(&self) -> Option<&Gbdt> {
        match self {
            Explainer::Gbdt(trees) | Explainer::GbdtOnLinear { trees, .. } => Some(trees),
            Explainer::Linear { .. } => None,
        }
    }

    /// Writes each feature's contribution to the log-odds of `row` into
    /// `contributions` (overwritten) and returns the base value they add
    /// to: `base + Σ contributions` is the model's uncalibrated log-odds.
    ///
    /// # Panics
    /// If `row` or `contributions` do not have [`Explainer::n_features`]
    /// entries (the manifest's feature plan fixes the width).
    pub fn explain_into(
        &self,
        row: &[f32],
        scratch: &mut ExplainScratch,
        contributions: &mut [f64],
    ) -> f64 {
        let n = self.n_features();
        assert_eq!(row.len(), n, "row width");
        assert_eq!(contributions.len(), n, "contributions width");
        match self {
            Explainer::Gbdt(trees) => trees.shap_values_into(row, &mut scratch.shap, contributions),
            Explainer::Linear {
                weights,
                bias,
                reference,
            } => {
                contributions.fill(0.0);
                add_linear(weights, *bias, reference, row, contributions)
            }
            Explainer::GbdtOnLinear {
                weights,
                bias,
                reference,
                trees,
            } => {
                let trees_base = trees.shap_values_into(row, &mut scratch.shap, contributions);
                trees_base + add_linear(weights, *bias, reference, row, contributions)
            }
        }
    }

    /// [`explain_into`](Self::explain_into), allocating: `(base, contributions)`.
    pub fn explain(&self, row: &[f32]) -> (f64, Vec<f64>) {
        let mut contributions = vec![0.0; self.n_features()];
        let base = self.explain_into(row, &mut ExplainScratch::new(self), &mut contributions);
        (base, contributions)
    }
}

/// Adds `w_j (x_j - reference_j)` to `contributions` (nothing for a missing
/// value) and returns the base `bias + Σ w_j reference_j`.
fn add_linear(
    weights: &[f64],
    bias: f64,
    reference: &[f64],
    row: &[f32],
    contributions: &mut [f64],
) -> f64 {
    let mut base = bias;
    for (j, x) in row.iter().enumerate() {
        base += weights[j] * reference[j];
        if !x.is_nan() {
            contributions[j] += weights[j] * (f64::from(*x) - reference[j]);
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbdt::{GbdtParams, SplitMix64, TrainData};

    fn rows(n: usize, width: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * width)
            .map(|i| {
                if i % 7 == 3 {
                    f32::NAN
                } else {
                    (rng.next_f64() * 4.0 - 2.0) as f32
                }
            })
            .collect()
    }

    fn trees(width: usize) -> Gbdt {
        let x = rows(2000, width, 1);
        let y: Vec<f32> = x
            .chunks(width)
            .map(|r| {
                let a = if r[0].is_nan() { 0.0 } else { r[0] };
                let b = if r[1].is_nan() { 0.0 } else { r[1] };
                f32::from(a * b > 0.2)
            })
            .collect();
        GbdtParams {
            n_trees: 20,
            num_leaves: 8,
            min_data_in_leaf: 10,
            ..GbdtParams::default()
        }
        .fit(&TrainData::new(&x, width, &y))
        .expect("fit")
    }

    #[test]
    fn contributions_add_up_to_the_log_odds_for_every_kind() {
        let width = 4;
        let weights = vec![0.5, -1.25, 0.0, 2.0];
        let reference = vec![0.1, -0.3, 0.0, 0.7];
        let explainers = [
            Explainer::Gbdt(trees(width)),
            Explainer::Linear {
                weights: weights.clone(),
                bias: -0.75,
                reference: reference.clone(),
            },
            Explainer::GbdtOnLinear {
                weights,
                bias: -0.75,
                reference,
                trees: trees(width),
            },
        ];
        let x = rows(300, width, 2);
        for explainer in &explainers {
            let graph = explainer.model_graph();
            let mut scratch = ExplainScratch::new(explainer);
            let mut contributions = vec![0.0; width];
            for row in x.chunks(width) {
                let base = explainer.explain_into(row, &mut scratch, &mut contributions);
                let total = base + contributions.iter().sum::<f64>();
                // The graph rounds weights and leaves to f32.
                assert!(
                    (total - graph.logit(row)).abs() < 1e-5,
                    "{:?}: {total} vs {}",
                    explainer.kind(),
                    graph.logit(row)
                );
            }
        }
    }

    #[test]
    fn a_missing_value_contributes_nothing_to_the_linear_part() {
        let explainer = Explainer::Linear {
            weights: vec![2.0, -1.0],
            bias: 0.5,
            reference: vec![1.0, 3.0],
        };
        let (base, contributions) = explainer.explain(&[f32::NAN, 4.0]);
        assert_eq!(base, 0.5 + 2.0 - 3.0);
        assert_eq!(contributions, vec![0.0, -1.0]);
    }
}
