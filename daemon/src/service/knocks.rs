//! make_knock and send_knock: the knock protocol as KNOCK-SPEC B and C describe it.

use std::collections::HashMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedUserId,
    RoomVersionId, ServerName, UInt, UserId, events::StateEventType, signatures::Verified,
};
use serde_json::Value;

use super::{
    AppState, ServiceError,
    events::{RoomCtx, auth_state, load_pdus},
    state::{StateBeforeError, state_before},
};
use crate::{
    matrix::{EventTemplate, Pdu, Placement, acl, auth, event, now_ms},
    store::{DbConn, StoreError, events as ev, knocks, rooms as room_store, state},
};

/// The room, checked for existence and the origin's ACL (KNOCK-SPEC B.6–7, C.14).
fn room_for(
    conn: &mut DbConn,
    room_id: &str,
    origin: &ServerName,
) -> Result<RoomCtx, ServiceError> {
    let room = RoomCtx::load(conn, room_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("room {room_id} is not hosted here")))?;
    check_acl(conn, room_id, origin)?;
    Ok(room)
}

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

fn knock_template(user: &UserId) -> EventTemplate {
    EventTemplate::state(
        "m.room.member",
        user.as_str(),
        user,
        serde_json::json!({ "membership": "knock" }),
    )
}

fn ts(ms: i64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ms.max(0) as u64).unwrap_or_default())
}

/// `GET make_knock`: a knock template the origin's user may sign, after the knock auth rule
/// passed against current state. Nothing is stored.
pub async fn make_knock(
    app: &AppState,
    origin: &ServerName,
    room_id: String,
    user_id: String,
    versions: Vec<String>,
) -> Result<(RoomVersionId, CanonicalJsonObject), ServiceError> {
    if versions.is_empty() {
        return Err(ServiceError::MissingParam(
            "missing `ver`: the room versions the server supports".to_owned(),
        ));
    }
    let user = UserId::parse(&user_id)
        .map_err(|e| ServiceError::Invalid(format!("invalid user ID {user_id:?}: {e}")))?;
    let origin = origin.to_owned();
    app.db
        .read(move |conn| {
            let room = room_for(conn, &room_id, &origin)?;
            if !versions.iter().any(|v| v == room.version.as_str()) {
                return Err(ServiceError::IncompatibleRoomVersion(room.version.to_string()));
            }
            if user.server_name() != origin {
                return Err(ServiceError::Forbidden(format!(
                    "{user} is not a user of the requesting server {origin}"
                )));
            }
            let template = knock_template(&user);
            let state = auth_state(conn, &room, &template)?;
            let wanted = auth::auth_types(&template, &room.rules.authorization)
                .map_err(ServiceError::Invalid)?;
            let auth_events =
                wanted.iter().filter_map(|k| state.get(k)).map(|p| p.event_id.clone()).collect();
            let prev_events =
                ev::extremities(conn, room.room_id.as_str(), event::MAX_PREV_EVENTS as i64)?
                    .into_iter()
                    .filter_map(|(id, depth)| OwnedEventId::try_from(id).ok().map(|id| (id, depth)))
                    .collect();
            let placement =
                Placement { room_id: Some(room.room_id.clone()), prev_events, auth_events };
            let mut pdu = event::unsigned_pdu(&template, &placement, ts(now_ms()))
                .map_err(ServiceError::Invalid)?;
            pdu.insert("origin".to_owned(), CanonicalJsonValue::String(origin.to_string()));
            // KNOCK-SPEC B.11: the knock auth rule against current state, before answering.
            let placeholder = OwnedEventId::try_from("$knock-template")
                .map_err(|e| ServiceError::Invalid(e.to_string()))?;
            let probe =
                Pdu::from_canonical(placeholder, pdu.clone()).map_err(ServiceError::Invalid)?;
            auth::check_against_state(&room.rules.authorization, &probe, |t, k| {
                state.get(&(t.clone(), k.to_owned())).cloned()
            })
            .map_err(|e| ServiceError::Forbidden(format!("you cannot knock on this room: {e}")))?;
            Ok((room.version, pdu))
        })
        .await
}

/// What send_knock checked before the transaction.
struct CheckedKnock {
    room: RoomCtx,
    pdu: CanonicalJsonObject,
    event_id: OwnedEventId,
    user: OwnedUserId,
    content_redacted: bool,
}

fn str_of<'a>(pdu: &'a CanonicalJsonObject, field: &str) -> Option<&'a str> {
    pdu.get(field).and_then(CanonicalJsonValue::as_str)
}

/// KNOCK-SPEC C.15–C.19: shape and structure, all before any auth check.
fn check_shape(
    room: &RoomCtx,
    origin: &ServerName,
    path_event_id: &str,
    pdu: &CanonicalJsonObject,
) -> Result<(OwnedEventId, OwnedUserId), ServiceError> {
    // C.15
    if str_of(pdu, "room_id") != Some(room.room_id.as_str()) {
        return Err(ServiceError::Invalid(
            "the event's room_id does not match the path".to_owned(),
        ));
    }
    // C.16: format and size limits per room version.
    ruma::state_res::check_pdu_format(pdu, &room.rules.event_format)
        .map_err(ServiceError::BadJson)?;
    if room.rules.authorization.room_create_event_id_as_room_id {
        let create = format!("${}", &room.room_id.as_str()[1..]);
        let cites_create = pdu
            .get("auth_events")
            .and_then(CanonicalJsonValue::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(create.as_str())));
        if cites_create {
            return Err(ServiceError::BadJson(
                "room version 12 events must not cite the create event".to_owned(),
            ));
        }
    }
    // C.17: a knock and nothing else.
    if str_of(pdu, "type") != Some("m.room.member") {
        return Err(ServiceError::Invalid("send_knock only takes m.room.member events".to_owned()));
    }
    let Some(state_key) = str_of(pdu, "state_key") else {
        return Err(ServiceError::Invalid("the event has no state_key".to_owned()));
    };
    let membership = pdu
        .get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|c| c.get("membership"))
        .and_then(CanonicalJsonValue::as_str);
    if membership != Some("knock") {
        return Err(ServiceError::Invalid(format!(
            "membership must be knock, not {}",
            membership.unwrap_or("missing")
        )));
    }
    let sender = str_of(pdu, "sender").unwrap_or_default();
    if state_key != sender {
        return Err(ServiceError::Invalid("state_key must be the sender".to_owned()));
    }
    let user =
        UserId::parse(sender).map_err(|e| ServiceError::Invalid(format!("invalid sender: {e}")))?;
    // C.18
    if user.server_name() != origin {
        return Err(ServiceError::Invalid(format!(
            "the sender {user} is not on the requesting server {origin}"
        )));
    }
    // C.19
    let event_id = event::event_id(pdu, &room.rules).map_err(ServiceError::BadJson)?;
    if event_id.as_str() != path_event_id {
        return Err(ServiceError::Invalid(format!(
            "the event ID is {event_id}, not {path_event_id}"
        )));
    }
    Ok((event_id, user))
}

/// C.20: the sender server's signature, with keys valid when the event was sent.
async fn check_signature(
    app: &AppState,
    room: &RoomCtx,
    user: &UserId,
    pdu: &CanonicalJsonObject,
) -> Result<Verified, ServiceError> {
    let server = user.server_name();
    let key_ids: Vec<String> = pdu
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default();
    if key_ids.is_empty() {
        return Err(ServiceError::Invalid(format!("the event is not signed by {server}")));
    }
    let at = if room.rules.enforce_key_validity {
        event::int_field(pdu, "origin_server_ts").unwrap_or(0)
    } else {
        0
    };
    let mut last_error = String::new();
    for key_id in key_ids.iter().filter(|k| k.starts_with("ed25519:")) {
        match app.remote_keys.key_map(server, key_id, at).await {
            Ok(map) => {
                return event::verify(pdu, &map, &room.rules).map_err(|e| {
                    ServiceError::Invalid(format!("bad signature from {server}: {e}"))
                });
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(ServiceError::Invalid(format!("cannot verify the signature of {server}: {last_error}")))
}

/// `PUT send_knock`: validate, check auth three ways, then store the knock and queue it, all in
/// one transaction. Answers `knock_room_state`.
pub async fn send_knock(
    app: &AppState,
    origin: &ServerName,
    room_id: String,
    path_event_id: String,
    pdu: CanonicalJsonObject,
) -> Result<Vec<Value>, ServiceError> {
    let origin_owned = origin.to_owned();
    let lookup_room = room_id.clone();
    let room = app.db.read(move |conn| room_for(conn, &lookup_room, &origin_owned)).await?;
    let (event_id, user) = check_shape(&room, origin, &path_event_id, &pdu)?;
    let verified = check_signature(app, &room, &user, &pdu).await?;
    let (pdu, content_redacted) = match verified {
        Verified::All => (pdu, false),
        Verified::Signatures => {
            (event::redact(pdu, &room.rules).map_err(ServiceError::BadJson)?, true)
        }
    };
    // C.26: a knock we already accepted gets the same answer again.
    let known = event_id.to_string();
    if let Some(row) = app.db.read(move |conn| knocks::by_event(conn, &known)).await? {
        return serde_json::from_str(&row.knock_room_state)
            .map_err(|e| StoreError::Corrupt(e.to_string()).into());
    }
    let checked = CheckedKnock { room, pdu, event_id, user, content_redacted };
    let keys = app.keys.clone();
    let state_types = app.config.knock_room_state.clone();
    let origin = origin.to_string();
    let room_id = checked.room.room_id.to_string();
    let (state, knock_id) =
        app.db.write(move |conn| store_knock(conn, &keys, checked, &origin, &state_types)).await?;
    if let Some(id) = knock_id {
        app.publish("knock", Some(id), Some(&room_id), Some(knocks::PENDING));
    }
    Ok(state)
}

fn store_knock(
    conn: &mut DbConn,
    keys: &crate::matrix::KeyRing,
    knock: CheckedKnock,
    origin: &str,
    state_types: &[String],
) -> Result<(Vec<Value>, Option<i64>), ServiceError> {
    let CheckedKnock { room, mut pdu, event_id, user, content_redacted } = knock;
    let room_id = room.room_id.to_string();
    room_store::lock(conn, &room_id)?;
    // A concurrent duplicate may have won the race.
    if let Some(row) = knocks::by_event(conn, event_id.as_str())? {
        let state = serde_json::from_str(&row.knock_room_state)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        return Ok((state, None));
    }
    let parsed =
        Pdu::from_canonical(event_id.clone(), pdu.clone()).map_err(ServiceError::BadJson)?;
    let forbidden =
        |stage: &str, e: String| ServiceError::Forbidden(format!("knock refused ({stage}): {e}"));

    // C.21 step 4: against its own auth events, which must be ours and in this room.
    let mut auth_ids: Vec<String> = parsed.auth_events.iter().map(|id| id.to_string()).collect();
    // v12 rules read the create event, which events there never cite.
    auth_ids.extend(ev::current(conn, &room_id, "m.room.create", "")?);
    let auth_events: HashMap<OwnedEventId, Pdu> =
        load_pdus(conn, &auth_ids)?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
    for id in &parsed.auth_events {
        let ok = ev::get(conn, id.as_str())?
            .is_some_and(|r| r.status == ev::ACCEPTED && r.room_id == room_id);
        if !ok {
            return Err(forbidden("auth events", format!("unknown or rejected auth event {id}")));
        }
    }
    auth::check_against_auth_events(&room.rules.authorization, &parsed, |id| {
        auth_events.get(id).cloned()
    })
    .map_err(|e| forbidden("auth events", e))?;

    // Step 5: against the state before it.
    let before = match state_before(conn, &room, &parsed.prev_events) {
        Ok(g) => g,
        Err(StateBeforeError::UnknownPrev(id)) => {
            return Err(forbidden("prev_events", format!("unknown prev event {id}")));
        }
        Err(StateBeforeError::Store(e)) => return Err(e.into()),
    };
    let template = knock_template(&user);
    let auth_keys =
        auth::auth_types(&template, &room.rules.authorization).map_err(ServiceError::Invalid)?;
    let at_group =
        load_state_keys(conn, &auth_keys, |conn, t, k| state::lookup(conn, before, t, k))?;
    auth::check_against_state(&room.rules.authorization, &parsed, |t, k| {
        at_group.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(|e| forbidden("state before the event", e))?;

    // Step 6: against current state (our decision: 403, nothing stored, rather than a soft-fail).
    let current = auth_state(conn, &room, &template)?;
    auth::check_against_state(&room.rules.authorization, &parsed, |t, k| {
        current.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(|e| forbidden("current state", e))?;

    // Accepted: add our signature, store it as state, queue it.
    ruma::signatures::sign_event(
        keys.server_name().as_str(),
        keys.pair(),
        &mut pdu,
        &room.rules.redaction,
    )
    .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let stored = Pdu::from_canonical(event_id.clone(), pdu).map_err(ServiceError::BadJson)?;
    super::events::persist_received_state(conn, &room_id, &stored, before)?;

    let now = now_ms();
    let knock_room_state = room_state_for_knocker(conn, &room_id, state_types)?;
    let state_text =
        serde_json::to_string(&knock_room_state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let content: Value = serde_json::from_str(stored.content.get()).unwrap_or(Value::Null);
    let text = |field: &str| content.get(field).and_then(Value::as_str).map(str::to_owned);
    knocks::replace_pending(conn, &room_id, user.as_str(), now)?;
    let knock_id = knocks::insert_pending(
        conn,
        &knocks::NewKnock {
            room_id: &room_id,
            user_id: user.as_str(),
            event_id: event_id.as_str(),
            origin_server: origin,
            reason: text("reason").as_deref(),
            display_name: text("displayname").as_deref(),
            avatar_url: text("avatar_url").as_deref(),
            content_redacted,
            knock_room_state: &state_text,
            now_ms: now,
        },
    )?;
    Ok((knock_room_state, Some(knock_id)))
}

fn load_state_keys(
    conn: &mut DbConn,
    keys: &[(StateEventType, String)],
    mut lookup: impl FnMut(&mut DbConn, &str, &str) -> Result<Option<String>, StoreError>,
) -> Result<HashMap<(StateEventType, String), Pdu>, StoreError> {
    let mut ids = Vec::new();
    let mut by_id = HashMap::new();
    let mut wanted = keys.to_vec();
    let create = (StateEventType::RoomCreate, String::new());
    if !wanted.contains(&create) {
        wanted.push(create);
    }
    for (t, k) in wanted {
        if let Some(id) = lookup(conn, &t.to_string(), &k)? {
            by_id.insert(id.clone(), (t, k));
            ids.push(id);
        }
    }
    Ok(load_pdus(conn, &ids)?
        .into_iter()
        .filter_map(|p| by_id.remove(p.event_id.as_str()).map(|key| (key, p)))
        .collect())
}

/// Full PDUs of the configured state types from current state (KNOCK-SPEC C.25).
pub fn room_state_for_knocker(
    conn: &mut DbConn,
    room_id: &str,
    types: &[String],
) -> Result<Vec<Value>, StoreError> {
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let entries = ev::current_of_types(conn, room_id, &types)?;
    let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
    let mut pdus = load_pdus(conn, &ids)?;
    pdus.sort_by_key(|p| (p.event_type.to_string() != "m.room.create", p.event_type.to_string()));
    Ok(pdus.into_iter().map(|p| serde_json::to_value(&*p.json).unwrap_or(Value::Null)).collect())
}
