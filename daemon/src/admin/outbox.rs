//! `GET /outbox`: what is waiting to be sent, and what was parked and why (of the rooms in scope).

use axum::{Json, extract::State};
use knockd_shared::{OutboxItem, OutboxStatus};

use super::AdminUser;
use crate::{
    error::ApiError,
    service::AppState,
    store::{StoreError, outbox},
};

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
