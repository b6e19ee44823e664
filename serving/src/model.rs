//! A model bundle loaded for serving, and scoring with it.
//!
//! [`LoadedModel`] holds what a bundle gives (manifest, explainer), the ONNX Runtime
//! [`SessionPool`] of its `model.onnx`, and what scoring derives once: the profile field
//! index and the [`FeatureGroup`]s reasons are made of. [`LoadedModel::score`] turns checked
//! entities into [`EntityScore`]s in one job on a pooled session: features through the
//! feature plan (the training code path), probabilities from ONNX Runtime, reasons from the
//! explainer's exact contributions summed per group.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use features::reasons::{FeatureGroup, GroupSource};
use features::spec::Task;
use models::bundle::{
    Bundle, ExplainScratch, Explainer, Grade, Manifest, ModelKind, ModelName, Thresholds,
};
use models::capacity::HeldOutScores;
use models::health::{ByField, Curves};
use ndarray::Array2;
use serde::Serialize;

use crate::drift::DriftMonitor;
use crate::metrics::ScoreHistogram;
use crate::pool::{LoadError, PoolConfig, ScoreError, SessionPool};
use crate::request::CheckedEntity;

/// A model's held-out health, computed when it is loaded.
#[derive(Debug)]
pub struct ModelHealth {
    pub curves: Curves,
    pub by_field: ByField,
}

/// A bundle ready to score.
pub struct LoadedModel {
    /// The model's name ([`Manifest::name`]).
    name: ModelName,
    manifest: Manifest,
    explainer: Explainer,
    pool: SessionPool,
    profile_index: HashMap<String, usize>,
    groups: Vec<FeatureGroup>,
    /// Whether explaining one entity is cheap enough to run inline on the async worker
    /// (see [`INLINE_EXPLAIN_MAX_LEAVES`]).
    explain_inline: bool,
    /// The bundle's held-out predictions (`holdout.csv`), for thresholds by capacity.
    held_out: Option<HeldOutScores>,
    /// The held-out curves and conversion by profile field (the console's model health),
    /// computed once at load.
    health: Option<Arc<ModelHealth>>,
    /// Distribution of the probabilities it gave, for `/metrics`.
    pub scores: ScoreHistogram,
    /// What it scored against its training distribution; `None` for a bundle that stored
    /// none.
    drift: Option<DriftMonitor>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model", &self.name)
            .field("version", &self.version())
            .field("pool", &self.pool)
            .finish()
    }
}

/// Largest number of tree leaves whose TreeSHAP runs inline on the async worker for a
/// single entity. TreeSHAP visits every leaf of every tree, about 100 ns a leaf here with
/// the precomputed tables (`perf stat` of the server on a 40-tree model of 1,240 leaves:
/// 175 µs of CPU a request with reasons, 51 µs without), so 400 leaves stay near 40 µs,
/// inside tokio's guidance of 10-100 µs between yields, and larger models explain on the
/// blocking pool. The hand-off costs throughput (that model, before the tables: 3,700
/// requests/s on the blocking pool against 5,400 inline, side by side) but keeps the workers
/// free for the other requests.
pub const INLINE_EXPLAIN_MAX_LEAVES: usize = 400;

/// Whether one entity's explanation by `explainer` may run inline on the async worker.
fn explains_inline(explainer: &Explainer) -> bool {
    let leaves: usize = explainer
        .trees()
        .map_or(0, |trees| trees.trees().iter().map(|t| t.n_leaves()).sum());
    leaves <= INLINE_EXPLAIN_MAX_LEAVES
}

/// How a request wants its entities scored.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Give reasons (the top positive and negative feature groups).
    pub reasons: bool,
    /// How many reasons of each sign.
    pub max_reasons: usize,
    /// Run inline on the async worker (see [`SessionPool::with_session`]).
    pub small: bool,
}

/// The score of one entity.
#[derive(Debug, Clone, Serialize)]
pub struct EntityScore {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The calibrated probability.
    pub probability: f64,
    /// The probability on a 0–100 scale, rounded.
    pub score: u8,
    pub grade: Grade,
    pub sales_ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Reasons>,
    /// Fields sent that the model does not use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// Why the score is what it is: the feature groups that raised it most and those that
/// lowered it most, against the model's average lead.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reasons {
    /// The log-odds of the model's average lead (training mean), before calibration.
    pub baseline_log_odds: f64,
    pub positive: Vec<Reason>,
    pub negative: Vec<Reason>,
}

/// One reason: a feature group, its value in words and its contribution.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reason {
    /// The profile field, event type, channel or activity summary.
    pub feature: String,
    /// Its value for this entity, in words.
    pub value: String,
    /// What it adds to the log-odds (exact: linear terms plus TreeSHAP values, summed over
    /// the group's feature columns).
    pub contribution: f64,
}

impl LoadedModel {
    /// Loads `bundle` into a pool of ONNX Runtime sessions.
    ///
    /// Blocking (ONNX Runtime parses and optimises the graph): call it from a blocking
    /// context.
    pub fn load(bundle: Bundle, config: PoolConfig) -> Result<Self, LoadError> {
        let pool = SessionPool::from_bytes(bundle.onnx_bytes(), config)?;
        let manifest = bundle.manifest().clone();
        let plan = &manifest.feature_plan;
        if pool.n_features() != plan.n_features() {
            return Err(LoadError::Signature(format!(
                "model.onnx takes {} features, the manifest's plan has {}",
                pool.n_features(),
                plan.n_features()
            )));
        }
        let profile_index = plan
            .profile_fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let groups = plan.feature_groups();
        let explainer = bundle.explainer().clone();
        // TreeSHAP's tables now, not on the first request.
        if let Some(trees) = explainer.trees() {
            trees.prepare_explanations();
        }
        let holdout = bundle
            .read_holdout_table()
            .map_err(|e| LoadError::HeldOut(e.to_string()))?;
        let held_out = holdout
            .as_ref()
            .map(|h| HeldOutScores::from_holdout(&h.rows, &manifest.dataset.cutoffs))
            .transpose()
            .map_err(|e| LoadError::HeldOut(format!("{}: {e}", bundle.holdout_path().display())))?;
        let health = held_out.as_ref().zip(holdout.as_ref()).map(|(held, h)| {
            Arc::new(ModelHealth {
                curves: models::health::curves(held),
                by_field: ByField::new(h),
            })
        });
        Ok(LoadedModel {
            name: manifest.name(),
            drift: manifest.drift.as_ref().map(DriftMonitor::new),
            held_out,
            health,
            explain_inline: explains_inline(&explainer),
            explainer,
            manifest,
            pool,
            profile_index,
            groups,
            scores: ScoreHistogram::default(),
        })
    }

    /// The model's name: the registry folder it came from, the `{model}` of its routes.
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    pub fn task(&self) -> Task {
        self.manifest.task
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    pub fn kind(&self) -> ModelKind {
        self.manifest.model_kind
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle's held-out predictions, when it kept them.
    pub fn held_out(&self) -> Option<&HeldOutScores> {
        self.held_out.as_ref()
    }

    /// The held-out curves and conversion by field, when the bundle kept held-out rows.
    pub fn health(&self) -> Option<&ModelHealth> {
        self.health.as_deref()
    }

    /// Counts drift over `window` instead of [`DRIFT_WINDOW`](crate::drift::DRIFT_WINDOW)
    /// (counts so far are dropped; nothing changes when the window is the one in use).
    pub fn with_drift_window(mut self, window: std::time::Duration) -> Self {
        if self.drift.as_ref().is_none_or(|d| d.window() == window) {
            return self;
        }
        self.drift = self
            .manifest
            .drift
            .as_ref()
            .map(|reference| DriftMonitor::with_window(reference, window));
        self
    }

    /// Drift of what it scored, when its bundle has a training distribution.
    pub fn drift(&self) -> Option<&DriftMonitor> {
        self.drift.as_ref()
    }

    /// Profile field name → index in the feature plan.
    pub fn profile_index(&self) -> &HashMap<String, usize> {
        &self.profile_index
    }

    /// Scores `entities` with `thresholds` in one job on a pooled session.
    pub async fn score(
        self: &Arc<Self>,
        entities: Vec<CheckedEntity>,
        thresholds: Arc<Thresholds>,
        options: ScoreOptions,
    ) -> Result<Vec<EntityScore>, ScoreError> {
        let model = Arc::clone(self);
        let inline = options.small && (!options.reasons || self.explain_inline);
        self.pool
            .with_session(inline, move |session| {
                let rows = model.feature_rows(&entities)?;
                let probabilities = session.run(rows.view())?;
                Ok(entities
                    .into_iter()
                    .zip(rows.outer_iter())
                    .zip(probabilities)
                    .map(|((entity, row), p)| {
                        let row = row.as_slice().expect("rows are in standard layout");
                        model.entity_score(entity, row, p, &thresholds, options)
                    })
                    .collect())
            })
            .await?
    }

    /// The feature rows of checked `entities`, as scoring computes them (a feature beyond
    /// `f32` is refused, naming the entity's events).
    pub fn feature_rows(&self, entities: &[CheckedEntity]) -> Result<Array2<f32>, ScoreError> {
        let plan = &self.manifest.feature_plan;
        let width = plan.n_features();
        let mut rows = Array2::zeros((entities.len(), width));
        for (entity, mut row) in entities.iter().zip(rows.outer_iter_mut()) {
            let out = row
                .as_slice_mut()
                .expect("a fresh array is in standard layout");
            plan.compute_into(&entity.history, entity.cutoff_ms, out)
                .map_err(|e| ScoreError::Features(e.to_string()))?;
            // Each value was checked to fit in f32, but sums of them can overflow; an
            // infinite feature would score 1.0 with contributions that are not numbers.
            if let Some(i) = out.iter().position(|x| x.is_infinite()) {
                return Err(ScoreError::NotRepresentable {
                    field: format!("{}events", entity.path_prefix),
                    feature: plan.feature_names()[i].clone(),
                    value: f64::from(out[i]),
                });
            }
        }
        Ok(rows)
    }

    fn entity_score(
        &self,
        entity: CheckedEntity,
        row: &[f32],
        probability: f32,
        thresholds: &Thresholds,
        options: ScoreOptions,
    ) -> EntityScore {
        let p = f64::from(probability);
        self.scores.observe(p);
        if let Some(drift) = &self.drift {
            drift.record(row, &entity.history.profile);
        }
        let reasons = options
            .reasons
            .then(|| self.reasons(&entity, row, options.max_reasons));
        EntityScore {
            id: entity.id,
            probability: p,
            score: (p * 100.0).round().clamp(0.0, 100.0) as u8,
            grade: thresholds.grade(p),
            sales_ready: thresholds.is_sales_ready(p),
            reasons,
            ignored_fields: entity.ignored_fields,
        }
    }

    /// The top `max` groups of each sign by contribution.
    fn reasons(&self, entity: &CheckedEntity, row: &[f32], max: usize) -> Reasons {
        thread_local! {
            static WORK: RefCell<(ExplainScratch, Vec<f64>)> = RefCell::default();
        }
        let mut group_totals: Vec<(usize, f64)> = Vec::with_capacity(self.groups.len());
        let baseline = WORK.with_borrow_mut(|(scratch, contributions)| {
            contributions.resize(row.len(), 0.0);
            let base = self.explainer.explain_into(row, scratch, contributions);
            for (g, group) in self.groups.iter().enumerate() {
                let total: f64 = group.columns.iter().map(|&c| contributions[c]).sum();
                group_totals.push((g, total));
            }
            base
        });
        group_totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        let reason = |&(g, contribution): &(usize, f64)| {
            let group = &self.groups[g];
            let raw = match group.source {
                GroupSource::Profile(i) => entity.history.profile.get(i),
                _ => None,
            };
            Reason {
                feature: group.label.clone(),
                value: self.manifest.feature_plan.describe_group(group, row, raw),
                contribution,
            }
        };
        let positive = group_totals
            .iter()
            .take_while(|(_, c)| *c > 0.0)
            .take(max)
            .map(reason)
            .collect();
        let negative = group_totals
            .iter()
            .rev()
            .take_while(|(_, c)| *c < 0.0)
            .take(max)
            .map(reason)
            .collect();
        Reasons {
            baseline_log_odds: baseline,
            positive,
            negative,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_explainer(relative: &str) -> Explainer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(relative);
        let text = std::fs::read_to_string(&path).expect("fixture explainer");
        serde_json::from_str(&text).expect("fixture explainer parses")
    }

    #[test]
    fn explanations_of_large_tree_models_leave_the_async_worker() {
        // 62 leaves on a scorecard, a scorecard alone, 527 leaves of tabular trees.
        let small = fixture_explainer("registry/propensity/fixture-leads-v1/explainer.json");
        let linear = fixture_explainer("registry/churn/fixture-churn-v1/explainer.json");
        let large = fixture_explainer("tabular/propensity/fixture-tabular-v1/explainer.json");
        assert!(explains_inline(&small));
        assert!(explains_inline(&linear));
        assert!(!explains_inline(&large));
    }
}
