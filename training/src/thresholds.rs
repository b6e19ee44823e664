//! Default cut-offs written into a bundle: the sales-ready threshold and the A–D grade bands,
//! chosen on the held-out calibrated probabilities. Sales ops can change them afterwards
//! (they are plain numbers in the manifest); these are the starting point.
//!
//! * Grades follow capacity, not absolute probability: grade A is the top
//!   [`GRADE_SHARES`]`[0]` of held-out rows, B the next [`GRADE_SHARES`]`[1]`, C the next
//!   [`GRADE_SHARES`]`[2]`, D the rest. A team can work its A leads the same day whatever
//!   the base rate.
//! * Sales-ready (propensity) is the threshold with the best F1 on the held-out rows
//!   (precision and recall balanced), searched over the held-out score quantiles.
//! * At risk (churn) follows capacity, like the grades: the [`CHURN_AT_RISK_SHARE`] of
//!   customers most at risk, the customers a retention team can contact. Best F1 on a churn
//!   model flagged 74 % of a retail log's customers: a list nobody can call.
//!
//! [`capacity_report`] is the `thresholds` command's answer to sales ops: which cut-off for
//! the leads a week their team can work, and what each grade in force holds.

use std::fmt::Write as _;

use features::spec::Task;
use models::bundle::Thresholds;
use models::capacity::{CapacityRow, HeldOutScores, MIN_GAP};
use models::metrics::threshold_table;

use crate::error::TrainError;
use crate::words::words;

/// Shares of held-out rows in grades A, B and C (D is the rest).
pub const GRADE_SHARES: [f64; 3] = [0.10, 0.20, 0.30];

/// Share of held-out customers a churn model's default cut-off flags as at risk.
pub const CHURN_AT_RISK_SHARE: f64 = 0.10;

/// Candidate sales-ready thresholds: this many score quantiles.
const SALES_READY_CANDIDATES: usize = 200;

/// The default thresholds of a `task` model for held-out calibrated `scores` and their
/// `labels`.
pub fn default_thresholds(
    task: Task,
    scores: &[f64],
    labels: &[bool],
) -> Result<Thresholds, TrainError> {
    if scores.is_empty() {
        return Err(TrainError::Data(
            "no held-out scores to choose thresholds on".into(),
        ));
    }
    let held = HeldOutScores::new(scores, labels, None)
        .map_err(|e| TrainError::Data(format!("held-out scores: {e}")))?;
    let grades = held.bands_at_shares(GRADE_SHARES);
    if task == Task::Churn {
        let thresholds = Thresholds {
            sales_ready: held
                .threshold_at_share(CHURN_AT_RISK_SHARE)
                .clamp(MIN_GAP, 1.0 - MIN_GAP),
            grades,
        };
        thresholds.check().map_err(TrainError::Data)?;
        return Ok(thresholds);
    }
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

/// Shares of the weekly volume the `thresholds` command tabulates when no capacity is given.
pub const DEFAULT_CAPACITY_SHARES: [f64; 7] = [0.01, 0.02, 0.05, 0.10, 0.20, 0.30, 0.50];

/// The `thresholds` command's text for the model `name` (e.g. `propensity/v3`): for each of
/// `capacities` (leads a week; a ladder of shares of the volume when empty) the cut-off,
/// precision, share of conversions caught and conversions a week; what the sales-ready
/// cut-off and each grade band of `thresholds` hold; and the thresholds-file lines that set
/// the first capacity.
pub fn capacity_report(
    name: &str,
    task: Task,
    held: &HeldOutScores,
    thresholds: &Thresholds,
    capacities: &[f64],
    volume_per_week: f64,
) -> Result<String, TrainError> {
    let capacity_error = |e: models::capacity::CapacityError| TrainError::Data(e.to_string());
    let capacities: Vec<f64> = if capacities.is_empty() {
        DEFAULT_CAPACITY_SHARES
            .iter()
            .map(|share| share * volume_per_week)
            .collect()
    } else {
        capacities.to_vec()
    };
    let rows = capacities
        .iter()
        .map(|&c| held.at_capacity(c, volume_per_week))
        .collect::<Result<Vec<_>, _>>()
        .map_err(capacity_error)?;
    let w = words(task);
    let per_week = format!("{} a week", w.entities);
    let mut out = String::new();
    let weeks = match held.weeks() {
        Some(w) => format!("covering {w:.1} weeks"),
        None => "undated".to_owned(),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{name}: {} held-out {}, {} {}, {weeks}; {volume_per_week:.1} {per_week}\n",
        held.len(),
        w.entities,
        held.positives(),
        w.positives,
    );
    let _ = writeln!(
        out,
        "{:>14}  {:>9}  {:>9}  {:>9}  {:>11}  {:>11}",
        per_week, "threshold", "precision", "caught", "expected/wk", "observed/wk"
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "{}",
            capacity_line(&format!("{:.1}", row.leads_per_week), row)
        );
    }
    let ready = held.at_threshold(thresholds.sales_ready, volume_per_week);
    let _ = writeln!(out, "\n{} in force:", w.flagged);
    let _ = writeln!(
        out,
        "{}",
        capacity_line(&format!("{:.1}", ready.leads_per_week), &ready)
    );
    let _ = writeln!(
        out,
        "\n{:>5}  {:>15}  {:>12}  {:>7}  {:>9}  {:>11}  {:>12}  {:>14}",
        "grade",
        "probability",
        per_week,
        "share",
        "precision",
        "expected/wk",
        "cum. caught",
        "cum. precision"
    );
    for g in held.grade_table(&thresholds.grades, volume_per_week) {
        let _ = writeln!(
            out,
            "{:>5}  {:>15}  {:>12.1}  {:>6.1}%  {:>8.1}%  {:>11.2}  {:>11.1}%  {:>13.1}%",
            g.grade.as_str(),
            format!("{:.4}-{:.4}", g.from, g.to),
            g.leads_per_week,
            100.0 * g.share_of_leads,
            100.0 * g.precision,
            g.expected_conversions_per_week,
            100.0 * g.cumulative_share_of_conversions,
            100.0 * g.cumulative_precision,
        );
    }
    let section = name.split('/').next().unwrap_or(name);
    let _ = writeln!(
        out,
        "\nTo flag {:.0} {per_week}, put in the thresholds file (the server applies it on \
         reload):\n[{section}]\nsales_ready_per_week = {}",
        capacities[0], capacities[0]
    );
    Ok(out)
}

fn capacity_line(label: &str, row: &CapacityRow) -> String {
    format!(
        "{label:>14}  {:>9.4}  {:>8.1}%  {:>8.1}%  {:>11.2}  {:>11.2}",
        row.threshold,
        100.0 * row.precision,
        100.0 * row.share_of_conversions,
        row.expected_conversions_per_week,
        row.observed_conversions_per_week
    )
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
        let t = default_thresholds(Task::Propensity, &scores, &labels).unwrap();
        let share = |lo: f64, hi: f64| {
            scores.iter().filter(|&&s| s >= lo && s < hi).count() as f64 / n as f64
        };
        assert!((share(t.grades.a, 2.0) - 0.10).abs() < 1e-9, "{t:?}");
        assert!((share(t.grades.b, t.grades.a) - 0.20).abs() < 1e-9);
        assert!((share(t.grades.c, t.grades.b) - 0.30).abs() < 1e-9);
        assert!((t.sales_ready - 0.8005).abs() < 0.003, "{t:?}");
    }

    #[test]
    fn churn_flags_the_customers_a_retention_team_can_contact_in_churn_words() {
        let n = 1000;
        let scores: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        // Most customers churn: best F1 would flag nearly all of them.
        let labels: Vec<bool> = (0..n).map(|i| i >= 200).collect();
        let f1 = default_thresholds(Task::Propensity, &scores, &labels).unwrap();
        assert!(f1.sales_ready < 0.25, "{f1:?}");
        let t = default_thresholds(Task::Churn, &scores, &labels).unwrap();
        let flagged = scores.iter().filter(|&&s| s >= t.sales_ready).count();
        assert_eq!(flagged as f64 / n as f64, CHURN_AT_RISK_SHARE, "{t:?}");
        assert_eq!(t.grades, f1.grades);
        let held = HeldOutScores::new(&scores, &labels, Some(10.0)).unwrap();
        let text = capacity_report("churn/v1", Task::Churn, &held, &t, &[10.0], 100.0).unwrap();
        for said in [
            "1000 held-out customers, 800 churned customers",
            "customers a week",
            "at risk in force:",
            "To flag 10 customers a week",
        ] {
            assert!(text.contains(said), "{said:?} in {text}");
        }
        assert!(
            !text.contains("lead") && !text.contains("conversion"),
            "{text}"
        );
    }

    #[test]
    fn tied_scores_still_give_valid_bands() {
        let scores = vec![0.2; 50];
        let labels: Vec<bool> = (0..50).map(|i| i % 5 == 0).collect();
        let t = default_thresholds(Task::Propensity, &scores, &labels).unwrap();
        assert!(t.check().is_ok());
        assert!(t.grades.a > t.grades.b && t.grades.b > t.grades.c);
        let ones = vec![1.0; 10];
        let t = default_thresholds(Task::Propensity, &ones, &[true; 10]).unwrap();
        assert!(t.check().is_ok() && t.grades.a < 1.0);
        assert!(default_thresholds(Task::Propensity, &[], &[]).is_err());
    }

    #[test]
    fn capacity_report_gives_the_hand_computed_figures() {
        // The fixture of models::capacity: ten leads over two weeks, four conversions.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
        let labels = [
            true, true, false, true, false, false, true, false, false, false,
        ];
        let held = HeldOutScores::new(&scores, &labels, Some(2.0)).unwrap();
        let thresholds = Thresholds {
            sales_ready: 0.55,
            grades: models::bundle::GradeBands {
                a: 0.75,
                b: 0.45,
                c: 0.15,
            },
        };
        let text = capacity_report(
            "propensity/v1",
            Task::Propensity,
            &held,
            &thresholds,
            &[2.0],
            5.0,
        )
        .unwrap();
        // Two a week: cut-off 0.6, precision 75 %, 75 % of conversions, 1.5 expected and
        // observed a week.
        assert!(
            text.contains(
                "           2.0     0.6000      75.0%      75.0%         1.50         1.50"
            ),
            "{text}"
        );
        // Sales-ready 0.55 flags the same four rows.
        assert!(
            text.contains("sales-ready in force:\n           2.0     0.5500      75.0%"),
            "{text}"
        );
        // Grade B: 0.45-0.75, 1.5 a week, 1 of 3 converted, 0.9 expected, 75 % caught so far,
        // 3 of 5 so far.
        assert!(
            text.contains("    B    0.4500-0.7500           1.5    30.0%      33.3%         0.90         75.0%           60.0%"),
            "{text}"
        );
        assert!(text.contains("10 held-out leads, 4 conversions, covering 2.0 weeks"));
        assert!(
            text.contains("[propensity]\nsales_ready_per_week = 2\n"),
            "{text}"
        );
        // No capacity given: a ladder of shares of the volume, one line each.
        let ladder = capacity_report(
            "propensity/v1",
            Task::Propensity,
            &held,
            &thresholds,
            &[],
            5.0,
        )
        .unwrap();
        assert_eq!(
            ladder.lines().filter(|l| l.contains('%')).count(),
            7 + 1 + 4
        );
        assert!(capacity_report("x", Task::Propensity, &held, &thresholds, &[-1.0], 5.0).is_err());
    }
}
