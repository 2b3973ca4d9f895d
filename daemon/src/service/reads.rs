//! Read endpoints for other servers (KNOCK-SPEC H.46): events, state at an event, auth chains,
//! missing events and backfill — for servers with a joined member, and with history_visibility
//! applied for the others (service::visibility).

use std::collections::{HashSet, VecDeque};

use ruma::ServerName;
use serde_json::Value;

use super::{ServiceError, knocks, visibility::ServerView};
use crate::{
    matrix::Pdu,
    room::{RoomCtx, load_pdus, parse_stored},
    store::{DbConn, StoreError, events as ev, state},
};

/// The room, if `origin` may read it: ACL first, then a joined member now, world-readable
/// history, or a user who was ever a member (whose events [`ServerView`] then filters).
pub fn readable_room(
    conn: &mut DbConn,
    room_id: &str,
    origin: &ServerName,
) -> Result<(RoomCtx, ServerView), ServiceError> {
    let room = RoomCtx::load(conn, room_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("room {room_id} is not hosted here")))?;
    knocks::check_acl(conn, room_id, origin)?;
    let view = ServerView::load(conn, room_id, origin)?;
    if view.joined_now() || view.ever_member() {
        return Ok((room, view));
    }
    let world_readable = ev::current(conn, room_id, "m.room.history_visibility", "")?
        .map(|id| load_pdus(conn, &[id]))
        .transpose()?
        .and_then(|mut p| p.pop())
        .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
        .is_some_and(|c| c["history_visibility"] == "world_readable");
    if world_readable {
        Ok((room, view))
    } else {
        Err(ServiceError::Forbidden(format!("{origin} has no member in {room_id}")))
    }
}

/// Those of `ids` that are events of `room` with one of `statuses` (`ev::IN_GRAPH`,
/// `ev::AUTHORISED`): every event served to another server is loaded through here.
pub fn room_pdus(
    conn: &mut DbConn,
    room: &RoomCtx,
    ids: &[String],
    statuses: &[&str],
) -> Result<Vec<Pdu>, StoreError> {
    ev::room_pdus(conn, room.room_id.as_str(), ids, statuses)?
        .into_iter()
        .map(|(id, text)| parse_stored(&id, &text))
        .collect()
}

/// An accepted event of a room that `origin` may read (of `in_room` when given), redacted where
/// its history_visibility hides it from `origin`.
pub fn event_for(
    conn: &mut DbConn,
    event_id: &str,
    in_room: Option<&str>,
    origin: &ServerName,
) -> Result<Pdu, ServiceError> {
    let row = ev::get(conn, event_id)?
        .filter(|r| r.status == ev::ACCEPTED)
        .filter(|r| in_room.is_none_or(|room| room == r.room_id))
        .ok_or_else(|| ServiceError::NotFound(format!("no event {event_id}")))?;
    let (room, view) = readable_room(conn, &row.room_id, origin)?;
    let pdus = load_pdus(conn, &[row.event_id])?;
    view.filter(conn, &room, pdus)?
        .pop()
        .ok_or_else(|| ServiceError::NotFound(format!("no event {event_id}")))
}

/// The state before `event_id` and the auth chain of that state.
pub fn state_at(
    conn: &mut DbConn,
    room: &RoomCtx,
    view: &ServerView,
    event_id: &str,
) -> Result<(Vec<Pdu>, Vec<Pdu>), ServiceError> {
    let row = ev::get(conn, event_id)?
        .filter(|r| r.room_id == room.room_id.as_str() && r.status == ev::ACCEPTED)
        .ok_or_else(|| {
            ServiceError::NotFound(format!("no event {event_id} in {}", room.room_id))
        })?;
    let event = load_pdus(conn, std::slice::from_ref(&row.event_id))?;
    if !event.iter().try_fold(true, |all, p| view.sees(conn, p).map(|v| all && v))? {
        return Err(ServiceError::Forbidden(format!(
            "the room's history_visibility hides the state at {event_id}"
        )));
    }
    let ids: Vec<String> = match ev::state_before(conn, &row.event_id)? {
        Some(group) => state::full_state(conn, group)?.into_values().collect(),
        None => Vec::new(),
    };
    let state = room_pdus(conn, room, &ids, ev::AUTHORISED)?;
    let chain = auth_chain(
        conn,
        room,
        state.iter().flat_map(|p| p.auth_events.iter().map(|a| a.to_string())).collect(),
    )?;
    Ok((state, chain))
}

/// Every auth event of `room` reachable from `start` through events that passed their checks.
pub fn auth_chain(
    conn: &mut DbConn,
    room: &RoomCtx,
    start: Vec<String>,
) -> Result<Vec<Pdu>, StoreError> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut frontier = start;
    let mut out = Vec::new();
    while !frontier.is_empty() {
        let batch: Vec<String> = frontier.drain(..).filter(|id| seen.insert(id.clone())).collect();
        for pdu in room_pdus(conn, room, &batch, ev::AUTHORISED)? {
            frontier.extend(
                pdu.auth_events.iter().map(|a| a.to_string()).filter(|a| !seen.contains(a)),
            );
            out.push(pdu);
        }
    }
    Ok(out)
}

/// Walks `prev_events` back from `from`, breadth first, stopping at `stop` events, up to `limit`.
/// It starts from, passes through and returns only accepted events of `room`: a start or prev
/// event of another room, or one that was rejected or soft-failed, ends that branch of the walk.
pub fn walk_back(
    conn: &mut DbConn,
    room: &RoomCtx,
    from: &[String],
    stop: &[String],
    limit: usize,
    include_start: bool,
    min_depth: i64,
) -> Result<Vec<Pdu>, StoreError> {
    let stop: HashSet<&String> = stop.iter().collect();
    let mut seen: HashSet<String> = from.iter().cloned().collect();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut out = Vec::new();
    for pdu in room_pdus(conn, room, from, ev::IN_GRAPH)? {
        if include_start && out.len() < limit {
            out.push(pdu.clone());
        }
        queue.extend(pdu.prev_events.iter().map(|p| p.to_string()));
    }
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(id.clone()) || stop.contains(&id) {
            continue;
        }
        let Some(pdu) = room_pdus(conn, room, std::slice::from_ref(&id), ev::IN_GRAPH)?.pop()
        else {
            continue;
        };
        if pdu.depth < min_depth {
            continue;
        }
        queue.extend(pdu.prev_events.iter().map(|p| p.to_string()));
        out.push(pdu);
    }
    Ok(out)
}
