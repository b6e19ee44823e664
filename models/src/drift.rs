//! Drift of scored traffic against the training data: the reference a bundle stores, the
//! counts of what is scored, and the report comparing the two.
//!
//! * [`DriftReference`] is fitted on training feature rows when a bundle is made (the
//!   trainer picks them: the latest scoring moment's, which stand for today's traffic) and
//!   stored in its manifest: for every numeric or history feature the decile edges of its
//!   non-missing training values and the share of rows in each bin, plus the share missing;
//!   for every categorical profile field the share of each one-hot slot (kept levels,
//!   `<other>`, `<missing>`) and the levels seen in training but grouped into `<other>`.
//! * [`DriftReference::counter`] makes a [`DriftCounter`], whose
//!   [`DriftCounter::for_each_cell`] says which counters one scored row increments; the
//!   server keeps them in atomics ([`DriftCounter::n_cells`] of them), an offline check in a
//!   plain `Vec<u64>`.
//! * [`DriftCounter::report`] turns counts into a [`DriftReport`]: population stability
//!   index (PSI) per feature and per categorical field, share missing, share of unknown
//!   levels (never seen in training, as opposed to rare ones the model groups as
//!   `<other>`), each beside its training figure.
//!
//! PSI is `Σ (a_i − e_i) ln(a_i / e_i)` over the bins (missing values are a bin of their
//! own), with shares floored at [`PSI_FLOOR`] so an empty bin stays finite. The usual
//! reading: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a significant one.

use std::collections::{HashMap, HashSet};

use features::plan::{ProfileFeatureKind, ProfileInput, number_as_level};
use features::{FeaturePlan, ProfileValue};
use serde::{Deserialize, Serialize};

use crate::bundle::{FeatureKind, describe_features};

/// Bins a numeric feature's non-missing values are cut into (deciles; fewer when values
/// repeat).
pub const NUMERIC_BINS: usize = 10;
/// Most levels of a field kept as "seen in training" beyond the plan's own (the most
/// frequent ones); a rarer level past these reads as unknown.
pub const MAX_RARE_LEVELS: usize = 10_000;
/// Smallest share a bin counts with in the PSI (an empty bin would make it infinite).
pub const PSI_FLOOR: f64 = 1e-4;

/// The training distribution of a model's inputs, stored in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// Training rows the figures were counted on.
    pub rows: usize,
    /// Numeric profile features and history features, in input order.
    pub numeric: Vec<NumericReference>,
    /// Categorical profile fields, in the plan's order.
    pub categorical: Vec<CategoricalReference>,
}

/// One numeric or history feature's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericReference {
    /// The feature's name.
    pub feature: String,
    /// Its column in the model's input.
    pub index: usize,
    /// Upper edges of the bins, increasing: a value goes to the first bin whose edge is at
    /// least the value, or to the last bin (`edges.len()`) when above every edge.
    pub edges: Vec<f32>,
    /// Share of the non-missing training values in each bin (`edges.len() + 1`, summing to
    /// 1, or all zero when every value was missing).
    pub shares: Vec<f64>,
    /// Share of training rows where the feature was missing (`NaN`).
    pub missing_share: f64,
}

/// One categorical profile field's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalReference {
    /// The profile field.
    pub field: String,
    /// Its index among the plan's profile fields.
    pub field_index: usize,
    /// Column of its first one-hot feature in the model's input.
    pub first_feature: usize,
    /// Share of training rows in each one-hot slot: the kept levels, `<other>`, then
    /// `<missing>`.
    pub shares: Vec<f64>,
    /// Levels seen in training that the plan groups into `<other>` (too rare), sorted; a
    /// value in `<other>` that is not one of these is unknown.
    pub rare_levels: Vec<String>,
}

/// Where one field's or feature's counters start and how many bins it has.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    bins: usize,
}

/// The counter layout of a reference. Numeric feature `i`: its bins, then one missing
/// counter. Categorical field `j`: its slots, then one unknown counter.
#[derive(Debug, Clone)]
struct Layout {
    numeric: Vec<Span>,
    categorical: Vec<Span>,
    rare: Vec<HashSet<String>>,
    len: usize,
}

/// A [`DriftReference`] ready to count rows: the counter layout and the rare levels as sets.
#[derive(Debug, Clone)]
pub struct DriftCounter {
    reference: DriftReference,
    layout: Layout,
}

/// Drift of the rows counted against the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Rows counted.
    pub rows: u64,
    /// Numeric and history features, in input order.
    pub features: Vec<FeatureDrift>,
    /// Categorical profile fields.
    pub fields: Vec<FieldDrift>,
}

/// Drift of one numeric or history feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    /// PSI of the counted rows' bins (missing a bin of its own) against training; `None`
    /// when no row was counted.
    pub psi: Option<f64>,
    /// Share of counted rows where the feature was missing.
    pub missing_share: Option<f64>,
    /// The same share in training.
    pub training_missing_share: f64,
}

/// Drift of one categorical profile field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDrift {
    pub field: String,
    /// PSI over the field's one-hot slots (kept levels, `<other>`, `<missing>`).
    pub psi: Option<f64>,
    /// Share of counted rows where the field was missing.
    pub missing_share: Option<f64>,
    pub training_missing_share: f64,
    /// Share of counted rows whose level was never seen in training.
    pub unknown_share: Option<f64>,
    /// Share of counted rows the model read as `<other>` (rare or unknown levels).
    pub other_share: Option<f64>,
    pub training_other_share: f64,
}

/// A reference that does not fit the model it is stored with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("drift reference: {0}")]
pub struct DriftReferenceError(pub String);

impl DriftReference {
    /// Counts the training distribution of `rows` (feature rows of `plan`, each of length
    /// `plan.n_features()`); `profile_inputs` are the profile columns as the plan was fitted
    /// on them, for the levels seen in training.
    pub fn fit<'a>(
        plan: &FeaturePlan,
        rows: impl Iterator<Item = &'a [f32]>,
        profile_inputs: &[ProfileInput],
    ) -> Result<Self, DriftReferenceError> {
        let descriptions = describe_features(plan);
        let width = descriptions.len();
        let mut columns: Vec<Vec<f32>> = Vec::new();
        let mut numeric_index = Vec::new();
        let mut categorical: Vec<CategoricalReference> = Vec::new();
        for d in &descriptions {
            match &d.kind {
                FeatureKind::Numeric { .. } | FeatureKind::History => {
                    numeric_index.push(d.index);
                    columns.push(Vec::new());
                }
                FeatureKind::Categorical { field, .. } => {
                    if categorical.last().is_none_or(|c| c.field != *field) {
                        let field_index = plan
                            .profile_fields()
                            .iter()
                            .position(|f| f.name == *field)
                            .ok_or_else(|| {
                                DriftReferenceError(format!(
                                    "feature {} names field `{field}`, not in the plan",
                                    d.name
                                ))
                            })?;
                        categorical.push(CategoricalReference {
                            field: field.clone(),
                            field_index,
                            first_feature: d.index,
                            shares: Vec::new(),
                            rare_levels: Vec::new(),
                        });
                    }
                    if let Some(c) = categorical.last_mut() {
                        c.shares.push(0.0);
                    }
                }
            }
        }
        let mut n_rows = 0usize;
        for (r, row) in rows.enumerate() {
            if row.len() != width {
                return Err(DriftReferenceError(format!(
                    "row {r} has {} features, the plan {width}",
                    row.len()
                )));
            }
            n_rows += 1;
            for (column, &i) in columns.iter_mut().zip(&numeric_index) {
                column.push(row[i]);
            }
            for c in &mut categorical {
                let block = &row[c.first_feature..c.first_feature + c.shares.len()];
                if let Some(slot) = block.iter().position(|&x| x == 1.0) {
                    c.shares[slot] += 1.0;
                }
            }
        }
        if n_rows == 0 {
            return Err(DriftReferenceError("no training rows".into()));
        }
        let numeric = columns
            .into_iter()
            .zip(numeric_index)
            .map(|(values, index)| numeric_reference(&descriptions[index].name, index, values))
            .collect();
        for c in &mut categorical {
            for share in &mut c.shares {
                *share /= n_rows as f64;
            }
            c.rare_levels = rare_levels(plan, c, profile_inputs);
        }
        Ok(DriftReference {
            rows: n_rows,
            numeric,
            categorical,
        })
    }

    /// Checks the reference against the model's plan: columns in range and of the right
    /// kind, shares that are shares.
    pub fn check(&self, plan: &FeaturePlan) -> Result<(), DriftReferenceError> {
        let descriptions = describe_features(plan);
        let fail = |m: String| Err(DriftReferenceError(m));
        for n in &self.numeric {
            match descriptions.get(n.index) {
                Some(d)
                    if d.name == n.feature
                        && !matches!(d.kind, FeatureKind::Categorical { .. }) => {}
                _ => {
                    return fail(format!(
                        "`{}` is not numeric feature {} of the model",
                        n.feature, n.index
                    ));
                }
            }
            if n.shares.len() != n.edges.len() + 1 {
                return fail(format!(
                    "`{}` has {} bin shares for {} edges",
                    n.feature,
                    n.shares.len(),
                    n.edges.len()
                ));
            }
            if !n.edges.windows(2).all(|w| w[0] < w[1]) || n.edges.iter().any(|e| !e.is_finite()) {
                return fail(format!(
                    "`{}`: bin edges must increase and be finite",
                    n.feature
                ));
            }
            check_shares(&n.feature, &n.shares, n.missing_share)?;
        }
        for c in &self.categorical {
            let block = descriptions.get(c.first_feature..c.first_feature + c.shares.len());
            let fits = block.is_some_and(|block| {
                block.iter().all(|d| matches!(&d.kind, FeatureKind::Categorical { field, .. } if *field == c.field))
            }) && plan.profile_fields().get(c.field_index).is_some_and(|f| {
                // The whole block: every kept level, then `<other>` and `<missing>`.
                f.name == c.field
                    && matches!(&f.kind, ProfileFeatureKind::Categorical { levels } if levels.len() + 2 == c.shares.len())
            });
            if !fits || c.shares.len() < 2 {
                return fail(format!(
                    "field `{}` does not match the model's one-hot block at {}",
                    c.field, c.first_feature
                ));
            }
            check_shares(&c.field, &c.shares, 0.0)?;
        }
        Ok(())
    }

    /// Ready to count rows.
    pub fn counter(&self) -> DriftCounter {
        let mut len = 0;
        let mut span = |bins: usize| {
            let s = Span { start: len, bins };
            len += bins + 1;
            s
        };
        let numeric = self.numeric.iter().map(|n| span(n.shares.len())).collect();
        let categorical = self
            .categorical
            .iter()
            .map(|c| span(c.shares.len()))
            .collect();
        DriftCounter {
            layout: Layout {
                numeric,
                categorical,
                rare: self
                    .categorical
                    .iter()
                    .map(|c| c.rare_levels.iter().cloned().collect())
                    .collect(),
                len,
            },
            reference: self.clone(),
        }
    }
}

impl DriftCounter {
    /// The reference counted against.
    pub fn reference(&self) -> &DriftReference {
        &self.reference
    }

    /// Counters a row needs (see [`DriftCounter::for_each_cell`]).
    pub fn n_cells(&self) -> usize {
        self.layout.len
    }

    /// Calls `increment` with the index of every counter one scored row adds to: a bin or
    /// the missing counter of each numeric feature, a slot of each categorical field and,
    /// when its level was never seen in training, the field's unknown counter. `row` is the
    /// row's features, `profile` its profile values in the plan's order (as the request
    /// gave them).
    pub fn for_each_cell(
        &self,
        row: &[f32],
        profile: &[ProfileValue],
        mut increment: impl FnMut(usize),
    ) {
        for (n, span) in self.reference.numeric.iter().zip(&self.layout.numeric) {
            let Some(&x) = row.get(n.index) else { continue };
            if x.is_nan() {
                increment(span.start + span.bins);
            } else {
                increment(span.start + n.edges.partition_point(|&e| e < x));
            }
        }
        for ((c, span), rare) in self
            .reference
            .categorical
            .iter()
            .zip(&self.layout.categorical)
            .zip(&self.layout.rare)
        {
            let Some(block) = row.get(c.first_feature..c.first_feature + span.bins) else {
                continue;
            };
            let Some(slot) = block.iter().position(|&x| x == 1.0) else {
                continue;
            };
            increment(span.start + slot);
            let other_slot = span.bins - 2;
            if slot == other_slot {
                let known = match profile.get(c.field_index) {
                    Some(ProfileValue::Text(text)) => rare.contains(text.as_str()),
                    Some(ProfileValue::Number(x)) => rare.contains(&number_as_level(*x)),
                    _ => true,
                };
                if !known {
                    increment(span.start + span.bins);
                }
            }
        }
    }

    /// The drift of `rows` counted rows with counters `cells` (length
    /// [`DriftCounter::n_cells`]).
    pub fn report(&self, rows: u64, cells: &[u64]) -> DriftReport {
        let cell = |i: usize| cells.get(i).copied().unwrap_or(0);
        let share = |count: u64| (rows > 0).then(|| count as f64 / rows as f64);
        let features = self
            .reference
            .numeric
            .iter()
            .zip(&self.layout.numeric)
            .map(|(n, span)| {
                let missing = cell(span.start + span.bins);
                let expected = n
                    .shares
                    .iter()
                    .map(|s| s * (1.0 - n.missing_share))
                    .chain([n.missing_share]);
                let actual = (0..=span.bins).map(|b| cell(span.start + b));
                FeatureDrift {
                    feature: n.feature.clone(),
                    psi: (rows > 0).then(|| psi(expected, actual, rows)),
                    missing_share: share(missing),
                    training_missing_share: n.missing_share,
                }
            })
            .collect();
        let fields = self
            .reference
            .categorical
            .iter()
            .zip(&self.layout.categorical)
            .map(|(c, span)| {
                let actual = (0..span.bins).map(|b| cell(span.start + b));
                FieldDrift {
                    field: c.field.clone(),
                    psi: (rows > 0).then(|| psi(c.shares.iter().copied(), actual, rows)),
                    missing_share: share(cell(span.start + span.bins - 1)),
                    training_missing_share: c.shares[span.bins - 1],
                    unknown_share: share(cell(span.start + span.bins)),
                    other_share: share(cell(span.start + span.bins - 2)),
                    training_other_share: c.shares[span.bins - 2],
                }
            })
            .collect();
        DriftReport {
            rows,
            features,
            fields,
        }
    }
}

/// PSI of observed bin counts `actual` (of `rows` rows) against expected shares.
fn psi(expected: impl Iterator<Item = f64>, actual: impl Iterator<Item = u64>, rows: u64) -> f64 {
    expected
        .zip(actual)
        .map(|(e, a)| {
            let e = e.max(PSI_FLOOR);
            let a = (a as f64 / rows as f64).max(PSI_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Decile edges of a column's non-missing values and the share in each bin.
fn numeric_reference(feature: &str, index: usize, mut values: Vec<f32>) -> NumericReference {
    let rows = values.len();
    values.retain(|x| !x.is_nan());
    let missing_share = (rows - values.len()) as f64 / rows as f64;
    values.sort_by(f32::total_cmp);
    let n = values.len();
    let mut edges: Vec<f32> = Vec::new();
    if n > 0 {
        for q in 1..NUMERIC_BINS {
            // The value below which a share q / NUMERIC_BINS of the values lie.
            let position = (q * n).div_ceil(NUMERIC_BINS).saturating_sub(1);
            let edge = values[position];
            // The largest value is no edge: the last bin is open above.
            if edge < values[n - 1] && edges.last().is_none_or(|&last| last < edge) {
                edges.push(edge);
            }
        }
    }
    let mut shares = vec![0.0; edges.len() + 1];
    for x in &values {
        shares[edges.partition_point(|&e| e < *x)] += 1.0;
    }
    if n > 0 {
        for s in &mut shares {
            *s /= n as f64;
        }
    }
    NumericReference {
        feature: feature.to_string(),
        index,
        edges,
        shares,
        missing_share,
    }
}

/// The levels of `c`'s field seen when the plan was fitted but not kept by it, the most
/// frequent [`MAX_RARE_LEVELS`], sorted.
fn rare_levels(
    plan: &FeaturePlan,
    c: &CategoricalReference,
    profile_inputs: &[ProfileInput],
) -> Vec<String> {
    let kept: HashSet<&str> = match plan.profile_fields().get(c.field_index).map(|f| &f.kind) {
        Some(ProfileFeatureKind::Categorical { levels }) => {
            levels.iter().map(String::as_str).collect()
        }
        _ => HashSet::new(),
    };
    let counts: HashMap<&str, usize> = profile_inputs
        .iter()
        .find(|p| p.name == c.field)
        .map(|p| {
            p.level_counts
                .iter()
                .map(|(l, n)| (l.as_str(), *n))
                .collect()
        })
        .unwrap_or_default();
    let mut rare: Vec<(&str, usize)> = counts
        .into_iter()
        .filter(|(level, _)| !kept.contains(level))
        .collect();
    rare.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    rare.truncate(MAX_RARE_LEVELS);
    let mut levels: Vec<String> = rare.into_iter().map(|(l, _)| l.to_string()).collect();
    levels.sort();
    levels
}

fn check_shares(name: &str, shares: &[f64], missing: f64) -> Result<(), DriftReferenceError> {
    let total: f64 = shares.iter().sum();
    let valid = shares
        .iter()
        .chain([&missing])
        .all(|s| (0.0..=1.0).contains(s))
        && (total.abs() < 1e-6 || (total - 1.0).abs() < 1e-6);
    if valid {
        Ok(())
    } else {
        Err(DriftReferenceError(format!(
            "`{name}`: shares must lie in [0, 1] and sum to 1, got {shares:?} (missing {missing})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use features::FeaturePlanParams;
    use features::history::EntityHistory;
    use features::spec::{ColumnKind, FeatureOptions, Form};

    use super::*;

    /// A tabular plan with numeric `visits` and categorical `source`: `web` and `email`
    /// kept (seen 30 and 20 times), `fax` seen 2 times (rare, grouped into `<other>`).
    fn plan_and_inputs() -> (FeaturePlan, Vec<ProfileInput>) {
        let inputs = vec![
            ProfileInput {
                name: "visits".into(),
                kind: ColumnKind::Numeric,
                level_counts: HashMap::new(),
            },
            ProfileInput {
                name: "source".into(),
                kind: ColumnKind::Categorical,
                level_counts: [("web", 30), ("email", 20), ("fax", 2)]
                    .into_iter()
                    .map(|(l, n)| (l.to_string(), n))
                    .collect(),
            },
        ];
        let options = FeatureOptions {
            min_level_count: 5,
            ..FeatureOptions::default()
        };
        let plan = FeaturePlanParams::new(options)
            .fit(&features::plan::PlanInputs {
                form: Form::Tabular,
                profile: inputs.clone(),
                event_types: BTreeMap::new(),
                channels: Vec::new(),
            })
            .unwrap();
        (plan, inputs)
    }

    fn row(
        plan: &FeaturePlan,
        visits: ProfileValue,
        source: ProfileValue,
    ) -> (Vec<f32>, Vec<ProfileValue>) {
        let history = EntityHistory {
            created_at_ms: 0,
            profile: vec![visits, source],
            events: Vec::new(),
        };
        (plan.compute(&history, 1).unwrap(), history.profile)
    }

    fn text(s: &str) -> ProfileValue {
        ProfileValue::Text(s.to_string())
    }

    /// Training: visits 1..=100 (one missing in every ten rows replaced by NaN: rows
    /// 10, 20, ... have no visits), source web for 60 rows, email for 30, fax for 5,
    /// missing for 5.
    fn training_rows(plan: &FeaturePlan) -> Vec<(Vec<f32>, Vec<ProfileValue>)> {
        (1..=100)
            .map(|i| {
                let visits = if i % 10 == 0 {
                    ProfileValue::Missing
                } else {
                    ProfileValue::Number(i as f64)
                };
                let source = match i {
                    1..=60 => text("web"),
                    61..=90 => text("email"),
                    91..=95 => text("fax"),
                    _ => ProfileValue::Missing,
                };
                row(plan, visits, source)
            })
            .collect()
    }

    fn count(counter: &DriftCounter, rows: &[(Vec<f32>, Vec<ProfileValue>)]) -> DriftReport {
        let mut cells = vec![0u64; counter.n_cells()];
        for (features, profile) in rows {
            counter.for_each_cell(features, profile, |i| cells[i] += 1);
        }
        counter.report(rows.len() as u64, &cells)
    }

    #[test]
    fn deciles_of_the_non_missing_values_and_their_shares() {
        let values: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let r = numeric_reference("x", 0, values);
        assert_eq!(
            r.edges,
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert!(
            r.shares.iter().all(|s| (s - 0.1).abs() < 1e-12),
            "{:?}",
            r.shares
        );
        assert_eq!(r.missing_share, 0.0);

        // 70 zeros, then 1..=30, then 25 missing: ties make one edge of the first seven
        // deciles, and the top value is no edge.
        let mut values = vec![0.0f32; 70];
        values.extend((1..=30).map(|i| i as f32));
        values.extend([f32::NAN; 25]);
        let r = numeric_reference("x", 0, values);
        assert_eq!(r.edges, [0.0, 10.0, 20.0]);
        assert_eq!(r.shares, [0.7, 0.1, 0.1, 0.1]);
        assert_eq!(r.missing_share, 0.2);

        // A constant column is one bin.
        let r = numeric_reference("x", 0, vec![3.0; 8]);
        assert!(r.edges.is_empty());
        assert_eq!(r.shares, [1.0]);
    }

    #[test]
    fn psi_matches_the_formula_by_hand() {
        // Expected 50/50, observed 80/20: 0.3 ln 1.6 + 0.3 ln 2.5.
        let value = psi([0.5, 0.5].into_iter(), [80u64, 20].into_iter(), 100);
        let by_hand = 0.3 * 1.6f64.ln() + 0.3 * 2.5f64.ln();
        assert!((value - by_hand).abs() < 1e-12, "{value} vs {by_hand}");
        // An empty expected bin counts as PSI_FLOOR.
        let value = psi([1.0, 0.0].into_iter(), [90u64, 10].into_iter(), 100);
        let by_hand = (0.9 - 1.0) * 0.9f64.ln() + (0.1 - PSI_FLOOR) * (0.1 / PSI_FLOOR).ln();
        assert!((value - by_hand).abs() < 1e-12, "{value} vs {by_hand}");
    }

    #[test]
    fn the_reference_counts_training_and_reads_rare_apart_from_unknown() {
        let (plan, inputs) = plan_and_inputs();
        let training = training_rows(&plan);
        let reference =
            DriftReference::fit(&plan, training.iter().map(|(r, _)| r.as_slice()), &inputs)
                .unwrap();
        reference.check(&plan).unwrap();
        assert_eq!(reference.rows, 100);
        let visits = &reference.numeric[0];
        assert_eq!(visits.feature, "visits");
        assert_eq!(visits.missing_share, 0.1);
        assert_eq!(visits.edges.len(), 9);
        let source = &reference.categorical[0];
        assert_eq!(source.field, "source");
        // Slots: email, web, <other>, <missing>.
        assert_eq!(source.shares, [0.3, 0.6, 0.05, 0.05]);
        assert_eq!(source.rare_levels, ["fax"]);

        let counter = reference.counter();
        // The training rows against their own reference: no drift.
        let same = count(&counter, &training);
        assert_eq!(same.rows, 100);
        assert!(same.features[0].psi.unwrap().abs() < 1e-12, "{same:?}");
        assert!(same.fields[0].psi.unwrap().abs() < 1e-12, "{same:?}");
        assert_eq!(same.features[0].missing_share, Some(0.1));
        assert_eq!(same.fields[0].missing_share, Some(0.05));
        assert_eq!(same.fields[0].other_share, Some(0.05));
        assert_eq!(same.fields[0].unknown_share, Some(0.0));

        // Shifted: visits all high or missing, sources new or missing.
        let shifted: Vec<_> = (0..100)
            .map(|i| {
                let visits = if i % 2 == 0 {
                    ProfileValue::Missing
                } else {
                    ProfileValue::Number(500.0)
                };
                let source = match i % 4 {
                    0 => text("tiktok"),
                    1 => text("fax"),
                    2 => ProfileValue::Missing,
                    _ => text("web"),
                };
                row(&plan, visits, source)
            })
            .collect();
        let moved = count(&counter, &shifted);
        let v = &moved.features[0];
        assert_eq!(v.missing_share, Some(0.5));
        assert_eq!(v.training_missing_share, 0.1);
        // Bins: the top bin has 0.09 of training and 0.5 now, missing 0.1 -> 0.5, every
        // other bin 0.09 -> 0 (floored).
        let top = (0.5 - 0.09) * (0.5f64 / 0.09).ln();
        let missing = (0.5 - 0.1) * (0.5f64 / 0.1).ln();
        let emptied = 9.0 * (PSI_FLOOR - 0.09) * (PSI_FLOOR / 0.09).ln();
        assert!(
            (v.psi.unwrap() - (top + missing + emptied)).abs() < 1e-9,
            "{v:?}"
        );
        let s = &moved.fields[0];
        assert_eq!(
            s.unknown_share,
            Some(0.25),
            "tiktok is unknown, fax only rare"
        );
        assert_eq!(s.other_share, Some(0.5));
        assert_eq!(s.missing_share, Some(0.25));
        assert!(s.psi.unwrap() > 0.2, "{s:?}");

        // Nothing counted: no figures, training figures still there.
        let empty = counter.report(0, &vec![0; counter.n_cells()]);
        assert_eq!(empty.features[0].psi, None);
        assert_eq!(empty.fields[0].unknown_share, None);
        assert_eq!(empty.fields[0].training_other_share, 0.05);
    }

    #[test]
    fn a_reference_that_does_not_fit_the_plan_is_refused() {
        let (plan, inputs) = plan_and_inputs();
        let training = training_rows(&plan);
        let reference =
            DriftReference::fit(&plan, training.iter().map(|(r, _)| r.as_slice()), &inputs)
                .unwrap();

        let mut wrong_index = reference.clone();
        wrong_index.numeric[0].index = 1;
        let err = wrong_index.check(&plan).unwrap_err().to_string();
        assert!(err.contains("`visits` is not numeric feature 1"), "{err}");

        let mut wrong_shares = reference.clone();
        wrong_shares.categorical[0].shares[0] = 0.9;
        let err = wrong_shares.check(&plan).unwrap_err().to_string();
        assert!(
            err.contains("`source`") && err.contains("sum to 1"),
            "{err}"
        );

        let mut short = reference.clone();
        short.numeric[0].shares.pop();
        assert!(short.check(&plan).is_err());

        // A block cut short would read the wrong slot as `<missing>`.
        let mut cut = reference.clone();
        cut.categorical[0].shares = vec![0.5, 0.5, 0.0];
        let err = cut.check(&plan).unwrap_err().to_string();
        assert!(err.contains("field `source` does not match"), "{err}");

        let err = DriftReference::fit(&plan, [[0.0f32; 2].as_slice()].into_iter(), &inputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0 has 2 features"), "{err}");
    }
}
