//! `POST /rooms`, `GET /rooms`, `GET /rooms/{roomId}`

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use knockd_shared::{CreateRoomRequest, CreateRoomResponse, RoomDetail, RoomList};
use serde::Deserialize;

use super::{AdminJson, AdminUser};
use crate::{
    error::ApiError,
    service::{AppState, rooms},
};

/// `POST /_knockd/admin/v1/rooms`
pub async fn create(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    AdminJson(req): AdminJson<CreateRoomRequest>,
) -> Result<(StatusCode, Json<CreateRoomResponse>), ApiError> {
    let created = rooms::create_room(&app, &user, req).await?;
    tracing::info!(room_id = %created.room_id, version = %created.room_version, creator = %user, "room created");
    Ok((StatusCode::OK, Json(created)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    from: Option<String>,
    limit: Option<i64>,
}

/// `GET /_knockd/admin/v1/rooms?from=&limit=`
pub async fn list(
    State(app): State<AppState>,
    user: AdminUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RoomList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    let scope = user.scope(&app);
    let (rooms, next) =
        rooms::list_rooms(&app, &scope, query.from, query.limit.unwrap_or(100)).await?;
    Ok(Json(RoomList { rooms, next }))
}

/// `GET /_knockd/admin/v1/rooms/{roomId}`
pub async fn show(
    State(app): State<AppState>,
    user: AdminUser,
    Path(room_id): Path<String>,
) -> Result<Json<RoomDetail>, ApiError> {
    Ok(Json(rooms::show_room(&app, &user.scope(&app), room_id).await?))
}
