//! `GET /healthz` (the process answers) and `GET /readyz` (database and key ready).

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::service::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    match app.db.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({ "status": "ready", "database": "ok", "migrations": "applied", "signing_key": app.keys.key_id() }),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready", "database": e.to_string() })),
            )
        }
    }
}
