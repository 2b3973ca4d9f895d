//! The federation listener: one file per endpoint.

pub mod auth;
pub mod connections;
mod discovery;
mod keys;
mod make_join;
mod make_knock;
mod make_leave;
mod observe;
mod reads;
mod send;
mod send_join;
mod send_knock;
mod send_leave;
mod version;

use axum::{
    Router,
    extract::{Path, rejection::PathRejection},
    routing::{get, put},
};

use crate::{error::ApiError, service::AppState};

pub fn router(state: AppState) -> Router {
    const V1: &str = "/_matrix/federation/v1";
    const V2: &str = "/_matrix/federation/v2";
    Router::new()
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(keys::server_keys))
        .route(&format!("{V1}/version"), get(version::version))
        .route(&format!("{V1}/send/{{txn_id}}"), put(send::send))
        .route(&format!("{V1}/event/{{event_id}}"), get(reads::event))
        .route(&format!("{V1}/state/{{room_id}}"), get(reads::state))
        .route(&format!("{V1}/state_ids/{{room_id}}"), get(reads::state_ids))
        .route(&format!("{V1}/event_auth/{{room_id}}/{{event_id}}"), get(reads::event_auth))
        .route(
            &format!("{V1}/get_missing_events/{{room_id}}"),
            axum::routing::post(reads::get_missing_events),
        )
        .route(&format!("{V1}/backfill/{{room_id}}"), get(reads::backfill))
        .route(&format!("{V1}/query/directory"), get(discovery::directory))
        .route(&format!("{V1}/query/profile"), get(discovery::profile))
        .route(&format!("{V1}/hierarchy/{{room_id}}"), get(discovery::hierarchy))
        .route(
            &format!("{V1}/publicRooms"),
            get(discovery::public_rooms_get).post(discovery::public_rooms_post),
        )
        .route(&format!("{V1}/user/keys/query"), axum::routing::post(discovery::keys_query))
        .route(&format!("{V1}/user/keys/claim"), axum::routing::post(discovery::keys_claim))
        .route(&format!("{V1}/user/devices/{{user_id}}"), get(discovery::devices))
        .route(&format!("{V1}/make_knock/{{room_id}}/{{user_id}}"), get(make_knock::make_knock))
        .route(&format!("{V1}/send_knock/{{room_id}}/{{event_id}}"), put(send_knock::send_knock))
        .route(&format!("{V1}/make_join/{{room_id}}/{{user_id}}"), get(make_join::make_join))
        .route(&format!("{V1}/send_join/{{room_id}}/{{event_id}}"), put(send_join::send_join_v1))
        .route(&format!("{V2}/send_join/{{room_id}}/{{event_id}}"), put(send_join::send_join_v2))
        .route(&format!("{V1}/make_leave/{{room_id}}/{{user_id}}"), get(make_leave::make_leave))
        .route(&format!("{V1}/send_leave/{{room_id}}/{{event_id}}"), put(send_leave::send_leave_v1))
        .route(&format!("{V2}/send_leave/{{room_id}}/{{event_id}}"), put(send_leave::send_leave_v2))
        .fallback(unrecognized)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

async fn unrecognized() -> ApiError {
    ApiError::Unrecognized
}

/// `{roomId}` and `{eventId}` from the path, each at most 255 bytes.
pub fn path_ids(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((room_id, event_id)) = path.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    for id in [&room_id, &event_id] {
        if id.len() > 255 {
            return Err(ApiError::bad_json("identifier longer than 255 bytes"));
        }
    }
    Ok((room_id, event_id))
}

/// The shared body of `make_knock`, `make_join` and `make_leave`: a template for the user.
/// `ver` is read for knock and join; make_leave has none.
pub async fn make_template(
    app: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    request: auth::Signed<{ auth::MAX_PDU_BODY }>,
    kind: crate::service::membership::Kind,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    use crate::service::membership::{self, Kind};
    let Path((room_id, user_id)) = path.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    if kind == Kind::Knock {
        // Before any database work: a flood costs a lock and a few comparisons.
        app.admit_knock(request.origin.as_str(), &room_id)?;
    }
    let versions = (kind != Kind::Leave).then(|| request.query_all("ver"));
    let (version, event) =
        membership::make(app, &request.origin, kind, room_id, user_id, versions).await?;
    Ok(axum::Json(serde_json::json!({ "room_version": version.as_str(), "event": event })))
}
