//! The feature plan: what the features are, fitted once on training data, and the one kernel
//! that computes them for an entity as of a cutoff.
//!
//! [`FeaturePlanParams::fit`] learns the event-type and channel vocabularies and the
//! categorical levels (rare ones grouped as `other`) from data before a bound. The fitted
//! [`FeaturePlan`] is serialised into every model bundle's manifest; its
//! [`FeaturePlan::feature_names`] fix the order of the `f32` vector a model takes.
//!
//! Layout, in this order:
//! 1. profile fields: a numeric field is one feature (`NaN` when missing); a categorical field
//!    is one-hot over its kept levels plus `=<other>` (rare or unseen levels) and `=<missing>`;
//! 2. event form only: `tenure_days`; with `creation_calendar`, one-hot weekday and month of
//!    creation; per event type `count_<type>_<w>d` for each window, `days_since_last_<type>`
//!    (capped at [`RECENCY_CAP_DAYS`], which is also the value when there is none) and
//!    `decayed_<type>` (sum of `0.5^(age_days / half_life)`); `value_sum_<type>_<w>d` over
//!    the longest window for types that carry values; per channel `count_channel_<c>_<w>d`;
//!    then `events_total_<w>d`, `distinct_channels_<w>d` (longest window),
//!    `decayed_engagement`, `days_since_last_event` and `trend_30d_vs_prev_60d`
//!    (`ln((1 + n_30) / (1 + n_prev60 / 2))`);
//! 3. event form with `whole_history` and at least one event type (the default of new specs;
//!    plans written before it read as without): per event type `count_<type>_lifetime`, `active_days_<type>_lifetime`
//!    (distinct UTC days with such an event), `mean_gap_days_<type>` (the average number of
//!    days between those days) and `recency_vs_mean_gap_<type>`
//!    (`ln((1 + days_since_last_<type>) / (1 + mean_gap_days_<type>))`: above 0 when the
//!    next one is overdue); for types that carry values `value_sum_<type>_<w>d` for the
//!    other windows and `value_sum_<type>_lifetime`; then `events_lifetime`,
//!    `active_days_<w>d` per window, `active_days_lifetime`, `days_since_first_event`,
//!    `mean_gap_days`, `last_gap_days` (between the last two active days),
//!    `last_gap_vs_mean_gap` (`ln((1 + last) / (1 + mean))`) and `recency_vs_mean_gap`.
//!    Gaps are capped at [`RECENCY_CAP_DAYS`], which is also their value with fewer than two
//!    active days.
//!
//! Only events strictly before the cutoff are looked at. Event types and channels that the
//! plan has not seen are ignored. Sums run in `f64` over events in one canonical order
//! ([`canonical_order`]) and are rounded to `f32` at the end, so the batch builder and the
//! server, which both call the same kernel, produce identical bits.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::history::{DAY_MS, EntityHistory, ProfileValue, TimestampMs};
use crate::spec::{ColumnKind, FeatureOptions, Form};

/// `days_since_last_*` never exceeds this; it is also the value when no such event exists.
pub const RECENCY_CAP_DAYS: f64 = 365.0;
/// The trend compares the last `TREND_RECENT_DAYS` with the `TREND_PRIOR_DAYS` before them.
pub const TREND_RECENT_DAYS: i64 = 30;
pub const TREND_PRIOR_DAYS: i64 = 60;

const UNKNOWN: u16 = u16::MAX;
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Hyperparameters of the plan, checked before fitting.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturePlanParams {
    pub options: FeatureOptions,
}

/// What fitting needs to know about the data, independent of where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInputs {
    pub form: Form,
    pub profile: Vec<ProfileInput>,
    /// Event types seen in the fitting set, with whether any event of the type carries a
    /// value.
    pub event_types: BTreeMap<String, bool>,
    /// Channels seen in the fitting set.
    pub channels: Vec<String>,
}

/// A profile column as seen in the fitting set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileInput {
    pub name: String,
    pub kind: ColumnKind,
    /// How often each level occurs (categorical columns; empty for numeric ones).
    pub level_counts: HashMap<String, usize>,
}

/// A profile field of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileFeature {
    pub name: String,
    pub kind: ProfileFeatureKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileFeatureKind {
    Numeric,
    /// One-hot over `levels`, then `other`, then `missing`.
    Categorical {
        levels: Vec<String>,
    },
}

/// Name of the one-hot feature of a categorical field's grouped levels (rare in training or
/// unseen): `industry=<other>`. The angle brackets keep it apart from a real level `other`.
pub const OTHER_LEVEL: &str = "<other>";
/// Name of the one-hot feature of a categorical field's missing values: `industry=<missing>`.
pub const MISSING_LEVEL: &str = "<missing>";

/// A fitted feature plan. Serialised into model bundles; [`FeaturePlan::feature_names`]
/// fixes the feature order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "FeaturePlanData", into = "FeaturePlanData")]
pub struct FeaturePlan {
    data: FeaturePlanData,
    feature_names: Vec<String>,
    event_type_index: HashMap<String, u16>,
    channel_index: HashMap<String, u16>,
    level_index: Vec<HashMap<String, u16>>,
    /// Position in the output of each block, computed once.
    layout: Layout,
}

/// The serialised part of a plan; everything else is derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturePlanData {
    pub form: Form,
    pub windows_days: Vec<u32>,
    pub half_life_days: f64,
    pub creation_calendar: bool,
    pub profile: Vec<ProfileFeature>,
    pub event_types: Vec<String>,
    /// Event types (a subset of `event_types`) that get a value sum.
    pub valued_event_types: Vec<String>,
    pub channels: Vec<String>,
    /// Whether the whole-history block is computed. Absent in plans written before it
    /// existed, which read as `false`; not written when `false`, so such plans keep their
    /// bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_history: bool,
    /// The names the plan produced when it was fitted; checked against the derived names
    /// when a plan is read back, so a bundle never silently changes its feature order.
    pub feature_names: Vec<String>,
}

/// Where each block of features starts in a feature row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub(crate) profile_offsets: Vec<usize>,
    pub(crate) tenure: usize,
    pub(crate) calendar: usize,
    pub(crate) per_type: usize,
    pub(crate) per_type_stride: usize,
    pub(crate) value_sums: usize,
    pub(crate) valued_slot: Vec<Option<usize>>,
    pub(crate) per_channel: usize,
    pub(crate) totals: usize,
    /// Whole-history block: per event type [`HISTORY_PER_TYPE`] columns from here.
    pub(crate) history_per_type: usize,
    /// Per valued type, one value sum per window but the longest, then the lifetime's.
    pub(crate) history_values: usize,
    /// `events_lifetime`, then `active_days_<w>d` per window, then [`HISTORY_OVERALL`] more.
    pub(crate) history_overall: usize,
    pub(crate) len: usize,
}

/// Whole-history columns per event type: lifetime count, active days, mean gap, recency
/// against the mean gap.
pub(crate) const HISTORY_PER_TYPE: usize = 4;
/// Whole-history columns after `events_lifetime` and the per-window active days:
/// `active_days_lifetime`, `days_since_first_event`, `mean_gap_days`, `last_gap_days`,
/// `last_gap_vs_mean_gap`, `recency_vs_mean_gap`.
pub(crate) const HISTORY_OVERALL: usize = 6;

/// A profile value encoded against the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodedProfile {
    /// Numeric field (`NaN` when missing).
    Number(f64),
    /// Categorical field: index into the one-hot block (`levels.len()` is `other`,
    /// `levels.len() + 1` is `missing`).
    Level(u16),
}

/// An event encoded against the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodedEvent {
    pub ts_ms: TimestampMs,
    /// Index into the plan's event types, `u16::MAX` when unknown.
    pub event_type: u16,
    /// Index into the plan's channels, `u16::MAX` when absent or unknown.
    pub channel: u16,
    /// `NaN` when absent.
    pub value: f64,
}

/// The one order in which the kernel sums events: time, then type, channel, value.
pub fn canonical_order(a: &EncodedEvent, b: &EncodedEvent) -> Ordering {
    a.ts_ms
        .cmp(&b.ts_ms)
        .then(a.event_type.cmp(&b.event_type))
        .then(a.channel.cmp(&b.channel))
        .then(a.value.total_cmp(&b.value))
}

/// A request-time problem with an entity's history.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("profile has {got} fields, the model expects {expected} ({names})")]
    ProfileLength {
        expected: usize,
        got: usize,
        names: String,
    },
    #[error("profile field `{field}`: expected a number, got {value:?}")]
    NotANumber { field: String, value: String },
    #[error("profile field `{field}`: {value} is not a finite number within ±3.4e38 (f32)")]
    NotFinite { field: String, value: f64 },
    #[error("event {index}: value {value} is not a finite number within ±3.4e38 (f32)")]
    EventValueNotFinite { index: usize, value: f64 },
}

/// Whether `x` is a number a model can take: finite, and finite once rounded to the `f32`
/// the features are (1e39 is a finite `f64` but an infinite `f32`).
pub fn fits_f32(x: f64) -> bool {
    x.is_finite() && x.abs() <= f64::from(f32::MAX)
}

impl FeaturePlanParams {
    pub fn new(options: FeatureOptions) -> Self {
        FeaturePlanParams { options }
    }

    /// Checks the hyperparameters.
    pub fn check(&self) -> Result<(), DataError> {
        let o = &self.options;
        if o.windows_days.is_empty() || o.windows_days.contains(&0) {
            return Err(DataError::Invalid(
                "feature windows: need at least one window, each at least 1 day".into(),
            ));
        }
        if !(o.half_life_days.is_finite() && o.half_life_days > 0.0) {
            return Err(DataError::Invalid(format!(
                "feature half_life_days must be a positive number, got {}",
                o.half_life_days
            )));
        }
        if o.max_levels == 0 || o.max_levels > 10_000 {
            return Err(DataError::Invalid(format!(
                "feature max_levels must be between 1 and 10000, got {}",
                o.max_levels
            )));
        }
        Ok(())
    }

    /// Fits the plan: vocabularies and categorical levels from `inputs`.
    pub fn fit(&self, inputs: &PlanInputs) -> Result<FeaturePlan, DataError> {
        self.check()?;
        let o = &self.options;
        let mut windows = o.windows_days.clone();
        windows.sort_unstable();
        windows.dedup();
        let profile = inputs
            .profile
            .iter()
            .map(|input| ProfileFeature {
                name: input.name.clone(),
                kind: match input.kind {
                    ColumnKind::Numeric => ProfileFeatureKind::Numeric,
                    ColumnKind::Categorical => ProfileFeatureKind::Categorical {
                        levels: kept_levels(&input.level_counts, o.min_level_count, o.max_levels),
                    },
                },
            })
            .collect();
        let (event_types, valued_event_types, channels) = match inputs.form {
            Form::Tabular => (Vec::new(), Vec::new(), Vec::new()),
            Form::Events => {
                if inputs.event_types.len() >= UNKNOWN as usize
                    || inputs.channels.len() >= UNKNOWN as usize
                {
                    return Err(DataError::Invalid(format!(
                        "too many event types ({}) or channels ({}); at most {} each",
                        inputs.event_types.len(),
                        inputs.channels.len(),
                        UNKNOWN - 1
                    )));
                }
                (
                    inputs.event_types.keys().cloned().collect(),
                    inputs
                        .event_types
                        .iter()
                        .filter(|(_, valued)| **valued)
                        .map(|(t, _)| t.clone())
                        .collect(),
                    {
                        let mut channels = inputs.channels.clone();
                        channels.sort();
                        channels.dedup();
                        channels
                    },
                )
            }
        };
        let mut data = FeaturePlanData {
            form: inputs.form,
            windows_days: windows,
            half_life_days: o.half_life_days,
            creation_calendar: o.creation_calendar && inputs.form == Form::Events,
            // Without any event type there is no history to look at.
            whole_history: o.whole_history && !event_types.is_empty(),
            profile,
            event_types,
            valued_event_types,
            channels,
            feature_names: Vec::new(),
        };
        data.feature_names = derive_names(&data);
        FeaturePlan::try_from(data).map_err(DataError::Invalid)
    }
}

/// Levels seen at least `min_count` times, the `max_levels` most frequent (ties by name).
fn kept_levels(
    counts: &HashMap<String, usize>,
    min_count: usize,
    max_levels: usize,
) -> Vec<String> {
    let mut frequent: Vec<(&str, usize)> = counts
        .iter()
        .map(|(level, n)| (level.as_str(), *n))
        .filter(|(_, n)| *n >= min_count.max(1))
        .collect();
    frequent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    frequent.truncate(max_levels);
    let mut levels: Vec<String> = frequent.into_iter().map(|(l, _)| l.to_string()).collect();
    levels.sort();
    levels
}

fn derive_names(data: &FeaturePlanData) -> Vec<String> {
    let mut names = Vec::new();
    for field in &data.profile {
        match &field.kind {
            ProfileFeatureKind::Numeric => names.push(field.name.clone()),
            ProfileFeatureKind::Categorical { levels } => {
                for level in levels {
                    names.push(format!("{}={}", field.name, level));
                }
                names.push(format!("{}={OTHER_LEVEL}", field.name));
                names.push(format!("{}={MISSING_LEVEL}", field.name));
            }
        }
    }
    if data.form == Form::Tabular {
        return names;
    }
    names.push("tenure_days".into());
    if data.creation_calendar {
        for day in WEEKDAYS {
            names.push(format!("created_weekday={day}"));
        }
        for month in 1..=12 {
            names.push(format!("created_month={month}"));
        }
    }
    for t in &data.event_types {
        for w in &data.windows_days {
            names.push(format!("count_{t}_{w}d"));
        }
        names.push(format!("days_since_last_{t}"));
        names.push(format!("decayed_{t}"));
    }
    let longest = data.windows_days.last().copied().unwrap_or(0);
    for t in &data.valued_event_types {
        names.push(format!("value_sum_{t}_{longest}d"));
    }
    for c in &data.channels {
        for w in &data.windows_days {
            names.push(format!("count_channel_{c}_{w}d"));
        }
    }
    for w in &data.windows_days {
        names.push(format!("events_total_{w}d"));
    }
    names.push(format!("distinct_channels_{longest}d"));
    names.push("decayed_engagement".into());
    names.push("days_since_last_event".into());
    names.push("trend_30d_vs_prev_60d".into());
    if !data.whole_history {
        return names;
    }
    for t in &data.event_types {
        names.push(format!("count_{t}_lifetime"));
        names.push(format!("active_days_{t}_lifetime"));
        names.push(format!("mean_gap_days_{t}"));
        names.push(format!("recency_vs_mean_gap_{t}"));
    }
    for t in &data.valued_event_types {
        for w in &data.windows_days[..data.windows_days.len() - 1] {
            names.push(format!("value_sum_{t}_{w}d"));
        }
        names.push(format!("value_sum_{t}_lifetime"));
    }
    names.push("events_lifetime".into());
    for w in &data.windows_days {
        names.push(format!("active_days_{w}d"));
    }
    for name in [
        "active_days_lifetime",
        "days_since_first_event",
        "mean_gap_days",
        "last_gap_days",
        "last_gap_vs_mean_gap",
        "recency_vs_mean_gap",
    ] {
        names.push(name.into());
    }
    names
}

impl TryFrom<FeaturePlanData> for FeaturePlan {
    type Error = String;

    fn try_from(data: FeaturePlanData) -> Result<Self, String> {
        let derived = derive_names(&data);
        let mut seen = std::collections::HashSet::with_capacity(derived.len());
        if let Some(twice) = derived.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(format!(
                "feature plan: two features would be named `{twice}`; rename or exclude the \
                 profile column (or event type) that produces it"
            ));
        }
        if derived != data.feature_names {
            return Err(format!(
                "feature plan: stored feature names ({}) differ from those the plan derives ({}); \
                 the bundle was written by an incompatible version",
                data.feature_names.len(),
                derived.len()
            ));
        }
        if data.windows_days.is_empty() || !data.half_life_days.is_finite() {
            return Err("feature plan: no windows or an invalid half-life".into());
        }
        let event_type_index = index_of(&data.event_types);
        let channel_index = index_of(&data.channels);
        for t in &data.valued_event_types {
            if !event_type_index.contains_key(t) {
                return Err(format!(
                    "feature plan: valued event type `{t}` is not an event type"
                ));
            }
        }
        let level_index = data
            .profile
            .iter()
            .map(|p| match &p.kind {
                ProfileFeatureKind::Numeric => HashMap::new(),
                ProfileFeatureKind::Categorical { levels } => index_of(levels),
            })
            .collect();
        let layout = Layout::of(&data);
        debug_assert_eq!(layout.len, derived.len());
        Ok(FeaturePlan {
            feature_names: derived,
            data,
            event_type_index,
            channel_index,
            level_index,
            layout,
        })
    }
}

impl From<FeaturePlan> for FeaturePlanData {
    fn from(plan: FeaturePlan) -> Self {
        plan.data
    }
}

fn index_of(names: &[String]) -> HashMap<String, u16> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u16))
        .collect()
}

impl Layout {
    fn of(data: &FeaturePlanData) -> Layout {
        let mut pos = 0;
        let mut profile_offsets = Vec::with_capacity(data.profile.len());
        for field in &data.profile {
            profile_offsets.push(pos);
            pos += match &field.kind {
                ProfileFeatureKind::Numeric => 1,
                ProfileFeatureKind::Categorical { levels } => levels.len() + 2,
            };
        }
        if data.form == Form::Tabular {
            return Layout {
                profile_offsets,
                len: pos,
                ..Layout::default()
            };
        }
        let n_windows = data.windows_days.len();
        let tenure = pos;
        pos += 1;
        let calendar = pos;
        if data.creation_calendar {
            pos += 7 + 12;
        }
        let per_type = pos;
        let per_type_stride = n_windows + 2;
        pos += data.event_types.len() * per_type_stride;
        let value_sums = pos;
        let valued_slot = data
            .event_types
            .iter()
            .map(|t| data.valued_event_types.iter().position(|v| v == t))
            .collect();
        pos += data.valued_event_types.len();
        let per_channel = pos;
        pos += data.channels.len() * n_windows;
        let totals = pos;
        pos += n_windows + 4;
        let history_per_type = pos;
        let history_values = history_per_type + data.event_types.len() * HISTORY_PER_TYPE;
        let history_overall = history_values + data.valued_event_types.len() * n_windows;
        if data.whole_history {
            pos = history_overall + 1 + n_windows + HISTORY_OVERALL;
        }
        Layout {
            profile_offsets,
            tenure,
            calendar,
            per_type,
            per_type_stride,
            value_sums,
            valued_slot,
            per_channel,
            totals,
            history_per_type,
            history_values,
            history_overall,
            len: pos,
        }
    }
}

impl FeaturePlan {
    /// Feature names in model-input order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn n_features(&self) -> usize {
        self.layout.len
    }

    pub fn data(&self) -> &FeaturePlanData {
        &self.data
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn form(&self) -> Form {
        self.data.form
    }

    /// Profile fields in the order [`EntityHistory::profile`] must follow.
    pub fn profile_fields(&self) -> &[ProfileFeature] {
        &self.data.profile
    }

    /// Index of an event type, or `u16::MAX` when the plan does not know it.
    pub fn event_type_code(&self, event_type: &str) -> u16 {
        self.event_type_index
            .get(event_type)
            .copied()
            .unwrap_or(UNKNOWN)
    }

    /// Index of a channel, or `u16::MAX` when absent or unknown.
    pub fn channel_code(&self, channel: Option<&str>) -> u16 {
        channel
            .and_then(|c| self.channel_index.get(c).copied())
            .unwrap_or(UNKNOWN)
    }

    /// Encodes a categorical text value of profile field `field` (an index into
    /// [`FeaturePlan::profile_fields`]); unseen levels become `other`.
    pub fn level_code(&self, field: usize, value: Option<&str>) -> u16 {
        let levels = &self.level_index[field];
        let n = levels.len() as u16;
        match value {
            None => n + 1,
            Some(v) => levels.get(v).copied().unwrap_or(n),
        }
    }

    /// Encodes one request-time profile value of field `field`.
    pub fn encode_profile_value(
        &self,
        field: usize,
        value: &ProfileValue,
    ) -> Result<EncodedProfile, FeatureError> {
        let spec = &self.data.profile[field];
        match (&spec.kind, value) {
            (ProfileFeatureKind::Numeric, ProfileValue::Missing) => {
                Ok(EncodedProfile::Number(f64::NAN))
            }
            (ProfileFeatureKind::Numeric, ProfileValue::Number(x)) if fits_f32(*x) => {
                Ok(EncodedProfile::Number(*x))
            }
            (ProfileFeatureKind::Numeric, ProfileValue::Number(x)) => {
                Err(FeatureError::NotFinite {
                    field: spec.name.clone(),
                    value: *x,
                })
            }
            (ProfileFeatureKind::Numeric, ProfileValue::Text(text)) => {
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Ok(EncodedProfile::Number(f64::NAN));
                }
                match trimmed.parse::<f64>() {
                    Ok(x) if fits_f32(x) => Ok(EncodedProfile::Number(x)),
                    Ok(x) if x.is_finite() => Err(FeatureError::NotFinite {
                        field: spec.name.clone(),
                        value: x,
                    }),
                    _ => Err(FeatureError::NotANumber {
                        field: spec.name.clone(),
                        value: text.clone(),
                    }),
                }
            }
            (ProfileFeatureKind::Categorical { .. }, ProfileValue::Missing) => {
                Ok(EncodedProfile::Level(self.level_code(field, None)))
            }
            (ProfileFeatureKind::Categorical { .. }, ProfileValue::Text(text)) => {
                Ok(EncodedProfile::Level(self.level_code(field, Some(text))))
            }
            (ProfileFeatureKind::Categorical { .. }, ProfileValue::Number(x)) => {
                let text = number_as_level(*x);
                Ok(EncodedProfile::Level(self.level_code(field, Some(&text))))
            }
        }
    }

    /// The features of one entity as of `cutoff_ms`: the serving-time entry point. Events at
    /// or after the cutoff are ignored; events may come in any order.
    pub fn compute(
        &self,
        history: &EntityHistory,
        cutoff_ms: TimestampMs,
    ) -> Result<Vec<f32>, FeatureError> {
        let mut out = vec![0.0; self.n_features()];
        self.compute_into(history, cutoff_ms, &mut out)?;
        Ok(out)
    }

    /// [`FeaturePlan::compute`] into a caller's buffer of length [`FeaturePlan::n_features`].
    pub fn compute_into(
        &self,
        history: &EntityHistory,
        cutoff_ms: TimestampMs,
        out: &mut [f32],
    ) -> Result<(), FeatureError> {
        let fields = &self.data.profile;
        if history.profile.len() != fields.len() {
            return Err(FeatureError::ProfileLength {
                expected: fields.len(),
                got: history.profile.len(),
                names: fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let profile = history
            .profile
            .iter()
            .enumerate()
            .map(|(i, v)| self.encode_profile_value(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::with_capacity(history.events.len());
        for (index, event) in history.events.iter().enumerate() {
            if event.ts_ms >= cutoff_ms {
                continue;
            }
            let value = match event.value {
                Some(v) if !fits_f32(v) => {
                    return Err(FeatureError::EventValueNotFinite { index, value: v });
                }
                Some(v) => v,
                None => f64::NAN,
            };
            events.push(EncodedEvent {
                ts_ms: event.ts_ms,
                event_type: self.event_type_code(&event.event_type),
                channel: self.channel_code(event.channel.as_deref()),
                value,
            });
        }
        events.sort_by(canonical_order);
        self.compute_encoded(history.created_at_ms, &profile, &events, cutoff_ms, out);
        Ok(())
    }

    /// The kernel. `events` must be in [`canonical_order`] and all before `cutoff_ms`;
    /// `out` has length [`FeaturePlan::n_features`].
    pub fn compute_encoded(
        &self,
        created_at_ms: TimestampMs,
        profile: &[EncodedProfile],
        events: &[EncodedEvent],
        cutoff_ms: TimestampMs,
        out: &mut [f32],
    ) {
        let layout = &self.layout;
        debug_assert_eq!(out.len(), layout.len);
        debug_assert!(events.iter().all(|e| e.ts_ms < cutoff_ms));
        out.fill(0.0);
        for ((field, value), &offset) in self
            .data
            .profile
            .iter()
            .zip(profile)
            .zip(&layout.profile_offsets)
        {
            match (&field.kind, value) {
                (ProfileFeatureKind::Numeric, EncodedProfile::Number(x)) => {
                    out[offset] = *x as f32;
                }
                (ProfileFeatureKind::Categorical { levels }, EncodedProfile::Level(code)) => {
                    let slot = usize::from(*code).min(levels.len() + 1);
                    out[offset + slot] = 1.0;
                }
                // A value encoded for the other kind cannot come from this plan's encoders.
                (ProfileFeatureKind::Numeric, _) => out[offset] = f32::NAN,
                (ProfileFeatureKind::Categorical { levels }, _) => {
                    out[offset + levels.len() + 1] = 1.0;
                }
            }
        }
        if self.data.form == Form::Tabular {
            return;
        }
        let day = DAY_MS as f64;
        out[layout.tenure] = ((cutoff_ms - created_at_ms) as f64 / day) as f32;
        if self.data.creation_calendar
            && let Some(created) = DateTime::from_timestamp_millis(created_at_ms)
        {
            let weekday = created.weekday().num_days_from_monday() as usize;
            let month = created.month0() as usize;
            out[layout.calendar + weekday] = 1.0;
            out[layout.calendar + 7 + month] = 1.0;
        }

        let windows = &self.data.windows_days;
        let n_windows = windows.len();
        let window_starts: Vec<i64> = windows
            .iter()
            .map(|w| cutoff_ms - i64::from(*w) * DAY_MS)
            .collect();
        let longest_start = window_starts[n_windows - 1];
        let n_types = self.data.event_types.len();
        let n_channels = self.data.channels.len();
        let mut type_counts = vec![0u32; n_types * n_windows];
        let mut type_last = vec![i64::MIN; n_types];
        let mut type_decayed = vec![0f64; n_types];
        let n_valued = self.data.valued_event_types.len();
        // Value sums per valued type and window; the longest window's is the classic one.
        let mut value_sums = vec![0f64; n_valued * n_windows];
        let mut channel_counts = vec![0u32; n_channels * n_windows];
        let mut channel_seen = vec![false; n_channels];
        let mut totals = vec![0u32; n_windows];
        let mut decayed_total = 0f64;
        let mut last_any = i64::MIN;
        let recent_start = cutoff_ms - TREND_RECENT_DAYS * DAY_MS;
        let prior_start = recent_start - TREND_PRIOR_DAYS * DAY_MS;
        let (mut n_recent, mut n_prior) = (0u32, 0u32);
        let half_life = self.data.half_life_days;
        // Allocated only for plans with the block: the score route computes old plans too.
        let mut lifetime = self
            .data
            .whole_history
            .then(|| HistoryTally::new(n_types, n_valued, n_windows));

        for event in events {
            let t = usize::from(event.event_type);
            if t >= n_types {
                continue;
            }
            let age_days = (cutoff_ms - event.ts_ms) as f64 / day;
            let decay = (-age_days / half_life).exp2();
            type_decayed[t] += decay;
            decayed_total += decay;
            type_last[t] = type_last[t].max(event.ts_ms);
            last_any = last_any.max(event.ts_ms);
            if event.ts_ms >= recent_start {
                n_recent += 1;
            } else if event.ts_ms >= prior_start {
                n_prior += 1;
            }
            let c = usize::from(event.channel);
            let valued = layout.valued_slot[t].filter(|_| !event.value.is_nan());
            for (w, &start) in window_starts.iter().enumerate() {
                if event.ts_ms >= start {
                    type_counts[t * n_windows + w] += 1;
                    totals[w] += 1;
                    if c < n_channels {
                        channel_counts[c * n_windows + w] += 1;
                    }
                    if let Some(slot) = valued {
                        value_sums[slot * n_windows + w] += event.value;
                    }
                }
            }
            if event.ts_ms >= longest_start && c < n_channels {
                channel_seen[c] = true;
            }
            if let Some(lifetime) = lifetime.as_mut() {
                lifetime.add(event, t, valued, &window_starts);
            }
        }

        let recency = |last: i64| -> f32 {
            if last == i64::MIN {
                RECENCY_CAP_DAYS as f32
            } else {
                (((cutoff_ms - last) as f64 / day).min(RECENCY_CAP_DAYS)) as f32
            }
        };
        for t in 0..n_types {
            let base = layout.per_type + t * layout.per_type_stride;
            for w in 0..n_windows {
                out[base + w] = type_counts[t * n_windows + w] as f32;
            }
            out[base + n_windows] = recency(type_last[t]);
            out[base + n_windows + 1] = type_decayed[t] as f32;
        }
        for slot in 0..n_valued {
            out[layout.value_sums + slot] = value_sums[slot * n_windows + n_windows - 1] as f32;
        }
        for (i, count) in channel_counts.iter().enumerate() {
            out[layout.per_channel + i] = *count as f32;
        }
        for (w, total) in totals.iter().enumerate() {
            out[layout.totals + w] = *total as f32;
        }
        let rest = layout.totals + n_windows;
        out[rest] = channel_seen.iter().filter(|s| **s).count() as f32;
        out[rest + 1] = decayed_total as f32;
        out[rest + 2] = recency(last_any);
        out[rest + 3] =
            ((1.0 + f64::from(n_recent)) / (1.0 + f64::from(n_prior) / 2.0)).ln() as f32;
        let Some(lifetime) = lifetime else {
            return;
        };

        for (t, ((days, count), last)) in lifetime
            .type_days
            .iter()
            .zip(&lifetime.type_counts)
            .zip(&type_last)
            .enumerate()
        {
            let base = layout.history_per_type + t * HISTORY_PER_TYPE;
            let gap = days.mean_gap();
            out[base] = *count as f32;
            out[base + 1] = days.count as f32;
            out[base + 2] = gap as f32;
            out[base + 3] = log_ratio(f64::from(recency(*last)), gap) as f32;
        }
        for slot in 0..n_valued {
            let base = layout.history_values + slot * n_windows;
            for w in 0..n_windows - 1 {
                out[base + w] = value_sums[slot * n_windows + w] as f32;
            }
            out[base + n_windows - 1] = lifetime.values[slot] as f32;
        }
        let base = layout.history_overall;
        out[base] = lifetime.events as f32;
        for w in 0..n_windows {
            out[base + 1 + w] = lifetime.window_days[w].count as f32;
        }
        let days = &lifetime.days;
        let gap = days.mean_gap();
        let rest = base + 1 + n_windows;
        out[rest] = days.count as f32;
        out[rest + 1] = lifetime
            .first_ts
            .map_or(0.0, |first| ((cutoff_ms - first) as f64 / day) as f32);
        out[rest + 2] = gap as f32;
        out[rest + 3] = days.last_gap() as f32;
        out[rest + 4] = log_ratio(days.last_gap(), gap) as f32;
        out[rest + 5] = log_ratio(f64::from(recency(last_any)), gap) as f32;
    }
}

/// `ln((1 + a) / (1 + b))` for day counts: 0 when equal, above 0 when `a` is longer.
fn log_ratio(a: f64, b: f64) -> f64 {
    ((1.0 + a) / (1.0 + b)).ln()
}

/// Distinct UTC days seen in time order, and the gaps between them.
#[derive(Clone, Copy)]
struct ActiveDays {
    count: u32,
    first: i64,
    last: i64,
    /// Days between the last two active days.
    last_gap: i64,
}

impl ActiveDays {
    const NONE: ActiveDays = ActiveDays {
        count: 0,
        first: i64::MIN,
        last: i64::MIN,
        last_gap: 0,
    };

    /// Counts `day` when it is later than the last one (events come in time order).
    fn see(&mut self, day: i64) {
        if self.count == 0 {
            self.first = day;
        } else if day > self.last {
            self.last_gap = day - self.last;
        } else {
            return;
        }
        self.count += 1;
        self.last = day;
    }

    /// Average days between active days, capped; the cap with fewer than two.
    fn mean_gap(&self) -> f64 {
        if self.count < 2 {
            return RECENCY_CAP_DAYS;
        }
        ((self.last - self.first) as f64 / f64::from(self.count - 1)).min(RECENCY_CAP_DAYS)
    }

    /// Days between the last two active days, capped; the cap with fewer than two.
    fn last_gap(&self) -> f64 {
        if self.count < 2 {
            return RECENCY_CAP_DAYS;
        }
        (self.last_gap as f64).min(RECENCY_CAP_DAYS)
    }
}

/// The kernel's running totals over the whole history (the whole-history block).
struct HistoryTally {
    type_counts: Vec<u32>,
    type_days: Vec<ActiveDays>,
    values: Vec<f64>,
    events: u32,
    days: ActiveDays,
    window_days: Vec<ActiveDays>,
    first_ts: Option<TimestampMs>,
}

impl HistoryTally {
    fn new(n_types: usize, n_valued: usize, n_windows: usize) -> HistoryTally {
        HistoryTally {
            type_counts: vec![0; n_types],
            type_days: vec![ActiveDays::NONE; n_types],
            values: vec![0.0; n_valued],
            events: 0,
            days: ActiveDays::NONE,
            window_days: vec![ActiveDays::NONE; n_windows],
            first_ts: None,
        }
    }

    /// One event of known type `t`, in [`canonical_order`]; `valued` is its value slot when
    /// it carries a value.
    fn add(
        &mut self,
        event: &EncodedEvent,
        t: usize,
        valued: Option<usize>,
        window_starts: &[i64],
    ) {
        let day = event.ts_ms.div_euclid(DAY_MS);
        self.type_counts[t] += 1;
        self.type_days[t].see(day);
        if let Some(slot) = valued {
            self.values[slot] += event.value;
        }
        self.events += 1;
        self.days.see(day);
        for (days, &start) in self.window_days.iter_mut().zip(window_starts) {
            if event.ts_ms >= start {
                days.see(day);
            }
        }
        self.first_ts.get_or_insert(event.ts_ms);
    }
}

/// How a number given for a categorical field is read as a level: integral values without a
/// fractional part (`13085`, not `13085.0`), others in Rust's shortest round-trip form. The
/// loader renders numeric ids and levels the same way.
pub fn number_as_level(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}
