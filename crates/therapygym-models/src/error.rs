//! The model layer's error taxonomy (`docs/handling-errors.md`). Every error has a stable kind string,
//! a retryable flag and, where a reply existed, the raw text (so a judge can record it).

use std::fmt;
use std::time::Duration;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutScope {
    /// One attempt (one HTTP request or one local generation): retryable.
    Attempt,
    /// All attempts and waits of one logical call: final.
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// HTTP 429; `retry_after` carries the server's hint.
    RateLimited,
    /// 408/5xx, connection reset or refused: worth another attempt.
    Transient,
    /// The server answered 2xx with a body that is not a chat completion.
    BadResponse,
    Timeout(TimeoutScope),
    /// Other 4xx, unknown model, prompt too long: retrying cannot help.
    Fatal,
    /// A JSON schema was requested and the reply is not JSON.
    InvalidJson,
    /// A JSON schema was requested and the reply is JSON that breaks it.
    SchemaViolation,
    /// A JSON schema was requested and the reply stopped at `max_tokens`.
    Truncated,
    /// Bad model spec, missing model file, invalid settings.
    Config,
    /// The server's reply exceeded the size cap (`MAX_REPLY_BYTES`); reading stopped there.
    ReplyTooLarge,
    /// The prompt does not fit the model's context window; retrying cannot help, a shorter
    /// transcript (or a model with a longer context) can.
    ContextOverflow,
}

impl ErrorKind {
    /// Stable snake_case name used in logs, the run store and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Transient => "transient",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Timeout(TimeoutScope::Attempt) => "timeout_attempt",
            ErrorKind::Timeout(TimeoutScope::Total) => "timeout_total",
            ErrorKind::Fatal => "fatal",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::SchemaViolation => "schema_violation",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Config => "config",
            ErrorKind::ReplyTooLarge => "reply_too_large",
            ErrorKind::ContextOverflow => "context_overflow",
        }
    }

    /// Whether a transport retry may succeed. Structured-output failures are not retried here:
    /// the judge re-asks with the validation error appended instead (R8).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Transient
                | ErrorKind::BadResponse
                | ErrorKind::Timeout(TimeoutScope::Attempt)
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a model call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    status: Option<u16>,
    /// The reply that failed a check, when one arrived (boxed: errors travel in `Result`s).
    reply: Option<Box<FailedReply>>,
    attempts: u32,
}

/// A reply that arrived but failed a check: its text and, when known, its token counts.
#[derive(Debug, Clone, Default)]
struct FailedReply {
    text: Option<String>,
    usage: Option<(u32, u32)>,
}

impl ModelError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            status: None,
            reply: None,
            attempts: 1,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_raw(mut self, raw: impl Into<String>) -> Self {
        self.reply.get_or_insert_default().text = Some(raw.into());
        self
    }

    /// The token counts of the reply that failed a check (so its cost is still counted).
    pub fn with_usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        self.reply.get_or_insert_default().usage = Some((prompt_tokens, completion_tokens));
        self
    }

    /// `(prompt, completion)` tokens of the reply behind this error, when one arrived.
    pub fn usage(&self) -> Option<(u32, u32)> {
        self.reply.as_ref().and_then(|r| r.usage)
    }

    pub(crate) fn with_attempts(mut self, attempts: u32, elapsed: Duration) -> Self {
        if attempts > 1 {
            self.message = format!(
                "{} (after {attempts} attempts in {:.1} s)",
                self.message,
                elapsed.as_secs_f64()
            );
        }
        self.attempts = attempts;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The reply text, when the failure is about a reply that did arrive.
    pub fn raw(&self) -> Option<&str> {
        self.reply.as_ref().and_then(|r| r.text.as_deref())
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Classifies an HTTP status the way every backend must (R1).
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        429 => ErrorKind::RateLimited,
        408 | 409 | 425 | 500 | 502 | 503 | 504 | 520..=529 => ErrorKind::Transient,
        _ => ErrorKind::Fatal,
    }
}

/// Attempts one logical call took, whether it succeeded or not (1 = no retry).
pub fn call_attempts(r: &Result<crate::ChatResponse, ModelError>) -> u32 {
    match r {
        Ok(resp) => resp.attempts,
        Err(e) => e.attempts(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification_is_exhaustive_and_stable() {
        assert_eq!(kind_for_status(429), ErrorKind::RateLimited);
        for s in [408, 500, 502, 503, 504] {
            assert_eq!(kind_for_status(s), ErrorKind::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(kind_for_status(s), ErrorKind::Fatal, "{s}");
        }
    }

    #[test]
    fn retryable_flags() {
        assert!(ErrorKind::RateLimited.is_retryable());
        assert!(ErrorKind::Transient.is_retryable());
        assert!(ErrorKind::Timeout(TimeoutScope::Attempt).is_retryable());
        assert!(!ErrorKind::Timeout(TimeoutScope::Total).is_retryable());
        assert!(!ErrorKind::Fatal.is_retryable());
        assert!(!ErrorKind::InvalidJson.is_retryable());
        assert!(!ErrorKind::SchemaViolation.is_retryable());
        assert!(!ErrorKind::Truncated.is_retryable());
        assert!(!ErrorKind::Config.is_retryable());
        // A server that sent 8 MiB once will send it again: not retried.
        assert!(!ErrorKind::ReplyTooLarge.is_retryable());
    }

    #[test]
    fn attempts_are_reported_in_the_message() {
        let e = ModelError::new(ErrorKind::Transient, "HTTP 503 from http://x/v1")
            .with_attempts(5, Duration::from_millis(3200));
        assert_eq!(
            e.message(),
            "HTTP 503 from http://x/v1 (after 5 attempts in 3.2 s)"
        );
        assert_eq!(e.attempts(), 5);
    }
}
