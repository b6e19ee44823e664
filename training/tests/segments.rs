//! Training per segment on generator histories whose segments convert for different reasons
//! (`Segments::Differ`) or for the same ones (`Segments::Alike`): a segment model ships only
//! where it beats the global model on its segment's held-out rows, by at least 0.01 ROC AUC;
//! and `train --segment-by` end to end: named bundles, the routing file, a server that takes
//! both.

#[path = "../../serving/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use features::synthetic::{GeneratorParams, Segments, SyntheticKind};
use models::bundle::{ModelName, ROUTING_FILE, Registry};
use serving::reload::RoutingSource;
use serving::routing::RoutingFile;
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader};
use training::evaluate::FamilyParams;
use training::pipeline::{ValidationMode, prepare, validation_plan};
use training::segments::{RunSettings, SegmentOutcome, SegmentParams, train_segments};
use training::train::{FamilyChoice, choose_family, evaluate_families};

/// The bar: a shipped segment model beats the global model on its segment by this much.
const MIN_SHIPPED_GAIN: f64 = 0.01;

/// Each level's outcome: (level, held-out gain, whether it ships), after training the global
/// model and then one per segment on a generated history of `segments`.
fn segment_outcomes(segments: Segments, entities: usize, seed: u64) -> Vec<(String, f64, bool)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities,
        seed,
        segments,
        ..GeneratorParams::default()
    }
    .generate(dir.path())
    .expect("generate");
    let prepared = prepare(&generated.spec_path, None).expect("prepare");
    let settings = RunSettings {
        mode: ValidationMode::Auto,
        folds: 5,
        choice: FamilyChoice::Only(training::evaluate::ModelFamily::Gbdt),
        family_params: FamilyParams::default(),
        seed: 42,
        holdout: training::split::HoldoutShare::default(),
    };
    let (plan, _) = validation_plan(&prepared, settings.mode, 5, settings.seed).expect("plan");
    let evaluations = evaluate_families(
        &prepared,
        &plan,
        settings.choice,
        &settings.family_params,
        settings.seed,
        |_| {},
    )
    .expect("global model");
    let global = &evaluations[choose_family(&evaluations).expect("a family")];
    let params = SegmentParams {
        field: "segment".into(),
        ..SegmentParams::default()
    };
    let name = ModelName::new("propensity").expect("name");
    let runs =
        train_segments(&prepared, global, &name, &params, &settings, |_| {}).expect("segments");
    runs.into_iter()
        .map(|run| match run.outcome {
            SegmentOutcome::Compared {
                comparison,
                ships,
                model,
                why,
            } => {
                eprintln!("{segments:?} {}: {why}", run.level.level);
                assert_eq!(ships, model.is_some());
                (run.level.level, comparison.gain, ships)
            }
            SegmentOutcome::Skipped(why) => panic!("{}: skipped: {why}", run.level.level),
        })
        .collect()
}

#[test]
fn segment_models_ship_only_where_the_drivers_differ_and_then_beat_the_global_model() {
    // Enterprise and smb leads convert for different reasons: a model of each segment's own
    // leads ranks them better than the global model does.
    let differ = segment_outcomes(Segments::Differ, 40_000, 11);
    assert_eq!(differ.len(), 2, "{differ:?}");
    assert!(differ.iter().any(|(_, _, ships)| *ships), "{differ:?}");
    for (level, gain, ships) in &differ {
        if *ships {
            assert!(
                *gain >= MIN_SHIPPED_GAIN,
                "{level} shipped with a gain of {gain:.4}"
            );
        }
    }
    // The same history where the segment changes nothing: no segment model ships.
    let alike = segment_outcomes(Segments::Alike, 40_000, 11);
    assert_eq!(alike.len(), 2, "{alike:?}");
    assert!(
        alike.iter().all(|(_, _, ships)| !ships),
        "a segment whose drivers do not differ shipped: {alike:?}"
    );
}

#[test]
fn train_segment_by_writes_named_bundles_and_a_routing_table_a_server_takes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 20_000,
        seed: 5,
        segments: Segments::Differ,
        ..GeneratorParams::default()
    }
    .generate(&dir.path().join("data"))
    .expect("generate");
    let registry_dir = dir.path().join("registry");
    // Another route's table in the routing file is kept as it is.
    std::fs::create_dir_all(&registry_dir).expect("registry folder");
    let other = "# routing kept by hand\n[churn]\nfield = \"plan\"\nfallback = \"churn\"\nrules = [{ levels = [\"pro\"], model = \"churn-pro\" }]\n";
    std::fs::write(registry_dir.join(ROUTING_FILE), other).expect("write");
    // Every segment model with a positive gain ships (no noise margin), so that the run
    // writes a table on this small history; the margin is the other test's business.
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_leadscore-train"))
            .args(["train", "--family", "gbdt", "--segment-by", "segment"])
            .arg("--spec")
            .arg(&generated.spec_path)
            .arg("--registry")
            .arg(&registry_dir)
            .args(extra)
            .output()
            .expect("run leadscore-train")
    };
    let output = run(&["--segment-noise-multiple", "0", "--version", "v1"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("segments by segment (2 levels)"), "{said}");
    let shipped: Vec<&str> = said
        .lines()
        .filter_map(|l| l.split("ships as ").nth(1))
        .collect();
    assert!(!shipped.is_empty(), "no segment model shipped:\n{said}");

    let registry = Registry::new(&registry_dir);
    let mut expected = vec!["propensity".to_string()];
    expected.extend(shipped.iter().map(|s| s.to_string()));
    expected.sort();
    let models: Vec<String> = registry
        .models()
        .expect("models")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(models, expected, "{said}");
    for name in &shipped {
        let name = ModelName::new(name).expect("name");
        let bundle = registry.load(&name, "v1").expect("segment bundle");
        assert_eq!(bundle.manifest().name(), name);
        assert!(
            bundle.manifest().dataset.name.contains("[segment = "),
            "{}",
            bundle.manifest().dataset.name
        );
    }

    // The routing file: the hand-kept table, then this run's, which the server takes.
    let text = std::fs::read_to_string(registry_dir.join(ROUTING_FILE)).expect("routing file");
    assert!(text.starts_with(other.trim_end()), "{text}");
    let routing = RoutingFile::parse(&text).expect("parses");
    let route = routing.get("propensity").expect("the propensity route");
    assert_eq!(route.field(), "segment");
    assert_eq!(route.fallback().as_str(), "propensity");
    let mut routed: Vec<String> = route.models().map(ToString::to_string).collect();
    routed.sort();
    assert_eq!(routed, expected);

    if !common::ort_available() {
        return;
    }
    // Without the hand-kept table (its models are not here), a server on the registry
    // serves every model and applies the table.
    std::fs::write(
        registry_dir.join(ROUTING_FILE),
        text.replace(other.trim_end(), ""),
    )
    .expect("write");
    let keys = KeySet::new(
        &["client-key-for-tests-0001".into()],
        &["admin-key-for-tests-00001".into()],
    )
    .expect("keys");
    let state = AppState::new(Limits::default(), keys, "loading");
    let reloader = Arc::new(
        Reloader::new(Registry::new(&registry_dir), None, PoolConfig::default()).with_routing(
            RoutingSource {
                path: registry_dir.join(ROUTING_FILE),
                required: false,
            },
        ),
    );
    let report = reloader.reload_once(&state);
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(report.routing.as_deref(), Some("applied"), "{report:?}");
    assert_eq!(report.serving.len(), expected.len(), "{report:?}");

    // A second run with a margin nobody clears ships no segment model: its table goes, the
    // bundles of the first run stay.
    let output = run(&["--min-segment-gain", "0.9", "--version", "v2"]);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{said}");
    assert!(said.contains("no segment model shipped"), "{said}");
    let text = std::fs::read_to_string(registry_dir.join(ROUTING_FILE)).expect("routing file");
    assert!(!text.contains("[propensity]"), "{text}");
    let _: &Path = dir.path();
}
