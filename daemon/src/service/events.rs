//! Creating our own events: cite the right state, sign, check with ruma's auth rules, persist.

use std::collections::HashMap;

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomVersionId,
    UInt, events::StateEventType, room_version_rules::RoomVersionRules,
};

use crate::{
    matrix::{EventTemplate, KeyRing, Pdu, Placement, auth, event},
    store::{DbConn, StoreError, events as ev, state},
};

/// A room as the event code needs it.
#[derive(Clone, Debug)]
pub struct RoomCtx {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
}

impl RoomCtx {
    pub fn load(conn: &mut DbConn, room_id: &str) -> Result<Option<Self>, StoreError> {
        let Some(row) = crate::store::rooms::get(conn, room_id)? else { return Ok(None) };
        let version = RoomVersionId::try_from(row.room_version.as_str())
            .map_err(|e| StoreError::Corrupt(format!("room {room_id} version: {e}")))?;
        let rules = event::rules(&version).map_err(StoreError::Corrupt)?;
        let room_id =
            OwnedRoomId::try_from(row.room_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(Self { room_id, version, rules }))
    }
}

/// Reads stored PDUs by event ID.
pub fn load_pdus(conn: &mut DbConn, ids: &[String]) -> Result<Vec<Pdu>, StoreError> {
    ev::pdus(conn, ids)?.into_iter().map(|(id, text)| parse_stored(&id, &text)).collect()
}

pub fn parse_stored(id: &str, text: &str) -> Result<Pdu, StoreError> {
    let json: CanonicalJsonObject =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
    let event_id = OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Pdu::from_canonical(event_id, json).map_err(StoreError::Corrupt)
}

/// The current-state events an event of this template is checked against: its auth types plus
/// the create event (which v12 never cites but the rules still read).
pub fn auth_state(
    conn: &mut DbConn,
    room: &RoomCtx,
    template: &EventTemplate,
) -> Result<HashMap<(StateEventType, String), Pdu>, StoreError> {
    let mut keys =
        auth::auth_types(template, &room.rules.authorization).map_err(StoreError::Rejected)?;
    let create = (StateEventType::RoomCreate, String::new());
    if !keys.contains(&create) {
        keys.push(create);
    }
    let wanted: Vec<(String, String)> =
        keys.iter().map(|(t, k)| (t.to_string(), k.clone())).collect();
    let mut out = HashMap::with_capacity(keys.len());
    for ((t, k), id, text) in ev::current_pdus(conn, room.room_id.as_str(), &wanted)? {
        out.insert((StateEventType::from(t.as_str()), k), parse_stored(&id, &text)?);
    }
    Ok(out)
}

/// Builds, signs, auth-checks and stores a new event of ours in the room's current state.
/// Call inside a write transaction holding the room lock.
pub fn append_local(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &RoomCtx,
    template: &EventTemplate,
    now_ms: i64,
) -> Result<Pdu, StoreError> {
    let (pdu, before) = build_local_placed(conn, keys, room, template, now_ms)?;
    match before {
        Some(group) => persist_received_state(conn, room, &pdu, group)?,
        None => persist_accepted(conn, room, &pdu)?,
    }
    Ok(pdu)
}

/// Builds and signs a new event of ours and checks it with the auth rules, without storing it.
/// `StoreError::Rejected` says why it is not allowed.
pub fn build_local(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &RoomCtx,
    template: &EventTemplate,
    now_ms: i64,
) -> Result<Pdu, StoreError> {
    Ok(build_local_placed(conn, keys, room, template, now_ms)?.0)
}

/// [`build_local`], also telling the state before the event: `None` when it is the room's
/// current state (the event cites every forward extremity), else the state group of the cited
/// prev events resolved together. Other servers check our event against the state after its
/// prev events, so that is the state we check it against and cite auth events from: with more
/// forward extremities than an event may cite, it differs from the current state.
pub fn build_local_placed(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &RoomCtx,
    template: &EventTemplate,
    now_ms: i64,
) -> Result<(Pdu, Option<i64>), StoreError> {
    let limit = event::MAX_PREV_EVENTS;
    let room_id = room.room_id.as_str();
    let mut prev = ev::extremities(conn, room_id, limit as i64 + 1)?;
    let cites_all = prev.len() <= limit;
    let wanted =
        auth::auth_types(template, &room.rules.authorization).map_err(StoreError::Rejected)?;
    let current = auth_state(conn, room, template)?;
    if !cites_all {
        // Cite first the extremities that hold state this event depends on (a knock being
        // kicked, say), so that the event comes after them and not beside them: an event beside
        // a kick would survive state resolution and undo it.
        let ids: Vec<String> = current.values().map(|p| p.event_id.to_string()).collect();
        let mut first = ev::extremities_among(conn, room_id, &ids)?;
        first.truncate(limit);
        prev.retain(|p| !first.contains(p));
        first.append(&mut prev);
        prev = first;
    }
    prev.truncate(limit);
    let prev_events = prev
        .into_iter()
        .map(|(id, depth)| OwnedEventId::try_from(id).map(|id| (id, depth)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let (at_prev, before) = if cites_all {
        (None, None)
    } else {
        let ids: Vec<OwnedEventId> = prev_events.iter().map(|(id, _)| id.clone()).collect();
        let group = super::state::state_before_stored(conn, room, &ids)?;
        let state = super::receive::load_state_keys(conn, group, &wanted)?;
        (Some(state), Some(group))
    };
    let state = at_prev.as_ref().unwrap_or(&current);
    let auth_events: Vec<OwnedEventId> =
        wanted.iter().filter_map(|k| state.get(k)).map(|p| p.event_id.clone()).collect();
    let placement = Placement { room_id: Some(room.room_id.clone()), prev_events, auth_events };
    let pdu = build(keys, room, template, &placement, now_ms)?;
    check_with(room, &pdu, state)?;
    if before.is_some() {
        // Also allowed by the current state, or we would be sending what we soft-fail.
        auth::check_against_state(&room.rules.authorization, &pdu, |t, k| {
            current.get(&(t.clone(), k.to_owned())).cloned()
        })
        .map_err(|e| StoreError::Rejected(format!("not allowed by the current state: {e}")))?;
    }
    Ok((pdu, before))
}

/// Auth rules of `pdu` against its auth events and a state (both from `state`).
pub fn check_with(
    room: &RoomCtx,
    pdu: &Pdu,
    state: &HashMap<(StateEventType, String), Pdu>,
) -> Result<(), StoreError> {
    let by_id: HashMap<&str, &Pdu> = state.values().map(|p| (p.event_id.as_str(), p)).collect();
    auth::check_against_auth_events(&room.rules.authorization, pdu, |id| {
        by_id.get(id.as_str()).map(|p| (*p).clone())
    })
    .map_err(|e| StoreError::Rejected(format!("not allowed: {e}")))?;
    auth::check_against_state(&room.rules.authorization, pdu, |t, k| {
        state.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(|e| StoreError::Rejected(format!("not allowed: {e}")))
}

/// Auth rules of a received (or returned) event: against its own auth events, loaded by ID,
/// and against `state` (the current state, or the state before it).
pub fn check_received(
    conn: &mut DbConn,
    room: &RoomCtx,
    pdu: &Pdu,
    state: &HashMap<(StateEventType, String), Pdu>,
) -> Result<(), StoreError> {
    let mut ids: Vec<String> = pdu.auth_events.iter().map(|id| id.to_string()).collect();
    ids.extend(ev::current(conn, room.room_id.as_str(), "m.room.create", "")?);
    let auth_events: HashMap<OwnedEventId, Pdu> =
        load_pdus(conn, &ids)?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
    auth::check_against_auth_events(&room.rules.authorization, pdu, |id| {
        auth_events.get(id).cloned()
    })
    .map_err(|e| StoreError::Rejected(format!("not allowed by its auth events: {e}")))?;
    auth::check_against_state(&room.rules.authorization, pdu, |t, k| {
        state.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(|e| StoreError::Rejected(format!("not allowed: {e}")))
}

/// Queues a PDU for every other server with a joined member, plus `extra` servers, except
/// `except` (the server it came from).
pub fn fan_out(
    conn: &mut DbConn,
    our_server: &str,
    room_id: &str,
    pdu: &Pdu,
    extra: &[String],
    except: &[String],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut servers = crate::store::rooms::joined_servers(conn, room_id)?;
    servers.extend(extra.iter().cloned());
    servers.sort();
    servers.dedup();
    let text = pdu.to_json_string();
    let mut n = 0;
    for server in servers.iter().filter(|s| s.as_str() != our_server && !except.contains(s)) {
        crate::store::outbox::enqueue(
            conn,
            server,
            crate::store::outbox::KIND_PDU,
            &text,
            room_id,
            now_ms,
        )?;
        n += 1;
    }
    Ok(n)
}

/// Builds and signs an event.
pub fn build(
    keys: &KeyRing,
    room: &RoomCtx,
    template: &EventTemplate,
    placement: &Placement,
    now_ms: i64,
) -> Result<Pdu, StoreError> {
    let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(now_ms.max(0) as u64).unwrap_or_default());
    let unsigned = event::unsigned_pdu(template, placement, ts).map_err(StoreError::Rejected)?;
    event::hash_and_sign(keys, unsigned, &room.rules).map_err(StoreError::Rejected)
}

/// Stores an accepted event of ours that extends the room's current state.
pub fn persist_accepted(conn: &mut DbConn, room: &RoomCtx, pdu: &Pdu) -> Result<(), StoreError> {
    let current_group = crate::store::rooms::current_group(conn, room.room_id.as_str())?;
    persist_with_state(conn, room, pdu, current_group)
}

/// Stores an event that is not part of the room's state: rejected, or soft-failed (its state
/// before is kept for the latter, so later questions about it can be answered).
pub fn persist_unaccepted(
    conn: &mut DbConn,
    room_id: &str,
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
            room_id,
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
    )
}

/// Stores an accepted event whose state before is the group `before`: a new state group for
/// state events, the event row, forward extremities and current state.
pub fn persist_received_state(
    conn: &mut DbConn,
    room: &RoomCtx,
    pdu: &Pdu,
    before: i64,
) -> Result<(), StoreError> {
    persist_with_state(conn, room, pdu, Some(before))
}

fn persist_with_state(
    conn: &mut DbConn,
    room: &RoomCtx,
    pdu: &Pdu,
    before: Option<i64>,
) -> Result<(), StoreError> {
    let room_id = room.room_id.as_str();
    let current_group = crate::store::rooms::current_group(conn, room_id)?;
    let event_type = pdu.event_type.to_string();
    let delta = pdu
        .state_key
        .as_ref()
        .map(|key| vec![((event_type.clone(), key.clone()), pdu.event_id.to_string())]);
    let state_after = match &delta {
        Some(delta) => Some(state::new_group(conn, room_id, before, delta)?),
        None => before,
    };
    let text = pdu.to_json_string();
    ev::insert(
        conn,
        &ev::NewEventRow {
            event_id: pdu.event_id.as_str(),
            room_id,
            event_type: &event_type,
            state_key: pdu.state_key.as_deref(),
            sender: pdu.sender.as_str(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            depth: pdu.depth,
            status: ev::ACCEPTED,
            state_before: before,
            state_after,
            pdu: &text,
        },
    )?;
    let prev: Vec<String> = pdu.prev_events.iter().map(|id| id.to_string()).collect();
    ev::advance_extremities(conn, room_id, pdu.event_id.as_str(), pdu.depth, &prev)?;
    let Some(delta) = delta else { return Ok(()) };
    // The current state: the event's own state when it extends the current state; otherwise
    // the current state and the event's branch resolved together (KNOCK-SPEC H.40).
    let (new_current, changes) = match (current_group, state_after) {
        (Some(current), Some(after)) if before != current_group => {
            super::state::merge_into(conn, room, current, &[after])?
        }
        _ => (state_after.unwrap_or_default(), delta),
    };
    apply_to_current(conn, room_id, new_current, &changes, Some(pdu))
}

/// Resolves the state group `group` into the room's current state and applies what changes:
/// for an event that brings state from outside our graph without being a state event itself
/// (a gap filled through `/state_ids`).
pub fn merge_into_current(conn: &mut DbConn, room: &RoomCtx, group: i64) -> Result<(), StoreError> {
    let room_id = room.room_id.as_str();
    let Some(current) = crate::store::rooms::current_group(conn, room_id)? else {
        return Ok(());
    };
    if current == group {
        return Ok(());
    }
    let (new_current, changes) = super::state::merge_into(conn, room, current, &[group])?;
    apply_to_current(conn, room_id, new_current, &changes, None)
}

/// Current state becomes the group `new_current`, of which `changes` are the changed keys.
fn apply_to_current(
    conn: &mut DbConn,
    room_id: &str,
    new_current: i64,
    changes: &[(state::StateKey, String)],
    own: Option<&Pdu>,
) -> Result<(), StoreError> {
    let ids: Vec<String> = changes.iter().map(|(_, id)| id.clone()).collect();
    let changed: Vec<Pdu> = match own {
        Some(pdu) if ids.len() == 1 && ids[0] == pdu.event_id.as_str() => vec![pdu.clone()],
        _ => load_pdus(conn, &ids)?,
    };
    for p in &changed {
        let (Some(key), t) = (p.state_key.as_deref(), p.event_type.to_string()) else { continue };
        let membership = (t == "m.room.member").then(|| p.membership()).flatten();
        ev::set_current(conn, room_id, &t, key, p.event_id.as_str(), membership.as_deref())?;
        if t == "m.room.member" {
            queue_hygiene(conn, room_id, p, key)?;
        }
    }
    crate::store::rooms::set_current_group(conn, room_id, Some(new_current))?;
    Ok(())
}

/// A membership change takes the user's live knock off the queue, whatever path it came by.
fn queue_hygiene(
    conn: &mut DbConn,
    room_id: &str,
    pdu: &Pdu,
    user: &str,
) -> Result<(), StoreError> {
    use crate::store::knocks;
    let Some(knock) = knocks::live_for_user(conn, room_id, user)? else { return Ok(()) };
    let to = match pdu.membership().as_deref() {
        Some("join") => knocks::JOINED,
        Some("ban") => knocks::BANNED,
        Some("leave") if pdu.sender.as_str() == user => knocks::RESCINDED,
        Some("leave") => knocks::DENIED,
        // An invite by another path approves a pending knock; our own approvals finish in the
        // sender once the invite is delivered.
        Some("invite") if knock.status == knocks::PENDING => knocks::APPROVED,
        _ => return Ok(()),
    };
    let from: &[&str] = match to {
        knocks::APPROVED => &[knocks::PENDING],
        // The approved user joins, or declines the invite: the knock's story ends here.
        knocks::JOINED | knocks::RESCINDED => {
            &[knocks::PENDING, knocks::DELIVERY_PENDING, knocks::APPROVED]
        }
        _ => &[knocks::PENDING, knocks::DELIVERY_PENDING],
    };
    // Our clock, never the event's: origin_server_ts is whatever the sending server says.
    knocks::transition(conn, knock.knock_id, from, to, crate::matrix::now_ms())?;
    Ok(())
}
