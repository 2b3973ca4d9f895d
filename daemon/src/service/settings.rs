//! Room administration by local users: settings, members, power levels. Every change is a real
//! event sent by the acting user; the room's power levels decide through ruma's auth rules.

use knockd_shared::{EventIds, RoomSettings};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::{AppState, ServiceError, scope::Scope};
use crate::{
    matrix::{EventTemplate, now_ms},
    room::{RoomCtx, load_pdus, local},
    store::{DbConn, StoreError, events as ev, rooms, users},
};

fn forbidden(e: StoreError) -> ServiceError {
    match e {
        StoreError::Rejected(m) => ServiceError::Forbidden(m),
        e => e.into(),
    }
}

/// Runs `build` in one transaction with the room locked, appending and fanning out each event.
/// A room out of the actor's scope is refused before anything is built.
async fn change(
    app: &AppState,
    scope: Scope,
    room_id: String,
    build: impl FnOnce(&mut DbConn, &RoomCtx) -> Result<Vec<EventTemplate>, ServiceError>
    + Send
    + 'static,
) -> Result<EventIds, ServiceError> {
    let missing = format!("no room {room_id} is hosted here");
    let check = (room_id.clone(), missing.clone());
    app.db
        .read(move |conn| -> Result<(), ServiceError> {
            let (room_id, missing) = check;
            if crate::store::rooms::get(conn, &room_id)?.is_none() {
                return Err(ServiceError::NotFound(missing));
            }
            if !scope.covers(conn, &room_id)? {
                return Err(scope.refusal(
                    conn,
                    &room_id,
                    format!("you cannot change room {room_id}: you do not moderate it"),
                    missing,
                )?);
            }
            Ok(())
        })
        .await?;
    app.rooms
        .write(&room_id, move |txn| -> Result<EventIds, ServiceError> {
            let room = txn.room.ctx.clone();
            let templates = build(txn.conn()?, &room)?;
            let now = now_ms();
            let mut event_ids = Vec::new();
            for t in templates {
                let pdu = local::append(txn, &t, now, &[]).map_err(forbidden)?;
                event_ids.push(pdu.event_id.to_string());
            }
            Ok(EventIds { event_ids })
        })
        .await
        .map_err(|e| match e {
            ServiceError::Store(StoreError::NotFound) => ServiceError::NotFound(missing),
            e => e,
        })
}

/// Changes name, topic, avatar, alias or join rule.
pub async fn update(
    app: &AppState,
    actor: &UserId,
    room_id: String,
    s: RoomSettings,
) -> Result<EventIds, ServiceError> {
    let actor = actor.to_owned();
    let published = s.published;
    let server = app.keys.server_name().to_string();
    change(app, Scope::of(app, &actor), room_id, move |conn, room| {
        let mut out = Vec::new();
        let state = |t: &str, content: Value| EventTemplate::state(t, "", &actor, content);
        if let Some(name) = s.name {
            out.push(state("m.room.name", json!({ "name": name })));
        }
        if let Some(topic) = s.topic {
            out.push(state("m.room.topic", json!({ "topic": topic })));
        }
        if let Some(url) = s.avatar_url {
            if !url.starts_with("mxc://") {
                return Err(ServiceError::Invalid(format!(
                    "avatar_url {url:?} is not an mxc:// URL"
                )));
            }
            out.push(state("m.room.avatar", json!({ "url": url })));
        }
        if let Some(alias) = s.alias {
            let parsed = OwnedRoomAliasId::try_from(alias.as_str())
                .map_err(|e| ServiceError::Invalid(format!("alias {alias:?}: {e}")))?;
            if parsed.server_name().as_str() != server {
                return Err(ServiceError::Invalid(format!(
                    "alias {alias} is not on this server ({server})"
                )));
            }
            out.push(state("m.room.canonical_alias", json!({ "alias": alias })));
        }
        if let Some(rule) = s.join_rule {
            out.push(state(
                "m.room.join_rules",
                join_rules(&room.version, &room.rules, &rule, &s.allow)?,
            ));
        } else if !s.allow.is_empty() {
            return Err(ServiceError::Invalid(
                "`allow` needs join_rule knock_restricted".to_owned(),
            ));
        }
        if let Some(public) = published {
            rooms::set_public(conn, room.room_id.as_str(), public)?;
        }
        if out.is_empty() && published.is_none() {
            return Err(ServiceError::Invalid("nothing to change".to_owned()));
        }
        Ok(out)
    })
    .await
}

/// The `m.room.join_rules` content for a rule, checked against the room version.
pub fn join_rules(
    version: &ruma::RoomVersionId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    rule: &str,
    allow: &[String],
) -> Result<Value, ServiceError> {
    match rule {
        "knock" | "invite" | "public" if allow.is_empty() => Ok(json!({ "join_rule": rule })),
        "knock" | "invite" | "public" => Err(ServiceError::Invalid(format!(
            "`allow` only applies to knock_restricted, not {rule}"
        ))),
        "knock_restricted" => {
            if !rules.authorization.knock_restricted_join_rule {
                return Err(ServiceError::Invalid(format!(
                    "join_rule knock_restricted needs room version 10 or later; room version {version} does not have it"
                )));
            }
            let allow = allow
                .iter()
                .map(|r| {
                    RoomId::parse(r)
                        .map(|id| json!({ "type": "m.room_membership", "room_id": id }))
                        .map_err(|_| {
                            ServiceError::Invalid(format!("`allow` entry {r:?} is not a room ID"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({ "join_rule": "knock_restricted", "allow": allow }))
        }
        other => Err(ServiceError::Invalid(format!(
            "join_rule {other:?} is not one of knock, knock_restricted, invite, public"
        ))),
    }
}

fn local_user(app_server: &str, user_id: &str) -> Result<OwnedUserId, ServiceError> {
    let user =
        UserId::parse(user_id).map_err(|e| ServiceError::Invalid(format!("{user_id:?}: {e}")))?;
    if user.server_name().as_str() != app_server {
        return Err(ServiceError::Invalid(format!(
            "{user} is not a user of this server ({app_server})"
        )));
    }
    Ok(user)
}

fn power_levels_with(
    conn: &mut DbConn,
    room: &RoomCtx,
    actor: &UserId,
    user: &UserId,
    level: i64,
) -> Result<EventTemplate, ServiceError> {
    let id = ev::current(conn, room.room_id.as_str(), "m.room.power_levels", "")?
        .ok_or_else(|| ServiceError::NotFound("the room has no power levels".to_owned()))?;
    let pdu = load_pdus(conn, &[id])?.pop().ok_or(StoreError::NotFound)?;
    let mut content: Value =
        serde_json::from_str(pdu.content.get()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if !content["users"].is_object() {
        content["users"] = json!({});
    }
    content["users"][user.as_str()] = level.into();
    Ok(EventTemplate::state("m.room.power_levels", "", actor, content))
}

/// Makes a local user a member: invite by the actor, join by the user, and a power level if given.
pub async fn add_member(
    app: &AppState,
    actor: &UserId,
    room_id: String,
    user_id: String,
    level: Option<i64>,
) -> Result<EventIds, ServiceError> {
    let server = app.keys.server_name().to_string();
    let user = local_user(&server, &user_id)?;
    let actor = actor.to_owned();
    change(app, Scope::of(app, &actor), room_id, move |conn, room| {
        users::ensure_user(conn, user.as_str(), now_ms())?;
        let member = |sender: &UserId, membership: &str| {
            EventTemplate::state(
                "m.room.member",
                user.as_str(),
                sender,
                json!({ "membership": membership }),
            )
        };
        let mut out = vec![member(&actor, "invite"), member(&user, "join")];
        if let Some(level) = level {
            out.push(power_levels_with(conn, room, &actor, &user, level)?);
        }
        Ok(out)
    })
    .await
}

/// Removes a local member (the actor kicks, or the user leaves).
pub async fn remove_member(
    app: &AppState,
    actor: &UserId,
    room_id: String,
    user_id: String,
) -> Result<EventIds, ServiceError> {
    let server = app.keys.server_name().to_string();
    let user = local_user(&server, &user_id)?;
    let actor = actor.to_owned();
    change(app, Scope::of(app, &actor), room_id, move |_, _| {
        Ok(vec![EventTemplate::state(
            "m.room.member",
            user.as_str(),
            &actor,
            json!({ "membership": "leave" }),
        )])
    })
    .await
}

/// Sets one user's power level.
pub async fn set_power_level(
    app: &AppState,
    actor: &UserId,
    room_id: String,
    user_id: String,
    level: i64,
) -> Result<EventIds, ServiceError> {
    let user =
        UserId::parse(&user_id).map_err(|e| ServiceError::Invalid(format!("{user_id:?}: {e}")))?;
    let actor = actor.to_owned();
    change(app, Scope::of(app, &actor), room_id, move |conn, room| {
        Ok(vec![power_levels_with(conn, room, &actor, &user, level)?])
    })
    .await
}
