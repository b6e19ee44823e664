//! The native module of the `leadscore` Python package (`leadscore._native`): the server's
//! scoring and the training's feature tables, called from Python through the same Rust code.
//!
//! A `Bundle` is a [`LoadedModel`] as the server loads it; an entity is checked by the
//! server's request checks ([`EntityRequest::to_history`]) from the very JSON body the score
//! route takes, its features come from the bundle's feature plan and its score, grade and
//! reasons from [`LoadedModel::score`], so an answer here is the server's answer, bit for
//! bit. `feature_table` builds a dataset spec's point-in-time feature table with the
//! training pipeline ([`training::pipeline::prepare`]) and hands it over as the Parquet bytes
//! `leadscore-train features` writes. Errors reach Python as the exceptions of
//! `leadscore.errors`, with the messages the server and the command line give.
//!
//! The Python side (`python/leadscore/`) turns dicts into JSON and back, and Parquet bytes
//! into pyarrow tables; this module takes and gives strings and bytes only.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use features::builder::{Cutoffs, build_features};
use features::parts::{AggregatedRow, load_part, merge_summaries, plan_kinds, section_ids};
use features::spec::ColumnKind;
use features::{DatasetSpec, FeaturePlan, FeaturePlanParams};
use models::bundle::{Bundle as BundleFiles, ModelName, Registry, Thresholds};
use models::thresholds_file::ThresholdsFile;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serving::error::ApiError;
use serving::http::{ModelRef, ScoreResponse, thresholds_answer};
use serving::model::{LoadedModel, ScoreOptions};
use serving::pool::PoolConfig;
use serving::request::{CheckContext, CheckedEntity, EntityRequest, Timestamp, parse_json};
use serving::state::Limits;

/// Raises `leadscore.errors.<class>(message, *extra)`.
fn raise(py: Python<'_>, class: &str, args: (String, Option<String>)) -> PyErr {
    let made = py
        .import("leadscore.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args.clone()));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        // The package's own module is missing: the message still gets through.
        Err(_) => PyRuntimeError::new_err(args.0),
    }
}

/// An error and its causes, as the command line prints them on one line.
fn chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // `#[error(transparent)]` and `"{0}"` variants repeat their source's message.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// What the server would answer with `error`: `RequestError` for a client's mistake (400,
/// 413), else `LeadscoreError` (the server's 5xx, e.g. ONNX Runtime failing).
fn request_error(py: Python<'_>, error: ApiError) -> PyErr {
    match &error {
        ApiError::BadRequest { field, .. } | ApiError::PayloadTooLarge { field, .. } => {
            raise(py, "RequestError", (error.to_string(), field.clone()))
        }
        _ => raise(py, "LeadscoreError", (error.to_string(), None)),
    }
}

/// A model bundle loaded as the server loads it: scores entities with the server's checks,
/// features, ONNX Runtime session, thresholds and reasons.
#[pyclass(frozen, module = "leadscore._native")]
struct Bundle {
    model: Arc<LoadedModel>,
    thresholds: Arc<Thresholds>,
    dir: PathBuf,
    holdout: PathBuf,
    /// Where the server's async scoring runs: one thread, no worker pool.
    runtime: tokio::runtime::Runtime,
}

#[pymethods]
impl Bundle {
    /// Loads the bundle in `path` (a registry's `<model>/<version>` folder), with the
    /// thresholds of `thresholds_file` (a sales-ops thresholds file, as the server reads it)
    /// in force over the bundle's own when given.
    #[new]
    #[pyo3(signature = (path, thresholds_file=None))]
    fn new(py: Python<'_>, path: PathBuf, thresholds_file: Option<PathBuf>) -> PyResult<Self> {
        let loaded = py.detach(|| load(&path, thresholds_file.as_deref()));
        let (model, thresholds, holdout) =
            loaded.map_err(|message| raise(py, "BundleError", (message, None)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a runtime: {e}")))?;
        Ok(Bundle {
            model: Arc::new(model),
            thresholds: Arc::new(thresholds),
            dir: path,
            holdout,
            runtime,
        })
    }

    /// The bundle's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The model's name (`propensity`, `churn` or a segment's name).
    #[getter]
    fn name(&self) -> String {
        self.model.name().as_str().to_owned()
    }

    /// The bundle's version.
    #[getter]
    fn version(&self) -> String {
        self.model.version().to_owned()
    }

    /// `propensity` or `churn`.
    #[getter]
    fn task(&self) -> &'static str {
        self.model.task().as_str()
    }

    /// The manifest (`manifest.json`) as JSON text.
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.manifest())
            .map_err(|e| PyRuntimeError::new_err(format!("manifest: {e}")))
    }

    /// The thresholds in force, as JSON text.
    fn thresholds_json(&self) -> PyResult<String> {
        serde_json::to_string(self.thresholds.as_ref())
            .map_err(|e| PyRuntimeError::new_err(format!("thresholds: {e}")))
    }

    /// The feature columns, in the model's order.
    fn feature_names(&self) -> Vec<String> {
        self.model.manifest().feature_plan.feature_names().to_vec()
    }

    /// The feature vector of the entity in `entity_json` (a score route's body), at its
    /// `as_of` or at `now_json` (a JSON time; the clock when absent).
    #[pyo3(signature = (entity_json, now_json=None))]
    fn features(
        &self,
        py: Python<'_>,
        entity_json: &str,
        now_json: Option<&str>,
    ) -> PyResult<Vec<f64>> {
        let entity = self.check(py, entity_json, now_json)?;
        let rows = self
            .model
            .feature_rows(std::slice::from_ref(&entity))
            .map_err(|e| request_error(py, ApiError::from(e)))?;
        Ok(rows.iter().copied().map(f64::from).collect())
    }

    /// The server's answer to `POST /v1/score/{model}` with `entity_json` as the body, as
    /// JSON text: the model, probability, score, grade, sales-ready flag and, with
    /// `reasons`, the top `max_reasons` reasons of each sign.
    #[pyo3(signature = (entity_json, reasons=true, max_reasons=None, now_json=None))]
    fn score_json(
        &self,
        py: Python<'_>,
        entity_json: &str,
        reasons: bool,
        max_reasons: Option<usize>,
        now_json: Option<&str>,
    ) -> PyResult<String> {
        let entity = self.check(py, entity_json, now_json)?;
        let options = ScoreOptions {
            reasons,
            max_reasons: max_reasons.unwrap_or(Limits::default().max_reasons),
            small: true,
        };
        let model = Arc::clone(&self.model);
        let thresholds = Arc::clone(&self.thresholds);
        let scored = py.detach(|| {
            self.runtime
                .block_on(model.score(vec![entity], thresholds, options))
        });
        let mut scores = scored.map_err(|e| request_error(py, ApiError::from(e)))?;
        let score = scores
            .pop()
            .ok_or_else(|| PyRuntimeError::new_err("the model returned no score"))?;
        serde_json::to_string(&ScoreResponse {
            model: ModelRef::of(&self.model),
            route: None,
            score: &score,
        })
        .map_err(|e| PyRuntimeError::new_err(format!("score: {e}")))
    }

    /// What the thresholds in force mean for a sales team's week on the bundle's held-out
    /// predictions (the server's `GET /v1/thresholds/{model}`), as JSON text; with
    /// `capacity_per_week`, also the cut-off that flags that many leads a week.
    #[pyo3(signature = (capacity_per_week=None, volume_per_week=None))]
    fn capacity_json(
        &self,
        py: Python<'_>,
        capacity_per_week: Option<f64>,
        volume_per_week: Option<f64>,
    ) -> PyResult<String> {
        let model = &self.model;
        let held = model.held_out().ok_or_else(|| {
            let message = ApiError::no_held_out(model).to_string();
            raise(py, "BundleError", (message, None))
        })?;
        let bad = |field: &str, e: &dyn Error| {
            raise(py, "RequestError", (e.to_string(), Some(field.to_owned())))
        };
        let volume = held
            .resolve_volume(volume_per_week)
            .map_err(|e| bad("volume_per_week", &e))?;
        let at_capacity = capacity_per_week
            .map(|c| held.at_capacity(c, volume))
            .transpose()
            .map_err(|e| bad("capacity_per_week", &e))?;
        let answer = thresholds_answer(
            ModelRef::of(model),
            held,
            volume,
            at_capacity,
            &self.thresholds,
        );
        Ok(answer.to_string())
    }

    /// The held-out predictions file (`holdout.csv`), when the bundle kept one.
    fn holdout_path(&self) -> Option<PathBuf> {
        self.holdout.is_file().then(|| self.holdout.clone())
    }
}

impl Bundle {
    /// The server's checks of a score body, against the bundle's plan.
    fn check(
        &self,
        py: Python<'_>,
        entity_json: &str,
        now_json: Option<&str>,
    ) -> PyResult<CheckedEntity> {
        let now_ms = match now_json {
            Some(text) => {
                let Timestamp(ms) =
                    parse_json(text.as_bytes()).map_err(|e| request_error(py, e))?;
                ms
            }
            None => chrono::Utc::now().timestamp_millis(),
        };
        let allowed_skew_ms =
            i64::try_from(Limits::default().allowed_skew.as_millis()).unwrap_or(i64::MAX);
        let context = CheckContext {
            plan: &self.model.manifest().feature_plan,
            profile_index: self.model.profile_index(),
            now_ms,
            allowed_skew_ms,
        };
        let request: EntityRequest =
            parse_json(entity_json.as_bytes()).map_err(|e| request_error(py, e))?;
        request
            .to_history(&context, "")
            .map_err(|e| request_error(py, e))
    }
}

/// The bundle in `dir` as the server loads it, its thresholds in force and its held-out
/// predictions' file.
fn load(
    dir: &Path,
    thresholds_file: Option<&Path>,
) -> Result<(LoadedModel, Thresholds, PathBuf), String> {
    let files = BundleFiles::load(dir).map_err(|e| chain(&e))?;
    let holdout = files.holdout_path();
    // One single-threaded session: the server's configuration of each of its sessions.
    let config = PoolConfig {
        sessions: 1,
        intra_threads: 1,
    };
    let model = LoadedModel::load(files, config).map_err(|e| chain(&e))?;
    let thresholds = match thresholds_file {
        None => model.manifest().thresholds.clone(),
        Some(path) => {
            let file = ThresholdsFile::read(path).map_err(|e| chain(&e))?;
            file.apply(
                model.name().as_str(),
                &model.manifest().thresholds,
                model.held_out(),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    Ok((model, thresholds, holdout))
}

/// The point-in-time feature table of the dataset spec at `spec` (relative paths against
/// `data_dir` when given), as the Parquet bytes `leadscore-train features` writes, the
/// fitted feature plan as JSON text and the cutoffs (see [`cutoffs_json`]).
#[pyfunction]
#[pyo3(signature = (spec, data_dir=None))]
fn feature_table<'py>(
    py: Python<'py>,
    spec: PathBuf,
    data_dir: Option<PathBuf>,
) -> PyResult<(Bound<'py, PyBytes>, String, String)> {
    let built = py.detach(|| -> Result<(Vec<u8>, String, String), String> {
        let prepared =
            training::pipeline::prepare(&spec, data_dir.as_deref()).map_err(|e| chain(&e))?;
        let bytes = prepared.table.parquet_bytes().map_err(|e| chain(&e))?;
        let plan = serde_json::to_string(&prepared.plan).map_err(|e| e.to_string())?;
        Ok((bytes, plan, cutoffs_json(&prepared.cutoffs)))
    });
    let (bytes, plan, cutoffs) =
        built.map_err(|message| raise(py, "DataError", (message, None)))?;
    Ok((PyBytes::new(py, &bytes), plan, cutoffs))
}

/// Cutoffs as JSON text (see [`Cutoffs`]).
fn cutoffs_json(cutoffs: &Cutoffs) -> String {
    serde_json::to_string(cutoffs).unwrap_or_default()
}

/// [`cutoffs_json`] read back.
fn parse_cutoffs(text: &str) -> Result<Cutoffs, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "cutoffs: {e}: expected {{\"calendar\": [ms, ...]}}, {{\"after_creation_ms\": ms}} \
             or \"tabular\""
        )
    })
}

/// The feature table of the dataset at `spec` with a plan and cutoffs fixed beforehand,
/// those of a larger history this dataset is a part of (some of its entities, with all their
/// events and outcomes): the larger table's rows of those entities, bit for bit, as Parquet
/// bytes. What each worker of a distributed build runs. `files` replaces the spec's files
/// by section (`entities`, `events`, `outcomes`); profile columns are read as the plan's
/// kinds ([`features::parts::load_part`]).
#[pyfunction]
#[pyo3(signature = (spec, plan_json, cutoffs_json, data_dir=None, files=None))]
fn partition_table<'py>(
    py: Python<'py>,
    spec: PathBuf,
    plan_json: &str,
    cutoffs_json: &str,
    data_dir: Option<PathBuf>,
    files: Option<BTreeMap<String, PathBuf>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let built = py.detach(|| -> Result<Vec<u8>, String> {
        let plan: FeaturePlan =
            serde_json::from_str(plan_json).map_err(|e| format!("feature plan: {e}"))?;
        let cutoffs = parse_cutoffs(cutoffs_json)?;
        let spec = read_spec(&spec, data_dir)?;
        let data = load_part(&spec, &files.unwrap_or_default(), &plan_kinds(&plan))
            .map_err(|e| chain(&e))?;
        let table = build_features(&data, &plan, &cutoffs).map_err(|e| chain(&e))?;
        table.parquet_bytes().map_err(|e| chain(&e))
    });
    let bytes = built.map_err(|message| raise(py, "DataError", (message, None)))?;
    Ok(PyBytes::new(py, &bytes))
}

fn read_spec(path: &Path, data_dir: Option<PathBuf>) -> Result<DatasetSpec, String> {
    let mut spec = DatasetSpec::from_file(path).map_err(|e| chain(&e))?;
    if let Some(dir) = data_dir {
        spec.base_dir = dir;
    }
    Ok(spec)
}

/// The sections of the event-form spec at `spec` read from files, each with its entity id
/// column: `[(section, id_column), ...]`.
#[pyfunction]
fn part_sections(py: Python<'_>, spec: PathBuf) -> PyResult<Vec<(String, String)>> {
    let spec = read_spec(&spec, None).map_err(|m| raise(py, "DataError", (m, None)))?;
    let sections = section_ids(&spec).map_err(|e| raise(py, "DataError", (chain(&e), None)))?;
    Ok(sections
        .into_iter()
        .map(|(section, id)| (section.to_string(), id))
        .collect())
}

/// What one part of a history (its sections' files in `files`) contributes to the plan and
/// the cutoffs ([`features::parts::part_summary`]): Parquet bytes of the rows `kind`,
/// `name`, `level`, `count`, `entity`. `categorical` lists profile columns to read as
/// categorical (a recount the merge asked for).
#[pyfunction]
#[pyo3(signature = (spec, files, categorical=Vec::new()))]
fn part_summary<'py>(
    py: Python<'py>,
    spec: PathBuf,
    files: BTreeMap<String, PathBuf>,
    categorical: Vec<String>,
) -> PyResult<Bound<'py, PyBytes>> {
    let built = py.detach(|| -> Result<Vec<u8>, String> {
        let spec = read_spec(&spec, None)?;
        let kinds: BTreeMap<String, ColumnKind> = categorical
            .into_iter()
            .map(|c| (c, ColumnKind::Categorical))
            .collect();
        let data = load_part(&spec, &files, &kinds).map_err(|e| chain(&e))?;
        let rows = features::parts::part_summary(&data, &files).map_err(|e| chain(&e))?;
        features::parts::summary_parquet(&rows).map_err(|e| chain(&e))
    });
    let bytes = built.map_err(|message| raise(py, "DataError", (message, None)))?;
    Ok(PyBytes::new(py, &bytes))
}

/// The parts' summaries added up by `(kind, name, level)` (`rows_json`: a JSON list of
/// `[kind, name, level, sum, min, max]`), merged ([`features::parts::merge_summaries`]) and
/// the plan fitted: JSON text of `{"plan", "cutoffs", "inputs", "entities", "events",
/// "warnings", "recount_as_categorical"}` (`plan` and `cutoffs` null while a recount is
/// asked for).
#[pyfunction]
fn merge_parts(py: Python<'_>, spec: PathBuf, rows_json: &str) -> PyResult<String> {
    let merged = py.detach(|| -> Result<String, String> {
        let spec = read_spec(&spec, None)?;
        let rows: Vec<(String, String, String, i64, i64, i64)> =
            serde_json::from_str(rows_json).map_err(|e| format!("part summaries: {e}"))?;
        let rows: Vec<AggregatedRow> = rows
            .into_iter()
            .map(|(kind, name, level, sum, min, max)| AggregatedRow {
                kind,
                name,
                level,
                sum,
                min,
                max,
            })
            .collect();
        let merged = merge_summaries(&spec, &rows).map_err(|e| chain(&e))?;
        let (plan, cutoffs) = if merged.recount_as_categorical.is_empty() {
            let plan = FeaturePlanParams::new(spec.features.clone())
                .fit(&merged.inputs)
                .map_err(|e| chain(&e))?;
            let cutoffs = merged.cutoffs(&spec).map_err(|e| chain(&e))?;
            (
                serde_json::to_value(&plan).map_err(|e| e.to_string())?,
                serde_json::from_str(&cutoffs_json(&cutoffs)).map_err(|e| e.to_string())?,
            )
        } else {
            (serde_json::Value::Null, serde_json::Value::Null)
        };
        Ok(serde_json::json!({
            "plan": plan,
            "cutoffs": cutoffs,
            "inputs": merged.inputs,
            "entities": merged.entities,
            "events": merged.events,
            "warnings": merged.warnings,
            "recount_as_categorical": merged.recount_as_categorical,
        })
        .to_string())
    });
    merged.map_err(|message| raise(py, "DataError", (message, None)))
}

/// The folder of the version of `model` a server on `registry` serves: the live one, else
/// (a registry never promoted) the newest.
#[pyfunction]
fn served_bundle(py: Python<'_>, registry: PathBuf, model: &str) -> PyResult<PathBuf> {
    let name = ModelName::new(model)
        .map_err(|e| raise(py, "BundleError", (format!("model {model:?}: {e}"), None)))?;
    let registry = Registry::new(registry);
    let version = registry
        .served(&name)
        .map_err(|e| raise(py, "BundleError", (chain(&e), None)))?
        .ok_or_else(|| {
            let dir = registry.model_dir(&name);
            raise(
                py,
                "BundleError",
                (format!("no {model} bundle in {}", dir.display()), None),
            )
        })?;
    Ok(registry.model_dir(&name).join(version))
}

/// The ONNX Runtime library file this module loads (`libonnxruntime.so.<version>`).
#[pyfunction]
fn onnxruntime_file() -> &'static str {
    serving::runtime::ORT_LIB_FILE
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Bundle>()?;
    m.add_function(wrap_pyfunction!(feature_table, m)?)?;
    m.add_function(wrap_pyfunction!(partition_table, m)?)?;
    m.add_function(wrap_pyfunction!(part_sections, m)?)?;
    m.add_function(wrap_pyfunction!(part_summary, m)?)?;
    m.add_function(wrap_pyfunction!(merge_parts, m)?)?;
    m.add_function(wrap_pyfunction!(onnxruntime_file, m)?)?;
    m.add_function(wrap_pyfunction!(served_bundle, m)?)?;
    m.add("ONNXRUNTIME_ENV", serving::runtime::ORT_LIB_ENV)?;
    Ok(())
}
