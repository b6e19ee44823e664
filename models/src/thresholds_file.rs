//! The thresholds file sales ops edit: per model, the sales-ready cut-off and the A–D grade
//! bands, by calibrated probability or by capacity (leads a week), overriding the bundle's
//! defaults. A section is named after the model (`[propensity]`, `[propensity-enterprise]`,
//! `[churn]`: a model trained without `--model` is named after its task).
//!
//! ```toml
//! [propensity]
//! sales_ready = 0.35        # leads from this probability up go to sales
//! grades = { a = 0.5, b = 0.3, c = 0.1 }
//!
//! [churn]
//! # by capacity: the account team can call 40 customers a week; grade A holds the 20 most
//! # at risk a week, B the next 60, C the next 120, D the rest
//! sales_ready_per_week = 40
//! grades_per_week = { a = 20, b = 60, c = 120 }
//! # volume_per_week = 900   # customers scored a week, when the bundle cannot tell
//! ```
//!
//! Any key of a model may be left out (the bundle's value stays); a model left out keeps the
//! bundle's thresholds. A section may name a model not served yet (it applies once one is);
//! [`ThresholdsFile::sections_not_in`] lists them, with the nearest served name, so that a
//! typo is reported. A capacity is turned into a probability cut-off on the served
//! bundle's held-out predictions ([`crate::capacity`]), again for each new bundle version:
//! the cut-off flags that many of the leads arriving a week (the bundle's `holdout.csv`
//! tells how many arrive, or `volume_per_week` does). The server re-reads the file when it
//! changes; a file that does not parse or check is refused with a logged error and the
//! previous one stays in force.

use std::path::Path;

use std::collections::BTreeMap;

use crate::bundle::{GradeBands, ModelName, Thresholds};
use crate::capacity::HeldOutScores;
use serde::Deserialize;

/// The parsed thresholds file: a section per model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ThresholdsFile {
    pub models: BTreeMap<ModelName, ThresholdOverride>,
}

/// One model's overrides: each cut-off by probability or by capacity, not both.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverride {
    #[serde(default)]
    pub sales_ready: Option<f64>,
    #[serde(default)]
    pub grades: Option<GradeBands>,
    /// Sales-ready: the cut-off that flags this many leads a week.
    #[serde(default)]
    pub sales_ready_per_week: Option<f64>,
    /// Leads a week in grades A, B and C (D is the rest).
    #[serde(default)]
    pub grades_per_week: Option<BandsPerWeek>,
    /// Leads scored a week, for bundles whose held-out rows have no dates (tabular data).
    #[serde(default)]
    pub volume_per_week: Option<f64>,
}

/// Leads a week in each of grades A, B and C.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandsPerWeek {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl ThresholdOverride {
    fn by_capacity(&self) -> bool {
        self.sales_ready_per_week.is_some() || self.grades_per_week.is_some()
    }

    /// Checks what can be checked without a bundle.
    fn check(&self) -> Result<(), String> {
        if self.sales_ready.is_some() && self.sales_ready_per_week.is_some() {
            return Err("give sales_ready or sales_ready_per_week, not both".into());
        }
        if self.grades.is_some() && self.grades_per_week.is_some() {
            return Err("give grades or grades_per_week, not both".into());
        }
        let per_week = self.grades_per_week.map(|g| {
            [
                ("grades_per_week.a", g.a),
                ("grades_per_week.b", g.b),
                ("grades_per_week.c", g.c),
            ]
        });
        for (name, value) in [
            ("sales_ready_per_week", self.sales_ready_per_week),
            ("volume_per_week", self.volume_per_week),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .chain(per_week.into_iter().flatten())
        {
            // Also false for NaN.
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!("{name} is {value}; it must be a positive number"));
            }
        }
        // The probabilities, against a neutral base: the grades as given, the sales-ready
        // cut-off on its own.
        let probe = Thresholds {
            sales_ready: self.sales_ready.unwrap_or(0.5),
            grades: self.grades.clone().unwrap_or(GradeBands {
                a: 0.75,
                b: 0.5,
                c: 0.25,
            }),
        };
        probe.check()
    }
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
    /// (each probability strictly between 0 and 1, `a > b > c`, each capacity positive, a
    /// cut-off given one way only).
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
        for (model, over) in &file.models {
            over.check().map_err(|e| format!("[{model}]: {e}"))?;
        }
        Ok(file)
    }

    /// The override for `model`, if any.
    pub fn get(&self, model: &str) -> Option<&ThresholdOverride> {
        self.models.get(model)
    }

    /// The sections naming none of `served`, each as `[name]` with the nearest served name
    /// when one is close (a typo, most likely): `[propensty] (did you mean propensity?)`.
    pub fn sections_not_in<'a>(&self, served: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let served: Vec<&str> = served.into_iter().collect();
        self.models
            .keys()
            .filter(|name| !served.contains(&name.as_str()))
            .map(
                |name| match features::spec::nearest(name.as_str(), &served) {
                    Some(s) => format!("[{name}] (did you mean {s}?)"),
                    None => format!("[{name}]"),
                },
            )
            .collect()
    }

    /// The thresholds in force for `model`: the bundle's, with this file's overrides;
    /// capacities are resolved on `held_out`, the bundle's held-out predictions. Fails,
    /// naming the model, when a capacity cannot be resolved (no held-out rows, or no volume
    /// for undated ones) or the result is not valid (e.g. bands overridden in part).
    pub fn apply(
        &self,
        model: &str,
        bundle: &Thresholds,
        held_out: Option<&HeldOutScores>,
    ) -> Result<Thresholds, String> {
        let name = model;
        let mut t = bundle.clone();
        let Some(over) = self.get(model) else {
            return Ok(t);
        };
        if let Some(s) = over.sales_ready {
            t.sales_ready = s;
        }
        if let Some(g) = &over.grades {
            t.grades = g.clone();
        }
        if over.by_capacity() {
            let held = held_out.ok_or_else(|| {
                format!(
                    "[{name}]: thresholds by capacity need the bundle's held-out predictions \
                     (holdout.csv), and the {name} bundle has none"
                )
            })?;
            let volume = held
                .resolve_volume(over.volume_per_week)
                .map_err(|e| format!("[{name}]: {e} (volume_per_week)"))?;
            t = held
                .thresholds_by_capacity(
                    &t,
                    over.sales_ready_per_week,
                    over.grades_per_week.map(|g| [g.a, g.b, g.c]),
                    volume,
                )
                .map_err(|e| format!("[{name}]: {e}"))?;
        }
        t.check().map_err(|e| format!("[{name}]: {e}"))?;
        Ok(t)
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
        let p = file.apply("propensity", &bundle(), None).unwrap();
        assert_eq!(p.sales_ready, 0.25);
        assert_eq!(p.grades, bundle().grades);
        let c = file.apply("churn", &bundle(), None).unwrap();
        assert_eq!(c.sales_ready, 0.4);
        assert_eq!(c.grades.a, 0.9);
        assert_eq!(
            ThresholdsFile::default()
                .apply("churn", &bundle(), None)
                .unwrap(),
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
        let err = ThresholdsFile::parse("[propensity]\nsales_redy = 0.5\n").unwrap_err();
        assert!(err.contains("unknown field `sales_redy`"), "{err}");
        let err = ThresholdsFile::parse("[Propensity]\nsales_ready = 0.5\n").unwrap_err();
        assert!(err.contains("lower-case letter"), "{err}");
        // A section of a model not served is kept (it may be trained later) and reported,
        // with the nearest served name when it looks like a typo.
        let file = ThresholdsFile::parse(
            "[propensty]\nsales_ready = 0.5\n[propensity-enterprise]\nsales_ready = 0.3\n",
        )
        .unwrap();
        assert_eq!(
            file.sections_not_in(["propensity", "churn"]),
            [
                "[propensity-enterprise]",
                "[propensty] (did you mean propensity?)"
            ]
        );
        assert!(
            file.sections_not_in(["propensity-enterprise", "propensty"])
                .is_empty()
        );
        let err = ThresholdsFile::parse("[propensity]\nsales_ready = \"high\"\n").unwrap_err();
        assert!(err.contains("sales_ready"), "{err}");
    }

    /// Ten held-out leads over two weeks (5 a week): probabilities 0.9, 0.8, ..., 0.1, 0.05.
    fn held_out() -> HeldOutScores {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
        let labels = [
            true, true, false, true, false, false, true, false, false, false,
        ];
        HeldOutScores::new(&scores, &labels, Some(2.0)).unwrap()
    }

    #[test]
    fn capacities_become_cut_offs_on_the_held_out_predictions() {
        let file = ThresholdsFile::parse(
            "[propensity]\nsales_ready_per_week = 2\ngrades_per_week = { a = 1, b = 1, c = 1 }\n",
        )
        .unwrap();
        // 2 of 5 a week: the top 40 %, ranks 1-4, cut-off 0.6; bands at ranks 2, 4, 6.
        let t = file
            .apply("propensity", &bundle(), Some(&held_out()))
            .unwrap();
        assert_eq!(t.sales_ready, 0.6);
        assert_eq!((t.grades.a, t.grades.b, t.grades.c), (0.8, 0.6, 0.4));
        // The volume given in the file wins over the held-out rows' own: 50 a week, 20 calls.
        let file = ThresholdsFile::parse(
            "[propensity]\nsales_ready_per_week = 20\nvolume_per_week = 50\n",
        )
        .unwrap();
        let t = file
            .apply("propensity", &bundle(), Some(&held_out()))
            .unwrap();
        assert_eq!(t.sales_ready, 0.6);
        assert_eq!(t.grades, bundle().grades);
        // A bundle without held-out rows cannot take capacities; other tasks are untouched.
        let err = file.apply("propensity", &bundle(), None).unwrap_err();
        assert!(err.contains("holdout.csv"), "{err}");
        assert!(file.apply("churn", &bundle(), None).is_ok());
        // Undated held-out rows (tabular) need the volume.
        let undated = HeldOutScores::new(&[0.9, 0.1], &[true, false], None).unwrap();
        let file = ThresholdsFile::parse("[propensity]\nsales_ready_per_week = 2\n").unwrap();
        let err = file
            .apply("propensity", &bundle(), Some(&undated))
            .unwrap_err();
        assert!(err.contains("volume_per_week"), "{err}");
    }

    #[test]
    fn capacity_files_are_checked() {
        let err = ThresholdsFile::parse("[churn]\nsales_ready = 0.3\nsales_ready_per_week = 5\n")
            .unwrap_err();
        assert!(err.contains("not both"), "{err}");
        let err = ThresholdsFile::parse(
            "[churn]\ngrades = { a = 0.9, b = 0.5, c = 0.2 }\ngrades_per_week = { a = 1, b = 1, c = 1 }\n",
        )
        .unwrap_err();
        assert!(err.contains("grades or grades_per_week"), "{err}");
        let err = ThresholdsFile::parse("[churn]\ngrades_per_week = { a = 1, b = 0, c = 1 }\n")
            .unwrap_err();
        assert!(err.contains("grades_per_week.b is 0"), "{err}");
        let err = ThresholdsFile::parse("[churn]\nvolume_per_week = -3\n").unwrap_err();
        assert!(err.contains("volume_per_week is -3"), "{err}");
    }
}
