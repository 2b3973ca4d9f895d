//! Inbound `PUT /send/{txnId}` (KNOCK-SPEC H.41): one transaction per origin at a time, answers
//! cached per (origin, txnId), each PDU idempotent by event ID and checked in the spec's order,
//! per-PDU errors in a 200 answer, missing prev events fetched from the origin, EDUs ignored.

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    pin::Pin,
    sync::Arc,
};

use reqwest::Method;
use ruma::{CanonicalJsonObject, OwnedServerName, ServerName};
use serde_json::{Value, json};

use super::{AppState, ServiceError, budget::FetchBudget, knocks};
use crate::{
    bounded::{BoundedMap, NAME_CACHE_CAPACITY},
    matrix::{Pdu, client::encode_segment, json, now_ms},
    metrics::{Metrics, Refusal, Via},
    room::{
        LoadedRoom, RoomCtx, RoomTxn,
        accept::{self, Placing, Verdict},
        effects::Source,
        format, signatures,
    },
    store::{StoreError, events as ev, txns},
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
    let budget = FetchBudget::default();
    let mut pending = Pending::default();
    // A local failure answers the whole transaction 5xx, unremembered: the origin sends it
    // again, and what was stored before the failure is answered from the store then.
    for pdu in &pdus {
        process(app, origin, pdu, &budget, FETCH_DEPTH, &mut pending).await?;
    }
    pending.flush(app, origin).await?;
    let answer = json!({ "pdus": pending.results });
    let text = answer.to_string();
    let (o, t) = (origin.to_string(), txn_id);
    app.db.write(move |conn| txns::remember(conn, &o, &t, &text, now_ms())).await?;
    Ok(answer)
}

/// `Err` for a local failure (nothing about the PDU); each PDU's own outcome goes into
/// [`Pending::results`] (none for a PDU that cannot even be identified: no room we host).
type Processing<'a> = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>>;

/// A PDU's event ID and whether it was taken.
type Outcome = (String, Result<(), String>);

/// A PDU checked up to the room's own steps.
struct Ready {
    parsed: Pdu,
    content_redacted: bool,
    /// Its state before came from the origin's `/state_ids` rather than from our graph.
    from_gap: bool,
    /// A knock we fetched to fill a gap while its origin was over its knock rate: kept in the
    /// graph (later events may cite it) but soft-failed, never queued.
    over_rate: Option<String>,
}

/// The PDUs of one inbound transaction waiting to be stored, per room in the order they came:
/// each room's are stored by one write of the room engine (one database transaction), however
/// many there are. Later PDUs of the transaction may cite them as prev events.
#[derive(Default)]
struct Pending {
    rooms: Vec<(String, Vec<Ready>)>,
    /// Event IDs waiting here.
    ids: HashSet<String>,
    /// Each PDU's answer.
    results: BTreeMap<String, Value>,
}

impl Pending {
    fn answer(&mut self, event_id: String, outcome: Result<(), String>) {
        let result = match outcome {
            Ok(()) => json!({}),
            Err(error) => json!({ "error": error }),
        };
        self.results.insert(event_id, result);
    }

    fn push(&mut self, room_id: &str, ready: Ready) {
        self.ids.insert(ready.parsed.event_id.to_string());
        match self.rooms.iter_mut().find(|(r, _)| r == room_id) {
            Some((_, list)) => list.push(ready),
            None => self.rooms.push((room_id.to_owned(), vec![ready])),
        }
    }

    /// Stores everything waiting and records each PDU's outcome.
    async fn flush(&mut self, app: &AppState, origin: &ServerName) -> Result<(), ServiceError> {
        for (room_id, ready) in std::mem::take(&mut self.rooms) {
            let origin_name = origin.to_string();
            let state_types = app.config.knock_room_state.clone();
            let max_pending = app.config.knock_limits.max_pending_per_room;
            let metrics = app.metrics.clone();
            let asked = ready.iter().map(|r| r.parsed.event_id.clone()).collect();
            let outcomes = app
                .rooms
                .write_events(&room_id, asked, move |txn| -> Result<Vec<Outcome>, StoreError> {
                    let mut outcomes = Vec::with_capacity(ready.len());
                    for r in ready {
                        let event_id = r.parsed.event_id.clone();
                        let knock = is_knock_pdu(&r.parsed);
                        let outcome = store(txn, r, &origin_name, &state_types, max_pending)?;
                        if knock {
                            count_knock(&metrics, txn, &event_id, &outcome);
                        }
                        outcomes.push((event_id.to_string(), outcome));
                    }
                    Ok(outcomes)
                })
                .await?;
            for (id, outcome) in outcomes {
                self.answer(id, outcome);
            }
        }
        self.ids.clear();
        Ok(())
    }
}

fn is_knock_pdu(pdu: &Pdu) -> bool {
    pdu.event_type.to_string() == "m.room.member" && pdu.membership().as_deref() == Some("knock")
}

/// A knock of a transaction in the metrics: taken, or refused by a limit or the auth rules, as
/// what it was stored as says.
fn count_knock(
    metrics: &Metrics,
    txn: &RoomTxn<'_>,
    event_id: &ruma::EventId,
    outcome: &Result<(), String>,
) {
    let version = txn.room.ctx.version.to_string();
    metrics.knock_received(&version, Via::Transaction);
    let status = txn.room.pending.event(event_id).map(|e| e.status);
    match (status, outcome) {
        (Some(ev::ACCEPTED), _) => metrics.knock_accepted(&version, Via::Transaction),
        (_, Err(why)) if why.starts_with("M_LIMIT_EXCEEDED") => {
            metrics.knock_refused(&version, Via::Transaction, Refusal::Limit)
        }
        (Some(_), _) => metrics.knock_refused(&version, Via::Transaction, Refusal::Forbidden),
        (None, _) => metrics.knock_refused(&version, Via::Transaction, Refusal::Invalid),
    }
}

/// Why an accepted knock must not join the queue: its origin over its knock rate (a knock we
/// fetched; one the origin sent was refused before any work) or the room's queue full. Checked
/// for every knock a transaction brings, sent or fetched: the origin chooses what
/// `/get_missing_events` answers too.
fn knock_refusal(
    txn: &mut RoomTxn<'_>,
    pdu: &Pdu,
    over_rate: Option<String>,
    max_pending: i64,
) -> Result<Option<String>, StoreError> {
    if !is_knock_pdu(pdu) {
        return Ok(None);
    }
    if over_rate.is_some() {
        return Ok(over_rate);
    }
    let user = pdu.state_key.as_deref().unwrap_or_default();
    match knocks::check_pending_cap(txn, user, max_pending) {
        Ok(()) => Ok(None),
        Err(ServiceError::Store(e)) => Err(e),
        Err(refused) => Ok(Some(limit_error(refused))),
    }
}

/// A PDU's answer for a knock refused by a limit.
fn limit_error(refused: ServiceError) -> String {
    match refused {
        ServiceError::LimitExceeded(why, ms) => {
            format!("M_LIMIT_EXCEEDED: {why} (retry after {ms} ms)")
        }
        other => other.to_string(),
    }
}

/// Steps 4–6 of one PDU and storing it as what it turned out to be.
fn store(
    txn: &mut RoomTxn<'_>,
    ready: Ready,
    origin: &str,
    knock_state: &[String],
    max_pending: i64,
) -> Result<Result<(), String>, StoreError> {
    let Ready { parsed, content_redacted, from_gap, over_rate } = ready;
    // Known only as part of a gap's state: now it takes its place in the graph (the outlier row
    // stays readable for the checks, then is replaced).
    let outlier = match accept::stored(txn, &parsed.event_id)? {
        Some(row) if row.status == ev::OUTLIER => true,
        Some(_) => return Ok(Ok(())),
        None => false,
    };
    let verdict = accept::decide(txn, &parsed)?;
    match verdict {
        Verdict::Accepted { before } => {
            if let Some(refused) = knock_refusal(txn, &parsed, over_rate, max_pending)? {
                // Valid, but not taken into the queue: stored soft-failed, so the events that
                // cite it still find it, and it never reaches current state or the queue.
                tracing::info!(event_id = %parsed.event_id, %refused, "knock soft-failed");
                let verdict = Verdict::SoftFailed { before, reason: refused.clone() };
                accept::store_refused(txn, &parsed, &verdict, outlier)?;
                return Ok(Err(refused));
            }
            // A state event's branch is resolved into current state as it is stored; any other
            // event brings the gap's state in here.
            let placing = Placing { outlier, merge_before: from_gap };
            let source = Source::Transaction { origin, content_redacted, knock_state };
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
}

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

impl From<signatures::SignatureError> for Failure {
    fn from(e: signatures::SignatureError) -> Self {
        match e {
            signatures::SignatureError::Refused(why) => Self::Refused(why),
            // Our key store did not answer: the transaction is answered 5xx and sent again.
            signatures::SignatureError::KeyStore(why) => {
                Self::Local(ServiceError::Store(StoreError::Pool(why)))
            }
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

/// Checks one PDU up to the room's own steps and queues it in `pending` (or answers it there).
fn process<'a>(
    app: &'a AppState,
    origin: &'a ServerName,
    value: &'a Value,
    budget: &'a FetchBudget,
    fetch_depth: u32,
    pending: &'a mut Pending,
) -> Processing<'a> {
    Box::pin(async move {
        let Some(room_id) = value.get("room_id").and_then(Value::as_str) else { return Ok(()) };
        let Some(loaded) = app.rooms.snapshot(room_id).await? else { return Ok(()) };
        let room = loaded.ctx.clone();
        let Ok(bytes) = serde_json::to_vec(value) else { return Ok(()) };
        let pdu: CanonicalJsonObject = match json::parse_object(&bytes) {
            Ok(p) => p,
            Err(e) => {
                // Not canonical JSON: name it by its would-be ID if that can be computed.
                let Ok(loose) = serde_json::from_value::<CanonicalJsonObject>(value.clone()) else {
                    return Ok(());
                };
                let Ok(id) = crate::matrix::event::event_id(&loose, &room.rules) else {
                    return Ok(());
                };
                pending.answer(id.to_string(), Err(format!("not canonical JSON: {e}")));
                return Ok(());
            }
        };
        let event_id = match format::check_format(&room, &pdu) {
            Ok(id) => id,
            Err(e) => {
                if let Ok(id) = crate::matrix::event::event_id(&pdu, &room.rules) {
                    pending.answer(id.to_string(), Err(format!("bad event format: {e}")));
                }
                return Ok(());
            }
        };
        let id = event_id.to_string();
        // A knock counts toward the same limits as send_knock. One the origin sent is refused
        // before any work; one we fetched to fill a gap is soft-failed when stored (refusing it
        // would leave a hole in the graph that the events citing it fall into).
        let mut over_rate = None;
        if is_knock(&pdu)
            && let Err(refused) = app.admit_knock(origin.as_str(), room.room_id.as_str())
        {
            if fetch_depth == FETCH_DEPTH {
                let version = room.version.to_string();
                app.metrics.knock_received(&version, Via::Transaction);
                app.metrics.knock_refused(&version, Via::Transaction, Refusal::Limit);
                pending.answer(id, Err(limit_error(refused)));
                return Ok(());
            }
            over_rate = Some(limit_error(refused));
        }
        let checked =
            handle(app, origin, &loaded, pdu, event_id, budget, fetch_depth, pending).await;
        match checked {
            Ok(Some(mut ready)) => {
                ready.over_rate = over_rate;
                pending.push(room.room_id.as_str(), ready)
            }
            Ok(None) => pending.answer(id, Ok(())),
            Err(Failure::Refused(why)) => pending.answer(id, Err(why)),
            Err(Failure::Local(e)) => {
                tracing::warn!(%origin, event_id = %id, error = %e, "PDU not processed");
                return Err(e);
            }
        }
        Ok(())
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

/// Format and ACL done: signatures, then any gap before it. `Ok(None)` when it is already
/// stored (or queued), `Ok(Some)` when it is ready for the room's steps.
#[allow(clippy::too_many_arguments)]
async fn handle(
    app: &AppState,
    origin: &ServerName,
    loaded: &LoadedRoom,
    pdu: CanonicalJsonObject,
    event_id: ruma::OwnedEventId,
    budget: &FetchBudget,
    fetch_depth: u32,
    pending: &mut Pending,
) -> Result<Option<Ready>, Failure> {
    let room = &loaded.ctx;
    knocks::check_acl_loaded(app, loaded, origin).await.map_err(Failure::from)?;
    if pending.ids.contains(event_id.as_str()) {
        return Ok(None);
    }
    // The event itself and its prev events, in one read.
    let prevs: Vec<String> = pdu
        .get("prev_events")
        .and_then(ruma::CanonicalJsonValue::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut asked = prevs.clone();
    asked.push(event_id.to_string());
    let placed =
        app.db.read(move |conn| ev::placements(conn, &asked)).await.map_err(Failure::from)?;
    if placed.iter().any(|p| p.event_id == event_id.as_str() && p.status != ev::OUTLIER) {
        return Ok(None);
    }
    let (pdu, content_redacted) =
        signatures::verify_signatures(&app.keys, &app.remote_keys, room, pdu).await?;
    let parsed = Pdu::from_canonical(event_id, pdu)?;

    // Missing prev events: ask the origin for the gap, oldest first, before this one. A prev
    // waiting in this transaction counts as known.
    let known = |p: &String| pending.ids.contains(p) || placed.iter().any(|x| &x.event_id == p);
    let gap = !prevs.iter().all(known) && fetch_depth > 0;
    // Whether a prev's state came from the origin's /state_ids rather than from our graph.
    let mut from_gap = false;
    // Only a server with a joined member may make us fetch for a room, and only within the
    // transaction's budget.
    let joined = gap && loaded.joined.get(origin.as_str()).is_some_and(|n| *n > 0);
    if joined {
        // What waits must be stored first: the gap is measured against the store.
        pending.flush(app, origin).await.map_err(Failure::Local)?;
        for missing in fetch_missing(app, origin, room, &parsed, budget).await {
            let mut fetched = Pending::default();
            if process(app, origin, &missing, budget, fetch_depth - 1, &mut fetched).await.is_ok() {
                let _ = fetched.flush(app, origin).await;
            }
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
    Ok(Some(Ready { parsed, content_redacted, from_gap, over_rate: None }))
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
