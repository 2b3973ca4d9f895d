//! The federation listener: one file per endpoint.

mod keys;
mod version;

use axum::{Router, routing::get};

use crate::{error::ApiError, service::AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(keys::server_keys))
        .route("/_matrix/federation/v1/version", get(version::version))
        .fallback(unrecognized)
        .with_state(state)
}

async fn unrecognized() -> ApiError {
    ApiError::BadRequest("M_UNRECOGNIZED", "unrecognized request".to_owned())
}
