//! The auth rules, from ruma: step 4 of the checks on receipt (the event against its own auth
//! events, which must be accepted or outlier events of this room) and the state-dependent rules
//! against a room state (steps 5 and 6, used by `accept` and `soft_fail`).

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, events::StateEventType, state_res::auth_types_for_event};

use super::{LoadedRoom, StateMap, state_pdus, usable_pdus};
use crate::{
    matrix::{Pdu, auth},
    store::{DbConn, StoreError},
};

/// The event against its own auth events. `Ok(Err(why))` when refused.
pub fn check_own(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
) -> Result<Result<(), String>, StoreError> {
    let mut ids = pdu.auth_events.clone();
    // The create event, which v12 events never cite but the rules still read.
    if let Some(create) = room.current_id("m.room.create", "") {
        ids.push(create.clone());
    }
    let found = usable_pdus(conn, room, &ids)?;
    if let Some(id) = pdu.auth_events.iter().find(|id| !found.contains_key(*id)) {
        return Ok(Err(format!("unknown or rejected auth event {id}")));
    }
    Ok(auth::check_against_auth_events(&room.ctx.rules.authorization, pdu, |id| {
        found.get(id).map(|p| (**p).clone())
    })
    .map_err(|e| format!("not allowed by its auth events: {e}")))
}

/// The state-dependent rules against `state`. `Ok(Err(why))` when refused.
pub fn check_state(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
    state: &StateMap,
) -> Result<Result<(), String>, StoreError> {
    let pdus = auth_state(conn, room, pdu, state)?;
    Ok(auth::check_against_state(&room.ctx.rules.authorization, pdu, |t, k| {
        pdus.get(&(t.clone(), k.to_owned())).map(|p| (**p).clone())
    }))
}

/// [`check_state`] from memory alone: `None` when an event it needs is not in memory.
pub fn check_state_cached(
    room: &LoadedRoom,
    pdu: &Pdu,
    state: &StateMap,
) -> Option<Result<(), String>> {
    let keys = auth_keys(room, pdu).ok()?;
    let mut pdus = HashMap::with_capacity(keys.len());
    for (t, k) in keys {
        if let Some(id) = state.get(&(t.to_string(), k.clone())) {
            pdus.insert((t, k), room.pdu(id)?);
        }
    }
    Some(auth::check_against_state(&room.ctx.rules.authorization, pdu, |t, k| {
        pdus.get(&(t.clone(), k.to_owned())).map(|p| (**p).clone())
    }))
}

/// The events of `state` the auth rules read for `pdu` (its auth types and the create event).
pub fn auth_state(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
    state: &StateMap,
) -> Result<HashMap<(StateEventType, String), Arc<Pdu>>, StoreError> {
    let keys = auth_keys(room, pdu).map_err(StoreError::Rejected)?;
    by_keys(conn, room, &keys, state)
}

/// The keys the auth rules read for `pdu`: its auth types and the create event (which v12
/// events never cite).
fn auth_keys(room: &LoadedRoom, pdu: &Pdu) -> Result<Vec<(StateEventType, String)>, String> {
    let mut keys = auth_types_for_event(
        &pdu.event_type,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
        &room.ctx.rules.authorization,
    )?;
    keys.push((StateEventType::RoomCreate, String::new()));
    Ok(keys)
}

/// The events holding `keys` in `state`.
pub fn by_keys(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    keys: &[(StateEventType, String)],
    state: &StateMap,
) -> Result<HashMap<(StateEventType, String), Arc<Pdu>>, StoreError> {
    let wanted: Vec<((StateEventType, String), OwnedEventId)> = keys
        .iter()
        .filter_map(|(t, k)| {
            state.get(&(t.to_string(), k.clone())).map(|id| ((t.clone(), k.clone()), id.clone()))
        })
        .collect();
    let ids: Vec<OwnedEventId> = wanted.iter().map(|(_, id)| id.clone()).collect();
    let found = state_pdus(conn, room, &ids)?;
    // A state holding an event we cannot read is damage, never an empty key (which would let
    // the auth rules fall back to defaults).
    wanted
        .into_iter()
        .map(|(key, id)| match found.get(&id) {
            Some(pdu) => Ok((key, pdu.clone())),
            None => Err(StoreError::Corrupt(format!("state event {id} is missing"))),
        })
        .collect()
}
