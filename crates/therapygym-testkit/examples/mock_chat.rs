//! A chat-completions mock with a fixed per-call latency, for the orchestration benchmark
//! (`bench/orchestration/run.sh`): every reply waits `LATENCY_MS`, then answers a short
//! therapist/patient line, or the smallest schema-valid value when `response_format` carries a
//! schema (so the judge scores). Bodies are not kept, so its memory stays flat.
//!
//!   cargo run --release -p therapygym-testkit --example mock_chat -- LATENCY_MS
//!
//! Prints `listening on http://127.0.0.1:PORT/v1`; `GET /stats` answers the request count.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

struct Mock {
    latency: Duration,
    requests: AtomicU64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let latency_ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let mock = Arc::new(Mock {
        latency: Duration::from_millis(latency_ms),
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/stats", get(stats))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}/v1", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn stats(State(m): State<Arc<Mock>>) -> String {
    format!("{{\"requests\": {}}}", m.requests.load(Ordering::SeqCst))
}

async fn complete(State(m): State<Arc<Mock>>, body: String) -> Response {
    m.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(m.latency).await;
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let text = therapygym_testkit::schema_reply(&req).map_or_else(
        || "That sounds hard. What went through your mind right then?".to_string(),
        |v| v.to_string(),
    );
    let reply = therapygym_testkit::completion_json(&req, text);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        reply.to_string(),
    )
        .into_response()
}
