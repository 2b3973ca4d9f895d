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
    let ids: Vec<String> = prev_events.iter().map(|id| id.to_string()).collect();
    let rows: HashMap<String, ev::Placed> =
        ev::placements(conn, &ids)?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
    let mut groups: Vec<(i64, i64)> = Vec::with_capacity(prev_events.len());
    for id in &ids {
        let row =
            rows.get(id).filter(|p| p.status == ev::ACCEPTED && p.room_id == room.room_id.as_str());
        let Some(row) = row else { return Err(StateBeforeError::UnknownPrev(id.clone())) };
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
        many => {
            // Events citing the same extremities (concurrent templates) share one resolution.
            let room_id = room.room_id.as_str();
            if let Some(group) = state::merged_group(conn, room_id, many)? {
                return Ok(group);
            }
            let group = merge(conn, room, many)?;
            state::remember_merge(conn, room_id, many, group)?;
            Ok(group)
        }
    }
}

/// [`state_before`] of prev events we stored ourselves (our extremities, our own events): a
/// missing one means the store is damaged.
pub fn state_before_stored(
    conn: &mut DbConn,
    room: &RoomCtx,
    prev_events: &[OwnedEventId],
) -> Result<i64, StoreError> {
    state_before(conn, room, prev_events).map_err(|e| match e {
        StateBeforeError::Store(e) => e,
        StateBeforeError::UnknownPrev(id) => {
            StoreError::Corrupt(format!("prev event {id} vanished"))
        }
    })
}

/// A new group equal to the resolution of several groups' states. It is based where the groups'
/// ancestries meet on the chain they all end on (the room's first chain), so that a merged group
/// hangs at most two chains from the root however many merges came before it: lookups and later
/// merges stay as cheap as in a room without forks.
fn merge(conn: &mut DbConn, room: &RoomCtx, groups: &[i64]) -> Result<i64, StoreError> {
    let mut ancestries = HashMap::new();
    for g in groups {
        ancestries.insert(*g, state::ancestry(conn, *g)?);
    }
    let roots: HashSet<Option<i64>> =
        ancestries.values().map(|a| a.last().map(|(chain, _)| *chain)).collect();
    let base = match roots.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(root)] => {
            let pos = ancestries.values().filter_map(|a| a.last()).map(|(_, p)| *p).min();
            state::group_at(conn, *root, pos.unwrap_or_default())?
        }
        // Not expected (every group descends from the room's first one): the group holding the
        // most history.
        _ => {
            let weight = |g: &i64| ancestries[g].iter().map(|(_, pos)| pos + 1).sum::<i64>();
            *groups.iter().max_by_key(|g| (weight(g), **g)).unwrap_or(&groups[0])
        }
    };
    let others: Vec<i64> = groups.iter().copied().filter(|g| *g != base).collect();
    let base_is_a_state = groups.contains(&base);
    Ok(merge_with(conn, room, base, &others, base_is_a_state, ancestries)?.0)
}

/// Resolves `others` into `base`: a new group whose parent is `base`, and its delta relative to
/// `base`. Only keys changed on the others' side since they parted from `base` are read, so the
/// cost follows the size of the fork, not of the room or of `base`'s own history.
pub fn merge_into(
    conn: &mut DbConn,
    room: &RoomCtx,
    base: i64,
    others: &[i64],
) -> Result<(i64, Vec<(StateKey, String)>), StoreError> {
    merge_with(conn, room, base, others, true, HashMap::new())
}

/// `merge_into` with ancestries already read (keyed by group). `base_is_a_state`: whether
/// `base`'s state is one of those resolved, or only where the others' states meet.
fn merge_with(
    conn: &mut DbConn,
    room: &RoomCtx,
    base: i64,
    others: &[i64],
    base_is_a_state: bool,
    mut ancestries: HashMap<i64, Vec<(i64, i64)>>,
) -> Result<(i64, Vec<(StateKey, String)>), StoreError> {
    let mut ancestry_of = |conn: &mut DbConn, g: i64| -> Result<Vec<(i64, i64)>, StoreError> {
        match ancestries.remove(&g) {
            Some(a) => Ok(a),
            None => state::ancestry(conn, g),
        }
    };
    let base_anc: HashMap<i64, i64> = ancestry_of(conn, base)?.into_iter().collect();
    let mut sides = Vec::with_capacity(others.len());
    for other in others {
        sides.push(ancestry_of(conn, *other)?);
    }
    // Base's values for every key on any side's exclusive segments, in one query.
    let all_segments: Vec<(i64, i64, i64)> =
        sides.iter().flat_map(|chains| segments(chains, &base_anc)).collect();
    let base_values: HashMap<StateKey, String> =
        state::values_for_segment_keys(conn, base, &all_segments)?.into_iter().collect();
    // Per key: base's value, and every distinct value the other sides bring.
    let mut values: BTreeMap<StateKey, Vec<Option<String>>> = BTreeMap::new();
    let mut conflicted = false;
    for chains in &sides {
        let anc: HashMap<i64, i64> = chains.iter().copied().collect();
        let exclusive = exclusive_values(conn, chains, &base_anc)?;
        for (key, theirs) in exclusive {
            let theirs = Some(theirs);
            let base_value = base_values.get(&key).cloned();
            if theirs == base_value {
                continue;
            }
            let entry = values.entry(key.clone()).or_insert_with(|| vec![base_value.clone()]);
            if !entry.contains(&theirs) {
                entry.push(theirs);
            }
            // Changed on base's side too since the fork: a real conflict.
            if base_value.is_some() && changed_since(conn, &base_anc, &anc, &key)? {
                conflicted = true;
            }
            let distinct: HashSet<&String> = entry.iter().skip(1).flatten().collect();
            if distinct.len() > 1 {
                conflicted = true;
            }
        }
    }
    let resolved: BTreeMap<StateKey, String> = if conflicted {
        let mut groups = if base_is_a_state { vec![base] } else { Vec::new() };
        groups.extend_from_slice(others);
        let per_group =
            |conn: &mut DbConn| -> Result<BTreeMap<StateKey, Vec<Option<String>>>, StoreError> {
                let mut out = BTreeMap::new();
                for key in values.keys() {
                    let mut vs = Vec::with_capacity(groups.len());
                    for g in &groups {
                        vs.push(state::lookup(conn, *g, &key.0, &key.1)?);
                    }
                    out.insert(key.clone(), vs);
                }
                Ok(out)
            };
        let table = per_group(conn)?;
        resolve(conn, room, &groups, &table)?
    } else {
        values
            .iter()
            .filter_map(|(k, vs)| {
                vs.iter().skip(1).flatten().next().map(|v| (k.clone(), v.clone()))
            })
            .collect()
    };
    let mut delta = Vec::new();
    for (key, value) in resolved {
        if values.get(&key).and_then(|vs| vs[0].as_ref()) != Some(&value) {
            delta.push((key, value));
        }
    }
    let group = state::new_group(conn, room.room_id.as_str(), Some(base), &delta)?;
    Ok((group, delta))
}

/// Keys changed on chain segments of `of` (nearest chain first) that `relative_to` does not
/// include, with their value in `of`: the newest row of the nearest such chain (when a nearer
/// chain is partly shared, every farther chain is shared too, so no shared row can override).
fn exclusive_values(
    conn: &mut DbConn,
    of: &[(i64, i64)],
    relative_to: &HashMap<i64, i64>,
) -> Result<BTreeMap<StateKey, String>, StoreError> {
    let segments = segments(of, relative_to);
    let rows = state::segment_rows(conn, &segments)?;
    let mut values = BTreeMap::new();
    // Nearest chain first; within a chain the newest row (rows come newest first).
    for (chain, _) in of {
        for (row_chain, key, event_id) in &rows {
            if row_chain == chain {
                values.entry(key.clone()).or_insert_with(|| event_id.clone());
            }
        }
    }
    Ok(values)
}

/// `(chain, lo, hi)` of the segments of `of` that `relative_to` does not include.
fn segments(of: &[(i64, i64)], relative_to: &HashMap<i64, i64>) -> Vec<(i64, i64, i64)> {
    of.iter()
        .filter_map(|(chain, pos)| {
            let lo = relative_to.get(chain).copied().unwrap_or(-1);
            (lo < *pos).then_some((*chain, lo, *pos))
        })
        .collect()
}

/// Whether `key` changed on segments of `of` that `relative_to` does not include.
fn changed_since(
    conn: &mut DbConn,
    of: &HashMap<i64, i64>,
    relative_to: &HashMap<i64, i64>,
    key: &StateKey,
) -> Result<bool, StoreError> {
    for (chain, pos) in of {
        let lo = relative_to.get(chain).copied().unwrap_or(-1);
        if lo < *pos && state::key_changed(conn, *chain, lo, *pos, &key.0, &key.1)? {
            return Ok(true);
        }
    }
    Ok(false)
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
