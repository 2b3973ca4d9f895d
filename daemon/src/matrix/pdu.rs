//! A parsed PDU that ruma's auth rules and state resolution can read.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde_json::value::RawValue;

/// The fields of a PDU that the auth rules read, plus the canonical JSON it came from.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub event_type: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
    pub rejected: bool,
    pub json: Arc<CanonicalJsonObject>,
}

impl Pdu {
    /// Reads a PDU in the room-version-4+ format (no `event_id` inside; the caller computed it).
    pub fn from_canonical(
        event_id: OwnedEventId,
        json: CanonicalJsonObject,
    ) -> Result<Self, String> {
        let str_field = |name: &str| -> Result<&str, String> {
            json.get(name)
                .and_then(CanonicalJsonValue::as_str)
                .ok_or_else(|| format!("missing or non-string `{name}`"))
        };
        let id_list = |name: &str| -> Result<Vec<OwnedEventId>, String> {
            let Some(value) = json.get(name) else { return Ok(Vec::new()) };
            let array = value.as_array().ok_or_else(|| format!("`{name}` is not an array"))?;
            array
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| format!("`{name}` holds a non-string"))
                        .and_then(|s| EventId::parse(s).map_err(|e| format!("`{name}`: {e}")))
                })
                .collect()
        };
        let room_id = match json.get("room_id") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or("`room_id` is not a string")
                    .and_then(|s| RoomId::parse(s).map_err(|_| "invalid `room_id`"))?,
            ),
        };
        let sender = UserId::parse(str_field("sender")?).map_err(|e| format!("`sender`: {e}"))?;
        let ts = json
            .get("origin_server_ts")
            .and_then(CanonicalJsonValue::as_integer)
            .and_then(|i| UInt::try_from(i64::from(i)).ok())
            .ok_or("missing or invalid `origin_server_ts`")?;
        let depth = json
            .get("depth")
            .and_then(CanonicalJsonValue::as_integer)
            .map(i64::from)
            .ok_or("missing or non-integer `depth`")?;
        let content = json.get("content").ok_or("missing `content`")?;
        if !content.is_object() {
            return Err("`content` is not an object".to_owned());
        }
        let content = serde_json::value::to_raw_value(content).map_err(|e| e.to_string())?;
        let state_key = match json.get("state_key") {
            None => None,
            Some(v) => Some(v.as_str().ok_or("`state_key` is not a string")?.to_owned()),
        };
        let redacts = json
            .get("redacts")
            .and_then(CanonicalJsonValue::as_str)
            .or_else(|| {
                json.get("content")
                    .and_then(CanonicalJsonValue::as_object)
                    .and_then(|c| c.get("redacts"))
                    .and_then(CanonicalJsonValue::as_str)
            })
            .and_then(|s| EventId::parse(s).ok());
        Ok(Self {
            event_id,
            room_id,
            sender,
            origin_server_ts: MilliSecondsSinceUnixEpoch(ts),
            event_type: str_field("type")?.into(),
            content,
            state_key,
            prev_events: id_list("prev_events")?,
            auth_events: id_list("auth_events")?,
            redacts,
            depth,
            rejected: false,
            json: Arc::new(json),
        })
    }

    /// `content.membership`, for member events.
    pub fn membership(&self) -> Option<String> {
        self.json
            .get("content")
            .and_then(CanonicalJsonValue::as_object)
            .and_then(|c| c.get("membership"))
            .and_then(CanonicalJsonValue::as_str)
            .map(str::to_owned)
    }

    /// The canonical JSON text of the PDU.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(&*self.json).unwrap_or_default()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
