//! [`Model`]: a backend plus the reliability rules every call obeys — bounded retries with
//! backoff and jitter, a capped Retry-After, per-attempt and total timeouts, a concurrency limit,
//! and structured-output checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::backend::{BackendInfo, ChatBackend};
use crate::error::{ErrorKind, ModelError, TimeoutScope};
use crate::request::{ChatRequest, ChatResponse, FinishReason};
use crate::retry::{RetryPolicy, Timeouts, sleeps_disabled};
use crate::spec::ModelSpec;

/// Settings of one model handle (one role in a run gets one handle, hence its own pool).
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    /// Calls in flight at once through this handle.
    pub concurrency: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            concurrency: 4,
        }
    }
}

/// Counters for metrics endpoints and run summaries.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub calls: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
}

pub struct Model {
    spec: ModelSpec,
    backend: Arc<dyn ChatBackend>,
    options: ModelOptions,
    limiter: Semaphore,
    stats: ModelStats,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec.to_string())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Wraps any backend (e.g. a trainer's in-memory policy) with the reliability rules.
    pub fn from_backend(
        spec: ModelSpec,
        backend: Arc<dyn ChatBackend>,
        options: ModelOptions,
    ) -> Result<Self, ModelError> {
        options.retry.check().map_err(ModelError::config)?;
        options
            .timeouts
            .check(&options.retry)
            .map_err(ModelError::config)?;
        let permits = options.concurrency.max(1);
        Ok(Self {
            spec,
            backend,
            limiter: Semaphore::new(permits),
            options,
            stats: ModelStats::default(),
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn info(&self) -> BackendInfo {
        self.backend.info()
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// One logical call: retries transient failures, honours the timeouts, and when a schema is
    /// asked returns only replies that are JSON valid under it.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.chat_inner(req).await;
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn chat_inner(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let deadline = started + self.options.timeouts.total;
        let mut failed: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let _permit = self.limiter.acquire().await;
                match tokio::time::timeout(
                    self.options.timeouts.attempt,
                    self.backend.complete(req),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(ModelError::new(
                        ErrorKind::Timeout(TimeoutScope::Attempt),
                        format!(
                            "{} gave no reply within {:.0} s (`timeouts.attempt_s`)",
                            self.spec,
                            self.options.timeouts.attempt.as_secs_f64()
                        ),
                    )),
                }
            };
            let outcome = match tokio::time::timeout(remaining, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ModelError::new(
                        ErrorKind::Timeout(TimeoutScope::Total),
                        format!(
                            "{} call did not finish within {:.0} s (`timeouts.call_total_s`)",
                            self.spec,
                            self.options.timeouts.total.as_secs_f64()
                        ),
                    )
                    .with_attempts(failed + 1, started.elapsed()));
                }
            };
            match outcome {
                Ok(mut resp) => {
                    resp.attempts = failed + 1;
                    if resp.model.is_empty() {
                        resp.model = self.backend.info().model;
                    }
                    return check_structured(req, resp);
                }
                Err(e) if e.is_retryable() && failed + 1 < self.options.retry.max_attempts => {
                    failed += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = self.options.retry.wait(failed, &e, rand::random::<f64>());
                    if Instant::now() + wait >= deadline {
                        return Err(e.with_attempts(failed, started.elapsed()));
                    }
                    tracing::debug!(model = %self.spec, kind = %e.kind(), attempt = failed, wait_ms = wait.as_millis() as u64, "retrying");
                    if !sleeps_disabled() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => return Err(e.with_attempts(failed + 1, started.elapsed())),
            }
        }
    }
}

/// With a schema, a reply must be complete, parse as JSON and validate; each failure is its own
/// error kind carrying the raw text, never silently passed on.
fn check_structured(req: &ChatRequest, resp: ChatResponse) -> Result<ChatResponse, ModelError> {
    let Some(schema) = &req.json_schema else {
        return Ok(resp);
    };
    let attempts = resp.attempts;
    let fail = |kind, msg: String| {
        Err(ModelError::new(kind, msg)
            .with_raw(resp.text.clone())
            .with_usage(resp.prompt_tokens, resp.completion_tokens)
            .with_attempts(attempts, Duration::ZERO))
    };
    let value: serde_json::Value = match serde_json::from_str(resp.text.trim()) {
        Ok(v) => v,
        Err(e) if resp.finish_reason == FinishReason::Length => {
            return fail(
                ErrorKind::Truncated,
                format!(
                    "the reply was cut off at max_tokens ({}) before the JSON ended: {e}",
                    req.sampling.max_tokens
                ),
            );
        }
        Err(e) => {
            return fail(
                ErrorKind::InvalidJson,
                format!("a JSON reply was required but the reply is not JSON: {e}"),
            );
        }
    };
    let validator = compiled_validator(schema)?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .take(5)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return fail(
            ErrorKind::SchemaViolation,
            format!("the JSON reply breaks the schema: {}", errors.join("; ")),
        );
    }
    Ok(resp)
}

/// The compiled validator of a schema, cached by the schema's text: compiling a judge schema
/// costs ~0.3 ms, more than the rest of a scripted judge call, and a run asks one schema
/// thousands of times.
fn compiled_validator(
    schema: &serde_json::Value,
) -> Result<Arc<jsonschema::Validator>, ModelError> {
    type Cache = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = schema.to_string();
    if let Some(v) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(v);
    }
    let v = Arc::new(
        jsonschema::validator_for(schema)
            .map_err(|e| ModelError::config(format!("the JSON schema itself is invalid: {e}")))?,
    );
    if let Ok(mut m) = cache.lock() {
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(key, Arc::clone(&v));
    }
    Ok(v)
}

/// Opens a model from its spec. Local models are loaded once per process and shared.
pub async fn open_model(spec: &ModelSpec, options: ModelOptions) -> Result<Arc<Model>, ModelError> {
    let backend: Arc<dyn ChatBackend> = match spec {
        ModelSpec::Scripted(mode) => Arc::new(crate::scripted::ScriptedBackend::new(mode.clone())),
        ModelSpec::OpenAi { model, base_url } => Arc::new(crate::openai::OpenAiBackend::new(
            model,
            base_url,
            crate::openai::ApiKey::from_env(),
        )?),
        ModelSpec::Embedded | ModelSpec::Gguf(_) => open_local(spec).await?,
    };
    Ok(Arc::new(Model::from_backend(
        spec.clone(),
        backend,
        options,
    )?))
}

#[cfg(feature = "local")]
async fn open_local(spec: &ModelSpec) -> Result<Arc<dyn ChatBackend>, ModelError> {
    let (path, sha) = match spec {
        ModelSpec::Gguf(p) => {
            if !p.is_file() {
                return Err(ModelError::config(format!(
                    "GGUF file {} does not exist",
                    p.display()
                )));
            }
            (p.clone(), None)
        }
        _ => {
            let p = crate::home::embedded_model_path();
            if !p.is_file() {
                return Err(ModelError::config(format!(
                    "the embedded model is not installed at {}; run {}",
                    p.display(),
                    crate::home::INSTALL_HINT
                )));
            }
            (p, Some(crate::home::EMBEDDED_SHA256.to_string()))
        }
    };
    let label = spec.backend_name().to_string();
    // Loading reads ~100 MB and starts a thread: keep it off the async workers.
    let backend =
        tokio::task::spawn_blocking(move || crate::local::LocalBackend::load(&path, sha, &label))
            .await
            .map_err(|e| ModelError::config(format!("model loading task failed: {e}")))??;
    Ok(backend)
}

#[cfg(not(feature = "local"))]
async fn open_local(spec: &ModelSpec) -> Result<Arc<dyn ChatBackend>, ModelError> {
    Err(ModelError::config(format!(
        "{spec} needs the `local` feature of therapygym-models (llama.cpp), which this build lacks"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;
    use crate::spec::ScriptedMode;
    use serde_json::json;

    fn fast() -> ModelOptions {
        ModelOptions {
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                ..RetryPolicy::default()
            },
            timeouts: Timeouts {
                attempt: Duration::from_millis(200),
                total: Duration::from_secs(5),
            },
            concurrency: 2,
        }
    }

    async fn model(mode: &str, opts: ModelOptions) -> Arc<Model> {
        open_model(&format!("scripted:{mode}").parse().unwrap(), opts)
            .await
            .unwrap()
    }

    fn req() -> ChatRequest {
        ChatRequest::new(vec![ChatMessage::user("hello")])
    }

    #[tokio::test]
    async fn flaky_succeeds_within_the_retry_budget() {
        let m = model("flaky:3", fast()).await;
        let r = m.chat(&req()).await.unwrap();
        assert_eq!(r.attempts, 4);
        assert_eq!(m.stats().retries.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let m = model("flaky:10", fast()).await;
        let e = m.chat(&req()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.attempts(), 5);
        assert!(e.message().contains("after 5 attempts"), "{}", e.message());
    }

    #[tokio::test]
    async fn fatal_errors_are_not_retried() {
        let m = Model::from_backend(
            ModelSpec::Scripted(ScriptedMode::Echo),
            Arc::new(FailOnce(ErrorKind::Fatal)),
            fast(),
        )
        .unwrap();
        let e = m.chat(&req()).await.unwrap_err();
        assert_eq!((e.kind(), e.attempts()), (ErrorKind::Fatal, 1));
    }

    fn hang_opts(attempt_ms: u64, total_ms: u64) -> ModelOptions {
        ModelOptions {
            timeouts: Timeouts {
                attempt: Duration::from_millis(attempt_ms),
                total: Duration::from_millis(total_ms),
            },
            retry: RetryPolicy {
                max_delay: Duration::from_millis(10),
                initial_delay: Duration::from_millis(1),
                ..RetryPolicy::default()
            },
            concurrency: 1,
        }
    }

    // The budgets are far apart so that a loaded machine (CI, 2 cores) cannot flip the outcome.
    #[tokio::test]
    async fn hang_hits_the_attempt_timeout_on_every_attempt() {
        let m = model("hang", hang_opts(50, 30_000)).await;
        let e = m.chat(&req()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout(TimeoutScope::Attempt));
        assert_eq!(e.attempts(), 5);
    }

    #[tokio::test]
    async fn hang_stops_at_the_total_budget() {
        let m = model("hang", hang_opts(100, 150)).await;
        let started = Instant::now();
        let e = m.chat(&req()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout(TimeoutScope::Total));
        assert!((1..=2).contains(&e.attempts()), "{}", e.attempts());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn rate_limit_waits_at_least_the_hint() {
        let m = model("rate_limit:0:2", fast()).await;
        let r = m.chat(&req()).await.unwrap();
        assert_eq!(r.attempts, 3);
    }

    #[tokio::test]
    async fn structured_output_failures_have_their_own_kinds() {
        let schema = json!({"type": "object", "required": ["score"], "additionalProperties": false,
            "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 6}}});
        let r = req().with_schema("t", schema);
        let e = model("malformed_json", fast())
            .await
            .chat(&r)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidJson);
        assert!(e.raw().is_some());
        let e = model("out_of_range", fast())
            .await
            .chat(&r)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SchemaViolation);
        assert_eq!(e.raw(), Some(r#"{"score":7}"#));
        let e = model("truncated", fast()).await.chat(&r).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Truncated);
        let e = model("refusal", fast()).await.chat(&r).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidJson);
        let ok = model("echo", fast()).await.chat(&r).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok.text).unwrap();
        assert!(v["score"].as_i64().unwrap() <= 6);
    }

    #[tokio::test]
    async fn concurrency_limit_is_respected() {
        let mut o = fast();
        o.concurrency = 2;
        o.timeouts = Timeouts {
            attempt: Duration::from_secs(2),
            total: Duration::from_secs(5),
        };
        let counter = Arc::new(Counting::default());
        let m = Arc::new(
            Model::from_backend(ModelSpec::Scripted(ScriptedMode::Echo), counter.clone(), o)
                .unwrap(),
        );
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let m = Arc::clone(&m);
                tokio::spawn(async move { m.chat(&req()).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(counter.max_seen.load(Ordering::SeqCst), 2);
    }

    struct FailOnce(ErrorKind);

    #[async_trait::async_trait]
    impl ChatBackend for FailOnce {
        async fn complete(&self, _: &ChatRequest) -> Result<ChatResponse, ModelError> {
            Err(ModelError::new(self.0, "nope"))
        }
        fn info(&self) -> BackendInfo {
            BackendInfo {
                backend: "t".into(),
                model: "t".into(),
                base_url: None,
                sha256: None,
            }
        }
    }

    #[derive(Default)]
    struct Counting {
        live: AtomicU64,
        max_seen: AtomicU64,
    }

    #[async_trait::async_trait]
    impl ChatBackend for Counting {
        async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
            let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_seen.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.live.fetch_sub(1, Ordering::SeqCst);
            Ok(ChatResponse {
                text: req.messages[0].content.clone(),
                finish_reason: FinishReason::Stop,
                prompt_tokens: 1,
                completion_tokens: 1,
                latency: Duration::ZERO,
                attempts: 1,
                model: "c".into(),
            })
        }
        fn info(&self) -> BackendInfo {
            BackendInfo {
                backend: "t".into(),
                model: "t".into(),
                base_url: None,
                sha256: None,
            }
        }
    }
}
