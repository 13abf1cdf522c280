//! Errors of a synthesis run. Problems with single candidates are not errors: they are counted
//! rejections with a reason. These are the conditions that stop a run.

use std::path::PathBuf;

use therapygym_core::DataError;
use therapygym_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(Box<DataError>),
    #[error("the model cannot be used for synthesis: {0}")]
    Model(Box<ModelError>),
    /// Invalid settings; the message names the setting.
    #[error("{0}")]
    Config(String),
    /// A run directory that cannot be started or resumed as asked.
    #[error("{0}")]
    RunDir(String),
    /// A stored state file that does not parse or does not match the run.
    #[error("{} is not a valid synthesis state file: {message}", path.display())]
    State { path: PathBuf, message: String },
}

impl SynthError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn state(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SynthError::State {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<DataError> for SynthError {
    fn from(e: DataError) -> Self {
        SynthError::Data(Box::new(e))
    }
}

impl From<ModelError> for SynthError {
    fn from(e: ModelError) -> Self {
        SynthError::Model(Box::new(e))
    }
}
