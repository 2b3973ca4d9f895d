//! `GET /_matrix/federation/v1/version` — no auth.

use axum::Json;
use serde_json::{Value, json};

pub async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "knockd", "version": env!("CARGO_PKG_VERSION") } }))
}
