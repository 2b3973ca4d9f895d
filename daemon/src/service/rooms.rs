//! Creating rooms and reading them back.

use knockd_shared::{CreateRoomRequest, CreateRoomResponse, RoomDetail, RoomSummary, StateEntry};
use ruma::{OwnedRoomAliasId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::{AppState, ServiceError, scope::Scope};
use crate::{
    matrix::{event, now_ms},
    room::{load_pdus, local},
    store::{StoreError, events as ev, rooms as room_store},
};

/// The room version used when a request names none.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V10;

/// A validated room-creation request.
struct RoomPlan {
    version: RoomVersionId,
    events: Vec<(&'static str, Value)>,
}

fn plan(
    req: &CreateRoomRequest,
    creator: &UserId,
    server_name: &str,
) -> Result<RoomPlan, ServiceError> {
    let version = match &req.room_version {
        Some(v) => event::parse_room_version(v).map_err(ServiceError::Invalid)?,
        None => DEFAULT_ROOM_VERSION,
    };
    let rules = event::rules(&version).map_err(ServiceError::Invalid)?;
    let join_rule = req.join_rule.as_deref().unwrap_or("knock");
    let join_rules = super::settings::join_rules(&version, &rules, join_rule, &req.allow)?;
    let history = req.history_visibility.as_deref().unwrap_or("shared");
    if !["world_readable", "shared", "invited", "joined"].contains(&history) {
        return Err(ServiceError::Invalid(format!(
            "history_visibility {history:?} is not one of world_readable, shared, invited, joined"
        )));
    }

    let mut create = json!({ "room_version": version.as_str() });
    if !rules.authorization.use_room_create_sender {
        create["creator"] = creator.as_str().into();
    }
    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), 100.into());
    }
    let power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.topic": 50, "m.room.avatar": 50,
            "m.room.canonical_alias": 50, "m.room.power_levels": 100,
            "m.room.history_visibility": 100, "m.room.encryption": 100,
            "m.room.server_acl": 100, "m.room.tombstone": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
    });
    let mut events = vec![
        ("m.room.create", create),
        ("m.room.member", json!({ "membership": "join" })),
        ("m.room.power_levels", power_levels),
        ("m.room.join_rules", join_rules),
        ("m.room.history_visibility", json!({ "history_visibility": history })),
    ];
    if let Some(alias) = &req.alias {
        let parsed = OwnedRoomAliasId::try_from(alias.as_str()).map_err(|e| {
            ServiceError::Invalid(format!("alias {alias:?} is not a room alias: {e}"))
        })?;
        if parsed.server_name().as_str() != server_name {
            return Err(ServiceError::Invalid(format!(
                "alias {alias} is not on this server ({server_name}): knockd can only publish its own aliases"
            )));
        }
        events.push(("m.room.canonical_alias", json!({ "alias": alias })));
    }
    if let Some(name) = &req.name {
        events.push(("m.room.name", json!({ "name": name })));
    }
    if let Some(topic) = &req.topic {
        events.push(("m.room.topic", json!({ "topic": topic })));
    }
    if let Some(url) = &req.avatar_url {
        if !url.starts_with("mxc://") {
            return Err(ServiceError::Invalid(format!("avatar_url {url:?} is not an mxc:// URL")));
        }
        events.push(("m.room.avatar", json!({ "url": url })));
    }
    Ok(RoomPlan { version, events })
}

/// Creates a room of real signed PDUs, all in one transaction.
///
/// Only the server admin creates rooms. A room's creator holds full power in it, and a room
/// claims what belongs to the whole server (aliases in its name, the public directory), so a
/// moderator gets rooms from the server admin (`POST /rooms/{roomId}/members` with a power
/// level) rather than making their own.
pub async fn create_room(
    app: &AppState,
    creator: &UserId,
    req: CreateRoomRequest,
) -> Result<CreateRoomResponse, ServiceError> {
    if Scope::of(app, creator) != Scope::Server {
        return Err(ServiceError::Forbidden(format!(
            "only the server admin ({}) creates rooms",
            app.config.admin_user()
        )));
    }
    let server_name = app.keys.server_name().clone();
    if creator.server_name() != server_name {
        return Err(ServiceError::Forbidden(format!("{creator} is not a user of this server")));
    }
    let plan = plan(&req, creator, server_name.as_str())?;
    let room_version = plan.version.to_string();
    let published = req.published;
    let keys = app.keys.clone();
    let creator = creator.to_owned();
    let room_id = app
        .db
        .write(move |conn| -> Result<_, StoreError> {
            let mut events = plan.events.into_iter();
            let Some((_, create_content)) = events.next() else {
                return Err(StoreError::Rejected("empty room plan".to_owned()));
            };
            let room = local::create_room(
                conn,
                &keys,
                &plan.version,
                &creator,
                published,
                create_content,
                events.collect(),
                now_ms(),
            )?;
            Ok(room.ctx.room_id.clone())
        })
        .await?;
    Ok(CreateRoomResponse { room_id: room_id.to_string(), room_version })
}

const SUMMARY_TYPES: [&str; 6] = [
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
];

fn summary(
    conn: &mut crate::store::DbConn,
    row: room_store::RoomRow,
) -> Result<RoomSummary, StoreError> {
    let entries = ev::current_of_types(conn, &row.room_id, &SUMMARY_TYPES)?;
    let ids: Vec<String> = entries.iter().map(|(_, _, id)| id.clone()).collect();
    let pdus = load_pdus(conn, &ids)?;
    let content_of = |t: &str| -> Option<Value> {
        pdus.iter()
            .find(|p| p.event_type.to_string() == t && p.state_key.as_deref() == Some(""))
            .and_then(|p| serde_json::from_str(p.content.get()).ok())
    };
    let text = |t: &str, field: &str| {
        content_of(t).and_then(|c| c.get(field).and_then(Value::as_str).map(str::to_owned))
    };
    let join_rules = content_of("m.room.join_rules").unwrap_or(Value::Null);
    let allow = join_rules
        .get("allow")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (joined, knocking) = crate::store::rooms::membership_counts(conn, &row.room_id)?;
    Ok(RoomSummary {
        name: text("m.room.name", "name"),
        topic: text("m.room.topic", "topic"),
        avatar_url: text("m.room.avatar", "url"),
        alias: text("m.room.canonical_alias", "alias"),
        join_rule: join_rules
            .get("join_rule")
            .and_then(Value::as_str)
            .unwrap_or("invite")
            .to_owned(),
        allow,
        history_visibility: text("m.room.history_visibility", "history_visibility"),
        joined_members: joined,
        knocking_members: knocking,
        forward_extremities: ev::extremity_count(conn, &row.room_id)?,
        published: row.is_public,
        room_id: row.room_id,
        room_version: row.room_version,
        creator: row.creator,
        created_ms: row.created_ms,
    })
}

/// One page of the rooms in scope, oldest first. The cursor is opaque to callers.
pub async fn list_rooms(
    app: &AppState,
    scope: &Scope,
    from: Option<String>,
    limit: i64,
) -> Result<(Vec<RoomSummary>, Option<String>), ServiceError> {
    let after = match from {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once('_')
                .and_then(|(ms, id)| ms.parse::<i64>().ok().map(|ms| (ms, id.to_owned())))
                .ok_or_else(|| ServiceError::Invalid(format!("invalid cursor {cursor:?}")))?,
        ),
    };
    let limit = limit.clamp(1, 500);
    let scope = scope.clone();
    Ok(app
        .db
        .read(move |conn| -> Result<_, StoreError> {
            let only = scope.rooms(conn)?;
            let rows = room_store::list(conn, only.as_deref(), after, limit + 1)?;
            let more = rows.len() as i64 > limit;
            let mut out = Vec::new();
            for row in rows.into_iter().take(limit as usize) {
                out.push(summary(conn, row)?);
            }
            let next = more
                .then(|| out.last().map(|r| format!("{}_{}", r.created_ms, r.room_id)))
                .flatten();
            Ok((out, next))
        })
        .await?)
}

/// A room with its full current state. A room out of scope is answered like one not hosted here.
pub async fn show_room(
    app: &AppState,
    scope: &Scope,
    room_id: String,
) -> Result<RoomDetail, ServiceError> {
    let shown = room_id.clone();
    let scope = scope.clone();
    app.db
        .read(move |conn| -> Result<_, StoreError> {
            if !scope.covers(conn, &room_id)? {
                return Ok(None);
            }
            let Some(row) = room_store::get(conn, &room_id)? else { return Ok(None) };
            let summary = summary(conn, row)?;
            let ids = crate::store::rooms::current_state_ids(conn, &room_id)?;
            // Only the fields shown, read a thousand events at a time: a room's state may hold
            // a hundred thousand members, and whole parsed events would cost tens of kilobytes
            // each.
            #[derive(serde::Deserialize)]
            struct Shown {
                #[serde(rename = "type")]
                event_type: String,
                #[serde(default)]
                state_key: String,
                sender: String,
                content: Value,
            }
            let mut state: Vec<StateEntry> = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(1_000) {
                for (event_id, text) in ev::pdus(conn, chunk)? {
                    let shown: Shown = serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("event {event_id}: {e}")))?;
                    state.push(StateEntry {
                        event_type: shown.event_type,
                        state_key: shown.state_key,
                        event_id,
                        sender: shown.sender,
                        content: shown.content,
                    });
                }
            }
            state.sort_by(|a, b| (&a.event_type, &a.state_key).cmp(&(&b.event_type, &b.state_key)));
            Ok(Some(RoomDetail { summary, state }))
        })
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no room {shown} is hosted here")))
}
