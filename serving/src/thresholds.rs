//! The thresholds file sales ops edit: per task, the sales-ready cut-off and the A–D grade
//! bands on the calibrated probability, overriding the bundle's defaults.
//!
//! ```toml
//! [propensity]
//! sales_ready = 0.35        # leads from this probability up go to sales
//! grades = { a = 0.5, b = 0.3, c = 0.1 }
//!
//! [churn]
//! grades = { a = 0.6, b = 0.4, c = 0.2 }   # sales_ready stays the bundle's
//! ```
//!
//! Either key of a task may be left out (the bundle's value stays); a task left out keeps
//! the bundle's thresholds. The server re-reads the file when it changes; a file that does
//! not parse or check is refused with a logged error and the previous one stays in force.

use std::path::Path;

use features::spec::Task;
use models::bundle::{GradeBands, Thresholds};
use serde::Deserialize;

/// The parsed thresholds file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    #[serde(default)]
    pub propensity: Option<ThresholdOverride>,
    #[serde(default)]
    pub churn: Option<ThresholdOverride>,
}

/// One task's overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverride {
    #[serde(default)]
    pub sales_ready: Option<f64>,
    #[serde(default)]
    pub grades: Option<GradeBands>,
}

/// Why a thresholds file was refused.
#[derive(Debug, thiserror::Error)]
#[error("thresholds file {path}: {message}")]
pub struct ThresholdsError {
    pub path: String,
    pub message: String,
}

impl ThresholdsFile {
    /// Reads and checks `path`. Every override must make valid thresholds with any bundle
    /// (each value strictly between 0 and 1, `a > b > c`); the sales-ready cut-off is
    /// checked on its own.
    pub fn read(path: &Path) -> Result<Self, ThresholdsError> {
        let error = |message: String| ThresholdsError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Self::parse(&text).map_err(error)
    }

    /// Parses and checks the TOML text of a thresholds file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ThresholdsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (task, over) in file.overrides() {
            // Checked against a neutral base: the grades as given, the sales-ready cut-off
            // on its own.
            let probe = Thresholds {
                sales_ready: over.sales_ready.unwrap_or(0.5),
                grades: over.grades.clone().unwrap_or(GradeBands {
                    a: 0.75,
                    b: 0.5,
                    c: 0.25,
                }),
            };
            probe
                .check()
                .map_err(|e| format!("[{}]: {e}", task.as_str()))?;
        }
        Ok(file)
    }

    fn overrides(&self) -> impl Iterator<Item = (Task, &ThresholdOverride)> {
        [Task::Propensity, Task::Churn]
            .into_iter()
            .filter_map(|task| self.get(task).map(|o| (task, o)))
    }

    /// The override for `task`, if any.
    pub fn get(&self, task: Task) -> Option<&ThresholdOverride> {
        match task {
            Task::Propensity => self.propensity.as_ref(),
            Task::Churn => self.churn.as_ref(),
        }
    }

    /// The thresholds in force for `task`: the bundle's, with this file's overrides.
    pub fn apply(&self, task: Task, bundle: &Thresholds) -> Thresholds {
        let mut t = bundle.clone();
        if let Some(over) = self.get(task) {
            if let Some(s) = over.sales_ready {
                t.sales_ready = s;
            }
            if let Some(g) = &over.grades {
                t.grades = g.clone();
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Thresholds {
        Thresholds {
            sales_ready: 0.4,
            grades: GradeBands {
                a: 0.6,
                b: 0.3,
                c: 0.1,
            },
        }
    }

    #[test]
    fn overrides_replace_only_what_they_give() {
        let file = ThresholdsFile::parse(
            "[propensity]\nsales_ready = 0.25\n[churn]\ngrades = { a = 0.9, b = 0.5, c = 0.2 }\n",
        )
        .unwrap();
        let p = file.apply(Task::Propensity, &bundle());
        assert_eq!(p.sales_ready, 0.25);
        assert_eq!(p.grades, bundle().grades);
        let c = file.apply(Task::Churn, &bundle());
        assert_eq!(c.sales_ready, 0.4);
        assert_eq!(c.grades.a, 0.9);
        assert_eq!(
            ThresholdsFile::default().apply(Task::Churn, &bundle()),
            bundle()
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = ThresholdsFile::parse("[propensity]\nsales_ready = 1.5\n").unwrap_err();
        assert!(
            err.contains("[propensity]") && err.contains("sales_ready is 1.5"),
            "{err}"
        );
        let err =
            ThresholdsFile::parse("[churn]\ngrades = { a = 0.2, b = 0.5, c = 0.1 }\n").unwrap_err();
        assert!(err.contains("a > b > c"), "{err}");
        let err = ThresholdsFile::parse("[propensty]\nsales_ready = 0.5\n").unwrap_err();
        assert!(err.contains("unknown field `propensty`"), "{err}");
        let err = ThresholdsFile::parse("[propensity]\nsales_ready = \"high\"\n").unwrap_err();
        assert!(err.contains("sales_ready"), "{err}");
    }
}
