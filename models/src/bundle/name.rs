//! Model names: a registry holds any number of models by name, each in its own folder
//! `<registry>/<name>/`, and the server scores with one at `POST /v1/score/{name}`.

use std::fmt;

use features::spec::Task;
use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted model name.
pub const MAX_MODEL_NAME_LEN: usize = 64;

/// A model's name: `propensity`, `propensity-enterprise`, `churn_subscription`, ... 1 to
/// [`MAX_MODEL_NAME_LEN`] lower-case ASCII letters, digits, `-` and `_`, starting with a
/// letter. It is a folder name and a URL path segment as it is, with nothing to escape.
///
/// A model trained without a name is named after its task ([`ModelName::of_task`]), so a
/// registry made before names existed (`<registry>/propensity/`, `<registry>/churn/`) reads
/// as two models named `propensity` and `churn`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// Checks `name`; the message says what is wrong.
    pub fn new(name: &str) -> Result<ModelName, String> {
        check_model_name(name)?;
        Ok(ModelName(name.to_owned()))
    }

    /// The default name of a model of `task`: the task's own name.
    pub fn of_task(task: Task) -> ModelName {
        ModelName(task.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a model name (see [`ModelName`]).
pub fn check_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_MODEL_NAME_LEN {
        return Err(format!(
            "model name {:?} must have 1 to {MAX_MODEL_NAME_LEN} characters",
            shorten(name)
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "model name {name:?} must start with a lower-case letter (a-z)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "model name {name:?} contains {c:?}; use lower-case letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

/// At most 80 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

impl From<Task> for ModelName {
    fn from(task: Task) -> Self {
        ModelName::of_task(task)
    }
}

impl std::str::FromStr for ModelName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::new(s)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ModelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ModelName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["propensity", "churn", "propensity-enterprise", "p2_b", "a"] {
            assert_eq!(ModelName::new(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "1 to 64"),
            ("Propensity", "lower-case letter"),
            ("2fast", "lower-case letter"),
            ("-x", "lower-case letter"),
            ("a.b", "contains '.'"),
            ("a/b", "contains '/'"),
            ("a b", "contains ' '"),
            ("émile", "lower-case letter"),
        ] {
            let err = ModelName::new(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(ModelName::new(&"a".repeat(64)).is_ok());
        assert!(ModelName::new(&"a".repeat(65)).is_err());
        assert_eq!(ModelName::of_task(Task::Churn).as_str(), "churn");
    }

    #[test]
    fn names_are_checked_when_read() {
        let name: ModelName = serde_json::from_str("\"propensity-smb\"").unwrap();
        assert_eq!(name.to_string(), "propensity-smb");
        let err = serde_json::from_str::<ModelName>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("lower-case letter"), "{err}");
    }
}
