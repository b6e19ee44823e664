//! Probability calibration: maps a model's uncalibrated score to a
//! probability that matches observed conversion rates.
//!
//! A [`Calibrator`] is fitted on held-out scores and labels by [`fit_platt`]
//! (a logistic curve, as scikit-learn's `_sigmoid_calibration`) or
//! [`fit_isotonic`] (a monotone step-then-interpolate curve, as
//! scikit-learn's `IsotonicRegression(out_of_bounds="clip")`); [`choose`]
//! picks between the two by held-out log loss. Calibrators serialise to JSON
//! (tagged by `"method"`) for the model manifest.
//!
//! **The score is the model's log-odds** (the logit the ONNX graph computes
//! before any sigmoid), as scikit-learn calibrates a classifier's
//! `decision_function`: Platt scaling is a logistic regression on it, and
//! [`Calibrator::Identity`] is the plain logistic function. Fit and apply
//! must see the same score. The exported ONNX graph must give the same
//! result as [`Calibrator::apply_f32`], which spells out the `f32`
//! operations (see [`Calibrator`] for the formulas).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metrics::{MetricError, check_inputs, log_loss};

/// Fewest fitting rows for [`choose`] to consider isotonic regression.
/// With fewer, isotonic steps follow noise (scikit-learn's guide warns
/// against isotonic calibration with "too few" samples, well under 1000).
pub const MIN_ISOTONIC_ROWS: usize = 1000;

/// Fewest positives, and fewest negatives, among the fitting rows for
/// [`choose`] to consider isotonic regression: each step's rate is estimated
/// from the rows between two thresholds, and with a handful of positives the
/// steps are mostly noise.
pub const MIN_ISOTONIC_CLASS_ROWS: usize = 50;

/// Scores whose difference is below this are one threshold in
/// [`fit_isotonic`]: `numpy.finfo(float64).resolution`, as scikit-learn's
/// `_make_unique` merges them.
pub const ISOTONIC_MERGE_RESOLUTION: f64 = 1e-15;

/// Why a calibrator cannot be fitted, chosen or used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CalibrationError {
    /// The scores, labels or weights are not valid input (see
    /// [`MetricError`]); fitting needs both classes.
    #[error(transparent)]
    Input(#[from] MetricError),
    /// A calibrator (typically read from JSON) is not well formed.
    #[error("invalid calibrator: {0}")]
    Invalid(&'static str),
}

/// A fitted map from an uncalibrated log-odds score `s` to a probability.
///
/// | variant | `apply(s)` in `f64` |
/// | --- | --- |
/// | `Identity` | `1 / (1 + exp(-s))`, the logistic function (ONNX `Sigmoid`) |
/// | `Platt { a, b }` | `1 / (1 + exp(a * s + b))` |
/// | `Isotonic { x, y }` | piecewise-linear through `(x[k], y[k])`, constant outside `[x[0], x[n-1]]` |
///
/// **Platt**: scikit-learn's convention, `p = expit(-(a s + b))`; `a < 0`
/// when higher scores mean more positives. As an ONNX graph:
/// `Mul(s, -a) → Add(-b) → Sigmoid`, with `-a`, `-b` as `f32` constants
/// (negation is exact, so this equals the formula step for step).
///
/// **Isotonic**: `x` strictly increasing, `y` non-decreasing, equal lengths
/// `n >= 1`. For a score `s`:
///
/// 1. clip: `s = min(max(s, x[0]), x[n-1])`;
/// 2. segment: `k` = the number of `x[1..=n-1]` that are `<= s` (so
///    `0 <= k <= n-1`, and `s` exactly on a threshold starts the segment
///    there);
/// 3. `p = y[k] + (s - x[k]) * slope[k]`, where
///    `slope[k] = (y[k+1] - y[k]) / (x[k+1] - x[k])` for `k < n-1` (divided
///    first, then multiplied) and `slope[n-1] = 0`.
///
/// On a threshold `p` is exactly `y[k]`; with `n = 1` it is `y[0]`. In `f64`
/// this is `numpy.interp`, which `IsotonicRegression.predict` uses (through
/// scipy's `interp1d`). As an ONNX graph: `Clip(s, x[0], x[n-1])`;
/// `LessOrEqual(x[1..=n-1], s) → Cast(int64) → ReduceSum → k`; `Gather` of
/// `x`, `y`, `slope` at `k`; then `Sub`, `Mul`, `Add`.
/// [`Calibrator::piecewise_linear_f32`] gives the three `f32` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibrator {
    /// No calibration: the logistic function of the score.
    Identity,
    /// Platt scaling, `p = 1 / (1 + exp(a * s + b))`.
    Platt {
        /// Slope (negative for a useful score).
        a: f64,
        /// Intercept.
        b: f64,
    },
    /// Isotonic regression thresholds (knots of the interpolation).
    Isotonic {
        /// Strictly increasing scores.
        x: Vec<f64>,
        /// Non-decreasing calibrated probabilities at `x`.
        y: Vec<f64>,
    },
}

/// The `f32` tables for evaluating an isotonic calibrator in an ONNX graph:
/// `p = y[k] + (s - x[k]) * slope[k]` (see [`Calibrator`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PiecewiseLinearF32 {
    /// Thresholds rounded to `f32`.
    pub x: Vec<f32>,
    /// Values rounded to `f32`.
    pub y: Vec<f32>,
    /// `slope[k] = (y[k+1] - y[k]) / (x[k+1] - x[k])` in `f32` arithmetic on
    /// the rounded `x`, `y`; `slope[n-1] = 0`, and 0 where two thresholds
    /// round to the same `f32` (such a segment is never selected: step 2
    /// counts both thresholds). `n` entries, like `x` and `y`.
    pub slope: Vec<f32>,
}

/// The slope of isotonic segment `k` in `f32`: `(y[k+1] - y[k]) / (x[k+1] -
/// x[k])`, 0 for the last point and where the two thresholds are the same
/// `f32`.
fn segment_slope_f32(x: &[f32], y: &[f32], k: usize) -> f32 {
    if k + 1 >= x.len() {
        return 0.0;
    }
    let dx = x[k + 1] - x[k];
    if dx == 0.0 {
        0.0
    } else {
        (y[k + 1] - y[k]) / dx
    }
}

impl Calibrator {
    /// The calibrated probability of `score`, in `f64` (formulas on
    /// [`Calibrator`]). NaN stays NaN. A malformed isotonic table (see
    /// [`validate`](Self::validate)) gives NaN when empty and is read up to
    /// the shorter of `x` and `y` otherwise.
    pub fn apply(&self, score: f64) -> f64 {
        match self {
            Calibrator::Identity => 1.0 / (1.0 + (-score).exp()),
            Calibrator::Platt { a, b } => 1.0 / (1.0 + (a * score + b).exp()),
            Calibrator::Isotonic { x, y } => {
                let n = x.len().min(y.len());
                if n == 0 || score.is_nan() {
                    return f64::NAN;
                }
                let (x, y) = (&x[..n], &y[..n]);
                let s = score.max(x[0]).min(x[n - 1]);
                let k = x[1..].partition_point(|&threshold| threshold <= s);
                let slope = if k + 1 < n {
                    (y[k + 1] - y[k]) / (x[k + 1] - x[k])
                } else {
                    0.0
                };
                y[k] + (s - x[k]) * slope
            }
        }
    }

    /// The same formula evaluated in `f32`, one rounding per operation, as an
    /// ONNX graph evaluates it: parameters are rounded to `f32` first.
    ///
    /// * Identity: `p = 1 / (1 + exp(-s))`, as ONNX `Sigmoid`; runtimes may
    ///   compute `exp` to within a few ulps.
    /// * Platt: `z = a32 * s + b32` (a multiply, then an add; no fused
    ///   multiply-add), `p = 1 / (1 + exp(z))`. ONNX `Sigmoid(-z)` is the same
    ///   expression; runtimes may compute `exp` to within a few ulps.
    /// * Isotonic: the steps on [`Calibrator`] with the tables of
    ///   [`piecewise_linear_f32`](Self::piecewise_linear_f32):
    ///   `s = min(max(s, x[0]), x[n-1])`, `k = #{x[1..=n-1] <= s}`,
    ///   `p = y[k] + (s - x[k]) * slope[k]`. No transcendental function, so
    ///   a conforming runtime gives the same bits. (Rounds the table on each
    ///   call: meant for parity checks, not for hot loops.)
    pub fn apply_f32(&self, score: f32) -> f32 {
        match self {
            Calibrator::Identity => 1.0 / (1.0 + (-score).exp()),
            Calibrator::Platt { a, b } => {
                let (a, b) = (*a as f32, *b as f32);
                let z = a * score + b;
                1.0 / (1.0 + z.exp())
            }
            Calibrator::Isotonic { x, y } => {
                let n = x.len().min(y.len());
                if n == 0 || score.is_nan() {
                    return f32::NAN;
                }
                let x: Vec<f32> = x[..n].iter().map(|&v| v as f32).collect();
                let y: Vec<f32> = y[..n].iter().map(|&v| v as f32).collect();
                let s = score.max(x[0]).min(x[n - 1]);
                let k = x[1..].iter().filter(|&&threshold| threshold <= s).count();
                y[k] + (s - x[k]) * segment_slope_f32(&x, &y, k)
            }
        }
    }

    /// The `f32` tables of an isotonic calibrator for the ONNX writer; `None`
    /// for the other variants.
    pub fn piecewise_linear_f32(&self) -> Option<PiecewiseLinearF32> {
        let Calibrator::Isotonic { x, y } = self else {
            return None;
        };
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let slope = (0..x.len()).map(|k| segment_slope_f32(&x, &y, k)).collect();
        Some(PiecewiseLinearF32 { x, y, slope })
    }

    /// Checks a calibrator read from elsewhere: finite Platt parameters; an
    /// isotonic table that is non-empty, of equal lengths, finite, with `x`
    /// strictly increasing and `y` non-decreasing within `[0, 1]`.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        match self {
            Calibrator::Identity => Ok(()),
            Calibrator::Platt { a, b } => {
                if a.is_finite() && b.is_finite() {
                    Ok(())
                } else {
                    Err(CalibrationError::Invalid("Platt parameters must be finite"))
                }
            }
            Calibrator::Isotonic { x, y } => {
                if x.is_empty() {
                    return Err(CalibrationError::Invalid("isotonic table is empty"));
                }
                if x.len() != y.len() {
                    return Err(CalibrationError::Invalid(
                        "isotonic x and y differ in length",
                    ));
                }
                if !x.iter().all(|v| v.is_finite()) {
                    return Err(CalibrationError::Invalid("isotonic x must be finite"));
                }
                if !y.iter().all(|v| (0.0..=1.0).contains(v)) {
                    return Err(CalibrationError::Invalid("isotonic y must lie in [0, 1]"));
                }
                if !x.windows(2).all(|w| w[0] < w[1]) {
                    return Err(CalibrationError::Invalid(
                        "isotonic x must be strictly increasing",
                    ));
                }
                if !y.windows(2).all(|w| w[0] <= w[1]) {
                    return Err(CalibrationError::Invalid(
                        "isotonic y must be non-decreasing",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Fails unless both classes have positive weight.
fn require_both_classes(
    metric: &'static str,
    labels: &[bool],
    weight: impl Fn(usize) -> f64,
) -> Result<(), MetricError> {
    let has = |class: bool| (0..labels.len()).any(|i| labels[i] == class && weight(i) > 0.0);
    match (has(true), has(false)) {
        (true, true) => Ok(()),
        (positives, _) => Err(MetricError::SingleClass {
            metric,
            label: positives,
        }),
    }
}

/// Platt's objective: the cross-entropy of the smoothed targets against
/// `p_i = 1 / (1 + exp(a f_i + b))`, summed, computed without overflow.
fn platt_objective(f: &[f64], targets: &[f64], a: f64, b: f64) -> f64 {
    f.iter()
        .zip(targets)
        .map(|(&fi, &t)| {
            let z = a * fi + b;
            if z >= 0.0 {
                t * z + (-z).exp().ln_1p()
            } else {
                (t - 1.0) * z + z.exp().ln_1p()
            }
        })
        .sum()
}

/// Fits Platt scaling `p = 1 / (1 + exp(a * s + b))` by maximum likelihood,
/// as scikit-learn's `_sigmoid_calibration(scores, labels)`:
///
/// * Targets are Platt's smoothed labels: `(N+ + 1) / (N+ + 2)` for
///   positives and `1 / (N- + 2)` for negatives (`N+`, `N-` the class
///   counts), so perfectly separated scores still give finite `a`, `b`.
/// * If `max |s| >= 30` the scores are divided by it during the fit and `a`
///   scaled back (conditioning only; the optimum is the same).
/// * The start is `a = 0`, `b = ln((N- + 1) / (N+ + 1))`.
///
/// scikit-learn minimises with L-BFGS-B (gradient tolerance 1e-6); this uses
/// Newton's method with backtracking (Lin, Lin & Weng 2007, "A note on
/// Platt's probabilistic outputs") to a tighter tolerance, so the two agree
/// to about 1e-6 and this one is the more exact minimiser.
///
/// Scores may be any finite numbers (probabilities or margins); both classes
/// are required.
pub fn fit_platt(scores: &[f64], labels: &[bool]) -> Result<Calibrator, CalibrationError> {
    check_inputs(scores, labels, None)?;
    require_both_classes("Platt calibration", labels, |_| 1.0)?;
    let positives = labels.iter().filter(|&&y| y).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let high = (positives + 1.0) / (positives + 2.0);
    let low = 1.0 / (negatives + 2.0);
    let targets: Vec<f64> = labels.iter().map(|&y| if y { high } else { low }).collect();

    let max_abs = scores.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
    let scale = if max_abs >= 30.0 { max_abs } else { 1.0 };
    let f: Vec<f64> = scores.iter().map(|s| s / scale).collect();

    const MAX_ITERATIONS: usize = 200;
    const MIN_STEP: f64 = 1e-12;
    const HESSIAN_RIDGE: f64 = 1e-12;
    let gradient_tolerance = 1e-12 * scores.len() as f64;

    let (mut a, mut b) = (0.0, ((negatives + 1.0) / (positives + 1.0)).ln());
    let mut objective = platt_objective(&f, &targets, a, b);
    for _ in 0..MAX_ITERATIONS {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) =
            (HESSIAN_RIDGE, HESSIAN_RIDGE, 0.0, 0.0, 0.0);
        for (&fi, &t) in f.iter().zip(&targets) {
            let z = a * fi + b;
            // p = P(positive) = 1 / (1 + e^z), q = 1 - p, both without overflow.
            let (p, q) = if z >= 0.0 {
                let e = (-z).exp();
                (e / (1.0 + e), 1.0 / (1.0 + e))
            } else {
                let e = z.exp();
                (1.0 / (1.0 + e), e / (1.0 + e))
            };
            let curvature = p * q;
            h11 += fi * fi * curvature;
            h22 += curvature;
            h21 += fi * curvature;
            let residual = t - p;
            g1 += fi * residual;
            g2 += residual;
        }
        if g1.abs() < gradient_tolerance && g2.abs() < gradient_tolerance {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let step_a = -(h22 * g1 - h21 * g2) / det;
        let step_b = -(-h21 * g1 + h11 * g2) / det;
        let descent = g1 * step_a + g2 * step_b;
        let mut step = 1.0;
        let mut improved = false;
        while step >= MIN_STEP {
            let (next_a, next_b) = (a + step * step_a, b + step * step_b);
            let next = platt_objective(&f, &targets, next_a, next_b);
            if next < objective + 1e-4 * step * descent {
                (a, b, objective) = (next_a, next_b, next);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved {
            // No representable improvement: at the optimum to float precision.
            break;
        }
    }
    Ok(Calibrator::Platt { a: a / scale, b })
}

/// Fits increasing isotonic regression of the labels (1 positive, 0
/// negative) on the scores, as scikit-learn's
/// `IsotonicRegression(out_of_bounds="clip").fit(scores, labels, weights)`:
///
/// 1. Rows of weight 0 are dropped; rows are sorted by score (then label).
/// 2. Scores less than [`ISOTONIC_MERGE_RESOLUTION`] above the first score
///    of a run are merged into it: one point at that first score, weighted
///    mean label, summed weight.
/// 3. Pool-adjacent-violators: adjacent blocks whose means are not
///    increasing are pooled (weighted mean) until the means increase.
/// 4. Points whose value equals both neighbours' are dropped (they lie on a
///    flat run); the first and last are kept.
///
/// Prediction ([`Calibrator::apply`]) interpolates linearly between the
/// remaining points and clips outside them. Both classes are required.
pub fn fit_isotonic(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<Calibrator, CalibrationError> {
    check_inputs(scores, labels, weights)?;
    let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
    require_both_classes("isotonic calibration", labels, weight)?;
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| weight(i) > 0.0).collect();
    order.sort_by(|&i, &j| {
        scores[i]
            .total_cmp(&scores[j])
            .then(labels[i].cmp(&labels[j]))
    });

    // Unique scores: (x, mean label, weight).
    let mut points: Vec<(f64, f64, f64)> = Vec::new();
    let (mut current_x, mut weighted_sum, mut weight_sum) = (scores[order[0]], 0.0, 0.0);
    for &i in &order {
        let label = if labels[i] { 1.0 } else { 0.0 };
        if scores[i] - current_x >= ISOTONIC_MERGE_RESOLUTION {
            points.push((current_x, weighted_sum / weight_sum, weight_sum));
            (current_x, weighted_sum, weight_sum) = (scores[i], 0.0, 0.0);
        }
        weighted_sum += label * weight(i);
        weight_sum += weight(i);
    }
    points.push((current_x, weighted_sum / weight_sum, weight_sum));

    // Pool adjacent violators. A block: (sum of w * y, sum of w, points).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(points.len());
    for &(_, mean, w) in &points {
        blocks.push((mean * w, w, 1));
        while blocks.len() >= 2 {
            let (last_sum, last_weight, last_len) = blocks[blocks.len() - 1];
            let (prev_sum, prev_weight, prev_len) = blocks[blocks.len() - 2];
            if prev_sum / prev_weight < last_sum / last_weight {
                break;
            }
            blocks.pop();
            let merged = blocks.len() - 1;
            blocks[merged] = (
                prev_sum + last_sum,
                prev_weight + last_weight,
                prev_len + last_len,
            );
        }
    }
    let fitted: Vec<f64> = blocks
        .iter()
        .flat_map(|&(sum, weight, len)| std::iter::repeat_n(sum / weight, len))
        .collect();

    // Keep the ends and every point where the value changes on either side.
    let n = points.len();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for k in 0..n {
        let keep = k == 0 || k == n - 1 || fitted[k] != fitted[k - 1] || fitted[k] != fitted[k + 1];
        if keep {
            x.push(points[k].0);
            y.push(fitted[k]);
        }
    }
    Ok(Calibrator::Isotonic { x, y })
}

/// The outcome of [`choose`]: the calibrator and why it was picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationChoice {
    /// The chosen calibrator, fitted on the fitting rows.
    pub calibrator: Calibrator,
    /// Held-out log loss of the Platt calibrator.
    pub platt_holdout_log_loss: f64,
    /// Held-out log loss of the isotonic calibrator, when it was a candidate.
    pub isotonic_holdout_log_loss: Option<f64>,
    /// One sentence on why, for the training log and the report.
    pub reason: String,
}

/// Fits Platt and (when the fitting set is large enough) isotonic
/// calibration on the fitting rows and keeps the one with the lower log loss
/// on the held-out rows.
///
/// Rule: isotonic is a candidate only with at least [`MIN_ISOTONIC_ROWS`]
/// fitting rows and at least [`MIN_ISOTONIC_CLASS_ROWS`] of each class; it is
/// chosen only when its held-out log loss is strictly lower than Platt's
/// (ties go to Platt, the smoother, two-parameter map). Log loss clips at
/// [`LOG_LOSS_EPS`](crate::metrics::LOG_LOSS_EPS), so an isotonic step at 0 or
/// 1 that a held-out row contradicts costs about 36 nats, which is how
/// overfitting shows.
pub fn choose(
    fit_scores: &[f64],
    fit_labels: &[bool],
    holdout_scores: &[f64],
    holdout_labels: &[bool],
) -> Result<CalibrationChoice, CalibrationError> {
    check_inputs(holdout_scores, holdout_labels, None)?;
    let holdout_loss = |calibrator: &Calibrator| -> Result<f64, CalibrationError> {
        let calibrated: Vec<f64> = holdout_scores
            .iter()
            .map(|&s| calibrator.apply(s))
            .collect();
        Ok(log_loss(&calibrated, holdout_labels, None)?)
    };
    let platt = fit_platt(fit_scores, fit_labels)?;
    let platt_loss = holdout_loss(&platt)?;

    let positives = fit_labels.iter().filter(|&&y| y).count();
    let negatives = fit_labels.len() - positives;
    let rows = fit_labels.len();
    if rows < MIN_ISOTONIC_ROWS
        || positives < MIN_ISOTONIC_CLASS_ROWS
        || negatives < MIN_ISOTONIC_CLASS_ROWS
    {
        return Ok(CalibrationChoice {
            calibrator: platt,
            platt_holdout_log_loss: platt_loss,
            isotonic_holdout_log_loss: None,
            reason: format!(
                "Platt: isotonic needs at least {MIN_ISOTONIC_ROWS} fitting rows and \
                 {MIN_ISOTONIC_CLASS_ROWS} of each class, got {rows} rows with \
                 {positives} positives and {negatives} negatives"
            ),
        });
    }
    let isotonic = fit_isotonic(fit_scores, fit_labels, None)?;
    let isotonic_loss = holdout_loss(&isotonic)?;
    let (calibrator, reason) = if isotonic_loss < platt_loss {
        (
            isotonic,
            format!("isotonic: held-out log loss {isotonic_loss:.6} below Platt's {platt_loss:.6}"),
        )
    } else {
        (
            platt,
            format!(
                "Platt: held-out log loss {platt_loss:.6} not above isotonic's {isotonic_loss:.6}"
            ),
        )
    };
    Ok(CalibrationChoice {
        calibrator,
        platt_holdout_log_loss: platt_loss,
        isotonic_holdout_log_loss: Some(isotonic_loss),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isotonic(x: &[f64], y: &[f64]) -> Calibrator {
        Calibrator::Isotonic {
            x: x.to_vec(),
            y: y.to_vec(),
        }
    }

    #[test]
    fn isotonic_interpolates_and_clips() {
        let c = isotonic(&[0.2, 0.4, 0.8], &[0.1, 0.3, 0.9]);
        assert_eq!(c.apply(0.0), 0.1);
        assert_eq!(c.apply(0.2), 0.1);
        assert!((c.apply(0.3) - 0.2).abs() < 1e-15);
        assert_eq!(c.apply(0.4), 0.3);
        assert!((c.apply(0.6) - 0.6).abs() < 1e-15);
        // Exactly y[n-1] on the last threshold (numpy.interp does the same).
        assert_eq!(c.apply(0.8), 0.9);
        assert_eq!(c.apply(2.0), 0.9);
        assert!(c.apply(f64::NAN).is_nan());
        assert_eq!(c.apply_f32(0.0), 0.1_f32);
        assert_eq!(c.apply_f32(5.0), 0.9_f32);
        assert!((c.apply_f32(0.6) - 0.6).abs() < 1e-6);
        assert_eq!(isotonic(&[0.5], &[0.25]).apply(0.9), 0.25);
        assert_eq!(isotonic(&[0.5], &[0.25]).apply_f32(0.1), 0.25);
        assert!(isotonic(&[], &[]).apply(0.5).is_nan());
    }

    #[test]
    fn isotonic_pools_violators() {
        // Labels by score: 0, 1, 0, 1 -> the middle two pool to 0.5.
        let c =
            fit_isotonic(&[0.1, 0.2, 0.3, 0.4], &[false, true, false, true], None).expect("valid");
        assert_eq!(c, isotonic(&[0.1, 0.2, 0.3, 0.4], &[0.0, 0.5, 0.5, 1.0]));
        // A flat run keeps only its ends.
        let c = fit_isotonic(
            &[0.1, 0.2, 0.3, 0.4, 0.5],
            &[false, false, false, false, true],
            None,
        )
        .expect("valid");
        assert_eq!(c, isotonic(&[0.1, 0.4, 0.5], &[0.0, 0.0, 1.0]));
    }

    #[test]
    fn isotonic_weights_act_as_repetitions_and_zero_weights_vanish() {
        let weighted = fit_isotonic(
            &[0.1, 0.2, 0.3, 0.9],
            &[true, false, true, false],
            Some(&[1.0, 3.0, 1.0, 0.0]),
        )
        .expect("valid");
        let repeated = fit_isotonic(
            &[0.1, 0.2, 0.2, 0.2, 0.3],
            &[true, false, false, false, true],
            None,
        )
        .expect("valid");
        assert_eq!(weighted, repeated);
    }

    #[test]
    fn platt_matches_hand_computed_properties() {
        // Symmetric data: p(0.5) = 0.5 means a/2 + b = 0.
        let scores = [0.1, 0.3, 0.4, 0.6, 0.7, 0.9];
        let labels = [false, false, true, false, true, true];
        let Calibrator::Platt { a, b } = fit_platt(&scores, &labels).expect("valid") else {
            panic!("fit_platt returns Platt");
        };
        assert!(a < 0.0);
        assert!((a / 2.0 + b).abs() < 1e-9);
        // At the optimum the gradient in b vanishes: the mean fitted
        // probability equals the mean smoothed target.
        let c = Calibrator::Platt { a, b };
        let mean_p: f64 = scores.iter().map(|&s| c.apply(s)).sum::<f64>() / 6.0;
        let mean_target = (3.0 * (4.0 / 5.0) + 3.0 * (1.0 / 5.0)) / 6.0;
        assert!((mean_p - mean_target).abs() < 1e-12);
    }

    #[test]
    fn separable_scores_still_give_finite_platt_parameters() {
        let c = fit_platt(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).expect("valid");
        assert!(c.validate().is_ok());
        // Smoothed targets are 3/4 and 1/4, not 1 and 0.
        assert!(c.apply(0.9) < 0.95 && c.apply(0.1) > 0.05);
    }

    #[test]
    fn fitting_needs_both_classes_and_valid_input() {
        let err = fit_platt(&[0.1, 0.2], &[true, true]).unwrap_err();
        assert!(matches!(
            err,
            CalibrationError::Input(MetricError::SingleClass { label: true, .. })
        ));
        let err = fit_isotonic(&[0.1, 0.2], &[true, false], Some(&[0.0, 1.0])).unwrap_err();
        assert!(matches!(
            err,
            CalibrationError::Input(MetricError::SingleClass { label: false, .. })
        ));
        let err = fit_isotonic(&[0.1, f64::NAN], &[true, false], None).unwrap_err();
        assert!(matches!(
            err,
            CalibrationError::Input(MetricError::NonFiniteScore { index: 1, .. })
        ));
        let err = fit_platt(&[0.1], &[true, false]).unwrap_err();
        assert!(matches!(
            err,
            CalibrationError::Input(MetricError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn validate_rejects_malformed_tables() {
        assert!(isotonic(&[0.1, 0.5], &[0.2, 0.4]).validate().is_ok());
        assert!(isotonic(&[], &[]).validate().is_err());
        assert!(isotonic(&[0.1, 0.5], &[0.2]).validate().is_err());
        assert!(isotonic(&[0.5, 0.1], &[0.2, 0.4]).validate().is_err());
        assert!(isotonic(&[0.1, 0.5], &[0.4, 0.2]).validate().is_err());
        assert!(isotonic(&[0.1, 0.5], &[0.2, 1.4]).validate().is_err());
        let platt = Calibrator::Platt {
            a: f64::NAN,
            b: 0.0,
        };
        assert!(platt.validate().is_err());
    }

    #[test]
    fn serialises_with_a_method_tag() {
        let c = Calibrator::Platt { a: -2.0, b: 1.0 };
        let json = serde_json::to_string(&c).expect("serialise");
        assert_eq!(json, r#"{"method":"platt","a":-2.0,"b":1.0}"#);
        let back: Calibrator = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, c);
        let identity: Calibrator = serde_json::from_str(r#"{"method":"identity"}"#).expect("ok");
        assert_eq!(identity, Calibrator::Identity);
    }

    #[test]
    fn f32_tables_match_apply_f32() {
        // Thresholds 1e-9 apart are one f32: that segment gets slope 0 and
        // is never selected.
        let c = isotonic(&[0.5, 0.5 + 1e-9, 0.7], &[0.1, 0.2, 0.6]);
        let table = c.piecewise_linear_f32().expect("isotonic");
        assert_eq!(table.x[0], table.x[1]);
        assert_eq!(table.slope, [0.0, (0.6_f32 - 0.2) / (0.7 - 0.5), 0.0]);
        assert_eq!(c.apply_f32(0.5), 0.2);
        assert_eq!(c.apply_f32(0.7), 0.6);
        assert!((c.apply_f32(0.6) - 0.4).abs() < 1e-6);
        assert_eq!(Calibrator::Identity.piecewise_linear_f32(), None);
    }

    #[test]
    fn platt_f32_follows_the_f64_formula() {
        let c = Calibrator::Platt { a: -4.0, b: 2.0 };
        for s in [0.0_f32, 0.25, 0.5, 0.75, 1.0] {
            let exact = c.apply(f64::from(s));
            assert!((f64::from(c.apply_f32(s)) - exact).abs() < 1e-6);
        }
        assert_eq!(c.apply(0.5), 0.5);
    }

    #[test]
    fn identity_is_the_logistic_function_of_the_log_odds() {
        let identity = Calibrator::Identity;
        assert_eq!(identity.apply(0.0), 0.5);
        assert!((identity.apply(2.0_f64.ln()) - 2.0 / 3.0).abs() < 1e-15);
        assert!((identity.apply(-3.0) + identity.apply(3.0) - 1.0).abs() < 1e-15);
        for s in [-20.0_f32, -1.5, 0.0, 0.3, 7.0] {
            let exact = identity.apply(f64::from(s));
            assert!(
                (f64::from(identity.apply_f32(s)) - exact).abs() < 1e-7,
                "{s}"
            );
        }
        // Platt with a = -1, b = 0 is the identity.
        let platt = Calibrator::Platt { a: -1.0, b: 0.0 };
        assert_eq!(platt.apply(1.25), identity.apply(1.25));
    }

    /// Deterministic pseudo-random numbers in [0, 1) (an LCG), for tests only.
    fn uniform(seed: u64, count: usize) -> Vec<f64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1_u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn choose_refuses_isotonic_on_small_sets() {
        let scores = uniform(1, 200);
        let draws = uniform(2, 200);
        let labels: Vec<bool> = scores.iter().zip(&draws).map(|(s, d)| d < s).collect();
        let choice = choose(&scores, &labels, &scores, &labels).expect("valid");
        assert!(matches!(choice.calibrator, Calibrator::Platt { .. }));
        assert_eq!(choice.isotonic_holdout_log_loss, None);
        assert!(choice.reason.contains("at least 1000"));
    }

    #[test]
    fn choose_prefers_isotonic_for_a_non_logistic_shape() {
        // True probability is a step: 0.1 below 0.5, 0.9 above. Platt's
        // logistic curve cannot follow it; isotonic can.
        let make = |seed: u64| {
            let scores = uniform(seed, 4000);
            let draws = uniform(seed + 1, 4000);
            let labels: Vec<bool> = scores
                .iter()
                .zip(&draws)
                .map(|(&s, &d)| d < if s < 0.5 { 0.1 } else { 0.9 })
                .collect();
            (scores, labels)
        };
        let (fit_scores, fit_labels) = make(10);
        let (holdout_scores, holdout_labels) = make(20);
        let choice =
            choose(&fit_scores, &fit_labels, &holdout_scores, &holdout_labels).expect("valid");
        assert!(
            matches!(choice.calibrator, Calibrator::Isotonic { .. }),
            "{choice:?}"
        );
        let isotonic_loss = choice.isotonic_holdout_log_loss.expect("candidate");
        assert!(isotonic_loss < choice.platt_holdout_log_loss);
    }
}
