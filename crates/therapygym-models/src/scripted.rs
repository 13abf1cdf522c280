//! The scripted fake: deterministic replies and injected faults, usable as therapist, patient,
//! judge or synthesis model in tests. Never a product default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{BackendInfo, ChatBackend};
use crate::error::{ErrorKind, ModelError};
use crate::request::{ChatRequest, ChatResponse, FinishReason, Role};
use crate::schema_gen::{self, Fault};
use crate::spec::ScriptedMode;
use crate::util::seed_from_str;

pub struct ScriptedBackend {
    mode: ScriptedMode,
    /// Calls made to this model instance (for the `:N` fault counts).
    calls: AtomicU32,
    /// Failures served per distinct request (`flaky:N`), so concurrency does not change outcomes.
    per_request: Mutex<HashMap<String, u32>>,
}

impl ScriptedBackend {
    pub fn new(mode: ScriptedMode) -> Self {
        Self {
            mode,
            calls: AtomicU32::new(0),
            per_request: Mutex::new(HashMap::new()),
        }
    }

    /// True while the first `times` calls (or every call when `times` is None) should misbehave.
    fn misbehave(&self, call: u32, times: Option<u32>) -> bool {
        times.is_none_or(|n| call < n)
    }

    fn failures_for(&self, req: &ChatRequest) -> u32 {
        let key = req.fingerprint();
        let Ok(mut map) = self.per_request.lock() else {
            return u32::MAX;
        };
        let n = map.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// The well-behaved reply: a schema-valid value when a schema is asked, else text.
    fn good_reply(&self, req: &ChatRequest, fault: Fault) -> String {
        match &req.json_schema {
            Some(schema) => {
                let seed = seed_from_str(&req.fingerprint());
                schema_gen::generate(schema, seed, fault).to_string()
            }
            None => req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone())
                .unwrap_or_else(|| "(nothing to echo)".to_string()),
        }
    }
}

fn respond(
    req: &ChatRequest,
    text: String,
    finish: FinishReason,
    started: Instant,
) -> ChatResponse {
    let prompt_tokens: usize = req
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count() + 4)
        .sum();
    ChatResponse {
        completion_tokens: u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX),
        prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        text,
        finish_reason: finish,
        latency: started.elapsed(),
        attempts: 1,
        model: "scripted".to_string(),
    }
}

#[async_trait]
impl ChatBackend for ScriptedBackend {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let ok = |text: String| Ok(respond(req, text, FinishReason::Stop, started));
        // `when` picks a mode by the request's text.
        let mode = match &self.mode {
            ScriptedMode::When { rules, otherwise } => rules
                .iter()
                .find(|(needle, _)| req.messages.iter().any(|m| m.content.contains(needle)))
                .map_or(otherwise.as_ref(), |(_, mode)| mode),
            mode => mode,
        };
        // A cycle plays its modes in turn, each as if it had no count (always misbehaves).
        let (mode, call) = match mode {
            ScriptedMode::Cycle(modes) if !modes.is_empty() => {
                (&modes[call as usize % modes.len()], 0)
            }
            mode => (mode, call),
        };
        match mode {
            ScriptedMode::Echo => ok(self.good_reply(req, Fault::None)),
            // TEXT as given, even under a JSON schema: a test can feed the judge any reply
            // (a schema failure included). `echo` is the schema-valid deterministic reply.
            ScriptedMode::Fixed(t) => ok(t.clone()),
            ScriptedMode::Slow(d) => {
                tokio::time::sleep(*d).await;
                ok(self.good_reply(req, Fault::None))
            }
            ScriptedMode::Flaky(n) => {
                if self.failures_for(req) < *n {
                    Err(
                        ModelError::new(ErrorKind::Transient, "scripted flaky failure (HTTP 503)")
                            .with_status(503),
                    )
                } else {
                    ok(self.good_reply(req, Fault::None))
                }
            }
            ScriptedMode::RateLimit { secs, times } => {
                if self.misbehave(call, *times) {
                    Err(
                        ModelError::new(ErrorKind::RateLimited, "scripted rate limit (HTTP 429)")
                            .with_status(429)
                            .with_retry_after(Some(Duration::from_secs(*secs))),
                    )
                } else {
                    ok(self.good_reply(req, Fault::None))
                }
            }
            ScriptedMode::Http500 { times } => {
                if self.misbehave(call, *times) {
                    Err(
                        ModelError::new(ErrorKind::Transient, "scripted server error (HTTP 500)")
                            .with_status(500),
                    )
                } else {
                    ok(self.good_reply(req, Fault::None))
                }
            }
            ScriptedMode::MalformedJson { times } => {
                if self.misbehave(call, *times) {
                    ok("{\"ctrs\": {\"agenda\": {\"rationale\": \"unterminated".to_string())
                } else {
                    ok(self.good_reply(req, Fault::None))
                }
            }
            ScriptedMode::OutOfRange { times } => {
                let fault = if self.misbehave(call, *times) {
                    Fault::OutOfRange
                } else {
                    Fault::None
                };
                ok(self.good_reply(req, fault))
            }
            ScriptedMode::MissingItem { times } => {
                let fault = if self.misbehave(call, *times) {
                    Fault::MissingItem
                } else {
                    Fault::None
                };
                ok(self.good_reply(req, fault))
            }
            ScriptedMode::Truncated { times } => {
                let full = self.good_reply(req, Fault::None);
                if self.misbehave(call, *times) {
                    let cut: String = full.chars().take(full.chars().count() / 2).collect();
                    Ok(respond(req, cut, FinishReason::Length, started))
                } else {
                    ok(full)
                }
            }
            ScriptedMode::Context(words) => {
                let n: usize = req
                    .messages
                    .iter()
                    .map(|m| m.content.split_whitespace().count())
                    .sum();
                if n > *words as usize {
                    Err(ModelError::new(
                        ErrorKind::ContextOverflow,
                        format!(
                            "scripted context overflow: the prompt has {n} words but the context holds {words}"
                        ),
                    ))
                } else {
                    ok(self.good_reply(req, Fault::None))
                }
            }
            ScriptedMode::Refusal => {
                ok("I'm sorry, but I can't help with rating this conversation.".to_string())
            }
            ScriptedMode::Hang => {
                // Far longer than any sane attempt timeout; the caller's timeout must fire.
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Err(ModelError::new(ErrorKind::Transient, "scripted hang ended"))
            }
            ScriptedMode::Fatal => Err(ModelError::new(
                ErrorKind::Fatal,
                "scripted permanent error (HTTP 400)",
            )
            .with_status(400)),
            // Only an empty cycle or a nested `when` gets here (parsing refuses both): behave.
            ScriptedMode::Cycle(_) | ScriptedMode::When { .. } => {
                ok(self.good_reply(req, Fault::None))
            }
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "scripted".into(),
            model: self.mode.to_string(),
            base_url: None,
            sha256: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;
    use serde_json::json;

    fn req() -> ChatRequest {
        ChatRequest::new(vec![
            ChatMessage::system("s"),
            ChatMessage::user("I can't sleep."),
        ])
    }

    #[tokio::test]
    async fn echo_and_fixed() {
        let b = ScriptedBackend::new(ScriptedMode::Echo);
        assert_eq!(b.complete(&req()).await.unwrap().text, "I can't sleep.");
        let b = ScriptedBackend::new(ScriptedMode::Fixed("hello".into()));
        assert_eq!(b.complete(&req()).await.unwrap().text, "hello");
        // Under a schema too: the reply is TEXT as given, so schema failures can be tested.
        let schema = json!({"type": "object"});
        let r = req().with_schema("t", schema);
        assert_eq!(b.complete(&r).await.unwrap().text, "hello");
    }

    #[tokio::test]
    async fn schema_requests_get_seeded_valid_json() {
        let schema = json!({"type": "object", "required": ["score"], "additionalProperties": false,
            "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 6}}});
        let b = ScriptedBackend::new(ScriptedMode::Echo);
        let mut r = req().with_schema("t", schema.clone());
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..12 {
            r.sampling.seed = Some(seed);
            let a = b.complete(&r).await.unwrap().text;
            assert_eq!(a, b.complete(&r).await.unwrap().text, "deterministic");
            assert!(validator.is_valid(&serde_json::from_str(&a).unwrap()));
            seen.insert(a);
        }
        assert!(seen.len() > 1, "depends on the seed");
    }

    #[tokio::test]
    async fn a_cycle_plays_its_modes_in_turn() {
        let mode: ScriptedMode = "cycle:rate_limit:0,http_500,malformed_json,echo"
            .parse()
            .unwrap();
        let b = ScriptedBackend::new(mode);
        for _ in 0..2 {
            let e = b.complete(&req()).await.unwrap_err();
            assert_eq!((e.kind(), e.status()), (ErrorKind::RateLimited, Some(429)));
            let e = b.complete(&req()).await.unwrap_err();
            assert_eq!((e.kind(), e.status()), (ErrorKind::Transient, Some(500)));
            let garbage = b.complete(&req()).await.unwrap().text;
            assert!(serde_json::from_str::<serde_json::Value>(&garbage).is_err());
            assert_eq!(b.complete(&req()).await.unwrap().text, "I can't sleep.");
        }
    }

    #[tokio::test]
    async fn flaky_fails_n_times_per_request() {
        let b = ScriptedBackend::new(ScriptedMode::Flaky(2));
        assert_eq!(
            b.complete(&req()).await.unwrap_err().kind(),
            ErrorKind::Transient
        );
        assert!(b.complete(&req()).await.is_err());
        assert!(b.complete(&req()).await.is_ok());
        let other = ChatRequest::new(vec![ChatMessage::user("other")]);
        assert!(
            b.complete(&other).await.is_err(),
            "a new request starts its own count"
        );
    }

    #[tokio::test]
    async fn counted_faults_then_behave() {
        let b = ScriptedBackend::new(ScriptedMode::Http500 { times: Some(1) });
        assert_eq!(b.complete(&req()).await.unwrap_err().status(), Some(500));
        assert!(b.complete(&req()).await.is_ok());
        let b = ScriptedBackend::new(ScriptedMode::RateLimit {
            secs: 7,
            times: None,
        });
        let e = b.complete(&req()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let b = ScriptedBackend::new(ScriptedMode::Truncated { times: None });
        let r = req().with_schema(
            "t",
            json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        );
        assert_eq!(
            b.complete(&r).await.unwrap().finish_reason,
            FinishReason::Length
        );
    }

    #[tokio::test]
    async fn when_picks_the_mode_by_the_request_text_and_fatal_is_permanent() {
        let mode: ScriptedMode = "when:sleep=fatal;Maya=fixed:hi;*=flaky:1".parse().unwrap();
        assert_eq!(
            mode.to_string(),
            "when:sleep=fatal;Maya=fixed:hi;*=flaky:1",
            "display round-trips"
        );
        let b = ScriptedBackend::new(mode);
        let e = b.complete(&req()).await.unwrap_err();
        assert_eq!((e.kind(), e.status()), (ErrorKind::Fatal, Some(400)));
        assert!(!e.is_retryable());
        // The needle may sit in any message, the system prompt included.
        let maya = ChatRequest::new(vec![
            ChatMessage::system("You are Maya."),
            ChatMessage::user("hello"),
        ]);
        assert_eq!(b.complete(&maya).await.unwrap().text, "hi");
        let other = ChatRequest::new(vec![ChatMessage::user("other")]);
        assert_eq!(b.complete(&other).await.unwrap_err().status(), Some(503));
        assert_eq!(b.complete(&other).await.unwrap().text, "other");
        for bad in [
            "when:",
            "when:x",
            "when:=echo",
            "when:a=echo;*=echo;*=fatal",
            "when:a=when:b=echo",
            "when:a=nope",
        ] {
            assert!(bad.parse::<ScriptedMode>().is_err(), "{bad}");
        }
        // Without a `*` rule the rest echo.
        let b = ScriptedBackend::new("when:zzz=fatal".parse().unwrap());
        assert_eq!(b.complete(&req()).await.unwrap().text, "I can't sleep.");
    }
}
