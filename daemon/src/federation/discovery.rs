//! `GET /query/directory?room_alias=`, `GET /query/profile?user_id=&field=`,
//! `GET /hierarchy/{roomId}`, `GET|POST /publicRooms`, and the empty device answers
//! `POST /user/keys/query`, `POST /user/keys/claim`, `GET /user/devices/{userId}` (KNOCK-SPEC H.47).

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use super::auth::{MAX_PDU_BODY, Signed};
use crate::{
    error::ApiError,
    service::{AppState, ServiceError, discovery},
};

fn param(req: &Signed<MAX_PDU_BODY>, name: &str) -> Result<String, ApiError> {
    req.query_all(name)
        .pop()
        .ok_or_else(|| ApiError::BadRequest("M_MISSING_PARAM", format!("missing `{name}`")))
}

pub async fn directory(
    State(app): State<AppState>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let alias = param(&req, "room_alias")?;
    let ours = app.keys.server_name().to_string();
    if !alias.ends_with(&format!(":{ours}")) {
        return Err(ApiError::NotFound(format!("{alias} is not an alias of this server")));
    }
    Ok(Json(app.db.read(move |conn| discovery::resolve_alias(conn, &alias, &ours)).await?))
}

pub async fn profile(
    State(app): State<AppState>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let user = param(&req, "user_id")?;
    let field = req.query_all("field").pop();
    Ok(Json(app.db.read(move |conn| discovery::profile(conn, &user, field.as_deref())).await?))
}

pub async fn hierarchy(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let origin = req.origin.clone();
    Ok(Json(
        app.db
            .read(move |conn| -> Result<Value, ServiceError> {
                crate::service::knocks::check_acl(conn, &room_id, &origin)?;
                discovery::hierarchy(conn, &room_id)
            })
            .await?,
    ))
}

async fn public(
    app: &AppState,
    limit: Option<u64>,
    since: Option<String>,
) -> Result<Value, ApiError> {
    let limit = limit.unwrap_or(100).clamp(1, 500) as usize;
    let since = since.and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    app.db
        .read(move |conn| discovery::public_rooms(conn, limit, since))
        .await
        .map_err(ApiError::from)
}

pub async fn public_rooms_get(
    State(app): State<AppState>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let limit = req.query_all("limit").pop().and_then(|l| l.parse().ok());
    Ok(Json(public(&app, limit, req.query_all("since").pop()).await?))
}

pub async fn public_rooms_post(
    State(app): State<AppState>,
    req: Signed<MAX_PDU_BODY>,
) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let since = body["since"].as_str().map(str::to_owned);
    Ok(Json(public(&app, body["limit"].as_u64(), since).await?))
}

pub async fn keys_query(_req: Signed<MAX_PDU_BODY>) -> Json<Value> {
    Json(json!({ "device_keys": {} }))
}

pub async fn keys_claim(_req: Signed<MAX_PDU_BODY>) -> Json<Value> {
    Json(json!({ "one_time_keys": {} }))
}

pub async fn devices(Path(user_id): Path<String>, _req: Signed<MAX_PDU_BODY>) -> Json<Value> {
    Json(json!({ "user_id": user_id, "stream_id": 0, "devices": [] }))
}
