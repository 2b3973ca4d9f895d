//! `GET /outbox`: what is waiting to be sent, and what was parked and why.

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
    _user: AdminUser,
) -> Result<Json<OutboxStatus>, ApiError> {
    let status = app
        .db
        .read(|conn| -> Result<OutboxStatus, StoreError> {
            let parked = outbox::parked(conn, 500)?
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
            Ok(OutboxStatus { pending: outbox::pending_count(conn)?, parked })
        })
        .await?;
    Ok(Json(status))
}
