//! Thresholds by sales capacity: what a cut-off on the calibrated probability means in leads
//! a week, precision, share of conversions caught and expected conversions, read off a
//! bundle's held-out predictions.
//!
//! [`HeldOutScores`] holds the held-out calibrated probabilities and outcomes (a bundle's
//! `holdout.csv`) and how many weeks of leads they stand for. A held-out row stands for
//! `volume_per_week / rows` leads a week, so "our team can call `N` leads a week" is the top
//! `N / volume_per_week` share of the held-out rows ([`HeldOutScores::at_capacity`]), and a
//! grade band is the rows between two cut-offs ([`HeldOutScores::grade_table`]).
//!
//! How many weeks the held-out rows stand for ([`weeks_covered`]): event-form data is scored
//! at cut-off dates, and the rows of one cut-off are the leads open at that moment, to be
//! worked until the next one. The rows therefore cover the span from the first to the last
//! held-out cut-off plus one scoring interval (the median gap between the dataset's cut-off
//! dates): one monthly snapshot covers a month; leads scored at arrival cover the span of
//! their arrivals. Tabular data has no dates: the caller gives the volume.
//!
//! The training binary's `thresholds` command and the server's `/v1/thresholds/{model}` both
//! answer from here, and the server resolves a thresholds file's capacities with
//! [`HeldOutScores::thresholds_by_capacity`].

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bundle::{Grade, GradeBands, HoldoutRow, Thresholds};

/// Smallest gap kept between two cut-offs, and between a cut-off and 0 or 1, so that
/// thresholds found by share always pass [`Thresholds::check`].
pub const MIN_GAP: f64 = 1e-6;

/// Why a capacity question cannot be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    #[error("no held-out rows to answer from")]
    Empty,
    #[error("held-out row {row}: score {score} is not a probability")]
    BadScore { row: usize, score: f64 },
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch { scores: usize, labels: usize },
    #[error("{what} is {value}; it must be a positive number")]
    NotPositive { what: &'static str, value: f64 },
    #[error(
        "the held-out rows carry no scoring dates (tabular data), so the leads arriving a \
         week are unknown: give the volume per week"
    )]
    UnknownVolume,
}

/// Held-out calibrated probabilities and outcomes, highest probability first.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOutScores {
    /// `(probability, converted)`, by probability descending.
    rows: Vec<(f64, bool)>,
    /// `positives_before[k]`: conversions among the `k` highest rows.
    positives_before: Vec<usize>,
    /// `probability_before[k]`: sum of the `k` highest probabilities.
    probability_before: Vec<f64>,
    /// Weeks of leads the rows stand for, when known.
    weeks: Option<f64>,
}

/// What flagging the leads from a cut-off up gives, per week.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityRow {
    /// Leads with a probability from here up are flagged.
    pub threshold: f64,
    /// Leads flagged a week.
    pub leads_per_week: f64,
    /// Share of all leads flagged.
    pub share_of_leads: f64,
    /// Share of the flagged leads that converted (held out).
    pub precision: f64,
    /// Share of all conversions that were among the flagged leads (recall).
    pub share_of_conversions: f64,
    /// Conversions a week among the flagged leads, as the calibrated probabilities expect.
    pub expected_conversions_per_week: f64,
    /// Conversions a week among the flagged leads, as held out.
    pub observed_conversions_per_week: f64,
}

/// One grade band of a [`HeldOutScores::grade_table`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GradeRow {
    pub grade: Grade,
    /// Probabilities in `[from, to)` (grade A up to 1 inclusive).
    pub from: f64,
    pub to: f64,
    /// Leads in the band a week.
    pub leads_per_week: f64,
    /// Share of all leads in the band.
    pub share_of_leads: f64,
    /// Share of the band's leads that converted (held out).
    pub precision: f64,
    /// Expected conversions a week in the band (calibrated probabilities).
    pub expected_conversions_per_week: f64,
    /// Share of all conversions in this band or a better one (recall from A down to here).
    pub cumulative_share_of_conversions: f64,
    /// Precision of this band and the better ones together.
    pub cumulative_precision: f64,
}

impl HeldOutScores {
    /// Held-out calibrated `scores` (probabilities) and `labels`, standing for `weeks` of
    /// leads when known.
    pub fn new(scores: &[f64], labels: &[bool], weeks: Option<f64>) -> Result<Self, CapacityError> {
        if scores.len() != labels.len() {
            return Err(CapacityError::LengthMismatch {
                scores: scores.len(),
                labels: labels.len(),
            });
        }
        if scores.is_empty() {
            return Err(CapacityError::Empty);
        }
        if let Some((i, &score)) = scores
            .iter()
            .enumerate()
            .find(|(_, s)| !(0.0..=1.0).contains(*s))
        {
            return Err(CapacityError::BadScore { row: i + 1, score });
        }
        if let Some(w) = weeks {
            positive("weeks covered", w)?;
        }
        let mut rows: Vec<(f64, bool)> =
            scores.iter().copied().zip(labels.iter().copied()).collect();
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut positives_before = Vec::with_capacity(rows.len() + 1);
        let mut probability_before = Vec::with_capacity(rows.len() + 1);
        positives_before.push(0);
        probability_before.push(0.0);
        for &(p, converted) in &rows {
            positives_before
                .push(positives_before[positives_before.len() - 1] + usize::from(converted));
            probability_before.push(probability_before[probability_before.len() - 1] + p);
        }
        Ok(HeldOutScores {
            rows,
            positives_before,
            probability_before,
            weeks,
        })
    }

    /// A bundle's `holdout.csv` rows; the weeks they cover come from their cut-offs and the
    /// dataset's cut-off dates (see [`weeks_covered`]).
    pub fn from_holdout(
        rows: &[HoldoutRow],
        dataset_cutoffs: &[String],
    ) -> Result<Self, CapacityError> {
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
        let held_out_cutoffs: Vec<&str> = rows.iter().filter_map(|r| r.cutoff.as_deref()).collect();
        let weeks = weeks_covered(&held_out_cutoffs, dataset_cutoffs);
        Self::new(&scores, &labels, weeks)
    }

    /// Number of held-out rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Always false: [`HeldOutScores::new`] refuses no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `(probability, converted)` of every row, highest probability first.
    pub fn rows(&self) -> &[(f64, bool)] {
        &self.rows
    }

    /// Conversions among the held-out rows.
    pub fn positives(&self) -> usize {
        self.positives_before[self.rows.len()]
    }

    /// Weeks of leads the rows stand for, when known.
    pub fn weeks(&self) -> Option<f64> {
        self.weeks
    }

    /// Leads a week the rows stand for: `rows / weeks`, when the weeks are known.
    pub fn volume_per_week(&self) -> Option<f64> {
        self.weeks.map(|w| self.rows.len() as f64 / w)
    }

    /// `volume` when given (checked positive), else [`volume_per_week`](Self::volume_per_week).
    pub fn resolve_volume(&self, volume: Option<f64>) -> Result<f64, CapacityError> {
        match volume {
            Some(v) => positive("volume per week", v),
            None => self.volume_per_week().ok_or(CapacityError::UnknownVolume),
        }
    }

    /// Probability of the `k`-th highest row (`k` from 1).
    fn score_at_rank(&self, k: usize) -> f64 {
        self.rows[k.clamp(1, self.rows.len()) - 1].0
    }

    /// Rows flagged by `p >= threshold` (ties at the cut-off all flagged).
    fn flagged_at(&self, threshold: f64) -> usize {
        self.rows.partition_point(|&(p, _)| p >= threshold)
    }

    /// The cut-off flagging the top `share` of rows: the probability of the row at rank
    /// `ceil(share · rows)` (at least 1). Ties at the cut-off make the flagged share larger.
    pub fn threshold_at_share(&self, share: f64) -> f64 {
        // Less a hair, so that 0.1 + 0.2 of 1000 rows is rank 300, not 301.
        let rank = (share * self.rows.len() as f64 - 1e-9).ceil().max(1.0) as usize;
        self.score_at_rank(rank)
    }

    /// What flagging every lead from `threshold` up gives, with `volume_per_week` leads
    /// arriving a week.
    pub fn at_threshold(&self, threshold: f64, volume_per_week: f64) -> CapacityRow {
        let n = self.rows.len() as f64;
        let per_row = volume_per_week / n;
        let flagged = self.flagged_at(threshold);
        let caught = self.positives_before[flagged];
        CapacityRow {
            threshold,
            leads_per_week: flagged as f64 * per_row,
            share_of_leads: flagged as f64 / n,
            precision: ratio(caught, flagged),
            share_of_conversions: ratio(caught, self.positives()),
            expected_conversions_per_week: self.probability_before[flagged] * per_row,
            observed_conversions_per_week: caught as f64 * per_row,
        }
    }

    /// "Our team can call `capacity_per_week` leads a week": the cut-off that flags that
    /// many of the `volume_per_week` arriving, and what it gives.
    pub fn at_capacity(
        &self,
        capacity_per_week: f64,
        volume_per_week: f64,
    ) -> Result<CapacityRow, CapacityError> {
        let capacity = positive("capacity per week", capacity_per_week)?;
        let volume = positive("volume per week", volume_per_week)?;
        // As a thresholds file would set it (a cut-off strictly between 0 and 1), so that the
        // answer is the cut-off `sales_ready_per_week` puts in force.
        let threshold = self
            .threshold_at_share(capacity / volume)
            .clamp(MIN_GAP, 1.0 - MIN_GAP);
        Ok(self.at_threshold(threshold, volume))
    }

    /// Precision, recall and leads a week of each grade band of `grades`.
    pub fn grade_table(&self, grades: &GradeBands, volume_per_week: f64) -> Vec<GradeRow> {
        let n = self.rows.len() as f64;
        let per_row = volume_per_week / n;
        let bounds = [
            (Grade::A, grades.a, 1.0),
            (Grade::B, grades.b, grades.a),
            (Grade::C, grades.c, grades.b),
            (Grade::D, 0.0, grades.c),
        ];
        let mut above = 0;
        bounds
            .into_iter()
            .map(|(grade, from, to)| {
                let through = if grade == Grade::D {
                    self.rows.len()
                } else {
                    self.flagged_at(from)
                };
                let in_band = through - above;
                let caught = self.positives_before[through] - self.positives_before[above];
                let row = GradeRow {
                    grade,
                    from,
                    to,
                    leads_per_week: in_band as f64 * per_row,
                    share_of_leads: in_band as f64 / n,
                    precision: ratio(caught, in_band),
                    expected_conversions_per_week: (self.probability_before[through]
                        - self.probability_before[above])
                        * per_row,
                    cumulative_share_of_conversions: ratio(
                        self.positives_before[through],
                        self.positives(),
                    ),
                    cumulative_precision: ratio(self.positives_before[through], through),
                };
                above = through;
                row
            })
            .collect()
    }

    /// Grade bands putting the top `shares[0]` of rows in A, the next `shares[1]` in B and
    /// the next `shares[2]` in C, kept strictly decreasing inside `(0, 1)` when probabilities
    /// tie or sit at the edges.
    pub fn bands_at_shares(&self, shares: [f64; 3]) -> GradeBands {
        let a = self.threshold_at_share(shares[0]);
        let b = self.threshold_at_share(shares[0] + shares[1]);
        let c = self.threshold_at_share(shares[0] + shares[1] + shares[2]);
        let a = a.clamp(3.0 * MIN_GAP, 1.0 - MIN_GAP);
        let b = b.clamp(2.0 * MIN_GAP, a - MIN_GAP);
        let c = c.clamp(MIN_GAP, b - MIN_GAP);
        GradeBands { a, b, c }
    }

    /// `base` with the sales-ready cut-off set to flag `sales_ready_per_week` leads a week
    /// and the grade bands to hold `grades_per_week` (A, B, C) leads a week each (D is the
    /// rest), for `volume_per_week` leads arriving a week.
    pub fn thresholds_by_capacity(
        &self,
        base: &Thresholds,
        sales_ready_per_week: Option<f64>,
        grades_per_week: Option<[f64; 3]>,
        volume_per_week: f64,
    ) -> Result<Thresholds, CapacityError> {
        let volume = positive("volume per week", volume_per_week)?;
        let mut thresholds = base.clone();
        if let Some(capacity) = sales_ready_per_week {
            let capacity = positive("sales_ready_per_week", capacity)?;
            thresholds.sales_ready = self
                .threshold_at_share(capacity / volume)
                .clamp(MIN_GAP, 1.0 - MIN_GAP);
        }
        if let Some(per_week) = grades_per_week {
            for (what, value) in [
                "grades_per_week.a",
                "grades_per_week.b",
                "grades_per_week.c",
            ]
            .into_iter()
            .zip(per_week)
            {
                positive(what, value)?;
            }
            thresholds.grades = self.bands_at_shares(per_week.map(|v| v / volume));
        }
        Ok(thresholds)
    }
}

/// Weeks of leads that held-out rows scored at `held_out_cutoffs` stand for: from the first
/// to the last of them plus one scoring interval, the median gap between the distinct dates
/// of `held_out_cutoffs` and `dataset_cutoffs` together. `None` when fewer than two distinct
/// dates parse (RFC 3339) or they span no time.
pub fn weeks_covered(held_out_cutoffs: &[&str], dataset_cutoffs: &[String]) -> Option<f64> {
    let parse = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let held: Vec<DateTime<Utc>> = held_out_cutoffs.iter().filter_map(|t| parse(t)).collect();
    let first = *held.iter().min()?;
    let last = *held.iter().max()?;
    let mut all: Vec<DateTime<Utc>> = held
        .iter()
        .copied()
        .chain(dataset_cutoffs.iter().filter_map(|t| parse(t)))
        .collect();
    all.sort();
    all.dedup();
    let mut gaps: Vec<i64> = all
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let interval = gaps[gaps.len() / 2];
    let span_ms = (last - first).num_milliseconds() + interval;
    (span_ms > 0).then(|| span_ms as f64 / (7.0 * 86_400_000.0))
}

fn positive(what: &'static str, value: f64) -> Result<f64, CapacityError> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(CapacityError::NotPositive { what, value })
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten held-out leads over two weeks (5 a week), four conversions. By probability:
    ///
    /// | rank | p    | converted |
    /// |------|------|-----------|
    /// | 1    | 0.90 | yes       |
    /// | 2    | 0.80 | yes       |
    /// | 3    | 0.70 | no        |
    /// | 4    | 0.60 | yes       |
    /// | 5    | 0.50 | no        |
    /// | 6    | 0.40 | no        |
    /// | 7    | 0.30 | yes       |
    /// | 8    | 0.20 | no        |
    /// | 9    | 0.10 | no        |
    /// | 10   | 0.05 | no        |
    fn fixture() -> HeldOutScores {
        // Given out of order: the order must not matter.
        let scores = [0.30, 0.90, 0.05, 0.60, 0.20, 0.80, 0.50, 0.10, 0.70, 0.40];
        let labels = [
            true, true, false, true, false, true, false, false, false, false,
        ];
        HeldOutScores::new(&scores, &labels, Some(2.0)).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn capacity_answer_matches_the_hand_computed_table() {
        let held = fixture();
        assert_eq!(held.volume_per_week(), Some(5.0));
        // Two calls a week of five leads: the top 40 %, ranks 1-4, cut-off 0.60; 3 of the 4
        // converted; 3 of all 4 conversions caught; expected (0.9+0.8+0.7+0.6)/2 = 1.5 a week.
        let row = held.at_capacity(2.0, 5.0).unwrap();
        assert!(close(row.threshold, 0.60), "{row:?}");
        assert!(close(row.leads_per_week, 2.0));
        assert!(close(row.share_of_leads, 0.4));
        assert!(close(row.precision, 0.75));
        assert!(close(row.share_of_conversions, 0.75));
        assert!(close(row.expected_conversions_per_week, 1.5));
        assert!(close(row.observed_conversions_per_week, 1.5));
        // One a week: ranks 1-2, both converted.
        let row = held.at_capacity(1.0, 5.0).unwrap();
        assert!(close(row.threshold, 0.80) && close(row.precision, 1.0));
        assert!(close(row.share_of_conversions, 0.5));
        // A volume given by hand scales the weekly figures: 50 leads a week, 20 calls.
        let row = held.at_capacity(20.0, 50.0).unwrap();
        assert!(close(row.threshold, 0.60) && close(row.leads_per_week, 20.0));
        assert!(close(row.expected_conversions_per_week, 15.0));
        // More capacity than leads: everyone is flagged.
        let row = held.at_capacity(9.0, 5.0).unwrap();
        assert!(close(row.threshold, 0.05) && close(row.share_of_conversions, 1.0));
        assert!(close(row.precision, 0.4));
    }

    #[test]
    fn grade_table_matches_the_hand_computed_table() {
        let held = fixture();
        let grades = GradeBands {
            a: 0.75,
            b: 0.45,
            c: 0.15,
        };
        let table = held.grade_table(&grades, 5.0);
        // A: 0.9, 0.8 (2 of 2). B: 0.7, 0.6, 0.5 (1 of 3). C: 0.4, 0.3, 0.2 (1 of 3).
        // D: 0.1, 0.05 (0 of 2).
        let expected = [
            (Grade::A, 1.0, 0.2, 1.0, 0.85, 0.5, 1.0),
            (Grade::B, 1.5, 0.3, 1.0 / 3.0, 0.9, 0.75, 0.6),
            (Grade::C, 1.5, 0.3, 1.0 / 3.0, 0.45, 1.0, 0.5),
            (Grade::D, 1.0, 0.2, 0.0, 0.075, 1.0, 0.4),
        ];
        assert_eq!(table.len(), 4);
        for (row, (grade, per_week, share, precision, expected_conv, cum_recall, cum_precision)) in
            table.iter().zip(expected)
        {
            assert_eq!(row.grade, grade);
            assert!(close(row.leads_per_week, per_week), "{row:?}");
            assert!(close(row.share_of_leads, share), "{row:?}");
            assert!(close(row.precision, precision), "{row:?}");
            assert!(
                close(row.expected_conversions_per_week, expected_conv),
                "{row:?}"
            );
            assert!(
                close(row.cumulative_share_of_conversions, cum_recall),
                "{row:?}"
            );
            assert!(close(row.cumulative_precision, cum_precision), "{row:?}");
        }
        assert!(close(table[1].from, 0.45) && close(table[1].to, 0.75));
    }

    #[test]
    fn thresholds_by_capacity_set_what_the_file_asks_and_keep_the_rest() {
        let held = fixture();
        let base = Thresholds {
            sales_ready: 0.33,
            grades: GradeBands {
                a: 0.75,
                b: 0.45,
                c: 0.15,
            },
        };
        // 1 A, 1 B and 1 C lead a week of 5: ranks 1-2 (0.80), 3-4 (0.60), 5-6 (0.40).
        let t = held
            .thresholds_by_capacity(&base, None, Some([1.0, 1.0, 1.0]), 5.0)
            .unwrap();
        assert!(close(t.sales_ready, 0.33));
        assert!(close(t.grades.a, 0.80) && close(t.grades.b, 0.60) && close(t.grades.c, 0.40));
        let t = held
            .thresholds_by_capacity(&base, Some(3.0), None, 5.0)
            .unwrap();
        // Three calls a week: ranks 1-6, cut-off 0.40.
        assert!(close(t.sales_ready, 0.40) && t.grades == base.grades);
        assert!(t.check().is_ok());
        assert_eq!(
            held.thresholds_by_capacity(&base, Some(0.0), None, 5.0),
            Err(CapacityError::NotPositive {
                what: "sales_ready_per_week",
                value: 0.0
            })
        );
    }

    #[test]
    fn tied_or_extreme_probabilities_still_give_valid_bands() {
        let held = HeldOutScores::new(&[1.0; 10], &[true; 10], None).unwrap();
        let bands = held.bands_at_shares([0.1, 0.2, 0.3]);
        let t = Thresholds {
            sales_ready: 0.5,
            grades: bands,
        };
        assert!(t.check().is_ok(), "{t:?}");
        assert_eq!(held.resolve_volume(None), Err(CapacityError::UnknownVolume));
        assert_eq!(held.resolve_volume(Some(12.0)), Ok(12.0));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            HeldOutScores::new(&[], &[], None),
            Err(CapacityError::Empty)
        );
        assert_eq!(
            HeldOutScores::new(&[0.5, 1.5], &[true, false], None),
            Err(CapacityError::BadScore { row: 2, score: 1.5 })
        );
        assert!(matches!(
            HeldOutScores::new(&[0.5], &[true, false], None),
            Err(CapacityError::LengthMismatch { .. })
        ));
        assert!(fixture().at_capacity(f64::NAN, 5.0).is_err());
        assert!(fixture().at_capacity(2.0, -1.0).is_err());
    }

    #[test]
    fn weeks_covered_by_snapshots_and_by_arrivals() {
        let monthly: Vec<String> = ["2025-01-01", "2025-01-29", "2025-02-26"]
            .iter()
            .map(|d| format!("{d}T00:00:00Z"))
            .collect();
        // One snapshot held out: one scoring interval, 28 days.
        let weeks = weeks_covered(&["2025-02-26T00:00:00Z"; 3], &monthly).unwrap();
        assert!(close(weeks, 4.0), "{weeks}");
        // Two snapshots held out: 28 days between them plus one interval.
        let weeks =
            weeks_covered(&["2025-01-29T00:00:00Z", "2025-02-26T00:00:00Z"], &monthly).unwrap();
        assert!(close(weeks, 8.0), "{weeks}");
        // Leads scored at arrival, a day apart over 14 days: 14 days (13 gaps + 1 day).
        let arrivals: Vec<String> = (1..=14)
            .map(|d| format!("2025-03-{d:02}T00:00:00Z"))
            .collect();
        let refs: Vec<&str> = arrivals.iter().map(String::as_str).collect();
        let weeks = weeks_covered(&refs, &[]).unwrap();
        assert!(close(weeks, 2.0), "{weeks}");
        // No dates (tabular) or a single one with nothing to space it: unknown.
        assert_eq!(weeks_covered(&[], &monthly), None);
        assert_eq!(weeks_covered(&["2025-02-26T00:00:00Z"], &[]), None);
    }
}
