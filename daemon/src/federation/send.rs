//! `PUT /_matrix/federation/v1/send/{txnId}` (KNOCK-SPEC H.41)

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use serde_json::Value;

use super::auth::{MAX_TXN_BODY, Signed};
use crate::{
    error::ApiError,
    service::{AppState, transactions},
};

pub async fn send(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Signed<MAX_TXN_BODY, false>,
) -> Result<Json<Value>, ApiError> {
    let Path(txn_id) = path.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    if txn_id.len() > transactions::MAX_TXN_ID {
        return Err(ApiError::invalid_param(format!(
            "a txnId is at most {} bytes ({} given)",
            transactions::MAX_TXN_ID,
            txn_id.len()
        )));
    }
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::BadRequest("M_NOT_JSON", format!("invalid JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_json("a transaction is a JSON object"));
    }
    Ok(Json(transactions::receive(&app, &request.origin, txn_id, body).await?))
}
