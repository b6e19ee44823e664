//! Building one history's feature table in parts, as a cluster does (the Python package's
//! Spark build): every entity's rows (profile, events, outcomes) go to one part, each part
//! is loaded by [`load_part`] with the loader every other path uses, and
//!
//! 1. [`part_summary`] says what the part contributes to the plan and the cutoffs, as
//!    [`SummaryRow`]s a cluster can add up with a plain group-by (sum, min, max);
//! 2. [`merge_summaries`] turns the added-up rows into the [`PlanInputs`] and data bounds of
//!    the whole history, so the plan and the cutoffs are those of one load of all of it;
//! 3. each part's table is then built with that plan and those cutoffs ([`load_part`] with
//!    the plan's column kinds, then [`crate::builder::build_features`]).
//!
//! **Invariant:** the parts' tables together are the table of one build of the whole history,
//! row for row and bit for bit. Column kinds are the one thing a part could see otherwise
//! than the whole (a column of numbers in one part, of words in another): a part reports its
//! evidence, the merge decides, and asks for a recount of the columns a part read as numbers
//! but the whole reads as categorical ([`MergedParts::recount_as_categorical`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use polars::prelude::{Column, DataFrame, ParquetWriter};
use serde::{Deserialize, Serialize};

use crate::builder::{
    Cutoffs, cutoffs_within, data_end, data_start, no_end_error, no_start_error, plan_inputs,
};
use crate::error::DataError;
use crate::load::{ENTITY_ID, KindEvidence, LoadedDataset, kind_evidence, load_dataset};
use crate::plan::{FeaturePlan, PlanInputs, ProfileFeatureKind, ProfileInput};
use crate::spec::{ColumnKind, DatasetSpec, Form};

/// The sections of a spec a part is made of, in the order a build reads them.
pub const SECTIONS: [&str; 3] = ["entities", "events", "outcomes"];

/// One fact of a part's summary. Facts with the same `(kind, name, level)` are added up
/// across parts by the rule of their kind: counts summed, `start` the minimum, `end` and
/// flags the maximum, `column` (a profile column's position) the minimum. `profile` rows
/// (an entity's categorical profile value, `entity` set) are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub kind: String,
    pub name: String,
    pub level: String,
    pub count: i64,
    pub entity: Option<String>,
}

/// Summary rows with the same `(kind, name, level)`, added up: the sum, minimum and maximum
/// of their counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedRow {
    pub kind: String,
    pub name: String,
    pub level: String,
    pub sum: i64,
    pub min: i64,
    pub max: i64,
}

/// The id column of each section `spec` reads from its own file: what a cluster groups the
/// section's rows by, so that an entity's rows meet in one part.
pub fn section_ids(spec: &DatasetSpec) -> Result<Vec<(&'static str, String)>, DataError> {
    let (Some(entities), Form::Events) = (&spec.entities, spec.form()) else {
        return Err(not_event_form());
    };
    let mut sections = Vec::new();
    if !entities.from_events {
        sections.push(("entities", entities.id.clone()));
    }
    if let Some(events) = &spec.events {
        sections.push(("events", events.entity_id.clone()));
    }
    if let Some(outcomes) = &spec.outcomes {
        sections.push(("outcomes", outcomes.entity_id.clone()));
    }
    Ok(sections)
}

fn not_event_form() -> DataError {
    DataError::Invalid(
        "a feature table is built in parts from event-form specs ([entities], [events], \
         [outcomes]); a tabular spec's table is one row per entity, built in one pass"
            .into(),
    )
}

/// Loads one part: `spec` with its sections' files replaced by `files` (section name to
/// path; a part file may have no rows) and the profile columns of `kinds` read as those kinds, whatever the spec declares
/// or the part's values suggest.
pub fn load_part(
    spec: &DatasetSpec,
    files: &BTreeMap<String, PathBuf>,
    kinds: &BTreeMap<String, ColumnKind>,
) -> Result<LoadedDataset, DataError> {
    let mut spec = spec.clone();
    if spec.form() != Form::Events {
        return Err(not_event_form());
    }
    for (section, path) in files {
        match section.as_str() {
            "entities" => {
                if let Some(entities) = spec.entities.as_mut() {
                    entities.path = Some(path.clone());
                    entities.file.allow_empty = true;
                }
            }
            "events" => {
                if let Some(events) = spec.events.as_mut() {
                    events.path = path.clone();
                    events.file.allow_empty = true;
                }
            }
            "outcomes" => {
                if let Some(outcomes) = spec.outcomes.as_mut() {
                    outcomes.path = path.clone();
                    outcomes.file.allow_empty = true;
                }
            }
            other => {
                return Err(DataError::Invalid(format!(
                    "part file for section `{other}`: the sections are {}",
                    SECTIONS.join(", ")
                )));
            }
        }
    }
    if let Some(entities) = spec.entities.as_mut() {
        entities.columns.extend(kinds.clone());
    }
    load_dataset(&spec)
}

/// The kind of each profile column of `plan`: what every part is read with once the plan is
/// fitted, so no part infers a kind of its own.
pub fn plan_kinds(plan: &FeaturePlan) -> BTreeMap<String, ColumnKind> {
    plan.profile_fields()
        .iter()
        .map(|field| {
            let kind = match field.kind {
                ProfileFeatureKind::Numeric => ColumnKind::Numeric,
                ProfileFeatureKind::Categorical { .. } => ColumnKind::Categorical,
            };
            (field.name.clone(), kind)
        })
        .collect()
}

fn row(kind: &str, name: &str, level: &str, count: i64) -> SummaryRow {
    SummaryRow {
        kind: kind.into(),
        name: name.into(),
        level: level.into(),
        count,
        entity: None,
    }
}

/// What the loaded part `data` contributes: counts, data bounds, per profile column its
/// position and kind evidence (and level counts when read as categorical), event types
/// (valued or not), channels, the loader's warnings (the part's file named by its section,
/// `files` as given to [`load_part`]) and each entity's categorical profile values.
pub fn part_summary(
    data: &LoadedDataset,
    files: &BTreeMap<String, PathBuf>,
) -> Result<Vec<SummaryRow>, DataError> {
    let inputs = plan_inputs(data, None)?;
    let mut rows = vec![row("entities", "", "", data.entities.height() as i64)];
    if let Some(events) = &data.events {
        rows.push(row("events", "", "", events.height() as i64));
    }
    if let Ok(start) = data_start(data) {
        rows.push(row("start", "", "", start));
    }
    if let Ok(end) = data_end(data) {
        rows.push(row("end", "", "", end));
    }
    for (position, input) in inputs.profile.iter().enumerate() {
        let name = input.name.as_str();
        rows.push(row("column", name, "", position as i64));
        match input.kind {
            ColumnKind::Numeric => rows.push(row("numeric", name, "", 1)),
            ColumnKind::Categorical => {
                let (mut numbers, mut others) = (0, 0);
                for (level, &count) in &input.level_counts {
                    match kind_evidence(level) {
                        KindEvidence::Number => numbers += count as i64,
                        KindEvidence::BlankLike => {}
                        KindEvidence::Other => others += count as i64,
                    }
                    rows.push(row("level", name, level, count as i64));
                }
                rows.push(row("numbers", name, "", numbers));
                rows.push(row("others", name, "", others));
            }
        }
    }
    for (event_type, valued) in &inputs.event_types {
        rows.push(row("event_type", "", event_type, i64::from(*valued)));
    }
    for channel in &inputs.channels {
        rows.push(row("channel", "", channel, 1));
    }
    for warning in &data.warnings {
        let mut text = warning.clone();
        for (section, path) in files {
            text = text.replace(
                &path.display().to_string(),
                &format!("a part of the `{section}` data"),
            );
        }
        rows.push(row("warning", "", &text, 1));
    }
    rows.extend(profile_rows(data, &inputs.profile)?);
    Ok(rows)
}

/// Each entity's non-missing values of the categorical profile columns.
fn profile_rows(
    data: &LoadedDataset,
    profile: &[ProfileInput],
) -> Result<Vec<SummaryRow>, DataError> {
    let frame_error = |name: &str| {
        let name = name.to_string();
        move |e: polars::prelude::PolarsError| {
            DataError::Invalid(format!("entities column {name}: {e}"))
        }
    };
    let ids = data
        .entities
        .column(ENTITY_ID)
        .and_then(|c| c.str())
        .map_err(frame_error(ENTITY_ID))?;
    let mut rows = Vec::new();
    for input in profile.iter().filter(|p| p.kind == ColumnKind::Categorical) {
        let values = data
            .entities
            .column(&input.name)
            .and_then(|c| c.str())
            .map_err(frame_error(&input.name))?;
        for (id, value) in ids.iter().zip(values.iter()) {
            if let (Some(id), Some(value)) = (id, value) {
                rows.push(SummaryRow {
                    entity: Some(id.to_string()),
                    ..row("profile", &input.name, value, 1)
                });
            }
        }
    }
    Ok(rows)
}

/// The parts of a history, merged: what one load of all of it would have given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedParts {
    pub inputs: PlanInputs,
    /// The earliest creation or event ([`data_start`]), `None` when no part had one.
    pub start: Option<i64>,
    /// The latest event or outcome ([`data_end`]), `None` when no part had one.
    pub end: Option<i64>,
    pub entities: u64,
    pub events: u64,
    /// The loader's warnings, once each.
    pub warnings: Vec<String>,
    /// Profile columns some part read as numbers but the whole history reads as categorical:
    /// their levels were not counted there. Summarise the parts again with these columns
    /// read as categorical ([`load_part`]'s `kinds`) before fitting a plan.
    pub recount_as_categorical: Vec<String>,
}

impl MergedParts {
    /// The cutoffs the spec asks for over the whole history.
    pub fn cutoffs(&self, spec: &DatasetSpec) -> Result<Cutoffs, DataError> {
        cutoffs_within(
            spec,
            || self.start.ok_or_else(no_start_error),
            || self.end.ok_or_else(no_end_error),
        )
    }
}

/// Merges the parts' summaries, added up by `(kind, name, level)` ([`AggregatedRow`];
/// `profile` rows are ignored).
pub fn merge_summaries(
    spec: &DatasetSpec,
    rows: &[AggregatedRow],
) -> Result<MergedParts, DataError> {
    if spec.form() != Form::Events {
        return Err(not_event_form());
    }
    #[derive(Default)]
    struct Column {
        position: i64,
        read_numeric: bool,
        numbers: i64,
        others: i64,
        level_counts: HashMap<String, usize>,
    }
    let mut columns: BTreeMap<String, Column> = BTreeMap::new();
    let mut merged = MergedParts {
        inputs: PlanInputs {
            form: Form::Events,
            profile: Vec::new(),
            event_types: BTreeMap::new(),
            channels: Vec::new(),
        },
        start: None,
        end: None,
        entities: 0,
        events: 0,
        warnings: Vec::new(),
        recount_as_categorical: Vec::new(),
    };
    let count = |r: &AggregatedRow, value: i64| {
        u64::try_from(value).map_err(|_| {
            DataError::Invalid(format!(
                "part summary ({}, {:?}, {:?}): a negative count, {value}",
                r.kind, r.name, r.level
            ))
        })
    };
    for r in rows {
        match r.kind.as_str() {
            "entities" => merged.entities += count(r, r.sum)?,
            "events" => merged.events += count(r, r.sum)?,
            "start" => merged.start = Some(merged.start.map_or(r.min, |s| s.min(r.min))),
            "end" => merged.end = Some(merged.end.map_or(r.max, |e| e.max(r.max))),
            "column" => {
                let column = columns.entry(r.name.clone()).or_default();
                column.position = r.min;
            }
            "numeric" => columns.entry(r.name.clone()).or_default().read_numeric = r.max > 0,
            "numbers" => columns.entry(r.name.clone()).or_default().numbers += r.sum,
            "others" => columns.entry(r.name.clone()).or_default().others += r.sum,
            "level" => {
                *columns
                    .entry(r.name.clone())
                    .or_default()
                    .level_counts
                    .entry(r.level.clone())
                    .or_default() += count(r, r.sum)? as usize;
            }
            "event_type" => {
                let valued = merged
                    .inputs
                    .event_types
                    .entry(r.level.clone())
                    .or_default();
                *valued |= r.max > 0;
            }
            "channel" => merged.inputs.channels.push(r.level.clone()),
            "warning" => merged.warnings.push(r.level.clone()),
            "profile" => {}
            other => {
                return Err(DataError::Invalid(format!(
                    "part summary: unknown kind of row `{other}`"
                )));
            }
        }
    }
    let declared = spec
        .entities
        .as_ref()
        .map(|e| e.columns.clone())
        .unwrap_or_default();
    let mut ordered: Vec<(String, Column)> = columns.into_iter().collect();
    ordered.sort_by_key(|(_, c)| c.position);
    for (name, column) in ordered {
        // As `load::values::inferred_kind` over the whole column: numbers and blanks only,
        // at least one number (a part that read the column as numeric had one).
        let kind = declared.get(&name).copied().unwrap_or(
            if column.others == 0 && (column.read_numeric || column.numbers > 0) {
                ColumnKind::Numeric
            } else {
                ColumnKind::Categorical
            },
        );
        if kind == ColumnKind::Categorical && column.read_numeric {
            merged.recount_as_categorical.push(name.clone());
        }
        merged.inputs.profile.push(ProfileInput {
            name,
            kind,
            level_counts: if kind == ColumnKind::Categorical {
                column.level_counts
            } else {
                HashMap::new()
            },
        });
    }
    merged.inputs.channels.sort();
    merged.inputs.channels.dedup();
    merged.warnings.sort();
    merged.warnings.dedup();
    Ok(merged)
}

/// Adds up summary rows as a cluster's group-by does (what tests and a one-machine caller
/// use in place of one).
pub fn aggregate(rows: impl IntoIterator<Item = SummaryRow>) -> Vec<AggregatedRow> {
    let mut groups: BTreeMap<(String, String, String), AggregatedRow> = BTreeMap::new();
    for r in rows.into_iter().filter(|r| r.entity.is_none()) {
        let key = (r.kind.clone(), r.name.clone(), r.level.clone());
        groups
            .entry(key)
            .and_modify(|a| {
                a.sum += r.count;
                a.min = a.min.min(r.count);
                a.max = a.max.max(r.count);
            })
            .or_insert(AggregatedRow {
                kind: r.kind,
                name: r.name,
                level: r.level,
                sum: r.count,
                min: r.count,
                max: r.count,
            });
    }
    groups.into_values().collect()
}

/// Summary rows as Parquet bytes: `kind`, `name`, `level` (text), `count` (Int64), `entity`
/// (text, null but on `profile` rows).
pub fn summary_parquet(rows: &[SummaryRow]) -> Result<Vec<u8>, DataError> {
    let text = |f: fn(&SummaryRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let mut frame = DataFrame::new(
        rows.len(),
        vec![
            Column::new("kind".into(), text(|r| &r.kind)),
            Column::new("name".into(), text(|r| &r.name)),
            Column::new("level".into(), text(|r| &r.level)),
            Column::new(
                "count".into(),
                rows.iter().map(|r| r.count).collect::<Vec<_>>(),
            ),
            Column::new(
                "entity".into(),
                rows.iter().map(|r| r.entity.as_deref()).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| DataError::Invalid(format!("part summary: {e}")))?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .finish(&mut frame)
        .map_err(|e| DataError::Invalid(format!("part summary as Parquet: {e}")))?;
    Ok(bytes)
}
