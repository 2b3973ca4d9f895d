//! The admin API: JSON over HTTP on its own (loopback) listener, bearer tokens.

mod auth;
mod decide;
mod events;
mod health;
mod json;
mod knocks;
mod outbox;
mod rooms;
mod settings;

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
        .route("/rooms/{room_id}", get(rooms::show).put(settings::update))
        .route("/rooms/{room_id}/members", post(settings::add_member))
        .route("/rooms/{room_id}/members/{user_id}", axum::routing::delete(settings::remove_member))
        .route(
            "/rooms/{room_id}/power_levels/{user_id}",
            axum::routing::put(settings::set_power_level),
        )
        .route("/knocks", get(knocks::list))
        .route("/knocks/approve", post(decide::approve_many))
        .route("/knocks/deny", post(decide::deny_many))
        .route("/knocks/{id}", get(decide::show))
        .route("/knocks/{id}/approve", post(decide::approve))
        .route("/knocks/{id}/deny", post(decide::deny))
        .route("/decisions", get(decide::decisions))
        .route("/events", get(events::stream))
        .route("/version", get(health::version))
        .route("/outbox", get(outbox::status))
        .route("/outbox/{id}", axum::routing::delete(outbox::drop))
        .route("/outbox/{id}/retry", post(outbox::retry))
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
