//! Joins after approval (KNOCK-SPEC H.44): the send_join answer, and restricted joins that knockd
//! authorises for `knock_restricted` rooms whose allow rooms it hosts — on make_join, and checked
//! again on send_join before our signature goes on the join.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, ServerName, UserId};
use serde_json::{Value, json, value::RawValue};

use super::ServiceError;
use crate::{
    matrix::{EventTemplate, KeyRing, Pdu, now_ms},
    room::{LoadedRoom, RoomCtx, load_pdus, local, state_before::Mode},
    store::{DbConn, StoreError, events as ev, rooms, state},
};

/// The send_join answer: the state before the join and its auth chain, full state always
/// (`members_omitted: false`), plus the event when we signed it as the authorising server.
/// Assembled from the stored PDU texts, never parsed into trees: in a room of 10,000 members
/// the answer is megabytes, and a tree of it would be ten times that.
pub fn answer(
    conn: &mut DbConn,
    room: &RoomCtx,
    before: i64,
    join: &Pdu,
    signed_here: bool,
    our_server: &str,
) -> Result<Box<RawValue>, StoreError> {
    let state_ids: Vec<String> = state::full_state(conn, before)?.into_values().collect();
    let mut auth: Vec<String> = join.auth_events.iter().map(|a| a.to_string()).collect();
    let state = texts_and_auth(conn, room, &state_ids, &mut auth)?;
    // The chain is the few events the state's events are authorised by: parsed is fine.
    let chain: Vec<String> =
        super::reads::auth_chain(conn, room, auth)?.iter().map(|p| p.to_json_string()).collect();
    let mut servers = rooms::joined_servers(conn, room.room_id.as_str())?;
    if !servers.iter().any(|s| s == our_server) {
        servers.push(our_server.to_owned());
    }
    let mut head = json!({
        "origin": our_server,
        "members_omitted": false,
        "servers_in_room": servers,
    });
    if signed_here {
        head["event"] = serde_json::to_value(&*join.json).unwrap_or(Value::Null);
    }
    let head = head.to_string();
    let mut body = String::with_capacity(
        head.len() + 40 + state.iter().chain(&chain).map(|t| t.len() + 1).sum::<usize>(),
    );
    body.push_str("{\"state\":[");
    body.push_str(&state.join(","));
    body.push_str("],\"auth_chain\":[");
    body.push_str(&chain.join(","));
    body.push_str("],");
    body.push_str(head.strip_prefix('{').unwrap_or(&head));
    RawValue::from_string(body).map_err(|e| StoreError::Corrupt(format!("send_join answer: {e}")))
}

/// The stored texts of these events, and their auth event IDs appended to `auth`.
fn texts_and_auth(
    conn: &mut DbConn,
    room: &RoomCtx,
    ids: &[String],
    auth: &mut Vec<String>,
) -> Result<Vec<String>, StoreError> {
    #[derive(serde::Deserialize)]
    struct AuthEvents {
        #[serde(default)]
        auth_events: Vec<String>,
    }
    let rows = ev::room_pdus(conn, room.room_id.as_str(), ids, ev::AUTHORISED)?;
    let mut texts = Vec::with_capacity(rows.len());
    for (id, text) in rows {
        let parsed: AuthEvents = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
        auth.extend(parsed.auth_events);
        texts.push(text);
    }
    Ok(texts)
}

/// The user a join names in `join_authorised_via_users_server`, when that user is one of ours.
pub fn authoriser_here(pdu: &CanonicalJsonObject, ours: &ServerName) -> Option<OwnedUserId> {
    pdu.get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|c| c.get("join_authorised_via_users_server"))
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|u| UserId::parse(u).ok())
        .filter(|u| u.server_name() == ours)
}

/// Whether a user may join a room directly, by the room's current state and the allow rooms we
/// host.
#[derive(Debug, PartialEq, Eq)]
enum Qualification {
    /// The join rule is not restricted (or the room version has no restricted joins).
    NotRestricted,
    /// Invited or joined already: the auth rules need no authoriser.
    Member,
    /// Joined to one of the allow rooms, by our state: a local user may vouch for the join.
    InAllowRoom,
    /// None of these.
    No,
}

fn qualification(
    conn: &mut DbConn,
    room: &RoomCtx,
    user: &UserId,
) -> Result<Qualification, StoreError> {
    let room_id = room.room_id.as_str();
    let Some(rules_id) = ev::current(conn, room_id, "m.room.join_rules", "")? else {
        return Ok(Qualification::NotRestricted);
    };
    let join_rules: Value = load_pdus(conn, &[rules_id])?
        .pop()
        .and_then(|p| serde_json::from_str(p.content.get()).ok())
        .unwrap_or(Value::Null);
    let rule = join_rules["join_rule"].as_str().unwrap_or_default();
    if !(rule == "knock_restricted" || rule == "restricted")
        || !room.rules.authorization.restricted_join_rule
    {
        return Ok(Qualification::NotRestricted);
    }
    let membership = current_membership(conn, room_id, user.as_str())?;
    if matches!(membership.as_deref(), Some("invite" | "join")) {
        return Ok(Qualification::Member);
    }
    let allow_rooms = join_rules["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room_membership")
        .filter_map(|e| e["room_id"].as_str());
    for allow in allow_rooms {
        if current_membership(conn, allow, user.as_str())?.as_deref() == Some("join") {
            return Ok(Qualification::InAllowRoom);
        }
    }
    Ok(Qualification::No)
}

/// Whether `candidate`, a local user, may vouch for `user`'s join now: joined, with the power to
/// invite (an invite from them passes the auth rules against current state).
fn may_authorise(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &mut LoadedRoom,
    candidate: &UserId,
    user: &UserId,
) -> Result<bool, StoreError> {
    if candidate.server_name() != keys.server_name()
        || current_membership(conn, room.ctx.room_id.as_str(), candidate.as_str())?.as_deref()
            != Some("join")
    {
        return Ok(false);
    }
    let invite = EventTemplate::state(
        "m.room.member",
        user.as_str(),
        candidate,
        json!({ "membership": "invite" }),
    );
    match local::build(conn, room, keys, &invite, now_ms(), Mode::Look) {
        Ok(_) => Ok(true),
        Err(StoreError::Rejected(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// For make_join in a restricted room (`knock_restricted`, v10+): a local user with invite power
/// who vouches that `user` is in one of the allow rooms we host. `None` when the join needs no
/// authoriser (invited or already joined), the room is not restricted, or the user qualifies
/// for nothing (the auth rules then refuse the join); 400 `M_UNABLE_TO_AUTHORISE_JOIN` when the
/// user qualifies but nobody here can authorise.
pub fn restricted_authoriser(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &mut LoadedRoom,
    user: &UserId,
) -> Result<Option<OwnedUserId>, ServiceError> {
    if qualification(conn, &room.ctx, user)? != Qualification::InAllowRoom {
        return Ok(None);
    }
    // A joined local member who may invite: try the creator first, then the others.
    let room_id = room.ctx.room_id.to_string();
    let room_id = room_id.as_str();
    let creator = rooms::get(conn, room_id)?.map(|r| r.creator);
    let mut candidates = rooms::local_joined_members(conn, room_id, keys.server_name().as_str())?;
    candidates.sort_by_key(|c| Some(c) != creator.as_ref());
    for candidate in candidates {
        let Ok(candidate) = UserId::parse(&candidate) else { continue };
        if may_authorise(conn, keys, room, &candidate, user)? {
            return Ok(Some(candidate));
        }
    }
    Err(ServiceError::UnableToAuthoriseJoin(
        "no local user with invite power can authorise this join".to_owned(),
    ))
}

/// send_join of a join that names `authoriser`, one of our users, as the server vouching for it:
/// our signature goes on it only if we would have offered it on make_join. Checked inside the
/// room write, against current state: the room is restricted, the joiner is invited or joined
/// already or joined to an allow room we host, the authoriser is joined and may invite, and the
/// authoriser's membership is among the join's auth events (other servers check it there).
pub fn check_authorised_join(
    conn: &mut DbConn,
    keys: &KeyRing,
    room: &mut LoadedRoom,
    join: &Pdu,
    authoriser: &UserId,
) -> Result<(), ServiceError> {
    let refuse = |why: String| Err(ServiceError::Forbidden(format!("join refused: {why}")));
    let room_id = room.ctx.room_id.clone();
    match qualification(conn, &room.ctx, &join.sender)? {
        Qualification::Member | Qualification::InAllowRoom => {}
        Qualification::NotRestricted => {
            return refuse(format!("{room_id} does not admit restricted joins"));
        }
        Qualification::No => {
            return refuse(format!(
                "{} is not in any room that allows joining {room_id}",
                join.sender
            ));
        }
    }
    if !may_authorise(conn, keys, room, authoriser, &join.sender)? {
        return refuse(format!("{authoriser} cannot authorise joins to {room_id}"));
    }
    let auth_ids: Vec<String> = join.auth_events.iter().map(|id| id.to_string()).collect();
    let cited = load_pdus(conn, &auth_ids)?.into_iter().any(|p| {
        p.event_type.to_string() == "m.room.member"
            && p.state_key.as_deref() == Some(authoriser.as_str())
            && p.membership().as_deref() == Some("join")
    });
    if !cited {
        return refuse(format!("the join does not cite {authoriser}'s membership"));
    }
    Ok(())
}

fn current_membership(
    conn: &mut DbConn,
    room_id: &str,
    user: &str,
) -> Result<Option<String>, StoreError> {
    let Some(id) = ev::current(conn, room_id, "m.room.member", user)? else { return Ok(None) };
    Ok(load_pdus(conn, &[id])?.pop().and_then(|p| p.membership()))
}
