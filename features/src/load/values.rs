//! Typed readings of raw columns: ids, text, numbers, timestamps, labels and inferred
//! column kinds. Each reading fails with the file, 1-based row, column and value at fault.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;

use super::source::SourceFile;
use crate::error::DataError;
use crate::history::{DAY_MS, TimestampMs};
use crate::spec::ColumnKind;

/// Text of a column: text as is, integers in decimal, integral floats without a fraction
/// (`13085.0` → `"13085"`), NaN as null, booleans as `true`/`false`.
pub(super) fn text_values(source: &SourceFile, name: &str) -> Result<StringChunked, DataError> {
    let column = source.column(name)?;
    let series = column.as_materialized_series();
    let text = match series.dtype() {
        DataType::String => series.str().cloned(),
        dtype if dtype.is_float() => render_floats(series),
        dtype if dtype.is_primitive_numeric() || dtype.is_bool() || dtype.is_categorical() => {
            series
                .cast(&DataType::String)
                .and_then(|text| text.str().cloned())
        }
        dtype => return Err(column_type(source, name, dtype, "text")),
    };
    text.map_err(|error| source.polars_error(error))
}

/// Entity ids as text. Besides [`text_values`], a text id that is an integral decimal with
/// a zero fraction (`"13085.0"`, as pandas writes float ids) loses the fraction, so the
/// same id matches across files whatever their format.
pub(super) fn id_values(source: &SourceFile, name: &str) -> Result<StringChunked, DataError> {
    let text = text_values(source, name)?;
    if !text
        .iter()
        .flatten()
        .any(|id| integral_decimal_prefix(id).is_some())
    {
        return Ok(text);
    }
    Ok(text.apply_values(|id| match integral_decimal_prefix(id) {
        Some(integer) => Cow::Borrowed(integer),
        None => Cow::Borrowed(id),
    }))
}

/// `"13085"` for `"13085.0"` or `"13085.000"`; `None` for anything else.
fn integral_decimal_prefix(text: &str) -> Option<&str> {
    let (integer, fraction) = text.split_once('.')?;
    let digits = integer.strip_prefix('-').unwrap_or(integer);
    let is_integral = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.bytes().all(|byte| byte == b'0');
    is_integral.then_some(integer)
}

fn render_floats(series: &Series) -> PolarsResult<StringChunked> {
    let floats = series.cast(&DataType::Float64)?;
    let floats: Float64Chunked = floats
        .f64()?
        .iter()
        .map(|value| value.filter(|value| !value.is_nan()))
        .collect();
    let floats = floats.into_series();
    // A non-strict cast: values out of the Int64 range become null, hence "not integral".
    let integers = floats.cast(&DataType::Int64)?;
    let is_integral: BooleanChunked = floats
        .f64()?
        .iter()
        .zip(integers.i64()?.iter())
        .map(|pair| matches!(pair, (Some(float), Some(integer)) if integer as f64 == float))
        .collect();
    let integer_text = integers.cast(&DataType::String)?;
    let float_text = floats.cast(&DataType::String)?;
    integer_text
        .str()?
        .zip_with(&is_integral, float_text.str()?)
}

/// Numbers of a column. Text must parse as a number (surrounding spaces allowed), else
/// the error says `problem`; NaN reads as missing.
pub(super) fn number_values(
    source: &SourceFile,
    name: &str,
    problem: &str,
) -> Result<Float64Chunked, DataError> {
    numbers_with_blanks(source, name, problem, None)
}

/// [`number_values`]; with `blank`, blank-like text ([`is_blank_like`]) reads as missing and
/// is counted there.
fn numbers_with_blanks(
    source: &SourceFile,
    name: &str,
    problem: &str,
    mut blank: Option<&mut BlankLike>,
) -> Result<Float64Chunked, DataError> {
    let column = source.column(name)?;
    let series = column.as_materialized_series();
    let dtype = series.dtype();
    if dtype.is_primitive_numeric() || dtype.is_bool() {
        let numbers = series
            .cast(&DataType::Float64)
            .map_err(|e| source.polars_error(e))?;
        let numbers = numbers.f64().map_err(|e| source.polars_error(e))?;
        return Ok(numbers
            .iter()
            .map(|value| value.filter(|value| !value.is_nan()))
            .collect());
    }
    if !(dtype == &DataType::String || dtype.is_categorical()) {
        return Err(column_type(source, name, dtype, "numbers"));
    }
    let text = text_values(source, name)?;
    let mut numbers = Vec::with_capacity(text.len());
    for (position, value) in text.iter().enumerate() {
        let number = match value {
            None => None,
            Some(value) => match (parse_number(value), blank.as_deref_mut()) {
                (Some(number), _) => Some(number).filter(|number| !number.is_nan()),
                (None, Some(blank)) if is_blank_like(value) => {
                    blank.count += 1;
                    blank
                        .first
                        .get_or_insert_with(|| (position, value.to_owned()));
                    None
                }
                (None, _) => return Err(source.bad_value(position, name, value, problem)),
            },
        };
        numbers.push(number);
    }
    Ok(Float64Chunked::from_iter_options(
        PlSmallStr::from(name),
        numbers.into_iter(),
    ))
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok()
}

/// A value an export writes for "nothing" in a numeric column: whitespace, a dash, a
/// question mark, a dot, `NA`, `N/A`, `null`, `none`, `nan` (any case).
pub(super) fn is_blank_like(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || ["-", "--", "?", ".", "na", "n/a", "null", "none", "nan"]
            .iter()
            .any(|b| t.eq_ignore_ascii_case(b))
}

/// What one text value of a profile column says of the column's kind when the spec does not
/// declare it ([`inferred_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindEvidence {
    /// It parses as a number.
    Number,
    /// It is blank-like ([`is_blank_like`]): no evidence either way.
    BlankLike,
    /// Anything else: the column is categorical.
    Other,
}

pub(crate) fn kind_evidence(text: &str) -> KindEvidence {
    if parse_number(text).is_some() {
        KindEvidence::Number
    } else if is_blank_like(text) {
        KindEvidence::BlankLike
    } else {
        KindEvidence::Other
    }
}

/// Blank-like values a numeric profile column held, read as missing: how many, and the
/// first (its frame position and text).
#[derive(Debug, Default)]
pub(super) struct BlankLike {
    pub count: usize,
    pub first: Option<(usize, String)>,
}

/// The kind of a profile column the spec does not declare: numeric when it has a numeric
/// type, or when it is text and every non-missing value parses as a number.
/// A text column is numeric when every value is a number or blank-like ([`is_blank_like`])
/// and at least one is a number.
pub(super) fn inferred_kind(source: &SourceFile, name: &str) -> Result<ColumnKind, DataError> {
    let dtype = source.column(name)?.dtype().clone();
    if dtype.is_primitive_numeric() {
        return Ok(ColumnKind::Numeric);
    }
    if dtype == DataType::String || dtype.is_categorical() {
        let text = text_values(source, name)?;
        let (mut numbers, mut others) = (0usize, 0usize);
        for value in text.iter().flatten() {
            match kind_evidence(value) {
                KindEvidence::Number => numbers += 1,
                KindEvidence::BlankLike => {}
                KindEvidence::Other => {
                    others += 1;
                    break;
                }
            }
        }
        return Ok(if numbers > 0 && others == 0 {
            ColumnKind::Numeric
        } else {
            ColumnKind::Categorical
        });
    }
    Ok(ColumnKind::Categorical)
}

/// A canonical profile column: Float64 for numeric (blank-like values missing, counted),
/// String for categorical.
pub(super) fn profile_column(
    source: &SourceFile,
    name: &str,
    kind: ColumnKind,
) -> Result<(Column, BlankLike), DataError> {
    Ok(match kind {
        ColumnKind::Numeric => {
            let problem = "not a number, but the column is numeric (declared in the spec or \
                           inferred)";
            let mut blank = BlankLike::default();
            let numbers = numbers_with_blanks(source, name, problem, Some(&mut blank))?;
            (numbers.with_name(name.into()).into_column(), blank)
        }
        ColumnKind::Categorical => (
            text_values(source, name)?
                .with_name(name.into())
                .into_column(),
            BlankLike::default(),
        ),
    })
}

/// Timestamps of a column in ms since the epoch (UTC); null where missing.
///
/// Text is parsed with `format` when given (with or without a `%z` offset, or a date only),
/// else as `YYYY-MM-DD HH:MM:SS[.f]`, RFC 3339, `YYYY-MM-DDTHH:MM:SS[.f]` or `YYYY-MM-DD`;
/// times without an offset are taken as UTC. Parquet Datetime (any unit) and Date columns
/// are converted.
pub(super) fn timestamp_values(
    source: &SourceFile,
    name: &str,
    format: Option<&str>,
) -> Result<Int64Chunked, DataError> {
    let column = source.column(name)?;
    let series = column.as_materialized_series();
    match series.dtype() {
        DataType::Datetime(unit, _) => {
            let ms_per_unit_divisor = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            let physical = series.to_physical_repr();
            let physical = physical.i64().map_err(|e| source.polars_error(e))?;
            Ok(physical.apply_values(|value| value.div_euclid(ms_per_unit_divisor)))
        }
        DataType::Date => {
            let physical = series.to_physical_repr();
            let days = physical.i32().map_err(|e| source.polars_error(e))?;
            Ok(days
                .iter()
                .map(|day| day.map(|day| i64::from(day) * DAY_MS))
                .collect())
        }
        dtype if dtype == &DataType::String || dtype.is_categorical() => {
            let text = text_values(source, name)?;
            let mut parser = TimestampParser::new(format);
            let mut values = Vec::with_capacity(text.len());
            for (position, value) in text.iter().enumerate() {
                let Some(value) = value else {
                    values.push(None);
                    continue;
                };
                match parser.parse(value) {
                    Some(ms) => values.push(Some(ms)),
                    None => {
                        let problem = match format {
                            Some(format) => format!("not a timestamp in the format `{format}`"),
                            None => "not a timestamp (expected YYYY-MM-DD HH:MM:SS, RFC 3339 \
                                     or YYYY-MM-DD; set `timestamp_format` for others)"
                                .to_string(),
                        };
                        return Err(source.bad_value(position, name, value, problem));
                    }
                }
            }
            Ok(Int64Chunked::from_iter_options(
                PlSmallStr::from(name),
                values.into_iter(),
            ))
        }
        dtype => Err(column_type(
            source,
            name,
            dtype,
            "timestamps (text, Datetime or Date)",
        )),
    }
}

/// One way of reading a text timestamp.
#[derive(Debug, Clone, Copy)]
enum TimestampSyntax<'f> {
    WithOffset(&'f str),
    Naive(&'f str),
    DateOnly(&'f str),
    Rfc3339,
}

impl TimestampSyntax<'_> {
    fn parse(self, text: &str) -> Option<TimestampMs> {
        let text = text.trim();
        match self {
            TimestampSyntax::WithOffset(format) => DateTime::parse_from_str(text, format)
                .ok()
                .map(|time| time.timestamp_millis()),
            TimestampSyntax::Naive(format) => NaiveDateTime::parse_from_str(text, format)
                .ok()
                .map(|time| time.and_utc().timestamp_millis()),
            TimestampSyntax::DateOnly(format) => NaiveDate::parse_from_str(text, format)
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|time| time.and_utc().timestamp_millis()),
            TimestampSyntax::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|time| time.timestamp_millis()),
        }
    }
}

/// Parses text timestamps, trying first the syntax that worked last and remembering the
/// last text seen (event logs repeat timestamps a lot).
struct TimestampParser<'f> {
    syntaxes: Vec<TimestampSyntax<'f>>,
    preferred: usize,
    last: Option<(String, TimestampMs)>,
}

impl<'f> TimestampParser<'f> {
    fn new(format: Option<&'f str>) -> TimestampParser<'f> {
        let syntaxes = match format {
            // `%z`, `%:z`, `%#z`...: an offset, which a naive reading would silently ignore.
            Some(format) if format.contains('z') => vec![TimestampSyntax::WithOffset(format)],
            Some(format) => vec![
                TimestampSyntax::Naive(format),
                TimestampSyntax::DateOnly(format),
            ],
            None => vec![
                TimestampSyntax::Naive("%Y-%m-%d %H:%M:%S%.f"),
                TimestampSyntax::Rfc3339,
                TimestampSyntax::Naive("%Y-%m-%dT%H:%M:%S%.f"),
                TimestampSyntax::DateOnly("%Y-%m-%d"),
            ],
        };
        TimestampParser {
            syntaxes,
            preferred: 0,
            last: None,
        }
    }

    fn parse(&mut self, text: &str) -> Option<TimestampMs> {
        if let Some((last_text, last_ms)) = &self.last
            && last_text == text
        {
            return Some(*last_ms);
        }
        let preferred = self.syntaxes[self.preferred];
        let parsed = preferred.parse(text).or_else(|| {
            self.syntaxes
                .iter()
                .enumerate()
                .find_map(|(index, syntax)| {
                    let ms = syntax.parse(text)?;
                    self.preferred = index;
                    Some(ms)
                })
        });
        if let Some(ms) = parsed {
            match &mut self.last {
                Some((last_text, last_ms)) => {
                    last_text.clear();
                    last_text.push_str(text);
                    *last_ms = ms;
                }
                None => self.last = Some((text.to_string(), ms)),
            }
        }
        parsed
    }
}

/// Formats ms since the epoch for messages: `2018-03-06 19:38:55 UTC`.
pub(super) fn format_timestamp(ms: TimestampMs) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

/// 0/1 labels: with `positive`, 1 where the text equals it and 0 elsewhere; without it, the
/// value must be 0/1 or true/false (any case). A missing label is an error.
pub(super) fn label_values(
    source: &SourceFile,
    name: &str,
    positive: Option<&str>,
) -> Result<Vec<u8>, DataError> {
    let text = text_values(source, name)?;
    let mut labels = Vec::with_capacity(text.len());
    for (position, value) in text.iter().enumerate() {
        let Some(value) = value else {
            return Err(source.bad_value(position, name, "", "missing label"));
        };
        let label = match positive {
            Some(positive) => u8::from(value.trim() == positive.trim()),
            None => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => 1,
                "0" | "false" => 0,
                _ => {
                    let problem = "a label must be 0/1 or true/false (or set `positive` to the \
                                   text meaning positive)";
                    return Err(source.bad_value(position, name, value, problem));
                }
            },
        };
        labels.push(label);
    }
    Ok(labels)
}

fn column_type(source: &SourceFile, name: &str, found: &DataType, expected: &str) -> DataError {
    DataError::ColumnType {
        path: source.path.clone(),
        column: name.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_decimal_prefix_only_strips_zero_fractions() {
        assert_eq!(integral_decimal_prefix("13085.0"), Some("13085"));
        assert_eq!(integral_decimal_prefix("-7.000"), Some("-7"));
        assert_eq!(integral_decimal_prefix("13085.5"), None);
        assert_eq!(integral_decimal_prefix("A1.0"), None);
        assert_eq!(integral_decimal_prefix(".0"), None);
        assert_eq!(integral_decimal_prefix("12."), None);
        assert_eq!(integral_decimal_prefix("12"), None);
    }

    #[test]
    fn default_timestamp_syntaxes() {
        let mut parser = TimestampParser::new(None);
        assert_eq!(parser.parse("1970-01-02"), Some(DAY_MS));
        assert_eq!(parser.parse("1970-01-01 00:00:01"), Some(1_000));
        assert_eq!(parser.parse("1970-01-01T00:00:01.5"), Some(1_500));
        assert_eq!(parser.parse("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parser.parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parser.parse("01/02/1970"), None);
    }

    #[test]
    fn custom_timestamp_format() {
        let mut parser = TimestampParser::new(Some("%d/%m/%Y %H:%M"));
        assert_eq!(parser.parse("02/01/1970 00:01"), Some(DAY_MS + 60_000));
        assert_eq!(parser.parse("1970-01-02"), None);
        let mut dates = TimestampParser::new(Some("%d/%m/%Y"));
        assert_eq!(dates.parse("02/01/1970"), Some(DAY_MS));
        let mut with_offset = TimestampParser::new(Some("%d/%m/%Y %H:%M %z"));
        assert_eq!(with_offset.parse("02/01/1970 01:00 +0100"), Some(DAY_MS));
    }
}
