//! Building, hashing, signing and identifying events, per room version, through ruma.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, RoomId, RoomVersionId, UserId,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified},
};

use super::{keys::KeyRing, pdu::Pdu};

/// The room versions knockd hosts and accepts: every version with knocking.
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 6] = [
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// Our own limit on `prev_events`: what Synapse accepts at most.
pub const MAX_PREV_EVENTS: usize = 20;

/// The rules of a supported room version.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, String> {
    if !SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Err(format!(
            "room version {version} is not supported (knockd hosts versions 7 to 12)"
        ));
    }
    version.rules().ok_or_else(|| format!("room version {version} has no known rules"))
}

/// Parses a room version string, accepting only supported versions.
pub fn parse_room_version(s: &str) -> Result<RoomVersionId, String> {
    let version = RoomVersionId::try_from(s).map_err(|_| format!("invalid room version {s:?}"))?;
    rules(&version)?;
    Ok(version)
}

/// `$` + the reference hash of the event (event ID formats v3+ as used by rooms 7–12).
pub fn event_id(
    pdu: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, String> {
    let hash = ruma::signatures::reference_hash(pdu, rules).map_err(|e| e.to_string())?;
    EventId::parse(format!("${hash}")).map_err(|e| e.to_string())
}

/// What we want to say: the parts of an event its sender chooses.
#[derive(Clone, Debug)]
pub struct EventTemplate {
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: ruma::OwnedUserId,
    pub content: serde_json::Value,
}

impl EventTemplate {
    pub fn state(
        event_type: &str,
        state_key: &str,
        sender: &UserId,
        content: serde_json::Value,
    ) -> Self {
        Self {
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            sender: sender.to_owned(),
            content,
        }
    }
}

/// Where a new event hangs in the room graph.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// The room ID; `None` only for the create event of a room version that derives the room ID
    /// from it (v12).
    pub room_id: Option<OwnedRoomId>,
    /// `(event_id, depth)` of the events it follows; at most [`MAX_PREV_EVENTS`] are cited, the
    /// deepest first.
    pub prev_events: Vec<(OwnedEventId, i64)>,
    pub auth_events: Vec<OwnedEventId>,
}

/// The largest depth an event may have (the largest integer canonical JSON allows).
pub const MAX_DEPTH: i64 = 9_007_199_254_740_991;

/// The unsigned PDU for a template, with `depth` = max(prev depth) + 1, at most [`MAX_DEPTH`]
/// (as Synapse does: a member citing an event of the largest depth must not make every later
/// event of ours unrepresentable, which would lock the room).
pub fn unsigned_pdu(
    template: &EventTemplate,
    placement: &Placement,
    ts: MilliSecondsSinceUnixEpoch,
) -> Result<CanonicalJsonObject, String> {
    let mut prev = placement.prev_events.clone();
    prev.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    prev.truncate(MAX_PREV_EVENTS);
    let depth = prev.iter().map(|(_, d)| *d).max().unwrap_or(0).saturating_add(1).min(MAX_DEPTH);
    let mut value = serde_json::json!({
        "type": template.event_type,
        "sender": template.sender,
        "content": template.content,
        "origin_server_ts": ts,
        "depth": depth,
        "prev_events": prev.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        "auth_events": placement.auth_events.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
    });
    if let Some(room_id) = &placement.room_id {
        value["room_id"] = room_id.as_str().into();
    }
    if let Some(state_key) = &template.state_key {
        value["state_key"] = state_key.as_str().into();
    }
    serde_json::from_value(value).map_err(|e| format!("event is not canonical JSON: {e}"))
}

/// Adds the content hash and our signature, and computes the event ID.
pub fn hash_and_sign(
    keys: &KeyRing,
    mut pdu: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Pdu, String> {
    ruma::signatures::hash_and_sign_event(
        keys.server_name().as_str(),
        keys.pair(),
        &mut pdu,
        &rules.redaction,
    )
    .map_err(|e| e.to_string())?;
    let id = event_id(&pdu, rules)?;
    Pdu::from_canonical(id, pdu)
}

/// The room ID of a v12-style room: `!` + the reference hash of its create event.
pub fn room_id_from_create(create_event_id: &EventId) -> Result<OwnedRoomId, String> {
    RoomId::parse(format!("!{}", &create_event_id.as_str()[1..])).map_err(|e| e.to_string())
}

/// Verifies a remote event's signatures and content hash. `Verified::Signatures` means the
/// content hash did not match: the spec says to use the redacted event then.
pub fn verify(
    pdu: &CanonicalJsonObject,
    keys: &PublicKeyMap,
    rules: &RoomVersionRules,
) -> Result<Verified, String> {
    ruma::signatures::verify_event(keys, pdu, rules).map_err(|e| e.to_string())
}

/// The event redacted per the room version (what to keep when the content hash fails).
pub fn redact(
    pdu: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonObject, String> {
    ruma::canonical_json::redact(pdu, &rules.redaction, None).map_err(|e| e.to_string())
}

/// Reads an integer field.
pub fn int_field(pdu: &CanonicalJsonObject, name: &str) -> Option<i64> {
    pdu.get(name).and_then(CanonicalJsonValue::as_integer).map(i64::from)
}
