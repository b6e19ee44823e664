//! The point-in-time feature builder: one row per (entity, cutoff), from data strictly
//! before the cutoff, labelled from the window after it.
//!
//! Polars lazy frames do the relational work (joining events to entities, dropping what can
//! never be seen, ordering each entity's history); the features themselves come from
//! [`FeaturePlan::compute_encoded`], the kernel the server calls too. Rows come out
//! entity by entity, cutoffs in time order within an entity.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use polars::prelude::*;
use rayon::prelude::*;

use crate::error::DataError;
use crate::history::{DAY_MS, TimestampMs};
use crate::load::{
    CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, LABEL, LoadedDataset, OUTCOME_AT, TS, VALUE,
};
use crate::plan::{
    EncodedEvent, EncodedProfile, FeaturePlan, FeaturePlanParams, PlanInputs, ProfileFeatureKind,
    ProfileInput, canonical_order, number_as_level,
};
use crate::spec::{ColumnKind, CutoffSpec, DatasetSpec, Form, LabelKind};

const ENTITY_ROW: &str = "__entity_row";

/// When the rows of a dataset are taken. As JSON: `{"calendar": [ms, ...]}`,
/// `{"after_creation_ms": ms}` or `"tabular"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "CutoffsData", into = "CutoffsData")]
pub enum Cutoffs {
    /// Calendar cutoffs (ms), ascending: every entity alive and unresolved gets a row at each.
    Calendar(Vec<TimestampMs>),
    /// One row per entity, this long after its creation.
    AfterCreation { offset_ms: i64 },
    /// Tabular form: one row per entity, no time.
    Tabular,
}

/// [`Cutoffs`] as written.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum CutoffsData {
    Calendar(Vec<TimestampMs>),
    AfterCreationMs(i64),
    Tabular,
}

impl From<CutoffsData> for Cutoffs {
    fn from(data: CutoffsData) -> Cutoffs {
        match data {
            CutoffsData::Calendar(at) => Cutoffs::Calendar(at),
            CutoffsData::AfterCreationMs(offset_ms) => Cutoffs::AfterCreation { offset_ms },
            CutoffsData::Tabular => Cutoffs::Tabular,
        }
    }
}

impl From<Cutoffs> for CutoffsData {
    fn from(cutoffs: Cutoffs) -> CutoffsData {
        match cutoffs {
            Cutoffs::Calendar(at) => CutoffsData::Calendar(at),
            Cutoffs::AfterCreation { offset_ms } => CutoffsData::AfterCreationMs(offset_ms),
            Cutoffs::Tabular => CutoffsData::Tabular,
        }
    }
}

/// A built feature table: row-major `f32` values with their names, one row per
/// (entity, cutoff).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTable {
    pub feature_names: Vec<String>,
    pub entity_ids: Vec<String>,
    /// Cutoff of each row (ms; 0 in tabular form).
    pub cutoffs_ms: Vec<TimestampMs>,
    pub labels: Vec<u8>,
    /// `n_rows * feature_names.len()` values, row after row.
    pub values: Vec<f32>,
}

impl FeatureTable {
    pub fn n_rows(&self) -> usize {
        self.entity_ids.len()
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let n = self.n_features();
        &self.values[i * n..(i + 1) * n]
    }

    /// Share of rows labelled positive.
    pub fn positive_rate(&self) -> f64 {
        if self.labels.is_empty() {
            return 0.0;
        }
        self.labels.iter().map(|l| f64::from(*l)).sum::<f64>() / self.labels.len() as f64
    }

    /// As a polars frame: `entity_id`, `cutoff` (ms), `label`, then one Float32 column per
    /// feature.
    pub fn to_dataframe(&self) -> Result<DataFrame, DataError> {
        let n = self.n_features();
        let mut columns: Vec<Column> = Vec::with_capacity(n + 3);
        columns.push(Column::new(ENTITY_ID.into(), &self.entity_ids));
        columns.push(Column::new("cutoff".into(), &self.cutoffs_ms));
        columns.push(Column::new(LABEL.into(), self.labels.as_slice()));
        for (j, name) in self.feature_names.iter().enumerate() {
            let values: Vec<f32> = (0..self.n_rows()).map(|i| self.values[i * n + j]).collect();
            columns.push(Column::new(name.as_str().into(), values));
        }
        DataFrame::new(self.n_rows(), columns)
            .map_err(|e| DataError::Invalid(format!("feature table: {e}")))
    }

    /// Writes the table as Parquet, atomically (temporary file, then rename).
    pub fn write_parquet(&self, path: &Path) -> Result<(), DataError> {
        let tmp = path.with_extension("parquet.tmp");
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        self.write_parquet_to(file, &path.display().to_string())?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The Parquet file [`write_parquet`](Self::write_parquet) writes, in memory (the Python
    /// package hands it to pyarrow).
    pub fn parquet_bytes(&self) -> Result<Vec<u8>, DataError> {
        let mut bytes = Vec::new();
        self.write_parquet_to(&mut bytes, "feature table as Parquet")?;
        Ok(bytes)
    }

    /// The table as Parquet into `out`; `what` names it in errors.
    fn write_parquet_to(&self, out: impl std::io::Write, what: &str) -> Result<(), DataError> {
        let mut frame = self.to_dataframe()?;
        ParquetWriter::new(out)
            .finish(&mut frame)
            .map(|_| ())
            .map_err(|e| DataError::Invalid(format!("{what}: {e}")))
    }
}

fn polars_error(what: &str) -> impl Fn(PolarsError) -> DataError + '_ {
    move |e| DataError::Invalid(format!("{what}: {e}"))
}

/// The cutoffs the dataset's spec asks for.
pub fn resolve_cutoffs(data: &LoadedDataset) -> Result<Cutoffs, DataError> {
    cutoffs_within(&data.spec, || data_start(data), || data_end(data))
}

/// The cutoffs `spec` asks for of a history that starts at `start()` and ends at `end()`
/// (see [`data_start`] and [`data_end`]; each is asked only when the spec needs it): what
/// [`resolve_cutoffs`] computes for a loaded dataset, and a build in parts computes from
/// the parts' bounds ([`crate::parts`]).
pub fn cutoffs_within(
    spec: &DatasetSpec,
    data_start: impl FnOnce() -> Result<TimestampMs, DataError>,
    data_end: impl FnOnce() -> Result<TimestampMs, DataError>,
) -> Result<Cutoffs, DataError> {
    let Some(label) = &spec.label else {
        return Ok(Cutoffs::Tabular);
    };
    match &label.cutoffs {
        CutoffSpec::AfterCreation { days } => Ok(Cutoffs::AfterCreation {
            offset_ms: i64::from(*days) * DAY_MS,
        }),
        CutoffSpec::Dates(dates) => {
            let mut cutoffs = dates
                .iter()
                .map(|d| parse_cutoff(d))
                .collect::<Result<Vec<_>, _>>()?;
            cutoffs.sort_unstable();
            cutoffs.dedup();
            if cutoffs.is_empty() {
                return Err(DataError::Invalid("[label] cutoffs: no dates given".into()));
            }
            Ok(Cutoffs::Calendar(cutoffs))
        }
        CutoffSpec::Every {
            every_days,
            count,
            start,
            start_after_first_days,
        } => {
            let end = data_end()?;
            let horizon = i64::from(label.horizon_days) * DAY_MS;
            // The last cutoff is the start of a day whose label window ends by the data's end.
            let last = (end - horizon).div_euclid(DAY_MS) * DAY_MS;
            let step = i64::from(*every_days) * DAY_MS;
            let first = match (start, start_after_first_days) {
                (Some(text), _) => Some(parse_cutoff(text)?),
                (None, Some(days)) => {
                    Some(data_start()?.div_euclid(DAY_MS) * DAY_MS + i64::from(*days) * DAY_MS)
                }
                (None, None) => None,
            };
            let cutoffs: Vec<i64> = match first {
                None => {
                    let count = count.unwrap_or(1);
                    let mut back: Vec<i64> =
                        (0..i64::from(count)).map(|k| last - k * step).collect();
                    back.reverse();
                    back
                }
                Some(first) if first > last => {
                    return Err(DataError::Invalid(format!(
                        "[label] cutoffs: the first cutoff, {}, has no complete label window: \
                         the data ends {} and the horizon is {} days, so the last cutoff can \
                         be {}",
                        show_day(first),
                        show_day(end),
                        label.horizon_days,
                        show_day(last)
                    )));
                }
                Some(first) => (0..)
                    .map(|k| first + k * step)
                    .take_while(|&c| c <= last)
                    .take(count.map_or(usize::MAX, |c| c as usize))
                    .collect(),
            };
            Ok(Cutoffs::Calendar(cutoffs))
        }
    }
}

/// A cutoff or data time as a date (and time when not midnight), UTC.
fn show_day(ms: TimestampMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| {
            if ms.rem_euclid(DAY_MS) == 0 {
                t.format("%Y-%m-%d").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S").to_string()
            }
        },
    )
}

/// The earliest record: an entity's creation or an event.
pub fn data_start(data: &LoadedDataset) -> Result<TimestampMs, DataError> {
    let mut start = i64::MAX;
    for (frame, column) in [
        (Some(&data.entities), CREATED_AT),
        (data.events.as_ref(), TS),
    ] {
        if let Some(frame) = frame {
            let min = frame
                .column(column)
                .and_then(|c| c.i64().map(|ca| ca.min()))
                .map_err(polars_error(column))?;
            start = start.min(min.unwrap_or(i64::MAX));
        }
    }
    if start == i64::MAX {
        return Err(no_start_error());
    }
    Ok(start)
}

fn parse_cutoff(text: &str) -> Result<TimestampMs, DataError> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis()));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(DataError::Invalid(format!(
        "[label] cutoffs: cannot read {text:?} as a date (use YYYY-MM-DD)"
    )))
}

pub(crate) fn no_start_error() -> DataError {
    DataError::Invalid("the dataset has no entities or events to date its start".into())
}

pub(crate) fn no_end_error() -> DataError {
    DataError::Invalid("the dataset has no events or outcomes to date its end".into())
}

/// The latest event or outcome time: label windows must end by then.
pub fn data_end(data: &LoadedDataset) -> Result<TimestampMs, DataError> {
    let mut end = i64::MIN;
    for (frame, column) in [(&data.events, TS), (&data.outcomes, OUTCOME_AT)] {
        if let Some(frame) = frame {
            let max = frame
                .column(column)
                .and_then(|c| c.i64().map(|ca| ca.max()))
                .map_err(polars_error(column))?;
            end = end.max(max.unwrap_or(i64::MIN));
        }
    }
    if end == i64::MIN {
        return Err(no_end_error());
    }
    Ok(end)
}

/// What the plan is fitted on: entities created, and events that happened, before
/// `fit_before` (ms); everything when `None`.
pub fn plan_inputs(
    data: &LoadedDataset,
    fit_before: Option<TimestampMs>,
) -> Result<PlanInputs, DataError> {
    let bound = fit_before.unwrap_or(i64::MAX);
    let entities = data
        .entities
        .clone()
        .lazy()
        .filter(col(CREATED_AT).lt(lit(bound)))
        .collect()
        .map_err(polars_error("entities"))?;
    let mut profile = Vec::with_capacity(data.profile_columns.len());
    for column in &data.profile_columns {
        let mut level_counts = HashMap::new();
        if column.kind == ColumnKind::Categorical {
            let values = entities
                .column(&column.name)
                .and_then(|c| c.str())
                .map_err(polars_error(&column.name))?;
            for value in values.iter().flatten() {
                *level_counts.entry(value.to_string()).or_insert(0) += 1;
            }
        }
        profile.push(ProfileInput {
            name: column.name.clone(),
            kind: column.kind,
            level_counts,
        });
    }
    let mut event_types = BTreeMap::new();
    let mut channels = Vec::new();
    if let Some(events) = &data.events {
        let seen = events
            .clone()
            .lazy()
            .filter(col(TS).lt(lit(bound)))
            .group_by([col(EVENT_TYPE)])
            .agg([col(VALUE).is_not_null().any(true).alias("valued")])
            .collect()
            .map_err(polars_error("event types"))?;
        let types = seen
            .column(EVENT_TYPE)
            .and_then(|c| c.str())
            .map_err(polars_error(EVENT_TYPE))?;
        let valued = seen
            .column("valued")
            .and_then(|c| c.bool())
            .map_err(polars_error(VALUE))?;
        for (t, v) in types.iter().zip(valued.iter()) {
            if let Some(t) = t {
                event_types.insert(t.to_string(), v.unwrap_or(false));
            }
        }
        let seen_channels = events
            .clone()
            .lazy()
            .filter(col(TS).lt(lit(bound)).and(col(CHANNEL).is_not_null()))
            .select([col(CHANNEL)])
            .unique(None, UniqueKeepStrategy::Any)
            .collect()
            .map_err(polars_error("channels"))?;
        let names = seen_channels
            .column(CHANNEL)
            .and_then(|c| c.str())
            .map_err(polars_error(CHANNEL))?;
        channels = names.iter().flatten().map(str::to_string).collect();
    }
    Ok(PlanInputs {
        form: data.spec.form(),
        profile,
        event_types,
        channels,
    })
}

/// Fits a plan on the data before `fit_before` with the spec's feature options.
pub fn fit_plan(
    data: &LoadedDataset,
    fit_before: Option<TimestampMs>,
) -> Result<FeaturePlan, DataError> {
    let params = FeaturePlanParams::new(data.spec.features.clone());
    params.fit(&plan_inputs(data, fit_before)?)
}

/// Entities as the kernel needs them.
struct EntityColumns {
    ids: Vec<String>,
    created: Vec<TimestampMs>,
    /// Row-major: `profile[e * n_fields + f]`.
    profile: Vec<EncodedProfile>,
    labels: Option<Vec<u8>>,
}

fn entity_columns(data: &LoadedDataset, plan: &FeaturePlan) -> Result<EntityColumns, DataError> {
    let frame = &data.entities;
    let n = frame.height();
    let ids = frame
        .column(ENTITY_ID)
        .and_then(|c| c.str())
        .map_err(polars_error(ENTITY_ID))?
        .iter()
        .map(|id| id.unwrap_or_default().to_string())
        .collect();
    let created = frame
        .column(CREATED_AT)
        .and_then(|c| c.i64())
        .map_err(polars_error(CREATED_AT))?
        .iter()
        .map(|t| t.unwrap_or(0))
        .collect();
    let fields = plan.profile_fields();
    let mut profile = vec![EncodedProfile::Number(f64::NAN); n * fields.len()];
    for (f, field) in fields.iter().enumerate() {
        let column = frame
            .column(&field.name)
            .map_err(polars_error(&field.name))?;
        match &field.kind {
            ProfileFeatureKind::Numeric => {
                let values = column
                    .cast(&DataType::Float64)
                    .map_err(polars_error(&field.name))?;
                let values = values.f64().map_err(polars_error(&field.name))?;
                for (e, v) in values.iter().enumerate() {
                    profile[e * fields.len() + f] = EncodedProfile::Number(v.unwrap_or(f64::NAN));
                }
            }
            ProfileFeatureKind::Categorical { .. } => {
                if let Ok(values) = column.str() {
                    for (e, v) in values.iter().enumerate() {
                        profile[e * fields.len() + f] =
                            EncodedProfile::Level(plan.level_code(f, v));
                    }
                } else {
                    let values = column
                        .cast(&DataType::Float64)
                        .map_err(polars_error(&field.name))?;
                    let values = values.f64().map_err(polars_error(&field.name))?;
                    for (e, v) in values.iter().enumerate() {
                        let level = v.map(number_as_level);
                        profile[e * fields.len() + f] =
                            EncodedProfile::Level(plan.level_code(f, level.as_deref()));
                    }
                }
            }
        }
    }
    let labels = match frame.column(LABEL) {
        Ok(column) => Some(
            column
                .cast(&DataType::UInt8)
                .map_err(polars_error(LABEL))?
                .u8()
                .map_err(polars_error(LABEL))?
                .iter()
                .map(|l| l.unwrap_or(0))
                .collect(),
        ),
        Err(_) => None,
    };
    Ok(EntityColumns {
        ids,
        created,
        profile,
        labels,
    })
}

/// Each entity's events, encoded, in canonical order: `events[offsets[e]..offsets[e + 1]]`.
struct EntityEvents {
    offsets: Vec<usize>,
    events: Vec<EncodedEvent>,
}

impl EntityEvents {
    fn of(&self, entity: usize) -> &[EncodedEvent] {
        &self.events[self.offsets[entity]..self.offsets[entity + 1]]
    }
}

/// The entity-row index joined onto a frame keyed by `entity_id`.
fn with_entity_rows(data: &LoadedDataset, frame: &DataFrame) -> LazyFrame {
    let rows = data
        .entities
        .clone()
        .lazy()
        .select([col(ENTITY_ID)])
        .with_row_index(ENTITY_ROW, None);
    frame
        .clone()
        .lazy()
        .inner_join(rows, col(ENTITY_ID), col(ENTITY_ID))
}

/// Events before `before` (per entity when `per_entity_before` is set: created_at + offset),
/// encoded against the plan.
fn entity_events(
    data: &LoadedDataset,
    plan: &FeaturePlan,
    visible: Expr,
) -> Result<EntityEvents, DataError> {
    let n_entities = data.entities.height();
    let Some(events) = &data.events else {
        return Ok(EntityEvents {
            offsets: vec![0; n_entities + 1],
            events: Vec::new(),
        });
    };
    let created = data
        .entities
        .clone()
        .lazy()
        .select([col(ENTITY_ID), col(CREATED_AT)]);
    let frame = with_entity_rows(data, events)
        .inner_join(created, col(ENTITY_ID), col(ENTITY_ID))
        .filter(visible)
        .select([
            col(ENTITY_ROW),
            col(TS),
            col(EVENT_TYPE),
            col(CHANNEL),
            col(VALUE),
        ])
        .sort_by_exprs([col(ENTITY_ROW), col(TS)], SortMultipleOptions::default())
        .collect()
        .map_err(polars_error("events"))?;
    let rows = frame
        .column(ENTITY_ROW)
        .and_then(|c| c.u32())
        .map_err(polars_error(ENTITY_ROW))?;
    let ts = frame
        .column(TS)
        .and_then(|c| c.i64())
        .map_err(polars_error(TS))?;
    let types = frame
        .column(EVENT_TYPE)
        .and_then(|c| c.str())
        .map_err(polars_error(EVENT_TYPE))?;
    let channels = frame
        .column(CHANNEL)
        .and_then(|c| c.str())
        .map_err(polars_error(CHANNEL))?;
    let values = frame
        .column(VALUE)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(polars_error(VALUE))?;
    let values = values.f64().map_err(polars_error(VALUE))?;

    let mut counts = vec![0usize; n_entities + 1];
    let mut encoded = Vec::with_capacity(frame.height());
    for ((((row, ts), event_type), channel), value) in rows
        .iter()
        .zip(ts.iter())
        .zip(types.iter())
        .zip(channels.iter())
        .zip(values.iter())
    {
        let (Some(row), Some(ts)) = (row, ts) else {
            continue;
        };
        counts[row as usize + 1] += 1;
        encoded.push(EncodedEvent {
            ts_ms: ts,
            event_type: event_type.map_or(u16::MAX, |t| plan.event_type_code(t)),
            channel: plan.channel_code(channel),
            value: value.unwrap_or(f64::NAN),
        });
    }
    let mut offsets = counts;
    for e in 0..n_entities {
        offsets[e + 1] += offsets[e];
    }
    let mut grouped = EntityEvents {
        offsets,
        events: encoded,
    };
    // Polars orders by (entity, time); ties within a timestamp go to the kernel's order.
    let offsets = grouped.offsets.clone();
    let mut rest = grouped.events.as_mut_slice();
    for e in 0..n_entities {
        let (mine, tail) = rest.split_at_mut(offsets[e + 1] - offsets[e]);
        mine.sort_by(canonical_order);
        rest = tail;
    }
    Ok(grouped)
}

/// Per entity, ascending timestamps of the given column of `frame` (activity events or
/// outcomes).
fn entity_times(
    data: &LoadedDataset,
    frame: &DataFrame,
    column: &str,
    keep: Expr,
) -> Result<Vec<Vec<TimestampMs>>, DataError> {
    let frame = with_entity_rows(data, frame)
        .filter(keep)
        .select([col(ENTITY_ROW), col(column)])
        .sort_by_exprs(
            [col(ENTITY_ROW), col(column)],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(polars_error(column))?;
    let rows = frame
        .column(ENTITY_ROW)
        .and_then(|c| c.u32())
        .map_err(polars_error(ENTITY_ROW))?;
    let times = frame
        .column(column)
        .and_then(|c| c.i64())
        .map_err(polars_error(column))?;
    let mut out = vec![Vec::new(); data.entities.height()];
    for (row, t) in rows.iter().zip(times.iter()) {
        if let (Some(row), Some(t)) = (row, t) {
            out[row as usize].push(t);
        }
    }
    Ok(out)
}

/// How a row's label is decided.
enum Labeller {
    Tabular(Vec<u8>),
    OutcomeWithin {
        outcome: Vec<Option<TimestampMs>>,
        horizon_ms: i64,
    },
    Inactivity {
        activity: Vec<Vec<TimestampMs>>,
        horizon_ms: i64,
        active_within_ms: i64,
    },
}

impl Labeller {
    /// `None` when the entity is not at risk at the cutoff (already converted or churned,
    /// or not active), else its label.
    fn label(&self, entity: usize, cutoff: TimestampMs) -> Option<u8> {
        match self {
            Labeller::Tabular(labels) => labels.get(entity).copied(),
            Labeller::OutcomeWithin {
                outcome,
                horizon_ms,
            } => match outcome[entity] {
                Some(t) if t < cutoff => None,
                Some(t) => Some(u8::from(t < cutoff + horizon_ms)),
                None => Some(0),
            },
            Labeller::Inactivity {
                activity,
                horizon_ms,
                active_within_ms,
            } => {
                let times = &activity[entity];
                let first_at_or_after = times.partition_point(|t| *t < cutoff);
                let active_before = first_at_or_after > 0
                    && times[first_at_or_after - 1] >= cutoff - active_within_ms;
                if !active_before {
                    return None;
                }
                let active_after = times
                    .get(first_at_or_after)
                    .is_some_and(|t| *t < cutoff + horizon_ms);
                Some(u8::from(!active_after))
            }
        }
    }
}

fn labeller(data: &LoadedDataset, entities: &EntityColumns) -> Result<Labeller, DataError> {
    let Some(label) = &data.spec.label else {
        return entities
            .labels
            .clone()
            .map(Labeller::Tabular)
            .ok_or_else(|| DataError::Invalid("tabular dataset without a `label` column".into()));
    };
    let horizon_ms = i64::from(label.horizon_days) * DAY_MS;
    match label.kind {
        LabelKind::OutcomeWithin => {
            let outcomes = data.outcomes.as_ref().ok_or_else(|| {
                DataError::Invalid("label kind outcome_within needs outcomes".into())
            })?;
            let times = entity_times(data, outcomes, OUTCOME_AT, lit(true))?;
            Ok(Labeller::OutcomeWithin {
                outcome: times.into_iter().map(|t| t.first().copied()).collect(),
                horizon_ms,
            })
        }
        LabelKind::Inactivity => {
            let events = data
                .events
                .as_ref()
                .ok_or_else(|| DataError::Invalid("label kind inactivity needs events".into()))?;
            let mut keep = lit(false);
            for t in &label.inactivity_event_types {
                keep = keep.or(col(EVENT_TYPE).eq(lit(t.clone())));
            }
            let activity = entity_times(data, events, TS, keep)?;
            let active_within_days = label.active_within_days.unwrap_or(label.horizon_days);
            Ok(Labeller::Inactivity {
                activity,
                horizon_ms,
                active_within_ms: i64::from(active_within_days) * DAY_MS,
            })
        }
    }
}

/// Builds the feature table of `data` at `cutoffs` with a fitted `plan`.
pub fn build_features(
    data: &LoadedDataset,
    plan: &FeaturePlan,
    cutoffs: &Cutoffs,
) -> Result<FeatureTable, DataError> {
    let expected_form = match cutoffs {
        Cutoffs::Tabular => Form::Tabular,
        _ => Form::Events,
    };
    if plan.form() != expected_form || data.spec.form() != expected_form {
        return Err(DataError::Invalid(format!(
            "the plan ({:?}), the data ({:?}) and the cutoffs ({cutoffs:?}) disagree on the form",
            plan.form(),
            data.spec.form()
        )));
    }
    let entities = entity_columns(data, plan)?;
    let labeller = labeller(data, &entities)?;
    let visible = match cutoffs {
        Cutoffs::Calendar(c) => col(TS).lt(lit(c.last().copied().unwrap_or(i64::MIN))),
        Cutoffs::AfterCreation { offset_ms } => col(TS).lt(col(CREATED_AT) + lit(*offset_ms)),
        Cutoffs::Tabular => lit(false),
    };
    let events = entity_events(data, plan, visible)?;
    let label_end = match cutoffs {
        Cutoffs::AfterCreation { .. } => Some(data_end(data)?),
        _ => None,
    };
    let horizon_ms = data
        .spec
        .label
        .as_ref()
        .map_or(0, |l| i64::from(l.horizon_days) * DAY_MS);

    let n_features = plan.n_features();
    let n_fields = plan.profile_fields().len();
    // First each entity's rows (cutoff and label), then every row's features computed straight
    // into its place in the table: the values are held once, not per entity and again in the
    // table.
    let per_entity: Vec<(Vec<TimestampMs>, Vec<u8>)> = (0..entities.ids.len())
        .into_par_iter()
        .map(|e| {
            let created = entities.created[e];
            let entity_cutoffs: Vec<TimestampMs> = match cutoffs {
                Cutoffs::Calendar(c) => c.iter().copied().filter(|c| created < *c).collect(),
                Cutoffs::AfterCreation { offset_ms } => {
                    let c = created + offset_ms;
                    // A label window that runs past the data's end is not known yet.
                    if label_end.is_some_and(|end| c + horizon_ms > end) {
                        Vec::new()
                    } else {
                        vec![c]
                    }
                }
                Cutoffs::Tabular => vec![0],
            };
            let mut row_cutoffs = Vec::new();
            let mut labels = Vec::new();
            for cutoff in entity_cutoffs {
                if let Some(label) = labeller.label(e, cutoff) {
                    row_cutoffs.push(cutoff);
                    labels.push(label);
                }
            }
            (row_cutoffs, labels)
        })
        .collect();

    let n_rows: usize = per_entity.iter().map(|(c, _)| c.len()).sum();
    let mut table = FeatureTable {
        feature_names: plan.feature_names().to_vec(),
        entity_ids: Vec::with_capacity(n_rows),
        cutoffs_ms: Vec::with_capacity(n_rows),
        labels: Vec::with_capacity(n_rows),
        values: vec![0.0; n_rows * n_features],
    };
    let mut entity_values: Vec<&mut [f32]> = Vec::with_capacity(per_entity.len());
    let mut rest = table.values.as_mut_slice();
    for (row_cutoffs, _) in &per_entity {
        let (values, tail) = std::mem::take(&mut rest).split_at_mut(row_cutoffs.len() * n_features);
        entity_values.push(values);
        rest = tail;
    }
    entity_values
        .into_par_iter()
        .zip(&per_entity)
        .enumerate()
        .for_each(|(e, (values, (row_cutoffs, _)))| {
            let created = entities.created[e];
            let profile = &entities.profile[e * n_fields..(e + 1) * n_fields];
            let history = events.of(e);
            for (row, &cutoff) in values.chunks_exact_mut(n_features.max(1)).zip(row_cutoffs) {
                let visible = &history[..history.partition_point(|ev| ev.ts_ms < cutoff)];
                plan.compute_encoded(created, profile, visible, cutoff, row);
            }
        });
    for (e, (row_cutoffs, labels)) in per_entity.into_iter().enumerate() {
        for _ in 0..row_cutoffs.len() {
            table.entity_ids.push(entities.ids[e].clone());
        }
        table.cutoffs_ms.extend(row_cutoffs);
        table.labels.extend(labels);
    }
    Ok(table)
}
