//! Honest validation splits.
//!
//! * Event form ([`time_split`]): the model is validated on the latest scoring moments and
//!   trained only on rows whose label window closed before them, so nothing the model learns
//!   comes from after the validation cutoff. Entities are assigned to one side by a seeded
//!   hash of their id, so no lead or customer appears on both sides.
//! * Tabular form ([`stratified_folds`]): stratified k-fold, every row held out exactly once.

use std::collections::BTreeSet;

use features::builder::FeatureTable;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::TrainError;

/// Share of entities held out for validation in a time split.
pub const VALIDATION_ENTITY_SHARE: f64 = 0.25;
/// With one scoring moment per entity (scored at arrival), the latest rows by time form the
/// validation window: this share of them.
pub const VALIDATION_ROW_SHARE: f64 = 0.25;

/// Which entities a time split holds out for validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HoldoutShare {
    /// A seeded share of the entities (strictly between 0 and 1): their rows from the
    /// validation cutoff on validate, the other entities' rows train. No entity is on both
    /// sides.
    Entities(f64),
    /// Every entity scored from the validation cutoff on validates; training takes the rows of
    /// all entities whose label window closes by then (earlier cutoffs only), so an entity
    /// validated at the last cutoff may have trained at an earlier one.
    AllAtLastCutoff,
}

impl Default for HoldoutShare {
    fn default() -> Self {
        HoldoutShare::Entities(VALIDATION_ENTITY_SHARE)
    }
}

impl std::str::FromStr for HoldoutShare {
    type Err = String;

    /// `all`, or a share strictly between 0 and 1 (`0.25`).
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "all" {
            return Ok(HoldoutShare::AllAtLastCutoff);
        }
        match text.parse::<f64>() {
            Ok(share) if share > 0.0 && share < 1.0 => Ok(HoldoutShare::Entities(share)),
            _ => Err(format!(
                "{text:?}: give a share of entities strictly between 0 and 1 (e.g. 0.25), or \
                 `all` (every entity at the last cutoff validates; training uses earlier \
                 cutoffs only)"
            )),
        }
    }
}

/// Row indices of one train/validation split and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    /// In words, for reports and manifests.
    pub description: String,
}

/// Splits an event-form feature table in time and by entity.
///
/// The validation window starts at `valid_from`: the latest cutoff when rows share calendar
/// cutoffs, else the time from which the latest [`VALIDATION_ROW_SHARE`] of rows are scored.
/// Validation rows: rows scored at or after `valid_from` of the held-out entities (a seeded
/// [`VALIDATION_ENTITY_SHARE`] of all). Training rows: rows of the other entities whose label
/// window `[cutoff, cutoff + horizon)` ends by `valid_from`.
pub fn time_split(
    table: &FeatureTable,
    horizon_days: u32,
    calendar_cutoffs: bool,
    seed: u64,
    holdout: HoldoutShare,
) -> Result<Split, TrainError> {
    if table.n_rows() == 0 {
        return Err(TrainError::Data("the feature table has no rows".into()));
    }
    let valid_from = if calendar_cutoffs {
        let distinct: BTreeSet<i64> = table.cutoffs_ms.iter().copied().collect();
        if distinct.len() < 2 {
            return Err(TrainError::Data(format!(
                "a time split needs at least two cutoffs; the data has {} (add cutoffs to \
                 [label] cutoffs)",
                distinct.len()
            )));
        }
        *distinct.last().unwrap_or(&0)
    } else {
        let mut times = table.cutoffs_ms.clone();
        times.sort_unstable();
        let position = ((times.len() as f64) * (1.0 - VALIDATION_ROW_SHARE)) as usize;
        times[position.min(times.len() - 1)]
    };
    let horizon_ms = i64::from(horizon_days) * 86_400_000;
    let share = match holdout {
        HoldoutShare::Entities(share) => share,
        HoldoutShare::AllAtLastCutoff => 1.0,
    };
    let held_out = |entity: &str| unit_interval_hash(entity, seed) < share;
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for row in 0..table.n_rows() {
        let cutoff = table.cutoffs_ms[row];
        let closed = cutoff.saturating_add(horizon_ms) <= valid_from;
        match holdout {
            HoldoutShare::AllAtLastCutoff if cutoff >= valid_from => valid.push(row),
            HoldoutShare::AllAtLastCutoff if closed => train.push(row),
            HoldoutShare::AllAtLastCutoff => {}
            HoldoutShare::Entities(_) if held_out(&table.entity_ids[row]) => {
                if cutoff >= valid_from {
                    valid.push(row);
                }
            }
            HoldoutShare::Entities(_) if closed => train.push(row),
            HoldoutShare::Entities(_) => {}
        }
    }
    let description = match holdout {
        HoldoutShare::Entities(share) => format!(
            "time split: validate on rows scored from {} on ({} rows, {:.0} % of entities held \
             out); train on the other entities' rows whose {horizon_days}-day label window \
             closed by then ({} rows)",
            format_day(valid_from),
            valid.len(),
            100.0 * share,
            train.len()
        ),
        HoldoutShare::AllAtLastCutoff => format!(
            "time split: validate on every entity's rows scored from {} on ({} rows); train on \
             all entities' rows whose {horizon_days}-day label window closed by then ({} rows, \
             earlier cutoffs only)",
            format_day(valid_from),
            valid.len(),
            train.len()
        ),
    };
    Ok(Split {
        train,
        valid,
        description,
    })
}

/// Stratified `k`-fold: fold index of every row, positives and negatives each spread evenly
/// over the folds in a seeded random order.
pub fn stratified_folds(labels: &[u8], k: usize, seed: u64) -> Result<Vec<usize>, TrainError> {
    if k < 2 {
        return Err(TrainError::Data(format!("k-fold needs k >= 2, not {k}")));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold_of = vec![0; labels.len()];
    // One round-robin over both classes, so that fold sizes differ by at most one row.
    let mut next_fold = 0;
    for class in [1u8, 0u8] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        if rows.len() < k {
            return Err(TrainError::Data(format!(
                "{k}-fold validation needs at least {k} rows of class {class}; the data has {}",
                rows.len()
            )));
        }
        rows.shuffle(&mut rng);
        for row in rows {
            fold_of[row] = next_fold;
            next_fold = (next_fold + 1) % k;
        }
    }
    Ok(fold_of)
}

/// A deterministic hash of `key` mapped to `[0, 1)` (FNV-1a, then a SplitMix64 finaliser), the
/// same on every platform and Rust version.
pub fn unit_interval_hash(key: &str, seed: u64) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// `YYYY-MM-DD` (UTC) of a time in ms.
pub fn format_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn table(rows: &[(&str, i64, u8)]) -> FeatureTable {
        FeatureTable {
            feature_names: vec!["x".into()],
            entity_ids: rows.iter().map(|r| r.0.to_string()).collect(),
            cutoffs_ms: rows.iter().map(|r| r.1 * DAY).collect(),
            labels: rows.iter().map(|r| r.2).collect(),
            values: vec![0.0; rows.len()],
        }
    }

    /// 400 entities scored every 30 days at days 0..=150.
    fn every_30_days_for_400_leads() -> FeatureTable {
        let names: Vec<String> = (0..400).map(|i| format!("lead-{i}")).collect();
        let mut rows = Vec::new();
        for name in &names {
            for day in (0..=150).step_by(30) {
                rows.push((name.as_str(), day, 0));
            }
        }
        table(&rows)
    }

    #[test]
    fn time_split_separates_entities_and_closes_label_windows() {
        let table = every_30_days_for_400_leads();
        let split = time_split(&table, 60, true, 7, HoldoutShare::default()).unwrap();
        let train_entities: BTreeSet<&str> = split
            .train
            .iter()
            .map(|&i| table.entity_ids[i].as_str())
            .collect();
        let valid_entities: BTreeSet<&str> = split
            .valid
            .iter()
            .map(|&i| table.entity_ids[i].as_str())
            .collect();
        assert!(train_entities.is_disjoint(&valid_entities));
        assert!(
            split
                .valid
                .iter()
                .all(|&i| table.cutoffs_ms[i] == 150 * DAY)
        );
        // Label windows of 60 days must close by day 150: cutoffs 0..=90.
        assert!(split.train.iter().all(|&i| table.cutoffs_ms[i] <= 90 * DAY));
        assert!(split.train.iter().any(|&i| table.cutoffs_ms[i] == 90 * DAY));
        let share = valid_entities.len() as f64 / 400.0;
        assert!((share - VALIDATION_ENTITY_SHARE).abs() < 0.07, "{share}");
        // Seeded: the same split again, another one with another seed.
        assert_eq!(
            split,
            time_split(&table, 60, true, 7, HoldoutShare::default()).unwrap()
        );
        assert_ne!(
            split.valid,
            time_split(&table, 60, true, 8, HoldoutShare::default())
                .unwrap()
                .valid
        );
    }

    #[test]
    fn the_held_out_share_is_set_and_all_validates_every_entity_at_the_last_cutoff() {
        let table = every_30_days_for_400_leads();
        let valid_entities = |split: &Split| -> BTreeSet<String> {
            split
                .valid
                .iter()
                .map(|&i| table.entity_ids[i].clone())
                .collect()
        };
        let half = time_split(&table, 60, true, 7, HoldoutShare::Entities(0.5)).unwrap();
        let share = valid_entities(&half).len() as f64 / 400.0;
        assert!((share - 0.5).abs() < 0.07, "{share}");
        assert!(half.description.contains("50 % of entities held out"));
        let all = time_split(&table, 60, true, 7, HoldoutShare::AllAtLastCutoff).unwrap();
        // Every entity at the last cutoff, and training on every entity's earlier rows whose
        // window closed (days 0..=90), none from the validation cutoff's window.
        assert_eq!(valid_entities(&all).len(), 400);
        assert!(all.valid.iter().all(|&i| table.cutoffs_ms[i] == 150 * DAY));
        assert_eq!(all.train.len(), 400 * 4);
        assert!(
            all.train
                .iter()
                .all(|&i| table.cutoffs_ms[i] + 60 * DAY <= 150 * DAY)
        );
        assert!(all.description.contains("every entity"));
        assert_eq!(
            "all".parse::<HoldoutShare>(),
            Ok(HoldoutShare::AllAtLastCutoff)
        );
        assert_eq!(
            "0.3".parse::<HoldoutShare>(),
            Ok(HoldoutShare::Entities(0.3))
        );
        for bad in ["0", "1", "1.5", "-0.2", "half", "NaN"] {
            assert!(bad.parse::<HoldoutShare>().is_err(), "{bad}");
        }
    }

    #[test]
    fn time_split_at_arrival_validates_on_the_latest_rows() {
        let names: Vec<String> = (0..1000).map(|i| format!("mql-{i}")).collect();
        let rows: Vec<(&str, i64, u8)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as i64, 0))
            .collect();
        let table = table(&rows);
        let split = time_split(&table, 10, false, 1, HoldoutShare::default()).unwrap();
        assert!(
            split
                .valid
                .iter()
                .all(|&i| table.cutoffs_ms[i] >= 750 * DAY)
        );
        assert!(
            split
                .train
                .iter()
                .all(|&i| table.cutoffs_ms[i] <= 740 * DAY)
        );
    }

    #[test]
    fn time_split_needs_two_calendar_cutoffs() {
        let table = table(&[("a", 5, 0), ("b", 5, 1)]);
        let error = time_split(&table, 30, true, 0, HoldoutShare::default()).unwrap_err();
        assert!(
            error.to_string().contains("at least two cutoffs"),
            "{error}"
        );
    }

    #[test]
    fn stratified_folds_balance_each_class() {
        let labels: Vec<u8> = (0..103).map(|i| u8::from(i % 10 == 0)).collect();
        let folds = stratified_folds(&labels, 5, 3).unwrap();
        for fold in 0..5 {
            let positives = (0..labels.len())
                .filter(|&i| folds[i] == fold && labels[i] == 1)
                .count();
            let rows = folds.iter().filter(|&&f| f == fold).count();
            assert!((2..=3).contains(&positives), "fold {fold}: {positives}");
            assert!((20..=21).contains(&rows), "fold {fold}: {rows}");
        }
        let error = stratified_folds(&[0, 0, 0, 1], 2, 0).unwrap_err();
        assert!(error.to_string().contains("class 1"), "{error}");
    }

    #[test]
    fn unit_interval_hash_is_fixed() {
        // Pinned values (computed independently in Python): a change would silently reshuffle
        // every validation split.
        assert_eq!(unit_interval_hash("lead-1", 0), 0.27347260182920907);
        assert_eq!(unit_interval_hash("lead-2", 0), 0.41473820422257457);
        assert_ne!(
            unit_interval_hash("lead-1", 0),
            unit_interval_hash("lead-1", 1)
        );
    }
}
