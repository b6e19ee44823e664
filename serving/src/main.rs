//! `leadscore-serve`: serves the model bundles of a registry folder over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use models::bundle::Registry;
use models::thresholds_file::ThresholdsFile;
use serving::config::{FileConfig, LogFormat};
use serving::reload::RoutingSource;
use serving::routing::{ROUTING_FILE, RoutingFile};
use serving::serve::{self, ConnLimits};
use serving::{AppState, KeySet, Limits, PoolConfig, Reloader, app, runtime};

/// The request path allocates (JSON, events, tensors, the response); under load glibc's
/// malloc and free took about a sixth of the server's CPU (perf), mimalloc less. The
/// benchmark's bare handler uses the same allocator, so the comparison stays like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shortest drift window: 12 slots of 5 seconds.
const MIN_DRIFT_WINDOW_SECS: u64 = 60;
/// Longest drift window: a week.
const MAX_DRIFT_WINDOW_SECS: u64 = 7 * 24 * 3600;

/// Serve lead-scoring models over HTTP.
///
/// Settings come from flags, then environment variables, then the configuration file
/// (`--config`), then defaults. API keys come from the environment or the file only.
#[derive(Debug, Parser)]
#[command(name = "leadscore-serve", version)]
struct Args {
    /// Configuration file (TOML); see the README's serving section.
    #[arg(long, env = "LEADSCORE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LEADSCORE_ADDR")]
    addr: Option<SocketAddr>,
    /// Registry folder: the live (else newest) version of each model, `<model>/<version>/`,
    /// is served [default: registry]. Or a URL of a registry on object storage
    /// (`file:///srv/registry`), mirrored into `--registry-cache` at every reload interval.
    #[arg(long, env = "LEADSCORE_REGISTRY")]
    registry: Option<PathBuf>,
    /// The local mirror of a registry on object storage [default: registry-cache].
    #[arg(long, env = "LEADSCORE_REGISTRY_CACHE")]
    registry_cache: Option<PathBuf>,
    /// Thresholds file (TOML) overriding the bundles' sales-ready cut-off and grade bands.
    #[arg(long, env = "LEADSCORE_THRESHOLDS")]
    thresholds: Option<PathBuf>,
    /// Routing file (TOML): routes that score each entity with the model of its segment
    /// [default: routing.toml in the registry folder, when there is one].
    #[arg(long, env = "LEADSCORE_ROUTING")]
    routing: Option<PathBuf>,
    /// Entity store: a folder (the embedded store), or a PostgreSQL URL
    /// (`postgres://user:password@host:port/db?schema=NAME`) that several replicas share.
    /// The server keeps each entity's profile, events, outcomes and latest scores there
    /// [default: `store` beside the registry folder].
    #[arg(long, env = "LEADSCORE_STORE")]
    store: Option<PathBuf>,
    /// Keep no entity store: only the stateless score routes.
    #[arg(long, env = "LEADSCORE_NO_STORE", conflicts_with = "store")]
    no_store: bool,
    /// Events kept per entity; past it the oldest are dropped as new ones arrive
    /// [default: 10000].
    #[arg(long, env = "LEADSCORE_MAX_EVENTS_PER_ENTITY")]
    max_events_per_entity: Option<u64>,
    /// Days an event is kept; older ones are dropped by the sweep [default: forever].
    #[arg(long, env = "LEADSCORE_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Seconds between rescoring sweeps of the recently active entities [default: 300].
    #[arg(long, env = "LEADSCORE_SWEEP_INTERVAL_SECS")]
    sweep_interval_secs: Option<u64>,
    /// Serve without API keys (only for a server nobody else can reach).
    #[arg(long, env = "LEADSCORE_NO_AUTH")]
    no_auth: bool,
    /// ONNX Runtime sessions per model [default: available cores].
    #[arg(long, env = "LEADSCORE_SESSIONS")]
    sessions: Option<usize>,
    /// Drift statistics cover this many seconds of scored traffic, at least 60: raise it
    /// when fewer than a few hundred entities are scored an hour [default: 3600].
    #[arg(long, env = "LEADSCORE_DRIFT_WINDOW_SECS")]
    drift_window_secs: Option<u64>,
    /// Seconds between looks at the registry, the thresholds and the routing file
    /// [default: 5].
    #[arg(long, env = "LEADSCORE_RELOAD_INTERVAL_SECS")]
    reload_interval_secs: Option<u64>,
    /// Largest request body, bytes [default: 1048576].
    #[arg(long, env = "LEADSCORE_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Most entities in a batch [default: 1000].
    #[arg(long, env = "LEADSCORE_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Most reasons of each sign per score [default: 3].
    #[arg(long, env = "LEADSCORE_MAX_REASONS")]
    max_reasons: Option<usize>,
    /// How far in the future a timestamp may be, seconds [default: 300].
    #[arg(long, env = "LEADSCORE_ALLOWED_SKEW_SECS")]
    allowed_skew_secs: Option<u64>,
    /// Requests of at most this many entities score on the async worker instead of the
    /// blocking pool [default: 1].
    #[arg(long, env = "LEADSCORE_INLINE_MAX_ENTITIES")]
    inline_max_entities: Option<usize>,
    /// Most connections open at once; one more is closed at once [default: 4096, fewer
    /// when the open-file limit is lower].
    #[arg(long, env = "LEADSCORE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers, from its connection's first byte
    /// or the previous answer; a connection that sends nothing, or stays idle after an
    /// answer, is closed after it too [default: 10].
    #[arg(long, env = "LEADSCORE_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body once its key is checked [default: 30].
    #[arg(long, env = "LEADSCORE_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Seconds with no byte moving either way while the server waits to read or write
    /// before the connection is closed [default: 30].
    #[arg(long, env = "LEADSCORE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Seconds SIGTERM waits for the requests in flight before the server exits anyway
    /// [default: 30].
    #[arg(long, env = "LEADSCORE_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Requests with a missing or wrong key an address may send in a minute before it is
    /// answered 429 for the rest of that minute; 0 turns this off [default: 30].
    #[arg(long, env = "LEADSCORE_MAX_AUTH_FAILURES")]
    max_auth_failures: Option<u32>,
    /// Serve /metrics without a key (for a scraper inside the network boundary); by
    /// default it needs a client key.
    #[arg(long, env = "LEADSCORE_METRICS_PUBLIC")]
    metrics_public: bool,
    /// Log format [default: json].
    #[arg(long, env = "LEADSCORE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug (debug logs every request) [default: info].
    #[arg(long, env = "LEADSCORE_LOG_LEVEL")]
    log_level: Option<String>,
}

/// Where the server keeps its entities.
#[derive(Clone)]
enum StoreChoice {
    /// The embedded store in a folder.
    Folder(store::StoreOpen),
    /// A PostgreSQL database several replicas share, and where this replica writes exports.
    Postgres(store::PgOpen, PathBuf),
}

/// The settings after merging flags, environment, file and defaults.
struct Settings {
    addr: SocketAddr,
    /// The registry folder (the mirror, when the registry is on object storage).
    registry: PathBuf,
    remote_registry: Option<models::bundle::RemoteRegistry>,
    thresholds: Option<PathBuf>,
    /// The routing file, and whether it was named (a named file must exist).
    routing: RoutingSource,
    keys: KeySet,
    pool: PoolConfig,
    reload_interval: Duration,
    drift_window: Duration,
    limits: Limits,
    conn: ConnLimits,
    log_format: LogFormat,
    log_level: tracing::Level,
    /// The entity store (a folder, or a PostgreSQL database) and its limits; `None` with
    /// `--no-store`.
    store: Option<StoreChoice>,
    sweep_interval: Duration,
    retention: Option<Duration>,
    /// The configuration file (its `[[webhooks]]` are read again at the reload interval).
    config: Option<PathBuf>,
    webhooks: Vec<serving::webhooks::endpoints::WebhookConfig>,
    delivery: serving::webhooks::DeliverySettings,
}

fn settings(args: Args) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path).map_err(anyhow::Error::msg)?,
        None => FileConfig::default(),
    };
    let env_keys = |name: &str| -> Vec<String> {
        std::env::var(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut api_keys = env_keys("LEADSCORE_API_KEYS");
    api_keys.extend(file.api_keys.iter().cloned());
    let mut admin_keys = env_keys("LEADSCORE_ADMIN_KEYS");
    admin_keys.extend(file.admin_keys.iter().cloned());
    let keys = if args.no_auth || file.no_auth == Some(true) {
        KeySet::disabled()
    } else {
        KeySet::new(&api_keys, &admin_keys).map_err(|e| {
            anyhow::anyhow!(
                "{e}: set LEADSCORE_API_KEYS and LEADSCORE_ADMIN_KEYS (comma-separated) or \
                 api_keys and admin_keys in the configuration file, or pass --no-auth"
            )
        })?
    };
    let defaults = Limits::default();
    let limits = Limits {
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes),
        max_batch: args
            .max_batch
            .or(file.max_batch)
            .unwrap_or(defaults.max_batch),
        max_reasons: args
            .max_reasons
            .or(file.max_reasons)
            .unwrap_or(defaults.max_reasons),
        allowed_skew: args
            .allowed_skew_secs
            .or(file.allowed_skew_secs)
            .map_or(defaults.allowed_skew, Duration::from_secs),
        inline_max_entities: args
            .inline_max_entities
            .or(file.inline_max_entities)
            .unwrap_or(defaults.inline_max_entities),
        body_timeout: seconds(
            "body_timeout_secs",
            args.body_timeout_secs.or(file.body_timeout_secs),
            defaults.body_timeout,
        )?,
        max_auth_failures: args
            .max_auth_failures
            .or(file.max_auth_failures)
            .unwrap_or(defaults.max_auth_failures),
        auth_failure_window: defaults.auth_failure_window,
        metrics_public: args.metrics_public || file.metrics_public == Some(true),
    };
    let conn_defaults = ConnLimits::default();
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(conn_defaults.max_connections);
    if max_connections == 0 {
        bail!("max_connections must be at least 1");
    }
    let conn = ConnLimits {
        max_connections,
        header_timeout: seconds(
            "header_timeout_secs",
            args.header_timeout_secs.or(file.header_timeout_secs),
            conn_defaults.header_timeout,
        )?,
        idle_timeout: seconds(
            "idle_timeout_secs",
            args.idle_timeout_secs.or(file.idle_timeout_secs),
            conn_defaults.idle_timeout,
        )?,
        shutdown_grace: Duration::from_secs(
            args.shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .unwrap_or(conn_defaults.shutdown_grace.as_secs()),
        ),
    };
    let mut pool = PoolConfig::default();
    if let Some(n) = args.sessions.or(file.sessions) {
        if n == 0 {
            bail!("sessions must be at least 1");
        }
        pool.sessions = n;
    }
    let reload_interval = Duration::from_secs(
        args.reload_interval_secs
            .or(file.reload_interval_secs)
            .unwrap_or(5)
            .max(1),
    );
    let drift_window_secs = args
        .drift_window_secs
        .or(file.drift_window_secs)
        .unwrap_or(serving::drift::DRIFT_WINDOW.as_secs());
    if !(MIN_DRIFT_WINDOW_SECS..=MAX_DRIFT_WINDOW_SECS).contains(&drift_window_secs) {
        bail!(
            "drift_window_secs is {drift_window_secs}; it must be between \
             {MIN_DRIFT_WINDOW_SECS} and {MAX_DRIFT_WINDOW_SECS} (a week)"
        );
    }
    let level = args
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let registry = args
        .registry
        .or(file.registry)
        .unwrap_or_else(|| PathBuf::from("registry"));
    // A registry on object storage is served from a local mirror of it.
    let (registry, remote_registry) =
        if models::bundle::is_registry_url(&registry.to_string_lossy()) {
            let remote = models::bundle::RemoteRegistry::from_url(&registry.to_string_lossy())?;
            let cache = args
                .registry_cache
                .or(file.registry_cache)
                .unwrap_or_else(|| PathBuf::from("registry-cache"));
            (cache, Some(remote))
        } else {
            (registry, None)
        };
    let store = if args.no_store || file.no_store == Some(true) {
        None
    } else {
        let dir = args.store.or(file.store).unwrap_or_else(|| {
            // Beside the registry: `<registry>/../store`.
            let parent = registry.parent().unwrap_or(std::path::Path::new(""));
            parent.join("store")
        });
        let mut limits = store::StoreLimits::default();
        if let Some(n) = args.max_events_per_entity.or(file.max_events_per_entity) {
            if n == 0 {
                bail!("max_events_per_entity must be at least 1");
            }
            limits.max_events_per_entity = n;
        }
        if serving::config::is_database_url(&dir) {
            let mut open =
                store::PgOpen::new(&dir.to_string_lossy()).map_err(anyhow::Error::msg)?;
            open.limits = limits;
            // Exports are written on this replica's disk, beside the registry.
            let exports = registry
                .parent()
                .unwrap_or(std::path::Path::new(""))
                .join("exports");
            Some(StoreChoice::Postgres(open, exports))
        } else {
            let mut open = store::StoreOpen::new(dir);
            open.limits = limits;
            Some(StoreChoice::Folder(open))
        }
    };
    let sweep_interval = seconds(
        "sweep_interval_secs",
        args.sweep_interval_secs.or(file.sweep_interval_secs),
        Duration::from_secs(300),
    )?;
    let retention = match args.retention_days.or(file.retention_days) {
        None => None,
        Some(0) => bail!("retention_days must be at least 1"),
        Some(days) => Some(Duration::from_secs(u64::from(days) * 86_400)),
    };
    let mut delivery = serving::webhooks::DeliverySettings::default();
    if let Some(schedule) = &file.webhook_retry_secs {
        delivery.schedule = schedule.iter().map(|s| Duration::from_secs(*s)).collect();
    }
    delivery.timeout = seconds(
        "webhook_timeout_secs",
        file.webhook_timeout_secs,
        delivery.timeout,
    )?;
    if let Some(n) = file.webhook_concurrency {
        if n == 0 {
            bail!("webhook_concurrency must be at least 1");
        }
        delivery.concurrency = n;
    }
    if let Some(hours) = file.webhook_rotation_hours {
        delivery.rotation_overlap = Duration::from_secs(hours.saturating_mul(3600));
    }
    if store.is_none() && !file.webhooks.is_empty() {
        bail!(
            "webhooks are delivered from the entity store's outbox: remove no_store (or \
             --no-store), or the [[webhooks]] tables"
        );
    }
    let log_level = level
        .parse::<tracing::Level>()
        .map_err(|_| anyhow::anyhow!("log level {level:?}: use error, warn, info or debug"))?;
    Ok(Settings {
        addr: args
            .addr
            .or(file.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        routing: match args.routing.or(file.routing) {
            Some(path) => RoutingSource {
                path,
                required: true,
            },
            None => RoutingSource {
                path: registry.join(ROUTING_FILE),
                required: false,
            },
        },
        registry,
        remote_registry,
        thresholds: args.thresholds.or(file.thresholds),
        keys,
        pool,
        reload_interval,
        drift_window: Duration::from_secs(drift_window_secs),
        limits,
        conn,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Json),
        log_level,
        store,
        sweep_interval,
        retention,
        config: args.config,
        webhooks: file.webhooks,
        delivery,
    })
}

/// A timeout setting: whole seconds, at least 1.
fn seconds(name: &str, value: Option<u64>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(0) => bail!("{name} must be at least 1 second"),
        Some(secs) => Ok(Duration::from_secs(secs)),
    }
}

fn main() -> ExitCode {
    serve::no_transparent_huge_pages();
    let settings = match settings(Args::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leadscore-serve: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(settings.log_level)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(settings));
    // Scoring jobs still on the blocking pool (a large batch) get a moment, not forever.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // Without the runtime the service can never become ready: fail fast.
    let rt = runtime::runtime()?;
    tracing::info!(
        version = runtime::ORT_VERSION,
        library = %rt.library().display(),
        "ONNX Runtime loaded"
    );
    if !settings.keys.is_enabled() {
        tracing::warn!(
            "authentication is off (--no-auth): anyone who reaches the port can score and reload"
        );
    }
    // A thresholds file that is wrong at start is an error, not a silent default.
    if let Some(path) = &settings.thresholds {
        ThresholdsFile::read(path)?;
    }
    // So is a routing file that does not parse (whether it fits the models is known once
    // they are loaded).
    if settings.routing.required || settings.routing.path.exists() {
        let path = &settings.routing.path;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("routing file {}", path.display()))?;
        RoutingFile::parse(&text)
            .map_err(|e| anyhow::anyhow!("routing file {}: {e}", path.display()))?;
    }

    let state = AppState::new(
        settings.limits.clone(),
        settings.keys.clone(),
        format!("loading models from {}", settings.registry.display()),
    );
    let mut reloader = Reloader::new(
        Registry::new(&settings.registry),
        settings.thresholds.clone(),
        settings.pool,
    )
    .with_drift_window(settings.drift_window)
    .with_routing(settings.routing.clone());
    if let Some(remote) = settings.remote_registry.clone() {
        std::fs::create_dir_all(&settings.registry)
            .with_context(|| format!("the registry's mirror {}", settings.registry.display()))?;
        // A first mirror before the first load: a replica starts with what is live.
        if let Err(e) = remote.pull(&settings.registry).await {
            tracing::warn!(error = %e, "cannot read the registry on object storage yet");
        }
        reloader = reloader.with_remote(remote);
    }
    let reloader = Arc::new(reloader);
    state.set_reloader(Arc::clone(&reloader));
    if let Some(choice) = settings.store.clone() {
        match choice {
            StoreChoice::Folder(mut open) => {
                let dir = open.dir.clone();
                // Commits use quick repair: a file a crash left opens without the full
                // repair walk. Should one ever be needed, it is said, once.
                let said = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                open.on_repair = Some(Arc::new(move || {
                    if !said.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!("the entity store's file needed a full repair on opening");
                    }
                }));
                let store = tokio::task::spawn_blocking(move || store::RedbStore::open(open))
                    .await
                    .context("opening the entity store")??;
                tracing::info!(store = %dir.display(), "entity store open");
                state.set_store(Arc::new(store));
                state.set_export_dir(dir.join("exports"));
            }
            StoreChoice::Postgres(open, exports) => {
                let shown = format!("{open:?}");
                let store = store::PgStore::open(open)?;
                // A wrong URL, refused credentials or failed migrations stop the start.
                store.ready().await.context("opening the entity store")?;
                tracing::info!(store = %shown, "entity store on PostgreSQL");
                state.set_store(Arc::new(store));
                state.set_export_dir(exports);
            }
        }
        serving::sweep::spawn(state.clone(), settings.sweep_interval, settings.retention);
        // Endpoints that do not check are an error at start, not a silent default.
        let hub = Arc::new(
            serving::webhooks::Webhooks::new(
                settings.config.clone(),
                &settings.webhooks,
                settings.delivery.clone(),
            )
            .map_err(anyhow::Error::msg)?,
        );
        tracing::info!(endpoints = hub.endpoints().len(), "webhooks");
        state.set_webhooks(Arc::clone(&hub))?;
        serving::webhooks::spawn_reload(hub, settings.reload_interval);
    }
    // The first load runs in the watcher, so /healthz and /readyz answer meanwhile.
    tokio::spawn(Arc::clone(&reloader).watch(state.clone(), settings.reload_interval));

    let conn = ConnLimits {
        max_connections: serve::fit_connections_to_open_file_limit(settings.conn.max_connections),
        ..settings.conn
    };
    let listener = serve::bind(settings.addr, conn.max_connections)
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        registry = %settings.registry.display(),
        max_connections = conn.max_connections,
        "listening"
    );
    serve::serve(listener, app(state), conn, shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
