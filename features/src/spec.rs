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

/// How the fields of a text file are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// One ASCII character.
    Char(u8),
    /// Runs of spaces or tabs (a whitespace-aligned export; fields hold no whitespace).
    Whitespace,
}

impl Serialize for Separator {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Separator::Char(c) => serializer.serialize_str(&char::from(*c).to_string()),
            Separator::Whitespace => serializer.serialize_str("whitespace"),
        }
    }
}

impl<'de> Deserialize<'de> for Separator {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii() && c != '"' && c != '\n' && c != '\r' => {
                Ok(Separator::Char(c as u8))
            }
            _ if text == "whitespace" => Ok(Separator::Whitespace),
            _ => Err(serde::de::Error::custom(format!(
                "separator {text:?}: give one ASCII character (e.g. \";\" or \"\\t\") or \
                 \"whitespace\""
            ))),
        }
    }
}

/// The character encoding of a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// ISO 8859-1: every byte is the character of that code.
    Latin1,
    /// Latin-1 with printable characters (€, curly quotes, ...) at 0x80-0x9F.
    Windows1252,
}

impl Encoding {
    /// As the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Latin1 => "latin-1",
            Encoding::Windows1252 => "windows-1252",
        }
    }
}

impl Serialize for Encoding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => Ok(Encoding::Latin1),
            "windows-1252" | "cp1252" => Ok(Encoding::Windows1252),
            _ => Err(serde::de::Error::custom(format!(
                "encoding {text:?}: give \"utf-8\", \"latin-1\" (ISO 8859-1) or \
                 \"windows-1252\" (cp1252)"
            ))),
        }
    }
}

/// Options shared by every file reader.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Field separator of text files: one character (default `,`; a tab for `.tsv`), or
    /// `"whitespace"` for whitespace-aligned exports (runs of spaces or tabs).
    #[serde(default)]
    pub separator: Option<Separator>,
    /// Character encoding of text files: `utf-8` (default), `latin-1` (`iso-8859-1`) or
    /// `windows-1252` (`cp1252`).
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Text values read as missing, besides the empty string (e.g. `["Select", "NA"]`).
    #[serde(default)]
    pub missing: Vec<String>,
    /// chrono format of text timestamps (e.g. `%Y-%m-%d %H:%M:%S`). Without it, RFC 3339,
    /// `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DD` are accepted; Parquet datetime and date columns
    /// need no format.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// A file without rows is read as such instead of refused: set (never by a spec) for the
    /// part files of a build in parts ([`crate::parts::load_part`]), where one part may well
    /// have no outcome.
    #[serde(skip)]
    pub allow_empty: bool,
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
    /// Cutoffs `every_days` apart, each with a complete label window (it ends by the latest
    /// event or outcome): `count` of them back from the last one that has one; or from
    /// `start` (a date, or a date and time, UTC) or `start_after_first_days` (days after the
    /// first record's day, midnight UTC) up to the last one that has one (at most `count`
    /// when given too).
    Every {
        every_days: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_after_first_days: Option<u32>,
    },
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
    /// Event form: add the whole-history features (lifetime counts and values, value per
    /// window, distinct active days, gaps between active days); see
    /// [`crate::plan`]. On unless a spec turns it off.
    pub whole_history: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            windows_days: vec![7, 30, 90],
            half_life_days: 14.0,
            min_level_count: 20,
            max_levels: 30,
            creation_calendar: false,
            whole_history: true,
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
        let spec_error = |message: String| DataError::Spec {
            path: origin.to_path_buf(),
            message,
        };
        // Unknown keys first, by name and section: serde would report a misspelt section as
        // another section's problem, and does not see unknown keys of the sections that
        // take the file options.
        let table: toml::Table = toml::from_str(text).map_err(|e| spec_error(e.to_string()))?;
        let mut unknown = Vec::new();
        unknown_keys(&table, SPEC_KEYS, &Section::Top, &mut unknown);
        if !unknown.is_empty() {
            return Err(spec_error(unknown.join("; ")));
        }
        let mut spec: DatasetSpec = toml::from_str(text).map_err(|e| spec_error(e.to_string()))?;
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
            if let CutoffSpec::Every {
                every_days,
                count,
                start,
                start_after_first_days,
            } = &label.cutoffs
            {
                if *every_days == 0 || *count == Some(0) {
                    return fail(
                        "[label.cutoffs.every] every_days and count must be at least 1".into(),
                    );
                }
                match (count, start, start_after_first_days) {
                    (_, Some(_), Some(_)) => {
                        return fail(
                            "[label.cutoffs.every] give `start` or `start_after_first_days`, \
                             not both"
                                .into(),
                        );
                    }
                    (None, None, None) => {
                        return fail(
                            "[label.cutoffs.every] give `count` (cutoffs back from the last \
                             complete label window), or where they start: `start = \
                             \"YYYY-MM-DD\"` or `start_after_first_days = N`"
                                .into(),
                        );
                    }
                    _ => {}
                }
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

/// What a key of a spec holds, for [`unknown_keys`]. Mirrors the serde structs above (a
/// test serialises every field of them and checks that each key is known here).
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A value; its type is serde's to check.
    Value,
    /// A table with these keys.
    Table(&'static [(&'static str, Shape)]),
    /// A table of any keys (column names) with plain values.
    AnyKeys,
    /// An array of tables with these keys.
    ArrayOf(&'static [(&'static str, Shape)]),
}

use Shape::{AnyKeys, ArrayOf, Table, Value};

/// The keys of a whole spec.
const SPEC_KEYS: &[(&str, Shape)] = &[
    ("name", Value),
    ("task", Value),
    ("entities", Table(ENTITIES_KEYS)),
    ("events", Table(EVENTS_KEYS)),
    ("outcomes", Table(OUTCOMES_KEYS)),
    ("table", Table(TABLE_KEYS)),
    ("label", Table(LABEL_KEYS)),
    ("features", Table(FEATURES_KEYS)),
];

const ENTITIES_KEYS: &[(&str, Shape)] = &[
    ("path", Value),
    ("from_events", Value),
    ("profile_from_events", Value),
    ("id", Value),
    ("created_at", Value),
    ("columns", AnyKeys),
    ("exclude", Value),
    // FileOptions
    ("separator", Value),
    ("encoding", Value),
    ("missing", Value),
    ("timestamp_format", Value),
];

const EVENTS_KEYS: &[(&str, Shape)] = &[
    ("path", Value),
    ("entity_id", Value),
    ("timestamp", Value),
    ("event_type", Value),
    ("constant_event_type", Value),
    ("channel", Value),
    ("value", Value),
    ("value_product", Value),
    ("rules", ArrayOf(RULE_KEYS)),
    // FileOptions
    ("separator", Value),
    ("encoding", Value),
    ("missing", Value),
    ("timestamp_format", Value),
];

const RULE_KEYS: &[(&str, Shape)] = &[
    ("column", Value),
    ("starts_with", Value),
    ("is_missing", Value),
    // `"drop"`, or a table naming the variant.
    (
        "action",
        Table(&[("drop", Value), ("set_event_type", Value)]),
    ),
];

const OUTCOMES_KEYS: &[(&str, Shape)] = &[
    ("path", Value),
    ("entity_id", Value),
    ("timestamp", Value),
    ("before_creation", Value),
    // FileOptions
    ("separator", Value),
    ("encoding", Value),
    ("missing", Value),
    ("timestamp_format", Value),
];

const TABLE_KEYS: &[(&str, Shape)] = &[
    ("path", Value),
    ("id", Value),
    ("label", Value),
    ("positive", Value),
    ("columns", AnyKeys),
    ("exclude", Value),
    // FileOptions
    ("separator", Value),
    ("encoding", Value),
    ("missing", Value),
    ("timestamp_format", Value),
];

const LABEL_KEYS: &[(&str, Shape)] = &[
    ("horizon_days", Value),
    ("kind", Value),
    ("inactivity_event_types", Value),
    ("active_within_days", Value),
    ("cutoffs", Table(CUTOFFS_KEYS)),
];

const CUTOFFS_KEYS: &[(&str, Shape)] = &[
    ("dates", Value),
    (
        "every",
        Table(&[
            ("every_days", Value),
            ("count", Value),
            ("start", Value),
            ("start_after_first_days", Value),
        ]),
    ),
    ("after_creation", Table(&[("days", Value)])),
];

const FEATURES_KEYS: &[(&str, Shape)] = &[
    ("windows_days", Value),
    ("half_life_days", Value),
    ("min_level_count", Value),
    ("max_levels", Value),
    ("creation_calendar", Value),
    ("whole_history", Value),
];

/// Where a table is in the spec, for messages.
enum Section {
    Top,
    /// `[label.cutoffs]`.
    Table(String),
    /// `[[events.rules]] #2` (1-based).
    ArrayItem(String, usize),
}

impl Section {
    fn child(&self, key: &str) -> String {
        match self {
            Section::Top => key.to_owned(),
            Section::Table(path) | Section::ArrayItem(path, _) => format!("{path}.{key}"),
        }
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Section::Top => write!(f, "at the top level"),
            Section::Table(path) => write!(f, "in [{path}]"),
            Section::ArrayItem(path, i) => write!(f, "in [[{path}]] #{i}"),
        }
    }
}

/// Adds to `out` a message for each key of `table` (at `section`) and of the tables in it
/// that the spec does not know, with the nearest known key when one is close. Values of the
/// wrong type are left to serde.
fn unknown_keys(
    table: &toml::Table,
    known: &[(&str, Shape)],
    section: &Section,
    out: &mut Vec<String>,
) {
    for (key, value) in table {
        let Some((_, shape)) = known.iter().find(|(name, _)| name == key) else {
            let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
            let hint = match nearest(key, &names) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => format!(" (known keys here: {})", names.join(", ")),
            };
            out.push(format!("unknown key `{key}` {section}{hint}"));
            continue;
        };
        match (shape, value) {
            (Shape::Table(keys), toml::Value::Table(inner)) => {
                unknown_keys(inner, keys, &Section::Table(section.child(key)), out);
            }
            (Shape::ArrayOf(keys), toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        let at = Section::ArrayItem(section.child(key), i + 1);
                        unknown_keys(inner, keys, &at, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The known name closest to `key` by edit distance (insertions, deletions, substitutions
/// and swaps of neighbours), when it is close enough to be a slip: at most a third of the
/// longer name's characters, and at least one. Also used for model and field names.
pub fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|name| (edit_distance(key, name), *name))
        .filter(|(d, name)| *d <= (key.chars().count().max(name.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Optimal string alignment distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn file_options() -> FileOptions {
        FileOptions {
            separator: Some(Separator::Char(b';')),
            encoding: Some(Encoding::Latin1),
            missing: vec!["NA".into()],
            timestamp_format: Some("%Y".into()),
            allow_empty: false,
        }
    }

    /// Every field of the spec structs, serialised, is a key [`SPEC_KEYS`] knows: the list
    /// cannot fall behind the structs.
    #[test]
    fn every_field_of_the_spec_is_a_known_key() {
        let columns: BTreeMap<String, ColumnKind> =
            [("Lead Source".into(), ColumnKind::Numeric)].into();
        for cutoffs in [
            CutoffSpec::Dates(vec!["2025-01-01".into()]),
            CutoffSpec::Every {
                every_days: 7,
                count: Some(3),
                start: Some("2025-01-01".into()),
                start_after_first_days: Some(120),
            },
            CutoffSpec::AfterCreation { days: 0 },
        ] {
            let spec = DatasetSpec {
                name: "all".into(),
                task: Task::Churn,
                entities: Some(EntitiesSpec {
                    path: Some("e.csv".into()),
                    from_events: true,
                    profile_from_events: vec!["a".into()],
                    id: "id".into(),
                    created_at: Some("c".into()),
                    columns: columns.clone(),
                    exclude: vec!["x".into()],
                    file: file_options(),
                }),
                events: Some(EventsSpec {
                    path: "ev.csv".into(),
                    entity_id: "id".into(),
                    timestamp: "ts".into(),
                    event_type: Some("t".into()),
                    constant_event_type: Some("p".into()),
                    channel: Some("ch".into()),
                    value: Some("v".into()),
                    value_product: vec!["q".into()],
                    rules: vec![
                        EventRule {
                            column: "c".into(),
                            starts_with: Some("C".into()),
                            is_missing: true,
                            action: RuleAction::Drop,
                        },
                        EventRule {
                            column: "c".into(),
                            starts_with: None,
                            is_missing: false,
                            action: RuleAction::SetEventType("x".into()),
                        },
                    ],
                    file: file_options(),
                }),
                outcomes: Some(OutcomesSpec {
                    path: "o.csv".into(),
                    entity_id: "id".into(),
                    timestamp: "ts".into(),
                    before_creation: BeforeCreation::Clamp,
                    file: file_options(),
                }),
                table: Some(TableSpec {
                    path: "t.csv".into(),
                    id: Some("id".into()),
                    label: "y".into(),
                    positive: Some("yes".into()),
                    columns: columns.clone(),
                    exclude: vec!["x".into()],
                    file: file_options(),
                }),
                label: Some(LabelSpec {
                    horizon_days: 30,
                    kind: LabelKind::Inactivity,
                    inactivity_event_types: vec!["p".into()],
                    active_within_days: Some(10),
                    cutoffs,
                }),
                features: FeatureOptions {
                    creation_calendar: true,
                    ..FeatureOptions::default()
                },
                base_dir: PathBuf::new(),
            };
            let text = toml::to_string(&spec).expect("serialises");
            let table: toml::Table = toml::from_str(&text).expect("parses");
            let mut unknown = Vec::new();
            unknown_keys(&table, SPEC_KEYS, &Section::Top, &mut unknown);
            assert!(unknown.is_empty(), "{unknown:?} in\n{text}");
        }
    }

    #[test]
    fn edit_distance_counts_slips() {
        assert_eq!(edit_distance("entities", "entities"), 0);
        assert_eq!(edit_distance("entitites", "entities"), 1);
        assert_eq!(edit_distance("horizno_days", "horizon_days"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(nearest("windows", &["windows_days", "max_levels"]), None);
        assert_eq!(
            nearest("window_days", &["windows_days", "max_levels"]),
            Some("windows_days")
        );
    }
}
