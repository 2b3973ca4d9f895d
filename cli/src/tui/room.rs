//! The room as the knocker saw it: read from the stripped state knockd answered the knock with
//! (full PDUs of create, join rules, name, topic, avatar, canonical alias and encryption).

use serde_json::Value;

/// Room context shown in the detail pane; every field is untrusted text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomContext {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub room_version: Option<String>,
    pub alias: Option<String>,
    /// The encryption algorithm, when the room is encrypted.
    pub encryption: Option<String>,
}

impl RoomContext {
    /// Reads the PDUs; unknown or malformed ones are skipped.
    pub fn from_pdus(pdus: &[Value]) -> Self {
        let mut room = Self::default();
        for pdu in pdus {
            let (Some(kind), Some(content)) =
                (pdu.get("type").and_then(Value::as_str), pdu.get("content"))
            else {
                continue;
            };
            if pdu.get("state_key").and_then(Value::as_str) != Some("") {
                continue;
            }
            let text = |field: &str| content.get(field).and_then(Value::as_str).map(str::to_owned);
            match kind {
                // Room versions before 11 default to "1" when the field is absent.
                "m.room.create" => room.room_version = text("room_version").or(Some("1".into())),
                "m.room.join_rules" => room.join_rule = text("join_rule"),
                "m.room.name" => room.name = text("name"),
                "m.room.topic" => room.topic = text("topic"),
                "m.room.avatar" => room.avatar_url = text("url"),
                "m.room.canonical_alias" => room.alias = text("alias"),
                "m.room.encryption" => {
                    room.encryption = text("algorithm").or(Some("unknown algorithm".into()))
                }
                _ => {}
            }
        }
        room
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_the_stripped_state() {
        let pdus = [
            json!({"type": "m.room.create", "state_key": "", "content": {"room_version": "10"}}),
            json!({"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}),
            json!({"type": "m.room.name", "state_key": "", "content": {"name": "Lobby"}}),
            json!({"type": "m.room.topic", "state_key": "", "content": {"topic": "hi"}}),
            json!({"type": "m.room.encryption", "state_key": "", "content": {}}),
            json!({"type": "m.room.member", "state_key": "@u:x", "content": {"membership": "join"}}),
            json!("garbage"),
        ];
        let room = RoomContext::from_pdus(&pdus);
        assert_eq!(room.room_version.as_deref(), Some("10"));
        assert_eq!(room.join_rule.as_deref(), Some("knock"));
        assert_eq!(room.name.as_deref(), Some("Lobby"));
        assert_eq!(room.topic.as_deref(), Some("hi"));
        assert_eq!(room.encryption.as_deref(), Some("unknown algorithm"));
        assert_eq!(room.alias, None);
    }
}
