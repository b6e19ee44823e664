//! Webhook subscriptions: the `[[webhooks]]` tables of the configuration file.
//!
//! ```toml
//! [[webhooks]]
//! url = "https://crm.example.com/hooks/leadscore"
//! secret = "whsec_..."                # Standard Webhooks secret: whsec_ + base64 of 24-64 bytes
//! models = ["propensity"]             # default: every model
//! events = ["lead.sales_ready"]       # default: every event type
//! allow_private = false               # true: the receiver may be on this machine or network
//! id = "crm"                          # default: the host and a digest of the URL; deliveries are filed under it
//! disabled = false                    # set by the server on 410 Gone or by the admin route
//! previous_secret = "whsec_..."       # during a rotation: messages signed with both...
//! previous_secret_until = "2026-12-04T10:00:00Z"   # ...until then
//! ```
//!
//! The file is read again at the reload interval (an invalid change is refused and logged;
//! the endpoints in force stay), and the admin routes change it in place ([`edit_file`]):
//! comments and the other keys stay as they were.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::{EndpointFilter, Transition};

use super::guard::{GuardedResolver, check_url};
use super::sign::Secret;

/// One `[[webhooks]]` table as written. Its `Debug` shows neither the URL (it may carry a
/// token) nor the secrets.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub url: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub allow_private: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("key", &self.key())
            .field("models", &self.models)
            .field("events", &self.events)
            .field("allow_private", &self.allow_private)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// The key its deliveries are filed under, its metrics labelled with and its admin routes
    /// name: its `id`, else its URL's host and a digest of the URL (a URL may carry a token,
    /// and keys go into logs and metrics).
    pub fn key(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.url.as_bytes());
        let host: String = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{host}-{hex}")
    }
}

/// The part of the configuration file this module reads (the rest is read at start).
#[derive(Debug, Default, Deserialize)]
struct WebhooksSection {
    #[serde(default)]
    webhooks: Vec<WebhookConfig>,
}

/// An endpoint in force: its table checked, its secrets parsed, its HTTP client built.
#[derive(Clone)]
pub struct Endpoint {
    pub config: WebhookConfig,
    key: String,
    pub url: reqwest::Url,
    pub secret: Secret,
    pub previous: Option<(Secret, DateTime<Utc>)>,
    pub events: Option<Vec<Transition>>,
    pub client: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may carry a token.
        f.debug_struct("Endpoint")
            .field("key", &self.key())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The secrets to sign with now: the current one, and the previous one during a rotation.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let mut out = vec![&self.secret];
        if let Some((old, until)) = &self.previous
            && now < *until
        {
            out.push(old);
        }
        out
    }

    /// Which messages it receives (a disabled endpoint receives none).
    pub fn filter(&self) -> EndpointFilter {
        EndpointFilter {
            endpoint: self.key().to_owned(),
            models: self.config.models.clone(),
            transitions: self.events.clone(),
        }
    }
}

/// Checks `tables` (from `origin`, for messages) and builds their endpoints, each with a
/// client that times out after `timeout`, follows no redirect and resolves names through
/// [`GuardedResolver`].
pub fn endpoints(
    tables: &[WebhookConfig],
    timeout: Duration,
    origin: &str,
) -> Result<Vec<Arc<Endpoint>>, String> {
    let mut out: Vec<Arc<Endpoint>> = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let at = |field: &str| format!("{origin}: webhooks[{i}].{field}");
        let url = reqwest::Url::parse(&table.url).map_err(|e| format!("{}: {e}", at("url")))?;
        check_url(&url, table.allow_private).map_err(|e| format!("{}: {e}", at("url")))?;
        let secret = Secret::parse(&table.secret).map_err(|e| format!("{}: {e}", at("secret")))?;
        let previous = match (&table.previous_secret, table.previous_secret_until) {
            (Some(s), Some(until)) => Some((
                Secret::parse(s).map_err(|e| format!("{}: {e}", at("previous_secret")))?,
                until,
            )),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{}: previous_secret and previous_secret_until go together",
                    at("previous_secret")
                ));
            }
        };
        let events = table
            .events
            .as_ref()
            .map(|names| {
                names
                    .iter()
                    .map(|n| {
                        Transition::parse(n).ok_or_else(|| {
                            let known: Vec<&str> =
                                Transition::ALL.iter().map(|t| t.as_str()).collect();
                            format!(
                                "{}: unknown event type {n:?} (known: {})",
                                at("events"),
                                known.join(", ")
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if let Some(id) = &table.id
            && !is_endpoint_id(id)
        {
            return Err(format!(
                "{}: {id:?} is not 1 to 64 letters, digits, `.`, `_` or `-`",
                at("id")
            ));
        }
        let key = table.key();
        if let Some(other) = out.iter().find(|e| e.key() == key) {
            return Err(format!(
                "{}: {:?} is also the key of {} (give each an `id`)",
                at("url"),
                key,
                other.url
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: table.allow_private,
            }))
            .user_agent(concat!("leadscore-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("{}: cannot build its HTTP client: {e}", at("url")))?;
        out.push(Arc::new(Endpoint {
            config: table.clone(),
            key,
            url,
            secret,
            previous,
            events,
            client,
        }));
    }
    Ok(out)
}

/// An endpoint id as written: 1 to 64 letters, digits, `.`, `_`, `-` (a path segment as it
/// is).
fn is_endpoint_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `[[webhooks]]` tables of the configuration file's `text`.
pub fn parse_section(text: &str, origin: &str) -> Result<Vec<WebhookConfig>, String> {
    let section: WebhooksSection = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    Ok(section.webhooks)
}

/// A change the admin routes make to the file. Its `Debug` shows no secret and no URL.
#[derive(Clone)]
pub enum Edit {
    Add(WebhookConfig),
    /// Sets `disabled` (and the reason, or removes it).
    SetDisabled {
        key: String,
        disabled: bool,
        reason: Option<String>,
    },
    /// The new secret in force; the old one signs too until `until`.
    Rotate {
        key: String,
        secret: String,
        until: DateTime<Utc>,
    },
}

impl std::fmt::Debug for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edit::Add(config) => f.debug_tuple("Add").field(config).finish(),
            Edit::SetDisabled { key, disabled, .. } => f
                .debug_struct("SetDisabled")
                .field("key", key)
                .field("disabled", disabled)
                .finish_non_exhaustive(),
            Edit::Rotate { key, until, .. } => f
                .debug_struct("Rotate")
                .field("key", key)
                .field("until", until)
                .finish_non_exhaustive(),
        }
    }
}

/// Applies `edit` to the configuration file at `path`, keeping its comments and the rest
/// of its keys, and replaces the file atomically (written beside it, synced, renamed; mode
/// 0600, as it holds secrets). Returns the file's new text.
pub fn edit_file(path: &Path, edit: &Edit) -> Result<String, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{shown}: {e}"))?;
    let tables = parse_section(&text, &shown.to_string())?;
    if !doc.contains_key("webhooks") {
        doc.insert(
            "webhooks",
            toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
        );
    }
    let array = doc
        .get_mut("webhooks")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .ok_or_else(|| format!("{shown}: `webhooks` is not an array of tables"))?;
    let find = |key: &str| {
        tables
            .iter()
            .position(|t| t.key() == key)
            .ok_or_else(|| format!("no webhook endpoint {key:?} in {shown}"))
    };
    match edit {
        Edit::Add(config) => {
            if tables.iter().any(|t| t.key() == config.key()) {
                return Err(format!(
                    "a webhook endpoint {:?} is already in {shown}",
                    config.key()
                ));
            }
            let written = toml::to_string(config).map_err(|e| format!("{shown}: {e}"))?;
            let table: toml_edit::DocumentMut =
                written.parse().map_err(|e| format!("{shown}: {e}"))?;
            array.push(table.as_table().clone());
        }
        Edit::SetDisabled {
            key,
            disabled,
            reason,
        } => {
            let table = array
                .get_mut(find(key)?)
                .ok_or_else(|| format!("{shown}: webhooks changed while being edited"))?;
            table["disabled"] = toml_edit::value(*disabled);
            match reason {
                Some(r) => table["disabled_reason"] = toml_edit::value(r.as_str()),
                None => {
                    table.remove("disabled_reason");
                }
            }
        }
        Edit::Rotate { key, secret, until } => {
            let i = find(key)?;
            let old = tables[i].secret.clone();
            let table = array
                .get_mut(i)
                .ok_or_else(|| format!("{shown}: webhooks changed while being edited"))?;
            table["secret"] = toml_edit::value(secret.as_str());
            table["previous_secret"] = toml_edit::value(old);
            table["previous_secret_until"] =
                toml_edit::value(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    let next = doc.to_string();
    // What is written must read back.
    parse_section(&next, &shown.to_string())?;
    crate::files::write_atomically(path, &next, 0o600).map_err(|e| format!("{shown}: {e}"))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn tables_are_checked_with_their_place() {
        let parse = |text: &str| {
            parse_section(text, "serve.toml")
                .and_then(|t| endpoints(&t, Duration::from_secs(1), "serve.toml"))
        };
        let ok = parse(&format!(
            "addr = \"0.0.0.0:1\"\n[[webhooks]]\nurl = \"https://crm.example.com/h\"\nsecret = \"{SECRET}\"\nevents = [\"lead.sales_ready\"]\n"
        ))
        .unwrap();
        assert_eq!(ok.len(), 1);
        let key = ok[0].key();
        assert!(
            key.starts_with("crm.example.com-") && key.len() == "crm.example.com-".len() + 8,
            "{key}"
        );
        assert!(!key.contains('/'), "a path segment as it is: {key}");
        assert_eq!(ok[0].events, Some(vec![Transition::LeadSalesReady]));
        let err = parse(&format!(
            "[[webhooks]]\nurl = \"https://a.example.com\"\nsecret = \"{SECRET}\"\n[[webhooks]]\nurl = \"https://b.example.com\"\nsecret = \"{SECRET}\"\nevents = [\"lead.hot\"]\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("webhooks[1].events") && err.contains("lead.hot"),
            "{err}"
        );
        let err = parse(&format!(
            "[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("webhooks[0].url") && err.contains("allow_private"),
            "{err}"
        );
        let err = parse("[[webhooks]]\nurl = \"https://a.example.com\"\nsecret = \"hunter2\"\n")
            .unwrap_err();
        assert!(err.contains("webhooks[0].secret"), "{err}");
        let err = parse(&format!(
            "[[webhooks]]\nurl = \"https://a.example.com\"\nsecret = \"{SECRET}\"\n[[webhooks]]\nurl = \"https://a.example.com\"\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("give each an `id`"), "{err}");
        let err =
            parse("[[webhooks]]\nurl = \"https://a.example.com\"\nsecret = \"x\"\nretries = 3\n")
                .unwrap_err();
        assert!(err.contains("unknown field `retries`"), "{err}");
    }

    #[test]
    fn edits_keep_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        let original = "# the server\naddr = \"0.0.0.0:8080\"  # where it listens\n";
        std::fs::write(&path, original).unwrap();
        let add = WebhookConfig {
            id: Some("crm".into()),
            url: "https://crm.example.com/h".into(),
            secret: SECRET.into(),
            models: None,
            events: Some(vec!["lead.sales_ready".into()]),
            allow_private: false,
            disabled: false,
            disabled_reason: None,
            previous_secret: None,
            previous_secret_until: None,
        };
        edit_file(&path, &Edit::Add(add.clone())).unwrap();
        let err = edit_file(&path, &Edit::Add(add.clone())).unwrap_err();
        assert!(err.contains("already"), "{err}");
        edit_file(
            &path,
            &Edit::SetDisabled {
                key: "crm".into(),
                disabled: true,
                reason: Some("410 Gone".into()),
            },
        )
        .unwrap();
        let until: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let new_secret = Secret::generate().unwrap();
        let text = edit_file(
            &path,
            &Edit::Rotate {
                key: "crm".into(),
                secret: new_secret.clone(),
                until,
            },
        )
        .unwrap();
        assert!(text.starts_with(original), "{text}");
        let tables = parse_section(&text, "t").unwrap();
        assert_eq!(tables.len(), 1);
        let t = &tables[0];
        assert!(t.disabled);
        assert_eq!(t.disabled_reason.as_deref(), Some("410 Gone"));
        assert_eq!(t.secret, new_secret);
        assert_eq!(t.previous_secret.as_deref(), Some(SECRET));
        assert_eq!(t.previous_secret_until, Some(until));
        let built = endpoints(&tables, Duration::from_secs(1), "t").unwrap();
        let before: DateTime<Utc> = "2029-12-31T00:00:00Z".parse().unwrap();
        let after: DateTime<Utc> = "2030-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(built[0].signing_secrets(before).len(), 2);
        assert_eq!(built[0].signing_secrets(after).len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let shown = format!("{:?} {:?}", tables[0], built[0]);
        assert!(
            !shown.contains("whsec_") && !shown.contains("crm.example.com"),
            "{shown}"
        );
        let err = edit_file(
            &path,
            &Edit::SetDisabled {
                key: "nope".into(),
                disabled: false,
                reason: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("no webhook endpoint \"nope\""), "{err}");
    }
}
