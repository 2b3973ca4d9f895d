//! Approve and deny (KNOCK-SPEC D, E): decisions recorded with who, when and why; approvals
//! delivered as invites by the sender, denials as kicks or bans fanned out to the room's servers.

use knockd_shared::{Decision, ErrorBody};
use ruma::{OwnedUserId, UserId};
use serde_json::json;

use super::{AppState, ServiceError, scope::Scope};
use crate::{
    matrix::{EventTemplate, now_ms},
    room::{local, state_before::Mode},
    store::{DbConn, StoreError, decisions, knocks, outbox},
};

/// An invite waiting in the outbox.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InviteJob {
    pub knock_id: i64,
    pub decision_id: i64,
    /// The invite event, once built for its first attempt: every retry (after a timeout, a
    /// crash) sends this same event, so the knocker's server never gets two invites for one
    /// approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<ruma::CanonicalJsonObject>,
}

pub fn decision_view(row: decisions::DecisionRow, user_id: Option<String>) -> Decision {
    Decision {
        id: row.decision_id,
        knock_id: row.knock_id,
        room_id: row.room_id,
        user_id,
        actor: row.actor,
        action: row.action,
        reason: row.reason,
        decided_at_ms: row.decided_ms,
        event_id: row.event_id,
        delivery: row.delivery,
        delivery_error: row.delivery_error,
    }
}

/// The room of a knock the actor may decide. A knock of a room out of scope is refused before
/// anything else about it is told (its status, who decided it).
async fn room_of(app: &AppState, scope: &Scope, knock_id: i64) -> Result<String, ServiceError> {
    let scope = scope.clone();
    app.db
        .read(move |conn| {
            let not_found = || ServiceError::NotFound(format!("no knock {knock_id}"));
            let room_id = knocks::get(conn, knock_id)?.ok_or_else(not_found)?.room_id;
            if !scope.covers(conn, &room_id)? {
                return Err(scope.refusal(
                    conn,
                    &room_id,
                    format!("you cannot decide knock {knock_id}: you do not moderate its room"),
                    format!("no knock {knock_id}"),
                )?);
            }
            Ok(room_id)
        })
        .await
}

/// The knock, still pending, read again inside its room's write (decisions in one room are
/// serialised there).
fn pending_knock(conn: &mut DbConn, knock_id: i64) -> Result<knocks::KnockRow, ServiceError> {
    let knock = knocks::get(conn, knock_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no knock {knock_id}")))?;
    if knock.status != knocks::PENDING {
        return Err(already_decided(conn, &knock)?);
    }
    Ok(knock)
}

fn already_decided(
    conn: &mut DbConn,
    knock: &knocks::KnockRow,
) -> Result<ServiceError, StoreError> {
    let by = decisions::latest_for_knock(conn, knock.knock_id)?
        .map(|d| format!(" by {} ({})", d.actor, d.action))
        .unwrap_or_default();
    Ok(ServiceError::Conflict(format!("knock {} is already {}{by}", knock.knock_id, knock.status)))
}

fn forbidden(what: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| match e {
        StoreError::Rejected(m) => ServiceError::Forbidden(format!("you cannot {what}: {m}")),
        e => e.into(),
    }
}

fn invite_template(
    actor: &UserId,
    user: &str,
    reason: Option<&str>,
) -> Result<EventTemplate, ServiceError> {
    let user = UserId::parse(user).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let mut content = json!({ "membership": "invite" });
    if let Some(r) = reason {
        content["reason"] = r.into();
    }
    Ok(EventTemplate::state("m.room.member", user.as_str(), actor, content))
}

/// Records an approval; the sender builds and delivers the invite.
pub async fn approve(
    app: &AppState,
    actor: &UserId,
    knock_id: i64,
    reason: Option<String>,
) -> Result<Decision, ServiceError> {
    let scope = Scope::of(app, actor);
    let room_id = room_of(app, &scope, knock_id).await?;
    let actor: OwnedUserId = actor.to_owned();
    let (decision, knocked_ms) = app
        .rooms
        .write(&room_id, move |txn| -> Result<(Decision, i64), ServiceError> {
            let knock = pending_knock(txn.conn()?, knock_id)?;
            let now = now_ms();
            // KNOCK-SPEC D.27: only a joined member with invite power approves. Checked now with
            // a provisional invite; the real one is built at delivery time.
            let template = invite_template(&actor, &knock.user_id, reason.as_deref())?;
            let (conn, room, keys) = txn.parts()?;
            local::build(conn, room, keys, &template, now, Mode::Look)
                .map_err(forbidden("approve (invite)"))?;
            let conn = txn.conn()?;
            if !knocks::transition(
                conn,
                knock_id,
                &[knocks::PENDING],
                knocks::DELIVERY_PENDING,
                now,
            )? {
                return Err(ServiceError::Conflict(format!(
                    "knock {knock_id} was decided concurrently"
                )));
            }
            let id = decisions::insert(
                conn,
                knock_id,
                &knock.room_id,
                actor.as_str(),
                decisions::APPROVE,
                reason.as_deref(),
                None,
                decisions::PENDING,
                now,
            )?;
            let server =
                knock.user_id.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
            let job = serde_json::to_string(&InviteJob { knock_id, decision_id: id, invite: None })
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            outbox::enqueue(conn, &server, outbox::KIND_INVITE, &job, &knock.room_id, now)?;
            let row = decisions::get(conn, id)?.ok_or(StoreError::NotFound)?;
            Ok((decision_view(row, Some(knock.user_id)), knock.received_ms))
        })
        .await?;
    announce(app, &decision, knocked_ms);
    Ok(decision)
}

/// Kicks (or bans) the knocker: the event is stored, fanned out to the room's servers and pushed
/// to the knocker's server best-effort (KNOCK-SPEC E, H.48).
pub async fn deny(
    app: &AppState,
    actor: &UserId,
    knock_id: i64,
    reason: Option<String>,
    ban: bool,
) -> Result<Decision, ServiceError> {
    let scope = Scope::of(app, actor);
    let room_id = room_of(app, &scope, knock_id).await?;
    let actor: OwnedUserId = actor.to_owned();
    let (decision, knocked_ms) = app
        .rooms
        .write(&room_id, move |txn| -> Result<(Decision, i64), ServiceError> {
            let knock = pending_knock(txn.conn()?, knock_id)?;
            let now = now_ms();
            let (status, action) = if ban {
                (knocks::BANNED, decisions::BAN)
            } else {
                (knocks::DENIED, decisions::DENY)
            };
            if !knocks::transition(txn.conn()?, knock_id, &[knocks::PENDING], status, now)? {
                return Err(ServiceError::Conflict(format!(
                    "knock {knock_id} was decided concurrently"
                )));
            }
            let mut content = json!({ "membership": if ban { "ban" } else { "leave" } });
            if let Some(r) = &reason {
                content["reason"] = r.as_str().into();
            }
            let template = EventTemplate::state("m.room.member", &knock.user_id, &actor, content);
            let what = if ban { "ban" } else { "deny (kick)" };
            let knocker_server =
                knock.user_id.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
            let pdu =
                local::append(txn, &template, now, &[knocker_server]).map_err(forbidden(what))?;
            let conn = txn.conn()?;
            let id = decisions::insert(
                conn,
                knock_id,
                &knock.room_id,
                actor.as_str(),
                action,
                reason.as_deref(),
                Some(pdu.event_id.as_str()),
                "queued",
                now,
            )?;
            let row = decisions::get(conn, id)?.ok_or(StoreError::NotFound)?;
            Ok((decision_view(row, Some(knock.user_id)), knock.received_ms))
        })
        .await?;
    announce(app, &decision, knocked_ms);
    Ok(decision)
}

/// Wakes the sender, tells live UIs and counts a decision just committed on a knock that arrived
/// at `knocked_ms`.
fn announce(app: &AppState, decision: &Decision, knocked_ms: i64) {
    app.outbox_wake.notify_one();
    let waited = (decision.decided_at_ms - knocked_ms).max(0) as u64;
    app.metrics.decision(&decision.action, std::time::Duration::from_millis(waited));
    let status = match decision.action.as_str() {
        decisions::APPROVE => knocks::DELIVERY_PENDING,
        decisions::BAN => knocks::BANNED,
        _ => knocks::DENIED,
    };
    app.publish("decision", Some(decision.knock_id), Some(&decision.room_id), Some(status));
}

/// Error body for one failed item of a bulk request.
pub fn error_body(e: ServiceError) -> ErrorBody {
    let api: crate::error::ApiError = e.into();
    let (_, errcode) = api.status_and_code();
    ErrorBody { errcode: errcode.to_owned(), error: api.to_string() }
}
