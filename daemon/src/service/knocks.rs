//! What is special about knocks: ACLs on the knock endpoints, the knock queue row, and the room
//! state a knocker is answered with.

use ruma::ServerName;
use serde_json::Value;

use super::{
    ServiceError,
    events::{RoomCtx, load_pdus},
};
use crate::{
    matrix::{Pdu, acl},
    store::{DbConn, StoreError, events as ev, knocks},
};

/// 403 when the room's server ACL denies `origin` (KNOCK-SPEC B.7, C.14, H.45).
pub fn check_acl(
    conn: &mut DbConn,
    room_id: &str,
    origin: &ServerName,
) -> Result<(), ServiceError> {
    if let Some(id) = ev::current(conn, room_id, "m.room.server_acl", "")? {
        for pdu in load_pdus(conn, &[id])? {
            if !acl::allows(pdu.content.get(), origin) {
                return Err(ServiceError::Forbidden(format!(
                    "server {origin} is denied by the room's server ACL"
                )));
            }
        }
    }
    Ok(())
}

/// Puts an accepted knock in the queue, replacing the user's pending one (KNOCK-SPEC C.23), and
/// returns the room state the knocker is answered with and the queue id.
pub fn enqueue(
    conn: &mut DbConn,
    room: &RoomCtx,
    knock: &Pdu,
    origin: &str,
    content_redacted: bool,
    state_types: &[String],
    now: i64,
) -> Result<(Vec<Value>, i64), StoreError> {
    let room_id = room.room_id.as_str();
    let user = knock.state_key.as_deref().unwrap_or_default();
    let knock_room_state = room_state_for_knocker(conn, room_id, state_types)?;
    let state_text =
        serde_json::to_string(&knock_room_state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let content: Value = serde_json::from_str(knock.content.get()).unwrap_or(Value::Null);
    let text = |field: &str| content.get(field).and_then(Value::as_str).map(str::to_owned);
    knocks::replace_pending(conn, room_id, user, now)?;
    let id = knocks::insert_pending(
        conn,
        &knocks::NewKnock {
            room_id,
            user_id: user,
            event_id: knock.event_id.as_str(),
            origin_server: origin,
            reason: text("reason").as_deref(),
            display_name: text("displayname").as_deref(),
            avatar_url: text("avatar_url").as_deref(),
            content_redacted,
            knock_room_state: &state_text,
            now_ms: now,
        },
    )?;
    Ok((knock_room_state, id))
}

/// Full PDUs of the configured state types from current state, create first (KNOCK-SPEC C.25).
pub fn room_state_for_knocker(
    conn: &mut DbConn,
    room_id: &str,
    types: &[String],
) -> Result<Vec<Value>, StoreError> {
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let ids: Vec<String> =
        ev::current_of_types(conn, room_id, &types)?.into_iter().map(|(_, _, id)| id).collect();
    let mut pdus = load_pdus(conn, &ids)?;
    pdus.sort_by_key(|p| (p.event_type.to_string() != "m.room.create", p.event_type.to_string()));
    Ok(pdus.into_iter().map(|p| serde_json::to_value(&*p.json).unwrap_or(Value::Null)).collect())
}
