//! Operators' hands on the outbound queue: a parked item retried (back in the queue, its server
//! tried at once) or dropped. Only parked items: one still queued may be in a transaction on its
//! way. A dropped invite ends its approval as "approve failed", saying who dropped it.

use ruma::UserId;

use super::{AppState, ServiceError, moderation::InviteJob, scope::Scope};
use crate::{
    matrix::now_ms,
    store::{StoreError, decisions, knocks, outbox},
};

/// What became of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    Requeued,
    Dropped,
}

/// Puts parked item `item_id` back in the queue.
pub async fn retry(app: &AppState, actor: &UserId, item_id: i64) -> Result<Done, ServiceError> {
    let scope = Scope::of(app, actor);
    app.db
        .write(move |conn| -> Result<Done, ServiceError> {
            let rooms = scope.rooms(conn)?;
            if outbox::parked_item(conn, item_id, rooms.as_deref())?.is_none() {
                return Err(not_parked(item_id));
            }
            outbox::unpark(conn, item_id)?;
            Ok(Done::Requeued)
        })
        .await?;
    app.outbox_wake.notify_one();
    tracing::info!(item_id, %actor, "outbox item retried by an operator");
    Ok(Done::Requeued)
}

/// Deletes parked item `item_id`; an invite's approval fails with the operator's name on it.
pub async fn drop(app: &AppState, actor: &UserId, item_id: i64) -> Result<Done, ServiceError> {
    let scope = Scope::of(app, actor);
    let who = actor.to_string();
    let ended = app
        .db
        .write(move |conn| -> Result<Option<(i64, Option<String>)>, ServiceError> {
            let rooms = scope.rooms(conn)?;
            let Some(item) = outbox::parked_item(conn, item_id, rooms.as_deref())? else {
                return Err(not_parked(item_id));
            };
            outbox::drop_parked(conn, item_id)?;
            if item.kind != outbox::KIND_INVITE {
                return Ok(None);
            }
            let job: InviteJob = serde_json::from_str(&item.payload)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let why = format!(
                "dropped from the outbox by {who} ({})",
                item.last_error.unwrap_or_default()
            );
            let from = [knocks::DELIVERY_PENDING];
            if knocks::transition(conn, job.knock_id, &from, knocks::APPROVE_FAILED, now_ms())? {
                decisions::set_delivery(
                    conn,
                    job.decision_id,
                    decisions::FAILED,
                    None,
                    Some(&why),
                )?;
                Ok(Some((job.knock_id, item.room_id)))
            } else {
                // The knock moved on meanwhile (rescinded, joined): the approval is only dropped.
                let why = format!("{why}; the knock had moved on");
                decisions::set_delivery(
                    conn,
                    job.decision_id,
                    decisions::DROPPED,
                    None,
                    Some(&why),
                )?;
                Ok(None)
            }
        })
        .await?;
    if let Some((knock_id, room_id)) = ended {
        app.publish("decision", Some(knock_id), room_id.as_deref(), Some(knocks::APPROVE_FAILED));
    }
    tracing::info!(item_id, %actor, "outbox item dropped by an operator");
    Ok(Done::Dropped)
}

fn not_parked(item_id: i64) -> ServiceError {
    ServiceError::NotFound(format!("no parked outbox item {item_id}"))
}
