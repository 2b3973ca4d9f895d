//! The federation listener: one file per endpoint.

pub mod auth;
mod keys;
mod make_knock;
mod send_knock;
mod version;

use axum::{
    Router,
    routing::{get, put},
};

use crate::{error::ApiError, service::AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(keys::server_keys))
        .route("/_matrix/federation/v1/version", get(version::version))
        .route("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", get(make_knock::make_knock))
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(send_knock::send_knock),
        )
        .fallback(unrecognized)
        .with_state(state)
}

async fn unrecognized() -> ApiError {
    ApiError::Unrecognized
}
