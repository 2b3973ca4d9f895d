//! The knock queue: one pending row per (room, user); earlier knocks stay as history.

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::knocks as k};
use crate::with_backend;

pub const PENDING: &str = "pending";
/// A pending knock replaced by a newer knock of the same user.
pub const REPLACED: &str = "replaced";
/// Approved; the invite is on its way to the knocker's server.
pub const DELIVERY_PENDING: &str = "delivery_pending";
/// The knocker's server accepted the invite.
pub const APPROVED: &str = "approved";
/// The knocker's server refused the invite for good.
pub const APPROVE_FAILED: &str = "approve_failed";
pub const DENIED: &str = "denied";
pub const BANNED: &str = "banned";
/// The knocker left (withdrew the knock).
pub const RESCINDED: &str = "rescinded";
pub const JOINED: &str = "joined";
/// Pending too long; expired locally, no event sent.
pub const EXPIRED: &str = "expired";

/// Every status, for filters and validation.
pub const ALL_STATUSES: [&str; 10] = [
    PENDING,
    DELIVERY_PENDING,
    APPROVED,
    APPROVE_FAILED,
    DENIED,
    BANNED,
    RESCINDED,
    JOINED,
    EXPIRED,
    REPLACED,
];

#[derive(Clone, Debug, Queryable)]
pub struct KnockRow {
    pub knock_id: i64,
    pub room_id: String,
    pub user_id: String,
    pub event_id: String,
    pub origin_server: String,
    pub status: String,
    pub reason: Option<String>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub content_redacted: bool,
    pub knock_room_state: String,
    pub received_ms: i64,
    pub updated_ms: i64,
}

#[derive(Clone, Debug)]
pub struct NewKnock<'a> {
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub event_id: &'a str,
    pub origin_server: &'a str,
    pub reason: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    pub content_redacted: bool,
    pub knock_room_state: &'a str,
    pub now_ms: i64,
    /// Pending, or replaced (a later knock of the same user in the same batch).
    pub status: &'a str,
}

/// Marks the pending knocks of `users` in the room (if any) as replaced, in one statement.
pub fn replace_pending_many(
    conn: &mut DbConn,
    room_id: &str,
    users: &[&str],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for chunk in users.chunks(500) {
        n += diesel::update(
            k::table
                .filter(k::room_id.eq(room_id))
                .filter(k::user_id.eq_any(chunk))
                .filter(k::status.eq(PENDING)),
        )
        .set((k::status.eq(REPLACED), k::updated_ms.eq(now_ms)))
        .execute(conn)?;
    }
    Ok(n)
}

/// Adds knocks, a few hundred per statement; returns each one's id by event ID.
pub fn insert_many(
    conn: &mut DbConn,
    new: &[NewKnock<'_>],
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut ids = Vec::with_capacity(new.len());
    for chunk in new.chunks(200) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|n| {
                (
                    k::room_id.eq(n.room_id),
                    k::user_id.eq(n.user_id),
                    k::event_id.eq(n.event_id),
                    k::origin_server.eq(n.origin_server),
                    k::status.eq(n.status),
                    k::reason.eq(n.reason),
                    k::display_name.eq(n.display_name),
                    k::avatar_url.eq(n.avatar_url),
                    k::content_redacted.eq(n.content_redacted),
                    k::knock_room_state.eq(n.knock_room_state),
                    k::received_ms.eq(n.now_ms),
                    k::updated_ms.eq(n.now_ms),
                )
            })
            .collect();
        let got: Vec<(String, i64)> = with_backend!(conn, |c| diesel::insert_into(k::table)
            .values(&rows)
            .returning((k::event_id, k::knock_id))
            .get_results(c))?;
        ids.extend(got);
    }
    Ok(ids)
}

/// Pending knocks in a room by users other than `users`, on the `knocks_one_pending` index.
pub fn pending_in_room_except_users(
    conn: &mut DbConn,
    room_id: &str,
    users: &[&str],
) -> Result<i64, StoreError> {
    Ok(k::table
        .filter(k::room_id.eq(room_id))
        .filter(k::status.eq(PENDING))
        .filter(k::user_id.ne_all(users))
        .count()
        .get_result(conn)?)
}

pub fn by_event(conn: &mut DbConn, event_id: &str) -> Result<Option<KnockRow>, StoreError> {
    optional(k::table.filter(k::event_id.eq(event_id)).first(conn))
}

pub fn get(conn: &mut DbConn, knock_id: i64) -> Result<Option<KnockRow>, StoreError> {
    optional(k::table.find(knock_id).first(conn))
}

/// Filters of the queue listing.
#[derive(Clone, Debug, Default)]
pub struct KnockFilter {
    /// `None` means every status.
    pub status: Option<String>,
    pub room_id: Option<String>,
    pub origin_server: Option<String>,
    pub user_id: Option<String>,
    /// Only knocks on these rooms; `None` means every room.
    pub rooms: Option<Vec<String>>,
}

/// Knocks oldest first, after the cursor (a knock id).
pub fn list(
    conn: &mut DbConn,
    filter: &KnockFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<KnockRow>, StoreError> {
    let mut query = k::table.into_boxed();
    if let Some(s) = &filter.status {
        query = query.filter(k::status.eq(s.clone()));
    }
    if let Some(r) = &filter.room_id {
        query = query.filter(k::room_id.eq(r.clone()));
    }
    if let Some(s) = &filter.origin_server {
        query = query.filter(k::origin_server.eq(s.clone()));
    }
    if let Some(u) = &filter.user_id {
        query = query.filter(k::user_id.eq(u.clone()));
    }
    if let Some(rooms) = &filter.rooms {
        query = query.filter(k::room_id.eq_any(rooms.clone()));
    }
    if let Some(after) = after {
        query = query.filter(k::knock_id.gt(after));
    }
    Ok(query.order(k::knock_id.asc()).limit(limit).load(conn)?)
}

/// Moves a knock from one of `from` to `to`; false when it was not in one of `from`.
pub fn transition(
    conn: &mut DbConn,
    knock_id: i64,
    from: &[&str],
    to: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n =
        diesel::update(k::table.filter(k::knock_id.eq(knock_id)).filter(k::status.eq_any(from)))
            .set((k::status.eq(to), k::updated_ms.eq(now_ms)))
            .execute(conn)?;
    Ok(n == 1)
}

/// The user's open knock in the room (pending, delivery pending or approved), if any.
pub fn live_for_user(
    conn: &mut DbConn,
    room_id: &str,
    user_id: &str,
) -> Result<Option<KnockRow>, StoreError> {
    optional(
        k::table
            .filter(k::room_id.eq(room_id))
            .filter(k::user_id.eq(user_id))
            .filter(k::status.eq_any([PENDING, DELIVERY_PENDING, APPROVED]))
            .order(k::knock_id.desc())
            .first(conn),
    )
}

/// Earlier knocks of a user in a room (newest first).
pub fn history_for_user(
    conn: &mut DbConn,
    room_id: &str,
    user_id: &str,
    limit: i64,
) -> Result<Vec<KnockRow>, StoreError> {
    Ok(k::table
        .filter(k::room_id.eq(room_id))
        .filter(k::user_id.eq(user_id))
        .order(k::knock_id.desc())
        .limit(limit)
        .load(conn)?)
}

/// Recent knocks delivered by a server (newest first), on the given rooms (`None`: every room).
pub fn history_for_server(
    conn: &mut DbConn,
    server: &str,
    rooms: Option<&[String]>,
    limit: i64,
) -> Result<Vec<KnockRow>, StoreError> {
    let mut query = k::table.filter(k::origin_server.eq(server)).into_boxed();
    if let Some(rooms) = rooms {
        query = query.filter(k::room_id.eq_any(rooms));
    }
    Ok(query.order(k::knock_id.desc()).limit(limit).load(conn)?)
}

/// Expires pending knocks received before `cutoff_ms`.
pub fn expire_before(conn: &mut DbConn, cutoff_ms: i64, now_ms: i64) -> Result<usize, StoreError> {
    Ok(diesel::update(k::table.filter(k::status.eq(PENDING)).filter(k::received_ms.lt(cutoff_ms)))
        .set((k::status.eq(EXPIRED), k::updated_ms.eq(now_ms)))
        .execute(conn)?)
}

/// Per room with pending knocks: how many, and when the oldest arrived (ms).
pub fn pending_by_room(conn: &mut DbConn) -> Result<Vec<(String, i64, i64)>, StoreError> {
    use diesel::dsl::{count_star, min};
    let rows: Vec<(String, i64, Option<i64>)> = k::table
        .filter(k::status.eq(PENDING))
        .group_by(k::room_id)
        .select((k::room_id, count_star(), min(k::received_ms)))
        .load(conn)?;
    Ok(rows.into_iter().map(|(room, n, oldest)| (room, n, oldest.unwrap_or_default())).collect())
}
