//! Events, forward extremities and current state.

use diesel::prelude::*;

use super::{DbConn, StoreError, optional, schema::*};
use crate::with_backend;

/// Event status values.
pub const ACCEPTED: &str = "accepted";

/// One stored event.
#[derive(Clone, Debug)]
pub struct NewEventRow<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub status: &'a str,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    pub pdu: &'a str,
}

/// Removes an outlier, so that the event can be stored again in the graph when it arrives in
/// the timeline. Other rows are never removed.
pub fn remove_outlier(conn: &mut DbConn, event_id: &str) -> Result<(), StoreError> {
    diesel::delete(
        events::table.filter(events::event_id.eq(event_id)).filter(events::status.eq(OUTLIER)),
    )
    .execute(conn)?;
    Ok(())
}

pub fn insert(conn: &mut DbConn, row: &NewEventRow<'_>) -> Result<(), StoreError> {
    insert_many(conn, std::slice::from_ref(row))
}

/// Events, a few hundred per statement.
pub fn insert_many(conn: &mut DbConn, rows: &[NewEventRow<'_>]) -> Result<(), StoreError> {
    for chunk in rows.chunks(200) {
        let values: Vec<_> = chunk
            .iter()
            .map(|row| {
                (
                    events::event_id.eq(row.event_id),
                    events::room_id.eq(row.room_id),
                    events::event_type.eq(row.event_type),
                    events::state_key.eq(row.state_key),
                    events::sender.eq(row.sender),
                    events::origin_server_ts.eq(row.origin_server_ts),
                    events::depth.eq(row.depth),
                    events::status.eq(row.status),
                    events::state_before.eq(row.state_before),
                    events::state_after.eq(row.state_after),
                    events::pdu.eq(row.pdu),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(events::table).values(&values).execute(c))?;
    }
    Ok(())
}

/// A stored event's PDU text, status and state group after it.
#[derive(Clone, Debug, Queryable)]
pub struct EventRow {
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub status: String,
    pub state_after: Option<i64>,
    pub pdu: String,
}

/// The stored events among `event_ids` (any room, any status), in one query.
pub fn get_many(conn: &mut DbConn, event_ids: &[String]) -> Result<Vec<EventRow>, StoreError> {
    let mut rows = Vec::new();
    for chunk in event_ids.chunks(500) {
        rows.extend(
            events::table
                .filter(events::event_id.eq_any(chunk))
                .select((
                    events::event_id,
                    events::room_id,
                    events::depth,
                    events::status,
                    events::state_after,
                    events::pdu,
                ))
                .load::<EventRow>(conn)?,
        );
    }
    Ok(rows)
}

pub fn get(conn: &mut DbConn, event_id: &str) -> Result<Option<EventRow>, StoreError> {
    optional(
        events::table
            .filter(events::event_id.eq(event_id))
            .select((
                events::event_id,
                events::room_id,
                events::depth,
                events::status,
                events::state_after,
                events::pdu,
            ))
            .first(conn),
    )
}

/// Where a stored event sits: enough to use it as a prev or auth event.
#[derive(Clone, Debug, Queryable)]
pub struct Placed {
    pub event_id: String,
    pub room_id: String,
    pub status: String,
    pub state_after: Option<i64>,
    pub depth: i64,
}

/// The stored events among `event_ids`, in one query.
pub fn placements(conn: &mut DbConn, event_ids: &[String]) -> Result<Vec<Placed>, StoreError> {
    Ok(events::table
        .filter(events::event_id.eq_any(event_ids))
        .select((
            events::event_id,
            events::room_id,
            events::status,
            events::state_after,
            events::depth,
        ))
        .load(conn)?)
}

/// Up to `limit` forward extremities, deepest first.
pub fn extremities(
    conn: &mut DbConn,
    room_id: &str,
    limit: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(forward_extremities::table
        .filter(forward_extremities::room_id.eq(room_id))
        .order((forward_extremities::depth.desc(), forward_extremities::event_id.asc()))
        .select((forward_extremities::event_id, forward_extremities::depth))
        .limit(limit)
        .load(conn)?)
}

pub fn extremity_count(conn: &mut DbConn, room_id: &str) -> Result<i64, StoreError> {
    Ok(forward_extremities::table
        .filter(forward_extremities::room_id.eq(room_id))
        .count()
        .get_result(conn)?)
}

/// The room's forward extremities change: `removed` stop being ones, `added` become ones.
pub fn change_extremities(
    conn: &mut DbConn,
    room_id: &str,
    removed: &[String],
    added: &[(String, i64)],
) -> Result<(), StoreError> {
    for chunk in removed.chunks(500) {
        diesel::delete(
            forward_extremities::table
                .filter(forward_extremities::room_id.eq(room_id))
                .filter(forward_extremities::event_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    for chunk in added.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(id, depth)| {
                (
                    forward_extremities::room_id.eq(room_id),
                    forward_extremities::event_id.eq(id),
                    forward_extremities::depth.eq(depth),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(forward_extremities::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok(())
}

/// Whether an accepted event deeper than `depth` cites `event_id` as a prev event: for an outlier
/// that arrives in the timeline after events that build on it (a gap filled through
/// `/state_ids`). A scan of the room's deeper events: rare, never per PDU.
pub fn is_cited(
    conn: &mut DbConn,
    room_id: &str,
    event_id: &str,
    depth: i64,
) -> Result<bool, StoreError> {
    let quoted = format!("%\"{event_id}\"%");
    let cited: Option<String> = optional(
        events::table
            .filter(events::room_id.eq(room_id))
            .filter(events::status.eq(ACCEPTED))
            .filter(events::depth.gt(depth))
            .filter(events::event_id.ne(event_id))
            .filter(events::pdu.like(quoted))
            .select(events::event_id)
            .first(conn),
    )?;
    Ok(cited.is_some())
}

/// The event holding `(type, state_key)` in the room's current state.
pub fn current(
    conn: &mut DbConn,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Result<Option<String>, StoreError> {
    optional(
        current_state::table
            .find((room_id, event_type, state_key))
            .select(current_state::event_id)
            .first(conn),
    )
}

/// A current-state entry with its stored PDU: `((type, state_key), event_id, pdu)`.
pub type CurrentPdu = ((String, String), String, String);

/// The current-state events holding any of `keys`, with their stored PDUs, in one query.
pub fn current_pdus(
    conn: &mut DbConn,
    room_id: &str,
    keys: &[(String, String)],
) -> Result<Vec<CurrentPdu>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let types: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let state_keys: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows: Vec<(String, String, String, String)> = current_state::table
        .inner_join(events::table.on(events::event_id.eq(current_state::event_id)))
        .filter(current_state::room_id.eq(room_id))
        .filter(current_state::event_type.eq_any(types))
        .filter(current_state::state_key.eq_any(state_keys))
        .select((
            current_state::event_type,
            current_state::state_key,
            current_state::event_id,
            events::pdu,
        ))
        .load(conn)?;
    // The two IN lists also match type/key pairs nobody asked for.
    Ok(rows
        .into_iter()
        .map(|(t, k, id, pdu)| ((t, k), id, pdu))
        .filter(|(key, _, _)| keys.contains(key))
        .collect())
}

/// Every `(type, state_key, event_id)` of the room's current state whose type is in `types`.
pub fn current_of_types(
    conn: &mut DbConn,
    room_id: &str,
    types: &[&str],
) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(current_state::table
        .filter(current_state::room_id.eq(room_id))
        .filter(current_state::event_type.eq_any(types))
        .select((current_state::event_type, current_state::state_key, current_state::event_id))
        .load(conn)?)
}

/// The PDU texts of the given events.
pub fn pdus(conn: &mut DbConn, event_ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
    Ok(events::table
        .filter(events::event_id.eq_any(event_ids))
        .select((events::event_id, events::pdu))
        .load(conn)?)
}

/// The PDU texts of those of `event_ids` that are events of `room_id` with one of `statuses`, in
/// one query. What other servers are served goes through here: an event of another room, or a
/// rejected or soft-failed one, is never among the answers.
pub fn room_pdus(
    conn: &mut DbConn,
    room_id: &str,
    event_ids: &[String],
    statuses: &[&str],
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(events::table
        .filter(events::event_id.eq_any(event_ids))
        .filter(events::room_id.eq(room_id))
        .filter(events::status.eq_any(statuses))
        .select((events::event_id, events::pdu))
        .load(conn)?)
}

/// A room's accepted events in the order they were stored, from `after` on (stream ordering).
pub fn room_events(
    conn: &mut DbConn,
    room_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    Ok(events::table
        .filter(events::room_id.eq(room_id))
        .filter(events::status.eq(ACCEPTED))
        .filter(events::stream_ordering.gt(after))
        .order(events::stream_ordering.asc())
        .select((events::stream_ordering, events::event_id, events::pdu))
        .limit(limit)
        .load(conn)?)
}

/// The state group before an event.
pub fn state_before(conn: &mut DbConn, event_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(optional(
        events::table
            .filter(events::event_id.eq(event_id))
            .select(events::state_before)
            .first(conn),
    )?
    .flatten())
}

/// Every accepted membership event in the room of a user whose ID ends in `:{server}`:
/// `(event_id, state_key, depth, pdu)`. The caller checks the server name exactly.
pub fn member_events_of_server(
    conn: &mut DbConn,
    room_id: &str,
    server: &str,
) -> Result<Vec<(String, String, i64, String)>, StoreError> {
    let rows: Vec<(String, Option<String>, i64, String)> = events::table
        .filter(events::room_id.eq(room_id))
        .filter(events::event_type.eq("m.room.member"))
        .filter(events::status.eq(ACCEPTED))
        .filter(events::state_key.like(format!("%:{server}")))
        .select((events::event_id, events::state_key, events::depth, events::pdu))
        .load(conn)?;
    Ok(rows.into_iter().filter_map(|(id, key, depth, pdu)| Some((id, key?, depth, pdu))).collect())
}

/// Stored but never state: rejected events, and soft-failed ones (KNOCK-SPEC C.21).
pub const REJECTED: &str = "rejected";
pub const SOFT_FAILED: &str = "soft_failed";
/// Fetched to know the state at a gap (`/state_ids`): checked against its auth events, may be
/// cited as an auth event, never in our graph or current state.
pub const OUTLIER: &str = "outlier";
/// Events in the room's graph, as walked by backfill and get_missing_events.
pub const IN_GRAPH: &[&str] = &[ACCEPTED];
/// Events that passed the auth checks, as served in states and auth chains (outliers included).
pub const AUTHORISED: &[&str] = &[ACCEPTED, OUTLIER];
/// Events a stored state may hold: besides those, a soft-failed one (a gap's state from another
/// server, or an outlier of such a state that later arrived and was soft-failed).
pub const IN_STATE: &[&str] = &[ACCEPTED, OUTLIER, SOFT_FAILED];

/// [`room_pdus`] with each event's status: `(event_id, status, pdu)`.
pub fn room_pdus_with_status(
    conn: &mut DbConn,
    room_id: &str,
    event_ids: &[String],
    statuses: &[&str],
) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(events::table
        .filter(events::event_id.eq_any(event_ids))
        .filter(events::room_id.eq(room_id))
        .filter(events::status.eq_any(statuses))
        .select((events::event_id, events::status, events::pdu))
        .load(conn)?)
}

/// Sets entries of the room's current state, `(type, state key, event, membership)`, a few
/// hundred per statement. The joined counts are the caller's (see `rooms::add_joined`).
pub fn set_current_many(
    conn: &mut DbConn,
    room_id: &str,
    entries: &[(String, String, String, Option<String>)],
) -> Result<(), StoreError> {
    use diesel::upsert::excluded;
    for chunk in entries.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(t, k, id, m)| {
                (
                    current_state::room_id.eq(room_id),
                    current_state::event_type.eq(t),
                    current_state::state_key.eq(k),
                    current_state::event_id.eq(id),
                    current_state::membership.eq(m.as_deref()),
                )
            })
            .collect();
        with_backend!(conn, |c| diesel::insert_into(current_state::table)
            .values(&rows)
            .on_conflict((
                current_state::room_id,
                current_state::event_type,
                current_state::state_key
            ))
            .do_update()
            .set((
                current_state::event_id.eq(excluded(current_state::event_id)),
                current_state::membership.eq(excluded(current_state::membership)),
            ))
            .execute(c))?;
    }
    Ok(())
}

/// Takes keys out of the room's current state (state resolution dropped them). The joined
/// counts are the caller's.
pub fn delete_current_many(
    conn: &mut DbConn,
    room_id: &str,
    keys: &[(String, String)],
) -> Result<(), StoreError> {
    for (t, k) in keys {
        diesel::delete(current_state::table.find((room_id, t, k))).execute(conn)?;
    }
    Ok(())
}

/// Which of these event IDs we have (any status).
pub fn known(conn: &mut DbConn, event_ids: &[String]) -> Result<Vec<String>, StoreError> {
    Ok(events::table
        .filter(events::event_id.eq_any(event_ids))
        .select(events::event_id)
        .load(conn)?)
}
