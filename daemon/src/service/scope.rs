//! What an admin token's user may see and decide.
//!
//! The server admin (`@admin:<server_name>`, whose token knockd writes on first start) sees and
//! decides everything. Any other local user is a moderator: their scope is the rooms where they
//! are joined and their power reaches the room's `invite`, `kick` or `ban` level. Reads outside the
//! scope are answered as if there were nothing there: absent from lists, 404 `M_NOT_FOUND` for
//! one item. Changes outside it (decisions, room settings) are refused with 403 `M_FORBIDDEN`
//! before anything is written; inside it, the room's auth rules still decide every event (a ban
//! needs ban power, and so on).

use knockd_shared::QueueEvent;
use ruma::{
    OwnedUserId, RoomVersionId, UserId,
    events::room::power_levels::{
        RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
    },
};
use serde_json::Value;

use super::AppState;
use crate::{
    matrix::event,
    store::{
        DbConn, StoreError,
        rooms::{self, JoinedRoom},
    },
};

/// Whose request it is, as far as seeing and deciding goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The server admin: every room.
    Server,
    /// Any other local user: the rooms they moderate.
    Moderator(OwnedUserId),
}

impl Scope {
    /// The scope of a token's user.
    pub fn of(app: &AppState, user: &UserId) -> Self {
        if user.as_str() == app.config.admin_user() {
            Self::Server
        } else {
            Self::Moderator(user.to_owned())
        }
    }

    /// The rooms in scope; `None` means every room.
    pub fn rooms(&self, conn: &mut DbConn) -> Result<Option<Vec<String>>, StoreError> {
        match self {
            Self::Server => Ok(None),
            Self::Moderator(user) => Ok(Some(moderated_rooms(conn, user)?)),
        }
    }

    /// Whether the room is in scope.
    pub fn covers(&self, conn: &mut DbConn, room_id: &str) -> Result<bool, StoreError> {
        Ok(self.rooms(conn)?.is_none_or(|rooms| rooms.iter().any(|r| r == room_id)))
    }

    /// The refusal of an act in a room out of scope: 403 `forbidden` to a member of the room,
    /// who knows it is there; to anyone else the same 404 as for what does not exist, so that a
    /// moderator cannot learn which knocks and rooms the rooms of others hold.
    pub fn refusal(
        &self,
        conn: &mut DbConn,
        room_id: &str,
        forbidden: String,
        missing: String,
    ) -> Result<super::ServiceError, StoreError> {
        let member = match self {
            Self::Server => true,
            Self::Moderator(user) => {
                rooms::membership(conn, room_id, user.as_str())?.is_some_and(|m| m == "join")
            }
        };
        Ok(if member {
            super::ServiceError::Forbidden(forbidden)
        } else {
            super::ServiceError::NotFound(missing)
        })
    }

    /// Whether a live queue event is for this scope: one of a room in scope, or a `resync`.
    pub async fn shows(&self, app: &AppState, event: &QueueEvent) -> Result<bool, StoreError> {
        match (self, &event.room_id) {
            (Self::Server, _) => Ok(true),
            (Self::Moderator(_), None) => Ok(event.kind == "resync"),
            (Self::Moderator(_), Some(room_id)) => {
                let (scope, room_id) = (self.clone(), room_id.clone());
                app.db.read(move |conn| scope.covers(conn, &room_id)).await
            }
        }
    }
}

/// The rooms where `user` is joined and may approve, deny or ban.
pub fn moderated_rooms(conn: &mut DbConn, user: &UserId) -> Result<Vec<String>, StoreError> {
    Ok(rooms::joined_with_power(conn, user.as_str())?
        .into_iter()
        .filter(|room| may_moderate(room, user))
        .map(|room| room.room_id)
        .collect())
}

/// Whether the user's power reaches the room's invite, kick or ban level, read the way the auth
/// rules read it (room creators are privileged from room version 12 on). Anything unreadable
/// counts as no power.
fn may_moderate(room: &JoinedRoom, user: &UserId) -> bool {
    let Ok(version) = RoomVersionId::try_from(room.room_version.as_str()) else { return false };
    let Ok(rules) = event::rules(&version) else { return false };
    let Some(create) = room.create.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok())
    else {
        return false;
    };
    let source = match &room.power_levels {
        None => RoomPowerLevelsSource::None,
        Some(text) => {
            let content = serde_json::from_str::<Value>(text).ok().and_then(|mut pdu| {
                serde_json::from_value::<RoomPowerLevelsEventContent>(pdu["content"].take()).ok()
            });
            match content {
                Some(content) => RoomPowerLevelsSource::Original(content),
                None => return false,
            }
        }
    };
    let levels = RoomPowerLevels::new(source, &rules.authorization, creators(&create));
    let power = levels.for_user(user);
    power >= levels.invite || power >= levels.kick || power >= levels.ban
}

/// The create event's sender and its `additional_creators`.
fn creators(create: &Value) -> Vec<OwnedUserId> {
    let more = create["content"]["additional_creators"].as_array().into_iter().flatten();
    create["sender"]
        .as_str()
        .into_iter()
        .chain(more.filter_map(Value::as_str))
        .filter_map(|u| UserId::parse(u).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn room(version: &str, creator: &str, power_levels: Option<Value>) -> JoinedRoom {
        let create = json!({ "sender": creator, "content": { "room_version": version } });
        JoinedRoom {
            room_id: "!r:example.org".to_owned(),
            room_version: version.to_owned(),
            create: Some(create.to_string()),
            power_levels: power_levels.map(|content| json!({ "content": content }).to_string()),
        }
    }

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn power_reaching_any_of_invite_kick_or_ban() {
        let levels = json!({ "users": { "@mod:example.org": 50, "@helper:example.org": 10 },
                             "invite": 10, "kick": 50, "ban": 50 });
        let r = room("10", "@admin:example.org", Some(levels));
        assert!(may_moderate(&r, &user("@mod:example.org")));
        assert!(may_moderate(&r, &user("@helper:example.org")), "invite power alone");
        assert!(!may_moderate(&r, &user("@member:example.org")));
        let strings = json!({ "users": { "@mod:example.org": "50" } });
        assert!(may_moderate(
            &room("7", "@a:example.org", Some(strings)),
            &user("@mod:example.org")
        ));
    }

    #[test]
    fn creators_of_v12_rooms_and_unreadable_levels() {
        let levels = json!({ "users": {}, "invite": 100, "kick": 100, "ban": 100 });
        let r = room("12", "@owner:example.org", Some(levels));
        assert!(may_moderate(&r, &user("@owner:example.org")), "creators have infinite power");
        let r = room("10", "@owner:example.org", Some(json!({ "users": [] })));
        assert!(!may_moderate(&r, &user("@owner:example.org")), "unreadable counts as none");
        let mut r = room("10", "@owner:example.org", None);
        r.create = None;
        assert!(!may_moderate(&r, &user("@owner:example.org")));
    }
}
