//! Requests and responses of the model layer, independent of any backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A chat role as the model sees it. Sessions map therapist/patient onto these per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Sampling settings. Every backend receives explicit values (servers such as llama-server
/// otherwise apply their own defaults, which would make runs irreproducible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    #[serde(serialize_with = "crate::util::f32_as_written")]
    pub temperature: f32,
    #[serde(serialize_with = "crate::util::f32_as_written")]
    pub top_p: f32,
    pub max_tokens: u32,
    /// Masked to 31 bits by the local backend (llama.cpp takes a u32 seed).
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: 512,
            seed: None,
            stop: Vec::new(),
        }
    }
}

/// One chat-completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    /// Structured output: the reply must be one JSON value valid under this schema.
    /// Servers get `response_format: json_schema`; the local backend a grammar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
    /// Name sent with `response_format.json_schema.name` (servers require one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_name: Option<String>,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            sampling: Sampling::default(),
            json_schema: None,
            schema_name: None,
        }
    }

    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    pub fn with_schema(mut self, name: impl Into<String>, schema: serde_json::Value) -> Self {
        self.schema_name = Some(name.into());
        self.json_schema = Some(schema);
        self
    }

    /// A stable hash of everything that determines the reply (messages, sampling, schema).
    /// Used by the scripted backend and as a cache key ingredient.
    pub fn fingerprint(&self) -> String {
        crate::util::sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (end-of-generation token or a stop string).
    Stop,
    /// `max_tokens` was reached: the text is truncated.
    Length,
    Other(String),
}

impl FinishReason {
    pub fn parse(s: &str) -> Self {
        match s {
            "stop" | "eos" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            other => FinishReason::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Other(s) => s,
        }
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Wall time of the successful attempt (retries and waits excluded).
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// How many attempts the call took (1 = no retry). Filled in by [`crate::Model`].
    #[serde(default = "one")]
    pub attempts: u32,
    /// Model identity as reported by the backend (server model id, GGUF file name, ...).
    pub model: String,
}

fn one() -> u32 {
    1
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
