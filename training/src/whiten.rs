//! The scorecard solver's preconditioner.
//!
//! A lead-scoring table holds many strongly correlated columns (one event type counted over
//! nested windows, counts beside active days), so the penalised log loss is a long narrow
//! valley even on standardised features, and L-BFGS spends hundreds of passes over the rows
//! in it. [`Whitening`] is the Cholesky factor `L` of the standardised features' covariance
//! (`L Lᵀ = Σ`): the solver works in `u = Lᵀ w`, where the features are uncorrelated and the
//! valley is close to round. The loss, its minimum and the tolerance (set on the gradient in
//! `w`) are those of the problem as stated; only the path to the minimum changes.

/// Share of each feature's variance added to the diagonal before factoring: keeps the factor
/// well defined for duplicated or constant columns, and bounds the condition number.
const RIDGE: f64 = 1e-3;

/// `L` with `L Lᵀ = Σ`, lower triangular, row-major.
#[derive(Debug, Clone)]
pub struct Whitening {
    p: usize,
    lower: Vec<f64>,
}

impl Whitening {
    /// The factor of `D^½ (R + RIDGE I) D^½`, where `R` is the correlation matrix of the
    /// sample (row-major `p x p`, the lower triangle read) and `D` the features' variances on
    /// all rows: the sample finds how features move together, the full table how much each
    /// varies (a rare feature that the sample happens to miss keeps its true scale). A feature
    /// without variance in the sample is taken as uncorrelated; one without variance at all
    /// keeps a variance of 1. `None` when the matrix does not factor (not positive definite
    /// to rounding).
    pub fn from_sample(sample_covariance: &[f64], variances: &[f64]) -> Option<Self> {
        let p = variances.len();
        if sample_covariance.len() != p * p {
            return None;
        }
        let sd: Vec<f64> = (0..p)
            .map(|j| sample_covariance[j * p + j].max(0.0).sqrt())
            .collect();
        let scale: Vec<f64> = variances
            .iter()
            .map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        let mut sigma = vec![0.0; p * p];
        for j in 0..p {
            for k in 0..j {
                let correlation = if sd[j] > 0.0 && sd[k] > 0.0 {
                    sample_covariance[j * p + k] / (sd[j] * sd[k])
                } else {
                    0.0
                };
                sigma[j * p + k] = correlation * scale[j] * scale[k];
            }
            sigma[j * p + j] = (1.0 + RIDGE) * scale[j] * scale[j];
        }
        cholesky(sigma, p).map(|lower| Whitening { p, lower })
    }

    /// The solver's coordinates `u = Lᵀ w` of weights `w`.
    pub fn coordinates(&self, weights: &[f64]) -> Vec<f64> {
        let p = self.p;
        (0..p)
            .map(|k| (k..p).map(|j| self.lower[j * p + k] * weights[j]).sum())
            .collect()
    }

    /// The weights `w` of coordinates `u`: solves `Lᵀ w = u`, into `weights`.
    pub fn weights(&self, coordinates: &[f64], weights: &mut [f64]) {
        let p = self.p;
        for j in (0..p).rev() {
            let known: f64 = weights[j + 1..p]
                .iter()
                .enumerate()
                .map(|(i, w)| self.lower[(j + 1 + i) * p + j] * w)
                .sum();
            weights[j] = (coordinates[j] - known) / self.lower[j * p + j];
        }
    }

    /// The gradient in `u` of a gradient in `w`: solves `L g_u = g_w`, in place.
    pub fn to_coordinates_gradient(&self, gradient: &mut [f64]) {
        let p = self.p;
        for j in 0..p {
            let row = &self.lower[j * p..j * p + j];
            let known: f64 = row.iter().zip(&gradient[..j]).map(|(l, g)| l * g).sum();
            gradient[j] = (gradient[j] - known) / self.lower[j * p + j];
        }
    }

    /// The largest absolute entry of the gradient in `w` (`L g_u`) of a gradient in `u`.
    pub fn weights_gradient_max(&self, gradient: &[f64]) -> f64 {
        let p = self.p;
        (0..p)
            .map(|j| {
                let row = &self.lower[j * p..=j * p + j];
                row.iter()
                    .zip(&gradient[..=j])
                    .map(|(l, g)| l * g)
                    .sum::<f64>()
                    .abs()
            })
            .fold(0.0, f64::max)
    }
}

/// The lower Cholesky factor of a symmetric `p x p` matrix given by its lower triangle
/// (row-major), or `None` when a pivot is not positive.
fn cholesky(mut a: Vec<f64>, p: usize) -> Option<Vec<f64>> {
    for j in 0..p {
        let (done, rest) = a.split_at_mut(j * p);
        let row_j = &mut rest[..p];
        for k in 0..j {
            let row_k = &done[k * p..k * p + k + 1];
            let dot: f64 = row_j[..k].iter().zip(&row_k[..k]).map(|(x, y)| x * y).sum();
            row_j[k] = (row_j[k] - dot) / row_k[k];
        }
        let pivot = row_j[j] - row_j[..j].iter().map(|x| x * x).sum::<f64>();
        if !(pivot > 0.0 && pivot.is_finite()) {
            return None;
        }
        row_j[j] = pivot.sqrt();
        row_j[j + 1..].iter_mut().for_each(|x| *x = 0.0);
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::Whitening;

    /// A covariance with correlations 0.9 between the first two features.
    fn whitening() -> Whitening {
        let sample = [4.0, 1.8, 0.0, 1.8, 1.0, 0.0, 0.0, 0.0, 0.0];
        Whitening::from_sample(&sample, &[4.0, 1.0, 0.0]).expect("positive definite")
    }

    #[test]
    fn the_factor_reproduces_the_ridged_covariance() {
        let w = whitening();
        let p = 3;
        let expected = [
            [4.0 * 1.001, 1.8, 0.0],
            [1.8, 1.001, 0.0],
            [0.0, 0.0, 1.001],
        ];
        for (j, row) in expected.iter().enumerate() {
            for (k, value) in row.iter().enumerate() {
                let product: f64 = (0..p)
                    .map(|i| w.lower[j * p + i] * w.lower[k * p + i])
                    .sum();
                assert!((product - value).abs() < 1e-12, "({j}, {k}): {product}");
            }
        }
    }

    #[test]
    fn coordinates_and_weights_are_inverse_and_gradients_follow_the_chain_rule() {
        let w = whitening();
        let weights = [0.5, -1.25, 3.0];
        let u = w.coordinates(&weights);
        let mut back = [0.0; 3];
        w.weights(&u, &mut back);
        for (a, b) in weights.iter().zip(back) {
            assert!((a - b).abs() < 1e-12);
        }
        // f(w) = g·w is linear: its gradient in u is the derivative of g·w(u), whose entries
        // are f at the unit vectors (w is linear in u).
        let g_w = [0.3, -0.7, 2.0];
        let mut g_u = g_w;
        w.to_coordinates_gradient(&mut g_u);
        for (i, g) in g_u.iter().enumerate() {
            let mut unit = [0.0; 3];
            unit[i] = 1.0;
            let mut at = [0.0; 3];
            w.weights(&unit, &mut at);
            let expected: f64 = g_w.iter().zip(at).map(|(a, b)| a * b).sum();
            assert!((g - expected).abs() < 1e-12, "u{i}: {g} vs {expected}");
        }
        assert!((w.weights_gradient_max(&g_u) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_matrix_that_is_not_positive_definite_has_no_factor() {
        assert!(super::cholesky(vec![1.0, 0.0, 2.0, 1.0], 2).is_none());
    }
}
