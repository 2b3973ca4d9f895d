//! Delivering an approval: build and sign the invite against the room's state at that moment,
//! `PUT /v2/invite` to the knocker's server, check what comes back, and only then store it
//! (KNOCK-SPEC D.28–D.29, H.43; DESIGN pitfall 12).

use reqwest::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, ServerName, SigningKeyAlgorithm, UserId,
    serde::{Base64, base64::Standard},
};
use serde_json::{Value, json};

use super::{AppState, ServiceError, moderation::InviteJob};
use crate::matrix::remote_keys::KeyFetchError;
use crate::{
    matrix::{
        EventTemplate, Pdu,
        client::{FedError, encode_segment},
        event, now_ms,
    },
    room::{
        RoomCtx,
        accept::{self, Placing, Verdict},
        auth_events,
        effects::Source,
        load_pdus, local,
        state_before::Mode,
    },
    store::{DbConn, StoreError, decisions, events as ev, knocks, outbox},
};

/// How a delivery attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done (delivered, or dropped for a reason recorded on the decision).
    Done,
    /// Try again later (429, 5xx, network).
    Retry(String),
}

/// The state types an invitee is shown, besides the inviter's member event (H.43).
const INVITE_STATE: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

struct Prepared {
    room: RoomCtx,
    invite: Pdu,
    invite_room_state: Vec<Value>,
    user: OwnedUserId,
}

enum Prep {
    Ready(Box<Prepared>),
    Dropped,
}

/// The queued invite being delivered, under the destination lease it was taken with.
#[derive(Clone, Debug)]
struct Queued {
    lease: outbox::Lease,
    item_id: i64,
}

/// Ends the delivery; commits only while the lease is still ours.
fn finish(
    conn: &mut DbConn,
    queued: &Queued,
    job: &InviteJob,
    knock_status: Option<&str>,
    delivery: &str,
    event_id: Option<&str>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    outbox::delete_item(conn, &queued.lease, queued.item_id)?;
    if let Some(status) = knock_status {
        knocks::transition(conn, job.knock_id, &[knocks::DELIVERY_PENDING], status, now_ms())?;
    }
    decisions::set_delivery(conn, job.decision_id, delivery, event_id, error)
}

/// The approval ends as "approve failed", with the reason on the decision.
fn fail(conn: &mut DbConn, queued: &Queued, job: &InviteJob, why: &str) -> Result<(), StoreError> {
    finish(conn, queued, job, Some(knocks::APPROVE_FAILED), decisions::FAILED, None, Some(why))
}

/// Delivers one queued invite.
pub async fn deliver_invite(
    app: &AppState,
    lease: &outbox::Lease,
    item: &outbox::Item,
) -> Result<Outcome, ServiceError> {
    let queued = Queued { lease: lease.clone(), item_id: item.item_id };
    let outcome = attempt(app, queued, item).await;
    if let (Ok(Outcome::Done), Ok(job)) =
        (&outcome, serde_json::from_str::<InviteJob>(&item.payload))
    {
        app.publish("decision", Some(job.knock_id), item.room_id.as_deref(), None);
    }
    outcome
}

async fn attempt(
    app: &AppState,
    queued: Queued,
    item: &outbox::Item,
) -> Result<Outcome, ServiceError> {
    let job: InviteJob =
        serde_json::from_str(&item.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let room_id = match &item.room_id {
        Some(room_id) => room_id.clone(),
        None => {
            let knock_id = job.knock_id;
            app.db
                .read(move |conn| knocks::get(conn, knock_id))
                .await?
                .ok_or(StoreError::NotFound)?
                .room_id
        }
    };
    let prep_job = job.clone();
    let prep_queued = queued.clone();
    let prep = app
        .rooms
        .write(&room_id, move |txn| -> Result<Prep, ServiceError> {
            let (job, queued) = (prep_job, prep_queued);
            let (conn, txn_room, keys) = txn.parts()?;
            let knock = knocks::get(conn, job.knock_id)?.ok_or(StoreError::NotFound)?;
            let decision = decisions::get(conn, job.decision_id)?.ok_or(StoreError::NotFound)?;
            if knock.status != knocks::DELIVERY_PENDING {
                // Rescinded, banned or joined meanwhile: the approval is dropped and the admin told.
                let why = format!("the knock is now {}", knock.status);
                finish(conn, &queued, &job, None, decisions::DROPPED, None, Some(&why))?;
                return Ok(Prep::Dropped);
            }
            let room = txn_room.ctx.clone();
            let actor =
                UserId::parse(&decision.actor).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let user =
                UserId::parse(&knock.user_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut content = json!({ "membership": "invite" });
            if let Some(r) = &decision.reason {
                content["reason"] = r.as_str().into();
            }
            // Built and kept by an earlier attempt: the same event again, as long as the room as
            // it is now still allows it (else a new one: the old one would never be accepted).
            let mut kept = None;
            if let Some(json) = &job.invite {
                let id = event::event_id(json, &room.rules).map_err(StoreError::Corrupt)?;
                let pdu = Pdu::from_canonical(id, json.clone()).map_err(StoreError::Corrupt)?;
                let current = txn_room.current.state.clone();
                match auth_events::check_state(conn, txn_room, &pdu, &current)? {
                    Ok(()) => kept = Some(pdu),
                    Err(why) => {
                        tracing::info!(event_id = %pdu.event_id, %why, "kept invite outdated; a new one");
                    }
                }
            }
            let invite = match kept {
                Some(pdu) => pdu,
                None => {
                    let template =
                        EventTemplate::state("m.room.member", user.as_str(), &actor, content);
                    let built = local::build(conn, txn_room, keys, &template, now_ms(), Mode::Look);
                    let invite = match built {
                        Ok((p, _)) => p,
                        Err(StoreError::Rejected(why)) => {
                            fail(conn, &queued, &job, &why)?;
                            return Ok(Prep::Dropped);
                        }
                        Err(e) => return Err(e.into()),
                    };
                    // Kept before it leaves (this write commits first).
                    let kept = InviteJob { invite: Some((*invite.json).clone()), ..job.clone() };
                    let payload = serde_json::to_string(&kept)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    outbox::set_payload(conn, &queued.lease, queued.item_id, &payload)?;
                    invite
                }
            };
            let invite_room_state = invite_state(conn, room.room_id.as_str(), actor.as_str())?;
            Ok(Prep::Ready(Box::new(Prepared { room, invite, invite_room_state, user })))
        })
        .await?;
    let Prep::Ready(prepared) = prep else { return Ok(Outcome::Done) };
    let Prepared { room, invite, invite_room_state, user } = *prepared;

    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        encode_segment(room.room_id.as_str()),
        encode_segment(invite.event_id.as_str())
    );
    let body = json!({
        "room_version": room.version.as_str(),
        "event": &*invite.json,
        "invite_room_state": invite_room_state,
    });
    let body = serde_json::to_vec(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let server = user.server_name().to_owned();
    let answer =
        app.federation.request(Method::PUT, &server, &path, Some(body), true, 1024 * 1024).await;
    let failed = |app: &AppState, why: String| {
        let (job, queued) = (job.clone(), queued.clone());
        let db = app.db.clone();
        async move {
            db.write(move |conn| -> Result<(), StoreError> { fail(conn, &queued, &job, &why) })
                .await
        }
    };
    let bytes = match answer {
        Ok(b) => b,
        Err(e) if e.is_transient() => return Ok(Outcome::Retry(e.to_string())),
        Err(FedError::Status { errcode, error, status, .. }) => {
            failed(app, format!("{errcode}: {error} ({status})")).await?;
            return Ok(Outcome::Done);
        }
        Err(e) => {
            failed(app, e.to_string()).await?;
            return Ok(Outcome::Done);
        }
    };
    let signed = match check_countersigned(app, &room, &invite, &server, &bytes).await {
        Ok(p) => p,
        // Our key store did not answer: nothing is known about the answer; the same invite again.
        Err(Countersign::KeyStore(why)) => return Ok(Outcome::Retry(why)),
        Err(Countersign::Wrong(why)) => {
            failed(app, format!("the invite came back wrong: {why}")).await?;
            return Ok(Outcome::Done);
        }
    };
    app.rooms
        .write(room.room_id.as_str(), move |txn| -> Result<(), ServiceError> {
            // Only the lease holder stores the outcome (everything below rolls back otherwise).
            outbox::hold(txn.conn()?, &queued.lease)?;
            let knock = knocks::get(txn.conn()?, job.knock_id)?.ok_or(StoreError::NotFound)?;
            if knock.status != knocks::DELIVERY_PENDING {
                let why =
                    format!("the knock became {} while the invite was on its way", knock.status);
                finish(txn.conn()?, &queued, &job, None, decisions::DROPPED, None, Some(&why))?;
                return Ok(());
            }
            let before = match accept::decide(txn, &signed)? {
                Verdict::Accepted { before } => before,
                Verdict::Rejected(why) | Verdict::SoftFailed { reason: why, .. } => {
                    let why = format!("the room changed before the invite could be stored: {why}");
                    fail(txn.conn()?, &queued, &job, &why)?;
                    return Ok(());
                }
                Verdict::MissingPrev(id) => {
                    return Err(StoreError::Corrupt(format!("prev event {id} vanished")).into());
                }
            };
            let event_id = signed.event_id.to_string();
            let placing = Placing { outlier: false, merge_before: false };
            accept::store_accepted(txn, signed, &before, placing, Source::Local { extra: &[] })?;
            finish(
                txn.conn()?,
                &queued,
                &job,
                Some(knocks::APPROVED),
                decisions::DELIVERED,
                Some(event_id.as_str()),
                None,
            )?;
            Ok(())
        })
        .await?;
    Ok(Outcome::Done)
}

/// Full PDUs of the invite state plus the inviter's member event.
fn invite_state(conn: &mut DbConn, room_id: &str, inviter: &str) -> Result<Vec<Value>, StoreError> {
    let mut ids: Vec<String> = ev::current_of_types(conn, room_id, &INVITE_STATE)
        .map(|v| v.into_iter().map(|(_, _, id)| id).collect())?;
    ids.extend(ev::current(conn, room_id, "m.room.member", inviter)?);
    Ok(load_pdus(conn, &ids)?
        .into_iter()
        .map(|p| serde_json::to_value(&*p.json).unwrap_or(Value::Null))
        .collect())
}

/// Why an invite's answer was not taken.
enum Countersign {
    /// Not our event with a valid signature of the invitee's server added.
    Wrong(String),
    /// Our key store did not answer.
    KeyStore(String),
}

impl From<String> for Countersign {
    fn from(why: String) -> Self {
        Self::Wrong(why)
    }
}

impl From<&str> for Countersign {
    fn from(why: &str) -> Self {
        Self::Wrong(why.to_owned())
    }
}

/// The returned event must be ours with only the invitee server's signature added, and that one
/// valid. What we store and relay is our own event plus that signature: nothing else of the
/// answer is taken over. Its `unsigned` is ignored rather than refused (Synapse puts `age` and
/// its own `invite_room_state` there; it is not covered by any signature); any other change,
/// to our signature or by a third server's, is refused.
async fn check_countersigned(
    app: &AppState,
    room: &RoomCtx,
    ours: &Pdu,
    server: &ServerName,
    bytes: &[u8],
) -> Result<Pdu, Countersign> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let event = value.get("event").cloned().ok_or("no `event` in the answer")?;
    let returned: CanonicalJsonObject =
        serde_json::from_value(event).map_err(|e| format!("not canonical JSON: {e}"))?;
    let strip = |o: &CanonicalJsonObject| {
        let mut o = o.clone();
        o.remove("signatures");
        o.remove("unsigned");
        o
    };
    if strip(&returned) != strip(&ours.json) {
        return Err(Countersign::Wrong("fields other than signatures changed".to_owned()));
    }
    let signatures = |o: &CanonicalJsonObject| -> CanonicalJsonObject {
        o.get("signatures").and_then(CanonicalJsonValue::as_object).cloned().unwrap_or_default()
    };
    let (mut added, original) = (signatures(&returned), signatures(&ours.json));
    for (signer, sigs) in &original {
        if added.remove(signer).as_ref() != Some(sigs) {
            return Err(Countersign::Wrong(format!("the signature of {signer} changed")));
        }
    }
    if let Some(other) = added.keys().find(|s| *s != server.as_str()) {
        return Err(Countersign::Wrong(format!(
            "signed by {other}, a server the invite was not sent to"
        )));
    }
    let id = event::event_id(&returned, &room.rules)?;
    if id != ours.event_id {
        return Err(Countersign::Wrong("the event ID changed".to_owned()));
    }
    let theirs = returned
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .ok_or_else(|| format!("not signed by {server}"))?
        .clone();
    let redacted = event::redact(returned.clone(), &room.rules)?;
    let signing_bytes = ruma::signatures::to_canonical_json_string_for_signing(&redacted)
        .map_err(|e| e.to_string())?;
    let ts = event::int_field(&returned, "origin_server_ts").unwrap_or(0);
    let mut last = format!("no usable signature from {server}");
    for (key_id, sig) in theirs.iter().filter(|(k, _)| k.starts_with("ed25519:")) {
        let Some(sig) = sig.as_str() else { continue };
        let key = match app.remote_keys.key(server, key_id, ts.min(now_ms())).await {
            Ok(k) => k,
            Err(KeyFetchError::Store(why)) => return Err(Countersign::KeyStore(why)),
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let (Ok(key), Ok(sig)) = (Base64::<Standard>::parse(&key), Base64::<Standard>::parse(sig))
        else {
            continue;
        };
        match ruma::signatures::verify_canonical_json_bytes(
            &SigningKeyAlgorithm::Ed25519,
            key.as_bytes(),
            sig.as_bytes(),
            signing_bytes.as_bytes(),
        ) {
            Ok(()) => {
                let mut stored = (*ours.json).clone();
                let mut all = original;
                let only = CanonicalJsonObject::from([(key_id.clone(), theirs[key_id].clone())]);
                all.insert(server.to_string(), CanonicalJsonValue::Object(only));
                stored.insert("signatures".to_owned(), CanonicalJsonValue::Object(all));
                return Ok(Pdu::from_canonical(id, stored)?);
            }
            Err(e) => last = format!("bad signature from {server}: {e}"),
        }
    }
    Err(Countersign::Wrong(last))
}
