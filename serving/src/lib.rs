//! The lead-scoring HTTP service: loads model bundles from the registry through the
//! `models` crate, computes features with the `features` crate (the training code path) and
//! scores with ONNX Runtime.
//!
//! * [`runtime`]: finds the ONNX Runtime shared library and initialises it once.
//! * [`pool`]: [`SessionPool`], `N` ONNX Runtime sessions of one model; small jobs run
//!   inline, batches on tokio's blocking pool.
//! * [`model`]: [`LoadedModel`], a bundle ready to score: features, probability, grade,
//!   sales-ready flag and reasons (exact contributions summed per feature group).
//! * [`request`]: the request JSON and its checks against a model's feature plan, naming
//!   the field at fault.
//! * [`state`]: [`AppState`], the [`Served`](state::Served) snapshot (models by name,
//!   thresholds, routing table) swapped as a whole on reload, limits, keys and metrics.
//! * [`routing`]: [`RoutingFile`](routing::RoutingFile), segment routing: a route scores each
//!   entity with the model its profile field selects, and says why.
//! * [`reload`]: [`Reloader`], hot reload of bundles, the thresholds file
//!   ([`models::thresholds_file`]) and the routing file.
//! * [`auth`]: client and admin API keys, compared in constant time.
//! * [`metrics`]: Prometheus metrics in atomics.
//! * [`drift`]: [`DriftMonitor`](drift::DriftMonitor), what each model scored over the last
//!   hour against its training distribution (PSI, share missing, unknown levels).
//! * [`entities`]: the routes of the entity store ([`store`]): events, profiles and
//!   outcomes in, scores by id and the sales queue out, erasure; which models score an
//!   entity. [`sweep`]: the background rescoring that keeps the queue fresh.
//! * [`webhooks`]: the store's outbox delivered to the CRM's endpoints, signed (Standard
//!   Webhooks), at least once and in order per entity; the endpoints and their admin routes.
//! * [`console`]: the sales-ops console's page, script and style sheet (built in), and the
//!   routes it reads and changes: [`versions`] (a model's versions, promote and revert, its
//!   held-out health) and [`tuning`] (thresholds previewed and saved into the thresholds
//!   file). [`files`]: atomic replacement of the files an operator owns.
//! * [`config`]: the configuration file.
//! * [`serve`]: the accept loop: connection limit, header and idle timeouts, shutdown with
//!   a grace period.
//! * [`http`]: [`app`], the axum router; [`error`]: [`ApiError`], the one error type
//!   handlers return, with one kind → status table.
//!
//! The binary `leadscore-serve` reads the configuration and wires these together.

pub mod auth;
pub mod config;
pub mod console;
pub mod drift;
pub mod entities;
pub mod error;
pub mod files;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod reload;
pub mod request;
pub mod routing;
pub mod runtime;
pub mod serve;
pub mod state;
pub mod sweep;
pub mod tuning;
pub mod versions;
pub mod webhooks;

pub use auth::KeySet;
pub use error::{ApiError, ErrorKind};
pub use http::app;
pub use model::LoadedModel;
pub use pool::{PoolConfig, SessionPool};
pub use reload::Reloader;
pub use state::{AppState, Limits};
