//! The state before an event: the state after its prev events, resolved when they differ.
//!
//! Only what differs between the prev events' states is read: the deltas on chain segments that
//! not all of them share. Keys where the states disagree with two different events go through
//! ruma's state resolution (v2 for rooms 7–11, v2.1 for 12).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    state_res::{self, Event, StateMap as RumaStateMap, utils::event_id_set::EventIdSet},
};

use super::events::{RoomCtx, load_pdus};
use crate::{
    matrix::Pdu,
    store::{
        DbConn, StoreError, events as ev,
        state::{self, StateKey},
    },
};

/// Why there is no state before an event.
#[derive(Debug)]
pub enum StateBeforeError {
    /// A prev event we do not have (or that was rejected).
    UnknownPrev(String),
    Store(StoreError),
}

impl From<StoreError> for StateBeforeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The state group that is the state before an event citing `prev_events`.
pub fn state_before(
    conn: &mut DbConn,
    room: &RoomCtx,
    prev_events: &[OwnedEventId],
) -> Result<i64, StateBeforeError> {
    let mut groups: Vec<(i64, i64)> = Vec::with_capacity(prev_events.len());
    for id in prev_events {
        let row = ev::get(conn, id.as_str())?
            .filter(|r| r.status == ev::ACCEPTED && r.room_id == room.room_id.as_str());
        let Some(row) = row else { return Err(StateBeforeError::UnknownPrev(id.to_string())) };
        let group = row
            .state_after
            .ok_or_else(|| StoreError::Corrupt(format!("event {id} has no state")))?;
        groups.push((group, row.depth));
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut distinct: Vec<i64> = Vec::new();
    for (g, _) in &groups {
        if !distinct.contains(g) {
            distinct.push(*g);
        }
    }
    match distinct.as_slice() {
        [] => Err(StateBeforeError::UnknownPrev("no prev_events".to_owned())),
        [only] => Ok(*only),
        many => Ok(merge(conn, room, many)?),
    }
}

/// A new group equal to the resolution of several groups' states.
fn merge(conn: &mut DbConn, room: &RoomCtx, groups: &[i64]) -> Result<i64, StoreError> {
    let keys = diverging_keys(conn, groups)?;
    // Each group's value for each diverging key.
    let mut values: BTreeMap<StateKey, Vec<Option<String>>> = BTreeMap::new();
    for key in &keys {
        let mut per_group = Vec::with_capacity(groups.len());
        for g in groups {
            per_group.push(state::lookup(conn, *g, &key.0, &key.1)?);
        }
        values.insert(key.clone(), per_group);
    }
    let conflicted = values.values().any(|vs| {
        let present: HashSet<&String> = vs.iter().flatten().collect();
        present.len() > 1
    });
    let resolved: BTreeMap<StateKey, String> = if conflicted {
        resolve(conn, room, groups, &values)?
    } else {
        values
            .iter()
            .filter_map(|(k, vs)| vs.iter().flatten().next().map(|v| (k.clone(), v.clone())))
            .collect()
    };
    let parent = groups[0];
    let mut delta = Vec::new();
    for (key, value) in resolved {
        if values.get(&key).and_then(|vs| vs[0].as_ref()) != Some(&value) {
            delta.push((key, value));
        }
    }
    state::new_group(conn, room.room_id.as_str(), Some(parent), &delta)
}

/// Keys changed on chain segments that not every group includes.
fn diverging_keys(conn: &mut DbConn, groups: &[i64]) -> Result<BTreeSet<StateKey>, StoreError> {
    let mut per_chain: HashMap<i64, Vec<i64>> = HashMap::new();
    for g in groups {
        for (chain, pos) in state::ancestry(conn, *g)? {
            per_chain.entry(chain).or_default().push(pos);
        }
    }
    let mut keys = BTreeSet::new();
    for (chain, positions) in per_chain {
        let hi = positions.iter().copied().max().unwrap_or(-1);
        let lo = if positions.len() == groups.len() {
            positions.iter().copied().min().unwrap_or(-1)
        } else {
            -1
        };
        if lo < hi {
            keys.extend(state::keys_changed(conn, chain, lo, hi)?);
        }
    }
    Ok(keys)
}

/// Runs ruma's state resolution over the diverging keys plus the keys auth depends on.
fn resolve(
    conn: &mut DbConn,
    room: &RoomCtx,
    groups: &[i64],
    diverging: &BTreeMap<StateKey, Vec<Option<String>>>,
) -> Result<BTreeMap<StateKey, String>, StoreError> {
    let mut keys: BTreeSet<StateKey> = diverging.keys().cloned().collect();
    for t in ["m.room.create", "m.room.power_levels", "m.room.join_rules"] {
        keys.insert((t.to_owned(), String::new()));
    }
    let mut maps: Vec<RumaStateMap<OwnedEventId>> = Vec::with_capacity(groups.len());
    let mut wanted: Vec<String> = Vec::new();
    for g in groups {
        let mut map = RumaStateMap::new();
        for key in &keys {
            if let Some(id) = state::lookup(conn, *g, &key.0, &key.1)? {
                wanted.push(id.clone());
                let id =
                    OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                map.insert((StateEventType::from(key.0.as_str()), key.1.clone()), id);
            }
        }
        maps.push(map);
    }
    // Load every event of the maps and their whole auth chains.
    let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut frontier = wanted;
    while !frontier.is_empty() {
        let batch: Vec<String> =
            frontier.drain(..).filter(|id| !events.keys().any(|k| k.as_str() == id)).collect();
        for pdu in load_pdus(conn, &batch)? {
            for a in &pdu.auth_events {
                if !events.contains_key(a) {
                    frontier.push(a.to_string());
                }
            }
            events.insert(pdu.event_id.clone(), pdu);
        }
        frontier.sort();
        frontier.dedup();
    }
    let auth_chain = |map: &RumaStateMap<OwnedEventId>| -> EventIdSet<OwnedEventId> {
        let mut set = EventIdSet::new();
        let mut stack: Vec<&OwnedEventId> = map.values().collect();
        while let Some(id) = stack.pop() {
            if let Some(pdu) = events.get(id) {
                for a in &pdu.auth_events {
                    if set.insert(a.clone()) {
                        stack.push(a);
                    }
                }
            }
        }
        set
    };
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = maps.iter().map(auth_chain).collect();
    let state_res_rules = room.rules.state_res.v2_rules().ok_or_else(|| {
        StoreError::Corrupt(format!("room version {} has no v2 state resolution", room.version))
    })?;
    let resolved = state_res::resolve(
        &room.rules.authorization,
        state_res_rules,
        maps.iter(),
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted| Some(conflicted_subgraph(&events, conflicted)),
    )
    .map_err(|e| StoreError::Corrupt(format!("state resolution failed: {e}")))?;
    Ok(resolved.into_iter().map(|((t, k), id)| ((t.to_string(), k), id.to_string())).collect())
}

/// Events on auth-DAG paths between conflicted events (state resolution v2.1).
fn conflicted_subgraph(
    events: &HashMap<OwnedEventId, Pdu>,
    conflicted: &RumaStateMap<Vec<OwnedEventId>>,
) -> EventIdSet<OwnedEventId> {
    let targets: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    let mut memo: HashMap<OwnedEventId, bool> = HashMap::new();
    fn reaches(
        id: &OwnedEventId,
        events: &HashMap<OwnedEventId, Pdu>,
        targets: &HashSet<&OwnedEventId>,
        memo: &mut HashMap<OwnedEventId, bool>,
        depth: usize,
    ) -> bool {
        if let Some(r) = memo.get(id) {
            return *r;
        }
        let mut found = false;
        if depth < 10_000
            && let Some(pdu) = events.get(id)
        {
            for a in pdu.auth_events() {
                if targets.contains(a) || reaches(a, events, targets, memo, depth + 1) {
                    found = true;
                }
            }
        }
        memo.insert(id.clone(), found);
        found
    }
    let mut out = EventIdSet::new();
    let mut stack: Vec<OwnedEventId> = targets.iter().map(|id| (*id).clone()).collect();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if targets.contains(&id) || reaches(&id, events, &targets, &mut memo, 0) {
            out.insert(id.clone());
        }
        if let Some(pdu) = events.get(&id) {
            stack.extend(pdu.auth_events.iter().cloned());
        }
    }
    out
}
