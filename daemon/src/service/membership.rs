//! make_knock/send_knock, make_join/send_join, make_leave/send_leave: one guard chain for the
//! three membership handshakes (KNOCK-SPEC B, C, F.34, H.44).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId,
    RoomVersionId, ServerName, UInt, UserId,
};
use serde_json::{Value, json};

use super::{AppState, ServiceError, joins, knocks};
use crate::{
    matrix::{EventTemplate, Pdu, Placement, auth, event, now_ms},
    room::{
        LoadedRoom, RoomCtx,
        accept::{self, Placing, Verdict},
        auth_events,
        effects::Source,
        format, load_pdus,
        signatures::{self, SignatureError},
    },
    store::{DbConn, StoreError, events as ev},
};

/// Which handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Knock,
    Join,
    Leave,
}

impl Kind {
    pub fn membership(self) -> &'static str {
        match self {
            Self::Knock => "knock",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// What a successful send answers with.
#[derive(Debug)]
pub enum Answer {
    Knock(Vec<Value>),
    Join(Box<serde_json::value::RawValue>),
    Leave,
}

/// The room as the engine last committed it, checked for existence and the origin's ACL
/// (KNOCK-SPEC B.6–7, C.14, H.45).
async fn room_for(
    app: &AppState,
    room_id: &str,
    origin: &ServerName,
) -> Result<LoadedRoom, ServiceError> {
    let room = app
        .rooms
        .snapshot(room_id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("room {room_id} is not hosted here")))?;
    knocks::check_acl_loaded(app, &room, origin).await?;
    Ok(room)
}

fn ts(ms: i64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ms.max(0) as u64).unwrap_or_default())
}

/// `GET make_*`: a template the origin's user may sign, after the auth rules passed against
/// current state. Nothing is stored. `versions` is `None` for make_leave (no `ver` there).
pub async fn make(
    app: &AppState,
    origin: &ServerName,
    kind: Kind,
    room_id: String,
    user_id: String,
    versions: Option<Vec<String>>,
) -> Result<(RoomVersionId, CanonicalJsonObject), ServiceError> {
    let user = UserId::parse(&user_id)
        .map_err(|e| ServiceError::Invalid(format!("invalid user ID {user_id:?}: {e}")))?;
    let room = room_for(app, &room_id, origin).await?;
    let version = room.ctx.version.clone();
    if let Some(versions) = &versions {
        let versions = if versions.is_empty() && kind == Kind::Join {
            vec!["1".to_owned()]
        } else {
            versions.clone()
        };
        if versions.is_empty() {
            return Err(ServiceError::MissingParam(
                "missing `ver`: the room versions the server supports".to_owned(),
            ));
        }
        if !versions.iter().any(|v| v == version.as_str()) {
            return Err(ServiceError::IncompatibleRoomVersion(version.to_string()));
        }
    }
    if user.server_name() != origin {
        return Err(ServiceError::Forbidden(format!(
            "{user} is not a user of the requesting server {origin}"
        )));
    }
    let mut content = json!({ "membership": kind.membership() });
    if kind == Kind::Join {
        let (keys, mut snapshot, joiner) = (app.keys.clone(), room.clone(), user.clone());
        let authoriser = app
            .db
            .read(move |conn| joins::restricted_authoriser(conn, &keys, &mut snapshot, &joiner))
            .await?;
        if let Some(authoriser) = authoriser {
            content["join_authorised_via_users_server"] = authoriser.as_str().into();
        }
    }
    let template = EventTemplate::state("m.room.member", user.as_str(), &user, content);
    let rules = room.ctx.rules.clone();
    let state = room.current.state.clone();
    let wanted =
        auth::auth_types(&template, &rules.authorization).map_err(ServiceError::Invalid)?;
    let auth_events = wanted
        .iter()
        .filter_map(|(t, k)| state.get(&(t.to_string(), k.clone())).cloned())
        .collect();
    let mut prev_events = room.extremities_by_depth();
    prev_events.truncate(event::MAX_PREV_EVENTS);
    let placement = Placement { room_id: Some(room.ctx.room_id.clone()), prev_events, auth_events };
    let mut pdu =
        event::unsigned_pdu(&template, &placement, ts(now_ms())).map_err(ServiceError::Invalid)?;
    pdu.insert("origin".to_owned(), CanonicalJsonValue::String(origin.to_string()));
    // KNOCK-SPEC B.11 / H.44: the auth rules against current state before answering, from
    // memory when it holds every event they read.
    let placeholder =
        OwnedEventId::try_from("$template").map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let probe = Pdu::from_canonical(placeholder, pdu.clone()).map_err(ServiceError::Invalid)?;
    let verdict = match auth_events::check_state_cached(&room, &probe, &state) {
        Some(verdict) => verdict,
        None => {
            let mut room = room;
            app.db
                .read(move |conn| auth_events::check_state(conn, &mut room, &probe, &state))
                .await?
        }
    };
    verdict.map_err(|e| {
        ServiceError::Forbidden(format!("you cannot {} this room: {e}", kind.membership()))
    })?;
    Ok((version, pdu))
}

/// KNOCK-SPEC C.15–C.19 (and the same for join and leave): shape and structure, all before any
/// auth check.
fn check_shape(
    room: &RoomCtx,
    origin: &ServerName,
    kind: Kind,
    path_event_id: &str,
    pdu: &CanonicalJsonObject,
) -> Result<OwnedEventId, ServiceError> {
    let field = |name: &str| pdu.get(name).and_then(CanonicalJsonValue::as_str);
    if field("room_id") != Some(room.room_id.as_str()) {
        return Err(ServiceError::Invalid(
            "the event's room_id does not match the path".to_owned(),
        ));
    }
    if field("type") != Some("m.room.member") {
        return Err(ServiceError::Invalid(format!(
            "send_{} only takes m.room.member events",
            kind.membership()
        )));
    }
    let Some(state_key) = field("state_key") else {
        return Err(ServiceError::Invalid("the event has no state_key".to_owned()));
    };
    let membership = pdu
        .get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|c| c.get("membership"))
        .and_then(CanonicalJsonValue::as_str);
    if membership != Some(kind.membership()) {
        return Err(ServiceError::Invalid(format!(
            "membership must be {}, not {}",
            kind.membership(),
            membership.unwrap_or("missing")
        )));
    }
    let sender = field("sender").unwrap_or_default();
    if state_key != sender {
        return Err(ServiceError::Invalid("state_key must be the sender".to_owned()));
    }
    let event_id = format::check_format(room, pdu).map_err(ServiceError::BadJson)?;
    let user =
        UserId::parse(sender).map_err(|e| ServiceError::Invalid(format!("invalid sender: {e}")))?;
    if user.server_name() != origin {
        return Err(ServiceError::Invalid(format!(
            "the sender {user} is not on the requesting server {origin}"
        )));
    }
    if event_id.as_str() != path_event_id {
        return Err(ServiceError::Invalid(format!(
            "the event ID is {event_id}, not {path_event_id}"
        )));
    }
    Ok(event_id)
}

/// `PUT send_*`: validate, check auth three ways, store, fan out, answer. One transaction: a 200
/// means the event is durable; any error means nothing was written.
pub async fn send(
    app: &AppState,
    origin: &ServerName,
    kind: Kind,
    room_id: String,
    path_event_id: String,
    mut pdu: CanonicalJsonObject,
) -> Result<Answer, ServiceError> {
    // send_knock took its token before its body was read; joins and leaves count against the
    // same limits (each may make the room's writer work out an old state for a stranger).
    if kind != Kind::Knock {
        app.admit_knock(origin.as_str(), &room_id)?;
    }
    // Possibly behind another knockd's writes: what is checked here against the room's state is
    // checked again inside the write.
    let snapshot = app
        .rooms
        .snapshot_unchecked(&room_id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("room {room_id} is not hosted here")))?;
    knocks::check_acl_loaded(app, &snapshot, origin).await?;
    let room = snapshot.ctx.clone();
    let event_id = check_shape(&room, origin, kind, &path_event_id, &pdu)?;
    // A restricted join authorised by one of our users carries our signature too (v8+ rules):
    // only when we would have offered it on make_join (checked here before signing anything, and
    // again inside the room write, where the state cannot change under us).
    let authoriser = match kind {
        Kind::Join => joins::authoriser_here(&pdu, app.keys.server_name()),
        _ => None,
    };
    let authorised_here = authoriser.is_some();
    let countersign = |pdu: &mut CanonicalJsonObject| {
        let (server, pair) = (app.keys.server_name().as_str(), app.keys.pair());
        ruma::signatures::sign_event(server, pair, pdu, &room.rules.redaction)
            .map_err(|e| ServiceError::Invalid(e.to_string()))
    };
    if let Some(authoriser) = &authoriser {
        let join =
            Pdu::from_canonical(event_id.clone(), pdu.clone()).map_err(ServiceError::BadJson)?;
        let (keys, authoriser) = (app.keys.clone(), authoriser.clone());
        let mut snapshot = snapshot;
        app.db
            .read(move |conn| {
                joins::check_authorised_join(conn, &keys, &mut snapshot, &join, &authoriser)
            })
            .await?;
        countersign(&mut pdu)?;
    }
    let (pdu, content_redacted) =
        signatures::verify_signatures(&app.keys, &app.remote_keys, &room, pdu).await.map_err(
            |e| match e {
                // Our database, not the event: 503, try again.
                SignatureError::KeyStore(why) => ServiceError::Store(StoreError::Pool(why)),
                SignatureError::Refused(why) => {
                    ServiceError::Invalid(format!("signature check failed: {why}"))
                }
            },
        )?;
    let mut pdu = pdu;
    if !authorised_here {
        // Our signature on what we accept (Synapse does not add it; it does no harm). Made
        // before the room's write: it needs nothing of the room's state, and the write is the
        // part that runs one at a time.
        countersign(&mut pdu)?;
    }
    let stored = Pdu::from_canonical(event_id.clone(), pdu).map_err(ServiceError::BadJson)?;
    let state_types = app.config.knock_room_state.clone();
    let max_pending = app.config.knock_limits.max_pending_per_room;
    let origin_name = origin.to_string();
    let origin = origin.to_owned();
    let asked = vec![event_id.clone()];
    app.rooms
        .write_events(&room_id, asked, move |txn| -> Result<Answer, ServiceError> {
            knocks::check_acl_in(txn, &origin)?;
            let outlier = match accept::stored(txn, &event_id)? {
                // C.26: an event we already accepted gets the same answer again.
                Some(row) if row.status == ev::ACCEPTED => {
                    let our = txn.keys.server_name().as_str();
                    let ctx = txn.room.ctx.clone();
                    return Ok(replay(txn.conn()?, kind, &ctx, &row, authorised_here, our)?);
                }
                // Known only as part of a gap's state: checked now as any new event.
                Some(row) if row.status == ev::OUTLIER => true,
                Some(row) => {
                    return Err(ServiceError::Forbidden(format!(
                        "{event_id} was already received and refused ({}); a new {} needs a \
                         new event",
                        row.status,
                        kind.membership()
                    )));
                }
                None => false,
            };
            if kind == Kind::Knock {
                let user = stored.state_key.as_deref().unwrap_or_default();
                knocks::check_pending_cap(txn, user, max_pending)?;
            }
            let refused = |stage: String| {
                ServiceError::Forbidden(format!("{} refused: {stage}", kind.membership()))
            };
            if let Some(authoriser) = &authoriser {
                let (conn, room, keys) = txn.parts()?;
                joins::check_authorised_join(conn, keys, room, &stored, authoriser)?;
            }
            let before = match accept::decide(txn, &stored)? {
                Verdict::Accepted { before } => before,
                Verdict::Rejected(why) => return Err(refused(why)),
                // Our decision: 403 and nothing stored, rather than a soft-fail (KNOCK-SPEC C.21).
                Verdict::SoftFailed { reason, .. } => return Err(refused(reason)),
                Verdict::MissingPrev(id) => {
                    return Err(refused(format!("unknown prev event {id}")));
                }
            };
            let source = Source::Handshake {
                origin: &origin_name,
                content_redacted,
                knock_state: &state_types,
            };
            let placing = Placing { outlier, merge_before: false };
            let effects = accept::store_accepted(txn, stored.clone(), &before, placing, source)?;
            match kind {
                Kind::Knock => Ok(Answer::Knock(effects.knock.unwrap_or_default())),
                Kind::Join => {
                    let group = before
                        .id
                        .ok_or_else(|| StoreError::Corrupt("join without state".to_owned()))?;
                    let our = txn.keys.server_name().as_str();
                    let ctx = txn.room.ctx.clone();
                    Ok(Answer::Join(joins::answer(
                        txn.conn()?,
                        &ctx,
                        group,
                        &stored,
                        authorised_here,
                        our,
                    )?))
                }
                Kind::Leave => Ok(Answer::Leave),
            }
        })
        .await
}

/// The answer to a retried send of an event we already accepted.
fn replay(
    conn: &mut DbConn,
    kind: Kind,
    room: &RoomCtx,
    row: &ev::EventRow,
    authorised_here: bool,
    our: &str,
) -> Result<Answer, StoreError> {
    match kind {
        Kind::Knock => {
            let knock =
                crate::store::knocks::by_event(conn, &row.event_id)?.ok_or(StoreError::NotFound)?;
            let state = serde_json::from_str(&knock.knock_room_state)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(Answer::Knock(state))
        }
        Kind::Join => {
            let before = ev::state_before(conn, &row.event_id)?
                .ok_or_else(|| StoreError::Corrupt("join without state".to_owned()))?;
            let stored = load_pdus(conn, std::slice::from_ref(&row.event_id))?
                .pop()
                .ok_or(StoreError::NotFound)?;
            Ok(Answer::Join(joins::answer(conn, room, before, &stored, authorised_here, our)?))
        }
        Kind::Leave => Ok(Answer::Leave),
    }
}
