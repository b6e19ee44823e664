//! One input file of a spec (CSV or Parquet) read into a polars frame of raw columns.
//!
//! CSV columns are all read as text so that parsing, and its error messages, stay in the
//! loader's hands; Parquet columns keep their stored types. In both, text equal to the empty
//! string or to one of the spec's `missing` markers becomes null. A [`SourceFile`] remembers
//! which file rows survived filtering so that errors can still name the 1-based data row.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;

use crate::error::{DataError, Location};
use crate::spec::FileOptions;

/// A file's content with the bookkeeping needed to point at its rows.
pub(super) struct SourceFile {
    pub path: PathBuf,
    pub frame: DataFrame,
    /// Every column of the file, in file order (also those not read).
    pub all_columns: Vec<String>,
    /// Which file rows the frame still holds, once [`SourceFile::keep_rows`] dropped some.
    kept_rows: Option<BooleanChunked>,
    /// Positions (among the kept rows) of the frame rows, once [`SourceFile::take_rows`]
    /// picked some.
    taken_rows: Option<IdxCa>,
}

/// The two supported file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Delimited text: `.csv`, `.txt` (separator `,` unless the spec says), `.tsv` (a tab).
    Csv {
        default_separator: u8,
    },
    Parquet,
}

impl SourceFile {
    /// Reads `path` (already resolved against the spec folder). With `wanted`, only those
    /// columns are read, and each must exist; without it, every column is read.
    pub fn read(
        path: &Path,
        options: &FileOptions,
        wanted: Option<&[String]>,
    ) -> Result<SourceFile, DataError> {
        if !path.is_file() {
            return Err(DataError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let format = format_of(path)?;
        // A text file is read, decoded and checked whole first (see `text`), then parsed by
        // polars from memory.
        let text = match format {
            Format::Csv { default_separator } => {
                let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Some(super::text::prepare(
                    path,
                    bytes,
                    options,
                    default_separator,
                )?)
            }
            Format::Parquet => None,
        };
        let all_columns = match &text {
            Some((bytes, separator)) => csv_header(path, bytes, *separator)?,
            None => parquet_header(path)?,
        };
        let projection = match wanted {
            Some(wanted) => {
                let mut unique: Vec<String> = Vec::with_capacity(wanted.len());
                for name in wanted {
                    if !all_columns.contains(name) {
                        return Err(missing_column(path, name, &all_columns));
                    }
                    if !unique.contains(name) {
                        unique.push(name.clone());
                    }
                }
                Some(unique)
            }
            None => None,
        };
        let frame = match text {
            Some((bytes, separator)) => read_csv(path, bytes, separator, projection)?,
            None => read_parquet(path, projection)?,
        };
        if frame.height() == 0 && !options.allow_empty {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        let frame = nullify_missing_markers(frame, &options.missing)
            .map_err(|error| unreadable(path, error))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            frame,
            all_columns,
            kept_rows: None,
            taken_rows: None,
        })
    }

    /// The column `name`, or an error listing the file's columns.
    pub fn column(&self, name: &str) -> Result<&Column, DataError> {
        self.frame
            .column(name)
            .map_err(|_| missing_column(&self.path, name, &self.all_columns))
    }

    /// Fails unless the file has a column `name` (read or not).
    pub fn require_column(&self, name: &str) -> Result<(), DataError> {
        if self.all_columns.iter().any(|column| column == name) {
            Ok(())
        } else {
            Err(missing_column(&self.path, name, &self.all_columns))
        }
    }

    /// Number of rows the frame holds.
    pub fn height(&self) -> usize {
        self.frame.height()
    }

    /// Keeps only the rows where `mask` is true (nulls drop), remembering their file rows.
    pub fn keep_rows(&mut self, mask: &BooleanChunked) -> Result<(), DataError> {
        debug_assert!(self.kept_rows.is_none(), "rows are filtered once");
        let mask = mask
            .fill_null_with_values(false)
            .map_err(|e| unreadable(&self.path, e))?;
        self.frame = self
            .frame
            .filter(&mask)
            .map_err(|e| unreadable(&self.path, e))?;
        self.kept_rows = Some(mask);
        Ok(())
    }

    /// A copy holding only the rows at `positions` (of this frame), in that order.
    pub fn take_rows(&self, positions: &IdxCa) -> Result<SourceFile, DataError> {
        debug_assert!(self.taken_rows.is_none(), "rows are taken once");
        Ok(SourceFile {
            path: self.path.clone(),
            frame: self
                .frame
                .take(positions)
                .map_err(|e| unreadable(&self.path, e))?,
            all_columns: self.all_columns.clone(),
            kept_rows: self.kept_rows.clone(),
            taken_rows: Some(positions.clone()),
        })
    }

    /// The 1-based data row (header not counted) of frame row `position`.
    pub fn file_row(&self, position: usize) -> usize {
        let position = match &self.taken_rows {
            Some(taken) => taken.get(position).map_or(position, |kept| kept as usize),
            None => position,
        };
        match &self.kept_rows {
            None => position + 1,
            Some(mask) => {
                let mut seen = 0;
                for (file_index, kept) in mask.iter().enumerate() {
                    if kept == Some(true) {
                        if seen == position {
                            return file_index + 1;
                        }
                        seen += 1;
                    }
                }
                position + 1
            }
        }
    }

    /// The location of frame row `position` in `column`.
    pub fn at(&self, position: usize, column: &str) -> Box<Location> {
        Box::new(Location {
            path: self.path.clone(),
            row: Some(self.file_row(position)),
            column: Some(column.to_string()),
        })
    }

    /// A [`DataError::BadValue`] for frame row `position` of `column`.
    pub fn bad_value(
        &self,
        position: usize,
        column: &str,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> DataError {
        DataError::BadValue {
            at: self.at(position, column),
            value: value.into(),
            problem: problem.into(),
        }
    }

    /// Wraps a polars error raised while transforming this file's columns.
    pub fn polars_error(&self, error: PolarsError) -> DataError {
        unreadable(&self.path, error)
    }
}

/// The error for an absent column, listing the columns the file does have.
pub(super) fn missing_column(path: &Path, column: &str, available: &[String]) -> DataError {
    let available = available
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    DataError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        available,
    }
}

fn unreadable(path: &Path, error: impl std::fmt::Display) -> DataError {
    DataError::Unreadable {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn format_of(path: &Path) -> Result<Format, DataError> {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv" | "txt") => Ok(Format::Csv {
            default_separator: b',',
        }),
        Some("tsv") => Ok(Format::Csv {
            default_separator: b'\t',
        }),
        Some("parquet") => Ok(Format::Parquet),
        _ => Err(DataError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}

fn csv_options(separator: u8) -> CsvReadOptions {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_raise_if_empty(false)
        .map_parse_options(|parse| parse.with_separator(separator))
}

fn csv_header(path: &Path, bytes: &[u8], separator: u8) -> Result<Vec<String>, DataError> {
    // The header line alone (the text is checked: its first record ends at a line break
    // outside quotes, or the text does).
    let frame = csv_options(separator)
        .with_n_rows(Some(0))
        .into_reader_with_file_handle(std::io::Cursor::new(
            bytes[..super::text::header_len(bytes)].to_vec(),
        ))
        .finish()
        .map_err(|error| unreadable(path, error))?;
    Ok(frame
        .get_column_names()
        .into_iter()
        .map(|name| name.to_string())
        .collect())
}

fn read_csv(
    path: &Path,
    bytes: Vec<u8>,
    separator: u8,
    projection: Option<Vec<String>>,
) -> Result<DataFrame, DataError> {
    let columns: Option<Arc<[PlSmallStr]>> =
        projection.map(|names| names.into_iter().map(PlSmallStr::from).collect());
    csv_options(separator)
        .with_columns(columns)
        .into_reader_with_file_handle(std::io::Cursor::new(bytes))
        .finish()
        .map_err(|error| unreadable(path, error))
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parquet_header(path: &Path) -> Result<Vec<String>, DataError> {
    let schema = ParquetReader::new(open(path)?)
        .schema()
        .map_err(|error| unreadable(path, error))?;
    Ok(schema.iter_names().map(|name| name.to_string()).collect())
}

fn read_parquet(path: &Path, projection: Option<Vec<String>>) -> Result<DataFrame, DataError> {
    ParquetReader::new(open(path)?)
        .with_columns(projection)
        .finish()
        .map_err(|error| unreadable(path, error))
}

/// Turns the empty string and every `markers` value of each text column into null.
fn nullify_missing_markers(mut frame: DataFrame, markers: &[String]) -> PolarsResult<DataFrame> {
    let markers: HashSet<&str> = markers
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(""))
        .collect();
    let names: Vec<PlSmallStr> = frame
        .columns()
        .iter()
        .filter(|column| column.dtype() == &DataType::String)
        .map(|column| column.name().clone())
        .collect();
    for name in names {
        let text = frame.column(&name)?.str()?;
        if !text
            .iter()
            .any(|value| value.is_some_and(|value| markers.contains(value)))
        {
            continue;
        }
        let cleaned: StringChunked = text
            .iter()
            .map(|value| value.filter(|value| !markers.contains(value)))
            .collect();
        frame.with_column(cleaned.with_name(name).into_column())?;
    }
    Ok(frame)
}
