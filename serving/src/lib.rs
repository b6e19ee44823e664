//! The lead-scoring HTTP service.
//!
//! * [`runtime`]: finds the ONNX Runtime shared library
//!   (`$LEADSCORE_ORT_LIB` or `<repo>/.onnxruntime/libonnxruntime.so.1.31.1`,
//!   put there by `scripts/fetch-onnxruntime`) and initialises it once per
//!   process.
//! * [`pool`]: [`SessionPool`], `N` ONNX Runtime sessions of one model,
//!   scoring on tokio's blocking pool so the async executor never blocks;
//!   [`Scorer`] is the seam handlers use.
//! * [`state`]: [`AppState`], the loaded [`ModelSet`] or the reason there is
//!   none.
//! * [`http`]: [`app`], the axum router (`/healthz`, `/readyz`).
//! * [`error`]: [`ApiError`], the one error type handlers return, rendered as
//!   `{"error": {"kind", "message", "field"}}` with one kind → status table.
//!
//! The binary `leadscore-serve` wires these together; the scoring API
//! itself is still to come.

pub mod error;
pub mod http;
pub mod pool;
pub mod runtime;
pub mod state;

pub use error::{ApiError, ErrorKind};
pub use http::app;
pub use pool::{PoolConfig, Scorer, SessionPool};
pub use state::{AppState, ModelSet};
