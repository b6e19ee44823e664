//! The features of a plan grouped into things a sales rep recognises, and each group's value
//! in words.
//!
//! A model explains a score feature by feature (one contribution per column), but a column
//! such as `count_demo_request_30d` or `industry=<other>` means little on its own. A
//! [`FeatureGroup`] gathers the columns of one profile field (a numeric column, or a
//! categorical field's whole one-hot block), of one event type (its counts, recency, decay
//! and value sum), of one channel, of the creation time, and of overall activity. Because
//! the contributions are additive (linear terms and TreeSHAP values alike), a group's
//! contribution is the sum of its columns', and the groups' contributions still add up to the
//! score. [`FeaturePlan::describe_group`] renders a group's value from the computed feature
//! row, e.g. `2 in the last 30 days, last one 3 days ago`.

use crate::history::ProfileValue;
use crate::plan::{
    FeaturePlan, HISTORY_OVERALL, HISTORY_PER_TYPE, ProfileFeatureKind, RECENCY_CAP_DAYS,
};
use crate::spec::Form;

/// One group of feature columns that is explained as one reason.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureGroup {
    /// What the group is, in words: the profile field's name, `demo_request events`, `events
    /// via email`, `tenure`, `creation date`, `overall activity`.
    pub label: String,
    /// Which part of the plan it comes from.
    pub source: GroupSource,
    /// The feature columns (indices into the feature row) it sums.
    pub columns: Vec<usize>,
}

/// Where a [`FeatureGroup`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSource {
    /// Profile field `i` of [`FeaturePlan::profile_fields`].
    Profile(usize),
    /// Days since the entity was created.
    Tenure,
    /// Weekday and month of creation.
    CreationCalendar,
    /// Event type `i` of the plan's event types.
    EventType(usize),
    /// Channel `i` of the plan's channels.
    Channel(usize),
    /// Totals over all events: counts, distinct channels, decay, recency, trend.
    Activity,
}

impl FeaturePlan {
    /// The plan's columns grouped into reasons, covering every column exactly once, in
    /// column order of each group's first column.
    pub fn feature_groups(&self) -> Vec<FeatureGroup> {
        let data = self.data();
        let layout = self.layout();
        let mut groups = Vec::new();
        for (i, field) in data.profile.iter().enumerate() {
            let width = match &field.kind {
                ProfileFeatureKind::Numeric => 1,
                ProfileFeatureKind::Categorical { levels } => levels.len() + 2,
            };
            let start = layout.profile_offsets[i];
            groups.push(FeatureGroup {
                label: field.name.clone(),
                source: GroupSource::Profile(i),
                columns: (start..start + width).collect(),
            });
        }
        if data.form == Form::Tabular {
            return groups;
        }
        groups.push(FeatureGroup {
            label: "tenure".into(),
            source: GroupSource::Tenure,
            columns: vec![layout.tenure],
        });
        if data.creation_calendar {
            groups.push(FeatureGroup {
                label: "creation date".into(),
                source: GroupSource::CreationCalendar,
                columns: (layout.calendar..layout.calendar + 19).collect(),
            });
        }
        for (t, name) in data.event_types.iter().enumerate() {
            let start = layout.per_type + t * layout.per_type_stride;
            let mut columns: Vec<usize> = (start..start + layout.per_type_stride).collect();
            if let Some(slot) = layout.valued_slot[t] {
                columns.push(layout.value_sums + slot);
            }
            if data.whole_history {
                let start = layout.history_per_type + t * HISTORY_PER_TYPE;
                columns.extend(start..start + HISTORY_PER_TYPE);
                if let Some(slot) = layout.valued_slot[t] {
                    let start = layout.history_values + slot * data.windows_days.len();
                    columns.extend(start..start + data.windows_days.len());
                }
            }
            groups.push(FeatureGroup {
                label: format!("{} events", humanise(name)),
                source: GroupSource::EventType(t),
                columns,
            });
        }
        let n_windows = data.windows_days.len();
        for (c, name) in data.channels.iter().enumerate() {
            let start = layout.per_channel + c * n_windows;
            groups.push(FeatureGroup {
                label: format!("events via {}", humanise(name)),
                source: GroupSource::Channel(c),
                columns: (start..start + n_windows).collect(),
            });
        }
        let mut columns: Vec<usize> = (layout.totals..layout.totals + n_windows + 4).collect();
        if data.whole_history {
            columns.extend(layout.history_overall..layout.len);
        }
        groups.push(FeatureGroup {
            label: "overall activity".into(),
            source: GroupSource::Activity,
            columns,
        });
        groups
    }

    /// The value of `group` for the feature row `row` (as computed by
    /// [`FeaturePlan::compute`]), in words. `raw` is the profile value as the caller sent it,
    /// shown for a categorical level the plan groups as other.
    pub fn describe_group(
        &self,
        group: &FeatureGroup,
        row: &[f32],
        raw: Option<&ProfileValue>,
    ) -> String {
        let data = self.data();
        let layout = self.layout();
        let windows = &data.windows_days;
        match group.source {
            GroupSource::Profile(i) => match &data.profile[i].kind {
                ProfileFeatureKind::Numeric => {
                    let x = row[layout.profile_offsets[i]];
                    if x.is_nan() {
                        "missing".into()
                    } else {
                        number(f64::from(x))
                    }
                }
                ProfileFeatureKind::Categorical { levels } => {
                    let start = layout.profile_offsets[i];
                    let hot = (0..levels.len() + 2).find(|k| row[start + k] == 1.0);
                    match hot {
                        Some(k) if k < levels.len() => levels[k].clone(),
                        Some(k) if k == levels.len() => match raw {
                            Some(ProfileValue::Text(text)) => format!("{text} (rare)"),
                            Some(ProfileValue::Number(x)) => format!("{} (rare)", number(*x)),
                            _ => "a rare value".into(),
                        },
                        _ => "missing".into(),
                    }
                }
            },
            GroupSource::Tenure => days(f64::from(row[layout.tenure]), "created"),
            GroupSource::CreationCalendar => {
                let start = layout.calendar;
                let weekday = (0..7).find(|d| row[start + d] == 1.0);
                let month = (0..12).find(|m| row[start + 7 + m] == 1.0);
                match (weekday, month) {
                    (Some(d), Some(m)) => {
                        format!("a {} in {}", WEEKDAY_NAMES[d], MONTH_NAMES[m])
                    }
                    _ => "unknown".into(),
                }
            }
            GroupSource::EventType(t) => {
                let start = layout.per_type + t * layout.per_type_stride;
                let n = windows.len();
                let mut text = counts_in_windows(&row[start..start + n], windows);
                let recency = f64::from(row[start + n]);
                if recency < RECENCY_CAP_DAYS {
                    text.push_str(&format!(", last one {}", ago(recency)));
                }
                if let Some(slot) = layout.valued_slot[t] {
                    let sum = row[layout.value_sums + slot];
                    if sum != 0.0 {
                        text.push_str(&format!(
                            ", value {} in {} days",
                            number(f64::from(sum)),
                            windows[n - 1]
                        ));
                    }
                }
                if data.whole_history {
                    let h = layout.history_per_type + t * HISTORY_PER_TYPE;
                    text.push_str(&in_all(row[h], row[h + 1], row[h + 2]));
                    if let Some(slot) = layout.valued_slot[t] {
                        let lifetime = row[layout.history_values + (slot + 1) * n - 1];
                        if lifetime != 0.0 {
                            text.push_str(&format!(
                                ", value {} in all",
                                number(f64::from(lifetime))
                            ));
                        }
                    }
                }
                text
            }
            GroupSource::Channel(c) => {
                let start = layout.per_channel + c * windows.len();
                counts_in_windows(&row[start..start + windows.len()], windows)
            }
            GroupSource::Activity => {
                let n = windows.len();
                let totals = &row[layout.totals..layout.totals + n];
                let mut text = counts_in_windows(totals, windows);
                let recency = f64::from(row[layout.totals + n + 2]);
                if recency < RECENCY_CAP_DAYS {
                    text.push_str(&format!(", last one {}", ago(recency)));
                }
                let trend = f64::from(row[layout.totals + n + 3]).exp();
                if (trend - 1.0).abs() >= 0.25 {
                    text.push_str(&format!(
                        ", {} than in the 60 days before",
                        if trend > 1.0 { "busier" } else { "quieter" }
                    ));
                }
                if data.whole_history {
                    let h = layout.history_overall;
                    let rest = h + 1 + n;
                    debug_assert_eq!(rest + HISTORY_OVERALL, layout.len);
                    text.push_str(&in_all(row[h], row[rest], row[rest + 2]));
                    let first = f64::from(row[rest + 1]);
                    if row[h] > 0.0 {
                        text.push_str(&format!(", first one {}", ago(first)));
                    }
                }
                text
            }
        }
    }
}

const WEEKDAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `demo_request` → `demo request`.
fn humanise(name: &str) -> String {
    name.replace('_', " ")
}

/// `2 in the last 30 days (5 in 90 days)`: the shortest window with an event, and the
/// longest when it has more; `none in the last 90 days` without events.
fn counts_in_windows(counts: &[f32], windows: &[u32]) -> String {
    let n = counts.len();
    let longest = (counts[n - 1], windows[n - 1]);
    match counts.iter().position(|&c| c > 0.0) {
        None => format!("none in the last {} days", longest.1),
        Some(k) if k == n - 1 || counts[k] == longest.0 => {
            format!(
                "{} in the last {} days",
                number(f64::from(counts[k])),
                windows[k]
            )
        }
        Some(k) => format!(
            "{} in the last {} days ({} in {} days)",
            number(f64::from(counts[k])),
            windows[k],
            number(f64::from(longest.0)),
            longest.1
        ),
    }
}

/// `, 25 in all on 12 days, about 20 days apart`: the whole history's count, its
/// active days, and their mean gap when there are at least two; empty without events.
fn in_all(count: f32, active_days: f32, mean_gap: f32) -> String {
    if count <= 0.0 {
        return String::new();
    }
    let days = if active_days == 1.0 {
        "1 day".to_string()
    } else {
        format!("{} days", number(f64::from(active_days)))
    };
    let mut text = format!(", {} in all on {days}", number(f64::from(count)));
    if active_days >= 2.0 {
        let gap = (f64::from(mean_gap) * 10.0).round() / 10.0;
        text.push_str(&format!(", about {} days apart", number(gap)));
    }
    text
}

/// `3 days ago`, `today`, `1 day ago`.
fn ago(days_ago: f64) -> String {
    let d = days_ago.floor();
    if d < 1.0 {
        "today".into()
    } else if d < 2.0 {
        "1 day ago".into()
    } else {
        format!("{d:.0} days ago")
    }
}

/// `created 3 days ago`, `created today`.
fn days(days_ago: f64, verb: &str) -> String {
    format!("{verb} {}", ago(days_ago))
}

/// A number as a person writes it: integers without decimals, others with at most 3
/// decimals (`0.125`, `12.5`, `1234.568`).
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let text = format!("{x:.3}");
        let text = text.trim_end_matches('0');
        text.trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use chrono::{DateTime, Datelike};

    use super::*;
    use crate::history::{DAY_MS, EntityHistory, Event};
    use crate::plan::{FeaturePlanParams, PlanInputs, ProfileInput};
    use crate::spec::{ColumnKind, FeatureOptions};

    /// Weekday (from Monday) and month (from 0) of a timestamp.
    fn calendar_of(ts_ms: i64) -> (usize, usize) {
        let t = DateTime::from_timestamp_millis(ts_ms).expect("valid");
        (
            t.weekday().num_days_from_monday() as usize,
            t.month0() as usize,
        )
    }

    fn plan(creation_calendar: bool) -> FeaturePlan {
        let levels: HashMap<String, usize> =
            [("software".to_string(), 50), ("retail".to_string(), 40)].into();
        FeaturePlanParams::new(FeatureOptions {
            creation_calendar,
            ..FeatureOptions::default()
        })
        .fit(&PlanInputs {
            form: Form::Events,
            profile: vec![
                ProfileInput {
                    name: "industry".into(),
                    kind: ColumnKind::Categorical,
                    level_counts: levels,
                },
                ProfileInput {
                    name: "employees".into(),
                    kind: ColumnKind::Numeric,
                    level_counts: HashMap::new(),
                },
            ],
            event_types: BTreeMap::from([
                ("demo_request".to_string(), false),
                ("purchase".to_string(), true),
            ]),
            channels: vec!["email".into(), "web".into()],
        })
        .expect("plan")
    }

    #[test]
    fn groups_cover_every_column_exactly_once() {
        for calendar in [false, true] {
            let plan = plan(calendar);
            let mut seen = vec![0; plan.n_features()];
            for group in plan.feature_groups() {
                for &c in &group.columns {
                    seen[c] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        }
        let labels: Vec<String> = plan(true)
            .feature_groups()
            .into_iter()
            .map(|g| g.label)
            .collect();
        assert_eq!(
            labels,
            [
                "industry",
                "employees",
                "tenure",
                "creation date",
                "demo request events",
                "purchase events",
                "events via email",
                "events via web",
                "overall activity"
            ]
        );
    }

    #[test]
    fn each_group_is_described_from_the_row() {
        let plan = plan(true);
        let created = 1_700_000_000_000; // 2023-11-14, a Tuesday
        let cutoff = created + 40 * DAY_MS;
        let event = |days_before: i64, event_type: &str, value: Option<f64>| Event {
            ts_ms: cutoff - days_before * DAY_MS - 1000,
            event_type: event_type.into(),
            channel: Some("email".into()),
            value,
        };
        let history = EntityHistory {
            created_at_ms: created,
            profile: vec![
                ProfileValue::Text("zoology".into()),
                ProfileValue::Number(12.5),
            ],
            events: vec![
                event(3, "demo_request", None),
                event(20, "demo_request", None),
                event(35, "purchase", Some(99.5)),
            ],
        };
        let row = plan.compute(&history, cutoff).expect("features");
        let describe = |label: &str| {
            let group = plan
                .feature_groups()
                .into_iter()
                .find(|g| g.label == label)
                .expect(label);
            let raw = match group.source {
                GroupSource::Profile(i) => Some(&history.profile[i]),
                _ => None,
            };
            plan.describe_group(&group, &row, raw)
        };
        assert_eq!(describe("industry"), "zoology (rare)");
        assert_eq!(describe("employees"), "12.5");
        assert_eq!(describe("tenure"), "created 40 days ago");
        assert_eq!(calendar_of(created), (1, 10));
        assert_eq!(describe("creation date"), "a Tuesday in November");
        assert_eq!(
            describe("demo request events"),
            "1 in the last 7 days (2 in 90 days), last one 3 days ago, 2 in all on 2 days, \
             about 17 days apart"
        );
        assert_eq!(
            describe("purchase events"),
            "1 in the last 90 days, last one 35 days ago, value 99.5 in 90 days, 1 in all on 1 \
             day, value 99.5 in all"
        );
        assert_eq!(
            describe("events via email"),
            "1 in the last 7 days (3 in 90 days)"
        );
        assert_eq!(describe("events via web"), "none in the last 90 days");
        assert_eq!(
            describe("overall activity"),
            "1 in the last 7 days (3 in 90 days), last one 3 days ago, busier than in the 60 \
             days before, 3 in all on 3 days, about 16 days apart, first one 35 days ago"
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.125), "0.125");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(1234.5678), "1234.568");
        assert_eq!(number(-2.0), "-2");
    }
}
