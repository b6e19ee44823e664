//! The one error type handlers return, and its JSON body.
//!
//! Every error response is
//! `{"error": {"kind": "...", "message": "...", "field": "..." | null}}`
//! with the HTTP status given by [`ErrorKind::status`], the single
//! kind → status table.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pool::ScoreError;

/// The machine-readable class of an error; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    UnknownModel,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    TooManyRequests,
    NoHeldOutPredictions,
    NoDriftReference,
    UnknownEntity,
    NoStore,
    EntityNotScored,
    ExportExists,
    UnknownWebhook,
    WebhooksReadOnly,
    ThresholdsReadOnly,
    RegistryConflict,
    UnknownVersion,
    StoreUnavailable,
    NotReady,
    Internal,
}

impl ErrorKind {
    /// The kind → status table.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::UnknownModel | Self::UnknownEntity | Self::NoStore => {
                StatusCode::NOT_FOUND
            }
            Self::EntityNotScored
            | Self::ExportExists
            | Self::WebhooksReadOnly
            | Self::ThresholdsReadOnly
            | Self::RegistryConflict => StatusCode::CONFLICT,
            Self::UnknownWebhook | Self::UnknownVersion => StatusCode::NOT_FOUND,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::NoHeldOutPredictions => StatusCode::CONFLICT,
            Self::NoDriftReference => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error a handler returns to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `field` names the offending input when known.
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// No key, or a key that opens nothing.
    #[error("{message}")]
    Unauthorized { message: String },
    /// A valid key that does not open this route.
    #[error("{message}")]
    Forbidden { message: String },
    #[error("no route for {path}")]
    NotFound { path: String },
    /// The path names a model the server does not serve; `served` lists those it does.
    #[error("no model `{name}` is served; the models served are: {served}")]
    UnknownModel { name: String, served: String },
    /// The body, or the batch in it, is larger than the server accepts.
    #[error("{message}")]
    PayloadTooLarge {
        message: String,
        field: Option<String>,
    },
    /// A body that is not JSON, or is compressed.
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// The body did not arrive in time; the connection is closed.
    #[error("{message}")]
    RequestTimeout { message: String },
    /// Too many wrong keys from this address: refused for `retry_after_secs`.
    #[error(
        "too many requests with a missing or wrong API key from this address; retry in \
         {retry_after_secs} s"
    )]
    TooManyRequests { retry_after_secs: u64 },
    #[error(
        "the {model} bundle {version} kept no held-out predictions (holdout.csv), so capacity \
         questions cannot be answered for it"
    )]
    NoHeldOutPredictions { model: String, version: String },
    #[error(
        "the {model} bundle {version} stored no training distribution (made before drift \
         statistics were), so its drift cannot be measured; retrain to get one"
    )]
    NoDriftReference { model: String, version: String },
    /// The entity store holds nothing under this id; `field` names where the request gave
    /// it, when it was in the body.
    #[error("{}no entity {id:?} is stored", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    UnknownEntity { id: String, field: Option<String> },
    /// The server was started without an entity store.
    #[error("this server keeps no entity store (it was started with --no-store)")]
    NoStore,
    /// The entity is of a kind the model does not score.
    #[error("entity {id:?} is a {kind}; the model {model} scores {scores}")]
    EntityNotScored {
        id: String,
        kind: &'static str,
        model: String,
        scores: &'static str,
    },
    /// An export of this name was made already (its folder exists); nothing was written.
    #[error("name: an export {name:?} exists already; name a new one")]
    ExportExists { name: String },
    /// No webhook endpoint is filed under this key.
    #[error("no webhook endpoint {key:?}; GET /admin/webhooks lists them")]
    UnknownWebhook { key: String },
    /// The webhook endpoints cannot be changed (no configuration file, or it cannot be
    /// written); nothing was changed.
    #[error("{message}")]
    WebhooksReadOnly { message: String },
    /// The thresholds file cannot be changed (none configured, or it cannot be written);
    /// nothing was changed.
    #[error("{message}")]
    ThresholdsReadOnly { message: String },
    /// The registry refused a change (locked by a training run, nothing to revert to);
    /// nothing was changed.
    #[error("{message}")]
    RegistryConflict { message: String },
    /// The registry holds no such version of the model.
    #[error("version: the registry holds no version {version:?} of {model}")]
    UnknownVersion { model: String, version: String },
    /// The entity store failed; nothing of the request was written. `message` is logged.
    #[error("the entity store failed; nothing of this request was written")]
    StoreUnavailable { message: String },
    #[error("method {method} not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The service cannot serve (yet): models not loaded, loading failed.
    #[error("{reason}")]
    NotReady { reason: String },
    /// A server-side failure; `message` is logged, not sent.
    #[error("{message}")]
    Internal { message: String },
}

impl ApiError {
    /// `model`'s bundle kept no held-out predictions.
    pub fn no_held_out(model: &crate::model::LoadedModel) -> Self {
        Self::NoHeldOutPredictions {
            model: model.name().to_string(),
            version: model.version().to_owned(),
        }
    }

    pub fn bad_request(message: impl Into<String>, field: Option<&str>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest { .. } => ErrorKind::BadRequest,
            Self::Unauthorized { .. } => ErrorKind::Unauthorized,
            Self::Forbidden { .. } => ErrorKind::Forbidden,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::UnknownModel { .. } => ErrorKind::UnknownModel,
            Self::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Self::UnsupportedMediaType { .. } => ErrorKind::UnsupportedMediaType,
            Self::RequestTimeout { .. } => ErrorKind::RequestTimeout,
            Self::TooManyRequests { .. } => ErrorKind::TooManyRequests,
            Self::NoHeldOutPredictions { .. } => ErrorKind::NoHeldOutPredictions,
            Self::NoDriftReference { .. } => ErrorKind::NoDriftReference,
            Self::MethodNotAllowed { .. } => ErrorKind::MethodNotAllowed,
            Self::UnknownEntity { .. } => ErrorKind::UnknownEntity,
            Self::NoStore => ErrorKind::NoStore,
            Self::EntityNotScored { .. } => ErrorKind::EntityNotScored,
            Self::ExportExists { .. } => ErrorKind::ExportExists,
            Self::UnknownWebhook { .. } => ErrorKind::UnknownWebhook,
            Self::WebhooksReadOnly { .. } => ErrorKind::WebhooksReadOnly,
            Self::ThresholdsReadOnly { .. } => ErrorKind::ThresholdsReadOnly,
            Self::RegistryConflict { .. } => ErrorKind::RegistryConflict,
            Self::UnknownVersion { .. } => ErrorKind::UnknownVersion,
            Self::StoreUnavailable { .. } => ErrorKind::StoreUnavailable,
            Self::NotReady { .. } => ErrorKind::NotReady,
            Self::Internal { .. } => ErrorKind::Internal,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::BadRequest { field, .. }
            | Self::PayloadTooLarge { field, .. }
            | Self::UnknownEntity { field, .. } => field.as_deref(),
            Self::ExportExists { .. } => Some("name"),
            Self::UnknownVersion { .. } => Some("version"),
            _ => None,
        }
    }

    /// The body sent to the client.
    pub fn body(&self) -> ErrorBody<'_> {
        let message = match self {
            Self::Internal { .. } => "internal server error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message,
                field: self.field(),
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal { message } = &self {
            tracing::error!(%message, "internal error");
        }
        if let Self::StoreUnavailable { message } = &self {
            tracing::error!(%message, "entity store error");
        }
        use axum::http::{HeaderValue, header};
        let mut response = (self.kind().status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The rest of the body is not read: the connection cannot carry another request,
            // and the client is told so.
            Self::PayloadTooLarge { .. } | Self::RequestTimeout { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        Self::StoreUnavailable {
            message: e.to_string(),
        }
    }
}

impl From<ScoreError> for ApiError {
    fn from(e: ScoreError) -> Self {
        match e {
            ScoreError::WidthMismatch { .. } => Self::bad_request(e.to_string(), Some("features")),
            ScoreError::NotRepresentable { ref field, .. } => {
                let field = field.clone();
                Self::bad_request(e.to_string(), Some(&field))
            }
            ScoreError::Ort(_)
            | ScoreError::OutputShape { .. }
            | ScoreError::Task(_)
            | ScoreError::Features(_) => Self::Internal {
                message: e.to_string(),
            },
        }
    }
}
