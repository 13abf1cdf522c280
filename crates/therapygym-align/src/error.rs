//! Errors of a training run.

use std::path::PathBuf;

use therapygym_core::DataError;
use therapygym_eval::EvalError;
use therapygym_models::ModelError;
use therapygym_session::SessionError;
use therapygym_store::StoreError;
use therapygym_train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(Box<DataError>),
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Eval(Box<EvalError>),
    #[error(transparent)]
    Session(Box<SessionError>),
    #[error("training: {0}")]
    Train(Box<TrainError>),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

impl AlignError {
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        AlignError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

macro_rules! boxed_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for AlignError {
            fn from(e: $t) -> Self {
                AlignError::$v(Box::new(e))
            }
        }
    )*};
}

boxed_from!(DataError => Data, ModelError => Model, StoreError => Store, EvalError => Eval,
    SessionError => Session, TrainError => Train);
