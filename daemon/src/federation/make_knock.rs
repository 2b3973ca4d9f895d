//! `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…` (KNOCK-SPEC B.5–B.13)

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

pub async fn make_knock(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    make_template(&app, path, request, Kind::Knock).await
}
