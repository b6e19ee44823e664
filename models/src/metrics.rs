//! Evaluation metrics for binary lead scores: the numbers in a model's
//! manifest and the tables and curves behind the report's plots.
//!
//! Every function takes `scores: &[f64]` (one per row, higher means more
//! likely to convert) and `labels: &[bool]` (`true` = converted). The ranking
//! metrics ([`roc_auc`], [`pr_auc`], [`roc_curve`], [`precision_recall_curve`],
//! [`lift_by_decile`], [`threshold_table`]) accept any finite score; the
//! probability metrics ([`log_loss`], [`brier`],
//! [`expected_calibration_error`], [`calibration_curve`]) require scores in
//! `[0, 1]`. The metrics that scikit-learn weights take
//! `weights: Option<&[f64]>` (finite, `>= 0`; zero-weight rows are dropped as
//! scikit-learn drops them).
//!
//! Results follow scikit-learn 1.9 (`roc_auc_score`,
//! `average_precision_score`, `log_loss`, `brier_score_loss`, `roc_curve`,
//! `precision_recall_curve`, `calibration_curve`), checked against reference
//! values in `tests/fixtures/metrics/cases.json`. Definitions scikit-learn does
//! not have (ECE, lift by decile, the threshold table) are stated on each
//! function and reproduced by the fixture generator.
//!
//! [`BinaryMetrics`] gathers the scalar metrics for a manifest. Invalid input
//! is a [`MetricError`], never a panic or a NaN.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Probabilities are clipped to `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]` before
/// the logarithm in [`log_loss`]: the machine epsilon of `f64`
/// (2.220446049250313e-16), as scikit-learn >= 1.5 clips `float64` input. A
/// confidently wrong prediction (0 for a positive) so costs
/// `-ln(eps) ≈ 36.04`.
pub const LOG_LOSS_EPS: f64 = f64::EPSILON;

/// Bins used by [`BinaryMetrics::compute`] for the expected calibration error.
pub const DEFAULT_CALIBRATION_BINS: usize = 10;

/// Number of groups in [`lift_by_decile`].
pub const LIFT_GROUPS: usize = 10;

/// Why a metric cannot be computed from the given input.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricError {
    /// An input slice's length differs from the number of scores.
    #[error("{what} has {found} entries but there are {expected} scores")]
    LengthMismatch {
        /// Which input: `"labels"` or `"weights"`.
        what: &'static str,
        /// The number of scores.
        expected: usize,
        /// The length of the offending input.
        found: usize,
    },
    /// No rows (or, with weights, none of positive weight).
    #[error("no rows to evaluate")]
    Empty,
    /// The metric needs positives and negatives but every (weighted) row has
    /// the same label.
    #[error("{metric} needs both classes, but every label is {label}")]
    SingleClass {
        /// The metric or procedure that was asked for.
        metric: &'static str,
        /// The only label present.
        label: bool,
    },
    /// A score is NaN or infinite.
    #[error("score at index {index} is not finite ({value})")]
    NonFiniteScore {
        /// Row index of the score.
        index: usize,
        /// The score.
        value: f64,
    },
    /// A score outside `[0, 1]` was given to a metric of probabilities.
    #[error("score at index {index} is {value}, outside [0, 1]; {metric} needs probabilities")]
    ScoreOutOfRange {
        /// The metric that needs probabilities.
        metric: &'static str,
        /// Row index of the score.
        index: usize,
        /// The score.
        value: f64,
    },
    /// A weight is negative, NaN or infinite.
    #[error("weight at index {index} is {value}; weights must be finite and >= 0")]
    InvalidWeight {
        /// Row index of the weight.
        index: usize,
        /// The weight.
        value: f64,
    },
    /// A binned metric was asked for zero bins.
    #[error("the number of bins must be at least 1")]
    ZeroBins,
    /// Too few rows for the metric (lift by decile needs one row per decile).
    #[error("{metric} needs at least {needed} rows, got {rows}")]
    TooFewRows {
        /// The metric that was asked for.
        metric: &'static str,
        /// Rows given.
        rows: usize,
        /// Rows needed.
        needed: usize,
    },
    /// A threshold of [`threshold_table`] is NaN.
    #[error("threshold at index {index} is NaN")]
    NanThreshold {
        /// Index into the thresholds.
        index: usize,
    },
}

/// Checks lengths, emptiness, finite scores and weights (finite, `>= 0`,
/// positive sum). Shared with the calibration module.
pub(crate) fn check_inputs(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<(), MetricError> {
    if labels.len() != scores.len() {
        return Err(MetricError::LengthMismatch {
            what: "labels",
            expected: scores.len(),
            found: labels.len(),
        });
    }
    if let Some(weights) = weights
        && weights.len() != scores.len()
    {
        return Err(MetricError::LengthMismatch {
            what: "weights",
            expected: scores.len(),
            found: weights.len(),
        });
    }
    if scores.is_empty() {
        return Err(MetricError::Empty);
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(MetricError::NonFiniteScore { index, value });
    }
    if let Some(weights) = weights {
        if let Some((index, &value)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(MetricError::InvalidWeight { index, value });
        }
        if weights.iter().all(|&w| w == 0.0) {
            return Err(MetricError::Empty);
        }
    }
    Ok(())
}

/// Checks that every score is a probability in `[0, 1]`.
fn check_probabilities(metric: &'static str, scores: &[f64]) -> Result<(), MetricError> {
    match scores
        .iter()
        .enumerate()
        .find(|(_, s)| !(0.0..=1.0).contains(*s))
    {
        Some((index, &value)) => Err(MetricError::ScoreOutOfRange {
            metric,
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// Row indices ordered by score descending; equal scores keep input order.
/// Scores must be finite (checked before).
fn descending_order(scores: &[f64], keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| keep(i)).collect();
    order.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(Ordering::Equal));
    order
}

/// Weighted false and true positive counts at each distinct score, highest
/// score first: scikit-learn's `confusion_matrix_at_thresholds`.
struct ConfusionAtThresholds {
    false_positives: Vec<f64>,
    true_positives: Vec<f64>,
    thresholds: Vec<f64>,
}

/// Validates the input of a ranking curve (both classes needed) and counts
/// the confusion matrix at every distinct score.
fn confusion_at_thresholds(
    metric: &'static str,
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<ConfusionAtThresholds, MetricError> {
    check_inputs(scores, labels, weights)?;
    let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
    let order = descending_order(scores, |i| weight(i) != 0.0);
    let mut curve = ConfusionAtThresholds {
        false_positives: Vec::new(),
        true_positives: Vec::new(),
        thresholds: Vec::new(),
    };
    let (mut true_positives, mut false_positives) = (0.0, 0.0);
    for (position, &row) in order.iter().enumerate() {
        if labels[row] {
            true_positives += weight(row);
        } else {
            false_positives += weight(row);
        }
        let last_of_its_score = order
            .get(position + 1)
            .is_none_or(|&next| scores[next] != scores[row]);
        if last_of_its_score {
            curve.false_positives.push(false_positives);
            curve.true_positives.push(true_positives);
            curve.thresholds.push(scores[row]);
        }
    }
    if true_positives <= 0.0 || false_positives <= 0.0 {
        return Err(MetricError::SingleClass {
            metric,
            label: true_positives > 0.0,
        });
    }
    Ok(curve)
}

/// The ROC curve as scikit-learn's `roc_curve(drop_intermediate=True)`
/// returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocCurve {
    /// False positive rate at each threshold, from 0 up to 1.
    pub fpr: Vec<f64>,
    /// True positive rate at each threshold, from 0 up to 1.
    pub tpr: Vec<f64>,
    /// Decreasing thresholds; a row is flagged when `score >= threshold`.
    /// The first is `+inf` (nothing flagged), which `serde_json` writes as
    /// `null`.
    pub thresholds: Vec<f64>,
}

/// The ROC curve: one point per distinct score (highest first), with points
/// on a straight segment between their neighbours dropped, and `(0, 0)` at
/// threshold `+inf` in front; scikit-learn's `roc_curve` with its defaults.
///
/// Needs both classes (among rows of positive weight).
pub fn roc_curve(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<RocCurve, MetricError> {
    let curve = confusion_at_thresholds("the ROC curve", scores, labels, weights)?;
    let (fps, tps) = (&curve.false_positives, &curve.true_positives);
    let len = fps.len();
    // Keep a point where the curve bends: second differences, computed as
    // numpy.diff(x, 2) does, not both zero.
    let bends = |x: &[f64], i: usize| (x[i + 1] - x[i]) - (x[i] - x[i - 1]) != 0.0;
    let kept: Vec<usize> = (0..len)
        .filter(|&i| len <= 2 || i == 0 || i == len - 1 || bends(fps, i) || bends(tps, i))
        .collect();
    let total_fp = fps[len - 1];
    let total_tp = tps[len - 1];
    let mut roc = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    for &i in &kept {
        roc.fpr.push(fps[i] / total_fp);
        roc.tpr.push(tps[i] / total_tp);
        roc.thresholds.push(curve.thresholds[i]);
    }
    Ok(roc)
}

/// Area under the ROC curve: the trapezoid rule over [`roc_curve`], as
/// scikit-learn's `roc_auc_score`. Tied scores form one diagonal step, which
/// is the Mann-Whitney statistic with ties counted one half.
///
/// Needs both classes (among rows of positive weight).
pub fn roc_auc(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<f64, MetricError> {
    let curve = roc_curve(scores, labels, weights)?;
    Ok(trapezoid(&curve.fpr, &curve.tpr))
}

/// `sum_i (x[i+1] - x[i]) * (y[i+1] + y[i]) / 2`, as `scipy.integrate.trapezoid`.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
}

/// The precision-recall curve as scikit-learn's `precision_recall_curve`
/// returns it (`drop_intermediate=False`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecallCurve {
    /// Precision at each threshold (lowest threshold first), then a final 1.
    /// Precision is 0 where nothing is flagged.
    pub precision: Vec<f64>,
    /// Recall at each threshold (lowest threshold first, so decreasing), then
    /// a final 0.
    pub recall: Vec<f64>,
    /// The distinct scores, increasing; one fewer than the points.
    pub thresholds: Vec<f64>,
}

/// The precision-recall curve: one point per distinct score, lowest first,
/// and the point (recall 0, precision 1) appended; scikit-learn's
/// `precision_recall_curve` with its defaults.
///
/// Needs both classes (among rows of positive weight).
pub fn precision_recall_curve(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<PrecisionRecallCurve, MetricError> {
    let curve = confusion_at_thresholds("the precision-recall curve", scores, labels, weights)?;
    let (fps, tps) = (&curve.false_positives, &curve.true_positives);
    let total_tp = tps[tps.len() - 1];
    let mut precision: Vec<f64> = fps
        .iter()
        .zip(tps)
        .map(|(&fp, &tp)| {
            let flagged = tp + fp;
            if flagged != 0.0 { tp / flagged } else { 0.0 }
        })
        .rev()
        .collect();
    precision.push(1.0);
    let mut recall: Vec<f64> = tps.iter().map(|&tp| tp / total_tp).rev().collect();
    recall.push(0.0);
    let thresholds = curve.thresholds.iter().rev().copied().collect();
    Ok(PrecisionRecallCurve {
        precision,
        recall,
        thresholds,
    })
}

/// Area under the precision-recall curve as average precision, exactly
/// scikit-learn's `average_precision_score`:
/// `AP = sum_k (R_k - R_{k-1}) * P_k` over the distinct scores from the
/// highest down, with `R_0 = 0` (a step function, not the trapezoid rule,
/// which would be optimistic).
///
/// Needs both classes (among rows of positive weight).
#[doc(alias = "average_precision")]
pub fn pr_auc(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<f64, MetricError> {
    let curve = precision_recall_curve(scores, labels, weights)?;
    // -sum(diff(recall) * precision[:-1]) on the reversed arrays, as sklearn.
    let sum: f64 = curve
        .recall
        .windows(2)
        .zip(&curve.precision)
        .map(|(recall, &precision)| (recall[1] - recall[0]) * precision)
        .sum();
    Ok((-sum).max(0.0))
}

/// Weighted mean of `f(score, label)` over the rows: `sum(w f) / sum(w)`,
/// or the plain mean without weights.
fn weighted_mean(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
    per_row: impl Fn(f64, bool) -> f64,
) -> f64 {
    let values = scores.iter().zip(labels).map(|(&s, &y)| per_row(s, y));
    match weights {
        None => values.sum::<f64>() / scores.len() as f64,
        Some(weights) => {
            let total: f64 = values.zip(weights).map(|(v, &w)| v * w).sum();
            total / weights.iter().sum::<f64>()
        }
    }
}

/// Mean negative log-likelihood (natural log) of the labels:
/// `-(y ln p + (1 - y) ln(1 - p))`, where the probability given to the
/// observed label (`p` or `1 - p`) is clipped to
/// `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]` as in scikit-learn's `log_loss`.
/// Defined for a single class too.
pub fn log_loss(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
) -> Result<f64, MetricError> {
    check_inputs(scores, labels, weights)?;
    check_probabilities("log loss", scores)?;
    Ok(weighted_mean(scores, labels, weights, |p, y| {
        let given_to_label = if y { p } else { 1.0 - p };
        -given_to_label.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS).ln()
    }))
}

/// Brier score: the mean of `(p - y)^2`, as scikit-learn's
/// `brier_score_loss` for binary labels.
pub fn brier(scores: &[f64], labels: &[bool], weights: Option<&[f64]>) -> Result<f64, MetricError> {
    check_inputs(scores, labels, weights)?;
    check_probabilities("the Brier score", scores)?;
    Ok(weighted_mean(scores, labels, weights, |p, y| {
        let target = if y { 1.0 } else { 0.0 };
        (target - p).powi(2)
    }))
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge; the bin holds scores `> lower` (the first bin also 0).
    pub lower: f64,
    /// Upper edge; the bin holds scores `<= upper`.
    pub upper: f64,
    /// Rows whose score falls in the bin.
    pub count: usize,
    /// Mean score of those rows; `None` for an empty bin.
    pub mean_predicted: Option<f64>,
    /// Share of those rows that are positive; `None` for an empty bin.
    pub observed_rate: Option<f64>,
}

/// Bin edges `k * (1 / n_bins)` for `k = 0..=n_bins`, the last exactly 1:
/// `numpy.linspace(0, 1, n_bins + 1)`.
fn bin_edges(n_bins: usize) -> Vec<f64> {
    let step = 1.0 / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|k| k as f64 * step).collect();
    edges[n_bins] = 1.0;
    edges
}

/// The reliability diagram: `n_bins` equal-width bins on `[0, 1]`.
///
/// With edges `e_k = k * (1 / n_bins)` (computed so, in `f64`; `e_n = 1`),
/// bin `k` holds the scores with `e_k < s <= e_{k+1}`, and bin 0 also holds
/// `s = 0`; the bin of `s` is the number of interior edges `e_1..e_{n-1}`
/// strictly below `s`. That is scikit-learn's
/// `calibration_curve(strategy="uniform")` binning (which returns the
/// non-empty bins only); here every bin is returned, empty ones with
/// `count = 0` and no means. Scores must be probabilities.
pub fn calibration_curve(
    scores: &[f64],
    labels: &[bool],
    n_bins: usize,
) -> Result<Vec<CalibrationBin>, MetricError> {
    check_inputs(scores, labels, None)?;
    check_probabilities("the calibration curve", scores)?;
    if n_bins == 0 {
        return Err(MetricError::ZeroBins);
    }
    let edges = bin_edges(n_bins);
    let interior = &edges[1..n_bins];
    let mut counts = vec![0_usize; n_bins];
    let mut score_sums = vec![0.0_f64; n_bins];
    let mut positive_counts = vec![0_usize; n_bins];
    for (&score, &label) in scores.iter().zip(labels) {
        let bin = interior.partition_point(|&edge| edge < score);
        counts[bin] += 1;
        score_sums[bin] += score;
        positive_counts[bin] += usize::from(label);
    }
    Ok((0..n_bins)
        .map(|k| {
            let count = counts[k];
            let mean = |sum: f64| (count > 0).then(|| sum / count as f64);
            CalibrationBin {
                lower: edges[k],
                upper: edges[k + 1],
                count,
                mean_predicted: mean(score_sums[k]),
                observed_rate: mean(positive_counts[k] as f64),
            }
        })
        .collect())
}

/// Expected calibration error over `n_bins` equal-width bins:
///
/// `ECE = sum_k (n_k / N) * |mean score in bin k - positive rate in bin k|`
///
/// over the non-empty bins of [`calibration_curve`] (same bins, same edge
/// rule), `n_k` the rows in bin `k` and `N` all rows. 0 is perfect; the
/// value depends on `n_bins`, so compare models with the same count.
pub fn expected_calibration_error(
    scores: &[f64],
    labels: &[bool],
    n_bins: usize,
) -> Result<f64, MetricError> {
    let bins = calibration_curve(scores, labels, n_bins)?;
    let rows = scores.len() as f64;
    Ok(bins
        .iter()
        .filter_map(|bin| {
            let gap = (bin.mean_predicted? - bin.observed_rate?).abs();
            Some((bin.count as f64 / rows) * gap)
        })
        .sum())
}

/// One decile of [`lift_by_decile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecileLift {
    /// 1 = the highest scores.
    pub decile: usize,
    /// Rows in the decile.
    pub rows: usize,
    /// Positives in the decile.
    pub positives: usize,
    /// Lowest score in the decile.
    pub min_score: f64,
    /// Highest score in the decile.
    pub max_score: f64,
    /// `positives / rows`.
    pub rate: f64,
    /// `rate / overall positive rate`.
    pub lift: f64,
    /// Share of all positives found in deciles `1..=decile`.
    pub cumulative_capture: f64,
    /// Positive rate of deciles `1..=decile` over the overall rate.
    pub cumulative_lift: f64,
}

/// Lift table over ten groups of rows by score, highest first.
///
/// Rows are ordered by score descending; tied scores keep their input order
/// (a stable sort), so a run of ties may be split between two deciles. With
/// `N = 10 q + r` rows, deciles `1..=r` hold `q + 1` rows and the others `q`.
/// Needs at least 10 rows and one positive.
pub fn lift_by_decile(scores: &[f64], labels: &[bool]) -> Result<Vec<DecileLift>, MetricError> {
    check_inputs(scores, labels, None)?;
    let rows = scores.len();
    if rows < LIFT_GROUPS {
        return Err(MetricError::TooFewRows {
            metric: "lift by decile",
            rows,
            needed: LIFT_GROUPS,
        });
    }
    let total_positives = labels.iter().filter(|&&y| y).count();
    if total_positives == 0 {
        return Err(MetricError::SingleClass {
            metric: "lift by decile",
            label: false,
        });
    }
    let overall_rate = total_positives as f64 / rows as f64;
    let order = descending_order(scores, |_| true);
    let (base, remainder) = (rows / LIFT_GROUPS, rows % LIFT_GROUPS);
    let mut deciles = Vec::with_capacity(LIFT_GROUPS);
    let (mut start, mut cumulative_rows, mut cumulative_positives) = (0, 0, 0);
    for group in 0..LIFT_GROUPS {
        let size = base + usize::from(group < remainder);
        let members = &order[start..start + size];
        let positives = members.iter().filter(|&&i| labels[i]).count();
        // Descending order: the first member has the highest score.
        let max_score = scores[members[0]];
        let min_score = scores[members[size - 1]];
        cumulative_rows += size;
        cumulative_positives += positives;
        let rate = positives as f64 / size as f64;
        let cumulative_rate = cumulative_positives as f64 / cumulative_rows as f64;
        deciles.push(DecileLift {
            decile: group + 1,
            rows: size,
            positives,
            min_score,
            max_score,
            rate,
            lift: rate / overall_rate,
            cumulative_capture: cumulative_positives as f64 / total_positives as f64,
            cumulative_lift: cumulative_rate / overall_rate,
        });
        start += size;
    }
    Ok(deciles)
}

/// One row of [`threshold_table`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRow {
    /// Rows with `score >= threshold` are flagged.
    pub threshold: f64,
    /// Rows flagged.
    pub flagged: usize,
    /// Positives among the flagged rows.
    pub true_positives: usize,
    /// `true_positives / flagged`; 0 when nothing is flagged.
    pub precision: f64,
    /// `true_positives / positives`; 0 when there are no positives.
    pub recall: f64,
    /// `2 tp / (flagged + positives)` (the harmonic mean of precision and
    /// recall); 0 when both are 0.
    pub f1: f64,
    /// `flagged / rows`.
    pub flagged_share: f64,
}

/// For each candidate threshold `t` (in the order given; `±inf` allowed, NaN
/// refused), what flagging the rows with `score >= t` would give. The
/// zero-division conventions are scikit-learn's `zero_division=0`.
pub fn threshold_table(
    scores: &[f64],
    labels: &[bool],
    thresholds: &[f64],
) -> Result<Vec<ThresholdRow>, MetricError> {
    check_inputs(scores, labels, None)?;
    if let Some(index) = thresholds.iter().position(|t| t.is_nan()) {
        return Err(MetricError::NanThreshold { index });
    }
    let order = descending_order(scores, |_| true);
    let sorted_scores: Vec<f64> = order.iter().map(|&i| scores[i]).collect();
    // positives_before[k] = positives among the k highest scores.
    let mut positives_before = Vec::with_capacity(order.len() + 1);
    positives_before.push(0_usize);
    for &i in &order {
        let so_far = positives_before[positives_before.len() - 1];
        positives_before.push(so_far + usize::from(labels[i]));
    }
    let positives = positives_before[order.len()];
    let rows = scores.len();
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    Ok(thresholds
        .iter()
        .map(|&threshold| {
            let flagged = sorted_scores.partition_point(|&s| s >= threshold);
            let true_positives = positives_before[flagged];
            ThresholdRow {
                threshold,
                flagged,
                true_positives,
                precision: ratio(true_positives, flagged),
                recall: ratio(true_positives, positives),
                f1: ratio(2 * true_positives, flagged + positives),
                flagged_share: ratio(flagged, rows),
            }
        })
        .collect())
}

/// The scalar metrics of a scored, labelled set, as stored in a model
/// manifest (unweighted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Positive rows.
    pub positives: usize,
    /// `positives / rows`.
    pub base_rate: f64,
    /// [`roc_auc`].
    pub roc_auc: f64,
    /// [`pr_auc`] (average precision).
    pub pr_auc: f64,
    /// [`log_loss`].
    pub log_loss: f64,
    /// [`brier`].
    pub brier: f64,
    /// [`expected_calibration_error`] with [`ece_bins`](Self::ece_bins) bins.
    pub ece: f64,
    /// Bins used for [`ece`](Self::ece).
    pub ece_bins: usize,
    /// Lift of the first decile of [`lift_by_decile`]; `None` with fewer than
    /// 10 rows.
    pub top_decile_lift: Option<f64>,
}

impl BinaryMetrics {
    /// All scalar metrics, ECE over [`DEFAULT_CALIBRATION_BINS`] bins. Scores
    /// must be probabilities and both classes present.
    pub fn compute(scores: &[f64], labels: &[bool]) -> Result<Self, MetricError> {
        Self::compute_with_bins(scores, labels, DEFAULT_CALIBRATION_BINS)
    }

    /// All scalar metrics, ECE over `ece_bins` bins.
    pub fn compute_with_bins(
        scores: &[f64],
        labels: &[bool],
        ece_bins: usize,
    ) -> Result<Self, MetricError> {
        check_inputs(scores, labels, None)?;
        check_probabilities("the metrics summary", scores)?;
        let rows = scores.len();
        let positives = labels.iter().filter(|&&y| y).count();
        let top_decile_lift = if rows >= LIFT_GROUPS {
            lift_by_decile(scores, labels)?.first().map(|d| d.lift)
        } else {
            None
        };
        Ok(Self {
            rows,
            positives,
            base_rate: positives as f64 / rows as f64,
            roc_auc: roc_auc(scores, labels, None)?,
            pr_auc: pr_auc(scores, labels, None)?,
            log_loss: log_loss(scores, labels, None)?,
            brier: brier(scores, labels, None)?,
            ece: expected_calibration_error(scores, labels, ece_bins)?,
            ece_bins,
            top_decile_lift,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: f64 = 1e-15;

    #[test]
    fn roc_auc_counts_ties_as_half() {
        // Pairs (pos, neg): (0.8, 0.5) win, (0.8, 0.2) win, (0.5, 0.5) tie,
        // (0.5, 0.2) win: (3 + 0.5) / 4.
        let auc = roc_auc(&[0.8, 0.5, 0.5, 0.2], &[true, true, false, false], None);
        assert!((auc.expect("valid input") - 0.875).abs() < EXACT);
    }

    #[test]
    fn perfect_and_inverted_rankings() {
        let labels = [false, false, true, true];
        let auc = roc_auc(&[0.1, 0.2, 0.3, 0.4], &labels, None).expect("valid");
        assert_eq!(auc, 1.0);
        let auc = roc_auc(&[0.4, 0.3, 0.2, 0.1], &labels, None).expect("valid");
        assert_eq!(auc, 0.0);
        let ap = pr_auc(&[0.1, 0.2, 0.3, 0.4], &labels, None).expect("valid");
        assert_eq!(ap, 1.0);
    }

    #[test]
    fn average_precision_is_a_step_sum() {
        // Highest first: pos (P=1, R=.5), neg, pos (P=2/3, R=1).
        let ap = pr_auc(&[0.9, 0.8, 0.7], &[true, false, true], None).expect("valid");
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < EXACT);
    }

    #[test]
    fn single_class_is_an_error_for_the_ranking_metrics() {
        let scores = [0.1, 0.9];
        let err = roc_auc(&scores, &[true, true], None).unwrap_err();
        assert!(matches!(err, MetricError::SingleClass { label: true, .. }));
        let err = pr_auc(&scores, &[false, false], None).unwrap_err();
        assert!(matches!(err, MetricError::SingleClass { label: false, .. }));
        // With weights, a class whose rows all weigh zero is absent.
        let err = roc_auc(&scores, &[true, false], Some(&[1.0, 0.0])).unwrap_err();
        assert!(matches!(err, MetricError::SingleClass { label: true, .. }));
        // The probability metrics are defined for one class.
        assert!(log_loss(&scores, &[true, true], None).is_ok());
        assert!(brier(&scores, &[true, true], None).is_ok());
    }

    #[test]
    fn input_errors_name_the_problem() {
        let err = roc_auc(&[0.1, 0.2], &[true], None).unwrap_err();
        assert_eq!(
            err,
            MetricError::LengthMismatch {
                what: "labels",
                expected: 2,
                found: 1
            }
        );
        let err = brier(&[0.1, 0.2], &[true, false], Some(&[1.0])).unwrap_err();
        assert!(matches!(
            err,
            MetricError::LengthMismatch {
                what: "weights",
                ..
            }
        ));
        assert_eq!(log_loss(&[], &[], None).unwrap_err(), MetricError::Empty);
        let err = roc_auc(&[0.1, f64::NAN, 0.3], &[true, false, true], None).unwrap_err();
        assert!(matches!(err, MetricError::NonFiniteScore { index: 1, .. }));
        let err = roc_auc(&[0.1, f64::INFINITY], &[true, false], None).unwrap_err();
        assert!(matches!(err, MetricError::NonFiniteScore { index: 1, .. }));
        let err = log_loss(&[0.1, 1.5], &[true, false], None).unwrap_err();
        assert!(matches!(
            err,
            MetricError::ScoreOutOfRange { index: 1, value, .. } if value == 1.5
        ));
        let err = brier(&[-0.1, 0.5], &[true, false], None).unwrap_err();
        assert!(matches!(err, MetricError::ScoreOutOfRange { index: 0, .. }));
        let err = log_loss(&[0.1, 0.5], &[true, false], Some(&[1.0, -1.0])).unwrap_err();
        assert!(matches!(err, MetricError::InvalidWeight { index: 1, .. }));
        let err = log_loss(&[0.1, 0.5], &[true, false], Some(&[0.0, 0.0])).unwrap_err();
        assert_eq!(err, MetricError::Empty);
        let err = expected_calibration_error(&[0.1], &[true], 0).unwrap_err();
        assert_eq!(err, MetricError::ZeroBins);
        let err = threshold_table(&[0.1], &[true], &[0.5, f64::NAN]).unwrap_err();
        assert_eq!(err, MetricError::NanThreshold { index: 1 });
        // Ranking metrics accept scores outside [0, 1] (margins, logits).
        assert!(roc_auc(&[-3.0, 7.0], &[false, true], None).is_ok());
    }

    #[test]
    fn errors_display_their_details() {
        let err = MetricError::NonFiniteScore {
            index: 7,
            value: f64::NAN,
        };
        assert_eq!(err.to_string(), "score at index 7 is not finite (NaN)");
    }

    #[test]
    fn log_loss_clips_certain_mistakes() {
        let loss = log_loss(&[0.0, 1.0], &[true, false], None).expect("valid");
        assert!((loss - -LOG_LOSS_EPS.ln()).abs() < 1e-12);
        assert!((loss - 36.043_653_389_117_15).abs() < 1e-9);
        let loss = log_loss(&[1.0, 0.0], &[true, false], None).expect("valid");
        assert!(loss > 0.0 && loss < 1e-15);
    }

    #[test]
    fn weights_scale_rows() {
        // Weight 2 on a row is the same as the row twice.
        let weighted = brier(&[0.2, 0.6], &[true, false], Some(&[2.0, 1.0])).expect("valid");
        let doubled = brier(&[0.2, 0.2, 0.6], &[true, true, false], None).expect("valid");
        assert!((weighted - doubled).abs() < EXACT);
        let weighted = roc_auc(
            &[0.2, 0.6, 0.4],
            &[true, false, true],
            Some(&[2.0, 1.0, 1.0]),
        )
        .expect("valid");
        let doubled =
            roc_auc(&[0.2, 0.2, 0.6, 0.4], &[true, true, false, true], None).expect("valid");
        assert!((weighted - doubled).abs() < EXACT);
    }

    #[test]
    fn calibration_bins_are_closed_on_the_right() {
        let bins = calibration_curve(&[0.0, 0.5, 0.50001, 1.0], &[false; 4], 2).expect("valid");
        assert_eq!(bins.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(bins[0].mean_predicted, Some(0.25));
        assert_eq!(bins[1].upper, 1.0);
        let bins = calibration_curve(&[0.05], &[true], 4).expect("valid");
        assert_eq!(bins[1].count, 0);
        assert_eq!(bins[1].mean_predicted, None);
        assert_eq!(bins[0].observed_rate, Some(1.0));
    }

    #[test]
    fn ece_weighs_bins_by_their_share() {
        // Bin [0, .5]: scores .2, .4: mean .3, rate .5, gap .2, share .5.
        // Bin (.5, 1]: scores .9, 1: mean .95, rate .5, gap .45, share .5.
        let scores = [0.2, 0.4, 0.9, 1.0];
        let labels = [true, false, false, true];
        let ece = expected_calibration_error(&scores, &labels, 2).expect("valid");
        assert!((ece - (0.5 * 0.2 + 0.5 * 0.45)).abs() < 1e-12);
    }

    #[test]
    fn lift_splits_remainders_to_the_top_deciles() {
        let scores: Vec<f64> = (0..23).map(|i| f64::from(i) / 23.0).collect();
        let labels: Vec<bool> = (0..23).map(|i| i >= 20).collect();
        let deciles = lift_by_decile(&scores, &labels).expect("valid");
        let sizes: Vec<usize> = deciles.iter().map(|d| d.rows).collect();
        assert_eq!(sizes, [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(deciles[0].positives, 3);
        assert!((deciles[0].lift - 23.0 / 3.0).abs() < 1e-12);
        assert_eq!(deciles[0].cumulative_capture, 1.0);
        assert!((deciles[9].cumulative_lift - 1.0).abs() < 1e-12);
        let err = lift_by_decile(&scores[..9], &labels[..9]).unwrap_err();
        assert!(matches!(err, MetricError::TooFewRows { rows: 9, .. }));
        let err = lift_by_decile(&scores, &[false; 23]).unwrap_err();
        assert!(matches!(err, MetricError::SingleClass { .. }));
    }

    #[test]
    fn lift_keeps_tied_rows_in_input_order() {
        // All scores tie: deciles are the rows in input order.
        let scores = [0.5; 10];
        let labels = [
            true, false, false, false, false, false, false, false, false, true,
        ];
        let deciles = lift_by_decile(&scores, &labels).expect("valid");
        assert_eq!(deciles[0].positives, 1);
        assert_eq!(deciles[1].positives, 0);
        assert_eq!(deciles[9].positives, 1);
    }

    #[test]
    fn threshold_table_flags_scores_at_or_above() {
        let scores = [0.9, 0.5, 0.5, 0.1];
        let labels = [true, false, true, false];
        let table = threshold_table(&scores, &labels, &[0.5, f64::INFINITY, 0.0]).expect("valid");
        assert_eq!(table[0].flagged, 3);
        assert_eq!(table[0].true_positives, 2);
        assert!((table[0].precision - 2.0 / 3.0).abs() < EXACT);
        assert_eq!(table[0].recall, 1.0);
        assert!((table[0].f1 - 0.8).abs() < EXACT);
        assert_eq!(table[0].flagged_share, 0.75);
        assert_eq!(
            (table[1].flagged, table[1].precision, table[1].f1),
            (0, 0.0, 0.0)
        );
        assert_eq!(table[2].flagged, 4);
    }

    #[test]
    fn roc_curve_drops_collinear_points_and_starts_at_infinity() {
        let curve =
            roc_curve(&[0.4, 0.3, 0.2, 0.1], &[true, true, false, false], None).expect("valid");
        // Points (fp, tp) by threshold: .4 (0, 1), .3 (0, 2), .2 (1, 2),
        // .1 (2, 2); (1, 2) lies on the segment between its neighbours.
        assert_eq!(curve.thresholds, [f64::INFINITY, 0.4, 0.3, 0.1]);
        assert_eq!(curve.tpr, [0.0, 0.5, 1.0, 1.0]);
        assert_eq!(curve.fpr, [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn summary_round_trips_through_json() {
        let scores: Vec<f64> = (0..20).map(|i| f64::from(i) / 20.0).collect();
        let labels: Vec<bool> = (0..20).map(|i| i % 3 == 0).collect();
        let summary = BinaryMetrics::compute(&scores, &labels).expect("valid");
        assert_eq!(summary.rows, 20);
        assert_eq!(summary.positives, 7);
        assert!(summary.top_decile_lift.is_some());
        let json = serde_json::to_string(&summary).expect("serialise");
        let back: BinaryMetrics = serde_json::from_str(&json).expect("deserialise");
        // serde_json's default float parser may be off by an ulp (its
        // `float_roundtrip` feature makes it exact).
        assert_eq!((back.rows, back.positives, back.ece_bins), (20, 7, 10));
        assert!((back.roc_auc - summary.roc_auc).abs() < 1e-15);
        assert!((back.log_loss - summary.log_loss).abs() < 1e-15);
        let small = BinaryMetrics::compute(&[0.2, 0.7], &[false, true]).expect("valid");
        assert_eq!(small.top_decile_lift, None);
    }
}
