//! Data sufficiency and leakage guards, run before any model is fitted.
//!
//! Training is refused, with a message that says what is missing, when a side of the split
//! has too few positives or negatives, the label is constant, or a feature has no value at
//! all. A feature that alone ranks the validation rows almost perfectly (ROC AUC above
//! [`LEAKAGE_AUC`]) is reported as a warning: it is usually filled in after the outcome (as
//! Leads.csv's sales-team columns are) and cannot score a new lead.

use features::builder::FeatureTable;
use models::metrics::roc_auc;

use crate::error::TrainError;

/// Fewest positives, and fewest negatives, each side of a split must have.
pub const MIN_CLASS_ROWS: usize = 20;
/// A single feature ranking the rows better than this (or worse than `1 - this`) is flagged.
pub const LEAKAGE_AUC: f64 = 0.95;

/// Refuses training sets a model cannot learn from or be validated on.
pub fn check_sufficiency(
    table: &FeatureTable,
    train: &[usize],
    valid: &[usize],
) -> Result<(), TrainError> {
    let positives_all = table.labels.iter().filter(|&&l| l == 1).count();
    if positives_all == 0 || positives_all == table.n_rows() {
        return Err(TrainError::Data(format!(
            "the label is constant: all {} rows are {}; check the label definition (horizon, \
             outcome file, positive value)",
            table.n_rows(),
            if positives_all == 0 {
                "negative"
            } else {
                "positive"
            }
        )));
    }
    for (side, rows) in [("training", train), ("validation", valid)] {
        let positives = rows.iter().filter(|&&i| table.labels[i] == 1).count();
        let negatives = rows.len() - positives;
        for (class, count) in [("positives", positives), ("negatives", negatives)] {
            if count < MIN_CLASS_ROWS {
                return Err(TrainError::Data(format!(
                    "too few {class} in the {side} rows: {count} (of {} rows; at least \
                     {MIN_CLASS_ROWS} needed). More history, more cutoffs or a longer label \
                     horizon give more",
                    rows.len()
                )));
            }
        }
    }
    let n = table.n_features();
    let mut seen = vec![false; n];
    for &row in train {
        for (j, value) in table.row(row).iter().enumerate() {
            if !value.is_nan() {
                seen[j] = true;
            }
        }
    }
    if let Some(j) = seen.iter().position(|s| !s) {
        return Err(TrainError::Data(format!(
            "feature `{}` has no value in any of the {} training rows; fill it or exclude its \
             column in the dataset spec",
            table.feature_names[j],
            train.len()
        )));
    }
    Ok(())
}

/// One warning per feature whose values alone rank `rows` with ROC AUC above [`LEAKAGE_AUC`]
/// (or below `1 - LEAKAGE_AUC`). Missing values rank lowest.
pub fn leakage_warnings(table: &FeatureTable, rows: &[usize]) -> Result<Vec<String>, TrainError> {
    let labels: Vec<bool> = rows.iter().map(|&i| table.labels[i] == 1).collect();
    let mut warnings = Vec::new();
    let mut scores = vec![0.0; rows.len()];
    for (j, name) in table.feature_names.iter().enumerate() {
        for (score, &row) in scores.iter_mut().zip(rows) {
            let value = table.row(row)[j];
            *score = if value.is_nan() {
                f64::MIN
            } else {
                f64::from(value)
            };
        }
        let auc = roc_auc(&scores, &labels, None)?;
        let separation = auc.max(1.0 - auc);
        if separation > LEAKAGE_AUC {
            warnings.push(format!(
                "feature `{name}` alone has ROC AUC {separation:.3} on the training rows: it is \
                 probably filled in after the outcome (leakage); exclude its column unless it \
                 is known when a lead is scored"
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[(&str, Vec<f32>)], labels: Vec<u8>) -> FeatureTable {
        let n_rows = labels.len();
        let mut values = Vec::with_capacity(n_rows * columns.len());
        for row in 0..n_rows {
            for (_, column) in columns {
                values.push(column[row]);
            }
        }
        FeatureTable {
            feature_names: columns.iter().map(|c| c.0.to_string()).collect(),
            entity_ids: (0..n_rows).map(|i| i.to_string()).collect(),
            cutoffs_ms: vec![0; n_rows],
            labels,
            values,
        }
    }

    fn alternating(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 2) as u8).collect()
    }

    #[test]
    fn constant_label_is_refused() {
        let t = table(&[("x", vec![1.0; 100])], vec![0; 100]);
        let all: Vec<usize> = (0..100).collect();
        let error = check_sufficiency(&t, &all, &all).unwrap_err().to_string();
        assert!(error.contains("label is constant"), "{error}");
        assert!(error.contains("negative"), "{error}");
    }

    #[test]
    fn too_few_positives_names_the_side_and_counts() {
        let mut labels = vec![0u8; 200];
        for label in labels.iter_mut().take(30) {
            *label = 1;
        }
        let t = table(&[("x", vec![1.0; 200])], labels);
        // Validation gets rows 0..10: ten positives only.
        let valid: Vec<usize> = (0..10).chain(100..150).collect();
        let train: Vec<usize> = (10..100).chain(150..200).collect();
        let error = check_sufficiency(&t, &train, &valid)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("too few positives in the validation rows: 10"),
            "{error}"
        );
    }

    #[test]
    fn a_feature_without_values_is_refused_by_name() {
        let labels = alternating(100);
        let t = table(
            &[("ok", vec![1.0; 100]), ("empty", vec![f32::NAN; 100])],
            labels,
        );
        let all: Vec<usize> = (0..100).collect();
        let error = check_sufficiency(&t, &all, &all).unwrap_err().to_string();
        assert!(error.contains("feature `empty`"), "{error}");
    }

    #[test]
    fn a_feature_that_reveals_the_label_is_flagged_and_noise_is_not() {
        let labels = alternating(200);
        let leaky: Vec<f32> = labels.iter().map(|&l| f32::from(l) * 5.0).collect();
        let inverted: Vec<f32> = labels.iter().map(|&l| 1.0 - f32::from(l)).collect();
        let noise: Vec<f32> = (0..200).map(|i| ((i * 37) % 11) as f32).collect();
        let t = table(
            &[("leaky", leaky), ("noise", noise), ("inverted", inverted)],
            labels,
        );
        let all: Vec<usize> = (0..200).collect();
        let warnings = leakage_warnings(&t, &all).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`leaky`") && warnings[0].contains("1.000"));
        assert!(warnings[1].contains("`inverted`"));
    }
}
