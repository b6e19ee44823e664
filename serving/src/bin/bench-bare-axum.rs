//! The ceiling for any HTTP scoring server on this machine: an axum handler that reads the
//! same request body as `POST /v1/score/{task}` into the same request type, and answers a
//! constant. `scripts/bench-serving` loads it beside the real server. A binary of the
//! package rather than an example so that it builds with the same features as the server
//! (an example build turns on the dev-dependencies and rebuilds polars).
//!
//! `target/release/bench-bare-axum 127.0.0.1:18090`

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serving::request::{EntityRequest, parse_json};

/// The request path allocates (JSON, events, tensors, the response); under load glibc's
/// malloc and free took about a sixth of the server's CPU (perf), mimalloc less. The
/// benchmark's bare handler uses the same allocator, so the comparison stays like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn constant(body: Bytes) -> impl IntoResponse {
    match parse_json::<EntityRequest>(&body) {
        Ok(entity) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            // Uses the parsed entity, so the parse cannot be optimised away.
            format!(
                "{{\"probability\":0.5,\"score\":50,\"grade\":\"B\",\"sales_ready\":false,\"events\":{}}}",
                entity.events.map_or(0, |e| e.len())
            ),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"error\":{:?}}}", e.to_string()),
        ),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let app = Router::new().route("/v1/score/{task}", post(constant));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench-bare-axum: listening on {addr}");
    axum::serve(listener, app).await
}
