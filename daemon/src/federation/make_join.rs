//! `GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…` (KNOCK-SPEC H.44; CPL-1.3)

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::{Value, json};

use super::auth::{MAX_PDU_BODY, Signed};
use crate::{
    error::ApiError,
    service::{
        AppState,
        membership::{self, Kind},
    },
};

pub async fn make_join(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let Path((room_id, user_id)) = path.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    let versions = Some(request.query_all("ver"));
    let (version, event) =
        membership::make(&app, &request.origin, Kind::Join, room_id, user_id, versions).await?;
    Ok(Json(json!({ "room_version": version.as_str(), "event": event })))
}
