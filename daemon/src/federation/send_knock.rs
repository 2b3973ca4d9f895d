//! `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}` (KNOCK-SPEC C.14–C.26)
//!
//! Guard chain: body size (413) → X-Matrix (401) → rate limits (429) → JSON (400) → room and ACL
//! (404/403) → shape and structure (400) → event ID → signature → pending cap (429) → auth (403)
//! → one transaction → 200.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{
    auth::{MAX_PDU_BODY, Signed},
    path_ids,
};
use crate::{
    error::ApiError,
    metrics::{Refusal, Via},
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
    let answer = async {
        app.admit_knock(origin.as_str(), &room_id)?;
        let pdu = request.json()?;
        Ok::<_, ApiError>(
            membership::send(&app, &origin, Kind::Knock, room_id.clone(), event_id, pdu).await?,
        )
    }
    .await;
    count(&app, &room_id, &answer);
    match answer? {
        Answer::Knock(state) => Ok(Json(json!({ "knock_room_state": state }))),
        _ => Err(ApiError::Internal("send_knock answered a different handshake".to_owned())),
    }
}

/// The knock in the metrics, by the room's version (from memory only: a refused request costs
/// no database read) and how it ended.
fn count(app: &AppState, room_id: &str, answer: &Result<Answer, ApiError>) {
    let version = app.rooms.version_in_memory(room_id).unwrap_or_else(|| "unknown".to_owned());
    app.metrics.knock_received(&version, Via::SendKnock);
    match answer {
        Ok(_) => app.metrics.knock_accepted(&version, Via::SendKnock),
        Err(e) => app.metrics.knock_refused(&version, Via::SendKnock, refusal(e)),
    }
}

fn refusal(e: &ApiError) -> Refusal {
    match e.status_and_code().0 {
        StatusCode::TOO_MANY_REQUESTS => Refusal::Limit,
        StatusCode::FORBIDDEN | StatusCode::CONFLICT => Refusal::Forbidden,
        StatusCode::NOT_FOUND => Refusal::NotFound,
        s if s.is_server_error() => Refusal::Internal,
        _ => Refusal::Invalid,
    }
}
