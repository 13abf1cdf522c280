//! [`Policy`]: a trainable model together with its tokenizer and source GGUF, the unit the
//! session runner and CLI work with.

use std::path::Path;

use crate::error::{GrpoError, Result};
use crate::export::{ExportType, export_gguf};
use crate::generate::{Generation, SamplingParams, generate};
use crate::gguf::{GgufFile, default_model_path};
use crate::model::Llama;
use crate::tokenizer::{ChatMessage, ChatTokenizer, EncodedChat};

/// A trainable f32 model loaded from GGUF, with its tokenizer and the source file (kept for
/// metadata on export).
#[derive(Debug)]
pub struct Policy {
    model: Llama,
    tokenizer: ChatTokenizer,
    source: GgufFile,
}

impl Policy {
    /// Loads a llama-architecture GGUF (dequantized, Q/K un-permuted) and its tokenizer.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let source = GgufFile::open(path)?;
        let tokenizer = ChatTokenizer::from_gguf(&source)?;
        let model = Llama::from_gguf(&source)?;
        Ok(Self {
            model,
            tokenizer,
            source,
        })
    }

    /// Loads the embedded SmolLM2 model from `$THERAPYGYM_HOME/models`.
    pub fn load_default() -> Result<Self> {
        let path = default_model_path().ok_or_else(|| GrpoError::ModelMissing {
            path: "$THERAPYGYM_HOME/models (neither THERAPYGYM_HOME nor HOME is set)".into(),
        })?;
        Self::load(path)
    }

    /// Replaces the weights, e.g. with [`crate::checkpoint::load_model`]'s result.
    pub fn with_model(self, model: Llama) -> Result<Self> {
        if model.config() != self.model.config() {
            return Err(GrpoError::invalid(
                "replacement model has a different configuration",
            ));
        }
        Ok(Self { model, ..self })
    }

    /// The trainable model (clone it to hand it to a [`crate::trainer::Trainer`]; clones share
    /// weights).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The source GGUF.
    pub fn source(&self) -> &GgufFile {
        &self.source
    }

    /// Encodes a chat with the assistant mask (see [`ChatTokenizer::encode_chat`]).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<EncodedChat> {
        self.tokenizer.encode_chat(messages, add_generation_prompt)
    }

    /// Samples the next assistant (therapist) turn, stopping at `<|im_end|>`.
    pub fn generate(
        &self,
        messages: &[ChatMessage],
        max_new_tokens: usize,
        temperature: f64,
        top_p: f64,
        seed: u64,
    ) -> Result<Generation> {
        let params = SamplingParams {
            max_new_tokens,
            temperature,
            top_p,
            seed,
        };
        generate(&self.model, &self.tokenizer, messages, &params)
    }

    /// Writes the current weights as GGUF with the source's metadata.
    pub fn export_gguf(&self, out: impl AsRef<Path>, ty: ExportType) -> Result<()> {
        export_gguf(&self.model, &self.source, out, ty)
    }
}
