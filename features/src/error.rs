//! Errors of the data contract. Each names the file, row, column and value at fault where
//! there is one.

use std::fmt;
use std::path::PathBuf;

/// Where in the input a problem is: file, and when known, 1-based data row and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based data row (the header is not counted).
    pub row: Option<usize>,
    pub column: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column `{column}`")?;
        }
        Ok(())
    }
}

/// A problem with a dataset or its spec. Variants that point into a file carry a boxed
/// [`Location`] so that the error stays small on the `Ok` path.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset spec {}: {message}", path.display())]
    Spec { path: PathBuf, message: String },
    #[error("{}: file not found (paths in a spec are relative to the spec file)", path.display())]
    MissingFile { path: PathBuf },
    #[error("{}: unsupported file type (use .csv, .tsv, .txt or .parquet)", path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("{}: cannot parse the file: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error(
        "{at}: byte 0x{byte:02X} (byte {offset_in_line} of its line) is not UTF-8; if the \
         file is in another encoding, set `encoding = \"latin-1\"` (or \"windows-1252\") in \
         the file's section of the spec"
    )]
    Encoding {
        at: Box<Location>,
        byte: u8,
        offset_in_line: usize,
    },
    #[error("{at} (line {line}): {found} fields, but the header has {expected}{hint}")]
    FieldCount {
        at: Box<Location>,
        line: usize,
        found: usize,
        expected: usize,
        hint: String,
    },
    #[error("{}: no column `{column}` (columns are: {available})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{}, column `{column}`: type {found} cannot be read as {expected}", path.display())]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },
    #[error("{at}: {problem} (value {value:?})")]
    BadValue {
        at: Box<Location>,
        value: String,
        problem: String,
    },
    #[error("{at}: duplicate id {id:?} (first seen on row {first_row})")]
    DuplicateId {
        at: Box<Location>,
        id: String,
        first_row: usize,
    },
    #[error("{at}: entity id {id:?} is not in the entities file")]
    UnknownEntity { at: Box<Location>, id: String },
    #[error("{at}: outcome at {outcome} is before the entity {id:?} was created ({created})")]
    OutcomeBeforeCreation {
        at: Box<Location>,
        id: String,
        outcome: String,
        created: String,
    },
    #[error("{}: the label has only one class ({class}); a model needs both", path.display())]
    OneClassLabel { path: PathBuf, class: String },
    #[error("{}: no rows", path.display())]
    Empty { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}
