//! Segment routing: a route name (`POST /v1/score/propensity`) scores each entity with the
//! model of its segment, chosen by one profile field.
//!
//! The routing file (TOML, `--routing`; hot-reloaded like the thresholds file) has a table
//! per route:
//!
//! ```toml
//! [propensity]                 # POST /v1/score/propensity routes through this table
//! field = "segment"            # the profile field (the row's column, for tabular models)
//! fallback = "propensity"      # the model of an entity no rule matches (or missing field)
//! rules = [
//!   { levels = ["enterprise"], model = "propensity-enterprise" },
//!   { levels = ["smb", "startup"], model = "propensity-smb" },
//! ]
//!
//! [churn]
//! field = "monthly_fee"
//! fallback = "churn"
//! rules = [
//!   { min = 500, model = "churn-large" },            # 500 <= fee
//!   { min = 50, max = 500, model = "churn-mid" },    # 50 <= fee < 500
//! ]
//! ```
//!
//! The first rule that matches wins; an entity no rule matches, or whose field is missing,
//! goes to the fallback. A route named like a model takes the place of that model's own route
//! (the fallback is usually that model). Checked when read ([`RoutingFile::parse`]): every
//! rule has levels or a range, not both, and not empty; the rules of a table are all of one
//! kind (a field is categorical or numeric) and no two overlap, so the order never decides
//! and no rule is unreachable. Checked against what is served ([`RoutingFile::check`]): every
//! model is served, all of one task and one input form, the field is a profile field of the
//! kind the rules need, and each level is one some model of the route saw in training. A file
//! that fails is refused with a message naming the route and rule, and the table in force
//! stays.

use std::collections::{BTreeMap, HashSet};

use features::history::ProfileValue;
use features::plan::ProfileFeatureKind;
use models::bundle::ModelName;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::request::Fields;
use crate::state::ServedModel;

/// The routing file a server reads from its registry folder when none is named
/// (`train --segment-by` writes it there).
pub use models::bundle::ROUTING_FILE;

/// A checked routing file: the tables by route name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingFile {
    routes: BTreeMap<ModelName, Route>,
}

/// One route's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    name: ModelName,
    field: String,
    rules: Vec<Rule>,
    fallback: ModelName,
}

/// One rule: entities whose field matches go to `model`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    model: ModelName,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    /// One of these levels (categorical fields).
    Levels(Vec<String>),
    /// `min <= value < max`, either bound open (numeric fields).
    Range { min: Option<f64>, max: Option<f64> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    field: String,
    fallback: ModelName,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    model: ModelName,
    #[serde(default)]
    levels: Option<Vec<String>>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

/// Why an entity went to the model it went to; part of every routed answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteChoice {
    /// The route (the `{model}` of the path).
    pub route: ModelName,
    /// The field the route reads.
    pub field: String,
    /// The rule that matched, counted from 1; `None` for the fallback.
    pub rule: Option<usize>,
    /// In words: `segment is "enterprise" (rule 1)`, `segment is missing: the fallback`.
    pub why: String,
}

impl RoutingFile {
    /// Parses and checks the TOML text of a routing file on its own (see the module doc).
    pub fn parse(text: &str) -> Result<RoutingFile, String> {
        let raw: BTreeMap<ModelName, RawRoute> = toml::from_str(text).map_err(|e| e.to_string())?;
        let routes = raw
            .into_iter()
            .map(|(name, raw)| {
                let route =
                    Route::from_raw(name.clone(), raw).map_err(|e| format!("[{name}]: {e}"))?;
                Ok((name, route))
            })
            .collect::<Result<_, String>>()?;
        Ok(RoutingFile { routes })
    }

    /// The table of `name`, if it is a route.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, by name.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Checks the file against the models served (see the module doc); the message names
    /// the route, the rule and what is wrong.
    pub fn check(&self, models: &BTreeMap<ModelName, ServedModel>) -> Result<(), String> {
        for route in self.routes.values() {
            route
                .check(models)
                .map_err(|e| format!("[{}]: {e}", route.name))?;
        }
        Ok(())
    }
}

impl Route {
    fn from_raw(name: ModelName, raw: RawRoute) -> Result<Route, String> {
        if raw.field.is_empty() {
            return Err("`field` is empty".into());
        }
        if raw.rules.is_empty() {
            return Err(format!(
                "no rules: every entity would go to {}; score with it directly instead",
                raw.fallback
            ));
        }
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let matcher = match (rule.levels, rule.min, rule.max) {
                    (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                        return Err(format!(
                            "rule {}: give `levels` or a range (`min`, `max`), not both",
                            i + 1
                        ));
                    }
                    (Some(levels), None, None) => {
                        if levels.is_empty() {
                            return Err(format!(
                                "rule {}: `levels` is empty, so the rule can never match",
                                i + 1
                            ));
                        }
                        let mut seen = HashSet::new();
                        if let Some(twice) = levels.iter().find(|l| !seen.insert(l.as_str())) {
                            return Err(format!("rule {}: level {twice:?} is listed twice", i + 1));
                        }
                        Matcher::Levels(levels)
                    }
                    (None, None, None) => {
                        return Err(format!(
                            "rule {}: give `levels` (a categorical field) or `min` and/or `max` \
                             (a numeric field); a rule matching everything is the fallback",
                            i + 1
                        ));
                    }
                    (None, min, max) => {
                        for (key, bound) in [("min", min), ("max", max)] {
                            if bound.is_some_and(|b| !b.is_finite()) {
                                return Err(format!("rule {}: `{key}` is not finite", i + 1));
                            }
                        }
                        if let (Some(lo), Some(hi)) = (min, max)
                            && lo >= hi
                        {
                            return Err(format!(
                                "rule {}: min {lo} is not below max {hi}, so the rule can never \
                                 match (the range is min <= value < max)",
                                i + 1
                            ));
                        }
                        Matcher::Range { min, max }
                    }
                };
                Ok(Rule {
                    model: rule.model,
                    matcher,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let route = Route {
            name,
            field: raw.field,
            rules,
            fallback: raw.fallback,
        };
        route.check_overlaps()?;
        Ok(route)
    }

    /// All rules of one kind, no two overlapping: so no rule is unreachable and the order
    /// never decides.
    fn check_overlaps(&self) -> Result<(), String> {
        let levels = self
            .rules
            .iter()
            .filter(|r| matches!(r.matcher, Matcher::Levels(_)))
            .count();
        if levels != 0 && levels != self.rules.len() {
            return Err(format!(
                "the rules mix levels and ranges; `{}` is either categorical or numeric",
                self.field
            ));
        }
        for (j, later) in self.rules.iter().enumerate() {
            for (i, earlier) in self.rules[..j].iter().enumerate() {
                let overlap = match (&earlier.matcher, &later.matcher) {
                    (Matcher::Levels(a), Matcher::Levels(b)) => a
                        .iter()
                        .find(|l| b.contains(l))
                        .map(|l| format!("both take level {l:?}")),
                    (Matcher::Range { min: a0, max: a1 }, Matcher::Range { min: b0, max: b1 }) => {
                        let lo = |x: &Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
                        let hi = |x: &Option<f64>| x.unwrap_or(f64::INFINITY);
                        (lo(a0) < hi(b1) && lo(b0) < hi(a1)).then(|| {
                            format!(
                                "their ranges overlap on [{}, {})",
                                lo(a0).max(lo(b0)),
                                hi(a1).min(hi(b1))
                            )
                        })
                    }
                    _ => None,
                };
                if let Some(what) = overlap {
                    return Err(format!(
                        "rules {} and {} overlap: {what}; rule {} would never see those entities",
                        i + 1,
                        j + 1,
                        j + 1
                    ));
                }
            }
        }
        Ok(())
    }

    fn check(&self, models: &BTreeMap<ModelName, ServedModel>) -> Result<(), String> {
        let served: Vec<&str> = models.keys().map(ModelName::as_str).collect();
        let find = |model: &ModelName, role: &str| {
            models.get(model).ok_or_else(|| {
                let hint = features::spec::nearest(model.as_str(), &served)
                    .map(|n| format!("; did you mean {n}?"))
                    .unwrap_or_default();
                format!(
                    "{role} {model} is not served (served: {}){hint}",
                    if served.is_empty() {
                        "none".to_string()
                    } else {
                        served.join(", ")
                    }
                )
            })
        };
        let fallback = find(&self.fallback, "the fallback")?;
        let mut route_models = vec![fallback];
        for (i, rule) in self.rules.iter().enumerate() {
            route_models.push(find(&rule.model, &format!("rule {}'s model", i + 1))?);
        }
        let (task, form) = (
            fallback.model.task(),
            fallback.model.manifest().feature_plan.form(),
        );
        for (i, m) in route_models.iter().enumerate().skip(1) {
            let rule = i;
            if m.model.task() != task {
                return Err(format!(
                    "rule {rule}'s model {} is a {} model and the fallback {} a {} model",
                    m.model.name(),
                    m.model.task().as_str(),
                    self.fallback,
                    task.as_str()
                ));
            }
            if m.model.manifest().feature_plan.form() != form {
                return Err(format!(
                    "rule {rule}'s model {} takes {:?}-form entities and the fallback {} \
                     {:?}-form ones",
                    m.model.name(),
                    m.model.manifest().feature_plan.form(),
                    self.fallback,
                    form
                ));
            }
        }
        // What the route's models know of the field.
        let mut numeric = false;
        let mut categorical = false;
        let mut known_levels: HashSet<&str> = HashSet::new();
        let mut all_fields: Vec<&str> = Vec::new();
        for m in &route_models {
            for field in m.model.manifest().feature_plan.profile_fields() {
                all_fields.push(&field.name);
                if field.name != self.field {
                    continue;
                }
                match &field.kind {
                    ProfileFeatureKind::Numeric => numeric = true,
                    ProfileFeatureKind::Categorical { levels } => {
                        categorical = true;
                        known_levels.extend(levels.iter().map(String::as_str));
                    }
                }
            }
            if let Some(drift) = &m.model.manifest().drift {
                for field in &drift.categorical {
                    if field.field == self.field {
                        // Levels too rare to get a feature of their own are still levels
                        // the model saw.
                        known_levels.extend(field.rare_levels.iter().map(String::as_str));
                    }
                }
            }
        }
        if !numeric && !categorical {
            all_fields.sort_unstable();
            all_fields.dedup();
            let hint = features::spec::nearest(&self.field, &all_fields)
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            return Err(format!(
                "`{}` is not a profile field of any model of the route{hint}",
                self.field
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            match &rule.matcher {
                Matcher::Levels(levels) => {
                    if !categorical {
                        return Err(format!(
                            "rule {}: `{}` is numeric to the route's models: give a range \
                             (`min`, `max`), not levels",
                            i + 1,
                            self.field
                        ));
                    }
                    if let Some(unknown) =
                        levels.iter().find(|l| !known_levels.contains(l.as_str()))
                    {
                        let mut seen: Vec<&str> = known_levels.iter().copied().collect();
                        seen.sort_unstable();
                        let hint = features::spec::nearest(unknown, &seen)
                            .map(|n| format!(" Did you mean {n:?}?"))
                            .unwrap_or_default();
                        return Err(format!(
                            "rule {}: level {unknown:?} of `{}` was never seen in training by \
                             the route's models (they saw {}), so the rule would never match \
                             what they were trained on.{hint}",
                            i + 1,
                            self.field,
                            seen.iter()
                                .take(20)
                                .map(|l| format!("{l:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
                Matcher::Range { .. } if !numeric => {
                    return Err(format!(
                        "rule {}: `{}` is categorical to the route's models: give `levels`, \
                         not a range",
                        i + 1,
                        self.field
                    ));
                }
                Matcher::Range { .. } => {}
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// The table as `GET /v1/models` shows it.
    pub fn describe(&self) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|rule| match &rule.matcher {
                Matcher::Levels(levels) => {
                    serde_json::json!({"levels": levels, "model": rule.model})
                }
                Matcher::Range { min, max } => {
                    serde_json::json!({"min": min, "max": max, "model": rule.model})
                }
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "field": self.field,
            "rules": rules,
            "fallback": self.fallback,
        })
    }

    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn fallback(&self) -> &ModelName {
        &self.fallback
    }

    /// Every model the route can send an entity to: the rules' then the fallback.
    pub fn models(&self) -> impl Iterator<Item = &ModelName> {
        self.rules
            .iter()
            .map(|r| &r.model)
            .chain(std::iter::once(&self.fallback))
    }

    /// The model for an entity whose profile (or row) is `fields`, and why. `at` prefixes
    /// the field's path in errors (`entities[3].`); `fields_name` is `profile` or `row`.
    /// A numeric route refuses a value that is not a number, naming the field.
    pub fn choose(
        &self,
        fields: Option<&Fields>,
        at: &str,
        fields_name: &str,
    ) -> Result<(&ModelName, RouteChoice), ApiError> {
        let value = fields.and_then(|f| {
            f.0.iter()
                .find(|(name, _)| *name == self.field)
                .map(|(_, v)| v)
        });
        let field = &self.field;
        let shown = match value {
            None | Some(ProfileValue::Missing) => None,
            Some(ProfileValue::Text(t)) => Some(t.clone()),
            Some(ProfileValue::Number(n)) => Some(n.to_string()),
        };
        let mut matched = None;
        if let Some(text) = &shown {
            for (i, rule) in self.rules.iter().enumerate() {
                let hit = match &rule.matcher {
                    Matcher::Levels(levels) => levels.iter().any(|l| l == text),
                    Matcher::Range { min, max } => {
                        let number = match value {
                            Some(ProfileValue::Number(n)) => Some(*n),
                            _ => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
                        };
                        let Some(n) = number else {
                            let path = format!("{at}{fields_name}.{field}");
                            return Err(ApiError::bad_request(
                                format!(
                                    "{path}: expected a number (the route {} picks a model by \
                                     it), got {text:?}",
                                    self.name
                                ),
                                Some(&path),
                            ));
                        };
                        min.is_none_or(|lo| n >= lo) && max.is_none_or(|hi| n < hi)
                    }
                };
                if hit {
                    matched = Some(i);
                    break;
                }
            }
        }
        let (model, why) = match (matched, &shown) {
            (Some(i), Some(text)) => {
                let rule = &self.rules[i];
                let why = match &rule.matcher {
                    Matcher::Levels(_) => format!("{field} is {text:?} (rule {})", i + 1),
                    Matcher::Range { min, max } => format!(
                        "{field} is {text}, {} (rule {})",
                        describe_range(*min, *max),
                        i + 1
                    ),
                };
                (&rule.model, why)
            }
            (_, Some(text)) => (
                &self.fallback,
                format!("{field} is {text:?}, which no rule takes: the fallback"),
            ),
            (_, None) => (&self.fallback, format!("{field} is missing: the fallback")),
        };
        Ok((
            model,
            RouteChoice {
                route: self.name.clone(),
                field: self.field.clone(),
                rule: matched.map(|i| i + 1),
                why,
            },
        ))
    }
}

fn describe_range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("in [{lo}, {hi})"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("below {hi}"),
        (None, None) => "any value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, ProfileValue)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    const LEVELS: &str = r#"
[propensity]
field = "segment"
fallback = "propensity"
rules = [
  { levels = ["enterprise"], model = "propensity-enterprise" },
  { levels = ["smb", "startup"], model = "propensity-smb" },
]
"#;

    #[test]
    fn the_first_matching_rule_wins_and_the_rest_go_to_the_fallback() {
        let file = RoutingFile::parse(LEVELS).unwrap();
        let route = file.get("propensity").unwrap();
        let text = |s: &str| ProfileValue::Text(s.into());
        let pick = |f: Option<&Fields>| {
            let (model, choice) = route.choose(f, "", "profile").unwrap();
            (model.to_string(), choice.rule, choice.why)
        };
        let enterprise = fields(&[
            ("industry", text("retail")),
            ("segment", text("enterprise")),
        ]);
        assert_eq!(
            pick(Some(&enterprise)),
            (
                "propensity-enterprise".into(),
                Some(1),
                "segment is \"enterprise\" (rule 1)".into()
            )
        );
        let startup = fields(&[("segment", text("startup"))]);
        assert_eq!(pick(Some(&startup)).0, "propensity-smb");
        assert_eq!(pick(Some(&startup)).1, Some(2));
        let unknown = fields(&[("segment", text("Enterprise"))]);
        assert_eq!(
            pick(Some(&unknown)),
            (
                "propensity".into(),
                None,
                "segment is \"Enterprise\", which no rule takes: the fallback".into()
            )
        );
        let missing = fields(&[("segment", ProfileValue::Missing)]);
        assert_eq!(pick(Some(&missing)).2, "segment is missing: the fallback");
        assert_eq!(pick(None).0, "propensity");
        assert_eq!(pick(Some(&fields(&[]))).0, "propensity");
        assert!(file.get("churn").is_none());
    }

    #[test]
    fn numeric_routes_take_half_open_ranges() {
        let file = RoutingFile::parse(
            r#"
[churn]
field = "fee"
fallback = "churn"
rules = [
  { min = 500, model = "churn-large" },
  { min = 50, max = 500, model = "churn-mid" },
]
"#,
        )
        .unwrap();
        let route = file.get("churn").unwrap();
        let pick = |v: ProfileValue| {
            route
                .choose(Some(&fields(&[("fee", v)])), "", "row")
                .map(|(m, c)| (m.to_string(), c.rule))
        };
        use ProfileValue::{Number, Text};
        assert_eq!(
            pick(Number(500.0)).unwrap(),
            ("churn-large".into(), Some(1))
        );
        assert_eq!(pick(Number(499.99)).unwrap(), ("churn-mid".into(), Some(2)));
        assert_eq!(pick(Number(50.0)).unwrap(), ("churn-mid".into(), Some(2)));
        assert_eq!(pick(Number(49.0)).unwrap(), ("churn".into(), None));
        assert_eq!(
            pick(Text(" 75 ".into())).unwrap(),
            ("churn-mid".into(), Some(2))
        );
        let err = route
            .choose(
                Some(&fields(&[("fee", Text("lots".into()))])),
                "entities[2].",
                "row",
            )
            .unwrap_err();
        assert_eq!(err.body().error.field, Some("entities[2].row.fee"));
        assert!(err.to_string().contains("expected a number"), "{err}");
        let (_, choice) = route
            .choose(Some(&fields(&[("fee", Number(60.0))])), "", "row")
            .unwrap();
        assert_eq!(choice.why, "fee is 60, in [50, 500) (rule 2)");
    }

    #[test]
    fn overlapping_unreachable_and_malformed_tables_are_refused() {
        for (text, message) in [
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ levels = [\"a\", \"b\"], model = \"x\" }, { levels = [\"b\"], model = \"y\" }]\n",
                "[p]: rules 1 and 2 overlap: both take level \"b\"; rule 2 would never see those entities",
            ),
            (
                "[p]\nfield = \"n\"\nfallback = \"p\"\nrules = [{ min = 10, model = \"x\" }, { min = 0, max = 20, model = \"y\" }]\n",
                "[p]: rules 1 and 2 overlap: their ranges overlap on [10, 20)",
            ),
            (
                "[p]\nfield = \"n\"\nfallback = \"p\"\nrules = [{ max = 10, model = \"x\" }, { max = 5, model = \"y\" }]\n",
                "[p]: rules 1 and 2 overlap: their ranges overlap on [-inf, 5)",
            ),
            (
                "[p]\nfield = \"n\"\nfallback = \"p\"\nrules = [{ min = 10, max = 10, model = \"x\" }]\n",
                "[p]: rule 1: min 10 is not below max 10",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ levels = [], model = \"x\" }]\n",
                "[p]: rule 1: `levels` is empty",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ levels = [\"a\"], min = 1, model = \"x\" }]\n",
                "[p]: rule 1: give `levels` or a range",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ model = \"x\" }]\n",
                "[p]: rule 1: give `levels`",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ levels = [\"a\"], model = \"x\" }, { min = 1, model = \"y\" }]\n",
                "[p]: the rules mix levels and ranges",
            ),
            ("[p]\nfield = \"s\"\nfallback = \"p\"\n", "[p]: no rules"),
            (
                "[p]\nfield = \"s\"\nfallback = \"P\"\nrules = [{ levels = [\"a\"], model = \"x\" }]\n",
                "lower-case letter",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrule = [{ levels = [\"a\"], model = \"x\" }]\n",
                "unknown field `rule`",
            ),
            (
                "[p]\nfield = \"s\"\nfallback = \"p\"\nrules = [{ levels = [\"a\", \"a\"], model = \"x\" }]\n",
                "level \"a\" is listed twice",
            ),
        ] {
            let err = RoutingFile::parse(text).unwrap_err();
            assert!(err.contains(message), "{text}\n{err}");
        }
        // Adjacent ranges do not overlap.
        assert!(
            RoutingFile::parse(
                "[p]\nfield = \"n\"\nfallback = \"p\"\nrules = [{ min = 10, model = \"x\" }, { max = 10, model = \"y\" }]\n"
            )
            .is_ok()
        );
    }
}
