//! `GET /_matrix/key/v2/server` — our signing key, self-signed (KNOCK-SPEC A.1). No auth.

use axum::{Json, extract::State};
use ruma::{CanonicalJsonObject, MilliSecondsSinceUnixEpoch};

use crate::service::AppState;

pub async fn server_keys(State(app): State<AppState>) -> Json<CanonicalJsonObject> {
    Json(app.keys.server_keys_response(MilliSecondsSinceUnixEpoch::now()))
}
