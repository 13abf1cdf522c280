//! A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol, with behaviours
//! chosen per test: normal replies, 429 with Retry-After, 5xx, malformed bodies, hung
//! connections, oversized replies, a live-request counter for concurrency checks, and the ways
//! real servers treat structured output ([`Formats`]).

pub mod fuzz;

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
    /// The first `times` requests get this status with this body (a server's own wording).
    StatusBody {
        code: u16,
        body: String,
        times: usize,
    },
    /// The first `times` requests get a 200 whose body is not a chat completion.
    Malformed { times: usize },
    /// Never answer.
    Hang,
    /// A 200 whose body is this many bytes (a valid completion padded with spaces).
    Huge { bytes: usize },
}

/// How the fake treats structured output (`response_format`), like the servers people run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Formats {
    /// Replies as its [`Behavior`] says, whatever `response_format` asks.
    #[default]
    Text,
    /// Honours `json_schema` and `{"type": "json_object", "schema": …}`: the reply is a value
    /// valid under the schema (OpenAI, vLLM, SGLang, llama-server).
    Honours,
    /// Answers `json_schema` with HTTP 500 and a validation error, honours `json_object` with a
    /// schema (llama-cpp-python 0.3.x).
    RejectsJsonSchema,
    /// Ignores `response_format` (the reply is prose), but a model that follows instructions:
    /// a schema in the system prompt gets a valid value.
    Ignores,
}

#[derive(Debug)]
pub struct FakeState {
    behavior: Mutex<Behavior>,
    formats: Mutex<Formats>,
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

    pub fn set_formats(&self, f: Formats) {
        if let Ok(mut g) = self.formats.lock() {
            *g = f;
        }
    }

    /// The `response_format.type` of every request so far (`"none"` when absent).
    pub fn formats_asked(&self) -> Vec<String> {
        self.bodies
            .lock()
            .map(|b| {
                b.iter()
                    .map(|x| {
                        x["response_format"]["type"]
                            .as_str()
                            .unwrap_or("none")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
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
            formats: Mutex::new(Formats::Text),
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
    let formats = state.formats.lock().map(|f| *f).unwrap_or_default();
    if formats != Formats::Text {
        match structured(&body, formats) {
            Structured::Reply(v) => return completion(&body, Some(v.to_string())),
            Structured::Reject => return llama_cpp_python_rejection(),
            Structured::Prose => {
                return completion(&body, Some("Sure! Here is what I think.".into()));
            }
            Structured::NotAsked => {}
        }
    }
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
        Behavior::StatusBody { code, body, times } if n < times => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, [("content-type", "application/json")], body).into_response()
        }
        Behavior::Malformed { times } if n < times => {
            (StatusCode::OK, "<html>not json</html>").into_response()
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Behavior::Huge { bytes } => {
            let mut text = completion_json(&body, "padded".into()).to_string();
            text.push_str(&" ".repeat(bytes.saturating_sub(text.len())));
            (StatusCode::OK, [("content-type", "application/json")], text).into_response()
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
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        completion_json(req, text).to_string(),
    )
        .into_response()
}

/// The body of a chat completion answering `req` with `text`.
pub fn completion_json(req: &Value, text: String) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    })
}

/// What a server that honours structured output answers a request that asks for it (a value
/// valid under its schema), or None when the request asks for none.
pub fn schema_reply(req: &Value) -> Option<Value> {
    match structured(req, Formats::Honours) {
        Structured::Reply(v) => Some(v),
        _ => None,
    }
}

enum Structured {
    Reply(Value),
    Reject,
    Prose,
    NotAsked,
}

/// What a server of kind `formats` answers to a request's structured-output ask.
fn structured(req: &Value, formats: Formats) -> Structured {
    let rf = &req["response_format"];
    let in_prompt = req["messages"][0]["content"]
        .as_str()
        .filter(|_| req["messages"][0]["role"] == "system")
        .and_then(schema_in_text);
    match (rf["type"].as_str(), formats) {
        (Some("json_schema"), Formats::RejectsJsonSchema) => Structured::Reject,
        (Some("json_schema"), Formats::Honours) => {
            Structured::Reply(instance(&rf["json_schema"]["schema"]))
        }
        (Some("json_object"), Formats::Honours | Formats::RejectsJsonSchema) => {
            Structured::Reply(instance(&rf["schema"]))
        }
        _ if in_prompt.is_some() => {
            Structured::Reply(in_prompt.as_ref().map(instance).unwrap_or_default())
        }
        (Some(_), _) => Structured::Prose,
        (None, _) => Structured::NotAsked,
    }
}

/// A JSON schema written into a prompt: the JSON object that starts a line and runs to the end.
fn schema_in_text(text: &str) -> Option<Value> {
    text.match_indices("\n{")
        .filter_map(|(i, _)| serde_json::from_str::<Value>(&text[i + 1..]).ok())
        .find(|v| v.get("type").is_some() || v.get("properties").is_some())
}

/// llama-cpp-python 0.3.x's answer to `response_format: {"type": "json_schema"}`.
fn llama_cpp_python_rejection() -> Response {
    let msg = "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}]";
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "application/json")],
        json!({"error": {"message": msg, "type": "internal_server_error"}}).to_string(),
    )
        .into_response()
}

/// The smallest value valid under the subset of JSON schema the judge and synthesis use
/// (object/required, array/minItems, enum, const, integer/number bounds, string lengths).
pub fn instance(schema: &Value) -> Value {
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(first) = schema["anyOf"]
        .as_array()
        .or(schema["oneOf"].as_array())
        .and_then(|b| b.first())
    {
        return instance(first);
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let props = schema["properties"].as_object();
            let mut out = serde_json::Map::new();
            for key in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
            {
                let sub = props
                    .and_then(|p| p.get(key))
                    .cloned()
                    .unwrap_or(Value::Null);
                out.insert(key.to_string(), instance(&sub));
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(0) as usize;
            Value::Array(vec![instance(&schema["items"]); n])
        }
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(0)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => {
            let min = schema["minLength"].as_u64().unwrap_or(2) as usize;
            let max = schema["maxLength"]
                .as_u64()
                .map(|m| m as usize)
                .unwrap_or(usize::MAX);
            json!(
                "ok".repeat(min.div_ceil(2))
                    .chars()
                    .take(min.max(2).min(max))
                    .collect::<String>()
            )
        }
    }
}
