//! Reading and validating a dataset described by a [`DatasetSpec`] into canonical frames.
//!
//! Whatever the input's column names and types, the result has the canonical columns below,
//! so the feature builder never sees the raw export. Every problem is reported as a
//! [`DataError`] naming the file, row, column and value; nothing panics on input.
//!
//! Reading rules, common to every file:
//! - CSV or Parquet by extension (any case). CSV columns are read as text and parsed here;
//!   Parquet columns keep their types. The empty string and the spec's `missing` markers
//!   are missing values.
//! - Ids become text: integers in decimal, integral floats and text like `13085.0` without
//!   the fraction, so that an id reads the same from a float Parquet column and a CSV.
//! - Timestamps become ms since the epoch, UTC (times without an offset are taken as UTC).
//! - A profile column is every column but the id, creation time, label and excluded ones;
//!   numeric (Float64) when declared so or when every non-missing value is a number or
//!   blank-like (whitespace, `-`, `?`, `NA`, ...: read as missing, with a warning), else
//!   categorical (String).
//! - Text files (`.csv`, `.txt`, `.tsv`) are decoded (`encoding`), split (`separator`, or
//!   `"whitespace"`) and checked whole before they are parsed: a bad byte, a row with more or
//!   fewer fields than the header, or a header that looks separated by another character is
//!   refused naming the row or the key to set (the module `load::text`).

mod event_form;
mod source;
mod tabular;
mod text;
mod values;

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use self::source::SourceFile;
pub(crate) use self::values::{KindEvidence, kind_evidence};
use crate::error::DataError;
use crate::spec::{ColumnKind, DatasetSpec};

/// Canonical column: entity id (String) in every frame.
pub const ENTITY_ID: &str = "entity_id";
/// Canonical column: entity creation time (Int64, ms since epoch; 0 in tabular form).
pub const CREATED_AT: &str = "created_at";
/// Canonical column: label (UInt8 0/1), tabular form only, in the entities frame.
pub const LABEL: &str = "label";
/// Canonical column: event time (Int64 ms).
pub const TS: &str = "ts";
/// Canonical column: event type (String, never null).
pub const EVENT_TYPE: &str = "event_type";
/// Canonical column: event channel (String, nullable).
pub const CHANNEL: &str = "channel";
/// Canonical column: event value (Float64, nullable).
pub const VALUE: &str = "value";
/// Canonical column: outcome time (Int64 ms), earliest per entity.
pub const OUTCOME_AT: &str = "outcome_at";

/// A profile column after loading: its name (as in the export) and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileColumn {
    pub name: String,
    pub kind: ColumnKind,
}

/// A validated dataset in canonical form.
#[derive(Debug, Clone)]
pub struct LoadedDataset {
    pub spec: DatasetSpec,
    /// `entity_id`, `created_at`, then the profile columns in `profile_columns` order
    /// (Float64 for numeric, String for categorical, null where missing), then `label` in
    /// tabular form. One row per entity, ids unique.
    pub entities: DataFrame,
    pub profile_columns: Vec<ProfileColumn>,
    /// Event form: `entity_id`, `ts`, `event_type`, `channel`, `value`; every entity id is in
    /// `entities`.
    pub events: Option<DataFrame>,
    /// Event form with outcomes: `entity_id`, `outcome_at` (one row per entity that has an
    /// outcome, the earliest; never before the entity's creation).
    pub outcomes: Option<DataFrame>,
    /// What was read otherwise than written and deserves a look (blank-like values of a
    /// numeric column read as missing), one line each naming file, column and row.
    pub warnings: Vec<String>,
}

/// Loads and validates every file of `spec`.
pub fn load_dataset(spec: &DatasetSpec) -> Result<LoadedDataset, DataError> {
    match (&spec.table, &spec.entities) {
        (Some(table), _) => tabular::load(spec, table),
        (None, Some(entities)) => event_form::load(spec, entities),
        (None, None) => Err(DataError::Invalid(format!(
            "dataset spec `{}` has neither [entities] nor [table]",
            spec.name
        ))),
    }
}

/// The canonical profile columns `names` of `source`, each of the kind `declared` gives it
/// or else the inferred one.
fn profile_columns(
    source: &SourceFile,
    names: &[String],
    declared: &BTreeMap<String, ColumnKind>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Column>, Vec<ProfileColumn>), DataError> {
    let mut columns = Vec::with_capacity(names.len());
    let mut described = Vec::with_capacity(names.len());
    for name in names {
        if [ENTITY_ID, CREATED_AT, LABEL].contains(&name.as_str()) {
            return Err(DataError::Invalid(format!(
                "{}: column `{name}` would clash with the canonical column of that name; \
                 exclude it or use it as the id, creation time or label",
                source.path.display()
            )));
        }
        let kind = match declared.get(name) {
            Some(kind) => *kind,
            None => values::inferred_kind(source, name)?,
        };
        let (column, blank) = values::profile_column(source, name, kind)?;
        if let Some((position, value)) = blank.first {
            warnings.push(format!(
                "{}, column `{name}`: {} blank-like value{} (the first on row {}: {value:?}) \
                 read as missing; the column is numeric",
                source.path.display(),
                blank.count,
                if blank.count == 1 { "" } else { "s" },
                source.file_row(position),
            ));
        }
        columns.push(column);
        described.push(ProfileColumn {
            name: name.clone(),
            kind,
        });
    }
    Ok((columns, described))
}

/// Fails on the first missing id (the problem names what the id is for).
fn check_no_missing_id(
    source: &SourceFile,
    ids: &StringChunked,
    column: &str,
    problem: &str,
) -> Result<(), DataError> {
    if ids.null_count() == 0 {
        return Ok(());
    }
    match ids.iter().position(|id| id.is_none()) {
        Some(position) => Err(source.bad_value(position, column, "", problem)),
        None => Ok(()),
    }
}

/// Fails on the first id seen twice, naming both rows.
fn check_unique_ids(
    source: &SourceFile,
    ids: &StringChunked,
    column: &str,
) -> Result<(), DataError> {
    let mut first_position: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (position, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        if let Some(first) = first_position.insert(id, position) {
            return Err(DataError::DuplicateId {
                at: source.at(position, column),
                id: id.to_string(),
                first_row: source.file_row(first),
            });
        }
    }
    Ok(())
}

/// Fails unless every column the spec names (to exclude or to type) is in the file.
fn check_named_columns_exist<'a>(
    source: &SourceFile,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), DataError> {
    names
        .into_iter()
        .try_for_each(|name| source.require_column(name))
}
