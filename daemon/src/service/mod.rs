//! Domain logic: rooms and their events. No HTTP types here.

pub mod events;
pub mod rooms;

use std::sync::Arc;

use crate::{
    config::Config,
    matrix::KeyRing,
    store::{Db, StoreError},
};

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub keys: Arc<KeyRing>,
}

/// Domain errors.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ServiceError> for crate::error::ApiError {
    fn from(e: ServiceError) -> Self {
        use crate::error::ApiError;
        match e {
            ServiceError::Invalid(m) => ApiError::BadRequest("M_INVALID_PARAM", m),
            ServiceError::Forbidden(m) => ApiError::Forbidden(m),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Store(s) => s.into(),
        }
    }
}
