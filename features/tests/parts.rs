//! A feature table built in parts (the Spark build's steps, without Spark) equals the table
//! of one build of the whole history: the merged summaries give the whole's plan inputs and
//! cutoffs, and the parts' rows are the whole's rows, bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use features::DatasetSpec;
use features::builder::{FeatureTable, build_features, fit_plan, plan_inputs, resolve_cutoffs};
use features::load::load_dataset;
use features::parts::{
    aggregate, load_part, merge_summaries, part_summary, plan_kinds, section_ids,
};
use features::plan::FeaturePlanParams;
use features::spec::ColumnKind;
use features::synthetic::{GeneratorParams, SyntheticKind};
use polars::prelude::*;

fn read_parquet(path: &Path) -> DataFrame {
    let file = fs::File::open(path).expect("open parquet");
    ParquetReader::new(file).finish().expect("read parquet")
}

fn write_parquet(path: &Path, mut frame: DataFrame) {
    let file = fs::File::create(path).expect("create parquet");
    ParquetWriter::new(file)
        .finish(&mut frame)
        .expect("write parquet");
}

/// Splits the spec's files into `n` parts by entity (the i-th entity of the entities file
/// to part `i % n`), each part's files in its own folder as `<section>.parquet`.
fn split(spec: &DatasetSpec, n: usize, root: &Path) -> Vec<BTreeMap<String, PathBuf>> {
    let sections = section_ids(spec).expect("event form");
    let entities_path = spec.resolve(spec.entities.as_ref().unwrap().path.as_ref().unwrap());
    let entities = read_parquet(&entities_path);
    let id_column = &sections[0].1;
    let ids = entities.column(id_column).unwrap().str().unwrap();
    let part_of: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.unwrap().to_string(), i % n))
        .collect();
    let paths: HashMap<&str, PathBuf> = [
        ("entities", entities_path.clone()),
        ("events", spec.resolve(&spec.events.as_ref().unwrap().path)),
        (
            "outcomes",
            spec.resolve(&spec.outcomes.as_ref().unwrap().path),
        ),
    ]
    .into_iter()
    .collect();
    (0..n)
        .map(|part| {
            let dir = root.join(format!("part-{part}"));
            fs::create_dir_all(&dir).unwrap();
            let files: BTreeMap<String, PathBuf> = sections
                .iter()
                .map(|(section, _)| (section.to_string(), dir.join(format!("{section}.parquet"))))
                .collect();
            for (section, id_column) in &sections {
                let frame = read_parquet(&paths[section]);
                let ids = frame.column(id_column).unwrap().str().unwrap();
                let mask: BooleanChunked = ids
                    .iter()
                    .map(|id| Some(part_of[id.unwrap()] == part))
                    .collect();
                write_parquet(&files[*section], frame.filter(&mask).unwrap());
            }
            files
        })
        .collect()
}

/// The rows of `tables`, ordered by entity id then cutoff: (id, cutoff, label, bits).
fn rows_by_entity(tables: &[FeatureTable]) -> Vec<(String, i64, u8, Vec<u32>)> {
    let mut rows: Vec<_> = tables
        .iter()
        .flat_map(|t| {
            (0..t.n_rows()).map(move |i| {
                (
                    t.entity_ids[i].clone(),
                    t.cutoffs_ms[i],
                    t.labels[i],
                    t.row(i).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                )
            })
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    rows
}

#[test]
fn three_parts_of_a_generator_history_build_the_whole_table_bit_for_bit() {
    for (kind, entities, seed) in [
        (SyntheticKind::Leads, 1_500, 21),
        (SyntheticKind::Customers, 600, 22),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let generated = GeneratorParams {
            kind,
            entities,
            seed,
            ..GeneratorParams::default()
        }
        .generate(&dir.path().join("whole"))
        .expect("generator runs");
        let spec = DatasetSpec::from_file(&generated.spec_path).unwrap();
        let whole = load_dataset(&spec).unwrap();
        let whole_plan = fit_plan(&whole, None).unwrap();
        let whole_cutoffs = resolve_cutoffs(&whole).unwrap();
        let whole_table = build_features(&whole, &whole_plan, &whole_cutoffs).unwrap();

        let parts = split(&spec, 3, &dir.path().join("parts"));
        let no_kinds = BTreeMap::new();
        let summaries = parts.iter().flat_map(|files| {
            let part = load_part(&spec, files, &no_kinds).expect("part loads");
            part_summary(&part, files).expect("part summary")
        });
        let merged = merge_summaries(&spec, &aggregate(summaries)).expect("merge");
        assert!(merged.recount_as_categorical.is_empty());
        let mut whole_inputs = plan_inputs(&whole, None).unwrap();
        // The loader lists channels as met; the merge, and the plan, sorted.
        whole_inputs.channels.sort();
        assert_eq!(merged.inputs, whole_inputs);
        assert_eq!(merged.entities as usize, whole.entities.height());
        assert_eq!(
            merged.events as usize,
            whole.events.as_ref().unwrap().height()
        );
        let cutoffs = merged.cutoffs(&spec).unwrap();
        assert_eq!(cutoffs, whole_cutoffs);
        let plan = FeaturePlanParams::new(spec.features.clone())
            .fit(&merged.inputs)
            .unwrap();
        assert_eq!(
            serde_json::to_string(&plan).unwrap(),
            serde_json::to_string(&whole_plan).unwrap()
        );

        let kinds = plan_kinds(&plan);
        let tables: Vec<FeatureTable> = parts
            .iter()
            .map(|files| {
                let part = load_part(&spec, files, &kinds).unwrap();
                build_features(&part, &plan, &cutoffs).unwrap()
            })
            .collect();
        assert!(tables.iter().all(|t| t.n_rows() > 0));
        let from_parts = rows_by_entity(&tables);
        assert_eq!(from_parts.len(), whole_table.n_rows());
        assert!(
            from_parts == rows_by_entity(std::slice::from_ref(&whole_table)),
            "{kind:?}: the parts' rows differ from the whole's"
        );
    }
}

const UNDECLARED_SPEC: &str = r#"
name = "undeclared"
task = "propensity"

[entities]
path = "entities.csv"
id = "id"
created_at = "created"

[events]
path = "events.csv"
entity_id = "id"
timestamp = "ts"
event_type = "type"

[outcomes]
path = "outcomes.csv"
entity_id = "id"
timestamp = "at"

[label]
horizon_days = 10
cutoffs = { dates = ["2024-02-01"] }
"#;

#[test]
fn a_column_of_numbers_in_one_part_and_words_in_another_is_recounted_as_categorical() {
    let dir = tempfile::tempdir().unwrap();
    let write = |folder: &str, files: &[(&str, &str)]| {
        let path = dir.path().join(folder);
        fs::create_dir_all(&path).unwrap();
        for (name, text) in files {
            fs::write(path.join(name), text).unwrap();
        }
        path
    };
    let header = "id,created,size,score\n";
    let (a, b) = (
        "A,2024-01-01,12,0.5\nB,2024-01-02,40,-\n",
        "C,2024-01-03,big,2\nD,2024-01-04,12,\n",
    );
    let events = |ids: &[&str]| {
        let mut text = String::from("id,ts,type\n");
        for id in ids {
            text.push_str(&format!("{id},2024-01-05,visit\n"));
        }
        text
    };
    let outcomes = |ids: &[&str]| {
        let mut text = String::from("id,at\n");
        for id in ids.iter().filter(|id| **id == "A" || **id == "C") {
            text.push_str(&format!("{id},2024-02-05\n"));
        }
        text
    };
    let whole_dir = write(
        "whole",
        &[
            ("entities.csv", &format!("{header}{a}{b}")),
            ("events.csv", &events(&["A", "B", "C", "D"])),
            ("outcomes.csv", &outcomes(&["A", "B", "C", "D"])),
        ],
    );
    let spec = DatasetSpec::from_toml(UNDECLARED_SPEC, Path::new("spec.toml"), whole_dir).unwrap();
    let whole = load_dataset(&spec).unwrap();
    let mut parts = Vec::new();
    for (name, rows, ids) in [("a", a, ["A", "B"]), ("b", b, ["C", "D"])] {
        let folder = write(
            name,
            &[
                ("entities.csv", &format!("{header}{rows}")),
                ("events.csv", &events(&ids)),
                ("outcomes.csv", &outcomes(&ids)),
            ],
        );
        let files: BTreeMap<String, PathBuf> = ["entities", "events", "outcomes"]
            .iter()
            .map(|s| (s.to_string(), folder.join(format!("{s}.csv"))))
            .collect();
        parts.push(files);
    }
    let merge = |kinds: &BTreeMap<String, ColumnKind>| {
        let rows = parts.iter().flat_map(|files| {
            part_summary(&load_part(&spec, files, kinds).unwrap(), files).unwrap()
        });
        merge_summaries(&spec, &aggregate(rows)).unwrap()
    };
    let first = merge(&BTreeMap::new());
    // Part a reads `size` as numbers; the whole, with `big`, as categorical.
    assert_eq!(first.recount_as_categorical, ["size"]);
    let recount: BTreeMap<String, ColumnKind> = first
        .recount_as_categorical
        .iter()
        .map(|c| (c.clone(), ColumnKind::Categorical))
        .collect();
    let second = merge(&recount);
    assert!(second.recount_as_categorical.is_empty());
    assert_eq!(second.inputs, plan_inputs(&whole, None).unwrap());
    let size = &second.inputs.profile[0];
    assert_eq!(size.kind, ColumnKind::Categorical);
    assert_eq!(size.level_counts.get("12"), Some(&2));
    // `score`: numbers and a blank-like `-` in both: numeric, with the loader's warning.
    assert_eq!(second.inputs.profile[1].kind, ColumnKind::Numeric);
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(
        second.warnings[0].contains("a part of the `entities` data, column `score`"),
        "{:?}",
        second.warnings
    );
}
