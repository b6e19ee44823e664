//! The data contract as a newcomer meets it: a table of bad input files, each refused with an
//! error that names the file and the row and column at fault, or the spec key to set; and
//! the exports that used to be refused or read wrong (whitespace-aligned text, Latin-1, a
//! numeric column with blanks), read right.

use std::fs;
use std::path::Path;

use features::load::load_dataset;
use features::spec::DatasetSpec;
use polars::prelude::*;

/// A tabular spec of `path` (label `converted`), with `options` added to its section.
fn table_spec(path: &str, options: &str) -> String {
    format!(
        "name = \"t\"\ntask = \"propensity\"\n[table]\npath = \"{path}\"\nid = \"id\"\n\
         label = \"converted\"\n{options}\n"
    )
}

/// Event form: leads.csv, events.csv (as given) and a label.
fn events_spec(options: &str) -> String {
    format!(
        "name = \"e\"\ntask = \"propensity\"\n\
         [entities]\npath = \"leads.csv\"\nid = \"lead_id\"\ncreated_at = \"created\"\n\
         [events]\npath = \"events.csv\"\nentity_id = \"lead_id\"\ntimestamp = \"at\"\n\
         event_type = \"kind\"\n{options}\n\
         [outcomes]\npath = \"deals.csv\"\nentity_id = \"lead_id\"\ntimestamp = \"won\"\n\
         [label]\nhorizon_days = 30\ncutoffs = {{ after_creation = {{ days = 0 }} }}\n"
    )
}

const LEADS: &[u8] = b"lead_id,created,source\nL1,2025-01-01,web\nL2,2025-01-02,ads\n";
const DEALS: &[u8] = b"lead_id,won\nL1,2025-01-20\n";

struct Case {
    what: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    spec: String,
    /// Every one of these is in the message.
    says: Vec<&'static str>,
}

fn case(
    what: &'static str,
    files: Vec<(&'static str, &[u8])>,
    spec: String,
    says: &[&'static str],
) -> Case {
    Case {
        what,
        files: files.into_iter().map(|(n, b)| (n, b.to_vec())).collect(),
        spec,
        says: says.to_vec(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "a ;-separated file without `separator`",
            vec![("t.csv", b"id;visits;converted\n1;3;1\n2;0;0\n")],
            table_spec("t.csv", ""),
            &["t.csv", "looks `;`-separated", "separator = \";\""],
        ),
        case(
            "a tab-separated .csv without `separator`",
            vec![("t.csv", b"id\tvisits\tconverted\n1\t3\t1\n2\t0\t0\n")],
            table_spec("t.csv", ""),
            &["t.csv", "looks `\\t`-separated", "separator = \"\\t\""],
        ),
        case(
            "a whitespace-aligned .txt read as CSV",
            vec![(
                "t.txt",
                b"id   visits   converted\n1    3        1\n2    0        0\n",
            )],
            table_spec("t.txt", ""),
            &["t.txt", "separator = \"whitespace\""],
        ),
        case(
            "a row with too few fields",
            vec![("t.csv", b"id,visits,converted\n1,3,1\n2,0\n3,1,0\n")],
            table_spec("t.csv", ""),
            &["t.csv", "row 2", "2 fields", "header has 3"],
        ),
        case(
            "a row with too many fields (an unquoted comma)",
            vec![(
                "t.csv",
                b"id,city,converted\n1,Paris,1\n2,Lyon,0\n3,Aix, France,0\n",
            )],
            table_spec("t.csv", ""),
            &["t.csv", "row 3", "4 fields", "header has 3", "quoted"],
        ),
        case(
            "an invalid UTF-8 byte",
            vec![("t.csv", b"id,city,converted\n1,Paris,1\n2,K\xf6ln,0\n")],
            table_spec("t.csv", ""),
            &["t.csv", "row 2", "0xF6", "encoding = \"latin-1\""],
        ),
        case(
            "an unknown encoding",
            vec![("t.csv", b"id,converted\n1,1\n2,0\n")],
            table_spec("t.csv", "encoding = \"ebcdic\""),
            &["encoding", "ebcdic"],
        ),
        case(
            "a separator of two characters",
            vec![("t.csv", b"id,converted\n1,1\n2,0\n")],
            table_spec("t.csv", "separator = \";;\""),
            &["separator", "one ASCII character", "whitespace"],
        ),
        case(
            "text in a declared numeric column",
            vec![("t.csv", b"id,visits,converted\n1,3,1\n2,many,0\n")],
            table_spec("t.csv", "columns = { visits = \"numeric\" }"),
            &[
                "t.csv",
                "row 2",
                "column `visits`",
                "\"many\"",
                "not a number",
            ],
        ),
        case(
            "a short row in the events file",
            vec![
                ("leads.csv", LEADS),
                ("deals.csv", DEALS),
                (
                    "events.csv",
                    b"lead_id,at,kind\nL1,2025-01-03,visit\nL2,2025-01-04\n",
                ),
            ],
            events_spec(""),
            &["events.csv", "row 2", "2 fields", "header has 3"],
        ),
        case(
            "an events file in another separator than the one named",
            vec![
                ("leads.csv", LEADS),
                ("deals.csv", DEALS),
                ("events.csv", b"lead_id|at|kind\nL1|2025-01-03|visit\n"),
            ],
            events_spec("separator = \";\""),
            &["events.csv", "`separator = \";\"`", "looks `|`-separated"],
        ),
        case(
            "an unsupported file type",
            vec![("t.xlsx", b"PK\x03\x04")],
            table_spec("t.xlsx", ""),
            &["t.xlsx", "unsupported file type"],
        ),
        case(
            "a missing file",
            vec![],
            table_spec("nowhere.csv", ""),
            &["nowhere.csv", "not found"],
        ),
    ]
}

#[test]
fn every_bad_file_is_refused_naming_where_or_what_to_set() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for case in cases {
        let dir = tempfile::tempdir().expect("dir");
        for (name, bytes) in &case.files {
            fs::write(dir.path().join(name), bytes).expect("write");
        }
        let message =
            match DatasetSpec::from_toml(&case.spec, Path::new("spec.toml"), dir.path().into()) {
                Err(e) => e.to_string(),
                Ok(spec) => match load_dataset(&spec) {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("{}: loaded", case.what),
                },
            };
        for part in &case.says {
            assert!(
                message.contains(part),
                "{}: {message:?} should mention {part:?}",
                case.what
            );
        }
    }
}

fn load(files: &[(&str, &[u8])], spec: &str) -> features::load::LoadedDataset {
    let dir = tempfile::tempdir().expect("dir");
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).expect("write");
    }
    let spec = DatasetSpec::from_toml(spec, Path::new("spec.toml"), dir.path().into())
        .unwrap_or_else(|e| panic!("{e}"));
    load_dataset(&spec).unwrap_or_else(|e| panic!("{e}"))
}

fn floats(frame: &DataFrame, column: &str) -> Vec<Option<f64>> {
    frame
        .column(column)
        .and_then(|c| c.f64().cloned())
        .expect("f64 column")
        .iter()
        .collect()
}

fn texts(frame: &DataFrame, column: &str) -> Vec<Option<String>> {
    frame
        .column(column)
        .and_then(|c| c.str().cloned())
        .expect("text column")
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

#[test]
fn a_whitespace_aligned_export_reads_with_its_key() {
    let loaded = load(
        &[(
            "t.txt",
            b"id   visits   city       converted\n1    3        Paris      1\n\
              2    0\t\t    Lyon       0\n\n3    12       Aix        0\n",
        )],
        &table_spec("t.txt", "separator = \"whitespace\""),
    );
    assert_eq!(
        floats(&loaded.entities, "visits"),
        [Some(3.0), Some(0.0), Some(12.0)]
    );
    assert_eq!(
        texts(&loaded.entities, "city"),
        [
            Some("Paris".into()),
            Some("Lyon".into()),
            Some("Aix".into())
        ]
    );
}

#[test]
fn latin_1_reads_with_its_key_and_tsv_needs_none() {
    let loaded = load(
        &[("t.csv", b"id,city,converted\n1,Paris,1\n2,K\xf6ln,0\n")],
        &table_spec("t.csv", "encoding = \"latin-1\""),
    );
    assert_eq!(
        texts(&loaded.entities, "city"),
        [Some("Paris".into()), Some("Köln".into())]
    );
    let loaded = load(
        &[("t.tsv", b"id\tcity\tconverted\n1\tParis\t1\n2\tLyon\t0\n")],
        &table_spec("t.tsv", ""),
    );
    assert_eq!(loaded.entities.height(), 2);
}

#[test]
fn a_numeric_column_with_a_few_blanks_stays_numeric_with_a_warning() {
    let loaded = load(
        &[(
            "t.csv",
            b"id,revenue,converted\n1,12.5,1\n2, ,0\n3,40,0\n4,-,1\n5,N/A,0\n6,7,0\n",
        )],
        &table_spec("t.csv", ""),
    );
    assert_eq!(
        floats(&loaded.entities, "revenue"),
        [Some(12.5), None, Some(40.0), None, None, Some(7.0)]
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    for part in [
        "t.csv",
        "column `revenue`",
        "3 blank-like values",
        "row 2",
        "numeric",
    ] {
        assert!(
            warning.contains(part),
            "{warning:?} should mention {part:?}"
        );
    }
    // A column with a real word stays categorical, without a warning.
    let loaded = load(
        &[(
            "t.csv",
            b"id,revenue,converted\n1,12.5,1\n2,lots,0\n3, ,0\n",
        )],
        &table_spec("t.csv", ""),
    );
    assert!(loaded.warnings.is_empty());
    assert!(
        loaded
            .entities
            .column("revenue")
            .expect("col")
            .str()
            .is_ok()
    );
}
