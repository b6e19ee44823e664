//! Default cut-offs written into a bundle: the sales-ready threshold and the A–D grade bands,
//! chosen on the held-out calibrated probabilities. Sales ops can change them afterwards
//! (they are plain numbers in the manifest); these are the starting point.
//!
//! * Grades follow capacity, not absolute probability: grade A is the top
//!   [`GRADE_SHARES`]`[0]` of held-out rows, B the next [`GRADE_SHARES`]`[1]`, C the next
//!   [`GRADE_SHARES`]`[2]`, D the rest. A team can work its A leads the same day whatever
//!   the base rate.
//! * Sales-ready is the threshold with the best F1 on the held-out rows (precision and
//!   recall balanced), searched over the held-out score quantiles.

use models::bundle::Thresholds;
use models::capacity::{HeldOutScores, MIN_GAP};
use models::metrics::threshold_table;

use crate::error::TrainError;

/// Shares of held-out rows in grades A, B and C (D is the rest).
pub const GRADE_SHARES: [f64; 3] = [0.10, 0.20, 0.30];

/// Candidate sales-ready thresholds: this many score quantiles.
const SALES_READY_CANDIDATES: usize = 200;

/// The default thresholds for held-out calibrated `scores` and their `labels`.
pub fn default_thresholds(scores: &[f64], labels: &[bool]) -> Result<Thresholds, TrainError> {
    if scores.is_empty() {
        return Err(TrainError::Data(
            "no held-out scores to choose thresholds on".into(),
        ));
    }
    let held = HeldOutScores::new(scores, labels, None)
        .map_err(|e| TrainError::Data(format!("held-out scores: {e}")))?;
    let grades = held.bands_at_shares(GRADE_SHARES);
    let candidates: Vec<f64> = (0..SALES_READY_CANDIDATES)
        .map(|i| held.threshold_at_share((i as f64 + 0.5) / SALES_READY_CANDIDATES as f64))
        .collect();
    let table = threshold_table(scores, labels, &candidates)?;
    let best = table
        .iter()
        .filter(|row| row.flagged > 0)
        .max_by(|x, y| x.f1.total_cmp(&y.f1))
        .map(|row| row.threshold)
        .unwrap_or(grades.a);
    let thresholds = Thresholds {
        sales_ready: best.clamp(MIN_GAP, 1.0 - MIN_GAP),
        grades,
    };
    thresholds.check().map_err(TrainError::Data)?;
    Ok(thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_split_rows_by_share() {
        let n = 1000;
        let scores: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        // Positives concentrated at the top: the best F1 threshold is where they start.
        let labels: Vec<bool> = (0..n).map(|i| i >= 800).collect();
        let t = default_thresholds(&scores, &labels).unwrap();
        let share = |lo: f64, hi: f64| {
            scores.iter().filter(|&&s| s >= lo && s < hi).count() as f64 / n as f64
        };
        assert!((share(t.grades.a, 2.0) - 0.10).abs() < 1e-9, "{t:?}");
        assert!((share(t.grades.b, t.grades.a) - 0.20).abs() < 1e-9);
        assert!((share(t.grades.c, t.grades.b) - 0.30).abs() < 1e-9);
        assert!((t.sales_ready - 0.8005).abs() < 0.003, "{t:?}");
    }

    #[test]
    fn tied_scores_still_give_valid_bands() {
        let scores = vec![0.2; 50];
        let labels: Vec<bool> = (0..50).map(|i| i % 5 == 0).collect();
        let t = default_thresholds(&scores, &labels).unwrap();
        assert!(t.check().is_ok());
        assert!(t.grades.a > t.grades.b && t.grades.b > t.grades.c);
        let ones = vec![1.0; 10];
        let t = default_thresholds(&ones, &[true; 10]).unwrap();
        assert!(t.check().is_ok() && t.grades.a < 1.0);
        assert!(default_thresholds(&[], &[]).is_err());
    }
}
