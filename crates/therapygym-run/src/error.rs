use therapygym_core::DataError;
use therapygym_models::ModelError;
use therapygym_session::SessionError;
use therapygym_store::StoreError;

/// Errors of a run. Large sources are boxed so `Result`s stay small on the hot path.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
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

macro_rules! boxed_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for RunError {
            fn from(e: $t) -> Self {
                RunError::$v(Box::new(e))
            }
        }
    )*};
}

boxed_from!(DataError => Data, ModelError => Model, StoreError => Store, SessionError => Session);
