//! A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol, with behaviours
//! chosen per test: normal replies, 429 with Retry-After, 5xx, malformed bodies, hung
//! connections, and a live-request counter for concurrency checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub enum Behavior {
    /// Reply with this text; `None` echoes the last user message.
    Reply(Option<String>),
    /// Sleep, then reply (concurrency and timeout tests).
    Delay { ms: u64 },
    /// The first `times` requests get 429 with `Retry-After: secs`.
    RateLimit { secs: u64, times: usize },
    /// The first `times` requests get this status.
    Status { code: u16, times: usize },
    /// The first `times` requests get a 200 whose body is not a chat completion.
    Malformed { times: usize },
    /// Never answer.
    Hang,
}

#[derive(Debug)]
pub struct FakeState {
    behavior: Mutex<Behavior>,
    pub requests: AtomicUsize,
    pub live: AtomicUsize,
    pub max_live: AtomicUsize,
    pub bodies: Mutex<Vec<Value>>,
    pub auth_headers: Mutex<Vec<String>>,
}

impl FakeState {
    pub fn set(&self, b: Behavior) {
        if let Ok(mut g) = self.behavior.lock() {
            *g = b;
        }
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn last_body(&self) -> Option<Value> {
        self.bodies.lock().ok().and_then(|b| b.last().cloned())
    }
}

pub struct FakeServer {
    /// e.g. `http://127.0.0.1:41234/v1`
    pub base_url: String,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(behavior: Behavior) -> std::io::Result<FakeServer> {
        let state = Arc::new(FakeState {
            behavior: Mutex::new(behavior),
            requests: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            max_live: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
            auth_headers: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeServer {
            base_url: format!("http://{addr}/v1"),
            state,
            task,
        })
    }
}

/// Decrements the live counter however the handler ends (including a dropped connection).
struct LiveGuard(Arc<FakeState>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: String) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let live = state.live.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_live.fetch_max(live, Ordering::SeqCst);
    let _guard = LiveGuard(Arc::clone(&state));
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Ok(mut h) = state.auth_headers.lock()
    {
        h.push(a.to_string());
    }
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad json: {e}")).into_response(),
    };
    if let Ok(mut b) = state.bodies.lock() {
        b.push(body.clone());
    }
    let behavior = state
        .behavior
        .lock()
        .map(|b| b.clone())
        .unwrap_or(Behavior::Reply(None));
    match behavior {
        Behavior::Reply(text) => completion(&body, text),
        Behavior::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            completion(&body, None)
        }
        Behavior::RateLimit { secs, times } if n < times => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            r#"{"error":{"message":"rate limited"}}"#,
        )
            .into_response(),
        Behavior::Status { code, times } if n < times => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, r#"{"error":{"message":"injected failure"}}"#).into_response()
        }
        Behavior::Malformed { times } if n < times => {
            (StatusCode::OK, "<html>not json</html>").into_response()
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        _ => completion(&body, None),
    }
}

fn completion(req: &Value, text: Option<String>) -> Response {
    let text = text.unwrap_or_else(|| {
        req["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string()
    });
    let body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}
