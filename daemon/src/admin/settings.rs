//! `PUT /rooms/{roomId}`, `POST /rooms/{roomId}/members`, `DELETE /rooms/{roomId}/members/{userId}`,
//! `PUT /rooms/{roomId}/power_levels/{userId}`

use axum::{
    Json,
    extract::{Path, State},
};
use knockd_shared::{AddMember, EventIds, RoomSettings, SetPowerLevel};

use super::{AdminJson, AdminUser};
use crate::{
    error::ApiError,
    service::{AppState, settings},
};

pub async fn update(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    Path(room_id): Path<String>,
    AdminJson(req): AdminJson<RoomSettings>,
) -> Result<Json<EventIds>, ApiError> {
    Ok(Json(settings::update(&app, &user, room_id, req).await?))
}

pub async fn add_member(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    Path(room_id): Path<String>,
    AdminJson(req): AdminJson<AddMember>,
) -> Result<Json<EventIds>, ApiError> {
    Ok(Json(settings::add_member(&app, &user, room_id, req.user_id, req.power_level).await?))
}

pub async fn remove_member(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    Path((room_id, member)): Path<(String, String)>,
) -> Result<Json<EventIds>, ApiError> {
    Ok(Json(settings::remove_member(&app, &user, room_id, member).await?))
}

pub async fn set_power_level(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    Path((room_id, member)): Path<(String, String)>,
    AdminJson(req): AdminJson<SetPowerLevel>,
) -> Result<Json<EventIds>, ApiError> {
    Ok(Json(settings::set_power_level(&app, &user, room_id, member, req.power_level).await?))
}
