//! The publish gate of unattended retraining: a new model goes live only if it is not worse
//! than the live one on the same, most recent held-out rows.
//!
//! The live bundle's own feature plan rebuilds the features of the new run's held-out rows
//! (the same entities at the same cut-offs, from the same data), its model scores them in
//! Rust exactly as its ONNX graph does, and both models are measured on those rows:
//!
//! * ranking, by the ROC AUC of each model's log-odds (calibration is monotone and does not
//!   change a ranking; the new model's calibrated held-out scores are cross-fitted, two
//!   calibrators on two halves, which would blur its ranking and not the live one's);
//! * calibration, by the expected calibration error of each model's calibrated probability:
//!   the new one's cross-fitted, the live one's from its own calibrator, fitted on older
//!   rows; both out of sample.
//!
//! [`GatePolicy`] says how much worse the new one may be, and after how many days the live
//! one is replaced anyway.
//!
//! The report also says how the new data compares with the live model's training
//! distribution ([`GateReport::data_drift`]): the same rows the new run's drift reference is
//! counted on, through the live plan, against the live bundle's reference. It does not decide
//! anything; it tells the reader of the nightly log what moved (an export that lost a column
//! shows as a feature suddenly all missing).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use features::FeaturePlan;
use features::builder::build_features;
use models::bundle::Bundle;
use models::drift::DriftReport;
use models::metrics::{self, BinaryMetrics};
use models::onnx::ScoringModel;

use crate::error::TrainError;
use crate::evaluate::Evaluation;
use crate::pipeline::Prepared;
use crate::train::drift_reference_rows;

/// How much worse than the live model a new one may be and still go live.
#[derive(Debug, Clone, PartialEq)]
pub struct GatePolicy {
    /// Largest drop of held-out ROC AUC accepted.
    pub max_roc_auc_drop: f64,
    /// Largest rise of held-out expected calibration error accepted (a small allowance for
    /// the noise of a few thousand rows; 0 for "not worse at all").
    pub max_ece_rise: f64,
    /// A live model older than this many days is replaced whatever the comparison says.
    pub max_live_age_days: Option<f64>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_roc_auc_drop: 0.005,
            max_ece_rise: 0.002,
            max_live_age_days: None,
        }
    }
}

/// The comparison and the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    /// Held-out rows both models were measured on.
    pub rows: usize,
    pub new_roc_auc: f64,
    pub new_ece: f64,
    pub live_version: String,
    pub live_roc_auc: f64,
    pub live_ece: f64,
    pub live_age_days: f64,
    pub promote: bool,
    /// Why, in a sentence.
    pub reason: String,
    /// The new data against the live model's training distribution (PSI and share missing;
    /// unknown levels are not counted here), when the live bundle stored one.
    pub data_drift: Option<DriftReport>,
}

/// Compares the shipped model of `evaluation` (on `prepared`'s held-out rows) with `live`,
/// and decides by `policy`.
pub fn compare_with_live(
    prepared: &Prepared,
    evaluation: &Evaluation,
    live: &Bundle,
    policy: &GatePolicy,
    now: DateTime<Utc>,
) -> Result<GateReport, TrainError> {
    let manifest = live.manifest();
    // The same plan gives the same table: built again only for another plan.
    let rebuilt;
    let live_table = if plans_equal(&manifest.feature_plan, &prepared.plan)? {
        &prepared.table
    } else {
        rebuilt = build_features(
            prepared.data("comparing with a live model of another feature plan")?,
            &manifest.feature_plan,
            &prepared.cutoffs,
        )?;
        &rebuilt
    };
    let index: HashMap<(&str, i64), usize> = live_table
        .entity_ids
        .iter()
        .zip(&live_table.cutoffs_ms)
        .enumerate()
        .map(|(i, (id, &cutoff))| ((id.as_str(), cutoff), i))
        .collect();
    let table = &prepared.table;
    let graph = live.explainer().model_graph();
    let scorer = ScoringModel::new(graph.clone(), manifest.calibration.clone());
    let mut live_logits = Vec::with_capacity(evaluation.holdout_rows.len());
    let mut live_scores = Vec::with_capacity(evaluation.holdout_rows.len());
    for &row in &evaluation.holdout_rows {
        let key = (table.entity_ids[row].as_str(), table.cutoffs_ms[row]);
        let live_row = index.get(&key).ok_or_else(|| {
            TrainError::Data(format!(
                "cannot compare with the live model {}: its features have no row for {} at {}",
                manifest.version, key.0, key.1
            ))
        })?;
        let features = live_table.row(*live_row);
        live_logits.push(graph.logit(features));
        live_scores.push(f64::from(scorer.probability_f32(features)));
    }
    let data_drift = manifest.drift.as_ref().map(|reference| {
        let counter = reference.counter();
        let rows = drift_reference_rows(live_table, &prepared.cutoffs);
        let mut cells = vec![0u64; counter.n_cells()];
        for &i in &rows {
            counter.for_each_cell(live_table.row(i), &[], |c| cells[c] += 1);
        }
        counter.report(rows.len() as u64, &cells)
    });
    let labels = &evaluation.holdout_labels;
    let new_auc = metrics::roc_auc(&evaluation.raw_logits, labels, None)?;
    let live_auc = metrics::roc_auc(&live_logits, labels, None)?;
    let new_ece = BinaryMetrics::compute(&evaluation.calibrated_scores, labels)?.ece;
    let live_ece = BinaryMetrics::compute(&live_scores, labels)?.ece;
    let live_age_days = (now - manifest.created_at).num_seconds() as f64 / 86_400.0;
    let figures = GateFigures {
        new_auc,
        live_auc,
        new_ece,
        live_ece,
        live_age_days,
    };
    let (promote, reason) = decide(policy, &figures);
    Ok(GateReport {
        rows: labels.len(),
        new_roc_auc: new_auc,
        new_ece,
        live_version: manifest.version.clone(),
        live_roc_auc: live_auc,
        live_ece,
        live_age_days,
        promote,
        reason: format!("{reason} on the same {} held-out rows", labels.len()),
        data_drift,
    })
}

/// The figures the gate decides on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GateFigures {
    new_auc: f64,
    live_auc: f64,
    new_ece: f64,
    live_ece: f64,
    live_age_days: f64,
}

/// Whether to promote, and why: an over-age live model is replaced; otherwise a drop of ROC
/// AUC, then a rise of calibration error, beyond the policy refuses; anything else promotes.
fn decide(policy: &GatePolicy, figures: &GateFigures) -> (bool, String) {
    let GateFigures {
        new_auc,
        live_auc,
        new_ece,
        live_ece,
        live_age_days,
    } = *figures;
    match policy.max_live_age_days {
        Some(max) if live_age_days > max => (
            true,
            format!("the live model is {live_age_days:.1} days old, older than the {max} allowed"),
        ),
        _ if new_auc < live_auc - policy.max_roc_auc_drop => (
            false,
            format!(
                "held-out ROC AUC {new_auc:.4} is {:.4} below the live model's {live_auc:.4} \
                 (at most {} allowed)",
                live_auc - new_auc,
                policy.max_roc_auc_drop
            ),
        ),
        _ if new_ece > live_ece + policy.max_ece_rise => (
            false,
            format!(
                "held-out calibration error {new_ece:.4} is {:.4} above the live model's \
                 {live_ece:.4} (at most {} allowed)",
                new_ece - live_ece,
                policy.max_ece_rise
            ),
        ),
        _ => (
            true,
            format!(
                "not worse than the live model: ROC AUC {new_auc:.4} vs {live_auc:.4}, \
                 calibration error {new_ece:.4} vs {live_ece:.4}"
            ),
        ),
    }
}

/// Whether two plans are one (as serialised: the plan's whole definition).
fn plans_equal(a: &FeaturePlan, b: &FeaturePlan) -> Result<bool, TrainError> {
    let json = |plan: &FeaturePlan| {
        serde_json::to_value(plan).map_err(|e| TrainError::Data(format!("feature plan: {e}")))
    };
    Ok(json(a)? == json(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(new_auc: f64, new_ece: f64, live_age_days: f64) -> GateFigures {
        GateFigures {
            new_auc,
            live_auc: 0.80,
            new_ece,
            live_ece: 0.020,
            live_age_days,
        }
    }

    #[test]
    fn each_branch_of_the_gate_decides_as_its_policy_says() {
        let policy = GatePolicy::default();
        // As good: promoted, with both comparisons in the reason.
        let (promote, reason) = decide(&policy, &figures(0.80, 0.020, 3.0));
        assert!(promote, "{reason}");
        assert!(reason.starts_with("not worse than the live model: ROC AUC 0.8000 vs 0.8000"));
        // Within both tolerances: promoted.
        assert!(decide(&policy, &figures(0.7960, 0.0215, 3.0)).0);
        // ROC AUC 0.01 lower: refused for ranking.
        let (promote, reason) = decide(&policy, &figures(0.79, 0.020, 3.0));
        assert!(!promote);
        assert!(
            reason.starts_with("held-out ROC AUC 0.7900 is 0.0100 below the live model's 0.8000"),
            "{reason}"
        );
        // Ranking as good, calibration error 0.005 higher: refused for calibration.
        let (promote, reason) = decide(&policy, &figures(0.81, 0.025, 3.0));
        assert!(!promote);
        assert!(
            reason.starts_with(
                "held-out calibration error 0.0250 is 0.0050 above the live model's 0.0200 \
                 (at most 0.002 allowed)"
            ),
            "{reason}"
        );
        // With no allowance, any rise refuses.
        let strict = GatePolicy {
            max_ece_rise: 0.0,
            ..GatePolicy::default()
        };
        assert!(!decide(&strict, &figures(0.80, 0.0201, 3.0)).0);
        // A live model older than allowed is replaced even by a worse one.
        let aged = GatePolicy {
            max_live_age_days: Some(30.0),
            ..GatePolicy::default()
        };
        let (promote, reason) = decide(&aged, &figures(0.70, 0.050, 31.5));
        assert!(promote);
        assert_eq!(
            reason,
            "the live model is 31.5 days old, older than the 30 allowed"
        );
        // ...but not when younger.
        assert!(!decide(&aged, &figures(0.70, 0.050, 29.0)).0);
    }
}
