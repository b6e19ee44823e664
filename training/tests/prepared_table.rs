//! `train --prepared`'s reader on a folder written here the way the Spark build writes it
//! (part files by entity, in no particular order): the rows come back as `prepare` builds
//! them from the files, bit for bit; a sample keeps whole entities; a part that is not the
//! plan's table is refused naming the file and the column.

use std::path::Path;

use features::builder::{FeatureTable, plan_inputs};
use features::spec::ColumnKind;
use features::synthetic::{GeneratorParams, SyntheticKind};
use polars::prelude::*;
use training::pipeline::{Prepared, prepare};
use training::prepared_table::{
    EntitySample, FEATURES_DIR, FORMAT, MANIFEST_FILE, PROFILES_DIR, PreparedManifest, SPEC_FILE,
    read_prepared,
};

fn generated(dir: &Path) -> (std::path::PathBuf, Prepared) {
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 900,
        seed: 31,
        ..GeneratorParams::default()
    }
    .generate(dir)
    .expect("generate");
    let prepared = prepare(&generated.spec_path, None).expect("prepare");
    (generated.spec_path, prepared)
}

/// Writes `prepared` as a prepared folder in `out`: three part files, entities dealt to
/// them by position (the third part first in name order), rows within a part backwards.
fn write_folder(spec_path: &Path, prepared: &Prepared, out: &Path) {
    std::fs::create_dir_all(out.join(FEATURES_DIR)).unwrap();
    std::fs::create_dir_all(out.join(PROFILES_DIR)).unwrap();
    std::fs::copy(spec_path, out.join(SPEC_FILE)).unwrap();
    let data = prepared.data("the test").unwrap();
    let manifest = PreparedManifest {
        format: FORMAT,
        plan: prepared.plan.clone(),
        cutoffs: prepared.cutoffs.clone(),
        inputs: plan_inputs(data, None).unwrap(),
        entities: data.entities.height() as u64,
        events: data.events.as_ref().map_or(0, |e| e.height()) as u64,
        warnings: Vec::new(),
    };
    std::fs::write(
        out.join(MANIFEST_FILE),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let table = &prepared.table;
    let mut entity_order: Vec<&str> = table.entity_ids.iter().map(String::as_str).collect();
    entity_order.dedup();
    for part in 0..3 {
        let rows: Vec<usize> = (0..table.n_rows())
            .rev()
            .filter(|&i| {
                let position = entity_order
                    .iter()
                    .position(|id| *id == table.entity_ids[i])
                    .unwrap();
                position % 3 == part
            })
            .collect();
        let subset = FeatureTable {
            feature_names: table.feature_names.clone(),
            entity_ids: rows.iter().map(|&i| table.entity_ids[i].clone()).collect(),
            cutoffs_ms: rows.iter().map(|&i| table.cutoffs_ms[i]).collect(),
            labels: rows.iter().map(|&i| table.labels[i]).collect(),
            values: rows.iter().flat_map(|&i| table.row(i).to_vec()).collect(),
        };
        subset
            .write_parquet(
                &out.join(FEATURES_DIR)
                    .join(format!("part-{}.parquet", 2 - part)),
            )
            .unwrap();
    }
    let (mut ids, mut fields, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let entity_ids = data.entities.column("entity_id").unwrap().str().unwrap();
    for column in data
        .profile_columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Categorical)
    {
        let levels = data.entities.column(&column.name).unwrap().str().unwrap();
        for (id, level) in entity_ids.iter().zip(levels.iter()) {
            if let (Some(id), Some(level)) = (id, level) {
                ids.push(id.to_string());
                fields.push(column.name.clone());
                values.push(level.to_string());
            }
        }
    }
    let mut frame = DataFrame::new(
        ids.len(),
        vec![
            Column::new("entity_id".into(), ids),
            Column::new("field".into(), fields),
            Column::new("value".into(), values),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(out.join(PROFILES_DIR).join("part-0.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut frame).unwrap();
}

fn bits(table: &FeatureTable) -> Vec<u32> {
    table.values.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_prepared_folder_reads_back_as_the_files_prepare_and_a_sample_keeps_whole_entities() {
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, from_files) = generated(&dir.path().join("data"));
    let folder = dir.path().join("prepared");
    write_folder(&spec_path, &from_files, &folder);

    let read = read_prepared(&folder, None).expect("the folder reads");
    // The generator writes entities in id order, so the files' order is the reader's.
    assert_eq!(read.table.entity_ids, from_files.table.entity_ids);
    assert_eq!(read.table.cutoffs_ms, from_files.table.cutoffs_ms);
    assert_eq!(read.table.labels, from_files.table.labels);
    assert_eq!(read.table.feature_names, from_files.table.feature_names);
    assert!(bits(&read.table) == bits(&from_files.table));
    assert_eq!(read.profile_inputs, from_files.profile_inputs);
    assert_eq!(read.cutoffs, from_files.cutoffs);
    assert_eq!(read.entity_count(), from_files.entity_count());
    assert!(read.data("a segment model").is_err());

    let sample = EntitySample {
        share: 0.5,
        seed: 3,
    };
    let sampled = read_prepared(&folder, Some(&sample)).expect("a sample reads");
    let rows_of = |table: &FeatureTable, id: &str| {
        table.entity_ids.iter().filter(|e| e.as_str() == id).count()
    };
    let kept = sampled.entity_count();
    assert!(
        (350..=550).contains(&kept),
        "{kept} of 900 entities kept at a 0.5 share"
    );
    let mut ids = sampled.table.entity_ids.clone();
    ids.dedup();
    assert_eq!(ids.len(), kept);
    for id in &ids {
        assert!(sample.keeps(id));
        assert_eq!(
            rows_of(&sampled.table, id),
            rows_of(&from_files.table, id),
            "{id}"
        );
    }
    assert!(
        read_prepared(
            &folder,
            Some(&EntitySample {
                share: 0.0,
                seed: 3
            })
        )
        .is_err()
    );
}

#[test]
fn a_part_that_is_not_the_plans_table_is_refused_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (spec_path, from_files) = generated(&dir.path().join("data"));
    let folder = dir.path().join("prepared");
    write_folder(&spec_path, &from_files, &folder);
    let part = folder.join(FEATURES_DIR).join("part-1.parquet");
    let file = std::fs::File::open(&part).unwrap();
    let mut frame = ParquetReader::new(file).finish().unwrap();
    let renamed = from_files.table.feature_names[4].clone();
    frame.rename(&renamed, "something else".into()).unwrap();
    let file = std::fs::File::create(&part).unwrap();
    ParquetWriter::new(file).finish(&mut frame).unwrap();
    let error = match read_prepared(&folder, None) {
        Ok(_) => panic!("a renamed column is refused"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("part-1.parquet"), "{error}");
    assert!(
        error.contains("something else") && error.contains(&renamed),
        "{error}"
    );
}
