//! Our own events (room creation, settings, approvals, denials): cite the right state, sign,
//! check with ruma's auth rules, and store and send them on like any other event.

use std::{collections::HashSet, sync::Arc};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, RoomVersionId, UInt, UserId,
};
use serde_json::Value;

use super::{
    Applied, LoadedRoom, RoomCtx, RoomTxn,
    accept::{Placing, store_accepted},
    auth_events,
    effects::Source,
    loaded::Group,
    soft_fail,
    state_before::{Missing, Mode, state_before},
};
use crate::{
    matrix::{EventTemplate, KeyRing, Pdu, Placement, auth, event},
    store::{DbConn, StoreError, rooms},
};

/// Builds and signs an event.
pub fn sign(
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

/// Builds and signs a new event of ours and checks it with the auth rules, without storing it:
/// the event and the state before it. `StoreError::Rejected` says why it is not allowed.
///
/// It cites the forward extremities, at most [`event::MAX_PREV_EVENTS`]; other servers check it
/// against the state after those, so that is the state it cites auth events from and is checked
/// against, and it must also pass against the current state (or we would send what we
/// soft-fail).
pub fn build(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    keys: &KeyRing,
    template: &EventTemplate,
    now_ms: i64,
    mode: Mode,
) -> Result<(Pdu, Arc<Group>), StoreError> {
    let ctx = room.ctx.clone();
    if template.event_type == "m.room.create" {
        let placement = Placement {
            room_id: (!ctx.rules.authorization.room_create_event_id_as_room_id)
                .then(|| ctx.room_id.clone()),
            ..Placement::default()
        };
        let pdu = sign(keys, &ctx, template, &placement, now_ms)?;
        auth::check_against_auth_events(&ctx.rules.authorization, &pdu, |_| None)
            .map_err(|e| StoreError::Rejected(format!("create event: {e}")))?;
        return Ok((pdu, room.current.clone()));
    }
    let limit = event::MAX_PREV_EVENTS;
    let wanted =
        auth::auth_types(template, &ctx.rules.authorization).map_err(StoreError::Rejected)?;
    let mut prev = room.extremities_by_depth();
    let cites_all = prev.len() <= limit;
    if !cites_all {
        // Cite first the extremities that hold state this event depends on (a knock being
        // kicked, say), so that the event comes after them and not beside them: an event beside
        // a kick would survive state resolution and undo it.
        let holding: HashSet<&OwnedEventId> = wanted
            .iter()
            .filter_map(|(t, k)| room.current.state.get(&(t.to_string(), k.clone())))
            .collect();
        prev.sort_by_key(|(id, _)| !holding.contains(id));
        prev.truncate(limit);
    }
    let before = if cites_all {
        room.current.clone()
    } else {
        let ids: Vec<OwnedEventId> = prev.iter().map(|(id, _)| id.clone()).collect();
        match state_before(conn, room, &ids, mode)? {
            Ok(g) => g,
            Err(Missing::Prev(id)) => {
                return Err(StoreError::Corrupt(format!("extremity {id} vanished")));
            }
        }
    };
    let auth_events: Vec<OwnedEventId> = wanted
        .iter()
        .filter_map(|(t, k)| before.state.get(&(t.to_string(), k.clone())).cloned())
        .collect();
    let placement =
        Placement { room_id: Some(ctx.room_id.clone()), prev_events: prev, auth_events };
    let pdu = sign(keys, &ctx, template, &placement, now_ms)?;
    let state = auth_events::auth_state(conn, room, &pdu, &before.state)?;
    let not_allowed = |e: String| StoreError::Rejected(format!("not allowed: {e}"));
    let by_id = |id: &EventId| state.values().find(|p| p.event_id == id).map(|p| (**p).clone());
    auth::check_against_auth_events(&ctx.rules.authorization, &pdu, by_id).map_err(not_allowed)?;
    auth::check_against_state(&ctx.rules.authorization, &pdu, |t, k| {
        state.get(&(t.clone(), k.to_owned())).map(|p| (**p).clone())
    })
    .map_err(not_allowed)?;
    soft_fail::check(conn, room, &pdu, &before)?.map_err(StoreError::Rejected)?;
    Ok((pdu, before))
}

/// Builds, checks, stores and sends on a new event of ours (to every server in the room, plus
/// `extra` servers).
pub fn append(
    txn: &mut RoomTxn<'_>,
    template: &EventTemplate,
    now_ms: i64,
    extra: &[String],
) -> Result<Pdu, StoreError> {
    let keys = txn.keys;
    let (conn, room) = txn.engine();
    let (pdu, before) = build(conn, room, keys, template, now_ms, Mode::Store)?;
    let placing = Placing { outlier: false, merge_before: false };
    store_accepted(txn, pdu.clone(), &before, placing, Source::Local { extra })?;
    Ok(pdu)
}

/// Creates a room of `version` made by `creator`: its create event (with `create_content`), the
/// room row, then each of `rest` as a state event of the creator (a member event's state key is
/// the creator). Call inside a write transaction: the room is new, so nobody else can write it
/// before the transaction commits. Returns the room as it then stands.
#[allow(clippy::too_many_arguments)]
pub fn create_room(
    conn: &mut DbConn,
    keys: &KeyRing,
    version: &RoomVersionId,
    creator: &UserId,
    published: bool,
    create_content: Value,
    rest: Vec<(&str, Value)>,
    now_ms: i64,
) -> Result<LoadedRoom, StoreError> {
    let rules = event::rules(version).map_err(StoreError::Rejected)?;
    let server = keys.server_name();
    let ctx = RoomCtx { room_id: RoomId::new_v1(server), version: version.clone(), rules };
    let mut room = LoadedRoom::empty(ctx);
    let create = EventTemplate::state("m.room.create", "", creator, create_content);
    let (create, before) = build(conn, &mut room, keys, &create, now_ms, Mode::Store)?;
    if room.ctx.rules.authorization.room_create_event_id_as_room_id {
        room.ctx.room_id =
            event::room_id_from_create(&create.event_id).map_err(StoreError::Rejected)?;
    }
    rooms::insert(
        conn,
        &rooms::RoomRow {
            room_id: room.ctx.room_id.to_string(),
            room_version: version.to_string(),
            creator: creator.to_string(),
            created_ms: now_ms,
            is_public: published,
            current_group: None,
            version: 0,
        },
    )?;
    let mut applied = Applied::default();
    let mut txn = RoomTxn::new(conn, &mut room, keys, &mut applied);
    let placing = Placing { outlier: false, merge_before: false };
    store_accepted(&mut txn, create, &before, placing, Source::Local { extra: &[] })?;
    for (event_type, content) in rest {
        let state_key = if event_type == "m.room.member" { creator.as_str() } else { "" };
        let template = EventTemplate::state(event_type, state_key, creator, content);
        append(&mut txn, &template, now_ms, &[])?;
    }
    super::persist::flush(conn, &mut room)?;
    Ok(room)
}
