//! When `/get_missing_events` cannot fill a gap: the state at a missing prev event, from the
//! origin's `/state_ids` (KNOCK-SPEC H.41), as Synapse does.
//!
//! The prev event and every state or auth event we lack are fetched with `/event`, checked
//! (format, event ID, signatures and hashes, the auth rules against their own auth events, and
//! the prev against the state before it), then stored in one transaction: the state and auth
//! events as outliers, the prev as an accepted event with its state before and after. The prev is
//! not a forward extremity and does not change current state; the event that cites it does,
//! through state resolution with the rest of the room.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use ruma::{CanonicalJsonObject, OwnedEventId, ServerName, events::StateEventType};
use serde_json::Value;

use super::{AppState, budget::FetchBudget};
use crate::{
    matrix::{Pdu, auth, client::encode_segment, json},
    room::{RoomCtx, format, load_pdus, persist, signatures},
    store::{StoreError, events as ev, state},
};

/// The most events one gap may make us fetch.
const MAX_FETCH: usize = 1_000;

/// Fetches and stores the state at `prev` from `origin`. Errors say why the gap stays open.
pub async fn fill_with_state(
    app: &AppState,
    origin: &ServerName,
    room: &RoomCtx,
    prev: &str,
    budget: &FetchBudget,
) -> Result<(), String> {
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        encode_segment(room.room_id.as_str()),
        encode_segment(prev)
    );
    let answer = get_json(app, origin, &path, budget).await?;
    let ids = |field: &str| -> Vec<String> {
        answer[field]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (state_ids, chain_ids) = (ids("pdu_ids"), ids("auth_chain_ids"));
    let mut wanted: Vec<String> = state_ids.iter().chain(&chain_ids).cloned().collect();
    wanted.push(prev.to_owned());
    wanted.sort();
    wanted.dedup();
    let probe = wanted.clone();
    let have: Vec<String> = app
        .db
        .read(move |conn| ev::known(conn, &probe))
        .await
        .map_err(|e: StoreError| e.to_string())?;
    let missing: Vec<String> = wanted.into_iter().filter(|id| !have.contains(id)).collect();
    if missing.len() > MAX_FETCH {
        return Err(format!("the state at {prev} needs {} events we lack", missing.len()));
    }
    // All of them or none: a fill stopped halfway stores nothing anyway.
    if (missing.len() as u64) > u64::from(budget.requests_left()) {
        return Err(format!(
            "the state at {prev} needs {} events, more than this transaction may fetch",
            missing.len()
        ));
    }
    let mut fetched: HashMap<OwnedEventId, Pdu> = HashMap::new();
    for id in &missing {
        let pdu = fetch_event(app, origin, room, id, budget).await?;
        fetched.insert(pdu.event_id.clone(), pdu);
    }
    let known = have.clone();
    let room = room.clone();
    let room_id = room.room_id.to_string();
    let prev = prev.to_owned();
    app.rooms
        .write(&room_id, move |txn| -> Result<(), StoreError> {
            let (conn, txn_room, _) = txn.parts()?;
            // What we already have must be usable: in this room, not rejected.
            for p in ev::placements(conn, &known)? {
                if p.room_id != room.room_id.as_str() || p.status == ev::REJECTED {
                    return Err(StoreError::Rejected(format!(
                        "{} is rejected here or not in this room",
                        p.event_id
                    )));
                }
            }
            // Auth events: what we fetched, else what we stored.
            let stored: HashMap<OwnedEventId, Pdu> =
                load_pdus(conn, &known)?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
            let event = |id: &ruma::EventId| fetched.get(id).or_else(|| stored.get(id)).cloned();
            // Outliers, oldest first, each allowed by its own auth events.
            let mut order: Vec<&Pdu> =
                fetched.values().filter(|p| p.event_id != prev.as_str()).collect();
            order.sort_by_key(|p| (p.depth, p.event_id.clone()));
            for pdu in &order {
                if let Err(e) =
                    auth::check_against_auth_events(&room.rules.authorization, pdu, event)
                {
                    return Err(StoreError::Rejected(format!(
                        "{} is not allowed by its auth events: {e}",
                        pdu.event_id
                    )));
                }
            }
            // The state before the prev, by key.
            let mut before: BTreeMap<state::StateKey, String> = BTreeMap::new();
            let mut before_pdus: HashMap<(StateEventType, String), Pdu> = HashMap::new();
            for id in &state_ids {
                let Ok(id) = OwnedEventId::try_from(id.as_str()) else {
                    return Err(StoreError::Rejected(format!("bad event ID {id} in /state_ids")));
                };
                let Some(pdu) = event(&id) else {
                    return Err(StoreError::Rejected(format!("state event {id} is missing")));
                };
                let Some(key) = pdu.state_key.clone() else {
                    return Err(StoreError::Rejected(format!(
                        "{id} in /state_ids is not a state event"
                    )));
                };
                let t = pdu.event_type.to_string();
                before.insert((t.clone(), key.clone()), id.to_string());
                before_pdus.insert((StateEventType::from(t.as_str()), key), pdu);
            }
            // The prev was fetched, or is an outlier of an earlier gap (known, not in the graph).
            let prev_pdu = match fetched.values().find(|p| p.event_id == prev.as_str()) {
                Some(p) => p.clone(),
                None => match ev::get(conn, &prev)? {
                    Some(row) if row.status == ev::OUTLIER => {
                        let pdu = stored.values().find(|p| p.event_id == prev.as_str()).cloned();
                        ev::remove_outlier(conn, &prev)?;
                        match pdu {
                            Some(pdu) => pdu,
                            None => return Err(StoreError::Rejected(format!("{prev} vanished"))),
                        }
                    }
                    _ => return Err(StoreError::Rejected(format!("{prev} is already stored"))),
                },
            };
            if let Err(e) =
                auth::check_against_auth_events(&room.rules.authorization, &prev_pdu, event)
                    .and_then(|()| {
                        auth::check_against_state(&room.rules.authorization, &prev_pdu, |t, k| {
                            before_pdus.get(&(t.clone(), k.to_owned())).cloned()
                        })
                    })
            {
                return Err(StoreError::Rejected(format!(
                    "{prev} is not allowed by the state before it: {e}"
                )));
            }
            for pdu in order {
                persist::unaccepted(txn_room, pdu, ev::OUTLIER, None)?;
            }
            let delta: Vec<(state::StateKey, String)> = before.into_iter().collect();
            let group_before = state::new_group(conn, room.room_id.as_str(), None, &delta)?;
            let group_after = match &prev_pdu.state_key {
                Some(key) => state::new_group(
                    conn,
                    room.room_id.as_str(),
                    Some(group_before),
                    &[((prev_pdu.event_type.to_string(), key.clone()), prev.clone())],
                )?,
                None => group_before,
            };
            // The outliers first, as they arrived.
            persist::write_rows(conn, txn_room)?;
            let (text, event_type) = (prev_pdu.to_json_string(), prev_pdu.event_type.to_string());
            ev::insert(
                conn,
                &ev::NewEventRow {
                    event_id: prev_pdu.event_id.as_str(),
                    room_id: room.room_id.as_str(),
                    event_type: &event_type,
                    state_key: prev_pdu.state_key.as_deref(),
                    sender: prev_pdu.sender.as_str(),
                    origin_server_ts: i64::from(prev_pdu.origin_server_ts.0),
                    depth: prev_pdu.depth,
                    status: ev::ACCEPTED,
                    state_before: Some(group_before),
                    state_after: Some(group_after),
                    pdu: &text,
                },
            )?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())
}

/// One GET within the transaction's budget.
async fn get_json(
    app: &AppState,
    origin: &ServerName,
    path: &str,
    budget: &FetchBudget,
) -> Result<Value, String> {
    let time = budget.take(1).map_err(|why| format!("GET {path}: {why}"))?;
    let request = app.federation.request(Method::GET, origin, path, None, true, 16 * 1024 * 1024);
    let bytes = tokio::time::timeout(time, request)
        .await
        .map_err(|_| format!("GET {path} from {origin}: out of time"))?
        .map_err(|e| format!("GET {path} from {origin}: {e}"))?;
    budget.read(bytes.len());
    serde_json::from_slice(&bytes).map_err(|e| format!("GET {path} from {origin}: {e}"))
}

/// `GET /event/{id}` from `origin`, checked: canonical JSON, this room, the ID asked for,
/// signatures and hashes (a hash mismatch keeps the redacted form, as on receipt).
async fn fetch_event(
    app: &AppState,
    origin: &ServerName,
    room: &RoomCtx,
    id: &str,
    budget: &FetchBudget,
) -> Result<Pdu, String> {
    let path = format!("/_matrix/federation/v1/event/{}", encode_segment(id));
    let answer = get_json(app, origin, &path, budget).await?;
    let value = answer["pdus"].get(0).ok_or_else(|| format!("{origin} has no event {id}"))?;
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let pdu: CanonicalJsonObject =
        json::parse_object(&bytes).map_err(|e| format!("{id}: not canonical JSON: {e}"))?;
    let event_id = format::check_format(room, &pdu).map_err(|e| format!("{id}: {e}"))?;
    if event_id.as_str() != id {
        return Err(format!("{origin} answered {event_id} for {id}"));
    }
    let (pdu, _) = signatures::verify_signatures(&app.keys, &app.remote_keys, room, pdu)
        .await
        .map_err(|e| format!("{id}: signature check failed: {e}"))?;
    Pdu::from_canonical(event_id, pdu)
}
