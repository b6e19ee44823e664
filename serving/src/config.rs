//! The server's configuration file (TOML). Every key is optional; flags and environment
//! variables (see `leadscore-serve --help`) override the file, the file overrides the
//! defaults. Keys are best given here or in the environment, never as flags (a command line
//! is visible to every user of the machine).
//!
//! ```toml
//! addr = "0.0.0.0:8080"
//! registry = "/srv/leadscore/registry"    # or a URL on object storage (file:///...)
//! registry_cache = "/var/cache/leadscore"  # its local mirror; default: registry-cache
//! thresholds = "/srv/leadscore/thresholds.toml"
//! routing = "/srv/leadscore/routing.toml"   # default: <registry>/routing.toml if present
//! api_keys = ["...at least 16 characters..."]
//! admin_keys = ["..."]
//! sessions = 2                 # ONNX Runtime sessions per model
//! reload_interval_secs = 5
//! max_body_bytes = 1048576
//! max_batch = 1000
//! max_reasons = 3
//! allowed_skew_secs = 300      # how far in the future a timestamp may be
//! inline_max_entities = 1      # requests this small score on the async worker
//! drift_window_secs = 3600     # drift statistics cover the last hour of traffic
//! max_connections = 4096       # open at once; more are closed at once
//! header_timeout_secs = 10     # to send a request's headers (also closes idle keep-alive)
//! body_timeout_secs = 30       # to send a request's body once its key is checked
//! idle_timeout_secs = 30       # no byte moving either way while the server waits
//! shutdown_grace_secs = 30     # requests in flight finish within this on SIGTERM
//! max_auth_failures = 30       # wrong or missing keys an address may send a minute
//! metrics_public = false       # /metrics without a key (behind the network boundary)
//! store = "/srv/leadscore/store"   # entity store folder, or postgres://user@host/db?schema=x
//!                                 # (replicas share it); default: `store` beside the registry
//! no_store = false             # true: only the stateless score routes
//! max_events_per_entity = 10000  # past it the oldest events are dropped
//! retention_days = 730         # events older are dropped by the sweep; default: kept
//! sweep_interval_secs = 300    # rescoring of recently active entities
//! log_format = "json"          # or "text"
//! log_level = "info"
//! webhook_retry_secs = [5, 300, 1800, 7200, 18000, 36000, 36000]  # waits before each retry
//! webhook_timeout_secs = 15     # one delivery attempt
//! webhook_concurrency = 16      # attempts in flight per endpoint
//! webhook_rotation_hours = 24   # the old secret signs too this long after a rotation
//!
//! [[webhooks]]                  # see serving::webhooks::endpoints; read again at the reload interval
//! url = "https://crm.example.com/hooks/leadscore"
//! secret = "whsec_..."
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The configuration file's content.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<SocketAddr>,
    pub registry: Option<PathBuf>,
    pub registry_cache: Option<PathBuf>,
    pub thresholds: Option<PathBuf>,
    pub routing: Option<PathBuf>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub admin_keys: Vec<String>,
    pub no_auth: Option<bool>,
    pub sessions: Option<usize>,
    pub reload_interval_secs: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub max_batch: Option<usize>,
    pub max_reasons: Option<usize>,
    pub allowed_skew_secs: Option<u64>,
    pub inline_max_entities: Option<usize>,
    pub drift_window_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_auth_failures: Option<u32>,
    pub metrics_public: Option<bool>,
    pub store: Option<PathBuf>,
    pub no_store: Option<bool>,
    pub max_events_per_entity: Option<u64>,
    pub retention_days: Option<u32>,
    pub sweep_interval_secs: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub webhook_retry_secs: Option<Vec<u64>>,
    pub webhook_timeout_secs: Option<u64>,
    pub webhook_concurrency: Option<usize>,
    pub webhook_rotation_hours: Option<u64>,
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::endpoints::WebhookConfig>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl FileConfig {
    /// Reads `path`; paths in it are relative to its folder.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("configuration file {}: {e}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .map_err(|e| format!("configuration file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.registry,
            &mut config.registry_cache,
            &mut config.thresholds,
            &mut config.routing,
            &mut config.store,
        ]
        .into_iter()
        .flatten()
        {
            // A database's or an object store's URL is not a path.
            if p.is_relative() && !p.to_string_lossy().contains("://") {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}

/// Whether `--store` (or `store`) names a PostgreSQL database rather than a folder.
pub fn is_database_url(store: &Path) -> bool {
    let s = store.to_string_lossy();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_with_paths_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(
            &path,
            "addr = \"0.0.0.0:9000\"\nregistry = \"reg\"\nthresholds = \"/etc/t.toml\"\n\
             admin_keys = [\"a-very-long-admin-key\"]\nmax_batch = 50\nlog_format = \"text\"\n",
        )
        .unwrap();
        let c = FileConfig::read(&path).unwrap();
        assert_eq!(c.addr, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.registry, Some(dir.path().join("reg")));
        assert_eq!(c.thresholds, Some(PathBuf::from("/etc/t.toml")));
        assert_eq!(c.max_batch, Some(50));
        assert_eq!(c.log_format, Some(LogFormat::Text));

        std::fs::write(&path, "max_bach = 5\n").unwrap();
        let err = FileConfig::read(&path).unwrap_err();
        assert!(
            err.contains("serve.toml") && err.contains("unknown field `max_bach`"),
            "{err}"
        );
    }
}
