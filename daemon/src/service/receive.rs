//! Checks performed on receipt of a PDU (spec "Checks performed on receipt of a PDU"), shared by
//! the membership endpoints and inbound transactions: format, signatures and hashes, then the
//! auth rules against the event's auth events, the state before it, and current state.

use std::collections::{BTreeMap, HashMap};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, ServerName,
    events::StateEventType,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, Verified},
};

use super::{
    AppState,
    events::{RoomCtx, auth_state, load_pdus},
    state::{StateBeforeError, state_before},
};
use crate::{
    matrix::{EventTemplate, Pdu, auth, event},
    store::{DbConn, StoreError, events as ev, state},
};

/// Format and size per room version, and the event ID (reference hash).
pub fn check_format(room: &RoomCtx, pdu: &CanonicalJsonObject) -> Result<OwnedEventId, String> {
    if pdu.get("room_id").and_then(CanonicalJsonValue::as_str) != Some(room.room_id.as_str()) {
        return Err(format!("the event is not in room {}", room.room_id));
    }
    ruma::state_res::check_pdu_format(pdu, &room.rules.event_format)?;
    if room.rules.authorization.room_create_event_id_as_room_id {
        let create = format!("${}", &room.room_id.as_str()[1..]);
        let cites_create = pdu
            .get("auth_events")
            .and_then(CanonicalJsonValue::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(create.as_str())));
        if cites_create {
            return Err("room version 12 events must not cite the create event".to_owned());
        }
    }
    event::event_id(pdu, &room.rules)
}

/// Verifies the signatures of every server that must sign the event (with keys valid when it was
/// sent) and its content hash. On a hash mismatch the redacted event is returned, flagged.
pub async fn verify_signatures(
    app: &AppState,
    room: &RoomCtx,
    pdu: CanonicalJsonObject,
) -> Result<(CanonicalJsonObject, bool), String> {
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&pdu, &room.rules.signatures)
            .map_err(|e| e.to_string())?;
    let at = if room.rules.enforce_key_validity {
        event::int_field(&pdu, "origin_server_ts").unwrap_or(0)
    } else {
        0
    };
    let mut map = PublicKeyMap::new();
    for server in servers {
        map.insert(server.to_string(), keys_for(app, &pdu, &server, at).await?);
    }
    match event::verify(&pdu, &map, &room.rules)? {
        Verified::All => Ok((pdu, false)),
        Verified::Signatures => Ok((event::redact(pdu, &room.rules)?, true)),
    }
}

async fn keys_for(
    app: &AppState,
    pdu: &CanonicalJsonObject,
    server: &ServerName,
    at: i64,
) -> Result<BTreeMap<String, Base64>, String> {
    if server == app.keys.server_name() {
        let key =
            Base64::<Standard>::parse(app.keys.public_key_base64()).map_err(|e| e.to_string())?;
        return Ok(BTreeMap::from([(app.keys.key_id(), key)]));
    }
    let key_ids: Vec<String> = pdu
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .map(|keys| keys.keys().filter(|k| k.starts_with("ed25519:")).cloned().collect())
        .unwrap_or_default();
    if key_ids.is_empty() {
        return Err(format!("the event is not signed by {server}"));
    }
    let mut last = String::new();
    for key_id in key_ids {
        match app.remote_keys.key(server, &key_id, at).await {
            Ok(key) => {
                let key = Base64::<Standard>::parse(&key).map_err(|e| e.to_string())?;
                return Ok(BTreeMap::from([(key_id, key)]));
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot verify the signature of {server}: {last}"))
}

/// The outcome of the auth checks.
#[derive(Debug)]
pub enum Verdict {
    /// Passed all three; `before` is the state group before the event.
    Accepted { before: i64 },
    /// Failed against its auth events or the state before it: stored as rejected, never state.
    Rejected(String),
    /// Passed those but not the current state: stored, not in current state, not sent on.
    SoftFailed { before: i64, reason: String },
    /// A prev event we do not have.
    MissingPrev(String),
}

/// Runs the auth rules three ways. Call inside the room lock.
pub fn authorize(conn: &mut DbConn, room: &RoomCtx, pdu: &Pdu) -> Result<Verdict, StoreError> {
    let room_id = room.room_id.as_str();
    // Step 4: its own auth events, which must be accepted events of this room.
    let mut auth_ids: Vec<String> = pdu.auth_events.iter().map(|id| id.to_string()).collect();
    auth_ids.extend(ev::current(conn, room_id, "m.room.create", "")?);
    let placed: HashMap<String, bool> = ev::placements(conn, &auth_ids)?
        .into_iter()
        .map(|p| {
            let usable = p.status == ev::ACCEPTED || p.status == ev::OUTLIER;
            (p.event_id, usable && p.room_id == room_id)
        })
        .collect();
    for id in &pdu.auth_events {
        if placed.get(id.as_str()) != Some(&true) {
            return Ok(Verdict::Rejected(format!("unknown or rejected auth event {id}")));
        }
    }
    let auth_events: HashMap<OwnedEventId, Pdu> =
        load_pdus(conn, &auth_ids)?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
    if let Err(e) = auth::check_against_auth_events(&room.rules.authorization, pdu, |id| {
        auth_events.get(id).cloned()
    }) {
        return Ok(Verdict::Rejected(format!("not allowed by its auth events: {e}")));
    }
    // Step 5: the state before it.
    let before = match state_before(conn, room, &pdu.prev_events) {
        Ok(g) => g,
        Err(StateBeforeError::UnknownPrev(id)) => return Ok(Verdict::MissingPrev(id)),
        Err(StateBeforeError::Store(e)) => return Err(e),
    };
    let template = template_of(pdu);
    let current = auth_state(conn, room, &template)?;
    // The common case: the event extends the current state, so the state before it *is* the
    // current state and one read serves both checks.
    let extends_current =
        crate::store::rooms::current_group(conn, room.room_id.as_str())? == Some(before);
    let at_group = if extends_current {
        None
    } else {
        let keys =
            auth::auth_types(&template, &room.rules.authorization).map_err(StoreError::Rejected)?;
        Some(load_state_keys(conn, before, &keys)?)
    };
    let before_state = at_group.as_ref().unwrap_or(&current);
    if let Err(e) = auth::check_against_state(&room.rules.authorization, pdu, |t, k| {
        before_state.get(&(t.clone(), k.to_owned())).cloned()
    }) {
        return Ok(Verdict::Rejected(format!("not allowed by the state before it: {e}")));
    }
    // Step 6: current state.
    if extends_current {
        return Ok(Verdict::Accepted { before });
    }
    if let Err(e) = auth::check_against_state(&room.rules.authorization, pdu, |t, k| {
        current.get(&(t.clone(), k.to_owned())).cloned()
    }) {
        return Ok(Verdict::SoftFailed {
            before,
            reason: format!("not allowed by the current state: {e}"),
        });
    }
    Ok(Verdict::Accepted { before })
}

/// The template an event was made from (for choosing its auth state).
pub fn template_of(pdu: &Pdu) -> EventTemplate {
    EventTemplate {
        event_type: pdu.event_type.to_string(),
        state_key: pdu.state_key.clone(),
        sender: pdu.sender.clone(),
        content: serde_json::from_str(pdu.content.get()).unwrap_or_default(),
    }
}

/// The events holding `keys` (plus create) in the state of `group`, in one lookup.
pub fn load_state_keys(
    conn: &mut DbConn,
    group: i64,
    keys: &[(StateEventType, String)],
) -> Result<HashMap<(StateEventType, String), Pdu>, StoreError> {
    let mut wanted: Vec<state::StateKey> =
        keys.iter().map(|(t, k)| (t.to_string(), k.clone())).collect();
    let create = ("m.room.create".to_owned(), String::new());
    if !wanted.contains(&create) {
        wanted.push(create);
    }
    let found = state::lookup_many(conn, group, &wanted)?;
    let by_id: HashMap<&str, &state::StateKey> =
        found.iter().map(|(key, id)| (id.as_str(), key)).collect();
    let ids: Vec<String> = found.values().cloned().collect();
    Ok(load_pdus(conn, &ids)?
        .into_iter()
        .filter_map(|p| {
            let (t, k) = by_id.get(p.event_id.as_str())?;
            Some(((StateEventType::from(t.as_str()), k.clone()), p))
        })
        .collect())
}
