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
    pub lease_gen: i64,
    pub txn_refusals: i64,
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

/// An item to queue (see [`enqueue_many`]).
#[derive(Clone, Debug)]
pub struct NewItem<'a> {
    pub destination: &'a str,
    pub kind: &'a str,
    pub payload: &'a str,
    pub room_id: &'a str,
    pub now_ms: i64,
}

/// [`enqueue`] for many items, a few statements whatever their number.
pub fn enqueue_many(conn: &mut DbConn, items: &[NewItem<'_>]) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut destinations: Vec<&str> = items.iter().map(|i| i.destination).collect();
    destinations.sort_unstable();
    destinations.dedup();
    for chunk in destinations.chunks(500) {
        let rows: Vec<_> = chunk.iter().map(|dest| d::destination.eq(*dest)).collect();
        with_backend!(conn, |c| diesel::insert_into(d::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    for chunk in items.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|i| {
                (
                    o::destination.eq(i.destination),
                    o::kind.eq(i.kind),
                    o::payload.eq(i.payload),
                    o::created_ms.eq(i.now_ms),
                    o::room_id.eq(i.room_id),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(o::table).values(&rows).execute(c))?;
    }
    Ok(())
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

/// A destination's lease as one sender got it. Every write the sender makes for the destination
/// names it, and commits only while the destination still carries its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub destination: String,
    pub owner: String,
    pub generation: i64,
}

/// Takes the destination's lease if it is free, under a new generation.
pub fn lease(
    conn: &mut DbConn,
    destination: &str,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<Lease>, StoreError> {
    let n = diesel::update(
        d::table.filter(d::destination.eq(destination)).filter(d::lease_until_ms.lt(now_ms)),
    )
    .set((
        d::lease_owner.eq(owner),
        d::lease_until_ms.eq(now_ms + lease_ms),
        d::lease_gen.eq(d::lease_gen + 1i64),
    ))
    .execute(conn)?;
    if n != 1 {
        return Ok(None);
    }
    // The row is ours until this transaction commits: what we read is what we set.
    let (generation, txn_id) = d::table
        .find(destination)
        .select((d::lease_gen, d::txn_id))
        .first::<(i64, Option<String>)>(conn)?;
    // Items marked for a transaction the destination no longer has (left by a sender that lost
    // its lease before fencing existed) go back to the queue instead of waiting forever.
    let stranded = o::table.filter(o::destination.eq(destination)).filter(o::txn_id.is_not_null());
    match txn_id {
        Some(current) => diesel::update(stranded.filter(o::txn_id.ne(current)))
            .set(o::txn_id.eq(None::<String>))
            .execute(conn)?,
        None => diesel::update(stranded).set(o::txn_id.eq(None::<String>)).execute(conn)?,
    };
    Ok(Some(Lease { destination: destination.to_owned(), owner: owner.to_owned(), generation }))
}

/// The fence: fails with [`StoreError::LeaseLost`] unless the destination still carries the
/// lease's generation. It locks the row until the caller's transaction ends, so nobody can take
/// the lease over between this check and the commit; a lease taken after the commit sees its
/// writes.
pub fn hold(conn: &mut DbConn, lease: &Lease) -> Result<(), StoreError> {
    let n = diesel::update(
        d::table
            .filter(d::destination.eq(&lease.destination))
            .filter(d::lease_gen.eq(lease.generation))
            .filter(d::lease_owner.eq(&lease.owner)),
    )
    .set(d::lease_gen.eq(lease.generation))
    .execute(conn)?;
    if n == 1 { Ok(()) } else { Err(StoreError::LeaseLost) }
}

/// Extends a lease we hold; false when it is no longer ours.
pub fn renew(
    conn: &mut DbConn,
    lease: &Lease,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    match hold(conn, lease) {
        Ok(()) => {}
        Err(StoreError::LeaseLost) => return Ok(false),
        Err(e) => return Err(e),
    }
    diesel::update(d::table.find(&lease.destination))
        .set(d::lease_until_ms.eq(now_ms + lease_ms))
        .execute(conn)?;
    Ok(true)
}

/// Frees every lease held by `owner` (at start: a previous run of this instance is gone).
pub fn release_all(conn: &mut DbConn, owner: &str) -> Result<usize, StoreError> {
    Ok(diesel::update(d::table.filter(d::lease_owner.eq(owner)))
        .set((d::lease_owner.eq(None::<String>), d::lease_until_ms.eq(0i64)))
        .execute(conn)?)
}

/// Frees a lease we still hold (a lost one stays with whoever has it now).
pub fn release(conn: &mut DbConn, lease: &Lease) -> Result<(), StoreError> {
    match hold(conn, lease) {
        Ok(()) => {}
        Err(StoreError::LeaseLost) => return Ok(()),
        Err(e) => return Err(e),
    }
    diesel::update(d::table.find(&lease.destination))
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

/// Live items of a kind not in a transaction yet, oldest first.
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

/// Records a transaction before it is sent, so whoever holds the lease next resends the same
/// txnId and body. Refused while another transaction of the destination is unfinished.
pub fn start_txn(
    conn: &mut DbConn,
    lease: &Lease,
    txn_id: &str,
    body: &str,
    item_ids: &[i64],
) -> Result<(), StoreError> {
    hold(conn, lease)?;
    let n = diesel::update(d::table.find(&lease.destination).filter(d::txn_id.is_null()))
        .set((d::txn_id.eq(txn_id), d::txn_body.eq(body), d::txn_refusals.eq(0i64)))
        .execute(conn)?;
    if n != 1 {
        return Err(StoreError::Conflict(format!(
            "{} already has a transaction in progress",
            lease.destination
        )));
    }
    diesel::update(
        o::table
            .filter(o::destination.eq(&lease.destination))
            .filter(o::item_id.eq_any(item_ids))
            .filter(o::txn_id.is_null())
            .filter(o::parked_ms.is_null()),
    )
    .set(o::txn_id.eq(txn_id))
    .execute(conn)?;
    Ok(())
}

/// The destination answered the transaction: its items are done.
pub fn finish_txn(conn: &mut DbConn, lease: &Lease, txn_id: &str) -> Result<(), StoreError> {
    hold(conn, lease)?;
    let destination = lease.destination.as_str();
    diesel::delete(o::table.filter(o::destination.eq(destination)).filter(o::txn_id.eq(txn_id)))
        .execute(conn)?;
    diesel::update(d::table.find(destination).filter(d::txn_id.eq(txn_id)))
        .set((
            d::txn_id.eq(None::<String>),
            d::txn_body.eq(None::<String>),
            d::txn_refusals.eq(0i64),
        ))
        .execute(conn)?;
    reset_backoff(conn, destination)
}

/// Deletes one item (an invite that was delivered or given up on) of a destination we hold.
pub fn delete_item(conn: &mut DbConn, lease: &Lease, item_id: i64) -> Result<(), StoreError> {
    hold(conn, lease)?;
    diesel::delete(o::table.find(item_id).filter(o::destination.eq(&lease.destination)))
        .execute(conn)?;
    Ok(())
}

/// Replaces one item's payload (of a destination we hold): what a retry must send the same.
pub fn set_payload(
    conn: &mut DbConn,
    lease: &Lease,
    item_id: i64,
    payload: &str,
) -> Result<(), StoreError> {
    hold(conn, lease)?;
    diesel::update(o::table.find(item_id).filter(o::destination.eq(&lease.destination)))
        .set(o::payload.eq(payload))
        .execute(conn)?;
    Ok(())
}

/// A delivery to the destination worked: no more back-off.
pub fn succeeded(conn: &mut DbConn, lease: &Lease) -> Result<(), StoreError> {
    hold(conn, lease)?;
    reset_backoff(conn, &lease.destination)
}

fn reset_backoff(conn: &mut DbConn, destination: &str) -> Result<(), StoreError> {
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

/// Backs off exponentially from `min_ms` up to `max_ms`; the next attempt is `jitter(back-off)`
/// from now. Returns that wait.
pub fn failed(
    conn: &mut DbConn,
    lease: &Lease,
    error: &str,
    now_ms: i64,
    (min_ms, max_ms): (i64, i64),
    jitter: impl FnOnce(i64) -> i64,
) -> Result<i64, StoreError> {
    hold(conn, lease)?;
    let Some(row) = destination(conn, &lease.destination)? else { return Ok(0) };
    let backoff = if row.backoff_ms == 0 { min_ms } else { (row.backoff_ms * 2).min(max_ms) };
    let wait = jitter(backoff);
    diesel::update(d::table.find(&lease.destination))
        .set((
            d::backoff_ms.eq(backoff),
            d::next_attempt_ms.eq(now_ms + wait),
            d::failing_since_ms.eq(row.failing_since_ms.unwrap_or(now_ms)),
            d::last_error.eq(error),
        ))
        .execute(conn)?;
    Ok(wait)
}

/// The destination refused the body of transaction `txn_id` (400, 413). After `park_after`
/// refusals of the same transaction its items are parked with `error` as the reason and the
/// destination moves on; returns how many were parked.
pub fn refused(
    conn: &mut DbConn,
    lease: &Lease,
    txn_id: &str,
    error: &str,
    now_ms: i64,
    park_after: i64,
) -> Result<usize, StoreError> {
    hold(conn, lease)?;
    let Some(row) = destination(conn, &lease.destination)? else { return Ok(0) };
    if row.txn_id.as_deref() != Some(txn_id) {
        return Ok(0);
    }
    let refusals = row.txn_refusals + 1;
    if refusals < park_after {
        diesel::update(d::table.find(&lease.destination))
            .set(d::txn_refusals.eq(refusals))
            .execute(conn)?;
        return Ok(0);
    }
    let reason = format!("refused {refusals} times: {error}");
    let n = diesel::update(
        o::table.filter(o::destination.eq(&lease.destination)).filter(o::txn_id.eq(txn_id)),
    )
    .set((o::parked_ms.eq(now_ms), o::last_error.eq(&reason), o::txn_id.eq(None::<String>)))
    .execute(conn)?;
    clear_txn(conn, &lease.destination)?;
    Ok(n)
}

fn clear_txn(conn: &mut DbConn, destination: &str) -> Result<(), StoreError> {
    diesel::update(d::table.find(destination))
        .set((
            d::txn_id.eq(None::<String>),
            d::txn_body.eq(None::<String>),
            d::txn_refusals.eq(0i64),
        ))
        .execute(conn)?;
    Ok(())
}

/// Parks every live item of a destination that has been failing since before `cutoff_ms`.
pub fn park_if_failing_since(
    conn: &mut DbConn,
    lease: &Lease,
    cutoff_ms: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    hold(conn, lease)?;
    let Some(row) = destination(conn, &lease.destination)? else { return Ok(0) };
    if row.failing_since_ms.is_none_or(|since| since > cutoff_ms) {
        return Ok(0);
    }
    let reason = row.last_error.unwrap_or_else(|| "failing".to_owned());
    let n = diesel::update(
        o::table.filter(o::destination.eq(&lease.destination)).filter(o::parked_ms.is_null()),
    )
    .set((o::parked_ms.eq(now_ms), o::last_error.eq(&reason), o::txn_id.eq(None::<String>)))
    .execute(conn)?;
    clear_txn(conn, &lease.destination)?;
    Ok(n)
}

/// Deletes items parked before `cutoff_ms`; returns how many. Parked items are in no transaction
/// (parking takes them out of it), and the destination row with its lease and any transaction in
/// progress is left as it is, so a sender holding the lease is not disturbed.
pub fn purge_parked_before(conn: &mut DbConn, cutoff_ms: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(
        o::table
            .filter(o::parked_ms.is_not_null())
            .filter(o::parked_ms.lt(cutoff_ms))
            .filter(o::txn_id.is_null()),
    )
    .execute(conn)?)
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

/// Per destination with items waiting (not parked): how many, and when the oldest was queued (ms).
pub fn depth_by_destination(conn: &mut DbConn) -> Result<Vec<(String, i64, i64)>, StoreError> {
    use diesel::dsl::{count_star, min};
    let rows: Vec<(String, i64, Option<i64>)> = o::table
        .filter(o::parked_ms.is_null())
        .group_by(o::destination)
        .select((o::destination, count_star(), min(o::created_ms)))
        .load(conn)?;
    Ok(rows.into_iter().map(|(d, n, oldest)| (d, n, oldest.unwrap_or_default())).collect())
}

/// A parked item of the given rooms (`None`: any), if there is one with this id.
pub fn parked_item(
    conn: &mut DbConn,
    item_id: i64,
    rooms: Option<&[String]>,
) -> Result<Option<Item>, StoreError> {
    let mut query = o::table.find(item_id).filter(o::parked_ms.is_not_null()).into_boxed();
    if let Some(rooms) = rooms {
        query = query.filter(o::room_id.eq_any(rooms));
    }
    optional(query.first(conn))
}

/// Puts a parked item back in the queue, and lets its destination be tried at once (its
/// back-off forgotten). False when there is no such parked item.
pub fn unpark(conn: &mut DbConn, item_id: i64) -> Result<bool, StoreError> {
    let Some(item) = optional(o::table.find(item_id).first::<Item>(conn))? else {
        return Ok(false);
    };
    let n = diesel::update(o::table.find(item_id).filter(o::parked_ms.is_not_null()))
        .set((o::parked_ms.eq(None::<i64>), o::last_error.eq(None::<String>)))
        .execute(conn)?;
    if n > 0 {
        reset_backoff(conn, &item.destination)?;
    }
    Ok(n > 0)
}

/// Deletes a parked item. False when there is no such parked item.
pub fn drop_parked(conn: &mut DbConn, item_id: i64) -> Result<bool, StoreError> {
    let n =
        diesel::delete(o::table.find(item_id).filter(o::parked_ms.is_not_null())).execute(conn)?;
    Ok(n > 0)
}
