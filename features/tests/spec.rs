//! The dataset spec's own errors: unknown keys are named, with their section and the
//! nearest known key.

use std::path::{Path, PathBuf};

use features::{DataError, DatasetSpec};

const SPEC: &str = r#"
name = "tiny"
task = "propensity"

[entities]
path = "leads.csv"
id = "lead_id"
created_at = "created_at"
separator = ","

[events]
path = "events.csv"
entity_id = "lead_id"
timestamp = "ts"
event_type = "type"
rules = [
  { column = "type", starts_with = "test", action = "drop" },
  { column = "type", is_missing = true, action = { set_event_type = "unknown" } },
]

[outcomes]
path = "outcomes.csv"
entity_id = "lead_id"
timestamp = "converted_at"

[label]
horizon_days = 30
cutoffs = { every = { every_days = 7, count = 4 } }

[features]
windows_days = [7, 30]
"#;

/// The spec's error message for `text`, which must be refused.
fn spec_error(text: &str) -> String {
    let err = DatasetSpec::from_toml(text, Path::new("leads.toml"), PathBuf::new())
        .expect_err("the spec must be refused");
    assert!(matches!(err, DataError::Spec { .. }), "{err}");
    err.to_string()
}

#[test]
fn the_reference_spec_parses() {
    DatasetSpec::from_toml(SPEC, Path::new("leads.toml"), PathBuf::new()).expect("valid spec");
}

#[test]
fn a_misspelt_section_is_named_with_the_section_meant() {
    let text = SPEC.replace("[entities]", "[entitites]");
    let message = spec_error(&text);
    assert_eq!(
        message,
        "dataset spec leads.toml: unknown key `entitites` at the top level; did you mean \
         `entities`?"
    );
}

#[test]
fn a_misspelt_key_inside_a_section_is_named_with_its_section() {
    let message = spec_error(&SPEC.replace("horizon_days", "horizon_day"));
    assert_eq!(
        message,
        "dataset spec leads.toml: unknown key `horizon_day` in [label]; did you mean \
         `horizon_days`?"
    );
    // Deeper: an inline table inside a section, and a table in an array of tables.
    let message = spec_error(&SPEC.replace("every_days", "evry_days"));
    assert!(
        message.ends_with(
            "unknown key `evry_days` in [label.cutoffs.every]; did you mean `every_days`?"
        ),
        "{message}"
    );
    let message = spec_error(&SPEC.replace("is_missing", "is_mising"));
    assert!(
        message.ends_with(
            "unknown key `is_mising` in [[events.rules]] #2; did you mean `is_missing`?"
        ),
        "{message}"
    );
    // A section that also takes the file options (serde alone let these through).
    let message = spec_error(&SPEC.replace("separator", "seperator"));
    assert!(
        message.ends_with("unknown key `seperator` in [entities]; did you mean `separator`?"),
        "{message}"
    );
}

#[test]
fn a_key_with_no_near_match_lists_the_known_keys() {
    let text = SPEC.replace(
        "windows_days = [7, 30]",
        "windows_days = [7, 30]\ncolour = \"red\"",
    );
    let message = spec_error(&text);
    assert_eq!(
        message,
        "dataset spec leads.toml: unknown key `colour` in [features] (known keys here: \
         windows_days, half_life_days, min_level_count, max_levels, creation_calendar, \
         whole_history)"
    );
}

#[test]
fn every_unknown_key_is_named_at_once() {
    let text = SPEC
        .replace("[outcomes]", "[outcome]")
        .replace("created_at =", "created =");
    let message = spec_error(&text);
    assert!(
        message.contains("unknown key `created` in [entities]; did you mean `created_at`?")
            && message.contains("unknown key `outcome` at the top level; did you mean `outcomes`?"),
        "{message}"
    );
}
