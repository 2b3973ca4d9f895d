//! The durable outbound queue. Destinations are leased, not items: whoever holds a destination's
//! lease is the only sender to it, across every knockd process sharing the database.

use diesel::prelude::*;

use super::{
    DbConn, StoreError, optional,
    schema::{outbox as o, outbox_destinations as d},
};
use crate::with_backend;

pub const KIND_PDU: &str = "pdu";
pub const KIND_INVITE: &str = "invite";

#[derive(Clone, Debug, Queryable)]
pub struct Item {
    pub item_id: i64,
    pub destination: String,
    pub kind: String,
    pub payload: String,
    pub created_ms: i64,
    pub txn_id: Option<String>,
    pub parked_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The room the item belongs to (`None`: no room, or queued before rooms were recorded).
    pub room_id: Option<String>,
}

#[derive(Clone, Debug, Queryable)]
pub struct Destination {
    pub destination: String,
    pub lease_owner: Option<String>,
    pub lease_until_ms: i64,
    pub next_attempt_ms: i64,
    pub backoff_ms: i64,
    pub failing_since_ms: Option<i64>,
    pub txn_id: Option<String>,
    pub txn_body: Option<String>,
    pub last_error: Option<String>,
}

/// Queues work of a room for a destination. Part of the caller's transaction.
pub fn enqueue(
    conn: &mut DbConn,
    destination: &str,
    kind: &str,
    payload: &str,
    room_id: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    with_backend!(conn, |c| diesel::insert_into(d::table)
        .values(d::destination.eq(destination))
        .on_conflict_do_nothing()
        .execute(c))?;
    let id = with_backend!(conn, |c| diesel::insert_into(o::table)
        .values((
            o::destination.eq(destination),
            o::kind.eq(kind),
            o::payload.eq(payload),
            o::created_ms.eq(now_ms),
            o::room_id.eq(room_id),
        ))
        .returning(o::item_id)
        .get_result::<i64>(c))?;
    Ok(id)
}

/// Destinations with live work whose back-off has passed and whose lease is free.
pub fn due(conn: &mut DbConn, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
    let with_work = o::table.filter(o::parked_ms.is_null()).select(o::destination);
    Ok(d::table
        .filter(d::next_attempt_ms.le(now_ms))
        .filter(d::lease_until_ms.lt(now_ms))
        .filter(d::destination.eq_any(with_work))
        .select(d::destination)
        .order(d::next_attempt_ms.asc())
        .limit(limit)
        .load(conn)?)
}

/// Takes the destination's lease if it is free; true when taken.
pub fn lease(
    conn: &mut DbConn,
    destination: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        d::table.filter(d::destination.eq(destination)).filter(d::lease_until_ms.lt(now_ms)),
    )
    .set((d::lease_owner.eq(owner), d::lease_until_ms.eq(now_ms + lease_ms)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Extends a lease we hold; false when it is no longer ours.
pub fn renew(
    conn: &mut DbConn,
    destination: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        d::table.filter(d::destination.eq(destination)).filter(d::lease_owner.eq(owner)),
    )
    .set(d::lease_until_ms.eq(now_ms + lease_ms))
    .execute(conn)?;
    Ok(n == 1)
}

/// Frees every lease held by `owner` (at start: a previous run of this instance is gone).
pub fn release_all(conn: &mut DbConn, owner: &str) -> Result<usize, StoreError> {
    Ok(diesel::update(d::table.filter(d::lease_owner.eq(owner)))
        .set((d::lease_owner.eq(None::<String>), d::lease_until_ms.eq(0i64)))
        .execute(conn)?)
}

pub fn release(conn: &mut DbConn, destination: &str, owner: &str) -> Result<(), StoreError> {
    diesel::update(
        d::table.filter(d::destination.eq(destination)).filter(d::lease_owner.eq(owner)),
    )
    .set((d::lease_owner.eq(None::<String>), d::lease_until_ms.eq(0i64)))
    .execute(conn)?;
    Ok(())
}

pub fn destination(
    conn: &mut DbConn,
    destination: &str,
) -> Result<Option<Destination>, StoreError> {
    optional(d::table.find(destination).first(conn))
}

/// Live items of a kind, oldest first.
pub fn items(
    conn: &mut DbConn,
    destination: &str,
    kind: &str,
    limit: i64,
) -> Result<Vec<Item>, StoreError> {
    Ok(o::table
        .filter(o::destination.eq(destination))
        .filter(o::kind.eq(kind))
        .filter(o::parked_ms.is_null())
        .filter(o::txn_id.is_null())
        .order(o::item_id.asc())
        .limit(limit)
        .load(conn)?)
}

/// Records a transaction before it is sent, so a retry resends the same txnId and body.
pub fn start_txn(
    conn: &mut DbConn,
    destination: &str,
    txn_id: &str,
    body: &str,
    item_ids: &[i64],
) -> Result<(), StoreError> {
    diesel::update(d::table.find(destination))
        .set((d::txn_id.eq(txn_id), d::txn_body.eq(body)))
        .execute(conn)?;
    diesel::update(o::table.filter(o::item_id.eq_any(item_ids)))
        .set(o::txn_id.eq(txn_id))
        .execute(conn)?;
    Ok(())
}

/// The destination answered the transaction: its items are done.
pub fn finish_txn(conn: &mut DbConn, destination: &str, txn_id: &str) -> Result<(), StoreError> {
    diesel::delete(o::table.filter(o::destination.eq(destination)).filter(o::txn_id.eq(txn_id)))
        .execute(conn)?;
    diesel::update(d::table.find(destination))
        .set((d::txn_id.eq(None::<String>), d::txn_body.eq(None::<String>)))
        .execute(conn)?;
    succeeded(conn, destination)
}

pub fn delete_item(conn: &mut DbConn, item_id: i64) -> Result<(), StoreError> {
    diesel::delete(o::table.find(item_id)).execute(conn)?;
    Ok(())
}

pub fn succeeded(conn: &mut DbConn, destination: &str) -> Result<(), StoreError> {
    diesel::update(d::table.find(destination))
        .set((
            d::backoff_ms.eq(0i64),
            d::next_attempt_ms.eq(0i64),
            d::failing_since_ms.eq(None::<i64>),
            d::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Backs off exponentially from `min_ms` up to `max_ms`.
pub fn failed(
    conn: &mut DbConn,
    destination: &str,
    error: &str,
    now_ms: i64,
    min_ms: i64,
    max_ms: i64,
) -> Result<i64, StoreError> {
    let Some(row) = destination_row(conn, destination)? else { return Ok(0) };
    let backoff = if row.backoff_ms == 0 { min_ms } else { (row.backoff_ms * 2).min(max_ms) };
    diesel::update(d::table.find(destination))
        .set((
            d::backoff_ms.eq(backoff),
            d::next_attempt_ms.eq(now_ms + backoff),
            d::failing_since_ms.eq(row.failing_since_ms.unwrap_or(now_ms)),
            d::last_error.eq(error),
        ))
        .execute(conn)?;
    Ok(backoff)
}

fn destination_row(
    conn: &mut DbConn,
    destination: &str,
) -> Result<Option<Destination>, StoreError> {
    optional(d::table.find(destination).first(conn))
}

/// Parks every live item of a destination that has been failing since before `cutoff_ms`.
pub fn park_if_failing_since(
    conn: &mut DbConn,
    destination: &str,
    cutoff_ms: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let Some(row) = destination_row(conn, destination)? else { return Ok(0) };
    if row.failing_since_ms.is_none_or(|since| since > cutoff_ms) {
        return Ok(0);
    }
    let reason = row.last_error.unwrap_or_else(|| "failing".to_owned());
    let n = diesel::update(
        o::table.filter(o::destination.eq(destination)).filter(o::parked_ms.is_null()),
    )
    .set((o::parked_ms.eq(now_ms), o::last_error.eq(&reason), o::txn_id.eq(None::<String>)))
    .execute(conn)?;
    diesel::update(d::table.find(destination))
        .set((d::txn_id.eq(None::<String>), d::txn_body.eq(None::<String>)))
        .execute(conn)?;
    Ok(n)
}

/// Parked items of the given rooms (`None`: of every room, and of none), for the admin API.
pub fn parked(
    conn: &mut DbConn,
    rooms: Option<&[String]>,
    limit: i64,
) -> Result<Vec<Item>, StoreError> {
    let mut query = o::table.filter(o::parked_ms.is_not_null()).into_boxed();
    if let Some(rooms) = rooms {
        query = query.filter(o::room_id.eq_any(rooms));
    }
    Ok(query.order(o::item_id.asc()).limit(limit).load(conn)?)
}

/// Items of the given rooms still waiting (`None`: of every room, and of none).
pub fn pending_count(conn: &mut DbConn, rooms: Option<&[String]>) -> Result<i64, StoreError> {
    let mut query = o::table.filter(o::parked_ms.is_null()).into_boxed();
    if let Some(rooms) = rooms {
        query = query.filter(o::room_id.eq_any(rooms));
    }
    Ok(query.count().get_result(conn)?)
}
