//! A feature table built elsewhere, read back to train from: the folder the Python package's
//! Spark build writes (`leadscore.spark`), `leadscore-train train --prepared <dir>`.
//!
//! The folder holds [`SPEC_FILE`] (the dataset spec: task, label, feature options),
//! [`MANIFEST_FILE`] ([`PreparedManifest`]: the fitted plan, the cutoffs, the plan's inputs
//! with every level's count, entity and event counts, the loader's warnings),
//! [`FEATURES_DIR`] (Parquet part files: `entity_id`, `cutoff`, `label`, then one `Float32`
//! column per feature in the plan's order) and [`PROFILES_DIR`] (Parquet part files:
//! `entity_id`, `field`, `value`, each entity's categorical profile values).
//!
//! **Architecture Invariant:** the rows are put in one order whatever the part files' order,
//! by entity id then cutoff (the generator writes its entities in id order, so a table built
//! from its files trains the same model as the files themselves).
//!
//! Memory: the part files are read one at a time: first their ids and cutoffs only, to order
//! the rows, then each part's features, copied into the table; the table must fit in memory
//! (4 bytes per value) with the fit's own needs, nothing is streamed while fitting. When it
//! does not, [`EntitySample`] keeps a share of the entities (all the rows of each kept
//! entity, chosen by a hash of its id and the seed) as the parts are read.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use features::builder::{Cutoffs, FeatureTable};
use features::load::ENTITY_ID;
use features::plan::{PlanInputs, ProfileFeatureKind};
use features::{DatasetSpec, FeaturePlan, FeaturePlanParams};
use models::bundle::{DataFingerprint, fingerprint_files};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::pipeline::{Prepared, Source, TableSource};

pub const SPEC_FILE: &str = "spec.toml";
pub const MANIFEST_FILE: &str = "prepared.json";
pub const FEATURES_DIR: &str = "features";
pub const PROFILES_DIR: &str = "profiles";
/// The version of the folder's layout this reader reads.
pub const FORMAT: u32 = 1;

/// [`MANIFEST_FILE`]'s content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedManifest {
    pub format: u32,
    pub plan: FeaturePlan,
    pub cutoffs: Cutoffs,
    pub inputs: PlanInputs,
    pub entities: u64,
    pub events: u64,
    pub warnings: Vec<String>,
}

/// A share of the entities to keep, chosen by a hash of the id and `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntitySample {
    /// In (0, 1].
    pub share: f64,
    pub seed: u64,
}

impl EntitySample {
    /// Checks the share.
    pub fn check(&self) -> Result<(), TrainError> {
        if self.share > 0.0 && self.share <= 1.0 {
            Ok(())
        } else {
            Err(TrainError::Data(format!(
                "--sample-entities must be above 0 and at most 1, got {}",
                self.share
            )))
        }
    }

    /// Whether the entity `id` is kept: FNV-1a of the seed and the id, mixed by SplitMix64's
    /// finaliser (FNV alone leaves ids that differ in their last digits close in the high
    /// bits), as a share of 2^64.
    pub fn keeps(&self, id: &str) -> bool {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.seed.to_le_bytes().iter().chain(id.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        (hash as f64) < self.share * 2f64.powi(64)
    }
}

fn data_error(path: &Path, message: impl std::fmt::Display) -> TrainError {
    TrainError::Data(format!("{}: {message}", path.display()))
}

/// The Parquet part files of `dir`, in name order (Spark's `_SUCCESS` and checksums aside).
fn part_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|e| data_error(dir, e))?;
    let mut parts = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| data_error(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_') {
            parts.push(path);
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(data_error(dir, "no Parquet part files"));
    }
    Ok(parts)
}

fn read_part(path: &Path, columns: Option<Vec<String>>) -> Result<DataFrame, TrainError> {
    let file = File::open(path).map_err(|e| data_error(path, e))?;
    ParquetReader::new(file)
        .with_columns(columns)
        .finish()
        .map_err(|e| data_error(path, e))
}

fn text_column<'a>(
    frame: &'a DataFrame,
    path: &Path,
    name: &str,
) -> Result<&'a StringChunked, TrainError> {
    frame
        .column(name)
        .and_then(|c| c.str())
        .map_err(|e| data_error(path, format!("column `{name}`: {e}")))
}

/// Size and SHA-256 of the folder's files a model is trained from (its manifest, spec and
/// part files), paths relative to `dir`: the bundle's data fingerprint.
pub fn fingerprint(dir: &Path) -> Result<DataFingerprint, TrainError> {
    let mut paths = vec![PathBuf::from(MANIFEST_FILE), PathBuf::from(SPEC_FILE)];
    for sub in [FEATURES_DIR, PROFILES_DIR] {
        for part in part_files(&dir.join(sub))? {
            if let Some(name) = part.file_name() {
                paths.push(Path::new(sub).join(name));
            }
        }
    }
    Ok(fingerprint_files(dir, &paths)?)
}

/// Reads the prepared table in `dir`, keeping the entities `sample` keeps (all without).
pub fn read_prepared(dir: &Path, sample: Option<&EntitySample>) -> Result<Prepared, TrainError> {
    if let Some(sample) = sample {
        sample.check()?;
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(|e| data_error(&manifest_path, e))?;
    let manifest: PreparedManifest =
        serde_json::from_slice(&text).map_err(|e| data_error(&manifest_path, e))?;
    if manifest.format != FORMAT {
        return Err(data_error(
            &manifest_path,
            format!("format {} (this reader reads {FORMAT})", manifest.format),
        ));
    }
    let spec = DatasetSpec::from_file(&dir.join(SPEC_FILE))?;
    let refitted = FeaturePlanParams::new(spec.features.clone()).fit(&manifest.inputs)?;
    let as_json = |plan: &FeaturePlan| serde_json::to_value(plan).unwrap_or_default();
    if as_json(&refitted) != as_json(&manifest.plan) {
        return Err(data_error(
            &manifest_path,
            format!(
                "the plan is not the one its inputs give with {SPEC_FILE}'s [features]: \
                 the table was built with another spec"
            ),
        ));
    }
    let plan = manifest.plan;
    let names = plan.feature_names().to_vec();
    let n_features = names.len();

    // Pass 1: every part's ids and cutoffs, ordered.
    let parts = part_files(&dir.join(FEATURES_DIR))?;
    let mut keys: Vec<(String, i64, usize, usize)> = Vec::new();
    for (p, path) in parts.iter().enumerate() {
        let frame = read_part(path, Some(vec![ENTITY_ID.into(), "cutoff".into()]))?;
        let ids = text_column(&frame, path, ENTITY_ID)?;
        let cutoffs = frame
            .column("cutoff")
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(|e| data_error(path, format!("column `cutoff`: {e}")))?;
        let cutoffs = cutoffs.i64().map_err(|e| data_error(path, e))?;
        for (row, (id, cutoff)) in ids.iter().zip(cutoffs.iter()).enumerate() {
            let (Some(id), Some(cutoff)) = (id, cutoff) else {
                return Err(data_error(
                    path,
                    format!("row {row}: missing entity_id or cutoff"),
                ));
            };
            if sample.is_none_or(|s| s.keeps(id)) {
                keys.push((id.to_string(), cutoff, p, row));
            }
        }
    }
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    if let Some(pair) = keys
        .windows(2)
        .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
    {
        return Err(data_error(
            &parts[pair[1].2],
            format!(
                "entity {} has two rows at cutoff {} (also in {})",
                pair[1].0,
                pair[1].1,
                parts[pair[0].2].display()
            ),
        ));
    }
    let n_rows = keys.len();
    if n_rows == 0 {
        return Err(data_error(
            &dir.join(FEATURES_DIR),
            "no rows (after sampling)",
        ));
    }
    // Where each (part, row) goes.
    let mut destination: Vec<Vec<usize>> = parts.iter().map(|_| Vec::new()).collect();
    for (d, &(_, _, p, row)) in keys.iter().enumerate() {
        let rows = &mut destination[p];
        if rows.len() <= row {
            rows.resize(row + 1, usize::MAX);
        }
        rows[row] = d;
    }

    // Pass 2: each part's labels and features into place.
    let mut values = vec![0f32; n_rows * n_features];
    let mut labels = vec![0u8; n_rows];
    for (p, path) in parts.iter().enumerate() {
        if destination[p].iter().all(|d| *d == usize::MAX) {
            continue;
        }
        let frame = read_part(path, None)?;
        let columns: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        let expected: Vec<&str> = [ENTITY_ID, "cutoff", "label"]
            .into_iter()
            .chain(names.iter().map(String::as_str))
            .collect();
        if columns != expected {
            let at = columns
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(columns.len().min(expected.len()));
            return Err(data_error(
                path,
                format!(
                    "column {at} is {:?}, the plan's table has {:?} there ({} columns, {} expected)",
                    columns.get(at),
                    expected.get(at),
                    columns.len(),
                    expected.len()
                ),
            ));
        }
        let rows = &destination[p];
        let label = frame
            .column("label")
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(|e| data_error(path, format!("column `label`: {e}")))?;
        for (row, l) in label
            .i64()
            .map_err(|e| data_error(path, e))?
            .iter()
            .enumerate()
        {
            let Some(&d) = rows.get(row).filter(|d| **d != usize::MAX) else {
                continue;
            };
            labels[d] = match l {
                Some(0) => 0,
                Some(1) => 1,
                other => {
                    return Err(data_error(
                        path,
                        format!("row {row}, column `label`: {other:?} is not 0 or 1"),
                    ));
                }
            };
        }
        for (j, name) in names.iter().enumerate() {
            let column = frame
                .column(name)
                .and_then(|c| c.f32().cloned())
                .map_err(|e| data_error(path, format!("column `{name}`: {e}")))?;
            for (row, x) in column.iter().enumerate() {
                if let Some(&d) = rows.get(row).filter(|d| **d != usize::MAX) {
                    values[d * n_features + j] = x.unwrap_or(f32::NAN);
                }
            }
        }
    }
    let entity_ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let cutoffs_ms = keys.iter().map(|k| k.1).collect();
    drop(keys);
    let kept_entities = {
        let mut distinct = entity_ids.clone();
        distinct.dedup();
        distinct.len()
    };

    let profile_fields: Vec<String> = plan
        .profile_fields()
        .iter()
        .filter(|f| matches!(f.kind, ProfileFeatureKind::Categorical { .. }))
        .map(|f| f.name.clone())
        .collect();
    let profiles = read_profiles(&dir.join(PROFILES_DIR), &profile_fields, &entity_ids)?;
    let table = FeatureTable {
        feature_names: names,
        entity_ids,
        cutoffs_ms,
        labels,
        values,
    };
    Ok(Prepared {
        spec,
        source: Source::Table(TableSource {
            dir: dir.to_path_buf(),
            entities: if sample.is_some() {
                kept_entities
            } else {
                manifest.entities as usize
            },
            events: manifest.events as usize,
            warnings: manifest.warnings,
            profile_fields,
            profiles,
        }),
        plan,
        profile_inputs: manifest.inputs.profile,
        cutoffs: manifest.cutoffs,
        table,
    })
}

/// Each entity of `entity_ids` (sorted) with its values of `fields` ("" when it has none).
fn read_profiles(
    dir: &Path,
    fields: &[String],
    entity_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, TrainError> {
    let mut profiles: HashMap<String, Vec<String>> = HashMap::new();
    let position: HashMap<&str, usize> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    for path in part_files(dir)? {
        let frame = read_part(&path, None)?;
        let ids = text_column(&frame, &path, ENTITY_ID)?;
        let field = text_column(&frame, &path, "field")?;
        let value = text_column(&frame, &path, "value")?;
        for ((id, field), value) in ids.iter().zip(field.iter()).zip(value.iter()) {
            let (Some(id), Some(field), Some(value)) = (id, field, value) else {
                continue;
            };
            let (Some(&i), Ok(_)) = (
                position.get(field),
                entity_ids.binary_search_by(|e| e.as_str().cmp(id)),
            ) else {
                continue;
            };
            profiles
                .entry(id.to_string())
                .or_insert_with(|| vec![String::new(); fields.len()])[i] = value.to_string();
        }
    }
    Ok(profiles)
}
