//! Tests of `load::load_dataset`: the canonical frames of both forms from CSV and Parquet,
//! the row rules, missing markers and numeric ids, and one test per validation error
//! checking that the message names the file, row, column and value.
//!
//! Fixtures are small files under `tests/fixtures/` or written to a temporary folder.

use std::fs;
use std::path::{Path, PathBuf};

use features::load::{
    CHANNEL, CREATED_AT, ENTITY_ID, EVENT_TYPE, LABEL, OUTCOME_AT, ProfileColumn, TS, VALUE,
    load_dataset,
};
use features::spec::ColumnKind;
use features::{DataError, DatasetSpec, LoadedDataset};
use polars::prelude::*;
use tempfile::TempDir;

const DAY_MS: i64 = 86_400_000;

/// Milliseconds of a UTC `YYYY-MM-DD HH:MM:SS`.
fn ms(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .expect("test timestamp")
        .and_utc()
        .timestamp_millis()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A spec whose relative paths resolve against `base`.
fn spec_in(base: &Path, toml: &str) -> DatasetSpec {
    DatasetSpec::from_toml(toml, Path::new("test.toml"), base.to_path_buf())
        .unwrap_or_else(|error| panic!("test spec should parse: {error}"))
}

/// A temporary folder holding `files` (name, content).
fn folder_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, content) in files {
        fs::write(dir.path().join(name), content).expect("write fixture");
    }
    dir
}

fn write_parquet(path: &Path, mut frame: DataFrame) {
    let file = fs::File::create(path).expect("create parquet");
    ParquetWriter::new(file)
        .finish(&mut frame)
        .expect("write parquet");
}

fn load_ok(spec: &DatasetSpec) -> LoadedDataset {
    load_dataset(spec).unwrap_or_else(|error| panic!("dataset should load: {error}"))
}

fn load_err(spec: &DatasetSpec) -> DataError {
    match load_dataset(spec) {
        Ok(loaded) => panic!("expected an error, loaded {:?}", loaded.entities),
        Err(error) => error,
    }
}

/// Asserts that the error message contains every one of `parts`.
fn assert_mentions(error: &DataError, parts: &[&str]) {
    let message = error.to_string();
    for part in parts {
        assert!(
            message.contains(part),
            "error message {message:?} should mention {part:?}"
        );
    }
}

fn strings(frame: &DataFrame, column: &str) -> Vec<Option<String>> {
    let column = frame
        .column(column)
        .expect("column")
        .as_materialized_series()
        .clone();
    column
        .str()
        .expect("a String column")
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn floats(frame: &DataFrame, column: &str) -> Vec<Option<f64>> {
    frame
        .column(column)
        .expect("column")
        .f64()
        .expect("a Float64 column")
        .iter()
        .collect()
}

fn ints(frame: &DataFrame, column: &str) -> Vec<Option<i64>> {
    frame
        .column(column)
        .expect("column")
        .i64()
        .expect("an Int64 column")
        .iter()
        .collect()
}

fn labels(frame: &DataFrame) -> Vec<Option<u8>> {
    frame
        .column(LABEL)
        .expect("label column")
        .u8()
        .expect("a UInt8 label")
        .iter()
        .collect()
}

fn names(frame: &DataFrame) -> Vec<String> {
    frame
        .get_column_names()
        .into_iter()
        .map(|name| name.to_string())
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|value| Some(value.to_string())).collect()
}

fn profile(columns: &[(&str, ColumnKind)]) -> Vec<ProfileColumn> {
    columns
        .iter()
        .map(|(name, kind)| ProfileColumn {
            name: name.to_string(),
            kind: *kind,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Event form, happy paths
// ---------------------------------------------------------------------------------------

const CRM_SPEC: &str = r#"
name = "crm"
task = "propensity"

[entities]
path = "leads.csv"
id = "lead_id"
created_at = "created"
exclude = ["email"]
columns = { seats = "numeric" }

[events]
path = "events.csv"
entity_id = "lead_id"
timestamp = "at"
event_type = "kind"
channel = "via"
value = "seconds"

[outcomes]
path = "deals.csv"
entity_id = "lead_id"
timestamp = "won_at"

[label]
horizon_days = 30
cutoffs = { after_creation = { days = 0 } }
"#;

#[test]
fn event_form_csv_gives_the_canonical_frames() {
    let spec = spec_in(&fixtures().join("crm"), CRM_SPEC);
    let loaded = load_ok(&spec);

    let entities = &loaded.entities;
    assert_eq!(
        names(entities),
        [ENTITY_ID, CREATED_AT, "source", "seats", "score"]
    );
    assert_eq!(
        loaded.profile_columns,
        profile(&[
            ("source", ColumnKind::Categorical),
            ("seats", ColumnKind::Numeric),
            ("score", ColumnKind::Numeric),
        ])
    );
    assert_eq!(strings(entities, ENTITY_ID), some(&["L1", "L2", "L3"]));
    assert_eq!(
        ints(entities, CREATED_AT),
        [
            Some(ms("2024-01-01 09:00:00")),
            Some(ms("2024-01-02 00:00:00")),
            Some(ms("2024-01-03 10:30:00"))
        ]
    );
    assert_eq!(
        strings(entities, "source"),
        [Some("web".into()), None, Some("ads".into())]
    );
    assert_eq!(floats(entities, "seats"), [Some(5.0), Some(12.0), None]);
    assert_eq!(
        floats(entities, "score"),
        [Some(0.5), Some(1.0), Some(-2.0)]
    );

    let events = loaded.events.as_ref().expect("events");
    assert_eq!(names(events), [ENTITY_ID, TS, EVENT_TYPE, CHANNEL, VALUE]);
    assert_eq!(strings(events, ENTITY_ID), some(&["L1", "L1", "L2", "L3"]));
    assert_eq!(
        ints(events, TS),
        [
            Some(ms("2024-01-01 09:05:00")),
            Some(ms("2024-01-04 12:00:00")),
            Some(ms("2024-01-02 08:00:00")),
            Some(ms("2024-01-03 11:00:00")),
        ]
    );
    assert_eq!(
        strings(events, EVENT_TYPE),
        some(&["page_view", "email_open", "page_view", "form"])
    );
    assert_eq!(
        strings(events, CHANNEL),
        [
            Some("web".into()),
            Some("email".into()),
            Some("web".into()),
            None
        ]
    );
    assert_eq!(floats(events, VALUE), [Some(30.0), None, Some(12.5), None]);

    let outcomes = loaded.outcomes.as_ref().expect("outcomes");
    assert_eq!(names(outcomes), [ENTITY_ID, OUTCOME_AT]);
    // L1 has two deal rows: the earliest is kept.
    assert_eq!(strings(outcomes, ENTITY_ID), some(&["L1", "L3"]));
    assert_eq!(
        ints(outcomes, OUTCOME_AT),
        [
            Some(ms("2024-01-10 00:00:00")),
            Some(ms("2024-01-20 15:00:00"))
        ]
    );
}

#[test]
fn event_form_parquet_converts_datetime_date_and_integer_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created_us: Vec<i64> = vec![
        ms("2024-01-01 09:00:00") * 1_000,
        ms("2024-01-02 00:00:00") * 1_000,
    ];
    let created = Int64Chunked::from_vec("created".into(), created_us)
        .into_series()
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
        .expect("datetime");
    let entities = DataFrame::new(
        2,
        vec![
            Int64Chunked::from_vec("id".into(), vec![101, 102]).into_column(),
            created.into_column(),
            Float64Chunked::from_vec("revenue".into(), vec![1.5, f64::NAN]).into_column(),
            StringChunked::from_slice("segment".into(), &["smb", "enterprise"]).into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("entities.PARQUET"), entities);

    let event_ns: Vec<i64> = vec![
        ms("2024-01-01 10:00:00") * 1_000_000,
        ms("2024-01-05 00:00:00") * 1_000_000,
    ];
    let at = Int64Chunked::from_vec("at".into(), event_ns)
        .into_series()
        .cast(&DataType::Datetime(
            TimeUnit::Nanoseconds,
            Some(TimeZone::UTC),
        ))
        .expect("datetime");
    let events = DataFrame::new(
        2,
        vec![
            Int64Chunked::from_vec("id".into(), vec![101, 102]).into_column(),
            at.into_column(),
            StringChunked::from_slice("type".into(), &["visit", "call"]).into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("events.parquet"), events);

    let won = Int32Chunked::from_vec("won".into(), vec![19_730]) // 2024-01-08
        .into_series()
        .cast(&DataType::Date)
        .expect("date");
    let outcomes = DataFrame::new(
        1,
        vec![
            Int64Chunked::from_vec("id".into(), vec![102]).into_column(),
            won.into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("outcomes.parquet"), outcomes);

    let spec = spec_in(
        dir.path(),
        r#"
        name = "parquet"
        task = "propensity"
        [entities]
        path = "entities.PARQUET"
        id = "id"
        created_at = "created"
        columns = { segment = "categorical" }
        [events]
        path = "events.parquet"
        entity_id = "id"
        timestamp = "at"
        event_type = "type"
        [outcomes]
        path = "outcomes.parquet"
        entity_id = "id"
        timestamp = "won"
        [label]
        horizon_days = 30
        cutoffs = { after_creation = { days = 0 } }
        "#,
    );
    let loaded = load_ok(&spec);
    assert_eq!(
        names(&loaded.entities),
        [ENTITY_ID, CREATED_AT, "revenue", "segment"]
    );
    assert_eq!(strings(&loaded.entities, ENTITY_ID), some(&["101", "102"]));
    assert_eq!(
        ints(&loaded.entities, CREATED_AT),
        [
            Some(ms("2024-01-01 09:00:00")),
            Some(ms("2024-01-02 00:00:00"))
        ]
    );
    // NaN in a Parquet float column is a missing value.
    assert_eq!(floats(&loaded.entities, "revenue"), [Some(1.5), None]);
    assert_eq!(
        strings(&loaded.entities, "segment"),
        some(&["smb", "enterprise"])
    );

    let events = loaded.events.as_ref().expect("events");
    assert_eq!(strings(events, ENTITY_ID), some(&["101", "102"]));
    assert_eq!(
        ints(events, TS),
        [
            Some(ms("2024-01-01 10:00:00")),
            Some(ms("2024-01-05 00:00:00"))
        ]
    );
    assert_eq!(strings(events, CHANNEL), [None, None]);
    assert_eq!(floats(events, VALUE), [None, None]);

    let outcomes = loaded.outcomes.as_ref().expect("outcomes");
    assert_eq!(strings(outcomes, ENTITY_ID), some(&["102"]));
    assert_eq!(ints(outcomes, OUTCOME_AT), [Some(19_730 * DAY_MS)]);
}

#[test]
fn events_are_optional_when_the_label_only_needs_outcomes() {
    let dir = folder_with(&[
        (
            "mql.csv",
            "mql_id,first_contact_date,origin\na,2018-02-01,social\nb,2018-02-03,\n",
        ),
        ("won.csv", "mql_id,won_date\nb,2018-03-01 10:00:00\n"),
    ]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "funnel"
        task = "propensity"
        [entities]
        path = "mql.csv"
        id = "mql_id"
        created_at = "first_contact_date"
        [outcomes]
        path = "won.csv"
        entity_id = "mql_id"
        timestamp = "won_date"
        [label]
        horizon_days = 180
        cutoffs = { after_creation = { days = 0 } }
        "#,
    );
    let loaded = load_ok(&spec);
    assert!(loaded.events.is_none());
    assert_eq!(
        strings(&loaded.entities, "origin"),
        [Some("social".into()), None]
    );
    let outcomes = loaded.outcomes.as_ref().expect("outcomes");
    assert_eq!(
        ints(outcomes, OUTCOME_AT),
        [Some(ms("2018-03-01 10:00:00"))]
    );
}

#[test]
fn separator_and_timestamp_format_come_from_the_spec() {
    let dir = folder_with(&[(
        "leads.csv",
        "id;created;region\n1;02/01/2024 10:30;north\n2;03/01/2024 00:00;south\n",
    )]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "semicolons"
        task = "propensity"
        [entities]
        path = "leads.csv"
        id = "id"
        created_at = "created"
        separator = ";"
        timestamp_format = "%d/%m/%Y %H:%M"
        [outcomes]
        path = "leads.csv"
        entity_id = "id"
        timestamp = "created"
        separator = ";"
        timestamp_format = "%d/%m/%Y %H:%M"
        [label]
        horizon_days = 30
        cutoffs = { after_creation = { days = 0 } }
        "#,
    );
    let loaded = load_ok(&spec);
    assert_eq!(
        ints(&loaded.entities, CREATED_AT),
        [
            Some(ms("2024-01-02 10:30:00")),
            Some(ms("2024-01-03 00:00:00"))
        ]
    );
    assert_eq!(
        strings(&loaded.entities, "region"),
        some(&["north", "south"])
    );
}

// ---------------------------------------------------------------------------------------
// Rules, entities from events, numeric ids
// ---------------------------------------------------------------------------------------

const RETAIL_EVENTS: &str = "\
Invoice,InvoiceDate,Customer ID,Quantity,Price,Country
489434,2009-12-01 07:45:00,13085.0,12,6.95,United Kingdom
489435,2009-12-01 07:46:00,,5,1.00,United Kingdom
C489449,2009-12-01 10:33:00,16321.0,-2,3.00,Australia
489450,2009-12-01 09:00:00,16321.0,3,2.50,France
489451,2009-12-02 11:00:00,13085.0,1,,Germany
";

const RETAIL_SPEC: &str = r#"
name = "retail"
task = "churn"
[entities]
from_events = true
id = "Customer ID"
profile_from_events = ["Country"]
[events]
path = "lines.csv"
entity_id = "Customer ID"
timestamp = "InvoiceDate"
constant_event_type = "purchase"
value_product = ["Quantity", "Price"]
rules = [
  { column = "Customer ID", is_missing = true, action = "drop" },
  { column = "Invoice", starts_with = "C", action = { set_event_type = "cancellation" } },
]
[label]
kind = "inactivity"
inactivity_event_types = ["purchase"]
horizon_days = 90
cutoffs = { every = { every_days = 30, count = 6 } }
"#;

#[test]
fn entities_from_events_with_drop_and_set_event_type_rules() {
    let dir = folder_with(&[("lines.csv", RETAIL_EVENTS)]);
    let loaded = load_ok(&spec_in(dir.path(), RETAIL_SPEC));

    let events = loaded.events.as_ref().expect("events");
    // The line without a customer is dropped; the `C` invoice becomes a cancellation.
    assert_eq!(
        strings(events, ENTITY_ID),
        some(&["13085", "16321", "16321", "13085"])
    );
    assert_eq!(
        strings(events, EVENT_TYPE),
        some(&["purchase", "cancellation", "purchase", "purchase"])
    );
    assert_eq!(
        floats(events, VALUE),
        [Some(12.0 * 6.95), Some(-6.0), Some(7.5), None]
    );

    // One entity per customer in order of first appearance, created at its first event
    // (16321's first event is the 09:00 line although it comes later in the file), with
    // the country of that first event.
    let entities = &loaded.entities;
    assert_eq!(names(entities), [ENTITY_ID, CREATED_AT, "Country"]);
    assert_eq!(strings(entities, ENTITY_ID), some(&["13085", "16321"]));
    assert_eq!(
        ints(entities, CREATED_AT),
        [
            Some(ms("2009-12-01 07:45:00")),
            Some(ms("2009-12-01 09:00:00"))
        ]
    );
    assert_eq!(
        strings(entities, "Country"),
        some(&["United Kingdom", "France"])
    );
    assert_eq!(
        loaded.profile_columns,
        profile(&[("Country", ColumnKind::Categorical)])
    );
    assert!(loaded.outcomes.is_none());
}

#[test]
fn later_rules_win_and_drop_rules_starting_with_a_prefix_drop() {
    let dir = folder_with(&[(
        "log.csv",
        "who,when,what,ref\na,2024-01-01,visit,X1\na,2024-01-02,visit,C7\nb,2024-01-03,visit,T9\nb,2024-01-04,,CT2\n",
    )]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "rules"
        task = "churn"
        [entities]
        from_events = true
        id = "who"
        [events]
        path = "log.csv"
        entity_id = "who"
        timestamp = "when"
        event_type = "what"
        rules = [
          { column = "ref", starts_with = "C", action = { set_event_type = "credit" } },
          { column = "ref", starts_with = "CT", action = { set_event_type = "credit_transfer" } },
          { column = "ref", starts_with = "T", action = "drop" },
        ]
        [label]
        kind = "inactivity"
        inactivity_event_types = ["visit"]
        horizon_days = 30
        cutoffs = { dates = ["2024-02-01"] }
        "#,
    );
    let loaded = load_ok(&spec);
    let events = loaded.events.as_ref().expect("events");
    assert_eq!(strings(events, ENTITY_ID), some(&["a", "a", "b"]));
    // The missing event type of the last row is set by a rule, so it is not an error.
    assert_eq!(
        strings(events, EVENT_TYPE),
        some(&["visit", "credit", "credit_transfer"])
    );
    assert_eq!(
        ints(&loaded.entities, CREATED_AT),
        [
            Some(ms("2024-01-01 00:00:00")),
            Some(ms("2024-01-04 00:00:00"))
        ]
    );
}

#[test]
fn float_ids_in_parquet_match_integer_ids_in_csv() {
    let dir = folder_with(&[(
        "customers.csv",
        "Customer ID,since\n13085,2009-11-01\n16321.0,2009-11-02\n12345.5,2009-11-03\n",
    )]);
    let events = DataFrame::new(
        3,
        vec![
            Float64Chunked::from_slice_options(
                "Customer ID".into(),
                &[Some(13085.0), Some(16321.0), Some(12345.5)],
            )
            .into_column(),
            StringChunked::from_slice("InvoiceDate".into(), &["2009-12-01 07:45:00"; 3])
                .into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("lines.parquet"), events);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "ids"
        task = "churn"
        [entities]
        path = "customers.csv"
        id = "Customer ID"
        created_at = "since"
        [events]
        path = "lines.parquet"
        entity_id = "Customer ID"
        timestamp = "InvoiceDate"
        constant_event_type = "purchase"
        [label]
        kind = "inactivity"
        inactivity_event_types = ["purchase"]
        horizon_days = 90
        cutoffs = { dates = ["2010-01-01"] }
        "#,
    );
    let loaded = load_ok(&spec);
    assert_eq!(
        strings(&loaded.entities, ENTITY_ID),
        some(&["13085", "16321", "12345.5"])
    );
    let events = loaded.events.as_ref().expect("events");
    assert_eq!(
        strings(events, ENTITY_ID),
        some(&["13085", "16321", "12345.5"])
    );
    assert_eq!(strings(events, EVENT_TYPE), some(&["purchase"; 3]));
}

// ---------------------------------------------------------------------------------------
// Tabular form and missing markers
// ---------------------------------------------------------------------------------------

#[test]
fn tabular_with_positive_text_and_missing_markers() {
    let dir = folder_with(&[(
        "leads.csv",
        "Prospect ID,Lead Number,Converted,Visits,City,Occupation,Tags\n\
         p1,101,Yes,3,Mumbai,Select,Ringing\n\
         p2,102,No,NA,Select,Student,\n\
         p3,103,No,,Pune,Select,Closed\n",
    )]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "leads"
        task = "propensity"
        [table]
        path = "leads.csv"
        id = "Prospect ID"
        label = "Converted"
        positive = "Yes"
        missing = ["Select", "NA"]
        exclude = ["Lead Number", "Tags"]
        "#,
    );
    let loaded = load_ok(&spec);
    let entities = &loaded.entities;
    assert_eq!(
        names(entities),
        [ENTITY_ID, CREATED_AT, "Visits", "City", "Occupation", LABEL]
    );
    assert_eq!(strings(entities, ENTITY_ID), some(&["p1", "p2", "p3"]));
    assert_eq!(ints(entities, CREATED_AT), [Some(0); 3]);
    // `NA` and the empty string are missing, so Visits is numeric.
    assert_eq!(floats(entities, "Visits"), [Some(3.0), None, None]);
    assert_eq!(
        strings(entities, "City"),
        [Some("Mumbai".into()), None, Some("Pune".into())]
    );
    assert_eq!(
        strings(entities, "Occupation"),
        [None, Some("Student".into()), None]
    );
    assert_eq!(labels(entities), [Some(1), Some(0), Some(0)]);
    assert_eq!(
        loaded.profile_columns,
        profile(&[
            ("Visits", ColumnKind::Numeric),
            ("City", ColumnKind::Categorical),
            ("Occupation", ColumnKind::Categorical),
        ])
    );
    assert!(loaded.events.is_none() && loaded.outcomes.is_none());
}

#[test]
fn tabular_without_id_numbers_rows_and_reads_boolean_labels() {
    let dir = folder_with(&[("t.csv", "zip,bought\n75001,true\n69002,FALSE\n13001,1\n")]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "t"
        task = "propensity"
        [table]
        path = "t.csv"
        label = "bought"
        columns = { zip = "categorical" }
        "#,
    );
    let loaded = load_ok(&spec);
    assert_eq!(strings(&loaded.entities, ENTITY_ID), some(&["1", "2", "3"]));
    assert_eq!(
        strings(&loaded.entities, "zip"),
        some(&["75001", "69002", "13001"])
    );
    assert_eq!(labels(&loaded.entities), [Some(1), Some(0), Some(1)]);
}

#[test]
fn tabular_parquet_with_integer_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let table = DataFrame::new(
        3,
        vec![
            Int64Chunked::from_vec("converted".into(), vec![0, 1, 1]).into_column(),
            Int64Chunked::from_vec("visits".into(), vec![4, 0, 7]).into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("t.parquet"), table);
    let spec = spec_in(
        dir.path(),
        "name = \"t\"\ntask = \"propensity\"\n[table]\npath = \"t.parquet\"\nlabel = \"converted\"\n",
    );
    let loaded = load_ok(&spec);
    assert_eq!(labels(&loaded.entities), [Some(0), Some(1), Some(1)]);
    assert_eq!(
        floats(&loaded.entities, "visits"),
        [Some(4.0), Some(0.0), Some(7.0)]
    );
    assert_eq!(
        loaded.entities.column(LABEL).expect("label").dtype(),
        &DataType::UInt8
    );
}

// ---------------------------------------------------------------------------------------
// Validation errors
// ---------------------------------------------------------------------------------------

fn tabular_spec(dir: &Path, file: &str, extra: &str) -> DatasetSpec {
    spec_in(
        dir,
        &format!(
            "name = \"t\"\ntask = \"propensity\"\n[table]\npath = \"{file}\"\nlabel = \"y\"\n{extra}\n"
        ),
    )
}

#[test]
fn error_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = load_err(&tabular_spec(dir.path(), "nowhere.csv", ""));
    assert!(matches!(error, DataError::MissingFile { .. }), "{error:?}");
    assert_mentions(&error, &["nowhere.csv", "not found"]);
}

#[test]
fn error_unsupported_extension() {
    let dir = folder_with(&[("leads.xlsx", "y\n1\n")]);
    let error = load_err(&tabular_spec(dir.path(), "leads.xlsx", ""));
    assert!(
        matches!(error, DataError::UnsupportedFormat { .. }),
        "{error:?}"
    );
    assert_mentions(&error, &["leads.xlsx", ".csv, .tsv, .txt or .parquet"]);
}

#[test]
fn error_missing_column_lists_the_available_ones() {
    let dir = folder_with(&[("t.csv", "target,visits\n1,2\n0,3\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", ""));
    assert!(
        matches!(error, DataError::MissingColumn { .. }),
        "{error:?}"
    );
    assert_mentions(&error, &["t.csv", "`y`", "`target`, `visits`"]);
}

#[test]
fn error_missing_event_column() {
    let dir = folder_with(&[(
        "lines.csv",
        "Invoice,InvoiceDate,Customer ID,Quantity,Country\n1,2024-01-01,5,1,UK\n",
    )]);
    let error = load_err(&spec_in(dir.path(), RETAIL_SPEC));
    assert!(
        matches!(error, DataError::MissingColumn { .. }),
        "{error:?}"
    );
    assert_mentions(&error, &["lines.csv", "`Price`", "`Quantity`"]);
}

#[test]
fn error_excluded_column_that_does_not_exist() {
    let dir = folder_with(&[("t.csv", "y,visits\n1,2\n0,3\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", "exclude = [\"Tags\"]"));
    assert!(
        matches!(error, DataError::MissingColumn { .. }),
        "{error:?}"
    );
    assert_mentions(&error, &["t.csv", "`Tags`", "`y`, `visits`"]);
}

#[test]
fn error_declared_column_that_does_not_exist() {
    let dir = folder_with(&[("t.csv", "y,visits\n1,2\n0,3\n")]);
    let error = load_err(&tabular_spec(
        dir.path(),
        "t.csv",
        "columns = { vists = \"numeric\" }",
    ));
    assert!(
        matches!(error, DataError::MissingColumn { .. }),
        "{error:?}"
    );
    assert_mentions(&error, &["t.csv", "`vists`", "`visits`"]);
}

#[test]
fn error_text_in_a_declared_numeric_column() {
    let dir = folder_with(&[("t.csv", "y,visits\n1,2\n0,3\n1,many\n")]);
    let error = load_err(&tabular_spec(
        dir.path(),
        "t.csv",
        "columns = { visits = \"numeric\" }",
    ));
    assert!(matches!(error, DataError::BadValue { .. }), "{error:?}");
    assert_mentions(
        &error,
        &[
            "t.csv",
            "row 3",
            "column `visits`",
            "\"many\"",
            "not a number",
        ],
    );
}

#[test]
fn error_text_in_the_event_value_column() {
    let dir = folder_with(&[(
        "lines.csv",
        &RETAIL_EVENTS.replace("1.00,United", "one,United"),
    )]);
    // The bad price is on a line dropped by a rule (no customer): no error.
    load_ok(&spec_in(dir.path(), RETAIL_SPEC));
    let dir = folder_with(&[(
        "lines.csv",
        &RETAIL_EVENTS.replace("2.50,France", "2,50,France"),
    )]);
    let error = load_err(&spec_in(dir.path(), RETAIL_SPEC));
    assert!(
        matches!(error, DataError::FieldCount { .. }),
        "a ragged line: {error:?}"
    );
    assert_mentions(&error, &["lines.csv", "row 4", "7 fields", "header has 6"]);
    let dir = folder_with(&[(
        "lines.csv",
        &RETAIL_EVENTS.replace("2.50,France", "2.5o,France"),
    )]);
    let error = load_err(&spec_in(dir.path(), RETAIL_SPEC));
    // Row 4 of the file, although row 2 was dropped before.
    assert_mentions(
        &error,
        &["lines.csv", "row 4", "column `Price`", "\"2.5o\""],
    );
}

#[test]
fn error_unparsable_timestamp() {
    let dir = folder_with(&[(
        "lines.csv",
        &RETAIL_EVENTS.replace("2009-12-01 09:00:00", "01/12/2009 09:00"),
    )]);
    let error = load_err(&spec_in(dir.path(), RETAIL_SPEC));
    assert!(matches!(error, DataError::BadValue { .. }), "{error:?}");
    assert_mentions(
        &error,
        &[
            "lines.csv",
            "row 4",
            "column `InvoiceDate`",
            "\"01/12/2009 09:00\"",
            "timestamp",
        ],
    );
}

#[test]
fn error_unparsable_timestamp_with_a_custom_format() {
    let dir = folder_with(&[("mql.csv", "id,created\na,2024-01-05\nb,5 Jan 2024\n")]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "m"
        task = "propensity"
        [entities]
        path = "mql.csv"
        id = "id"
        created_at = "created"
        timestamp_format = "%Y-%m-%d"
        [outcomes]
        path = "mql.csv"
        entity_id = "id"
        timestamp = "created"
        [label]
        horizon_days = 30
        cutoffs = { after_creation = { days = 0 } }
        "#,
    );
    let error = load_err(&spec);
    assert_mentions(
        &error,
        &[
            "mql.csv",
            "row 2",
            "column `created`",
            "\"5 Jan 2024\"",
            "`%Y-%m-%d`",
        ],
    );
}

#[test]
fn error_missing_entity_id_in_events_without_a_drop_rule() {
    let dir = folder_with(&[("lines.csv", RETAIL_EVENTS)]);
    let spec_text = RETAIL_SPEC.replace(
        "{ column = \"Customer ID\", is_missing = true, action = \"drop\" },",
        "",
    );
    let error = load_err(&spec_in(dir.path(), &spec_text));
    assert!(matches!(error, DataError::BadValue { .. }), "{error:?}");
    assert_mentions(
        &error,
        &[
            "lines.csv",
            "row 2",
            "column `Customer ID`",
            "missing entity id",
        ],
    );
}

#[test]
fn error_duplicate_entity_ids() {
    let dir = folder_with(&[("t.csv", "id,y\na,1\nb,0\nc,1\nb,0\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", "id = \"id\""));
    assert!(matches!(error, DataError::DuplicateId { .. }), "{error:?}");
    assert_mentions(
        &error,
        &[
            "t.csv",
            "row 4",
            "column `id`",
            "\"b\"",
            "first seen on row 2",
        ],
    );
}

#[test]
fn error_duplicate_entity_ids_in_an_entities_file() {
    let dir = folder_with(&[
        ("crm.csv", "id,created\n7,2024-01-01\n7.0,2024-01-02\n"),
        ("won.csv", "id,at\n"),
    ]);
    let spec = spec_in(
        dir.path(),
        r#"
        name = "m"
        task = "propensity"
        [entities]
        path = "crm.csv"
        id = "id"
        created_at = "created"
        [outcomes]
        path = "won.csv"
        entity_id = "id"
        timestamp = "at"
        [label]
        horizon_days = 30
        cutoffs = { after_creation = { days = 0 } }
        "#,
    );
    let error = load_err(&spec);
    assert!(matches!(error, DataError::DuplicateId { .. }), "{error:?}");
    assert_mentions(
        &error,
        &[
            "crm.csv",
            "row 2",
            "column `id`",
            "\"7\"",
            "first seen on row 1",
        ],
    );
}

#[test]
fn error_events_for_an_unknown_entity() {
    let crm = fixtures().join("crm");
    let dir = folder_with(&[
        (
            "leads.csv",
            &fs::read_to_string(crm.join("leads.csv")).expect("fixture"),
        ),
        (
            "deals.csv",
            &fs::read_to_string(crm.join("deals.csv")).expect("fixture"),
        ),
        (
            "events.csv",
            "lead_id,at,kind,via,seconds\nL1,2024-01-02 00:00:00,page_view,web,3\nL9,2024-01-02 00:00:00,page_view,web,3\n",
        ),
    ]);
    let error = load_err(&spec_in(dir.path(), CRM_SPEC));
    assert!(
        matches!(error, DataError::UnknownEntity { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &[
            "events.csv",
            "row 2",
            "column `lead_id`",
            "\"L9\"",
            "not in the entities file",
        ],
    );
}

#[test]
fn error_outcomes_for_an_unknown_entity() {
    let crm = fixtures().join("crm");
    let dir = folder_with(&[
        (
            "leads.csv",
            &fs::read_to_string(crm.join("leads.csv")).expect("fixture"),
        ),
        (
            "events.csv",
            &fs::read_to_string(crm.join("events.csv")).expect("fixture"),
        ),
        (
            "deals.csv",
            "lead_id,won_at\nL1,2024-02-01\nL4,2024-02-01\n",
        ),
    ]);
    let error = load_err(&spec_in(dir.path(), CRM_SPEC));
    assert!(
        matches!(error, DataError::UnknownEntity { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &["deals.csv", "row 2", "column `lead_id`", "\"L4\""],
    );
}

fn outcome_before_creation_spec(dir: &Path, policy: &str) -> DatasetSpec {
    spec_in(
        dir,
        &format!(
            r#"
            name = "m"
            task = "propensity"
            [entities]
            path = "mql.csv"
            id = "id"
            created_at = "created"
            [outcomes]
            path = "won.csv"
            entity_id = "id"
            timestamp = "won"
            {policy}
            [label]
            horizon_days = 30
            cutoffs = {{ after_creation = {{ days = 0 }} }}
            "#
        ),
    )
}

#[test]
fn error_outcome_before_creation() {
    let dir = folder_with(&[
        ("mql.csv", "id,created\na,2018-03-01\nb,2018-03-08\n"),
        (
            "won.csv",
            "id,won\na,2018-03-02 10:00:00\nb,2018-03-06 19:38:55\n",
        ),
    ]);
    let error = load_err(&outcome_before_creation_spec(dir.path(), ""));
    assert!(
        matches!(error, DataError::OutcomeBeforeCreation { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &[
            "won.csv",
            "row 2",
            "column `won`",
            "\"b\"",
            "2018-03-06 19:38:55",
            "2018-03-08 00:00:00",
        ],
    );

    let dropped = load_ok(&outcome_before_creation_spec(
        dir.path(),
        "before_creation = \"drop\"",
    ));
    let outcomes = dropped.outcomes.as_ref().expect("outcomes");
    assert_eq!(strings(outcomes, ENTITY_ID), some(&["a"]));

    let clamped = load_ok(&outcome_before_creation_spec(
        dir.path(),
        "before_creation = \"clamp\"",
    ));
    let outcomes = clamped.outcomes.as_ref().expect("outcomes");
    assert_eq!(strings(outcomes, ENTITY_ID), some(&["a", "b"]));
    assert_eq!(
        ints(outcomes, OUTCOME_AT),
        [
            Some(ms("2018-03-02 10:00:00")),
            Some(ms("2018-03-08 00:00:00"))
        ]
    );
}

#[test]
fn error_label_with_a_single_class() {
    let dir = folder_with(&[("t.csv", "y,visits\nNo,2\nNo,3\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", "positive = \"Yes\""));
    assert!(
        matches!(error, DataError::OneClassLabel { .. }),
        "{error:?}"
    );
    assert_mentions(
        &error,
        &["t.csv", "only one class", "`y` is 0 on all 2 rows"],
    );
}

#[test]
fn error_label_that_is_not_binary() {
    let dir = folder_with(&[("t.csv", "y,visits\n1,2\n0,3\nmaybe,4\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", ""));
    assert!(matches!(error, DataError::BadValue { .. }), "{error:?}");
    assert_mentions(
        &error,
        &["t.csv", "row 3", "column `y`", "\"maybe\"", "0/1"],
    );
}

#[test]
fn error_missing_label() {
    let dir = folder_with(&[("t.csv", "y,visits\n1,2\n,3\n0,4\n")]);
    let error = load_err(&tabular_spec(dir.path(), "t.csv", ""));
    assert_mentions(&error, &["t.csv", "row 2", "column `y`", "missing label"]);
}

#[test]
fn error_empty_file() {
    let dir = folder_with(&[("header_only.csv", "y,visits\n"), ("nothing.csv", "")]);
    for file in ["header_only.csv", "nothing.csv"] {
        let error = load_err(&tabular_spec(dir.path(), file, ""));
        assert!(
            matches!(error, DataError::Empty { .. }),
            "{file}: {error:?}"
        );
        assert_mentions(&error, &[file, "no rows"]);
    }
}

#[test]
fn error_timestamp_column_of_a_numeric_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let entities = DataFrame::new(
        1,
        vec![
            StringChunked::from_slice("id".into(), &["a"]).into_column(),
            Int64Chunked::from_vec("created".into(), vec![1_700_000_000]).into_column(),
        ],
    )
    .expect("frame");
    write_parquet(&dir.path().join("e.parquet"), entities);
    fs::write(dir.path().join("won.csv"), "id,won\na,2024-01-01\n").expect("write");
    let spec = spec_in(
        dir.path(),
        &fs::read_to_string(fixtures().join("parquet_entities.toml")).expect("fixture spec"),
    );
    let error = load_err(&spec);
    assert!(matches!(error, DataError::ColumnType { .. }), "{error:?}");
    assert_mentions(
        &error,
        &["e.parquet", "column `created`", "i64", "timestamps"],
    );
}

#[test]
fn every_cutoffs_run_from_a_start_to_the_last_complete_label_window() {
    use features::builder::{Cutoffs, resolve_cutoffs};
    // A purchase every 10 days through 2010, the last on 2010-12-27 09:00: with a 90-day
    // horizon the last cutoff with a complete window is 2010-09-28 (day 270).
    let mut lines = String::from("Invoice,InvoiceDate,Customer ID,Quantity,Price,Country\n");
    for day in (0..=360).step_by(10) {
        let t = chrono::NaiveDate::from_ymd_opt(2010, 1, 1).expect("date")
            + chrono::Duration::days(day);
        lines.push_str(&format!("{day},{t} 09:00:00,13085,1,2.0,France\n"));
    }
    let dir = folder_with(&[("lines.csv", &lines)]);
    let day = |n: i64| ms("2010-01-01 00:00:00") + n * DAY_MS;
    let cutoffs = |every: &str| {
        let spec = RETAIL_SPEC.replace("{ every_days = 30, count = 6 }", every);
        let spec = DatasetSpec::from_toml(&spec, Path::new("test.toml"), dir.path().into())
            .map_err(|e| e.to_string())?;
        let loaded = load_dataset(&spec).map_err(|e| e.to_string())?;
        match resolve_cutoffs(&loaded).map_err(|e| e.to_string())? {
            Cutoffs::Calendar(c) => Ok(c),
            other => Err(format!("{other:?}")),
        }
    };
    let days = |ds: &[i64]| Ok::<_, String>(ds.iter().map(|&d| day(d)).collect::<Vec<_>>());
    // "Monthly from 120 days after the first record": 2010-05-01 on, to the last.
    assert_eq!(
        cutoffs("{ every_days = 30, start_after_first_days = 120 }"),
        days(&[120, 150, 180, 210, 240, 270])
    );
    // The same six, counted back from the last.
    assert_eq!(
        cutoffs("{ every_days = 30, count = 6 }"),
        days(&[120, 150, 180, 210, 240, 270])
    );
    // From a date; at most `count` of them.
    assert_eq!(
        cutoffs("{ every_days = 30, start = \"2010-06-15\" }"),
        days(&[165, 195, 225, 255])
    );
    assert_eq!(
        cutoffs("{ every_days = 30, start_after_first_days = 120, count = 2 }"),
        days(&[120, 150])
    );
    // A time of day is kept (UTC).
    assert_eq!(
        cutoffs("{ every_days = 100, start = \"2010-03-01 12:00:00\" }"),
        Ok(vec![
            ms("2010-03-01 12:00:00"),
            ms("2010-03-01 12:00:00") + 100 * DAY_MS,
            ms("2010-03-01 12:00:00") + 200 * DAY_MS,
        ])
    );
    // A start with no complete window is refused naming the dates; so are both starts.
    let err = cutoffs("{ every_days = 30, start = \"2010-10-01\" }").expect_err("too late");
    assert!(
        err.contains("2010-10-01") && err.contains("2010-09-28") && err.contains("90 days"),
        "{err}"
    );
    let err = cutoffs("{ every_days = 30, start = \"2010-05-01\", start_after_first_days = 3 }")
        .expect_err("both");
    assert!(err.contains("not both"), "{err}");
    let err = cutoffs("{ every_days = 30 }").expect_err("neither");
    assert!(err.contains("start_after_first_days"), "{err}");
}
