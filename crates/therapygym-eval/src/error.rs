use therapygym_core::DataError;
use therapygym_models::ModelError;
use therapygym_session::SessionError;
use therapygym_store::StoreError;

/// Errors of a run. Large sources are boxed so `Result`s stay small on the hot path.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(Box<DataError>),
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Session(Box<SessionError>),
    #[error("{0}")]
    Invalid(String),
}

impl From<DataError> for EvalError {
    fn from(e: DataError) -> Self {
        EvalError::Data(Box::new(e))
    }
}

impl From<ModelError> for EvalError {
    fn from(e: ModelError) -> Self {
        EvalError::Model(Box::new(e))
    }
}

impl From<StoreError> for EvalError {
    fn from(e: StoreError) -> Self {
        EvalError::Store(Box::new(e))
    }
}

impl From<SessionError> for EvalError {
    fn from(e: SessionError) -> Self {
        EvalError::Session(Box::new(e))
    }
}
