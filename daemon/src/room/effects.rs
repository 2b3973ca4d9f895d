//! What follows from an event the engine applied, in one place: the knock queue (a new knock, a
//! membership change ending a knock's story), sending it on to the room's servers, and telling
//! live admin UIs.

use std::sync::Arc;

use serde_json::Value;

use super::{
    LoadedRoom, RoomTxn, auth_events::by_keys, pending::PendingKnock, persist::CurrentChange,
};
use crate::{
    matrix::{Pdu, now_ms},
    store::{StoreError, knocks},
};

/// Where an applied event came from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// send_knock / send_join / send_leave from `origin`: we send it on to the room's other
    /// servers.
    Handshake { origin: &'a str, content_redacted: bool, knock_state: &'a [String] },
    /// A PDU of an inbound transaction, or fetched for one: its origin sends it on itself.
    Transaction { origin: &'a str, content_redacted: bool, knock_state: &'a [String] },
    /// One of ours: sent to every server in the room, plus `extra` servers.
    Local { extra: &'a [String] },
}

/// What the effects produced for the caller.
#[derive(Debug, Default)]
pub struct Effects {
    /// A new knock: the room state the knocker is answered with.
    pub knock: Option<Vec<Value>>,
}

/// Runs the effects of an accepted event.
pub fn accepted(
    txn: &mut RoomTxn<'_>,
    pdu: &Pdu,
    change: &CurrentChange,
    source: Source<'_>,
) -> Result<Effects, StoreError> {
    let room_id = txn.room.ctx.room_id.to_string();
    let now = now_ms();
    for member in change.changed.iter().filter(|p| p.event_type.to_string() == "m.room.member") {
        queue_hygiene(txn, &room_id, member, now)?;
    }
    let mut effects = Effects::default();
    let (origin, redacted, knock_state) = match source {
        Source::Handshake { origin, content_redacted, knock_state }
        | Source::Transaction { origin, content_redacted, knock_state } => {
            (Some(origin), content_redacted, knock_state)
        }
        Source::Local { .. } => (None, false, &[][..]),
    };
    let is_knock = pdu.event_type.to_string() == "m.room.member"
        && pdu.membership().as_deref() == Some("knock");
    if let (Some(origin), true) = (origin, is_knock) {
        let state = knock_room_state(txn, knock_state)?;
        enqueue_knock(txn.room, pdu, origin, redacted, &state, now)?;
        txn.applied.publish_knock(pdu.event_id.as_str(), &room_id);
        effects.knock = Some(state);
    } else if origin.is_some() {
        txn.applied.publish("knock", None, &room_id, None);
    }
    match source {
        Source::Handshake { origin, .. } => {
            fan_out(txn, pdu, &[], &[origin.to_owned()])?;
        }
        Source::Local { extra } => {
            fan_out(txn, pdu, extra, &[])?;
        }
        // Not sent on: its origin sends it to the room's other servers itself.
        Source::Transaction { .. } => {}
    }
    Ok(effects)
}

/// Queues a PDU for every other server with a joined member, plus `extra` servers, except
/// `except`. Returns how many servers it goes to.
pub fn fan_out(
    txn: &mut RoomTxn<'_>,
    pdu: &Pdu,
    extra: &[String],
    except: &[String],
) -> Result<usize, StoreError> {
    let our_server = txn.keys.server_name().as_str();
    let mut servers = txn.room.joined_servers();
    servers.extend(extra.iter().cloned());
    servers.sort();
    servers.dedup();
    let text: Arc<str> = pdu.to_json_string().into();
    let now = now_ms();
    let mut n = 0;
    for server in servers.iter().filter(|s| s.as_str() != our_server && !except.contains(s)) {
        txn.room.pending.add_pdu(server, text.clone(), now);
        n += 1;
    }
    if n > 0 {
        txn.applied.outbox = true;
    }
    Ok(n)
}

/// Full PDUs of the configured state types from the current state, create first
/// (KNOCK-SPEC C.25).
pub fn knock_room_state(txn: &mut RoomTxn<'_>, types: &[String]) -> Result<Vec<Value>, StoreError> {
    let state = txn.room.current.state.clone();
    // The keys of each type, found in the ordered state without reading the rest of it.
    let keys: Vec<(ruma::events::StateEventType, String)> = types
        .iter()
        .flat_map(|t| {
            state
                .range((t.clone(), String::new())..)
                .take_while(move |((kt, _), _)| kt == t)
                .map(|((kt, k), _)| (kt.as_str().into(), k.clone()))
        })
        .collect();
    let (conn, room) = txn.engine();
    let mut pdus: Vec<Arc<Pdu>> = by_keys(conn, room, &keys, &state)?.into_values().collect();
    pdus.sort_by_key(|p| {
        (p.event_type.to_string() != "m.room.create", p.event_type.to_string(), p.state_key.clone())
    });
    Ok(pdus.iter().map(|p| serde_json::to_value(&*p.json).unwrap_or(Value::Null)).collect())
}

/// How many knocks of the room wait for a decision, not counting `user`'s own (a new knock
/// replaces it).
pub fn pending_knocks_except(txn: &mut RoomTxn<'_>, user: &str) -> Result<i64, StoreError> {
    let room_id = txn.room.ctx.room_id.to_string();
    let (conn, room) = txn.engine();
    // Knocks this batch queued replace their users' stored ones.
    let mut held = room.pending.pending_knock_users();
    let others = held.iter().filter(|u| **u != user).count() as i64;
    held.push(user);
    Ok(knocks::pending_in_room_except_users(conn, &room_id, &held)? + others)
}

/// Puts an accepted knock in the queue, replacing the user's pending one (KNOCK-SPEC C.23),
/// when the batch ends.
fn enqueue_knock(
    room: &mut LoadedRoom,
    knock: &Pdu,
    origin: &str,
    content_redacted: bool,
    state: &[Value],
    now: i64,
) -> Result<(), StoreError> {
    let user = knock.state_key.clone().unwrap_or_default();
    let state_text =
        serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let content: Value = serde_json::from_str(knock.content.get()).unwrap_or(Value::Null);
    let text = |field: &str| content.get(field).and_then(Value::as_str).map(str::to_owned);
    room.pending.add_knock(PendingKnock {
        user_id: user,
        event_id: knock.event_id.to_string(),
        origin_server: origin.to_owned(),
        reason: text("reason"),
        display_name: text("displayname"),
        avatar_url: text("avatar_url"),
        content_redacted,
        knock_room_state: state_text,
        now_ms: now,
        status: knocks::PENDING,
    });
    Ok(())
}

/// A membership change takes the user's live knock off the queue, whatever path it came by.
fn queue_hygiene(
    txn: &mut RoomTxn<'_>,
    room_id: &str,
    pdu: &Pdu,
    now: i64,
) -> Result<(), StoreError> {
    let Some(user) = pdu.state_key.as_deref() else { return Ok(()) };
    let membership = pdu.membership();
    if !matches!(membership.as_deref(), Some("join" | "ban" | "leave" | "invite")) {
        return Ok(());
    }
    // The queue as it stands, knocks of this batch included.
    let (conn, room) = txn.engine_writing()?;
    super::persist::write_rows(conn, room)?;
    let Some(knock) = knocks::live_for_user(conn, room_id, user)? else { return Ok(()) };
    let to = match membership.as_deref() {
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
    knocks::transition(conn, knock.knock_id, from, to, now)?;
    Ok(())
}
