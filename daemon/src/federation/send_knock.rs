//! `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}` (KNOCK-SPEC C.14–C.26)
//!
//! Guard chain: body size (413) → X-Matrix (401) → JSON (400) → room and ACL (404/403) →
//! shape and structure (400) → event ID → signature → auth (403) → one transaction → 200.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::{Value, json};

use super::auth::{MAX_PDU_BODY, Signed};
use crate::{
    error::ApiError,
    service::{AppState, knocks},
};

pub async fn send_knock(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let Path((room_id, event_id)) = path.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    for id in [&room_id, &event_id] {
        if id.len() > 255 {
            return Err(ApiError::bad_json("identifier longer than 255 bytes"));
        }
    }
    let pdu = request.json()?;
    let state = knocks::send_knock(&app, &request.origin, room_id, event_id, pdu).await?;
    Ok(Json(json!({ "knock_room_state": state })))
}
