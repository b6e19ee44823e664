//! The HTTP surface.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | always `200 {"status":"ok"}`: the process is up |
//! | `GET /readyz` | `200 {"status":"ready","models":[...]}` once models are loaded, else `503` with the error body of kind `not_ready` and the reason as message |
//! | anything else | `404`/`405` with the error body |

use axum::extract::{OriginalUri, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// The service's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize)]
struct Ready {
    status: &'static str,
    models: Vec<String>,
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let models = state.models()?;
    Ok(Json(Ready {
        status: "ready",
        models: models.names().map(str::to_owned).collect(),
    }))
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::response::IntoResponse;
    use ndarray::Array2;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::error::ErrorKind;
    use crate::pool::{BoxFuture, ScoreError, Scorer};
    use crate::state::ModelSet;

    /// Scores every row 0.5; stands in for ONNX Runtime.
    struct Half;

    impl Scorer for Half {
        fn n_features(&self) -> usize {
            2
        }
        fn score(&self, rows: Array2<f32>) -> BoxFuture<'_, Result<Vec<f32>, ScoreError>> {
            Box::pin(async move { Ok(vec![0.5; rows.nrows()]) })
        }
    }

    async fn call(app: Router, method: Method, uri: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            content_type.as_ref().map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{uri}"
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn ready_state() -> AppState {
        let mut models = ModelSet::new();
        models.insert("lead_v1", Arc::new(Half));
        AppState::with_models(models)
    }

    #[tokio::test]
    async fn healthz_is_always_ok() {
        for state in [AppState::not_ready("loading"), ready_state()] {
            let (status, body) = call(app(state), Method::GET, "/healthz").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, json!({"status": "ok"}));
        }
    }

    #[tokio::test]
    async fn readyz_is_503_with_reason_until_models_load() {
        let state = AppState::not_ready("loading models from registry/");
        let (status, body) = call(app(state.clone()), Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"error": {
                "kind": "not_ready",
                "message": "loading models from registry/",
                "field": null
            }})
        );

        let mut models = ModelSet::new();
        models.insert("lead_v1", Arc::new(Half));
        state.set_models(models);
        let (status, body) = call(app(state.clone()), Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ready", "models": ["lead_v1"]}));

        state.set_not_ready("registry reload failed");
        let (status, body) = call(app(state), Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["message"], "registry reload failed");
    }

    #[tokio::test]
    async fn empty_model_set_is_not_ready() {
        let (status, body) = call(
            app(AppState::with_models(ModelSet::new())),
            Method::GET,
            "/readyz",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["kind"], "not_ready");
        assert_eq!(body["error"]["message"], "no models loaded");
    }

    #[tokio::test]
    async fn unknown_route_and_wrong_method_give_error_json() {
        let (status, body) = call(app(ready_state()), Method::GET, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": {"kind": "not_found", "message": "no route for /nope", "field": null}})
        );

        let (status, body) = call(app(ready_state()), Method::POST, "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["kind"], "method_not_allowed");
        assert_eq!(
            body["error"]["message"],
            "method POST not allowed for /healthz"
        );
    }

    async fn error_json(err: ApiError) -> (StatusCode, Value) {
        let res = err.into_response();
        let status = res.status();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn api_error_body_and_status_follow_the_kind_table() {
        let (status, body) = error_json(ApiError::bad_request(
            "rows have 3 features, the model expects 2",
            Some("features"),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": {
                "kind": "bad_request",
                "message": "rows have 3 features, the model expects 2",
                "field": "features"
            }})
        );

        // Internal details are not sent to the client.
        let (status, body) = error_json(ApiError::Internal {
            message: "onnxruntime exploded at 0xdeadbeef".into(),
        })
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            json!({"error": {"kind": "internal", "message": "internal server error", "field": null}})
        );

        for (kind, status) in [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::MethodNotAllowed, 405),
            (ErrorKind::NotReady, 503),
            (ErrorKind::Internal, 500),
        ] {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn score_errors_map_to_api_errors() {
        let err: ApiError = ScoreError::WidthMismatch {
            expected: 2,
            got: 3,
        }
        .into();
        let (status, body) = error_json(err).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["field"], "features");

        let err: ApiError = ScoreError::Task("panicked".into()).into();
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
}
