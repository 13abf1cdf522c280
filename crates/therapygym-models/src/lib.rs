//! The model layer of TherapyGym: every role (therapist, patient, judge, synthesiser) talks to a
//! language model through [`Model`], whatever the backend behind the [`ModelSpec`]:
//!
//! | spec | backend |
//! |---|---|
//! | `embedded` (default) | SmolLM2-135M-Instruct GGUF through llama.cpp |
//! | `gguf:PATH` | any local GGUF through llama.cpp |
//! | `openai:MODEL@BASE_URL[#key=VAR]` | any OpenAI-compatible chat-completions server |
//! | `scripted:MODE` | the deterministic fake for tests and fault injection |

mod backend;
mod error;
pub mod gbnf;
pub mod home;
#[cfg(feature = "local")]
mod local;
mod model;
mod openai;
mod request;
mod retry;
mod schema_gen;
mod scripted;
mod spec;
mod util;

pub use backend::{BackendInfo, ChatBackend};
pub use error::{ErrorKind, ModelError, TimeoutScope, call_attempts, kind_for_status};
pub use model::{Model, ModelOptions, ModelStats, open_model};
pub use openai::{
    ApiKey, MAX_REPLY_BYTES, OpenAiBackend, StructuredMode, http_client, parse_completion,
    structured_mode,
};
pub use request::{ChatMessage, ChatRequest, ChatResponse, FinishReason, Role, Sampling};
pub use retry::{RetryPolicy, Timeouts};
pub use scripted::ScriptedBackend;
pub use spec::{ModelSpec, ScriptedMode, redact_spec};
pub use util::{
    f32_as_written, is_loopback_url, redact_text, redact_url, seed_from_str, sha256_hex,
};
