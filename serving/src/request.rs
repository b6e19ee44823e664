//! The score requests' JSON and its checks against a model's feature plan.
//!
//! One entity is
//!
//! ```json
//! {"id": "L-1042", "as_of": "2026-11-29T10:00:00Z", "created_at": "2026-11-02T08:30:00Z",
//!  "profile": {"industry": "software", "employees": 120},
//!  "events": [{"ts": "2026-11-28T16:05:00Z", "type": "demo_request", "channel": "web"}]}
//! ```
//!
//! for event-form models, or `{"id": "...", "row": {"Lead Origin": "API", ...}}` for tabular
//! ones. Times are RFC 3339 text or integer milliseconds since 1970. [`parse_json`] reads a
//! body and names the JSON path of any problem (`entities[3].events[0].ts`);
//! [`EntityRequest::to_history`] checks an entity against the model (form, required fields,
//! times not in the future, profile values of the right type) and builds the
//! [`EntityHistory`] the feature plan computes from. Profile fields the model does not use
//! are ignored and reported back; fields it uses but the request lacks count as missing, as
//! in training.

use std::collections::HashMap;
use std::fmt;

use features::FeaturePlan;
use features::history::{EntityHistory, Event, ProfileValue, TimestampMs};
use features::plan::fits_f32;
use features::spec::Form;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// One lead or customer to score.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRequest {
    /// The caller's id, echoed back (never logged).
    #[serde(default)]
    pub id: Option<String>,
    /// The moment to score at; the server's clock when absent.
    #[serde(default, deserialize_with = "present")]
    pub as_of: Option<Timestamp>,
    /// When the lead or customer was created (event-form models).
    #[serde(default, deserialize_with = "present")]
    pub created_at: Option<Timestamp>,
    /// Profile fields by name (event-form models).
    #[serde(default, deserialize_with = "present")]
    pub profile: Option<Fields>,
    /// Recent events, any order (event-form models).
    #[serde(default, deserialize_with = "present")]
    pub events: Option<Vec<EventRequest>>,
    /// The row's columns by name (tabular models).
    #[serde(default, deserialize_with = "present")]
    pub row: Option<Fields>,
}

/// An optional field that, when given, must be a value: `"row": null` is refused like any
/// other wrong type (`id`, `channel` and `value` take `null` for absent, as documented).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A batch: `{"entities": [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub entities: Vec<EntityRequest>,
}

/// One event of an entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    pub ts: Timestamp,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
}

/// Milliseconds since 1970, read from RFC 3339 text or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub TimestampMs);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

const TIMESTAMP_EXPECTED: &str =
    "an RFC 3339 time such as \"2026-11-29T10:00:00Z\" or integer milliseconds since 1970";

/// The earliest and latest accepted times in milliseconds since 1970: every time RFC 3339
/// can write (years 0000 to 9999, with any offset), i.e. -0001-12-31T00:00:00Z to
/// 10000-01-01T23:59:59.999Z. Outside, an integer is a mistake, and differences of times
/// could overflow. The OpenAPI document states the same bounds.
pub const EARLIEST_MS: i64 = -62_167_305_600_000;
pub const LATEST_MS: i64 = 253_402_387_199_999;

fn in_range<E: de::Error>(ms: i64) -> Result<Timestamp, E> {
    if (EARLIEST_MS..=LATEST_MS).contains(&ms) {
        Ok(Timestamp(ms))
    } else {
        Err(E::custom(format!(
            "{ms} ms is not between {EARLIEST_MS} and {LATEST_MS} (years 0000 to 9999); \
             expected {TIMESTAMP_EXPECTED}"
        )))
    }
}

impl Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TIMESTAMP_EXPECTED)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        in_range(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        in_range(i64::try_from(v).unwrap_or(i64::MAX))
    }

    /// `1700000000000.0` is an integer to JSON Schema (and to JavaScript): accepted when it
    /// has no fraction.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            in_range(v as i64)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        let time = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| {
            E::custom(format!(
                "{v:?} is not a time ({e}); expected {TIMESTAMP_EXPECTED}"
            ))
        })?;
        in_range(time.timestamp_millis())
    }
}

/// A JSON object of field values, in the order sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(String, ProfileValue)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

/// Most fields in one profile or row: far more than any CRM export has, and it bounds the
/// work and memory one object costs (each field is held, checked and, when the model does
/// not use it, echoed back in `ignored_fields`).
pub const MAX_FIELDS: usize = 10_000;

/// Objects of up to this many fields are checked for duplicates by a scan.
const LINEAR_SCAN_MAX: usize = 32;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of field values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields: Vec<(String, ProfileValue)> =
            Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(name) = map.next_key::<String>()? {
            if fields.len() == MAX_FIELDS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_FIELDS} fields; a profile or row has at most {MAX_FIELDS}"
                )));
            }
            let value = map.next_value::<FieldValue>()?;
            fields.push((name, value.0));
        }
        if let Some(name) = repeated_name(&fields) {
            return Err(de::Error::custom(format!("field `{name}` is given twice")));
        }
        Ok(Fields(fields))
    }
}

/// A name that stands twice among `fields`, if any. A scan of the few fields a profile has
/// is fastest; past [`LINEAR_SCAN_MAX`] the names are sorted, so a body of many thousands of
/// fields costs `n log n`, not `n²` (80,000 fields took 9 s of CPU scanned pairwise), and
/// no name is copied.
fn repeated_name(fields: &[(String, ProfileValue)]) -> Option<&str> {
    if fields.len() <= LINEAR_SCAN_MAX {
        return fields.iter().enumerate().find_map(|(i, (name, _))| {
            fields[..i]
                .iter()
                .any(|(earlier, _)| earlier == name)
                .then_some(name.as_str())
        });
    }
    let mut names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// One field's value: a number, text, `true`/`false` (read as the text `true`/`false`) or
/// `null` (missing).
struct FieldValue(ProfileValue);

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a string, true, false or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Missing))
    }

    fn visit_none<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Missing))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Text(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Number(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Number(v as f64)))
    }

    /// Numbers beyond `f32` are refused whether or not the model uses the field, as the
    /// OpenAPI document says.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldValue, E> {
        if fits_f32(v) {
            Ok(FieldValue(ProfileValue::Number(v)))
        } else {
            Err(E::custom(format!(
                "{v} is not a number within ±3.4e38, the largest value a model takes"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Text(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue(ProfileValue::Text(v)))
    }
}

/// Reads a JSON body into `T`; a problem is a 400 naming its JSON path (or 415 for a body
/// that is not UTF-8 JSON at all is still a 400: the content is the problem).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also read a struct from an array.
    if let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
    {
        return Err(ApiError::bad_request(
            "the body is a JSON object ({...})",
            None,
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = (path != ".").then_some(path);
        let message = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("malformed JSON: {inner}")
            }
            _ => match &field {
                Some(field) => format!("{field}: {inner}"),
                None => inner.to_string(),
            },
        };
        ApiError::bad_request(message, field.as_deref())
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}"), None))?;
    Ok(value)
}

/// What the request checks need besides the entity: the model's plan and the clock.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub plan: &'a FeaturePlan,
    /// Profile field name → index in the plan.
    pub profile_index: &'a HashMap<String, usize>,
    /// The server's clock.
    pub now_ms: TimestampMs,
    /// How far in the future a time may be (clock skew between systems).
    pub allowed_skew_ms: i64,
}

/// An entity checked against a model: ready for the feature plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedEntity {
    pub id: Option<String>,
    pub history: EntityHistory,
    pub cutoff_ms: TimestampMs,
    /// Fields sent that the model does not use.
    pub ignored_fields: Vec<String>,
    /// Where the entity is in the request (`entities[3].` in a batch, else empty), for
    /// errors found when its features are computed.
    pub path_prefix: String,
}

impl EntityRequest {
    /// Checks the entity against the model; `at` prefixes field names (`entities[3].`) in
    /// batch requests.
    pub fn to_history(self, ctx: &CheckContext<'_>, at: &str) -> Result<CheckedEntity, ApiError> {
        let field = |name: &str| format!("{at}{name}");
        let bad = |name: &str, message: String| {
            let path = field(name);
            ApiError::bad_request(format!("{path}: {message}"), Some(&path))
        };
        let latest_allowed = ctx.now_ms.saturating_add(ctx.allowed_skew_ms);
        let as_of = match self.as_of {
            Some(Timestamp(t)) if t > latest_allowed => {
                return Err(bad("as_of", format!("{} is in the future", show_time(t))));
            }
            Some(Timestamp(t)) => Some(t),
            None => None,
        };
        // Without `as_of` the entity is scored now. A time up to the allowed skew ahead of
        // the server's clock is the caller's clock running ahead, not a future: it counts as
        // now (the scoring moment moves just past it), so a lead created or active "now" by
        // its CRM's clock is scored with that creation and those events.
        let mut cutoff_ms = as_of.unwrap_or(ctx.now_ms);
        let (fields, fields_name, created_at_ms, events) = match ctx.plan.form() {
            Form::Events => {
                if self.row.is_some() {
                    return Err(bad(
                        "row",
                        "this model scores event-form entities: send `profile`, `created_at` and `events`, not `row`".into(),
                    ));
                }
                let Some(profile) = self.profile else {
                    return Err(bad("profile", "required field is missing".into()));
                };
                let Some(Timestamp(created)) = self.created_at else {
                    return Err(bad("created_at", "required field is missing".into()));
                };
                if as_of.is_none() && created <= latest_allowed {
                    cutoff_ms = cutoff_ms.max(created);
                }
                if created > cutoff_ms {
                    return Err(bad(
                        "created_at",
                        format!(
                            "{} is after the scoring time {}",
                            show_time(created),
                            show_time(cutoff_ms)
                        ),
                    ));
                }
                let mut events = Vec::with_capacity(self.events.as_ref().map_or(0, Vec::len));
                let mut latest_event = None;
                for (i, event) in self.events.into_iter().flatten().enumerate() {
                    if event.ts.0 > latest_allowed {
                        return Err(bad(
                            &format!("events[{i}].ts"),
                            format!("{} is in the future", show_time(event.ts.0)),
                        ));
                    }
                    latest_event = latest_event.max(Some(event.ts.0));
                    if let Some(v) = event.value
                        && !fits_f32(v)
                    {
                        return Err(bad(
                            &format!("events[{i}].value"),
                            format!(
                                "{v} is not a finite number within ±3.4e38, the largest \
                                 value a model takes"
                            ),
                        ));
                    }
                    events.push(Event {
                        ts_ms: event.ts.0,
                        event_type: event.event_type,
                        channel: event.channel,
                        value: event.value,
                    });
                }
                if as_of.is_none()
                    && let Some(latest) = latest_event
                {
                    // Events are counted strictly before the scoring moment.
                    cutoff_ms = cutoff_ms.max(latest.saturating_add(1));
                }
                (profile, "profile", created, events)
            }
            Form::Tabular => {
                for (name, given) in [
                    ("profile", self.profile.is_some()),
                    ("created_at", self.created_at.is_some()),
                    ("events", self.events.is_some()),
                ] {
                    if given {
                        return Err(bad(
                            name,
                            "this model scores tabular rows: send the columns as `row`".into(),
                        ));
                    }
                }
                let Some(row) = self.row else {
                    return Err(bad("row", "required field is missing".into()));
                };
                (row, "row", cutoff_ms, Vec::new())
            }
        };

        let mut profile = vec![ProfileValue::Missing; ctx.plan.profile_fields().len()];
        let mut ignored_fields = Vec::new();
        for (name, value) in fields.0 {
            match ctx.profile_index.get(&name) {
                Some(&i) => {
                    ctx.plan.encode_profile_value(i, &value).map_err(|e| {
                        bad(&format!("{fields_name}.{name}"), feature_error_text(&e))
                    })?;
                    profile[i] = value;
                }
                None => ignored_fields.push(name),
            }
        }
        Ok(CheckedEntity {
            id: self.id,
            history: EntityHistory {
                created_at_ms,
                profile,
                events,
            },
            cutoff_ms,
            ignored_fields,
            path_prefix: at.to_owned(),
        })
    }
}

/// A feature error's message without the field name (the path names it).
fn feature_error_text(e: &features::plan::FeatureError) -> String {
    use features::plan::FeatureError;
    match e {
        FeatureError::NotANumber { value, .. } => format!("expected a number, got {value:?}"),
        FeatureError::NotFinite { value, .. } => format!("{value} is not a finite number"),
        other => other.to_string(),
    }
}

/// `ms` as RFC 3339 text in UTC with milliseconds.
pub fn show_time(ms: TimestampMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_from_text_or_milliseconds() {
        let t: Timestamp = serde_json::from_str("\"2026-11-29T10:00:00Z\"").unwrap();
        assert_eq!(t.0, 1_795_946_400_000);
        let t: Timestamp = serde_json::from_str("\"2026-11-29T11:00:00+01:00\"").unwrap();
        assert_eq!(t.0, 1_795_946_400_000);
        let t: Timestamp = serde_json::from_str("1795946400000").unwrap();
        assert_eq!(t.0, 1_795_946_400_000);
        // A number without a fraction is an integer (JSON Schema says so).
        let t: Timestamp = serde_json::from_str("1795946400000.0").unwrap();
        assert_eq!(t.0, 1_795_946_400_000);
        for extreme in [
            "-9223372036854775808",
            "18446744073709551615",
            "-62167305600001",
            "253402387200000",
        ] {
            let err = serde_json::from_str::<Timestamp>(extreme).unwrap_err();
            assert!(err.to_string().contains("(years 0000 to 9999)"), "{err}");
        }
        // Times before 1970 are times, and every RFC 3339 text is within the bounds.
        let t: Timestamp = serde_json::from_str("\"1969-12-31T23:59:59Z\"").unwrap();
        assert_eq!(t.0, -1000);
        let t: Timestamp = serde_json::from_str("\"0000-01-01T00:00:00+23:59\"").unwrap();
        assert!(t.0 >= EARLIEST_MS);
        let t: Timestamp = serde_json::from_str("\"9999-12-31T23:59:59.999-23:59\"").unwrap();
        assert!(t.0 <= LATEST_MS);
        for bound in [EARLIEST_MS, LATEST_MS] {
            let t: Timestamp = serde_json::from_str(&bound.to_string()).unwrap();
            assert_eq!(t.0, bound);
        }
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        assert!(serde_json::from_str::<Timestamp>("1.5").is_err());
    }

    #[test]
    fn field_values_keep_their_type_and_refuse_objects() {
        let fields: Fields =
            serde_json::from_str(r#"{"a": 1, "b": "x", "c": null, "d": true, "e": 2.5}"#).unwrap();
        assert_eq!(
            fields.0,
            vec![
                ("a".into(), ProfileValue::Number(1.0)),
                ("b".into(), ProfileValue::Text("x".into())),
                ("c".into(), ProfileValue::Missing),
                ("d".into(), ProfileValue::Text("true".into())),
                ("e".into(), ProfileValue::Number(2.5)),
            ]
        );
        let err =
            serde_json::from_str::<Fields>(r#"{"unused": -3.402823466385289e38}"#).unwrap_err();
        assert!(err.to_string().contains("within ±3.4e38"), "{err}");
        let err = serde_json::from_str::<Fields>(r#"{"a": {"b": 1}}"#).unwrap_err();
        assert!(err.to_string().contains("a number, a string"), "{err}");
        let err = serde_json::from_str::<Fields>(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(err.to_string().contains("`a` is given twice"), "{err}");
        // Past the scan's size the sorted check finds a repeat anywhere, and none where
        // there is none.
        let many = |repeat: Option<usize>| {
            let mut names: Vec<String> = (0..5000).map(|i| format!("\"f{i}\": {i}")).collect();
            if let Some(i) = repeat {
                names.push(format!("\"f{i}\": null"));
            }
            format!("{{{}}}", names.join(","))
        };
        assert_eq!(
            serde_json::from_str::<Fields>(&many(None)).unwrap().0.len(),
            5000
        );
        let too_many = format!(
            "{{{}}}",
            (0..=MAX_FIELDS)
                .map(|i| format!("\"f{i}\": 1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let err = serde_json::from_str::<Fields>(&too_many).unwrap_err();
        assert!(err.to_string().contains("more than 10000 fields"), "{err}");
        let err = serde_json::from_str::<Fields>(&many(Some(4321))).unwrap_err();
        assert!(err.to_string().contains("`f4321` is given twice"), "{err}");
    }

    #[test]
    fn parse_errors_name_the_json_path() {
        let err = parse_json::<BatchRequest>(
            br#"{"entities": [{"created_at": 1}, {"created_at": "soon"}]}"#,
        )
        .unwrap_err();
        let ApiError::BadRequest { message, field } = err else {
            panic!("not a bad request")
        };
        assert_eq!(field.as_deref(), Some("entities[1].created_at"));
        assert!(
            message.starts_with("entities[1].created_at: \"soon\" is not a time"),
            "{message}"
        );

        let err = parse_json::<EntityRequest>(br#"{"profile": {}, "evnts": []}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `evnts`"), "{err}");

        let err = parse_json::<EntityRequest>(br#"{"profile": {"x": NaN}}"#).unwrap_err();
        assert!(err.to_string().starts_with("malformed JSON"), "{err}");

        let err = parse_json::<EntityRequest>(br#"{"events": [{"ts": 1}]}"#).unwrap_err();
        let ApiError::BadRequest { message, field } = err else {
            panic!("not a bad request")
        };
        assert_eq!(field.as_deref(), Some("events[0]"));
        assert!(message.contains("missing field `type`"), "{message}");

        let err = parse_json::<EntityRequest>(br#"{} trailing"#).unwrap_err();
        assert!(err.to_string().starts_with("malformed JSON"), "{err}");
    }
}
