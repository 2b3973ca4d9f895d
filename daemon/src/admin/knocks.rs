//! `GET /knocks`: the knock queue.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use knockd_shared::{KnockList, KnockQuery};

use super::AdminUser;
use crate::{
    error::ApiError,
    service::{AppState, queue},
};

/// `GET /_knockd/admin/v1/knocks?status=&room_id=&server=&user_id=&from=&limit=`
pub async fn list(
    State(app): State<AppState>,
    user: AdminUser,
    query: Result<Query<KnockQuery>, QueryRejection>,
) -> Result<Json<KnockList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_param(e.body_text()))?;
    Ok(Json(queue::list(&app, &user.scope(&app), query).await?))
}
