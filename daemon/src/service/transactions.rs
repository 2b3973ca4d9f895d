//! Inbound `PUT /send/{txnId}` (KNOCK-SPEC H.41): one transaction per origin at a time, answers
//! cached per (origin, txnId), each PDU idempotent by event ID and checked in the spec's order,
//! per-PDU errors in a 200 answer, missing prev events fetched from the origin, EDUs ignored.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use reqwest::Method;
use ruma::{CanonicalJsonObject, OwnedServerName, ServerName};
use serde_json::{Value, json};

use super::{AppState, ServiceError, budget::FetchBudget, knocks};
use crate::{
    bounded::{BoundedMap, NAME_CACHE_CAPACITY},
    matrix::{Pdu, client::encode_segment, json, now_ms},
    room::{
        RoomCtx,
        accept::{self, Placing, Verdict},
        effects::Source,
        format, signatures,
    },
    store::{StoreError, events as ev, rooms, txns},
};

/// Spec limits of one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// How deep we chase missing prev events through `/get_missing_events`.
const FETCH_DEPTH: u32 = 3;

/// The longest txnId we take (bytes); longer ones are refused before anything is stored.
pub const MAX_TXN_ID: usize = 255;

/// Per-origin locks: one transaction per origin at a time. At most `NAME_CACHE_CAPACITY` idle
/// locks are kept; one in use (its `Arc` shared) is never evicted, and clones are only made under
/// the outer mutex, so an origin never has two transactions running at once.
#[derive(Debug)]
pub struct OriginLocks(
    tokio::sync::Mutex<BoundedMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
);

impl Default for OriginLocks {
    fn default() -> Self {
        Self(tokio::sync::Mutex::new(BoundedMap::new(NAME_CACHE_CAPACITY)))
    }
}

impl OriginLocks {
    async fn get(&self, origin: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        let unused = |l: &Arc<tokio::sync::Mutex<()>>| Arc::strong_count(l) == 1;
        self.0.lock().await.get_or_insert_with(origin.to_owned(), Arc::default, unused).clone()
    }
}

pub async fn receive(
    app: &AppState,
    origin: &ServerName,
    txn_id: String,
    body: Value,
) -> Result<Value, ServiceError> {
    let lock = app.origin_locks.get(origin).await;
    let _guard = lock.lock().await;
    let (o, t) = (origin.to_string(), txn_id.clone());
    if let Some(answer) = app.db.read(move |conn| txns::answer(conn, &o, &t)).await? {
        return serde_json::from_str(&answer)
            .map_err(|e| StoreError::Corrupt(e.to_string()).into());
    }
    let pdus = body.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default();
    let edus = body.get("edus").and_then(Value::as_array).map_or(0, Vec::len);
    if pdus.len() > MAX_PDUS || edus > MAX_EDUS {
        return Err(ServiceError::BadJson(format!(
            "a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs ({} and {edus} given)",
            pdus.len()
        )));
    }
    let mut results = BTreeMap::new();
    let budget = FetchBudget::default();
    for pdu in &pdus {
        // A local failure answers the whole transaction 5xx, unremembered: the origin sends it
        // again, and what was stored before the failure is answered from the store then.
        if let Some((event_id, outcome)) = process(app, origin, pdu, &budget, FETCH_DEPTH).await? {
            let result = match outcome {
                Ok(()) => json!({}),
                Err(error) => json!({ "error": error }),
            };
            results.insert(event_id, result);
        }
    }
    let answer = json!({ "pdus": results });
    let text = answer.to_string();
    let (o, t) = (origin.to_string(), txn_id);
    app.db.write(move |conn| txns::remember(conn, &o, &t, &text, now_ms())).await?;
    Ok(answer)
}

/// One PDU's outcome: `Ok(None)` when it cannot even be identified (no room we host), else its
/// event ID and whether it was taken; `Err` for a local failure (nothing about the PDU).
type Processed = Result<Option<(String, Result<(), String>)>, ServiceError>;
type Processing<'a> = Pin<Box<dyn Future<Output = Processed> + Send + 'a>>;

/// Why a PDU was not taken.
enum Failure {
    /// Refused: answered in the transaction's result for the PDU, and remembered.
    Refused(String),
    /// Our own failure (the database): the transaction is answered 5xx and not remembered.
    Local(ServiceError),
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Self::Refused(why)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(why) => Self::Refused(why),
            e => Self::Local(e.into()),
        }
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(e) => e.into(),
            refused => Self::Refused(refused.to_string()),
        }
    }
}

/// Checks and stores one PDU.
fn process<'a>(
    app: &'a AppState,
    origin: &'a ServerName,
    value: &'a Value,
    budget: &'a FetchBudget,
    fetch_depth: u32,
) -> Processing<'a> {
    Box::pin(async move {
        let Some(room_id) = value.get("room_id").and_then(Value::as_str) else { return Ok(None) };
        let lookup = room_id.to_owned();
        let Some(room) = app.db.read(move |conn| RoomCtx::load(conn, &lookup)).await? else {
            return Ok(None);
        };
        let Ok(bytes) = serde_json::to_vec(value) else { return Ok(None) };
        let pdu: CanonicalJsonObject = match json::parse_object(&bytes) {
            Ok(p) => p,
            Err(e) => {
                // Not canonical JSON: name it by its would-be ID if that can be computed.
                let Ok(loose) = serde_json::from_value::<CanonicalJsonObject>(value.clone()) else {
                    return Ok(None);
                };
                let Ok(id) = crate::matrix::event::event_id(&loose, &room.rules) else {
                    return Ok(None);
                };
                return Ok(Some((id.to_string(), Err(format!("not canonical JSON: {e}")))));
            }
        };
        let event_id = match format::check_format(&room, &pdu) {
            Ok(id) => id,
            Err(e) => {
                let Ok(id) = crate::matrix::event::event_id(&pdu, &room.rules) else {
                    return Ok(None);
                };
                return Ok(Some((id.to_string(), Err(format!("bad event format: {e}")))));
            }
        };
        let id = event_id.to_string();
        // A knock the origin sends counts toward the same limits as send_knock (a knock we
        // fetched to fill a gap does not: we asked for it).
        if fetch_depth == FETCH_DEPTH && is_knock(&pdu) {
            let room_id = room.room_id.as_str();
            if let Err(ServiceError::LimitExceeded(why, ms)) =
                app.admit_knock(origin.as_str(), room_id)
            {
                return Ok(Some((
                    id,
                    Err(format!("M_LIMIT_EXCEEDED: {why} (retry after {ms} ms)")),
                )));
            }
        }
        match handle(app, origin, &room, pdu, event_id, budget, fetch_depth).await {
            Ok(()) => Ok(Some((id, Ok(())))),
            Err(Failure::Refused(why)) => Ok(Some((id, Err(why)))),
            Err(Failure::Local(e)) => {
                tracing::warn!(%origin, event_id = %id, error = %e, "PDU not processed");
                Err(e)
            }
        }
    })
}

fn is_knock(pdu: &CanonicalJsonObject) -> bool {
    use ruma::CanonicalJsonValue::{Object, String as Text};
    let membership = match pdu.get("content") {
        Some(Object(content)) => matches!(content.get("membership"), Some(Text(m)) if m == "knock"),
        _ => false,
    };
    membership && matches!(pdu.get("type"), Some(Text(t)) if t == "m.room.member")
}

async fn handle(
    app: &AppState,
    origin: &ServerName,
    room: &RoomCtx,
    pdu: CanonicalJsonObject,
    event_id: ruma::OwnedEventId,
    budget: &FetchBudget,
    fetch_depth: u32,
) -> Result<(), Failure> {
    let (r, o) = (room.room_id.to_string(), origin.to_owned());
    app.db.read(move |conn| knocks::check_acl(conn, &r, &o)).await.map_err(Failure::from)?;
    let known = event_id.to_string();
    if app
        .db
        .read(move |conn| ev::get(conn, &known))
        .await
        .map_err(Failure::from)?
        .is_some_and(|row| row.status != ev::OUTLIER)
    {
        return Ok(());
    }
    let (pdu, content_redacted) =
        signatures::verify_signatures(&app.keys, &app.remote_keys, room, pdu).await?;
    let parsed = Pdu::from_canonical(event_id, pdu)?;

    // Missing prev events: ask the origin for the gap, oldest first, before this one.
    let prevs: Vec<String> = parsed.prev_events.iter().map(|p| p.to_string()).collect();
    let have = {
        let p = prevs.clone();
        app.db.read(move |conn| ev::known(conn, &p)).await.map_err(Failure::from)?
    };
    // Whether a prev's state came from the origin's /state_ids rather than from our graph.
    let mut from_gap = false;
    // Only a server with a joined member may make us fetch for a room, and only within the
    // transaction's budget.
    // (Asked only when there is a gap: most PDUs cite what we have.)
    let gap = have.len() < prevs.len() && fetch_depth > 0;
    let joined = gap && {
        let (r, o) = (room.room_id.to_string(), origin.to_string());
        app.db
            .read(move |conn| rooms::joined_servers(conn, &r))
            .await
            .map_err(Failure::from)?
            .contains(&o)
    };
    if joined {
        for missing in fetch_missing(app, origin, room, &parsed, budget).await {
            let _ = process(app, origin, &missing, budget, fetch_depth - 1).await;
        }
        // Still a gap (too big, or the origin would not walk it): the state at each prev we
        // lack, from the origin's /state_ids. Only for the event the origin sent us, and once
        // per room and transaction.
        if fetch_depth == FETCH_DEPTH && budget.first_fill(room.room_id.as_str()) {
            let p = prevs.clone();
            let have = app.db.read(move |conn| ev::known(conn, &p)).await.map_err(Failure::from)?;
            for prev in prevs.iter().filter(|p| !have.contains(p)) {
                match super::gap::fill_with_state(app, origin, room, prev, budget).await {
                    Ok(()) => from_gap = true,
                    Err(e) => {
                        tracing::info!(%origin, %prev, error = %e, "state at a gap not filled")
                    }
                }
            }
        }
    }

    let origin_name = origin.to_string();
    let state_types = app.config.knock_room_state.clone();
    let outcome = app
        .rooms
        .write(room.room_id.as_str(), move |txn| -> Result<Result<(), String>, StoreError> {
            // Known only as part of a gap's state: now it takes its place in the graph (the
            // outlier row stays readable for the checks, then is replaced).
            let outlier = match ev::get(txn.conn, parsed.event_id.as_str())? {
                Some(row) if row.status == ev::OUTLIER => true,
                Some(_) => return Ok(Ok(())),
                None => false,
            };
            let verdict = accept::decide(txn, &parsed)?;
            match verdict {
                Verdict::Accepted { before } => {
                    // A state event's branch is resolved into current state as it is stored;
                    // any other event brings the gap's state in here.
                    let placing = Placing { outlier, merge_before: from_gap };
                    let source = Source::Transaction {
                        origin: &origin_name,
                        content_redacted,
                        knock_state: &state_types,
                    };
                    accept::store_accepted(txn, parsed, &before, placing, source)?;
                    Ok(Ok(()))
                }
                Verdict::SoftFailed { ref reason, .. } => {
                    tracing::info!(event_id = %parsed.event_id, %reason, "soft-failed");
                    accept::store_refused(txn, &parsed, &verdict, outlier)?;
                    Ok(Ok(()))
                }
                Verdict::Rejected(ref why) => {
                    accept::store_refused(txn, &parsed, &verdict, outlier)?;
                    Ok(Err(why.clone()))
                }
                Verdict::MissingPrev(id) => Ok(Err(format!("missing prev event {id}"))),
            }
        })
        .await
        .map_err(Failure::from)?;
    outcome.map_err(Failure::Refused)
}

/// `POST /get_missing_events` to the origin for the events between our extremities and `pdu`.
async fn fetch_missing(
    app: &AppState,
    origin: &ServerName,
    room: &RoomCtx,
    pdu: &Pdu,
    budget: &FetchBudget,
) -> Vec<Value> {
    let room_id = room.room_id.to_string();
    let earliest: Vec<String> =
        match app.db.read(move |conn| ev::extremities(conn, &room_id, 20)).await {
            Ok(e) => e.into_iter().map(|(id, _)| id).collect(),
            Err::<_, StoreError>(_) => return Vec::new(),
        };
    let body = json!({
        "earliest_events": earliest,
        "latest_events": [pdu.event_id.as_str()],
        "limit": 20,
        "min_depth": 0,
    });
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        encode_segment(room.room_id.as_str())
    );
    let time = match budget.take(1) {
        Ok(time) => time,
        Err(why) => {
            tracing::info!(%origin, %why, "get_missing_events not asked");
            return Vec::new();
        }
    };
    let request = app.federation.request(
        Method::POST,
        origin,
        &path,
        Some(body.to_string().into_bytes()),
        true,
        4 * 1024 * 1024,
    );
    let Ok(Ok(bytes)) = tokio::time::timeout(time, request).await else {
        tracing::info!(%origin, "get_missing_events failed");
        return Vec::new();
    };
    budget.read(bytes.len());
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut events = value.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
    events.sort_by_key(|e| e.get("depth").and_then(Value::as_i64).unwrap_or(0));
    events.truncate(20);
    // The deepest ones (nearest the event that cites them) when not all fit.
    let keep = budget.take_events(events.len());
    events.split_off(events.len() - keep)
}
