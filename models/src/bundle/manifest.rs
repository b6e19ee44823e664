//! The manifest (`manifest.json`) and the explainer (`explainer.json`) of a
//! bundle, and the checks that keep them consistent with each other.

use chrono::{DateTime, Utc};
use features::plan::{MISSING_LEVEL, OTHER_LEVEL, ProfileFeatureKind};
use features::spec::Task;
use features::{DatasetSpec, FeaturePlan};
use serde::{Deserialize, Serialize};

use super::fingerprint::DataFingerprint;
use super::{BUNDLE_FORMAT_VERSION, ModelName, check_version_name};
use crate::calibration::Calibrator;
use crate::drift::DriftReference;
use crate::gbdt::Gbdt;
use crate::metrics::BinaryMetrics;
use crate::onnx::{LinearModel, ModelGraph};

/// The readable description of a bundle (`manifest.json`, pretty JSON).
///
/// Unknown fields are ignored when reading, so a later format can add
/// fields; a change that older readers must not misread bumps
/// [`BUNDLE_FORMAT_VERSION`], which [`Bundle::load`](super::Bundle::load)
/// checks before anything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// What the model predicts.
    pub task: Task,
    /// The model's name, also its registry folder `<registry>/<name>`; bundles made before
    /// models had names have none and are named after their task ([`Manifest::name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// The version, also the bundle's folder name (see
    /// [`new_version_name`](super::new_version_name)).
    pub version: String,
    /// The model family in `model.onnx`.
    pub model_kind: ModelKind,
    /// When the bundle was made (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// The code that made it: crate version, plus the git commit when known.
    pub code_version: String,
    /// The model's input, in order: feature `i` is column `i` of the ONNX
    /// input. Derived from [`Manifest::feature_plan`] by
    /// [`describe_features`], stored for readers of the JSON.
    pub features: Vec<FeatureDescription>,
    /// The fitted feature plan; computing features for a lead at serving
    /// time goes through it. It checks its own feature names when read.
    pub feature_plan: FeaturePlan,
    /// The data the model was trained on.
    pub dataset: DatasetInfo,
    /// How well it did on held-out data.
    pub validation: ValidationSummary,
    /// The calibration of the model's log-odds into the probability (the
    /// same calibrator is the tail of the graph in `model.onnx`).
    pub calibration: Calibrator,
    /// Sales-ready threshold and grade bands on the calibrated probability.
    pub thresholds: Thresholds,
    /// What `explainer.json` holds.
    pub explanation: ExplanationKind,
    /// The training distribution of the model's inputs, which the server compares what it
    /// scores with. Bundles made before it was stored have none (and no drift figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReference>,
    /// SHA-256 of `model.onnx`, lower-case hex (see [`sha256_hex`](super::sha256_hex)):
    /// loading and promoting a bundle check the file against it. Bundles made before it was
    /// stored have none (and load unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Manifest {
            format_version,
            task,
            model,
            version,
            model_kind,
            created_at,
            code_version,
            features,
            feature_plan,
            dataset,
            validation,
            calibration,
            thresholds,
            explanation,
            drift,
            model_sha256,
        } = self;
        *format_version == other.format_version
            && *task == other.task
            && *model == other.model
            && *version == other.version
            && *model_kind == other.model_kind
            && *created_at == other.created_at
            && *code_version == other.code_version
            && *features == other.features
            && feature_plan.data() == other.feature_plan.data()
            && *dataset == other.dataset
            && *validation == other.validation
            && *calibration == other.calibration
            && *thresholds == other.thresholds
            && *explanation == other.explanation
            && *drift == other.drift
            && *model_sha256 == other.model_sha256
    }
}

impl Manifest {
    /// The model's name: `model`, else (bundles made before names) the task's.
    pub fn name(&self) -> ModelName {
        self.model
            .clone()
            .unwrap_or_else(|| ModelName::of_task(self.task))
    }

    /// Width `F` of the model's input.
    pub fn n_features(&self) -> usize {
        self.feature_plan.n_features()
    }

    /// Feature names in input order.
    pub fn feature_names(&self) -> &[String] {
        self.feature_plan.feature_names()
    }

    /// Checks the manifest on its own: format version, version name, the
    /// feature descriptions against the plan, dataset against task and plan,
    /// calibration, thresholds, explanation against model kind. The message
    /// says what is wrong; callers prefix it with the file.
    pub fn check(&self) -> Result<(), String> {
        if self.format_version != BUNDLE_FORMAT_VERSION {
            return Err(format!(
                "format_version is {}, this build writes and reads {BUNDLE_FORMAT_VERSION}",
                self.format_version
            ));
        }
        check_version_name(&self.version)?;
        let expected = describe_features(&self.feature_plan);
        if self.features.len() != expected.len() {
            return Err(format!(
                "`features` lists {} features, the feature plan has {}",
                self.features.len(),
                expected.len()
            ));
        }
        if let Some((got, want)) = self.features.iter().zip(&expected).find(|(g, w)| g != w) {
            return Err(format!(
                "`features` entry {} is {got:?}, the feature plan says {want:?}",
                want.index
            ));
        }
        let spec = &self.dataset.spec;
        if spec.task != self.task {
            return Err(format!(
                "the dataset spec's task is {}, the manifest's is {}",
                spec.task.as_str(),
                self.task.as_str()
            ));
        }
        if spec.form() != self.feature_plan.form() {
            return Err(format!(
                "the dataset spec is in {:?} form, the feature plan in {:?} form",
                spec.form(),
                self.feature_plan.form()
            ));
        }
        if self.dataset.positives > self.dataset.rows {
            return Err(format!(
                "dataset has {} positives in {} rows",
                self.dataset.positives, self.dataset.rows
            ));
        }
        self.calibration
            .validate()
            .map_err(|e| format!("calibration: {e}"))?;
        self.thresholds.check()?;
        if self.model_kind.explanation() != self.explanation {
            return Err(format!(
                "a {:?} model is explained by {:?}, not {:?}",
                self.model_kind,
                self.model_kind.explanation(),
                self.explanation
            ));
        }
        if let Some(drift) = &self.drift {
            drift.check(&self.feature_plan).map_err(|e| e.to_string())?;
        }
        if let Some(digest) = &self.model_sha256
            && !(digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(format!(
                "`model_sha256` is {digest:?}, not 64 lower-case hex digits (a SHA-256)"
            ));
        }
        Ok(())
    }
}

/// The model family in `model.onnx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Gradient-boosted trees ([`Gbdt`]).
    Gbdt,
    /// Logistic regression.
    Logistic,
    /// Gradient-boosted trees started from a logistic regression's log-odds
    /// (the trees model what the linear part misses; the logits add up).
    GbdtOnLinear,
}

impl ModelKind {
    /// The explanation that fits the family.
    pub fn explanation(self) -> ExplanationKind {
        match self {
            ModelKind::Gbdt => ExplanationKind::TreeShap,
            ModelKind::Logistic => ExplanationKind::LinearContributions,
            ModelKind::GbdtOnLinear => ExplanationKind::LinearAndTreeShap,
        }
    }
}

/// How a score is explained, i.e. what `explainer.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplanationKind {
    /// Exact path-dependent TreeSHAP on the trees ([`Explainer::Gbdt`]).
    TreeShap,
    /// Exact linear contributions `w_j (x_j - mean_j)` ([`Explainer::Linear`]).
    LinearContributions,
    /// Both, added feature by feature ([`Explainer::GbdtOnLinear`]).
    LinearAndTreeShap,
}

/// One input feature of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDescription {
    /// As in [`FeaturePlan::feature_names`].
    pub name: String,
    /// Column of the ONNX input.
    pub index: usize,
    /// Where the feature comes from.
    #[serde(flatten)]
    pub kind: FeatureKind,
}

/// Where a feature comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// A numeric profile field, `NaN` when missing.
    Numeric {
        /// The profile field.
        field: String,
    },
    /// One level of a one-hot categorical profile field.
    Categorical {
        /// The profile field.
        field: String,
        /// A level kept by the plan, or [`OTHER_LEVEL`] (levels rare in
        /// training or unseen) or [`MISSING_LEVEL`]. The plan refuses a real
        /// level spelled like those, so the three cases cannot be confused.
        level: String,
    },
    /// Computed from the entity's creation time and events before the
    /// cutoff (tenure, counts, recency, decay, trend).
    History,
}

impl FeatureKind {
    /// The profile field, for profile features.
    pub fn field(&self) -> Option<&str> {
        match self {
            FeatureKind::Numeric { field } | FeatureKind::Categorical { field, .. } => Some(field),
            FeatureKind::History => None,
        }
    }
}

/// Describes each feature of `plan`, in input order. The plan's layout puts
/// the profile fields first (a numeric field is one feature; a categorical
/// field one per kept level, then [`OTHER_LEVEL`], then [`MISSING_LEVEL`]);
/// every feature after them is computed from the history.
pub fn describe_features(plan: &FeaturePlan) -> Vec<FeatureDescription> {
    let mut kinds = Vec::with_capacity(plan.n_features());
    for field in plan.profile_fields() {
        match &field.kind {
            ProfileFeatureKind::Numeric => kinds.push(FeatureKind::Numeric {
                field: field.name.clone(),
            }),
            ProfileFeatureKind::Categorical { levels } => {
                let grouped = [OTHER_LEVEL, MISSING_LEVEL];
                for level in levels.iter().map(String::as_str).chain(grouped) {
                    kinds.push(FeatureKind::Categorical {
                        field: field.name.clone(),
                        level: level.to_string(),
                    });
                }
            }
        }
    }
    plan.feature_names()
        .iter()
        .enumerate()
        .map(|(index, name)| FeatureDescription {
            name: name.clone(),
            index,
            kind: kinds.get(index).cloned().unwrap_or(FeatureKind::History),
        })
        .collect()
}

/// The data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The spec's name.
    pub name: String,
    /// The dataset spec as read (its `base_dir` is not stored: paths stay as
    /// the spec gives them, relative to the spec file).
    pub spec: DatasetSpec,
    /// Size and SHA-256 of each data file.
    pub fingerprint: DataFingerprint,
    /// Rows of the feature table (entity × cutoff).
    pub rows: usize,
    /// Positive rows.
    pub positives: usize,
    /// The scoring moments (event form; empty for tabular data), as text.
    pub cutoffs: Vec<String>,
}

/// How the model did on held-out data. Lift and threshold tables go into
/// the report and `holdout.csv`, not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSummary {
    /// The validation scheme in words, e.g. `time split: train cutoffs <
    /// 2025-03-01, validate 2025-03-01` or `stratified 5-fold`.
    pub scheme: String,
    /// Metrics of the raw model score.
    pub raw: BinaryMetrics,
    /// Metrics of the calibrated probability.
    pub calibrated: BinaryMetrics,
    /// ROC AUC of the generator's true probabilities on the same rows
    /// (synthetic data only): the best any model could reach.
    #[serde(default)]
    pub truth_roc_auc: Option<f64>,
}

/// Cut-offs on the calibrated probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A lead with at least this probability is sales-ready.
    pub sales_ready: f64,
    /// The A–D grade bands.
    pub grades: GradeBands,
}

/// Lower bounds of grades A, B and C (`a > b > c`); grade D is below `c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeBands {
    /// Grade A from here up.
    pub a: f64,
    /// Grade B in `[b, a)`.
    pub b: f64,
    /// Grade C in `[c, b)`.
    pub c: f64,
}

/// A lead's grade, A best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Grade {
    A,
    B,
    C,
    D,
}

impl Grade {
    /// `"A"` to `"D"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::A => "A",
            Grade::B => "B",
            Grade::C => "C",
            Grade::D => "D",
        }
    }
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Thresholds {
    /// Checks that every cut-off is a probability strictly between 0 and 1
    /// and that `a > b > c`.
    pub fn check(&self) -> Result<(), String> {
        let GradeBands { a, b, c } = self.grades;
        for (name, value) in [
            ("sales_ready", self.sales_ready),
            ("grade a", a),
            ("grade b", b),
            ("grade c", c),
        ] {
            // Also false for NaN.
            if !(value > 0.0 && value < 1.0) {
                return Err(format!(
                    "threshold {name} is {value}; it must be strictly between 0 and 1"
                ));
            }
        }
        if !(a > b && b > c) {
            return Err(format!(
                "grade bands must satisfy a > b > c, got a = {a}, b = {b}, c = {c}"
            ));
        }
        Ok(())
    }

    /// The grade of calibrated probability `p`: A from `a` up, B from `b`,
    /// C from `c`, D below (and for `NaN`).
    pub fn grade(&self, p: f64) -> Grade {
        let GradeBands { a, b, c } = self.grades;
        if p >= a {
            Grade::A
        } else if p >= b {
            Grade::B
        } else if p >= c {
            Grade::C
        } else {
            Grade::D
        }
    }

    /// Whether calibrated probability `p` reaches the sales-ready threshold
    /// (false for `NaN`).
    pub fn is_sales_ready(&self, p: f64) -> bool {
        p >= self.sales_ready
    }
}

/// What explaining a score needs (`explainer.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Explainer {
    /// The boosted trees, for exact TreeSHAP ([`Gbdt::shap_values`]).
    Gbdt(Gbdt),
    /// A linear model on the logit: contribution of feature `j` is
    /// `weights[j] * (x[j] - reference[j])`, and the contributions add up to
    /// the logit minus the logit at the reference.
    Linear {
        /// One weight per feature.
        weights: Vec<f64>,
        /// The intercept.
        bias: f64,
        /// The training mean of each feature: the baseline of the
        /// contributions.
        reference: Vec<f64>,
    },
    /// Trees boosted from a linear model's log-odds: a feature's
    /// contribution is its linear contribution (as in [`Explainer::Linear`])
    /// plus its TreeSHAP value on `trees`.
    GbdtOnLinear {
        /// The linear part: one weight per feature.
        weights: Vec<f64>,
        bias: f64,
        /// The baseline of the linear contributions.
        reference: Vec<f64>,
        /// The trees (their base score is 0: the linear part is the start).
        trees: Gbdt,
    },
}

impl Explainer {
    /// The explanation this explainer gives.
    pub fn kind(&self) -> ExplanationKind {
        match self {
            Explainer::Gbdt(_) => ExplanationKind::TreeShap,
            Explainer::Linear { .. } => ExplanationKind::LinearContributions,
            Explainer::GbdtOnLinear { .. } => ExplanationKind::LinearAndTreeShap,
        }
    }

    /// The model part (features → log-odds) the explainer describes, as
    /// exported: weights, bias and means rounded to `f32`. With the bundle's
    /// calibrator it rebuilds the scoring model of `model.onnx`.
    pub fn model_graph(&self) -> ModelGraph {
        let linear = |weights: &[f64], bias: f64, reference: &[f64]| LinearModel {
            weights: weights.iter().map(|&w| w as f32).collect(),
            bias: bias as f32,
            missing_values: reference.iter().map(|&m| m as f32).collect(),
        };
        match self {
            Explainer::Gbdt(model) => ModelGraph::Trees(model.to_tree_ensemble()),
            Explainer::Linear {
                weights,
                bias,
                reference,
            } => ModelGraph::Linear(linear(weights, *bias, reference)),
            Explainer::GbdtOnLinear {
                weights,
                bias,
                reference,
                trees,
            } => ModelGraph::TreesOnLinear {
                linear: linear(weights, *bias, reference),
                trees: trees.to_tree_ensemble(),
            },
        }
    }

    /// Width of the rows it explains.
    pub fn n_features(&self) -> usize {
        match self {
            Explainer::Gbdt(model) => model.n_features(),
            Explainer::Linear { weights, .. } => weights.len(),
            Explainer::GbdtOnLinear { weights, .. } => weights.len(),
        }
    }

    /// Checks the explainer fits a model of `n_features` features: widths
    /// agree and every number is finite. (Trees are checked when read.)
    pub fn check(&self, n_features: usize) -> Result<(), String> {
        match self {
            Explainer::Gbdt(model) => check_trees(model, n_features),
            Explainer::Linear {
                weights,
                bias,
                reference,
            } => check_linear(weights, *bias, reference, n_features),
            Explainer::GbdtOnLinear {
                weights,
                bias,
                reference,
                trees,
            } => {
                check_linear(weights, *bias, reference, n_features)?;
                check_trees(trees, n_features)
            }
        }
    }
}

fn check_trees(model: &Gbdt, n_features: usize) -> Result<(), String> {
    if model.n_features() != n_features {
        return Err(format!(
            "the trees take {} features, the model has {n_features}",
            model.n_features()
        ));
    }
    Ok(())
}

fn check_linear(
    weights: &[f64],
    bias: f64,
    reference: &[f64],
    n_features: usize,
) -> Result<(), String> {
    if weights.len() != n_features || reference.len() != n_features {
        return Err(format!(
            "{} weights and {} reference values, the model has {n_features} features",
            weights.len(),
            reference.len()
        ));
    }
    if !bias.is_finite() {
        return Err(format!("bias {bias} is not finite"));
    }
    for (what, values) in [("weight", weights), ("reference value", reference)] {
        if let Some(j) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!("{what} {j} is {}, not finite", values[j]));
        }
    }
    Ok(())
}
