//! The steps shared by the `evaluate` and `train` commands: load a dataset, build its
//! point-in-time features, choose the validation plan, guard the data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use features::builder::{Cutoffs, FeatureTable, build_features, plan_inputs, resolve_cutoffs};
use features::load::load_dataset;
use features::plan::ProfileInput;
use features::spec::Form;
use features::{DatasetSpec, FeaturePlan, FeaturePlanParams, LoadedDataset};

use crate::error::TrainError;
use crate::evaluate::ValidationPlan;
use crate::guards::{check_sufficiency, leakage_warnings};
use crate::split::{HoldoutShare, Split, stratified_folds, time_split};

/// Folds of k-fold validation.
pub const DEFAULT_FOLDS: usize = 5;

/// How to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    /// Time split for event data, stratified k-fold for tabular data.
    Auto,
    /// Stratified k-fold whatever the form (to compare with tools that only do k-fold).
    KFold,
}

/// A dataset with its features built.
pub struct Prepared {
    pub spec: DatasetSpec,
    /// Where the rows came from: the dataset's files, or a feature table built elsewhere.
    pub source: Source,
    pub plan: FeaturePlan,
    /// The profile columns as the plan was fitted on them (every level seen, with counts),
    /// for the bundle's drift reference.
    pub profile_inputs: Vec<ProfileInput>,
    pub cutoffs: Cutoffs,
    pub table: FeatureTable,
}

/// Where a [`Prepared`] table came from.
pub enum Source {
    /// The dataset's files, loaded here.
    Files(Box<LoadedDataset>),
    /// A feature table built elsewhere (the Python package's Spark build), read back by
    /// [`crate::prepared_table`].
    Table(TableSource),
}

/// What a prepared feature table brings besides its rows.
pub struct TableSource {
    /// The prepared table's folder.
    pub dir: PathBuf,
    pub entities: usize,
    pub events: usize,
    /// The loader's warnings, as the build reported them.
    pub warnings: Vec<String>,
    /// The categorical profile fields, and each entity's values of them ("" when missing).
    pub profile_fields: Vec<String>,
    pub profiles: HashMap<String, Vec<String>>,
}

impl Prepared {
    /// Entities in the dataset.
    pub fn entity_count(&self) -> usize {
        match &self.source {
            Source::Files(data) => data.entities.height(),
            Source::Table(table) => table.entities,
        }
    }

    /// The loader's warnings.
    pub fn warnings(&self) -> &[String] {
        match &self.source {
            Source::Files(data) => &data.warnings,
            Source::Table(table) => &table.warnings,
        }
    }

    /// The loaded dataset, for what needs more than the feature table (`what`: segment
    /// models, features of another plan).
    pub fn data(&self, what: &str) -> Result<&LoadedDataset, TrainError> {
        match &self.source {
            Source::Files(data) => Ok(data),
            Source::Table(table) => Err(TrainError::Data(format!(
                "{what} needs the dataset's files, and {} is a prepared feature table: \
                 train with --spec on the files",
                table.dir.display()
            ))),
        }
    }
}

/// Reads the spec (relative paths against `data_dir` when given), loads and validates the
/// data, fits the feature plan and builds the feature table.
pub fn prepare(spec_path: &Path, data_dir: Option<&Path>) -> Result<Prepared, TrainError> {
    let mut spec = DatasetSpec::from_file(spec_path)?;
    if let Some(dir) = data_dir {
        spec.base_dir = dir.to_path_buf();
    }
    let data = load_dataset(&spec)?;
    let cutoffs = resolve_cutoffs(&data)?;
    let inputs = plan_inputs(&data, None)?;
    let plan = FeaturePlanParams::new(data.spec.features.clone()).fit(&inputs)?;
    let table = build_features(&data, &plan, &cutoffs)?;
    Ok(Prepared {
        spec,
        source: Source::Files(Box::new(data)),
        plan,
        profile_inputs: inputs.profile,
        cutoffs,
        table,
    })
}

/// The validation plan for `prepared`, with the data guards applied to it. Returns the plan
/// and the leakage warnings.
pub fn validation_plan(
    prepared: &Prepared,
    mode: ValidationMode,
    folds: usize,
    seed: u64,
) -> Result<(ValidationPlan, Vec<String>), TrainError> {
    validation_plan_with(prepared, mode, folds, seed, HoldoutShare::default())
}

/// [`validation_plan`] with the entities a time split holds out.
pub fn validation_plan_with(
    prepared: &Prepared,
    mode: ValidationMode,
    folds: usize,
    seed: u64,
    holdout: HoldoutShare,
) -> Result<(ValidationPlan, Vec<String>), TrainError> {
    let table = &prepared.table;
    let use_kfold = mode == ValidationMode::KFold || prepared.spec.form() == Form::Tabular;
    let plan = if use_kfold {
        let fold_of = stratified_folds(&table.labels, folds, seed)?;
        ValidationPlan::KFold {
            fold_of,
            k: folds,
            description: format!(
                "stratified {folds}-fold cross-validation over {} rows; the shipped model is \
                 refitted on all rows",
                table.n_rows()
            ),
        }
    } else {
        let horizon_days = prepared
            .spec
            .label
            .as_ref()
            .map(|label| label.horizon_days)
            .unwrap_or(0);
        let calendar = matches!(prepared.cutoffs, Cutoffs::Calendar(_));
        ValidationPlan::Holdout(time_split(table, horizon_days, calendar, seed, holdout)?)
    };
    let (train, valid): (Vec<usize>, Vec<usize>) = match &plan {
        ValidationPlan::Holdout(Split { train, valid, .. }) => (train.clone(), valid.clone()),
        ValidationPlan::KFold { fold_of, .. } => {
            (0..table.n_rows()).partition(|&i| fold_of[i] != 0)
        }
    };
    check_sufficiency(table, &train, &valid)?;
    let warnings = leakage_warnings(table, &train)?;
    Ok((plan, warnings))
}
