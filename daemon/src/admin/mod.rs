//! The admin API: JSON over HTTP on its own (loopback) listener, bearer tokens.

mod auth;
mod decide;
mod health;
mod json;
mod knocks;
mod rooms;

use axum::{
    Router,
    routing::{get, post},
};

pub use self::{auth::AdminUser, json::AdminJson};
use crate::{error::ApiError, service::AppState};

/// The admin listener's routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/rooms", post(rooms::create).get(rooms::list))
        .route("/rooms/{room_id}", get(rooms::show))
        .route("/knocks", get(knocks::list))
        .route("/knocks/approve", post(decide::approve_many))
        .route("/knocks/deny", post(decide::deny_many))
        .route("/knocks/{id}", get(decide::show))
        .route("/knocks/{id}/approve", post(decide::approve))
        .route("/knocks/{id}/deny", post(decide::deny))
        .route("/decisions", get(decide::decisions))
        .fallback(not_found);
    Router::new()
        .nest(knockd_shared::ADMIN_PREFIX, api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::Unrecognized
}
