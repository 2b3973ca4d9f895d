//! `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}` (KNOCK-SPEC F.34: rescinding)

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::Value;

use super::{
    auth::{MAX_PDU_BODY, Signed},
    make_template,
};
use crate::{
    error::ApiError,
    service::{AppState, membership::Kind},
};

pub async fn make_leave(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    make_template(&app, path, request, Kind::Leave).await
}
