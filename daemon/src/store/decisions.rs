//! The audit log of moderation decisions.

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::decisions as dc};
use crate::with_backend;

pub const APPROVE: &str = "approve";
pub const DENY: &str = "deny";
pub const BAN: &str = "ban";

/// Delivery outcomes.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";
pub const DROPPED: &str = "dropped";

#[derive(Clone, Debug, Queryable)]
pub struct DecisionRow {
    pub decision_id: i64,
    pub knock_id: i64,
    pub room_id: String,
    pub actor: String,
    pub action: String,
    pub reason: Option<String>,
    pub decided_ms: i64,
    pub event_id: Option<String>,
    pub delivery: String,
    pub delivery_error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub fn insert(
    conn: &mut DbConn,
    knock_id: i64,
    room_id: &str,
    actor: &str,
    action: &str,
    reason: Option<&str>,
    event_id: Option<&str>,
    delivery: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let id = with_backend!(conn, |c| diesel::insert_into(dc::table)
        .values((
            dc::knock_id.eq(knock_id),
            dc::room_id.eq(room_id),
            dc::actor.eq(actor),
            dc::action.eq(action),
            dc::reason.eq(reason),
            dc::decided_ms.eq(now_ms),
            dc::event_id.eq(event_id),
            dc::delivery.eq(delivery),
        ))
        .returning(dc::decision_id)
        .get_result::<i64>(c))?;
    Ok(id)
}

pub fn get(conn: &mut DbConn, decision_id: i64) -> Result<Option<DecisionRow>, StoreError> {
    optional(dc::table.find(decision_id).first(conn))
}

pub fn set_delivery(
    conn: &mut DbConn,
    decision_id: i64,
    delivery: &str,
    event_id: Option<&str>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    diesel::update(dc::table.find(decision_id))
        .set((dc::delivery.eq(delivery), dc::event_id.eq(event_id), dc::delivery_error.eq(error)))
        .execute(conn)?;
    Ok(())
}

/// The latest decision on a knock.
pub fn latest_for_knock(
    conn: &mut DbConn,
    knock_id: i64,
) -> Result<Option<DecisionRow>, StoreError> {
    optional(dc::table.filter(dc::knock_id.eq(knock_id)).order(dc::decision_id.desc()).first(conn))
}

pub fn for_knocks(conn: &mut DbConn, knock_ids: &[i64]) -> Result<Vec<DecisionRow>, StoreError> {
    Ok(dc::table.filter(dc::knock_id.eq_any(knock_ids)).order(dc::decision_id.asc()).load(conn)?)
}

#[derive(Clone, Debug, Default)]
pub struct DecisionFilter {
    pub room_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub knock_id: Option<i64>,
    /// Only decisions in these rooms; `None` means every room.
    pub rooms: Option<Vec<String>>,
}

/// Newest first, before the cursor.
pub fn list(
    conn: &mut DbConn,
    filter: &DecisionFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DecisionRow>, StoreError> {
    let mut q = dc::table.into_boxed();
    if let Some(r) = &filter.room_id {
        q = q.filter(dc::room_id.eq(r.clone()));
    }
    if let Some(a) = &filter.actor {
        q = q.filter(dc::actor.eq(a.clone()));
    }
    if let Some(a) = &filter.action {
        q = q.filter(dc::action.eq(a.clone()));
    }
    if let Some(k) = filter.knock_id {
        q = q.filter(dc::knock_id.eq(k));
    }
    if let Some(rooms) = &filter.rooms {
        q = q.filter(dc::room_id.eq_any(rooms.clone()));
    }
    if let Some(b) = before {
        q = q.filter(dc::decision_id.lt(b));
    }
    Ok(q.order(dc::decision_id.desc()).limit(limit).load(conn)?)
}
