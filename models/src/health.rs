//! A model's health on its held-out rows, as sales ops and data scientists read it: the ROC
//! and gains curves, calibration (predicted against observed), conversion by score decile,
//! the score histogram, and conversion by a profile field. The console's model health pane
//! draws these; every figure comes from the bundle's `holdout.csv` (calibrated
//! probabilities of rows the model never trained on).

use std::collections::HashMap;

use serde::Serialize;

use crate::bundle::Holdout;
use crate::capacity::HeldOutScores;

/// Most points of the ROC curve answered (the curve is thinned evenly past that).
pub const ROC_POINTS: usize = 201;
/// Points of the gains curve: every percent of the leads.
pub const GAINS_POINTS: usize = 101;
/// Bins of equal row count in the calibration table.
pub const CALIBRATION_BINS: usize = 10;
/// Equal-width bins of the score histogram.
pub const HISTOGRAM_BINS: usize = 40;

/// One point of the ROC curve: the rates of flagging every row from some score up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    pub fpr: f64,
    pub tpr: f64,
}

/// One point of the gains curve: contacting the top `share_of_leads` finds
/// `share_of_conversions` of the conversions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GainsPoint {
    pub share_of_leads: f64,
    pub share_of_conversions: f64,
}

/// Rows whose probability lies in `[from, to]`: what the model predicted for them on
/// average, and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub from: f64,
    pub to: f64,
    pub rows: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// A tenth of the rows by score, `decile` 1 the highest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decile {
    pub decile: usize,
    pub from: f64,
    pub to: f64,
    pub rows: usize,
    pub conversions: usize,
    pub conversion_rate: f64,
    /// `conversion_rate` over the rate of all rows.
    pub lift: f64,
}

/// Rows with a probability in `[from, to)` (the last bin includes `to`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistogramBin {
    pub from: f64,
    pub to: f64,
    pub rows: usize,
    pub conversions: usize,
}

/// The curves and tables of [`curves`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curves {
    /// `None` when the rows hold one class only.
    pub roc_auc: Option<f64>,
    pub roc: Vec<RocPoint>,
    pub gains: Vec<GainsPoint>,
    pub calibration: Vec<CalibrationBin>,
    pub deciles: Vec<Decile>,
    pub histogram: Vec<HistogramBin>,
}

/// The held-out curves of `held` (rows sorted by probability, highest first).
pub fn curves(held: &HeldOutScores) -> Curves {
    let rows = held.rows();
    let (roc_auc, roc) = roc(rows);
    Curves {
        roc_auc,
        roc,
        gains: gains(rows),
        calibration: calibration(rows),
        deciles: deciles(rows),
        histogram: histogram(rows),
    }
}

/// The ROC curve through every distinct score (tied rows move together, so the area is the
/// Mann-Whitney statistic with ties counted half), thinned to [`ROC_POINTS`], and its area.
fn roc(rows: &[(f64, bool)]) -> (Option<f64>, Vec<RocPoint>) {
    let positives = rows.iter().filter(|r| r.1).count();
    let negatives = rows.len() - positives;
    if positives == 0 || negatives == 0 {
        return (None, Vec::new());
    }
    let (p, n) = (positives as f64, negatives as f64);
    let mut points = vec![RocPoint { fpr: 0.0, tpr: 0.0 }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut area = 0.0;
    let mut i = 0;
    while i < rows.len() {
        let score = rows[i].0;
        let (tp0, fp0) = (tp, fp);
        while i < rows.len() && rows[i].0 == score {
            if rows[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        // Trapezoid between the two points, in counts.
        area += (fp - fp0) as f64 * (tp + tp0) as f64 / 2.0;
        points.push(RocPoint {
            fpr: fp as f64 / n,
            tpr: tp as f64 / p,
        });
    }
    (Some(area / (p * n)), thin(points, ROC_POINTS))
}

/// At most `most` of `points`, evenly spread, the first and last kept.
fn thin<T: Copy>(points: Vec<T>, most: usize) -> Vec<T> {
    if points.len() <= most {
        return points;
    }
    let last = points.len() - 1;
    (0..most)
        .map(|k| points[(k * last + (most - 1) / 2) / (most - 1)])
        .collect()
}

fn gains(rows: &[(f64, bool)]) -> Vec<GainsPoint> {
    let positives = rows.iter().filter(|r| r.1).count();
    let mut found = Vec::with_capacity(rows.len() + 1);
    found.push(0usize);
    for r in rows {
        found.push(found[found.len() - 1] + usize::from(r.1));
    }
    (0..GAINS_POINTS)
        .map(|k| {
            let share = k as f64 / (GAINS_POINTS - 1) as f64;
            let taken = (share * rows.len() as f64).round() as usize;
            GainsPoint {
                share_of_leads: share,
                share_of_conversions: if positives == 0 {
                    0.0
                } else {
                    found[taken] as f64 / positives as f64
                },
            }
        })
        .collect()
}

/// `rows` cut into `parts` runs of equal length (the first ones one longer when it does not
/// divide), in order; fewer when there are fewer rows.
fn equal_parts(rows: &[(f64, bool)], parts: usize) -> impl Iterator<Item = &[(f64, bool)]> {
    let n = rows.len();
    let parts = parts.min(n).max(1);
    (0..parts).map(move |k| &rows[k * n / parts..(k + 1) * n / parts])
}

fn calibration(rows: &[(f64, bool)]) -> Vec<CalibrationBin> {
    let mut bins: Vec<CalibrationBin> = equal_parts(rows, CALIBRATION_BINS)
        .filter(|part| !part.is_empty())
        .map(|part| CalibrationBin {
            // Highest first in `rows`.
            from: part[part.len() - 1].0,
            to: part[0].0,
            rows: part.len(),
            mean_predicted: part.iter().map(|r| r.0).sum::<f64>() / part.len() as f64,
            observed_rate: part.iter().filter(|r| r.1).count() as f64 / part.len() as f64,
        })
        .collect();
    bins.reverse();
    bins
}

fn deciles(rows: &[(f64, bool)]) -> Vec<Decile> {
    let base = rows.iter().filter(|r| r.1).count() as f64 / rows.len().max(1) as f64;
    equal_parts(rows, 10)
        .filter(|part| !part.is_empty())
        .enumerate()
        .map(|(k, part)| {
            let conversions = part.iter().filter(|r| r.1).count();
            let rate = conversions as f64 / part.len() as f64;
            Decile {
                decile: k + 1,
                from: part[part.len() - 1].0,
                to: part[0].0,
                rows: part.len(),
                conversions,
                conversion_rate: rate,
                lift: if base > 0.0 { rate / base } else { 0.0 },
            }
        })
        .collect()
}

/// [`HISTOGRAM_BINS`] bins from 0 to the highest probability rounded up to 0.05.
fn histogram(rows: &[(f64, bool)]) -> Vec<HistogramBin> {
    let top = rows.first().map_or(0.0, |r| r.0);
    let end = ((top / 0.05).ceil() * 0.05).clamp(0.05, 1.0);
    let width = end / HISTOGRAM_BINS as f64;
    let mut bins: Vec<HistogramBin> = (0..HISTOGRAM_BINS)
        .map(|k| HistogramBin {
            from: k as f64 * width,
            to: (k + 1) as f64 * width,
            rows: 0,
            conversions: 0,
        })
        .collect();
    for &(p, converted) in rows {
        let k = ((p / width) as usize).min(HISTOGRAM_BINS - 1);
        bins[k].rows += 1;
        bins[k].conversions += usize::from(converted);
    }
    bins
}

/// Held-out conversion for one level of a profile field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelConversion {
    /// The level as the data has it; empty for missing.
    pub level: String,
    pub rows: usize,
    pub conversions: usize,
    pub conversion_rate: f64,
    /// The mean calibrated probability of its rows: close to `conversion_rate` when the
    /// model is calibrated on this level too.
    pub mean_probability: f64,
}

/// Held-out conversion by the levels of each profile field `holdout.csv` carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ByField {
    fields: Vec<(String, Vec<LevelConversion>)>,
}

impl ByField {
    /// Counts every field of `holdout` (levels by rows, most first, then by name).
    pub fn new(holdout: &Holdout) -> Self {
        let fields = holdout
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let mut levels: HashMap<&str, (usize, usize, f64)> = HashMap::new();
                for row in &holdout.rows {
                    let level = row.profile.get(i).map_or("", String::as_str);
                    let entry = levels.entry(level).or_default();
                    entry.0 += 1;
                    entry.1 += usize::from(row.label == 1);
                    entry.2 += row.score;
                }
                let mut levels: Vec<LevelConversion> = levels
                    .into_iter()
                    .map(|(level, (rows, conversions, sum))| LevelConversion {
                        level: level.to_owned(),
                        rows,
                        conversions,
                        conversion_rate: conversions as f64 / rows as f64,
                        mean_probability: sum / rows as f64,
                    })
                    .collect();
                levels.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.level.cmp(&b.level)));
                (field.clone(), levels)
            })
            .collect();
        ByField { fields }
    }

    /// The fields, in `holdout.csv`'s order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(f, _)| f.as_str())
    }

    /// The levels of `field`, or `None` when the rows do not carry it.
    pub fn levels(&self, field: &str) -> Option<&[LevelConversion]> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, levels)| levels.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::HoldoutRow;

    fn held(rows: &[(f64, bool)]) -> HeldOutScores {
        let scores: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.1).collect();
        HeldOutScores::new(&scores, &labels, None).expect("rows")
    }

    /// ROC AUC by its definition: the share of (positive, negative) pairs ranked right,
    /// ties half.
    fn pairwise_auc(rows: &[(f64, bool)]) -> f64 {
        let (mut right, mut pairs) = (0.0, 0.0);
        for a in rows.iter().filter(|r| r.1) {
            for b in rows.iter().filter(|r| !r.1) {
                pairs += 1.0;
                right += if a.0 > b.0 {
                    1.0
                } else if a.0 == b.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        right / pairs
    }

    fn sample(n: usize) -> Vec<(f64, bool)> {
        // A deterministic mix with ties: probability k/20, converted on a pattern that
        // rises with it.
        (0..n)
            .map(|i| {
                let p = (i % 20) as f64 / 20.0;
                (p, (i * 7919) % 20 < i % 20)
            })
            .collect()
    }

    #[test]
    fn roc_area_is_the_pairwise_ranking_with_ties_half() {
        let rows = sample(400);
        let c = curves(&held(&rows));
        let auc = c.roc_auc.expect("both classes");
        assert!((auc - pairwise_auc(&rows)).abs() < 1e-12, "{auc}");
        assert_eq!(c.roc.first(), Some(&RocPoint { fpr: 0.0, tpr: 0.0 }));
        assert_eq!(c.roc.last(), Some(&RocPoint { fpr: 1.0, tpr: 1.0 }));
        assert!(
            c.roc
                .windows(2)
                .all(|w| w[0].fpr <= w[1].fpr && w[0].tpr <= w[1].tpr)
        );
    }

    #[test]
    fn the_roc_curve_is_thinned_to_its_limit_with_both_ends() {
        // Every row a distinct score: n + 1 points before thinning.
        let rows: Vec<(f64, bool)> = (0..5000).map(|i| (i as f64 / 5000.0, i % 3 == 0)).collect();
        let c = curves(&held(&rows));
        assert_eq!(c.roc.len(), ROC_POINTS);
        assert_eq!(c.roc[0], RocPoint { fpr: 0.0, tpr: 0.0 });
        assert_eq!(c.roc[ROC_POINTS - 1], RocPoint { fpr: 1.0, tpr: 1.0 });
    }

    #[test]
    fn one_class_has_no_roc() {
        let c = curves(&held(&[(0.2, false), (0.4, false)]));
        assert_eq!(c.roc_auc, None);
        assert!(c.roc.is_empty());
    }

    #[test]
    fn gains_deciles_and_calibration_count_every_row_once() {
        let rows = sample(1003);
        let positives = rows.iter().filter(|r| r.1).count();
        let c = curves(&held(&rows));
        assert_eq!(c.gains.len(), GAINS_POINTS);
        assert_eq!(c.gains[0].share_of_conversions, 0.0);
        assert_eq!(c.gains[GAINS_POINTS - 1].share_of_conversions, 1.0);
        assert_eq!(c.deciles.len(), 10);
        assert_eq!(c.deciles.iter().map(|d| d.rows).sum::<usize>(), 1003);
        assert_eq!(
            c.deciles.iter().map(|d| d.conversions).sum::<usize>(),
            positives
        );
        // The top decile holds the highest scores and converts most here.
        assert!(c.deciles[0].from >= c.deciles[9].to);
        assert!(c.deciles[0].conversion_rate > c.deciles[9].conversion_rate);
        assert_eq!(c.calibration.len(), CALIBRATION_BINS);
        assert_eq!(c.calibration.iter().map(|b| b.rows).sum::<usize>(), 1003);
        assert!(c.calibration.windows(2).all(|w| w[0].to <= w[1].from));
        let mean: f64 = rows.iter().map(|r| r.0).sum::<f64>() / 1003.0;
        let weighted: f64 = c
            .calibration
            .iter()
            .map(|b| b.mean_predicted * b.rows as f64)
            .sum::<f64>()
            / 1003.0;
        assert!((mean - weighted).abs() < 1e-12);
        assert_eq!(c.histogram.len(), HISTOGRAM_BINS);
        assert_eq!(c.histogram.iter().map(|b| b.rows).sum::<usize>(), 1003);
        // Highest score 0.95: the histogram ends there, in its last bin.
        assert!((c.histogram[HISTOGRAM_BINS - 1].to - 0.95).abs() < 1e-12);
        assert!(c.histogram[HISTOGRAM_BINS - 1].rows > 0);
    }

    #[test]
    fn conversion_by_field_counts_levels_and_missing() {
        let row = |label: u8, score: f64, source: &str| HoldoutRow {
            entity_id: "e".into(),
            cutoff: None,
            label,
            score,
            profile: vec![source.into()],
        };
        let holdout = Holdout {
            fields: vec!["lead_source".into()],
            rows: vec![
                row(1, 0.5, "webinar"),
                row(0, 0.3, "webinar"),
                row(0, 0.1, "webinar"),
                row(1, 0.6, ""),
            ],
        };
        let by = ByField::new(&holdout);
        assert_eq!(by.fields().collect::<Vec<_>>(), ["lead_source"]);
        let levels = by.levels("lead_source").expect("field");
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].level, "webinar");
        assert_eq!((levels[0].rows, levels[0].conversions), (3, 1));
        assert!((levels[0].mean_probability - 0.3).abs() < 1e-12);
        assert_eq!(levels[1].level, "");
        assert_eq!(levels[1].conversion_rate, 1.0);
        assert!(by.levels("country").is_none());
    }
}
