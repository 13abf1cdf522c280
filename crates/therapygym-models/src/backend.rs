//! The interface every backend implements. Retries, timeouts, concurrency and structured-output
//! checks live in [`crate::Model`], once, not in each backend.

use async_trait::async_trait;
use serde::Serialize;

use crate::error::ModelError;
use crate::request::{ChatRequest, ChatResponse};

/// What a backend says about itself, for run manifests (never secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// `embedded`, `gguf`, `openai`, `scripted`, or a custom backend's name.
    pub backend: String,
    /// Model id, file name or scripted mode.
    pub model: String,
    /// Base URL with credentials masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// SHA-256 of the model file, for local models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One attempt at a chat completion. Implementations classify their failures with
/// [`crate::ErrorKind`] so the caller can decide whether to retry.
#[async_trait]
pub trait ChatBackend: Send + Sync + 'static {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError>;

    fn info(&self) -> BackendInfo;
}
