//! The generator's ground truth (`truth.parquet`): the true probability of every
//! (entity, cutoff) row, so that a model's ROC AUC can be put beside the best achievable.

use std::collections::HashMap;
use std::path::Path;

use features::builder::FeatureTable;
use polars::prelude::*;

use crate::error::TrainError;

/// True probability by (entity id, cutoff ms).
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    probability: HashMap<(String, i64), f64>,
}

impl GroundTruth {
    /// Reads a generator's `truth.parquet`: the entity id first, then `cutoff` (datetime),
    /// `true_probability` and `label`.
    pub fn read(path: &Path) -> Result<GroundTruth, TrainError> {
        let fail = |message: String| TrainError::Data(format!("{}: {message}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let frame = ParquetReader::new(file)
            .finish()
            .map_err(|e| fail(e.to_string()))?;
        let id_column = frame
            .get_column_names()
            .first()
            .map(|name| name.to_string())
            .ok_or_else(|| fail("no columns".into()))?;
        let frame = frame
            .lazy()
            .select([
                col(id_column.as_str()).cast(DataType::String),
                col("cutoff").cast(DataType::Int64),
                col("true_probability").cast(DataType::Float64),
            ])
            .collect()
            .map_err(|e| fail(e.to_string()))?;
        let column = |name: &str| frame.column(name).map_err(|e| fail(e.to_string()));
        let ids = column(&id_column)?
            .str()
            .map_err(|e| fail(e.to_string()))?
            .clone();
        let cutoffs = column("cutoff")?
            .i64()
            .map_err(|e| fail(e.to_string()))?
            .clone();
        let probabilities = column("true_probability")?
            .f64()
            .map_err(|e| fail(e.to_string()))?
            .clone();
        let mut probability = HashMap::with_capacity(frame.height());
        for ((id, cutoff), p) in ids.iter().zip(cutoffs.iter()).zip(probabilities.iter()) {
            if let (Some(id), Some(cutoff), Some(p)) = (id, cutoff, p) {
                probability.insert((id.to_string(), cutoff), p);
            }
        }
        Ok(GroundTruth { probability })
    }

    /// The true probability of each of `rows`, or an error naming the first row the truth
    /// does not cover.
    pub fn probabilities(
        &self,
        table: &FeatureTable,
        rows: &[usize],
    ) -> Result<Vec<f64>, TrainError> {
        rows.iter()
            .map(|&row| {
                let key = (table.entity_ids[row].clone(), table.cutoffs_ms[row]);
                self.probability.get(&key).copied().ok_or_else(|| {
                    TrainError::Data(format!(
                        "the ground truth has no row for entity {:?} at cutoff {} ms",
                        key.0, key.1
                    ))
                })
            })
            .collect()
    }
}
