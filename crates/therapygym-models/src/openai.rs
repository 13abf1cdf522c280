//! OpenAI-compatible chat completions (vLLM, SGLang, llama.cpp server, Ollama, OpenAI).
//! Hand-written wire types so non-standard fields stay under our control.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend::{BackendInfo, ChatBackend};
use crate::error::{ErrorKind, ModelError, kind_for_status};
use crate::request::{ChatRequest, ChatResponse, FinishReason};
use crate::util::redact_url;

/// An API key that never appears in Debug output, logs or manifests.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// `THERAPYGYM_API_KEY`, else `OPENAI_API_KEY`; None when neither is set (local servers).
    pub fn from_env() -> Option<Self> {
        ["THERAPYGYM_API_KEY", "OPENAI_API_KEY"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.trim().is_empty())
            .map(|v| ApiKey(v.trim().to_string()))
    }

    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(****)")
    }
}

pub struct OpenAiBackend {
    client: reqwest::Client,
    model: String,
    base_url: String,
    key: Option<ApiKey>,
    /// Extra top-level body fields (e.g. `session_id` for token-recording proxies).
    extra_body: serde_json::Map<String, Value>,
}

impl OpenAiBackend {
    pub fn new(
        model: impl Into<String>,
        base_url: impl Into<String>,
        key: Option<ApiKey>,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            client: http_client()?,
            model: model.into(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            key,
            extra_body: serde_json::Map::new(),
        })
    }

    pub fn with_extra_body(mut self, extra: serde_json::Map<String, Value>) -> Self {
        self.extra_body = extra;
        self
    }

    /// The request body. Every sampling value is explicit: servers' own defaults differ.
    pub fn body(&self, req: &ChatRequest) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": req.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>(),
            "temperature": req.sampling.temperature,
            "top_p": req.sampling.top_p,
            "max_tokens": req.sampling.max_tokens,
            "n": 1,
            "stream": false,
        });
        if let Some(seed) = req.sampling.seed {
            body["seed"] = json!(seed);
        }
        if !req.sampling.stop.is_empty() {
            body["stop"] = json!(req.sampling.stop);
        }
        if let Some(schema) = &req.json_schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": req.schema_name.as_deref().unwrap_or("response"), "strict": true, "schema": schema},
            });
        }
        if let Some(obj) = body.as_object_mut() {
            for (k, v) in &self.extra_body {
                obj.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

/// The one place an HTTP client is built: a backstop timeout on every request, no proxies
/// from the environment for loopback servers.
pub fn http_client() -> Result<reqwest::Client, ModelError> {
    // reqwest is built without a default crypto provider; the first client installs `ring`
    // as the process default (a second install reports an error that changes nothing).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ModelError::config(format!("cannot build the HTTP client: {e}")))
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Retry-After in seconds (`Retry-After: 5`) or milliseconds (`retry-after-ms`, OpenAI).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return hint_duration(ms / 1000.0);
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(hint_duration)
}

/// A server's wait hint in seconds as a duration, clamped: `Duration::from_secs_f64` panics on
/// huge or infinite values (`retry-after-ms: inf`, `Retry-After: 1e30`). Negative means "now";
/// NaN is no hint; anything too large for a `Duration` is `Duration::MAX` (the retry policy caps
/// it).
fn hint_duration(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
}

/// Parses a 2xx body into a response; anything that is not a chat completion is `bad_response`.
pub fn parse_completion(
    body: &str,
    latency: Duration,
    fallback_model: &str,
) -> Result<ChatResponse, ModelError> {
    let c: Completion = serde_json::from_str(body).map_err(|e| {
        ModelError::new(
            ErrorKind::BadResponse,
            format!("server reply is not a chat completion ({e})"),
        )
        .with_raw(body.chars().take(2000).collect::<String>())
    })?;
    let Some(choice) = c.choices.into_iter().next() else {
        return Err(
            ModelError::new(ErrorKind::BadResponse, "server reply has no choices")
                .with_raw(body.to_string()),
        );
    };
    let text = match (choice.message.content, choice.message.refusal) {
        (Some(t), _) => t,
        (None, Some(r)) => r,
        (None, None) => String::new(),
    };
    let usage = c.usage.unwrap_or_default();
    Ok(ChatResponse {
        text,
        finish_reason: FinishReason::parse(choice.finish_reason.as_deref().unwrap_or("stop")),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        latency,
        attempts: 1,
        model: c.model.unwrap_or_else(|| fallback_model.to_string()),
    })
}

#[async_trait]
impl ChatBackend for OpenAiBackend {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let url = format!("{}/chat/completions", self.base_url);
        let started = Instant::now();
        let mut builder = self.client.post(&url).json(&self.body(req));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        let shown = redact_url(&url);
        let resp = builder.send().await.map_err(|e| {
            let kind = if e.is_builder() {
                ErrorKind::Fatal
            } else {
                ErrorKind::Transient
            };
            // reqwest errors may include the URL; print ours, which is redacted.
            ModelError::new(
                kind,
                format!("request to {shown} failed: {}", without_url(&e)),
            )
        })?;
        let status = resp.status().as_u16();
        let hint = retry_after(resp.headers());
        let body = resp.text().await.map_err(|e| {
            ModelError::new(
                ErrorKind::Transient,
                format!("reading the reply from {shown} failed: {}", without_url(&e)),
            )
        })?;
        if !(200..300).contains(&status) {
            let snippet: String = body.chars().take(300).collect();
            let kind = kind_for_status(status);
            let advice = match status {
                401 | 403 => " (check THERAPYGYM_API_KEY / OPENAI_API_KEY)",
                404 => " (check the model id and that BASE_URL ends in /v1)",
                _ => "",
            };
            return Err(ModelError::new(
                kind,
                format!("HTTP {status} from {shown}{advice}: {snippet}"),
            )
            .with_status(status)
            .with_retry_after(hint));
        }
        parse_completion(&body, started.elapsed(), &self.model)
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "openai".into(),
            model: self.model.clone(),
            base_url: Some(redact_url(&self.base_url)),
            sha256: None,
        }
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact_url(u.as_str()));
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ChatMessage, Sampling};

    #[test]
    fn body_carries_every_setting() {
        let b = OpenAiBackend::new("m", "http://h/v1/", None).unwrap();
        let req = ChatRequest::new(vec![ChatMessage::system("s"), ChatMessage::user("u")])
            .with_sampling(Sampling {
                temperature: 0.0,
                top_p: 0.9,
                max_tokens: 64,
                seed: Some(42),
                stop: vec!["\n\n".into()],
            })
            .with_schema("judgement", json!({"type": "object"}));
        let body = b.body(&req);
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"][1], json!({"role": "user", "content": "u"}));
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["seed"], 42);
        assert_eq!(body["stop"], json!(["\n\n"]));
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["name"], "judgement");
        assert_eq!(b.base_url, "http://h/v1");
    }

    #[test]
    fn parses_replies_and_rejects_garbage() {
        let ok = r#"{"id":"x","model":"srv","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        let r = parse_completion(ok, Duration::from_millis(3), "m").unwrap();
        assert_eq!(
            (
                r.text.as_str(),
                r.finish_reason.clone(),
                r.prompt_tokens,
                r.model.as_str()
            ),
            ("hi", FinishReason::Length, 5, "srv")
        );
        let e = parse_completion("<html>oops</html>", Duration::ZERO, "m").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadResponse);
        assert!(e.raw().unwrap().contains("oops"));
        let e = parse_completion(r#"{"choices": []}"#, Duration::ZERO, "m").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadResponse);
    }

    #[test]
    fn retry_after_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn huge_or_infinite_retry_hints_are_clamped_not_a_panic() {
        for (name, value, want) in [
            ("retry-after-ms", "inf", Some(Duration::MAX)),
            ("retry-after-ms", "1e300", Some(Duration::MAX)),
            ("retry-after-ms", "-5", Some(Duration::ZERO)),
            ("retry-after-ms", "NaN", None),
            ("retry-after", "1e30", Some(Duration::MAX)),
            ("retry-after", "inf", Some(Duration::MAX)),
            ("retry-after", "-1", Some(Duration::ZERO)),
        ] {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            assert_eq!(retry_after(&h), want, "{name}: {value}");
        }
        // The retry policy then caps what it waits.
        let e =
            ModelError::new(ErrorKind::RateLimited, "429").with_retry_after(Some(Duration::MAX));
        let p = crate::RetryPolicy::default();
        assert_eq!(p.wait(1, &e, 0.0), p.retry_after_cap);
    }

    #[test]
    fn key_is_never_debug_printed() {
        assert_eq!(format!("{:?}", ApiKey::new("sk-secret")), "ApiKey(****)");
    }
}
