//! Step 1 of the checks on receipt: the event's format and size for the room's version, its room,
//! and its ID (the reference hash).

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId};

use super::RoomCtx;
use crate::matrix::event;

/// Format and size per room version, and the event ID.
pub fn check_format(room: &RoomCtx, pdu: &CanonicalJsonObject) -> Result<OwnedEventId, String> {
    if pdu.get("room_id").and_then(CanonicalJsonValue::as_str) != Some(room.room_id.as_str()) {
        return Err(format!("the event is not in room {}", room.room_id));
    }
    ruma::state_res::check_pdu_format(pdu, &room.rules.event_format)?;
    // JSON allows U+0000 in strings; PostgreSQL's text does not, and a batch's rows are written
    // together: one such event would fail every write of its batch (ruma's identifiers let it
    // through, e.g. an event ID "$\u0000x").
    if pdu.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err("the event holds a U+0000 character".to_owned());
    }
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

/// Whether any key or string in `value` holds U+0000.
fn has_nul(value: &CanonicalJsonValue) -> bool {
    match value {
        CanonicalJsonValue::String(s) => s.contains('\0'),
        CanonicalJsonValue::Array(items) => items.iter().any(has_nul),
        CanonicalJsonValue::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
