//! What other servers ask before knocking (KNOCK-SPEC H.47): aliases, room summaries (for "ask to
//! join" previews), profiles of our users, the public room directory.

use serde_json::{Value, json};

use super::ServiceError;
use crate::room::load_pdus;
use crate::store::{DbConn, StoreError, events as ev, rooms, users};

/// `#alias:ours` → `(room_id, servers)`.
pub fn resolve_alias(
    conn: &mut DbConn,
    alias: &str,
    our_server: &str,
) -> Result<Value, ServiceError> {
    let alias_events = rooms::alias_events(conn)?;
    for (room_id, event_id) in alias_events {
        let Some(pdu) = load_pdus(conn, &[event_id])?.pop() else { continue };
        let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        let alt = content["alt_aliases"].as_array().cloned().unwrap_or_default();
        let matches = content["alias"] == alias || alt.iter().any(|a| a == alias);
        if matches {
            let mut servers = vec![our_server.to_owned()];
            servers.extend(
                rooms::joined_servers(conn, &room_id)?.into_iter().filter(|s| s != our_server),
            );
            return Ok(json!({ "room_id": room_id, "servers": servers }));
        }
    }
    Err(ServiceError::NotFound(format!("no room has the alias {alias}")))
}

fn state_content(conn: &mut DbConn, room_id: &str, event_type: &str) -> Result<Value, StoreError> {
    let Some(id) = ev::current(conn, room_id, event_type, "")? else { return Ok(Value::Null) };
    Ok(load_pdus(conn, &[id])?
        .pop()
        .and_then(|p| serde_json::from_str(p.content.get()).ok())
        .unwrap_or(Value::Null))
}

/// A room's summary as `/hierarchy` and `/publicRooms` describe it.
pub fn summary(conn: &mut DbConn, room_id: &str) -> Result<Option<Value>, StoreError> {
    let Some(row) = rooms::get(conn, room_id)? else { return Ok(None) };
    let join_rules = state_content(conn, room_id, "m.room.join_rules")?;
    let history = state_content(conn, room_id, "m.room.history_visibility")?;
    let guest = state_content(conn, room_id, "m.room.guest_access")?;
    let create = state_content(conn, room_id, "m.room.create")?;
    let encryption = state_content(conn, room_id, "m.room.encryption")?;
    let (joined, _) = rooms::membership_counts(conn, room_id)?;
    let mut room = json!({
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": history["history_visibility"] == "world_readable",
        "guest_can_join": guest["guest_access"] == "can_join",
        "join_rule": join_rules["join_rule"].as_str().unwrap_or("invite"),
        "room_version": row.room_version,
        "children_state": [],
    });
    let name = state_content(conn, room_id, "m.room.name")?;
    let topic = state_content(conn, room_id, "m.room.topic")?;
    let avatar = state_content(conn, room_id, "m.room.avatar")?;
    let alias = state_content(conn, room_id, "m.room.canonical_alias")?;
    for (field, value) in [
        ("name", &name["name"]),
        ("topic", &topic["topic"]),
        ("avatar_url", &avatar["url"]),
        ("canonical_alias", &alias["alias"]),
        ("room_type", &create["type"]),
        ("encryption", &encryption["algorithm"]),
    ] {
        if let Some(v) = value.as_str() {
            room[field] = v.into();
        }
    }
    let allowed: Vec<Value> = join_rules["allow"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["room_id"].as_str().map(Value::from)).collect())
        .unwrap_or_default();
    if !allowed.is_empty() {
        room["allowed_room_ids"] = allowed.into();
    }
    Ok(Some(room))
}

/// `/hierarchy/{roomId}`: previewable rooms only (knock, knock_restricted, public, world-readable).
pub fn hierarchy(conn: &mut DbConn, room_id: &str) -> Result<Value, ServiceError> {
    let room = summary(conn, room_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("room {room_id} is not hosted here")))?;
    let rule = room["join_rule"].as_str().unwrap_or_default();
    let previewable =
        matches!(rule, "public" | "knock" | "knock_restricted") || room["world_readable"] == true;
    if !previewable {
        return Err(ServiceError::NotFound(format!("room {room_id} cannot be previewed")));
    }
    Ok(json!({ "room": room, "children": [], "inaccessible_children": [] }))
}

/// `/query/profile` for a local user.
pub fn profile(
    conn: &mut DbConn,
    user_id: &str,
    field: Option<&str>,
) -> Result<Value, ServiceError> {
    let user = users::profile(conn, user_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no user {user_id} here")))?;
    let mut out = json!({});
    if field.is_none_or(|f| f == "displayname")
        && let Some(name) = user.0
    {
        out["displayname"] = name.into();
    }
    if field.is_none_or(|f| f == "avatar_url")
        && let Some(url) = user.1
    {
        out["avatar_url"] = url.into();
    }
    Ok(out)
}

/// `/publicRooms`: the rooms admins listed, with their join rule (CPL-3/CPL-4).
pub fn public_rooms(conn: &mut DbConn, limit: usize, since: usize) -> Result<Value, StoreError> {
    let ids = rooms::public_rooms(conn)?;
    let total = ids.len();
    let mut chunk = Vec::new();
    for id in ids.iter().skip(since).take(limit) {
        if let Some(room) = summary(conn, id)? {
            chunk.push(room);
        }
    }
    let mut out = json!({ "chunk": chunk, "total_room_count_estimate": total });
    // `since` comes from the asker: any number, up to usize::MAX.
    let next = since.saturating_add(limit);
    if next < total {
        out["next_batch"] = next.to_string().into();
    }
    if since > 0 {
        out["prev_batch"] = since.saturating_sub(limit).to_string().into();
    }
    Ok(out)
}
