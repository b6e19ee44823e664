//! The dataset spec: a TOML file that names a CRM export's files, their columns and roles,
//! missing-value markers, excluded columns and the prediction task.
//!
//! Paths in a spec are relative to the spec file's folder. See the README's "Data contract"
//! section for a worked example of each form.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Will this lead convert?
    Propensity,
    /// Will this customer leave?
    Churn,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Propensity => "propensity",
            Task::Churn => "churn",
        }
    }
}

/// Type of a profile column. Left out of the spec, it is inferred from the data: numeric when
/// every non-missing value parses as a number, categorical otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Numeric,
    Categorical,
}

/// A whole dataset spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A short name, used in reports and bundle manifests.
    pub name: String,
    pub task: Task,
    /// Exactly one of `entities` (event form) and `table` (tabular form) is given.
    #[serde(default)]
    pub entities: Option<EntitiesSpec>,
    #[serde(default)]
    pub events: Option<EventsSpec>,
    #[serde(default)]
    pub outcomes: Option<OutcomesSpec>,
    #[serde(default)]
    pub table: Option<TableSpec>,
    /// Event form only: how the label is defined and when entities are scored.
    #[serde(default)]
    pub label: Option<LabelSpec>,
    #[serde(default)]
    pub features: FeatureOptions,
    /// Folder the relative paths are resolved against (the spec file's folder); set by
    /// [`DatasetSpec::from_file`], never read from TOML.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Options shared by every file reader.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Field separator for CSV files (default `,`).
    #[serde(default)]
    pub separator: Option<char>,
    /// Text values read as missing, besides the empty string (e.g. `["Select", "NA"]`).
    #[serde(default)]
    pub missing: Vec<String>,
    /// chrono format of text timestamps (e.g. `%Y-%m-%d %H:%M:%S`). Without it, RFC 3339,
    /// `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DD` are accepted; Parquet datetime and date columns
    /// need no format.
    #[serde(default)]
    pub timestamp_format: Option<String>,
}

/// Event form: one row per lead or customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitiesSpec {
    /// CSV or Parquet file, by extension. Omitted when `from_events` is true.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Derive the entities from the event log: one per distinct entity id, created at its
    /// first event, with `profile_from_events` columns taken from its first event.
    #[serde(default)]
    pub from_events: bool,
    #[serde(default)]
    pub profile_from_events: Vec<String>,
    pub id: String,
    /// Creation time column (required unless `from_events`).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Profile columns with their types; columns not named here are used with inferred types
    /// unless excluded.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, ColumnKind>,
    /// Columns never used as features (ids, personal data, leaky columns).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(flatten)]
    pub file: FileOptions,
}

/// Event form: the interaction log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSpec {
    pub path: PathBuf,
    pub entity_id: String,
    pub timestamp: String,
    /// Column holding the event type. Either this or `constant_event_type`.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Every row is this event type (e.g. `purchase` for an invoice-line log).
    #[serde(default)]
    pub constant_event_type: Option<String>,
    /// Optional channel column (email, web, paid search...).
    #[serde(default)]
    pub channel: Option<String>,
    /// Optional numeric value column (seconds on page, order amount).
    #[serde(default)]
    pub value: Option<String>,
    /// The value is the product of these columns (e.g. `["Quantity", "Price"]`).
    #[serde(default)]
    pub value_product: Vec<String>,
    /// Rules applied in order to each row before anything else.
    #[serde(default)]
    pub rules: Vec<EventRule>,
    #[serde(flatten)]
    pub file: FileOptions,
}

/// A row rule: rows whose `column` starts with `starts_with` (text) are dropped or given
/// another event type. Example: Online Retail II invoices starting with `C` are
/// cancellations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    pub column: String,
    #[serde(default)]
    pub starts_with: Option<String>,
    /// The column is missing on this row.
    #[serde(default)]
    pub is_missing: bool,
    pub action: RuleAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    Drop,
    SetEventType(String),
}

/// Event form: when each entity's outcome happened (converted_at, churned_at).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesSpec {
    pub path: PathBuf,
    pub entity_id: String,
    pub timestamp: String,
    /// What to do with an outcome dated before its entity's creation (default: an error).
    /// Real exports have a few (Olist: one deal won two days before its first contact).
    #[serde(default)]
    pub before_creation: BeforeCreation,
    #[serde(flatten)]
    pub file: FileOptions,
}

/// Policy for an outcome timestamp earlier than its entity's creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeforeCreation {
    /// Reject the dataset, naming the row (default).
    #[default]
    Error,
    /// Ignore that outcome row (the entity may still have a later, valid one).
    Drop,
    /// Move the outcome to the creation time: the entity converted at once.
    Clamp,
}

/// Event form: the label and the scoring moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Positive when the outcome happens within this many days after the cutoff, or (for
    /// `inactivity`) when none of `inactivity_event_types` happens within them.
    pub horizon_days: u32,
    #[serde(default)]
    pub kind: LabelKind,
    /// For `inactivity`: the event types that count as activity (e.g. `["purchase"]`).
    #[serde(default)]
    pub inactivity_event_types: Vec<String>,
    /// For `inactivity`: only entities with an activity event in this many days before the
    /// cutoff are scored (default: the horizon).
    #[serde(default)]
    pub active_within_days: Option<u32>,
    pub cutoffs: CutoffSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// The outcome file's timestamp falls in `[cutoff, cutoff + horizon)`.
    #[default]
    OutcomeWithin,
    /// No activity event in `[cutoff, cutoff + horizon)`.
    Inactivity,
}

/// When entities are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CutoffSpec {
    /// Calendar cutoffs: every entity alive and not yet resolved at each date gets a row.
    Dates(Vec<String>),
    /// `count` cutoffs `every_days` apart, the last one `horizon_days` before the latest
    /// event or outcome (so that its label window is complete).
    Every { every_days: u32, count: u32 },
    /// Each entity once, this many days after its creation (0: the moment it arrives).
    AfterCreation { days: u32 },
}

/// Tabular form: one row per entity with a label column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub path: PathBuf,
    /// Id column; rows are numbered when omitted.
    #[serde(default)]
    pub id: Option<String>,
    pub label: String,
    /// Label text that means positive; without it the label must be 0/1 or true/false.
    #[serde(default)]
    pub positive: Option<String>,
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, ColumnKind>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(flatten)]
    pub file: FileOptions,
}

/// Feature-builder options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureOptions {
    /// Count windows in days.
    pub windows_days: Vec<u32>,
    /// Half-life of the decayed engagement in days.
    pub half_life_days: f64,
    /// Categorical levels seen fewer times than this in training become `other`.
    pub min_level_count: usize,
    /// At most this many levels per categorical column (the most frequent), the rest `other`.
    pub max_levels: usize,
    /// Add weekday and month of the creation time as features (useful when scoring at
    /// creation, as for Olist MQLs).
    pub creation_calendar: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            windows_days: vec![7, 30, 90],
            half_life_days: 14.0,
            min_level_count: 20,
            max_levels: 30,
            creation_calendar: false,
        }
    }
}

/// Which of the two forms a spec describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Events,
    Tabular,
}

impl DatasetSpec {
    /// Reads and checks a spec file; relative paths resolve against its folder.
    pub fn from_file(path: &Path) -> Result<DatasetSpec, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        DatasetSpec::from_toml(&text, path, base)
    }

    /// Parses spec text; `origin` only names the spec in errors.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        base_dir: PathBuf,
    ) -> Result<DatasetSpec, DataError> {
        let mut spec: DatasetSpec = toml::from_str(text).map_err(|e| DataError::Spec {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        spec.base_dir = base_dir;
        spec.check(origin)?;
        Ok(spec)
    }

    pub fn form(&self) -> Form {
        if self.table.is_some() {
            Form::Tabular
        } else {
            Form::Events
        }
    }

    /// Resolves a path of the spec against the spec's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn check(&self, origin: &Path) -> Result<(), DataError> {
        let fail = |message: String| {
            Err(DataError::Spec {
                path: origin.to_path_buf(),
                message,
            })
        };
        match (&self.entities, &self.table) {
            (Some(_), Some(_)) => {
                return fail(
                    "give either [entities] (event form) or [table] (tabular form), not both"
                        .into(),
                );
            }
            (None, None) => {
                return fail("missing [entities] (event form) or [table] (tabular form)".into());
            }
            _ => {}
        }
        if let Some(entities) = &self.entities {
            if self.events.is_none() && entities.from_events {
                return fail("[entities] from_events = true needs an [events] section".into());
            }
            if !entities.from_events && entities.path.is_none() {
                return fail("[entities] needs `path` (or `from_events = true`)".into());
            }
            if !entities.from_events && entities.created_at.is_none() {
                return fail(
                    "[entities] needs `created_at`, the column holding each entity's creation time"
                        .into(),
                );
            }
            let Some(label) = &self.label else {
                return fail("event form needs a [label] section (horizon_days, cutoffs)".into());
            };
            if label.horizon_days == 0 {
                return fail("[label] horizon_days must be at least 1".into());
            }
            match label.kind {
                LabelKind::OutcomeWithin if self.outcomes.is_none() => {
                    return fail(
                        "[label] kind = \"outcome_within\" needs an [outcomes] section".into(),
                    );
                }
                LabelKind::Inactivity if label.inactivity_event_types.is_empty() => {
                    return fail(
                        "[label] kind = \"inactivity\" needs `inactivity_event_types`".into(),
                    );
                }
                LabelKind::Inactivity if self.events.is_none() => {
                    return fail("[label] kind = \"inactivity\" needs an [events] section".into());
                }
                _ => {}
            }
            if let CutoffSpec::Every { every_days, count } = &label.cutoffs
                && (*every_days == 0 || *count == 0)
            {
                return fail(
                    "[label.cutoffs.every] every_days and count must be at least 1".into(),
                );
            }
        } else if self.events.is_some() || self.outcomes.is_some() || self.label.is_some() {
            return fail(
                "tabular form ([table]) takes no [events], [outcomes] or [label] section".into(),
            );
        }
        if let Some(events) = &self.events {
            if events.event_type.is_some() == events.constant_event_type.is_some() {
                return fail("[events] needs exactly one of `event_type` (a column) and `constant_event_type`".into());
            }
            if events.value.is_some() && !events.value_product.is_empty() {
                return fail("[events] give `value` or `value_product`, not both".into());
            }
            for (i, rule) in events.rules.iter().enumerate() {
                if rule.starts_with.is_some() == rule.is_missing {
                    return fail(format!(
                        "[[events.rules]] #{}: give exactly one of `starts_with` and `is_missing = true`",
                        i + 1
                    ));
                }
            }
        }
        let f = &self.features;
        if f.windows_days.is_empty() || f.windows_days.contains(&0) {
            return fail(
                "[features] windows_days needs at least one window, each at least 1 day".into(),
            );
        }
        if !(f.half_life_days.is_finite() && f.half_life_days > 0.0) {
            return fail("[features] half_life_days must be a positive number".into());
        }
        if f.max_levels == 0 {
            return fail("[features] max_levels must be at least 1".into());
        }
        Ok(())
    }
}
