//! State resolution of several states of a room: ruma's `state_res::resolve` (v2 for rooms
//! 7–11, v2.1 for 12) over the whole states and their auth chains, behind one fast path that
//! gives the same answer (a property test in `tests/resolve.rs` holds it to that).
//!
//! The fast path: where the states differ only by keys that some of them lack and the others
//! hold with one and the same knock (a user's knock on one fork, absent on the others, the usual
//! shape of concurrent knocks from one template), and each such knock cites only events every
//! state holds (create, power levels, join rules: the knocker had no membership where it
//! knocked), every such knock is in the result. Full resolution agrees: its full conflicted set
//! is those knocks plus at most events every state holds (an auth event cited on some forks
//! only), which its last step puts back anyway; no knock is a power event or cited by another;
//! and each knock passes the iterative auth checks, its auth state there being its own auth
//! events, the states' common part.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap as RumaStateMap, utils::event_id_set::EventIdSet},
};

use super::loaded::{StateKey, StateMap};
use crate::matrix::Pdu;

/// Which way a resolution went (for tests and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The states were equal on every key looked at.
    Equal,
    Fast,
    Full,
}

/// What the fast path reads of an event: little enough for a room to keep for many events.
#[derive(Clone, Debug)]
pub struct Facts {
    pub event_type: String,
    pub state_key: Option<String>,
    /// A knock by the user it is about.
    pub own_knock: bool,
    pub auth_events: Arc<[OwnedEventId]>,
}

impl Facts {
    pub fn of(pdu: &Pdu) -> Self {
        let event_type = pdu.event_type.to_string();
        let own_knock = event_type == "m.room.member"
            && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
            && pdu.membership().as_deref() == Some("knock");
        Self {
            event_type,
            state_key: pdu.state_key.clone(),
            own_knock,
            auth_events: pdu.auth_events.iter().cloned().collect(),
        }
    }
}

/// Resolves `states`. `keys` are the keys where they may differ (every key of every state when
/// unsure). `fetch` finds any event of the states and of their auth chains.
pub fn resolve(
    rules: &RoomVersionRules,
    states: &[&StateMap],
    keys: &BTreeSet<StateKey>,
    fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
) -> Result<(StateMap, Path), String> {
    let facts = |id: &EventId| fetch(id).map(|p| Facts::of(&p));
    resolve_with(rules, states, keys, fetch, &|_| {}, &facts)
}

/// [`resolve`], telling `prefetch` which events full resolution is about to read, a level of
/// the auth graph at a time (so that a store reads them in a few queries, not one each), with
/// `facts` answering the fast path (what `fetch` would, without the whole event).
pub fn resolve_with(
    rules: &RoomVersionRules,
    states: &[&StateMap],
    keys: &BTreeSet<StateKey>,
    fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
    prefetch: &dyn Fn(&[OwnedEventId]),
    facts: &dyn Fn(&EventId) -> Option<Facts>,
) -> Result<(StateMap, Path), String> {
    let conflicted: Vec<(&StateKey, Vec<Option<&OwnedEventId>>)> = keys
        .iter()
        .filter_map(|key| {
            let values: Vec<Option<&OwnedEventId>> = states.iter().map(|s| s.get(key)).collect();
            let first = values[0];
            values.iter().any(|v| *v != first).then_some((key, values))
        })
        .collect();
    if conflicted.is_empty() {
        return Ok((states[0].clone(), Path::Equal));
    }
    if let Some(state) = fast(states, &conflicted, facts) {
        return Ok((state, Path::Fast));
    }
    full_with(rules, states, fetch, prefetch).map(|s| (s, Path::Full))
}

/// The fast path, when it applies.
fn fast(
    states: &[&StateMap],
    conflicted: &[(&StateKey, Vec<Option<&OwnedEventId>>)],
    facts: &dyn Fn(&EventId) -> Option<Facts>,
) -> Option<StateMap> {
    let mut out = states[0].clone();
    let mut held_by_all: HashSet<OwnedEventId> = HashSet::new();
    for (key, values) in conflicted {
        let present: HashSet<&OwnedEventId> = values.iter().flatten().copied().collect();
        let [only] = present.into_iter().collect::<Vec<_>>()[..] else { return None };
        let pdu = facts(only)?;
        let is_knock = key.0 == "m.room.member"
            && pdu.own_knock
            && pdu.state_key.as_deref() == Some(key.1.as_str());
        if !is_knock {
            return None;
        }
        // A knock citing an event the states do not all hold (the same user's earlier knock or
        // leave, on one fork) brings that event into full resolution as auth difference, where
        // it is ordered against the knock by `origin_server_ts`, which its sender chooses: on
        // a fork where a user knocked twice (the second knock citing the first), with the second
        // stamped no later than the first, full resolution keeps the first knock. Found by the
        // property test in `tests/resolve.rs`.
        for id in pdu.auth_events.iter() {
            // The knocks cite the same few events: each is looked up once.
            if held_by_all.contains(id) {
                continue;
            }
            let cited = facts(id)?;
            let cited_key = (cited.event_type, cited.state_key?);
            if !states.iter().all(|s| s.get(&cited_key) == Some(id)) {
                return None;
            }
            held_by_all.insert(id.clone());
        }
        out.insert((*key).clone(), only.clone());
    }
    Some(out)
}

/// ruma's state resolution over the whole states.
pub fn full(
    rules: &RoomVersionRules,
    states: &[&StateMap],
    fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
) -> Result<StateMap, String> {
    full_with(rules, states, fetch, &|_| {})
}

/// [`full`] with a `prefetch` (see [`resolve_with`]).
pub fn full_with(
    rules: &RoomVersionRules,
    states: &[&StateMap],
    fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
    prefetch: &dyn Fn(&[OwnedEventId]),
) -> Result<StateMap, String> {
    let maps: Vec<RumaStateMap<OwnedEventId>> = states
        .iter()
        .map(|s| {
            s.iter()
                .map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone()))
                .collect()
        })
        .collect();
    // Every event of the states and of their auth chains, read once, a level at a time.
    let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
    let mut level: Vec<OwnedEventId> = {
        let all: HashSet<&OwnedEventId> = states.iter().flat_map(|s| s.values()).collect();
        all.into_iter().cloned().collect()
    };
    while !level.is_empty() {
        prefetch(&level);
        let mut next: HashSet<OwnedEventId> = HashSet::new();
        for id in level {
            let Some(pdu) = fetch(&id) else { continue };
            next.extend(pdu.auth_events.iter().filter(|a| !events.contains_key(*a)).cloned());
            events.insert(id, pdu);
        }
        level = next.into_iter().filter(|a| !events.contains_key(a)).collect();
    }
    let mut chain_of =
        |map: &RumaStateMap<OwnedEventId>| -> Result<EventIdSet<OwnedEventId>, String> {
            let mut set = EventIdSet::new();
            let mut stack: Vec<OwnedEventId> = map.values().cloned().collect();
            while let Some(id) = stack.pop() {
                let pdu = match events.get(&id) {
                    Some(p) => p.clone(),
                    None => {
                        let p = fetch(&id).ok_or_else(|| format!("event {id} is missing"))?;
                        events.insert(id.clone(), p.clone());
                        p
                    }
                };
                for a in &pdu.auth_events {
                    if set.insert(a.clone()) {
                        stack.push(a.clone());
                    }
                }
            }
            Ok(set)
        };
    let auth_chains = maps.iter().map(&mut chain_of).collect::<Result<Vec<_>, _>>()?;
    let state_res_rules = rules
        .state_res
        .v2_rules()
        .ok_or_else(|| "the room version has no v2 state resolution".to_owned())?;
    let resolved = state_res::resolve(
        &rules.authorization,
        state_res_rules,
        maps.iter(),
        auth_chains,
        |id: &EventId| events.get(id).cloned().or_else(|| fetch(id)).map(|p| (*p).clone()),
        |conflicted| Some(conflicted_subgraph(&events, fetch, conflicted)),
    )
    .map_err(|e| format!("state resolution failed: {e}"))?;
    // Built on the first state, so that it shares what it does not change with the states
    // resolved (comparing it with them then costs what differs, not the room's size).
    let mut out = states[0].clone();
    let resolved: std::collections::BTreeMap<StateKey, OwnedEventId> =
        resolved.into_iter().map(|((t, k), id)| ((t.to_string(), k), id)).collect();
    let gone: Vec<StateKey> = out.keys().filter(|k| !resolved.contains_key(*k)).cloned().collect();
    for key in gone {
        out.remove(&key);
    }
    for (key, id) in resolved {
        if out.get(&key) != Some(&id) {
            out.insert(key, id);
        }
    }
    Ok(out)
}

/// Events on auth-DAG paths between conflicted events (state resolution v2.1).
fn conflicted_subgraph(
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
    fetch: &dyn Fn(&EventId) -> Option<Arc<Pdu>>,
    conflicted: &RumaStateMap<Vec<OwnedEventId>>,
) -> EventIdSet<OwnedEventId> {
    let get = |id: &OwnedEventId| events.get(id).cloned().or_else(|| fetch(id));
    let targets: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    // Whether an event reaches a conflicted event through its auth events (iteratively, so a
    // long chain cannot overflow the stack).
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    let mut order: Vec<OwnedEventId> = Vec::new();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<(OwnedEventId, bool)> =
        targets.iter().map(|id| ((*id).clone(), false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            order.push(id);
            continue;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        stack.push((id.clone(), true));
        if let Some(pdu) = get(&id) {
            for a in &pdu.auth_events {
                if !seen.contains(a) {
                    stack.push((a.clone(), false));
                }
            }
        }
    }
    // `order` has every event after its auth events.
    for id in &order {
        let found = get(id).is_some_and(|pdu| {
            pdu.auth_events.iter().any(|a| targets.contains(a) || reaches.get(a) == Some(&true))
        });
        reaches.insert(id.clone(), found);
    }
    let mut out = EventIdSet::new();
    for id in order {
        if targets.contains(&id) || reaches.get(&id) == Some(&true) {
            out.insert(id);
        }
    }
    out
}
