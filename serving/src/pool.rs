//! ONNX Runtime sessions of one model, pooled: [`SessionPool`].
//!
//! `ort::Session::run` takes `&mut self`, so one session serves one request
//! at a time. A [`SessionPool`] holds `N` sessions of the same model in a free
//! list guarded by a semaphore with `N` permits. [`SessionPool::with_session`]
//! runs a job with a session in one of two ways:
//!
//! * **inline**, on the calling async worker, when the caller says the job is
//!   small (one entity, and its explanation cheap: see
//!   `model::INLINE_EXPLAIN_MAX_LEAVES`) and a session is free right now: no
//!   thread hand-off;
//! * otherwise on tokio's **blocking pool** ([`tokio::task::spawn_blocking`])
//!   after waiting asynchronously for a permit, so that a batch never holds
//!   up the executor.
//!
//! The session and the permit go back together when the job ends, even if the
//! request was dropped meanwhile or the job panicked, so the pool never leaks
//! a slot.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use models::onnx::{INPUT_NAME, OUTPUT_NAME};
use ndarray::{Array2, ArrayView2};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runtime::{self, RuntimeError};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot read model {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("ONNX Runtime rejected the model: {0}")]
    Ort(#[from] ort::Error),
    #[error("model signature is not the expected one: {0}")]
    Signature(String),
    #[error("pool size must be at least 1")]
    EmptyPool,
    /// The bundle's `holdout.csv` is there but cannot be read.
    #[error("held-out predictions: {0}")]
    HeldOut(String),
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The caller's rows do not fit the model: the caller's fault.
    #[error("rows have {got} features, the model expects {expected}")]
    WidthMismatch { expected: usize, got: usize },
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Ort(#[from] ort::Error),
    /// The model produced something other than `[N, 1]`.
    #[error("model output has shape {got:?}, expected [{rows}, 1]")]
    OutputShape { rows: usize, got: Vec<i64> },
    /// A feature computed from the request is beyond `f32` (event values that sum past
    /// 3.4e38): the caller's values, refused rather than scored as infinite.
    #[error(
        "{field}: the feature {feature} comes to {value}, beyond the largest value a model takes (3.4e38)"
    )]
    NotRepresentable {
        field: String,
        feature: String,
        value: f64,
    },
    /// Computing the features failed after the request was checked.
    #[error("features: {0}")]
    Features(String),
    /// The blocking task running the model panicked or was cancelled.
    #[error("scoring task failed: {0}")]
    Task(String),
}

/// How many sessions a pool holds and how each runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Sessions (= concurrent inferences) per model.
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
}

impl Default for PoolConfig {
    /// One single-threaded session per available core.
    fn default() -> Self {
        Self {
            sessions: std::thread::available_parallelism().map_or(1, usize::from),
            intra_threads: 1,
        }
    }
}

struct Inner {
    free: Mutex<Vec<ModelSession>>,
    permits: Arc<Semaphore>,
    n_features: usize,
    size: usize,
}

/// `N` ONNX Runtime sessions of one model; cheap to clone (shared).
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("n_features", &self.inner.n_features)
            .field("size", &self.inner.size)
            .field("available", &self.inner.permits.available_permits())
            .finish()
    }
}

impl SessionPool {
    /// Loads an ONNX model from a file; see [`SessionPool::from_bytes`].
    pub fn from_file(path: &Path, config: PoolConfig) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, config)
    }

    /// Creates `config.sessions` sessions of the model in `bytes`, which must
    /// have one input `features: float32[N, F]` with a fixed `F` and an output
    /// `probability`. Initialises the ONNX Runtime on first use.
    ///
    /// Blocking (ONNX Runtime parses and optimises the graph): call it from
    /// a blocking context.
    pub fn from_bytes(bytes: &[u8], config: PoolConfig) -> Result<Self, LoadError> {
        if config.sessions == 0 {
            return Err(LoadError::EmptyPool);
        }
        let rt = runtime::runtime()?;
        let mut builder = Session::builder(rt.env())?
            .with_intra_threads(config.intra_threads.max(1))
            .map_err(ort::Error::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::from)?;
        let first = builder.commit_from_memory(bytes)?;
        let n_features = check_signature(&first)?;
        let mut sessions = vec![ModelSession {
            session: first,
            n_features,
        }];
        for _ in 1..config.sessions {
            sessions.push(ModelSession {
                session: builder.commit_from_memory(bytes)?,
                n_features,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                free: Mutex::new(sessions),
                permits: Arc::new(Semaphore::new(config.sessions)),
                n_features,
                size: config.sessions,
            }),
        })
    }

    /// Number of sessions.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Width `F` of the rows the model takes.
    pub fn n_features(&self) -> usize {
        self.inner.n_features
    }

    /// Scores `rows` (`[N, F]`) on a pooled session, off the async executor
    /// ([`ModelSession::run`] checks the width).
    pub async fn score_rows(&self, rows: Array2<f32>) -> Result<Vec<f32>, ScoreError> {
        self.with_session(false, move |session| session.run(rows.view()))
            .await?
    }

    /// Runs `job` with a session of the pool: inline when `small` and a
    /// session is free at once, else on the blocking pool once a session is
    /// free (see the module documentation).
    pub async fn with_session<R, F>(&self, small: bool, job: F) -> Result<R, ScoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut ModelSession) -> R + Send + 'static,
    {
        if small && let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() {
            let mut lease = self.lease(permit);
            return Ok(job(lease.session()));
        }
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|e| ScoreError::Task(e.to_string()))?;
        let mut lease = self.lease(permit);
        tokio::task::spawn_blocking(move || job(lease.session()))
            .await
            .map_err(|e| ScoreError::Task(e.to_string()))
    }

    fn lease(&self, permit: OwnedSemaphorePermit) -> Lease {
        let session = self
            .inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .expect("a held permit guarantees a free session");
        Lease {
            session: Some(session),
            inner: Arc::clone(&self.inner),
            _permit: permit,
        }
    }
}

/// A session taken out of the pool; returns it (then the permit) on drop.
struct Lease {
    session: Option<ModelSession>,
    inner: Arc<Inner>,
    // Dropped after `Drop::drop` has put the session back.
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn session(&mut self) -> &mut ModelSession {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.inner
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(session);
        }
    }
}

/// One ONNX Runtime session of a pool's model, lent to a job.
pub struct ModelSession {
    session: Session,
    n_features: usize,
}

impl ModelSession {
    /// The calibrated probability of each row of `rows` (`[N, F]`).
    pub fn run(&mut self, rows: ArrayView2<'_, f32>) -> Result<Vec<f32>, ScoreError> {
        if rows.ncols() != self.n_features {
            return Err(ScoreError::WidthMismatch {
                expected: self.n_features,
                got: rows.ncols(),
            });
        }
        let n = rows.nrows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let rows = rows.as_standard_layout();
        let input = TensorRef::from_array_view(rows.view())?;
        let outputs = self.session.run(ort::inputs![INPUT_NAME => input])?;
        let (shape, data) = outputs[OUTPUT_NAME].try_extract_tensor::<f32>()?;
        if **shape != [n as i64, 1] {
            return Err(ScoreError::OutputShape {
                rows: n,
                got: shape.to_vec(),
            });
        }
        Ok(data.to_vec())
    }
}

/// Checks `features: float32[?, F]` in, `probability: float32` out; returns F.
fn check_signature(session: &Session) -> Result<usize, LoadError> {
    let sig = |m: String| Err(LoadError::Signature(m));
    let [input] = session.inputs() else {
        return sig(format!(
            "expected exactly one input `{INPUT_NAME}`, found {}",
            session.inputs().len()
        ));
    };
    if input.name() != INPUT_NAME {
        return sig(format!(
            "input is named `{}`, expected `{INPUT_NAME}`",
            input.name()
        ));
    }
    let (ty, shape) = match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape),
        other => return sig(format!("input `{INPUT_NAME}` is {other:?}, not a tensor")),
    };
    if ty != TensorElementType::Float32 {
        return sig(format!("input `{INPUT_NAME}` is {ty:?}, expected float32"));
    }
    let n_features = match &**shape {
        [_, f] if *f > 0 => *f as usize,
        _ => {
            return sig(format!(
                "input `{INPUT_NAME}` has shape {:?}, expected [N, F] with a fixed F",
                &**shape
            ));
        }
    };
    match session.outputs().iter().find(|o| o.name() == OUTPUT_NAME) {
        Some(out) if out.dtype().tensor_type() == Some(TensorElementType::Float32) => {
            Ok(n_features)
        }
        Some(out) => sig(format!(
            "output `{OUTPUT_NAME}` is {:?}, expected a float32 tensor",
            out.dtype()
        )),
        None => sig(format!("no output named `{OUTPUT_NAME}`")),
    }
}
