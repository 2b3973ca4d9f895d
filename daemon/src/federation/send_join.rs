//! `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}` and the v1 form, which wraps the
//! answer as `[200, {...}]` (KNOCK-SPEC H.44; CPL-5/CPL-6 send_join cases).

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::value::RawValue;

use super::{
    auth::{MAX_PDU_BODY, Signed},
    path_ids,
};
use crate::{
    error::ApiError,
    service::{
        AppState,
        membership::{self, Answer, Kind},
    },
};

async fn join(
    app: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Box<RawValue>, ApiError> {
    let (room_id, event_id) = path_ids(path)?;
    let origin = request.origin.clone();
    let pdu = request.json()?;
    match membership::send(app, &origin, Kind::Join, room_id, event_id, pdu).await? {
        Answer::Join(body) => Ok(body),
        _ => Err(ApiError::Internal("send_join answered a different handshake".to_owned())),
    }
}

pub async fn send_join_v2(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Box<RawValue>>, ApiError> {
    Ok(Json(join(&app, path, request).await?))
}

pub async fn send_join_v1(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<(u16, Box<RawValue>)>, ApiError> {
    Ok(Json((200, join(&app, path, request).await?)))
}
