//! `GET /outbox`: what is waiting to be sent, and what was parked and why (of the rooms in
//! scope); `POST /outbox/{id}/retry` and `DELETE /outbox/{id}` for a parked item.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use knockd_shared::{OutboxAction, OutboxItem, OutboxStatus};

use super::AdminUser;
use crate::{
    error::ApiError,
    service::{
        AppState,
        outbox_items::{self, Done},
    },
    store::{StoreError, outbox},
};

fn item_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::invalid_param("an outbox item id is a number"))
}

fn answer(id: i64, done: Done) -> Json<OutboxAction> {
    let status = match done {
        Done::Requeued => "requeued",
        Done::Dropped => "dropped",
    };
    Json(OutboxAction { id, status: status.to_owned() })
}

/// `POST /_knockd/admin/v1/outbox/{id}/retry`
pub async fn retry(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<OutboxAction>, ApiError> {
    let id = item_id(path)?;
    Ok(answer(id, outbox_items::retry(&app, &user, id).await?))
}

/// `DELETE /_knockd/admin/v1/outbox/{id}`
pub async fn drop(
    State(app): State<AppState>,
    AdminUser(user): AdminUser,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<OutboxAction>, ApiError> {
    let id = item_id(path)?;
    Ok(answer(id, outbox_items::drop(&app, &user, id).await?))
}

pub async fn status(
    State(app): State<AppState>,
    user: AdminUser,
) -> Result<Json<OutboxStatus>, ApiError> {
    let scope = user.scope(&app);
    let status = app
        .db
        .read(move |conn| -> Result<OutboxStatus, StoreError> {
            let rooms = scope.rooms(conn)?;
            let parked = outbox::parked(conn, rooms.as_deref(), 500)?
                .into_iter()
                .map(|i| OutboxItem {
                    id: i.item_id,
                    destination: i.destination,
                    kind: i.kind,
                    created_ms: i.created_ms,
                    parked_ms: i.parked_ms,
                    last_error: i.last_error,
                })
                .collect();
            Ok(OutboxStatus { pending: outbox::pending_count(conn, rooms.as_deref())?, parked })
        })
        .await?;
    Ok(Json(status))
}
