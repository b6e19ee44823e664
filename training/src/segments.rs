//! Training per segment (`train --segment-by FIELD`): one model per level of a categorical
//! profile field, each compared with the global model on the segment's own held-out rows.
//!
//! A segment's model is fitted on that segment's entities alone, through the same pipeline as
//! any model: its own feature plan, the same validation scheme and seed. The time split puts
//! an entity on the validation side by a seeded hash of its id, so the segment's held-out
//! entities are exactly the global run's held-out entities of that segment, and the two
//! models are compared on the same rows (their common held-out rows; with k-fold, every row
//! has an out-of-fold score in both). The comparison is paired: the gain is the segment
//! model's ROC AUC minus the global model's on those rows, and its noise the standard
//! deviation of that gain over bootstrap resamples of the rows. A segment model ships only
//! when its gain is above [`SegmentParams::noise_multiple`] times that noise (and above
//! [`SegmentParams::min_gain`]); a level with fewer than
//! [`SegmentParams::min_positives`] positive rows, or that the data guards refuse, gets no
//! model.

use std::collections::{HashMap, HashSet};

use features::FeaturePlanParams;
use features::LoadedDataset;
use features::builder::{build_features, plan_inputs, resolve_cutoffs};
use features::history::TimestampMs;
use features::load::ENTITY_ID;
use features::spec::ColumnKind;
use models::bundle::ModelName;
use models::metrics::roc_auc;
use polars::prelude::{BooleanChunked, DataFrame, NewChunkedArray};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::TrainError;
use crate::evaluate::{Evaluation, FamilyParams, ValidationPlan};
use crate::pipeline::{Prepared, Source, ValidationMode, validation_plan_with};
use crate::split::HoldoutShare;
use crate::train::{FamilyChoice, choose_family, evaluate_families};

/// How segments are trained and judged; checked by [`SegmentParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentParams {
    /// The categorical profile field whose levels are the segments.
    pub field: String,
    /// Fewest positive rows a level needs for a model of its own.
    pub min_positives: usize,
    /// Bootstrap resamples of the held-out rows for the noise of the gain.
    pub resamples: usize,
    /// A segment model ships when its gain is above this many standard deviations of the
    /// gain's bootstrap distribution.
    pub noise_multiple: f64,
    /// ... and above this ROC AUC gain.
    pub min_gain: f64,
    pub seed: u64,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            field: String::new(),
            min_positives: 100,
            resamples: 500,
            noise_multiple: 2.0,
            min_gain: 0.0,
            seed: 42,
        }
    }
}

impl SegmentParams {
    /// Checks the parameters against the dataset: the field must be a categorical profile
    /// column of it.
    pub fn check(&self, data: &LoadedDataset) -> Result<(), TrainError> {
        let columns: Vec<&str> = data
            .profile_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let Some(column) = data.profile_columns.iter().find(|c| c.name == self.field) else {
            let hint = features::spec::nearest(&self.field, &columns)
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            return Err(TrainError::Data(format!(
                "--segment-by {}: not a profile column of the dataset (its columns: {}){hint}",
                self.field,
                columns.join(", ")
            )));
        };
        if column.kind != ColumnKind::Categorical {
            return Err(TrainError::Data(format!(
                "--segment-by {}: the column is numeric; segments are the levels of a \
                 categorical column",
                self.field
            )));
        }
        if self.resamples < 50 {
            return Err(TrainError::Data(format!(
                "segment resamples is {}; at least 50 are needed to measure the noise",
                self.resamples
            )));
        }
        if !(self.noise_multiple.is_finite() && self.noise_multiple >= 0.0) {
            return Err(TrainError::Data(format!(
                "segment noise multiple is {}; it must be a number >= 0",
                self.noise_multiple
            )));
        }
        if !(self.min_gain.is_finite() && (0.0..1.0).contains(&self.min_gain)) {
            return Err(TrainError::Data(format!(
                "minimum segment gain is {}; it must be in [0, 1)",
                self.min_gain
            )));
        }
        Ok(())
    }
}

/// One level of the segment field: its entities, rows and positive rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLevel {
    pub level: String,
    pub entities: usize,
    pub rows: usize,
    pub positives: usize,
}

/// The levels of `field` (missing values are no segment), most rows first, with their counts
/// in the global feature table.
pub fn segment_levels(prepared: &Prepared, field: &str) -> Result<Vec<SegmentLevel>, TrainError> {
    let by_entity = entity_levels(prepared.data("a segment model")?, field)?;
    let mut levels: HashMap<&str, SegmentLevel> = HashMap::new();
    for level in by_entity.values() {
        levels
            .entry(level.as_str())
            .or_insert_with(|| SegmentLevel {
                level: level.clone(),
                entities: 0,
                rows: 0,
                positives: 0,
            })
            .entities += 1;
    }
    let table = &prepared.table;
    for (i, id) in table.entity_ids.iter().enumerate() {
        if let Some(level) = by_entity.get(id.as_str())
            && let Some(counts) = levels.get_mut(level.as_str())
        {
            counts.rows += 1;
            counts.positives += usize::from(table.labels[i] == 1);
        }
    }
    let mut levels: Vec<SegmentLevel> = levels.into_values().collect();
    levels.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.level.cmp(&b.level)));
    Ok(levels)
}

/// Entity id → level of `field`, for entities that have one.
fn entity_levels(data: &LoadedDataset, field: &str) -> Result<HashMap<String, String>, TrainError> {
    let polars = |e: polars::prelude::PolarsError| TrainError::Data(format!("{field}: {e}"));
    let ids = data.entities.column(ENTITY_ID).map_err(polars)?;
    let ids = ids.str().map_err(polars)?;
    let values = data.entities.column(field).map_err(polars)?;
    let values = values.str().map_err(polars)?;
    Ok(ids
        .iter()
        .zip(values.iter())
        .filter_map(|(id, level)| Some((id?.to_owned(), level?.to_owned())))
        .collect())
}

/// The model name of a segment: the global model's name, `-`, and the level in lower case
/// with every run of other characters than letters and digits made one `-`
/// (`propensity` + `Mid Market` → `propensity-mid-market`).
pub fn segment_model_name(global: &ModelName, level: &str) -> Result<ModelName, TrainError> {
    let mut slug = String::new();
    for c in level.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        return Err(TrainError::Data(format!(
            "segment level {level:?} has no letter or digit to name its model by"
        )));
    }
    ModelName::new(&format!("{global}-{slug}"))
        .map_err(|e| TrainError::Data(format!("segment level {level:?}: its model's name: {e}")))
}

/// `prepared` restricted to the entities whose `field` is `level`, with features rebuilt
/// through a feature plan fitted on them alone (their vocabulary, their levels).
pub fn prepare_segment(
    prepared: &Prepared,
    field: &str,
    level: &str,
) -> Result<Prepared, TrainError> {
    let data = prepared.data("a segment model")?;
    let keep: HashSet<String> = entity_levels(data, field)?
        .into_iter()
        .filter(|(_, l)| l == level)
        .map(|(id, _)| id)
        .collect();
    let only = |frame: &DataFrame| -> Result<DataFrame, TrainError> {
        let polars = |e: polars::prelude::PolarsError| TrainError::Data(format!("{field}: {e}"));
        let ids = frame
            .column(ENTITY_ID)
            .map_err(polars)?
            .str()
            .map_err(polars)?;
        let mask = BooleanChunked::from_iter_values(
            "keep".into(),
            ids.iter().map(|id| id.is_some_and(|id| keep.contains(id))),
        );
        frame.filter(&mask).map_err(polars)
    };
    let mut spec = prepared.spec.clone();
    spec.name = format!("{} [{field} = {level}]", spec.name);
    let subset = LoadedDataset {
        spec: spec.clone(),
        entities: only(&data.entities)?,
        profile_columns: data.profile_columns.clone(),
        events: data.events.as_ref().map(only).transpose()?,
        outcomes: data.outcomes.as_ref().map(only).transpose()?,
        // Said once, for the whole dataset.
        warnings: Vec::new(),
    };
    let cutoffs = resolve_cutoffs(&subset)?;
    let inputs = plan_inputs(&subset, None)?;
    let plan = FeaturePlanParams::new(subset.spec.features.clone()).fit(&inputs)?;
    let table = build_features(&subset, &plan, &cutoffs)?;
    Ok(Prepared {
        spec,
        source: Source::Files(Box::new(subset)),
        plan,
        profile_inputs: inputs.profile,
        cutoffs,
        table,
    })
}

/// A segment model against the global model on the segment's held-out rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Held-out rows both models scored.
    pub rows: usize,
    pub positives: usize,
    pub segment_roc_auc: f64,
    pub global_roc_auc: f64,
    /// `segment_roc_auc - global_roc_auc`.
    pub gain: f64,
    /// Standard deviation of the gain over bootstrap resamples of the rows.
    pub noise: f64,
}

/// Compares the held-out scores of `segment` (its evaluation on its prepared data) with
/// those of `global` on the rows both scored (matched by entity and cutoff). Raw scores:
/// calibration is monotone and does not change a ranking.
pub fn compare_on_holdout(
    global: (&Prepared, &Evaluation),
    segment: (&Prepared, &Evaluation),
    resamples: usize,
    seed: u64,
) -> Result<Comparison, TrainError> {
    let key = |prepared: &Prepared, row: usize| -> (String, TimestampMs) {
        (
            prepared.table.entity_ids[row].clone(),
            prepared.table.cutoffs_ms[row],
        )
    };
    let (gp, ge) = global;
    let global_scores: HashMap<(String, TimestampMs), f64> = ge
        .holdout_rows
        .iter()
        .zip(&ge.raw_scores)
        .map(|(&row, &score)| (key(gp, row), score))
        .collect();
    let (sp, se) = segment;
    let mut seg = Vec::new();
    let mut glob = Vec::new();
    let mut labels = Vec::new();
    for ((&row, &score), &label) in se
        .holdout_rows
        .iter()
        .zip(&se.raw_scores)
        .zip(&se.holdout_labels)
    {
        if let Some(&g) = global_scores.get(&key(sp, row)) {
            seg.push(score);
            glob.push(g);
            labels.push(label);
        }
    }
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(TrainError::Data(format!(
            "the segment's {} common held-out rows hold {positives} positives: both classes \
             are needed to compare",
            labels.len()
        )));
    }
    let auc = |scores: &[f64], labels: &[bool]| {
        roc_auc(scores, labels, None).map_err(|e| TrainError::Data(e.to_string()))
    };
    let segment_roc_auc = auc(&seg, &labels)?;
    let global_roc_auc = auc(&glob, &labels)?;
    let n = labels.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gains = Vec::with_capacity(resamples);
    let (mut s, mut g, mut l) = (vec![0.0; n], vec![0.0; n], vec![false; n]);
    while gains.len() < resamples {
        for j in 0..n {
            let i = rng.random_range(0..n);
            s[j] = seg[i];
            g[j] = glob[i];
            l[j] = labels[i];
        }
        // A resample with one class only has no AUC: drawn again.
        if let (Ok(a), Ok(b)) = (roc_auc(&s, &l, None), roc_auc(&g, &l, None)) {
            gains.push(a - b);
        }
    }
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    let variance =
        gains.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (gains.len() as f64 - 1.0);
    Ok(Comparison {
        rows: n,
        positives,
        segment_roc_auc,
        global_roc_auc,
        gain: segment_roc_auc - global_roc_auc,
        noise: variance.sqrt(),
    })
}

/// How every model of a run is validated and fitted: the global model's settings, which
/// each segment's model follows.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub mode: ValidationMode,
    pub folds: usize,
    pub choice: FamilyChoice,
    pub family_params: FamilyParams,
    pub seed: u64,
    /// The global run's held-out share: a segment holds out the same entities.
    pub holdout: HoldoutShare,
}

/// A segment's model as trained, ready to be assembled into a bundle.
pub struct SegmentModel {
    pub name: ModelName,
    pub prepared: Prepared,
    pub plan: ValidationPlan,
    pub warnings: Vec<String>,
    pub evaluations: Vec<Evaluation>,
    /// Index into `evaluations` of the family shipped.
    pub shipped: usize,
}

/// What became of one level.
pub enum SegmentOutcome {
    /// No model: too few positives, or the guards refused its data (the reason).
    Skipped(String),
    /// Trained and compared with the global model; `model` is `Some` when it ships.
    Compared {
        comparison: Comparison,
        ships: bool,
        why: String,
        model: Option<Box<SegmentModel>>,
    },
}

/// One level of a segmented run.
pub struct SegmentRun {
    pub level: SegmentLevel,
    pub outcome: SegmentOutcome,
}

/// Trains a model per level of `params.field` (levels with enough positives), compares
/// each with the global model (`global`, `global_evaluation`) on the level's held-out rows
/// and keeps those that beat it by more than the noise ([`decide`]). `global_name` names
/// the segment models (`<global_name>-<level>`). `on_level` is called before each level is
/// trained (for progress). An error of one level's data (the guards) skips that level;
/// other errors end the run.
pub fn train_segments(
    global: &Prepared,
    global_evaluation: &Evaluation,
    global_name: &ModelName,
    params: &SegmentParams,
    settings: &RunSettings,
    mut on_level: impl FnMut(&SegmentLevel),
) -> Result<Vec<SegmentRun>, TrainError> {
    params.check(global.data("a segment model")?)?;
    let mut runs = Vec::new();
    for level in segment_levels(global, &params.field)? {
        if level.positives < params.min_positives {
            runs.push(SegmentRun {
                outcome: SegmentOutcome::Skipped(format!(
                    "fewer than {} positive rows",
                    params.min_positives
                )),
                level,
            });
            continue;
        }
        on_level(&level);
        let name = segment_model_name(global_name, &level.level)?;
        let prepared = prepare_segment(global, &params.field, &level.level)?;
        let (plan, warnings) = match validation_plan_with(
            &prepared,
            settings.mode,
            settings.folds,
            settings.seed,
            settings.holdout,
        ) {
            Ok(planned) => planned,
            Err(TrainError::Data(why)) => {
                runs.push(SegmentRun {
                    outcome: SegmentOutcome::Skipped(why),
                    level,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let evaluations = evaluate_families(
            &prepared,
            &plan,
            settings.choice,
            &settings.family_params,
            settings.seed,
            |_| {},
        )?;
        let shipped = choose_family(&evaluations)
            .ok_or_else(|| TrainError::Data("no model family was evaluated".into()))?;
        let comparison = compare_on_holdout(
            (global, global_evaluation),
            (&prepared, &evaluations[shipped]),
            params.resamples,
            params.seed,
        )?;
        let (ships, why) = decide(&comparison, params);
        let model = ships.then(|| {
            Box::new(SegmentModel {
                name,
                prepared,
                plan,
                warnings,
                evaluations,
                shipped,
            })
        });
        runs.push(SegmentRun {
            level,
            outcome: SegmentOutcome::Compared {
                comparison,
                ships,
                why,
                model,
            },
        });
    }
    Ok(runs)
}

/// Whether a segment model with `comparison` ships, and why, in words.
pub fn decide(comparison: &Comparison, params: &SegmentParams) -> (bool, String) {
    let c = comparison;
    let bar = (params.noise_multiple * c.noise).max(params.min_gain);
    if c.gain > bar {
        (
            true,
            format!(
                "ROC AUC {:.4} against the global model's {:.4} on its {} held-out rows: \
                 +{:.4}, above the noise ({} x {:.4})",
                c.segment_roc_auc, c.global_roc_auc, c.rows, c.gain, params.noise_multiple, c.noise
            ),
        )
    } else {
        (
            false,
            format!(
                "ROC AUC {:.4} against the global model's {:.4} on its {} held-out rows: \
                 {:+.4}, not above the noise ({} x {:.4}{}): the global model serves it",
                c.segment_roc_auc,
                c.global_roc_auc,
                c.rows,
                c.gain,
                params.noise_multiple,
                c.noise,
                if params.min_gain > 0.0 {
                    format!(", or the minimum gain {}", params.min_gain)
                } else {
                    String::new()
                }
            ),
        )
    }
}

/// The routing file's table for `route` (the global model's name): each shipped segment's
/// level to its model, the global model as the fallback. `shipped` is (level, model).
pub fn routing_table(route: &ModelName, field: &str, shipped: &[(String, ModelName)]) -> String {
    let quote = |text: &str| {
        let mut quoted = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    };
    let mut text = format!(
        "[{route}]\nfield = {}\nfallback = {}\nrules = [\n",
        quote(field),
        quote(route.as_str())
    );
    for (level, model) in shipped {
        text.push_str(&format!(
            "  {{ levels = [{}], model = {} }},\n",
            quote(level),
            quote(model.as_str())
        ));
    }
    text.push_str("]\n");
    text
}

/// `existing` (a routing file's text) with the table of `route` replaced by `table`, or
/// removed when `table` is `None`; the other tables and comments are kept as they are.
pub fn replace_routing_table(existing: &str, route: &ModelName, table: Option<&str>) -> String {
    let header = format!("[{route}]");
    let mut out = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            skipping = trimmed == header || trimmed.starts_with(&format!("[{route}."));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut out = out.trim_end().to_owned();
    if let Some(table) = table {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(table.trim_end());
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_models_are_named_after_the_global_model_and_the_level() {
        let global = ModelName::new("propensity").unwrap();
        let name = |level: &str| segment_model_name(&global, level).map(|n| n.to_string());
        assert_eq!(name("enterprise").unwrap(), "propensity-enterprise");
        assert_eq!(name("Mid Market").unwrap(), "propensity-mid-market");
        assert_eq!(name("1-10").unwrap(), "propensity-1-10");
        assert_eq!(name(" SMB / EU ").unwrap(), "propensity-smb-eu");
        assert!(name("???").is_err());
    }

    #[test]
    fn the_routing_table_of_one_route_is_replaced_and_the_rest_kept() {
        let route = ModelName::new("propensity").unwrap();
        let table = routing_table(
            &route,
            "segment",
            &[(
                "enter\"prise".into(),
                ModelName::new("propensity-enterprise").unwrap(),
            )],
        );
        assert_eq!(
            table,
            "[propensity]\nfield = \"segment\"\nfallback = \"propensity\"\nrules = [\n  { levels = [\"enter\\\"prise\"], model = \"propensity-enterprise\" },\n]\n"
        );
        let existing = "# routing\n[churn]\nfield = \"plan\"\nfallback = \"churn\"\nrules = [{ levels = [\"pro\"], model = \"churn-pro\" }]\n\n[propensity]\nfield = \"old\"\nfallback = \"propensity\"\nrules = [{ levels = [\"x\"], model = \"propensity-x\" }]\n";
        let replaced = replace_routing_table(existing, &route, Some(&table));
        assert!(replaced.starts_with("# routing\n[churn]\n"), "{replaced}");
        assert!(!replaced.contains("old"), "{replaced}");
        assert!(replaced.ends_with(&table), "{replaced}");
        let removed = replace_routing_table(existing, &route, None);
        assert!(
            !removed.contains("[propensity]") && removed.contains("[churn]"),
            "{removed}"
        );
        assert_eq!(replace_routing_table("", &route, None), "");
    }

    #[test]
    fn a_segment_ships_only_above_the_noise() {
        let params = SegmentParams::default();
        let comparison = |gain: f64, noise: f64| Comparison {
            rows: 1000,
            positives: 50,
            segment_roc_auc: 0.8 + gain,
            global_roc_auc: 0.8,
            gain,
            noise,
        };
        assert!(decide(&comparison(0.03, 0.01), &params).0);
        assert!(!decide(&comparison(0.015, 0.01), &params).0);
        assert!(!decide(&comparison(-0.02, 0.01), &params).0);
        let strict = SegmentParams {
            min_gain: 0.05,
            ..SegmentParams::default()
        };
        let (ships, why) = decide(&comparison(0.03, 0.001), &strict);
        assert!(!ships && why.contains("minimum gain 0.05"), "{why}");
    }
}
