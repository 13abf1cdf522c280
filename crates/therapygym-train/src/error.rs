//! Errors of a training run: the run machinery's (data, models, store, sessions), the
//! trainer's, and the loop's own.

use std::path::PathBuf;

use therapygym_core::DataError;
use therapygym_grpo::GrpoError;
use therapygym_models::ModelError;
use therapygym_run::RunError;
use therapygym_session::SessionError;
use therapygym_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error("training: {0}")]
    Grpo(Box<GrpoError>),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

impl TrainError {
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

impl From<RunError> for TrainError {
    fn from(e: RunError) -> Self {
        TrainError::Run(Box::new(e))
    }
}

impl From<GrpoError> for TrainError {
    fn from(e: GrpoError) -> Self {
        TrainError::Grpo(Box::new(e))
    }
}

/// The run machinery's sources, through [`RunError`] (whose variants display them unchanged).
macro_rules! via_run_error {
    ($($t:ty),*) => {$(
        impl From<$t> for TrainError {
            fn from(e: $t) -> Self {
                TrainError::Run(Box::new(RunError::from(e)))
            }
        }
    )*};
}

via_run_error!(DataError, ModelError, StoreError, SessionError);
