//! `GET /event/{eventId}`, `GET /state/{roomId}?event_id=`, `GET /state_ids/{roomId}?event_id=`,
//! `GET /event_auth/{roomId}/{eventId}`, `POST /get_missing_events/{roomId}`,
//! `GET /backfill/{roomId}?v=…&limit=` (KNOCK-SPEC H.46). Small handlers over service::reads.

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use super::auth::{MAX_PDU_BODY, Signed};
use crate::{
    error::ApiError,
    matrix::{Pdu, now_ms},
    service::{AppState, ServiceError, reads},
};

fn pdus(list: &[Pdu]) -> Vec<Value> {
    list.iter().map(|p| serde_json::to_value(&*p.json).unwrap_or(Value::Null)).collect()
}

fn ids(list: &[Pdu]) -> Vec<String> {
    list.iter().map(|p| p.event_id.to_string()).collect()
}

/// `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let origin = req.origin.clone();
    let pdu = app.db.read(move |conn| reads::event_for(conn, &event_id, None, &origin)).await?;
    let ours = app.keys.server_name().to_string();
    Ok(Json(json!({ "origin": ours, "origin_server_ts": now_ms(), "pdus": pdus(&[pdu]) })))
}

fn event_id_param(req: &Signed<MAX_PDU_BODY>) -> Result<String, ApiError> {
    req.query_all("event_id")
        .pop()
        .ok_or_else(|| ApiError::BadRequest("M_MISSING_PARAM", "missing `event_id`".to_owned()))
}

async fn state_of(
    app: &AppState,
    room_id: String,
    req: &Signed<MAX_PDU_BODY>,
) -> Result<(Vec<Pdu>, Vec<Pdu>), ApiError> {
    let event_id = event_id_param(req)?;
    let origin = req.origin.clone();
    Ok(app
        .db
        .read(move |conn| -> Result<_, ServiceError> {
            let (room, view) = reads::readable_room(conn, &room_id, &origin)?;
            reads::state_at(conn, &room, &view, &event_id)
        })
        .await?)
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`: the state before the event.
pub async fn state(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let (state, chain) = state_of(&app, room_id, &req).await?;
    Ok(Json(json!({ "pdus": pdus(&state), "auth_chain": pdus(&chain) })))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
pub async fn state_ids(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let (state, chain) = state_of(&app, room_id, &req).await?;
    Ok(Json(json!({ "pdu_ids": ids(&state), "auth_chain_ids": ids(&chain) })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn event_auth(
    State(app): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let origin = req.origin.clone();
    let chain = app
        .db
        .read(move |conn| -> Result<_, ServiceError> {
            let (room, _) = reads::readable_room(conn, &room_id, &origin)?;
            // Redacted when hidden from origin: redaction keeps auth_events.
            let pdu = reads::event_for(conn, &event_id, Some(&room_id), &origin)?;
            let start = pdu.auth_events.iter().map(|a| a.to_string()).collect();
            Ok(reads::auth_chain(conn, &room, start)?)
        })
        .await?;
    Ok(Json(json!({ "auth_chain": pdus(&chain) })))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::BadRequest("M_NOT_JSON", e.to_string()))?;
    let list = |k: &str| -> Vec<String> {
        body[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (earliest, latest) = (list("earliest_events"), list("latest_events"));
    let limit = body["limit"].as_u64().unwrap_or(10).clamp(1, 100) as usize;
    let min_depth = body["min_depth"].as_i64().unwrap_or(0);
    let origin = req.origin.clone();
    let events = app
        .db
        .read(move |conn| -> Result<_, ServiceError> {
            let (room, view) = reads::readable_room(conn, &room_id, &origin)?;
            let events =
                reads::walk_back(conn, &room, &latest, &earliest, limit, false, min_depth)?;
            Ok(view.filter(conn, &room, events)?)
        })
        .await?;
    Ok(Json(json!({ "events": pdus(&events) })))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=…&v=…&limit=`
pub async fn backfill(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let from = req.query_all("v");
    if from.is_empty() {
        return Err(ApiError::BadRequest("M_MISSING_PARAM", "missing `v`".to_owned()));
    }
    let limit = req
        .query_all("limit")
        .pop()
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let origin = req.origin.clone();
    let events = app
        .db
        .read(move |conn| -> Result<_, ServiceError> {
            let (room, view) = reads::readable_room(conn, &room_id, &origin)?;
            let events = reads::walk_back(conn, &room, &from, &[], limit, true, 0)?;
            Ok(view.filter(conn, &room, events)?)
        })
        .await?;
    let ours = app.keys.server_name().to_string();
    Ok(Json(json!({ "origin": ours, "origin_server_ts": now_ms(), "pdus": pdus(&events) })))
}
