//! The error envelope of the wire protocol (`docs/serve.md`, "Conventions") and the server's own
//! start-up errors.
//!
//! Every non-2xx response is `{"error": {"kind", "retryable", "retry_after_s"?, "episode_id"?,
//! "group_id"?, "message"}}`; retryable 429/503 responses also carry a `Retry-After` header.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// One API error: an HTTP status, a stable `kind` and a message that names the ids involved.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub retryable: bool,
    pub retry_after_s: Option<u64>,
    pub episode_id: Option<String>,
    pub group_id: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            retryable: matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ),
            retry_after_s: None,
            episode_id: None,
            group_id: None,
            message: message.into(),
        }
    }

    pub fn episode(mut self, id: impl Into<String>) -> Self {
        self.episode_id = Some(id.into());
        self
    }

    pub fn group(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs.max(1));
        self
    }

    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// 400: malformed JSON, an unknown field, a value out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn episode_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "episode_not_found",
            format!("episode `{id}` does not exist"),
        )
        .episode(id)
    }

    pub fn episode_expired(id: &str) -> Self {
        Self::new(
            StatusCode::GONE,
            "episode_expired",
            format!(
                "episode `{id}` expired (idle longer than its TTL, or past the hard lifetime); its transcript was stored with status `expired`"
            ),
        )
        .episode(id)
    }

    pub fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, message)
    }

    pub fn unprocessable(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
    }

    pub fn unavailable(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("kind".into(), json!(self.kind));
        e.insert("retryable".into(), json!(self.retryable));
        if let Some(s) = self.retry_after_s {
            e.insert("retry_after_s".into(), json!(s));
        }
        if let Some(id) = &self.episode_id {
            e.insert("episode_id".into(), json!(id));
        }
        if let Some(id) = &self.group_id {
            e.insert("group_id".into(), json!(id));
        }
        e.insert("message".into(), json!(self.message));
        json!({ "error": e })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// Errors that stop the server from starting (bad data files, model specs, run directory).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Data(Box<therapygym_core::DataError>),
    #[error(transparent)]
    Model(Box<therapygym_models::ModelError>),
    #[error(transparent)]
    Store(Box<therapygym_store::StoreError>),
    #[error("{0}")]
    Config(String),
    #[error("serving on {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<therapygym_core::DataError> for ServerError {
    fn from(e: therapygym_core::DataError) -> Self {
        ServerError::Data(Box::new(e))
    }
}

impl From<therapygym_models::ModelError> for ServerError {
    fn from(e: therapygym_models::ModelError) -> Self {
        ServerError::Model(Box::new(e))
    }
}

impl From<therapygym_store::StoreError> for ServerError {
    fn from(e: therapygym_store::StoreError) -> Self {
        ServerError::Store(Box::new(e))
    }
}

impl From<therapygym_run::RunError> for ServerError {
    fn from(e: therapygym_run::RunError) -> Self {
        match e {
            therapygym_run::RunError::Data(d) => ServerError::Data(d),
            therapygym_run::RunError::Model(m) => ServerError::Model(m),
            therapygym_run::RunError::Store(s) => ServerError::Store(s),
            other => ServerError::Config(other.to_string()),
        }
    }
}
