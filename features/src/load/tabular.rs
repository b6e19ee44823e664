//! Tabular form: one file, one row per entity, a label column.

use polars::prelude::*;

use super::source::SourceFile;
use super::{
    CREATED_AT, ENTITY_ID, LABEL, LoadedDataset, check_named_columns_exist, check_no_missing_id,
    check_unique_ids, profile_columns, values,
};
use crate::error::DataError;
use crate::spec::{DatasetSpec, TableSpec};

/// Loads `[table]`: ids (or row numbers), the profile columns, a 0/1 label with both classes.
pub(super) fn load(spec: &DatasetSpec, table: &TableSpec) -> Result<LoadedDataset, DataError> {
    let source = SourceFile::read(&spec.resolve(&table.path), &table.file, None)?;
    source.require_column(&table.label)?;
    if let Some(id) = &table.id {
        source.require_column(id)?;
    }
    check_named_columns_exist(&source, table.exclude.iter().chain(table.columns.keys()))?;

    let height = source.height();
    let ids = match &table.id {
        Some(id) => {
            let ids = values::id_values(&source, id)?;
            check_no_missing_id(&source, &ids, id, "missing id")?;
            check_unique_ids(&source, &ids, id)?;
            ids
        }
        None => (1..=height).map(|row| row.to_string()).collect(),
    };

    let labels = values::label_values(&source, &table.label, table.positive.as_deref())?;
    let positives = labels.iter().filter(|&&label| label == 1).count();
    if positives == 0 || positives == height {
        let class = if positives == 0 { 0 } else { 1 };
        return Err(DataError::OneClassLabel {
            path: source.path.clone(),
            class: format!("`{}` is {class} on all {height} rows", table.label),
        });
    }

    let profile_names: Vec<String> = source
        .all_columns
        .iter()
        .filter(|name| {
            table.id.as_ref() != Some(*name)
                && **name != table.label
                && !table.exclude.contains(name)
        })
        .cloned()
        .collect();
    let mut warnings = Vec::new();
    let (profile, profile_columns) =
        profile_columns(&source, &profile_names, &table.columns, &mut warnings)?;

    let mut columns = Vec::with_capacity(profile.len() + 3);
    columns.push(ids.with_name(ENTITY_ID.into()).into_column());
    columns.push(Int64Chunked::full(CREATED_AT.into(), 0, height).into_column());
    columns.extend(profile);
    columns.push(UInt8Chunked::from_vec(LABEL.into(), labels).into_column());
    let entities = DataFrame::new(height, columns).map_err(|e| source.polars_error(e))?;
    Ok(LoadedDataset {
        spec: spec.clone(),
        entities,
        profile_columns,
        events: None,
        outcomes: None,
        warnings,
    })
}
