//! The `train` step: validate every requested family, pick the one to ship, and assemble its
//! bundle (ONNX graph with calibration, manifest, explainer, report, held-out scores) for
//! [`models::bundle::Registry::write`].

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use features::builder::{Cutoffs, FeatureTable};
use features::load::ENTITY_ID;
use features::spec::ColumnKind;
use models::bundle::{
    BUNDLE_FORMAT_VERSION, BundleContents, DatasetInfo, HoldoutRow, Manifest, ModelName,
    ValidationSummary, describe_features, fingerprint_spec, sha256_hex,
};
use models::drift::DriftReference;
use models::onnx::{ScoringModel, ToOnnx};

use crate::error::TrainError;
use crate::evaluate::{Evaluation, FamilyParams, ModelFamily, ValidationPlan};
use crate::pipeline::{Prepared, Source};
use crate::report::{FamilyResult, ReportInput, SegmentRow, render_report};
use crate::thresholds::default_thresholds;
use crate::truth::GroundTruth;

/// Which family goes into the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyChoice {
    /// Evaluate both; ship the one with the higher held-out ROC AUC (the scorecard on a tie:
    /// simpler to read).
    Best,
    /// Evaluate and ship this family only.
    Only(ModelFamily),
}

impl FamilyChoice {
    /// The families to evaluate.
    pub fn families(self) -> Vec<ModelFamily> {
        match self {
            FamilyChoice::Best => vec![ModelFamily::Gbdt, ModelFamily::Logistic],
            FamilyChoice::Only(family) => vec![family],
        }
    }
}

/// The index of the family to ship among `evaluations` (see [`FamilyChoice::Best`]).
pub fn choose_family(evaluations: &[Evaluation]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, e) in evaluations.iter().enumerate() {
        let better = match best {
            None => true,
            Some(b) => {
                let (auc, best_auc) = (e.raw_metrics.roc_auc, evaluations[b].raw_metrics.roc_auc);
                auc > best_auc || (auc == best_auc && e.family == ModelFamily::Logistic)
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// What a bundle is assembled from.
pub struct BundleInputs<'a> {
    pub prepared: &'a Prepared,
    pub plan: &'a ValidationPlan,
    pub warnings: &'a [String],
    /// Every evaluated family.
    pub evaluations: &'a [Evaluation],
    /// Index into `evaluations` of the family to ship.
    pub shipped: usize,
    /// The generator's truth, for the truth ROC AUC beside the model's.
    pub truth: Option<&'a GroundTruth>,
    /// The model's name in the registry; `None`: the task's name.
    pub model: Option<ModelName>,
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub code_version: String,
    /// When the run started (for the report's run time).
    pub started: Instant,
    /// For the global model of a `--segment-by` run: each segment against it (the report
    /// shows them); empty otherwise.
    pub segments: &'a [SegmentRow],
    /// Each family's held-out ROC AUC over repeated splits (`--repeats`); empty otherwise.
    pub repeated: &'a [crate::repeat::RepeatedAuc],
}

/// Assembles the bundle of `inputs.evaluations[inputs.shipped]`.
pub fn assemble_bundle(inputs: &BundleInputs<'_>) -> Result<BundleContents, TrainError> {
    let prepared = inputs.prepared;
    let table = &prepared.table;
    let evaluation = inputs.evaluations.get(inputs.shipped).ok_or_else(|| {
        TrainError::Data(format!(
            "no evaluated family at index {} to ship",
            inputs.shipped
        ))
    })?;
    let truth_aucs = inputs
        .evaluations
        .iter()
        .map(|e| truth_roc_auc(inputs.truth, prepared, e))
        .collect::<Result<Vec<_>, _>>()?;
    let (model_kind, explainer) = evaluation.model.kind_and_explainer();
    let scoring = ScoringModel::new(evaluation.model.to_graph(), evaluation.calibrator.clone());
    let onnx = scoring.to_onnx_bytes()?;
    let thresholds = default_thresholds(
        prepared.spec.task,
        &evaluation.calibrated_scores,
        &evaluation.holdout_labels,
    )?;
    let spec = &prepared.spec;
    let cutoffs = match &prepared.cutoffs {
        Cutoffs::Calendar(moments) => moments.iter().map(|&ms| format_ms(ms)).collect(),
        Cutoffs::AfterCreation { offset_ms } => vec![format!(
            "{} days after creation",
            *offset_ms as f64 / 86_400_000.0
        )],
        Cutoffs::Tabular => Vec::new(),
    };
    let manifest = Manifest {
        format_version: BUNDLE_FORMAT_VERSION,
        task: spec.task,
        model: Some(
            inputs
                .model
                .clone()
                .unwrap_or_else(|| ModelName::of_task(spec.task)),
        ),
        version: inputs.version.clone(),
        model_kind,
        created_at: inputs.created_at,
        code_version: inputs.code_version.clone(),
        features: describe_features(&prepared.plan),
        feature_plan: prepared.plan.clone(),
        dataset: DatasetInfo {
            name: spec.name.clone(),
            spec: spec.clone(),
            fingerprint: match &prepared.source {
                Source::Files(_) => fingerprint_spec(spec)?,
                Source::Table(table) => crate::prepared_table::fingerprint(&table.dir)?,
            },
            rows: table.n_rows(),
            positives: table.labels.iter().filter(|&&y| y == 1).count(),
            cutoffs,
        },
        validation: ValidationSummary {
            scheme: inputs.plan.description().to_string(),
            raw: evaluation.raw_metrics.clone(),
            calibrated: evaluation.calibrated_metrics.clone(),
            truth_roc_auc: truth_aucs[inputs.shipped],
        },
        calibration: evaluation.calibrator.clone(),
        thresholds,
        explanation: model_kind.explanation(),
        drift: Some(drift_reference(prepared)?),
        model_sha256: Some(sha256_hex(&onnx)),
    };
    manifest.check().map_err(TrainError::Data)?;
    let tabular = matches!(prepared.cutoffs, Cutoffs::Tabular);
    let (holdout_fields, profiles) = categorical_profiles(prepared)?;
    let holdout = evaluation
        .holdout_rows
        .iter()
        .zip(&evaluation.calibrated_scores)
        .map(|(&row, &score)| {
            let entity_id = &table.entity_ids[row];
            HoldoutRow {
                entity_id: entity_id.clone(),
                cutoff: (!tabular).then(|| format_ms(table.cutoffs_ms[row])),
                label: table.labels[row],
                score,
                profile: profiles
                    .get(entity_id.as_str())
                    .cloned()
                    .unwrap_or_else(|| vec![String::new(); holdout_fields.len()]),
            }
        })
        .collect();
    let families: Vec<FamilyResult<'_>> = inputs
        .evaluations
        .iter()
        .zip(&truth_aucs)
        .map(|(evaluation, &truth_roc_auc)| FamilyResult {
            evaluation,
            truth_roc_auc,
        })
        .collect();
    let mut warnings = inputs.warnings.to_vec();
    warnings.extend(inputs.evaluations.iter().filter_map(|e| {
        e.model
            .solver_warning()
            .map(|w| format!("{}: {w}", e.family.as_str()))
    }));
    let report_html = render_report(&ReportInput {
        manifest: &manifest,
        families: &families,
        shipped: inputs.shipped,
        warnings: &warnings,
        elapsed_seconds: inputs.started.elapsed().as_secs_f64(),
        segments: inputs.segments,
        repeated: inputs.repeated,
    })?;
    Ok(BundleContents {
        manifest,
        onnx,
        explainer,
        report_html,
        holdout,
        holdout_fields,
    })
}

/// Each entity's values of the categorical profile fields, by entity id.
type ProfilesById<'a> = HashMap<&'a str, Vec<String>>;

/// The categorical profile fields and each entity's values of them (empty when missing),
/// for the held-out rows: what conversion by field (the console's model health) reads.
fn categorical_profiles(
    prepared: &Prepared,
) -> Result<(Vec<String>, ProfilesById<'_>), TrainError> {
    let data = match &prepared.source {
        Source::Files(data) => data,
        Source::Table(table) => {
            let profiles = table
                .profiles
                .iter()
                .map(|(id, values)| (id.as_str(), values.clone()))
                .collect();
            return Ok((table.profile_fields.clone(), profiles));
        }
    };
    let entities = &data.entities;
    let fields: Vec<String> = data
        .profile_columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Categorical)
        .map(|c| c.name.clone())
        .collect();
    let column = |name: &str| {
        entities
            .column(name)
            .and_then(|c| c.str())
            .map_err(|e| TrainError::Data(format!("entities column {name}: {e}")))
    };
    let ids = column(ENTITY_ID)?;
    let columns = fields
        .iter()
        .map(|f| column(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut profiles = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let values = columns
            .iter()
            .map(|c| c.get(i).unwrap_or_default().to_owned())
            .collect();
        profiles.insert(id, values);
    }
    Ok((fields, profiles))
}

/// Fewest rows at the most recent calendar cut-off for them alone to be the drift reference.
pub const MIN_DRIFT_REFERENCE_ROWS: usize = 500;

/// The training distribution of the model's inputs, and the levels each categorical field
/// had when the plan was fitted.
///
/// With calendar cut-offs the rows of the most recent cut-off stand for today's traffic
/// (every entity open at one moment, as the server sees them); pooling every cut-off would
/// mix in the first months of the history, when every lead was young, and flag tenure and
/// recency as drifted on traffic like the training data (seen: PSI 1.76 on tenure for leads
/// of the same generator). Other forms, or a last cut-off of fewer than
/// [`MIN_DRIFT_REFERENCE_ROWS`] rows, use every row.
fn drift_reference(prepared: &Prepared) -> Result<DriftReference, TrainError> {
    let table = &prepared.table;
    DriftReference::fit(
        &prepared.plan,
        drift_reference_rows(table, &prepared.cutoffs)
            .into_iter()
            .map(|i| table.row(i)),
        &prepared.profile_inputs,
    )
    .map_err(|e| TrainError::Data(e.to_string()))
}

/// The rows of `table` a drift reference is counted on: those of the most recent calendar
/// cut-off when there are at least [`MIN_DRIFT_REFERENCE_ROWS`], else every row.
pub fn drift_reference_rows(table: &FeatureTable, cutoffs: &Cutoffs) -> Vec<usize> {
    let all: Vec<usize> = (0..table.n_rows()).collect();
    if let Cutoffs::Calendar(moments) = cutoffs
        && let Some(&last) = moments.last()
    {
        let latest: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| table.cutoffs_ms[i] == last)
            .collect();
        if latest.len() >= MIN_DRIFT_REFERENCE_ROWS {
            return latest;
        }
    }
    all
}

/// The ground truth's ROC AUC on the evaluation's held-out rows, when a truth is given.
pub fn truth_roc_auc(
    truth: Option<&GroundTruth>,
    prepared: &Prepared,
    evaluation: &Evaluation,
) -> Result<Option<f64>, TrainError> {
    let Some(truth) = truth else {
        return Ok(None);
    };
    let p = truth.probabilities(&prepared.table, &evaluation.holdout_rows)?;
    Ok(Some(models::metrics::roc_auc(
        &p,
        &evaluation.holdout_labels,
        None,
    )?))
}

/// A cutoff in milliseconds as RFC 3339 (UTC, seconds).
fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Fits and evaluates each family of `choice` with `params`, calling `on_family` before each.
pub fn evaluate_families(
    prepared: &Prepared,
    plan: &ValidationPlan,
    choice: FamilyChoice,
    params: &FamilyParams,
    seed: u64,
    mut on_family: impl FnMut(ModelFamily),
) -> Result<Vec<Evaluation>, TrainError> {
    choice
        .families()
        .into_iter()
        .map(|family| {
            on_family(family);
            crate::evaluate::evaluate(family, params, &prepared.table, plan, seed)
        })
        .collect()
}
