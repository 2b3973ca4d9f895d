//! `GET /healthz` (the process answers), `GET /readyz` (database and key ready) and the admin
//! API's `GET /version`.

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

/// `GET /_knockd/admin/v1/version` (with a token).
pub async fn version(_user: super::AdminUser) -> Json<knockd_shared::ServerVersion> {
    Json(knockd_shared::ServerVersion {
        server: "knockd".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
