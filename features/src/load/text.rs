//! A text file (CSV, TSV, a whitespace-aligned `.txt` export) checked and made into the
//! UTF-8, single-separator CSV the polars reader takes, before polars sees it, so that what
//! polars would read silently wrong, or refuse without a row, is refused naming the row:
//!
//! - bytes that are not UTF-8 (the row, and `encoding` to set), unless the spec names a
//!   single-byte encoding (`latin-1`, `windows-1252`), which is decoded;
//! - a header that does not split on `separator` but does on another character ("looks
//!   `;`-separated: set `separator`");
//! - a row with more or fewer fields than the header (polars reads a short row with its last
//!   fields missing);
//! - `separator = "whitespace"`: fields separated by runs of spaces or tabs, re-written as
//!   CSV (quoted where a field holds a comma or a quote).
//!
//! Rows are counted as the loader's errors count them: data rows from 1, the header not
//! counted, blank lines skipped.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{DataError, Location};
use crate::spec::{Encoding, FileOptions, Separator};

/// Separators tried when a header does not split on the one given.
const OTHER_SEPARATORS: [u8; 4] = [b';', b'\t', b'|', b','];

/// `bytes` of `path` as UTF-8 CSV text with separator `separator` (returned), checked.
pub(super) fn prepare(
    path: &Path,
    bytes: Vec<u8>,
    options: &FileOptions,
    default_separator: u8,
) -> Result<(Vec<u8>, u8), DataError> {
    let text = decode(path, bytes, options.encoding.unwrap_or(Encoding::Utf8))?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    match options.separator {
        Some(Separator::Whitespace) => {
            let csv = from_whitespace(&text);
            check_fields(path, &csv, b',', true)?;
            Ok((csv.into_bytes(), b','))
        }
        Some(Separator::Char(c)) => {
            check_fields(path, &text, c, true)?;
            Ok((text.into_bytes(), c))
        }
        None => {
            check_fields(path, &text, default_separator, false)?;
            Ok((text.into_bytes(), default_separator))
        }
    }
}

fn decode(path: &Path, bytes: Vec<u8>, encoding: Encoding) -> Result<String, DataError> {
    match encoding {
        Encoding::Utf8 => String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let header_lines = 1;
            DataError::Encoding {
                at: Box::new(Location {
                    path: path.to_path_buf(),
                    row: line.checked_sub(header_lines).filter(|&r| r > 0),
                    column: None,
                }),
                byte: bytes[at],
                offset_in_line: at - line_start + 1,
            }
        }),
        Encoding::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Encoding::Windows1252 => Ok(bytes.iter().map(|&b| windows_1252(b)).collect()),
    }
}

/// Windows-1252: Latin-1 but for 0x80-0x9F, where it has printable characters (the five
/// codes it leaves undefined keep their Latin-1 control characters, as WHATWG decodes them).
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// The length of `bytes`' first record (its header), up to its line break outside quotes.
pub(super) fn header_len(bytes: &[u8]) -> usize {
    let mut quoted = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => return i + 1,
            _ => {}
        }
    }
    bytes.len()
}

/// One record of a delimited text: its first line (1-based) and its number of fields.
struct Record {
    line: usize,
    fields: usize,
}

/// The records of `text` split on `separator` (RFC 4180 quotes), blank lines skipped.
fn records(text: &str, separator: u8) -> Vec<Record> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut line, mut start_line) = (1usize, 1usize);
    let (mut fields, mut quoted, mut empty) = (1usize, false, true);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            match b {
                b'"' if bytes.get(i + 1) == Some(&b'"') => i += 1,
                b'"' => quoted = false,
                b'\n' => line += 1,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
            empty = false;
        } else if b == separator {
            fields += 1;
            empty = false;
        } else if b == b'\n' {
            if !empty {
                out.push(Record {
                    line: start_line,
                    fields,
                });
            }
            line += 1;
            start_line = line;
            fields = 1;
            empty = true;
        } else if b != b'\r' {
            empty = false;
        }
        i += 1;
    }
    if !empty {
        out.push(Record {
            line: start_line,
            fields,
        });
    }
    out
}

/// Refuses a header that looks separated by another character than `separator`, and a row
/// whose number of fields is not the header's.
fn check_fields(path: &Path, text: &str, separator: u8, named: bool) -> Result<(), DataError> {
    let recs = records(text, separator);
    let Some(header) = recs.first() else {
        return Ok(());
    };
    let shown = |c: u8| match c {
        b'\t' => "\\t".to_owned(),
        c => char::from(c).to_string(),
    };
    // The first lines (up to the seventh line break) are enough to tell a separator.
    let head = text
        .match_indices('\n')
        .nth(6)
        .map_or(text, |(i, _)| &text[..i]);
    if header.fields == 1 {
        // A file of one column is possible; one that splits evenly on another character in
        // its first rows is most likely separated by it.
        for other in OTHER_SEPARATORS.into_iter().filter(|&c| c != separator) {
            let first: Vec<Record> = records(head, other).into_iter().take(6).collect();
            if first[0].fields >= 2 && first.iter().all(|r| r.fields == first[0].fields) {
                let given = if named {
                    format!("`separator = \"{}\"`", shown(separator))
                } else {
                    format!("the default separator `{}`", shown(separator))
                };
                return Err(DataError::Unreadable {
                    path: path.to_path_buf(),
                    message: format!(
                        "the header is one column with {given}, but it looks `{}`-separated \
                         ({} columns): set `separator = \"{}\"` in the file's section of the \
                         spec (or `separator = \"whitespace\"` for a whitespace-aligned \
                         export)",
                        shown(other),
                        first[0].fields,
                        shown(other)
                    ),
                });
            }
        }
    }
    if header.fields == 1 {
        let counts: Vec<usize> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(6)
            .map(|l| l.split_whitespace().count())
            .collect();
        if counts[0] >= 2 && counts.iter().all(|&n| n == counts[0]) {
            return Err(DataError::Unreadable {
                path: path.to_path_buf(),
                message: format!(
                    "the header is one column, but it looks whitespace-aligned ({} columns \
                     separated by spaces or tabs): set `separator = \"whitespace\"` in the \
                     file's section of the spec",
                    counts[0]
                ),
            });
        }
    }
    for (row, record) in recs.iter().enumerate().skip(1) {
        if record.fields != header.fields {
            let hint = if record.fields > header.fields {
                "; a field holding the separator must be quoted"
            } else {
                ""
            };
            return Err(DataError::FieldCount {
                at: Box::new(Location {
                    path: path.to_path_buf(),
                    row: Some(row),
                    column: None,
                }),
                line: record.line,
                found: record.fields,
                expected: header.fields,
                hint: hint.to_owned(),
            });
        }
    }
    Ok(())
}

/// A whitespace-aligned text as CSV: each line's fields (runs of spaces and tabs separate
/// them) joined by commas, quoted where they hold a comma or a quote.
fn from_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.lines() {
        let mut fields = line.split_whitespace().peekable();
        if fields.peek().is_none() {
            continue;
        }
        let mut first = true;
        for field in fields {
            if !first {
                out.push(',');
            }
            first = false;
            let field: Cow<'_, str> = if field.contains([',', '"']) {
                Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
            } else {
                Cow::Borrowed(field)
            };
            out.push_str(&field);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(separator: Option<Separator>, encoding: Option<Encoding>) -> FileOptions {
        FileOptions {
            separator,
            encoding,
            ..FileOptions::default()
        }
    }

    fn prepared(bytes: &[u8], o: &FileOptions) -> Result<(String, u8), String> {
        prepare(Path::new("f.csv"), bytes.to_vec(), o, b',')
            .map(|(b, s)| (String::from_utf8(b).expect("utf-8"), s))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn records_count_quoted_separators_and_line_breaks_once() {
        let recs = records("a,b\n\"x,\ny\",2\n\n3,\"q\"\"\"\n", b',');
        let shape: Vec<(usize, usize)> = recs.iter().map(|r| (r.line, r.fields)).collect();
        assert_eq!(shape, [(1, 2), (2, 2), (5, 2)]);
    }

    #[test]
    fn short_and_long_rows_are_named() {
        let o = options(None, None);
        let err = prepared(b"id,a,b\n1,2,3\n2,3\n", &o).unwrap_err();
        assert!(
            err.contains("row 2") && err.contains("2 fields") && err.contains("3"),
            "{err}"
        );
        let err = prepared(b"id,a\n1,2\n2,3\n3,4,5\n", &o).unwrap_err();
        assert!(err.contains("row 3") && err.contains("quoted"), "{err}");
    }

    #[test]
    fn another_separator_is_pointed_to() {
        let err = prepared(b"id;a;b\n1;2;3\n", &options(None, None)).unwrap_err();
        assert!(
            err.contains("looks `;`-separated") && err.contains("separator = \";\""),
            "{err}"
        );
        let err = prepared(b"id\ta\n1\t2\n", &options(None, None)).unwrap_err();
        assert!(err.contains("separator = \"\\t\""), "{err}");
        // One real column: no hint.
        assert!(prepared(b"id\n1\n2\n", &options(None, None)).is_ok());
    }

    #[test]
    fn bad_bytes_name_the_row_and_latin_1_reads() {
        let bytes = b"id,city\n1,Paris\n2,K\xf6ln\n";
        let err = prepared(bytes, &options(None, None)).unwrap_err();
        assert!(
            err.contains("row 2") && err.contains("0xF6") && err.contains("encoding"),
            "{err}"
        );
        let (text, _) = prepared(bytes, &options(None, Some(Encoding::Latin1))).expect("latin-1");
        assert!(text.contains("Köln"), "{text}");
        let (text, _) = prepared(
            b"id,p\n1,\x80 5\n",
            &options(None, Some(Encoding::Windows1252)),
        )
        .expect("cp1252");
        assert!(text.contains("€ 5"), "{text}");
    }

    #[test]
    fn whitespace_aligned_text_becomes_csv() {
        let (text, separator) = prepared(
            b"id    country      amount\n1     UK           3.5\n2\tDE,x\t\t4\n\n",
            &options(Some(Separator::Whitespace), None),
        )
        .expect("reads");
        assert_eq!(separator, b',');
        assert_eq!(text, "id,country,amount\n1,UK,3.5\n2,\"DE,x\",4\n");
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        let (text, _) = prepared(b"\xef\xbb\xbfid,a\n1,2\n", &options(None, None)).expect("reads");
        assert!(text.starts_with("id,"));
    }
}
