//! `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}` (answers `{}`) and the v1 form
//! (answers `[200, {}]`) (KNOCK-SPEC F.34; CPL-5/CPL-6 send_leave cases).

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::{Value, json};

use super::{
    auth::{MAX_PDU_BODY, Signed},
    path_ids,
};
use crate::{
    error::ApiError,
    service::{
        AppState,
        membership::{self, Kind},
    },
};

async fn leave(
    app: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<(), ApiError> {
    let (room_id, event_id) = path_ids(path)?;
    let origin = request.origin.clone();
    let pdu = request.json()?;
    membership::send(app, &origin, Kind::Leave, room_id, event_id, pdu).await?;
    Ok(())
}

pub async fn send_leave_v2(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    leave(&app, path, request).await?;
    Ok(Json(json!({})))
}

pub async fn send_leave_v1(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    leave(&app, path, request).await?;
    Ok(Json(json!([200, {}])))
}
