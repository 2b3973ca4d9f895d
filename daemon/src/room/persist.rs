//! Storing what was decided: the event row, its state group, forward extremities and the room's
//! current state, in the store and in memory alike.

use std::sync::Arc;

use ruma::OwnedEventId;

use super::{
    LoadedRoom, StateKey,
    loaded::Group,
    state_before::{Mode, merge},
    state_pdus,
};
use crate::{
    matrix::Pdu,
    store::{DbConn, StoreError, events as ev, rooms, state},
};

/// Stores a state group: `parent` plus `changes`. Returns its id and how many chains it draws on.
pub fn store_group(
    conn: &mut DbConn,
    room_id: &str,
    parent: Option<i64>,
    changes: &[(StateKey, OwnedEventId)],
) -> Result<(i64, usize), StoreError> {
    let delta: Vec<(StateKey, String)> =
        changes.iter().map(|(k, id)| (k.clone(), id.to_string())).collect();
    state::new_group_placed(conn, room_id, parent, &delta)
}

/// What storing an accepted event changed in the room's current state: the events now holding
/// the keys that changed.
#[derive(Debug, Default)]
pub struct CurrentChange {
    pub changed: Vec<Arc<Pdu>>,
}

/// Stores an accepted event whose state before is `before`. `outlier`: it was stored as an
/// outlier (part of a gap's state) and now takes its place in the graph. `merge_before`: the
/// state before it came from outside our graph (a gap), so it is resolved into the current state
/// even when the event itself changes no state.
pub fn accepted(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Arc<Pdu>,
    before: &Arc<Group>,
    outlier: bool,
    merge_before: bool,
) -> Result<CurrentChange, StoreError> {
    let room_id = room.ctx.room_id.to_string();
    room.touched = true;
    if outlier {
        ev::remove_outlier(conn, pdu.event_id.as_str())?;
    }
    let key = pdu.state_key.as_ref().map(|k| (pdu.event_type.to_string(), k.clone()));
    let after = match &key {
        Some(key) => {
            let changes = [(key.clone(), pdu.event_id.clone())];
            let stored = store_group(conn, &room_id, before.id, &changes)?;
            Group::derived(before, &changes, Some(stored))
        }
        None => before.clone(),
    };
    let event_type = pdu.event_type.to_string();
    let text = pdu.to_json_string();
    ev::insert(
        conn,
        &ev::NewEventRow {
            event_id: pdu.event_id.as_str(),
            room_id: &room_id,
            event_type: &event_type,
            state_key: pdu.state_key.as_deref(),
            sender: pdu.sender.as_str(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            depth: pdu.depth,
            status: ev::ACCEPTED,
            state_before: before.id,
            state_after: after.id,
            pdu: &text,
        },
    )?;
    let prev: Vec<String> = pdu.prev_events.iter().map(|id| id.to_string()).collect();
    ev::advance_extremities(conn, &room_id, pdu.event_id.as_str(), pdu.depth, &prev)?;
    for p in &pdu.prev_events {
        room.extremities.remove(p);
    }
    room.extremities.insert(pdu.event_id.clone(), pdu.depth);
    if outlier && ev::unless_cited(conn, &room_id, pdu.event_id.as_str(), pdu.depth)? {
        room.extremities.remove(&pdu.event_id);
    }
    room.place(pdu.event_id.clone(), pdu.depth, after.clone());
    room.remember_pdu(pdu.clone());
    // The current state: the event's own state when it extends the current state; otherwise
    // the current state and the event's branch resolved together (KNOCK-SPEC H.40).
    let extends = Group::same(before, &room.current);
    let new_current = match (extends, &key) {
        (true, _) => after,
        (false, Some(_)) => merge(conn, room, vec![room.current.clone(), after], Mode::Store)?,
        (false, None) if merge_before => {
            merge(conn, room, vec![room.current.clone(), after], Mode::Store)?
        }
        (false, None) => return Ok(CurrentChange::default()),
    };
    set_current(conn, room, new_current)
}

/// Stores an event that is not part of the room's state: rejected, or soft-failed (its state
/// before is kept for the latter, so later questions about it can be answered), or an outlier.
pub fn unaccepted(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
    status: &str,
    before: Option<i64>,
) -> Result<(), StoreError> {
    let text = pdu.to_json_string();
    let event_type = pdu.event_type.to_string();
    ev::insert(
        conn,
        &ev::NewEventRow {
            event_id: pdu.event_id.as_str(),
            room_id: room.ctx.room_id.as_str(),
            event_type: &event_type,
            state_key: pdu.state_key.as_deref(),
            sender: pdu.sender.as_str(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            depth: pdu.depth,
            status,
            state_before: before,
            state_after: None,
            pdu: &text,
        },
    )?;
    // Other instances may hold it as an outlier that could be cited: they must forget it too.
    if status != ev::OUTLIER && room.forget_pdu(&pdu.event_id) {
        room.touched = true;
    }
    Ok(())
}

/// The room's current state becomes `new_current`: the changed keys are written, with the
/// joined-server counts, in the store and in memory.
pub fn set_current(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    new_current: Arc<Group>,
) -> Result<CurrentChange, StoreError> {
    if Group::same(&new_current, &room.current) {
        return Ok(CurrentChange::default());
    }
    let room_id = room.ctx.room_id.to_string();
    let old = room.current.clone();
    let keys = Group::differing_keys(&[old.clone(), new_current.clone()]);
    // Keys state resolution dropped: only where a key's every value failed the auth checks.
    let dropped: Vec<(StateKey, OwnedEventId)> = keys
        .iter()
        .filter(|k| !new_current.state.contains_key(*k))
        .filter_map(|k| Some((k.clone(), old.state.get(k)?.clone())))
        .collect();
    let changes: Vec<(StateKey, OwnedEventId, Option<OwnedEventId>)> = keys
        .into_iter()
        .filter_map(|key| {
            let new = new_current.state.get(&key)?.clone();
            let was = old.state.get(&key).cloned();
            (was.as_ref() != Some(&new)).then_some((key, new, was))
        })
        .collect();
    let ids: Vec<OwnedEventId> = changes
        .iter()
        .flat_map(|(_, new, was)| std::iter::once(new.clone()).chain(was.clone()))
        .chain(dropped.iter().map(|(_, id)| id.clone()))
        .collect();
    let pdus = state_pdus(conn, room, &ids)?;
    let membership = |id: &OwnedEventId| pdus.get(id).and_then(|p| p.membership());
    let mut changed = Vec::with_capacity(changes.len());
    for ((t, k), new, was) in &changes {
        let pdu = pdus
            .get(new)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("state event {new} is missing")))?;
        let is = (t == "m.room.member").then(|| membership(new)).flatten();
        let was_joined = was.as_ref().and_then(membership).as_deref() == Some("join");
        ev::set_current_known(conn, &room_id, t, k, new.as_str(), is.as_deref(), was_joined)?;
        if t == "m.room.member" {
            let joined = is.as_deref() == Some("join");
            if joined != was_joined
                && let Some((_, server)) = k.split_once(':')
            {
                let n = room.joined.get(server).copied().unwrap_or(0) + if joined { 1 } else { -1 };
                room.joined.insert(server.to_owned(), n.max(0));
            }
        }
        changed.push(pdu);
    }
    for ((t, k), was) in &dropped {
        let was_joined = membership(was).as_deref() == Some("join");
        ev::delete_current(conn, &room_id, t, k, was_joined)?;
        if was_joined && let Some((_, server)) = k.split_once(':') {
            let n = room.joined.get(server).copied().unwrap_or(0) - 1;
            room.joined.insert(server.to_owned(), n.max(0));
        }
    }
    if let Some(id) = new_current.id {
        rooms::set_current_group(conn, &room_id, Some(id))?;
    }
    room.current = new_current;
    Ok(CurrentChange { changed })
}
