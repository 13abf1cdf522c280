//! The trainable policy as a model-layer backend, so the session runner of `eval` drives
//! training rollouts unchanged (one implementation of a session, not two).
//!
//! The backend remembers the token ids it sampled for each reply. When the session keeps a
//! reply verbatim, later prompts and the training sequence reuse those exact ids instead of
//! re-tokenizing the text (re-tokenization can split a reply differently from how it was
//! sampled, which biases the importance ratio; `docs/design/trainable-policy.md`). A reply that the session
//! cleaned (a role label stripped, an invented patient line cut) is re-tokenized as stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use therapygym_grpo::{ChatMessage, Policy};
use therapygym_models::{
    BackendInfo, ChatBackend, ChatRequest, ChatResponse, ErrorKind, FinishReason, ModelError, Role,
};
use therapygym_session::clean_therapist_reply;

/// Replies (as the session stores them) → the content ids the policy sampled for them.
#[derive(Debug, Default)]
pub struct SampledIds {
    inner: Mutex<HashMap<String, Vec<u32>>>,
}

impl SampledIds {
    fn insert(&self, text: String, ids: Vec<u32>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(text, ids);
        }
    }

    /// The sampled ids of a stored reply, when it was kept verbatim.
    pub fn get(&self, text: &str) -> Option<Vec<u32>> {
        self.inner.lock().ok().and_then(|m| m.get(text).cloned())
    }

    /// Forgets every reply (after each update: new weights sample new replies).
    pub fn clear(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.clear();
        }
    }

    /// The policy-side chat of a model-layer conversation, with sampled ids attached to the
    /// assistant turns that were kept verbatim.
    pub fn to_policy_chat(&self, messages: &[therapygym_models::ChatMessage]) -> Vec<ChatMessage> {
        messages
            .iter()
            .map(|m| match m.role {
                Role::System => ChatMessage::system(m.content.clone()),
                Role::User => ChatMessage::user(m.content.clone()),
                Role::Assistant => ChatMessage {
                    token_ids: self.get(&m.content),
                    ..ChatMessage::assistant(m.content.clone())
                },
            })
            .collect()
    }
}

/// A [`ChatBackend`] that samples from the in-memory policy. Weights are shared with the
/// trainer, so every rollout after an update uses the updated policy.
pub struct PolicyBackend {
    policy: Arc<Policy>,
    ids: Arc<SampledIds>,
    source: PathBuf,
}

impl PolicyBackend {
    pub fn new(policy: Arc<Policy>, ids: Arc<SampledIds>, source: PathBuf) -> Self {
        Self {
            policy,
            ids,
            source,
        }
    }
}

#[async_trait]
impl ChatBackend for PolicyBackend {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if req.json_schema.is_some() {
            return Err(ModelError::config(
                "the training policy does not do structured output; use another model for the judge",
            ));
        }
        let messages = self.ids.to_policy_chat(&req.messages);
        let policy = Arc::clone(&self.policy);
        let s = req.sampling.clone();
        let started = Instant::now();
        let generation = tokio::task::spawn_blocking(move || {
            policy.generate(
                &messages,
                s.max_tokens as usize,
                f64::from(s.temperature),
                f64::from(s.top_p),
                s.seed.unwrap_or(0),
            )
        })
        .await
        .map_err(|e| ModelError::new(ErrorKind::Fatal, format!("policy sampling stopped: {e}")))?
        .map_err(|e| ModelError::new(ErrorKind::Fatal, format!("policy sampling failed: {e}")))?;
        if clean_therapist_reply(&generation.text) == generation.text {
            self.ids
                .insert(generation.text.clone(), generation.content_ids().to_vec());
        }
        Ok(ChatResponse {
            finish_reason: match generation.finish_reason {
                therapygym_grpo::FinishReason::Stop => FinishReason::Stop,
                therapygym_grpo::FinishReason::Length => FinishReason::Length,
            },
            prompt_tokens: u32::try_from(generation.prompt_tokens).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(generation.token_ids.len()).unwrap_or(u32::MAX),
            latency: started.elapsed(),
            attempts: 1,
            model: self.info().model,
            text: generation.text,
        })
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "policy".into(),
            model: self
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.source.display().to_string()),
            base_url: None,
            sha256: None,
        }
    }
}
