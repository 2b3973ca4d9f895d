//! `GET /knocks/{id}`, `POST /knocks/{id}/approve`, `POST /knocks/{id}/deny`, the bulk forms
//! `POST /knocks/approve` and `POST /knocks/deny`, and `GET /decisions`.

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
};
use knockd_shared::{
    ApproveRequest, BulkItem, BulkRequest, BulkResponse, Decision, DecisionList, DecisionQuery,
    DenyRequest, KnockDetail,
};

use super::{AdminJson, AdminUser};
use crate::{
    error::ApiError,
    service::{AppState, moderation, queue},
};

fn knock_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::invalid_param("a knock id is a number"))
}

/// `GET /_knockd/admin/v1/knocks/{id}`
pub async fn show(
    State(app): State<AppState>,
    user: AdminUser,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<KnockDetail>, ApiError> {
    Ok(Json(queue::show(&app, &user.scope(&app), knock_id(path)?).await?))
}

/// `POST /_knockd/admin/v1/knocks/{id}/approve`
pub async fn approve(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    path: Result<Path<i64>, PathRejection>,
    AdminJson(req): AdminJson<ApproveRequest>,
) -> Result<Json<Decision>, ApiError> {
    let id = knock_id(path)?;
    let decision = moderation::approve(&app, &user, id, req.reason).await?;
    tracing::info!(knock = id, actor = %user, "knock approved; invite queued");
    Ok(Json(decision))
}

/// `POST /_knockd/admin/v1/knocks/{id}/deny`
pub async fn deny(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    path: Result<Path<i64>, PathRejection>,
    AdminJson(req): AdminJson<DenyRequest>,
) -> Result<Json<Decision>, ApiError> {
    let id = knock_id(path)?;
    let decision = moderation::deny(&app, &user, id, req.reason, req.ban).await?;
    tracing::info!(knock = id, actor = %user, ban = req.ban, "knock denied");
    Ok(Json(decision))
}

/// `POST /_knockd/admin/v1/knocks/approve` `{"ids": [...], "reason"?}`
pub async fn approve_many(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    AdminJson(req): AdminJson<BulkRequest>,
) -> Result<Json<BulkResponse>, ApiError> {
    let mut results = Vec::with_capacity(req.ids.len());
    for id in req.ids {
        results.push(match moderation::approve(&app, &user, id, req.reason.clone()).await {
            Ok(d) => BulkItem { id, decision: Some(d), error: None },
            Err(e) => BulkItem { id, decision: None, error: Some(moderation::error_body(e)) },
        });
    }
    Ok(Json(BulkResponse { results }))
}

/// `POST /_knockd/admin/v1/knocks/deny` `{"ids": [...], "reason"?, "ban"?}`
pub async fn deny_many(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    AdminJson(req): AdminJson<BulkRequest>,
) -> Result<Json<BulkResponse>, ApiError> {
    let mut results = Vec::with_capacity(req.ids.len());
    for id in req.ids {
        results.push(match moderation::deny(&app, &user, id, req.reason.clone(), req.ban).await {
            Ok(d) => BulkItem { id, decision: Some(d), error: None },
            Err(e) => BulkItem { id, decision: None, error: Some(moderation::error_body(e)) },
        });
    }
    Ok(Json(BulkResponse { results }))
}

/// `GET /_knockd/admin/v1/decisions?room_id=&actor=&action=&knock_id=&from=&limit=`
pub async fn decisions(
    State(app): State<AppState>,
    user: AdminUser,
    query: Result<Query<DecisionQuery>, QueryRejection>,
) -> Result<Json<DecisionList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    Ok(Json(queue::decisions(&app, &user.scope(&app), query).await?))
}
