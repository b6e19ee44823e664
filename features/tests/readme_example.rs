//! The README's worked example of the event form, kept true: the spec printed in the README
//! is the fixture's spec, and loading and featurizing the fixture gives the rows the README
//! describes.

use std::path::{Path, PathBuf};

use features::DatasetSpec;
use features::builder::{build_features, fit_plan, resolve_cutoffs};
use features::load::load_dataset;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/readme")
}

/// The TOML block of the README that starts with `name = "acme-leads"`.
fn readme_spec() -> String {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md is readable");
    let start = readme
        .find("name = \"acme-leads\"")
        .expect("the README has the worked example's spec");
    let length = readme[start..]
        .find("```")
        .expect("the spec's code block is closed");
    readme[start..start + length].to_string()
}

#[test]
fn readme_spec_is_the_fixture_spec() {
    let fixture_spec =
        std::fs::read_to_string(fixture().join("spec.toml")).expect("fixture spec is readable");
    assert_eq!(readme_spec(), fixture_spec);
}

#[test]
fn readme_example_gives_the_rows_the_readme_describes() {
    let spec = DatasetSpec::from_file(&fixture().join("spec.toml")).expect("spec parses");
    let data = load_dataset(&spec).expect("fixture loads");
    assert!(
        data.profile_columns.iter().all(|c| c.name != "email"),
        "excluded column kept"
    );
    let cutoffs = resolve_cutoffs(&data).expect("cutoffs");
    let plan = fit_plan(&data, None).expect("plan");
    let table = build_features(&data, &plan, &cutoffs).expect("features");

    let day = |date: &str| {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis()
    };
    let mut rows: Vec<(String, i64, u8)> = (0..table.n_rows())
        .map(|i| {
            (
                table.entity_ids[i].clone(),
                table.cutoffs_ms[i],
                table.labels[i],
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("L1".to_string(), day("2025-01-15"), 1),
            ("L1".to_string(), day("2025-02-01"), 1),
            ("L2".to_string(), day("2025-01-15"), 0),
            ("L2".to_string(), day("2025-02-01"), 0),
        ]
    );

    let value = |entity: &str, cutoff: &str, feature: &str| -> f32 {
        let column = table
            .feature_names
            .iter()
            .position(|name| name == feature)
            .unwrap_or_else(|| panic!("no feature {feature} in {:?}", table.feature_names));
        let row = (0..table.n_rows())
            .find(|&i| table.entity_ids[i] == entity && table.cutoffs_ms[i] == day(cutoff))
            .unwrap_or_else(|| panic!("no row for {entity} at {cutoff}"));
        table.row(row)[column]
    };
    assert_eq!(value("L1", "2025-01-15", "count_web_visit_30d"), 1.0);
    assert_eq!(value("L1", "2025-01-15", "count_demo_request_30d"), 0.0);
    assert_eq!(value("L1", "2025-02-01", "count_demo_request_30d"), 1.0);
    assert_eq!(value("L1", "2025-02-01", "events_total_90d"), 2.0);
    assert_eq!(value("L1", "2025-01-15", "tenure_days"), 12.0);
    // The email open at 08:00 on the cutoff day is not strictly before the cutoff.
    assert_eq!(value("L2", "2025-02-01", "events_total_90d"), 0.0);
    assert!(value("L2", "2025-02-01", "employees").is_nan());
    assert_eq!(value("L1", "2025-01-15", "employees"), 120.0);
}
