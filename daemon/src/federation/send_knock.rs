//! `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}` (KNOCK-SPEC C.14–C.26)
//!
//! Guard chain: body size (413) → X-Matrix (401) → rate limits (429) → JSON (400) → room and ACL
//! (404/403) → shape and structure (400) → event ID → signature → pending cap (429) → auth (403)
//! → one transaction → 200.

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
        membership::{self, Answer, Kind},
    },
};

pub async fn send_knock(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let (room_id, event_id) = path_ids(path)?;
    let origin = request.origin.clone();
    app.admit_knock(origin.as_str(), &room_id)?;
    let pdu = request.json()?;
    match membership::send(&app, &origin, Kind::Knock, room_id, event_id, pdu).await? {
        Answer::Knock(state) => Ok(Json(json!({ "knock_room_state": state }))),
        _ => Err(ApiError::Internal("send_knock answered a different handshake".to_owned())),
    }
}
