//! The state before an event: the state after its prev events, resolved together when they
//! differ. Recent states come from memory; an older prev's state is read from the store once.

use std::sync::Arc;

use ruma::OwnedEventId;

use super::{
    Fetcher,
    loaded::{Group, LoadedRoom, StateKey, StateMap, Stored, additions},
    resolve,
};

/// A resolved state is stored based on a group drawing on at most this many state chains when
/// one will do (reading a group costs one probe per chain).
const MAX_CHAINS: usize = 2;

/// A base state and the changes from it.
type Changes = (Arc<Group>, Vec<(StateKey, OwnedEventId)>);
use crate::store::{DbConn, StoreError, events as ev, state};

/// Why there is no state before an event.
#[derive(Debug)]
pub enum Missing {
    /// A prev event we do not have as an accepted event of this room.
    Prev(String),
}

/// Whether an event of this status is part of the room's graph, which later events may cite as
/// a prev: accepted, or soft-failed (the spec: an event citing a soft-failed one is treated
/// normally).
fn in_graph(status: &str) -> bool {
    status == ev::ACCEPTED || status == ev::SOFT_FAILED
}

/// Whether states worked out are stored (inside a room write) or only looked at (a read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Store,
    Look,
}

/// The state after each prev event, then their resolution. A resolved state is stored and
/// remembered in [`Mode::Store`].
pub fn state_before(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    prev_events: &[OwnedEventId],
    mode: Mode,
) -> Result<Result<Arc<Group>, Missing>, StoreError> {
    let Some(first) = prev_events.first() else {
        return Ok(Err(Missing::Prev("no prev_events".to_owned())));
    };
    let unknown: Vec<String> = prev_events
        .iter()
        .filter(|id| room.placed(id).is_none())
        .map(|id| id.to_string())
        .collect();
    // Events this batch stored are not written yet: they answer first, with the state after
    // them as the batch holds it.
    let mut unknown = unknown;
    unknown.retain(|id| {
        let Ok(id) = ruma::EventId::parse(id) else { return true };
        match room.pending.event(&id) {
            Some(e) if in_graph(e.status) && e.after.is_some() => {
                let (depth, after) = (e.pdu.depth, e.after.clone());
                room.place(id, depth, after.unwrap_or_else(Group::empty));
                false
            }
            _ => true,
        }
    });
    if !unknown.is_empty() {
        let mut rows: Vec<ev::Placed> = Vec::new();
        let asked: Vec<String> =
            unknown.iter().filter(|id| !rows.iter().any(|r| &r.event_id == *id)).cloned().collect();
        if !asked.is_empty() {
            rows.extend(ev::placements(conn, &asked)?);
        }
        for id in &unknown {
            let row = rows.iter().find(|p| {
                &p.event_id == id && in_graph(&p.status) && p.room_id == room.ctx.room_id.as_str()
            });
            let Some(row) = row else { return Ok(Err(Missing::Prev(id.clone()))) };
            let group = match row.state_after {
                Some(group) => group,
                // Soft-failed before its state after was kept: as if we did not have it.
                None if row.status == ev::SOFT_FAILED => {
                    return Ok(Err(Missing::Prev(id.clone())));
                }
                None => return Err(StoreError::Corrupt(format!("event {id} has no state"))),
            };
            let after = if room.current.id() == Some(group) {
                room.current.clone()
            } else {
                let ancestry = state::ancestry(conn, group)?.into();
                Group::stored(Stored { id: group, ancestry }, load_state(conn, group)?)
            };
            let event_id = OwnedEventId::try_from(id.as_str())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            room.place(event_id, row.depth, after);
        }
    }
    for id in prev_events {
        room.touch_placed(id);
    }
    // Deepest first, one of each state.
    let mut placed: Vec<(i64, Arc<Group>)> = prev_events
        .iter()
        .filter_map(|id| room.placed(id).map(|p| (p.depth, p.after.clone())))
        .collect();
    placed.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut groups: Vec<Arc<Group>> = Vec::new();
    for (_, g) in placed {
        if !groups.iter().any(|h| Group::same(h, &g)) {
            groups.push(g);
        }
    }
    match groups.len() {
        0 => Ok(Err(Missing::Prev(first.to_string()))),
        1 => Ok(Ok(groups.remove(0))),
        _ => merge(conn, room, groups, mode).map(Ok),
    }
}

/// The resolution of several states, from memory when made before.
pub fn merge(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    groups: Vec<Arc<Group>>,
    mode: Mode,
) -> Result<Arc<Group>, StoreError> {
    let ids: Option<Vec<i64>> = groups.iter().map(|g| g.id()).collect();
    let memo = ids.map(|mut ids| {
        ids.sort_unstable();
        ids
    });
    if let Some(found) = memo.as_ref().and_then(|ids| room.merges.get(ids)) {
        return Ok(found.clone());
    }
    let keys = Group::differing_keys(&groups);
    let states: Vec<&StateMap> = groups.iter().map(|g| &g.state).collect();
    let fetch = Fetcher::new(conn, room);
    let resolved = resolve::resolve_with(
        &room.ctx.rules,
        &states,
        &keys,
        &|id| fetch.get(id),
        &|ids| fetch.prefetch(ids),
        &|id| room.facts(id).or_else(|| fetch.get(id).map(|p| resolve::Facts::of(&p))),
    );
    if let Some(e) = fetch.failure() {
        return Err(e);
    }
    let (resolved, _) = resolved.map_err(StoreError::Corrupt)?;
    // The stored group it is based on, of the states resolved and where they meet: the one it
    // differs least from, among those drawing on few state chains (cheap to read); the one
    // drawing on the fewest when none does. Stored groups add to their base, never take away:
    // a base holding a key resolution dropped (every value of it failed the auth checks) will
    // not do.
    let meeting = Group::meeting(&groups);
    // Above where they meet, the nearest state cheap to read.
    let shallow = meeting.as_ref().and_then(|m| m.nearest_ancestor(|g| g.chains <= MAX_CHAINS));
    let mut best: Option<((bool, usize, usize), Changes)> = None;
    // And the current state as last written: what a batch's resolved current state mostly
    // adds to.
    let flushed = Some(room.flushed.clone()).filter(|f| f.id.is_some());
    let bases =
        groups.iter().chain(meeting.as_ref()).chain(shallow.as_ref()).chain(flushed.as_ref());
    for base in bases.filter(|g| g.id.is_some()) {
        let Some(changes) = additions(&base.state, &resolved) else { continue };
        let deep = base.chains > MAX_CHAINS;
        let score = (deep, if deep { base.chains } else { changes.len() }, base.chains);
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, (base.clone(), changes)));
        }
    }
    let Some((_, (base, changes))) = best else {
        // No base lacks what was dropped (or none is stored): the state is stored whole.
        let stored = match mode {
            Mode::Store => {
                let all: Vec<(StateKey, OwnedEventId)> =
                    resolved.iter().map(|(k, id)| (k.clone(), id.clone())).collect();
                Some(super::persist::store_group(conn, room, None, &all)?)
            }
            Mode::Look => None,
        };
        let merged = Group::whole(resolved, stored);
        if let (Some(ids), Some(_)) = (memo, merged.id) {
            room.remember_merge(ids, merged.clone());
        }
        return Ok(merged);
    };
    let stored = match (mode, base.id) {
        (Mode::Store, Some(_)) => {
            Some(super::persist::store_group(conn, room, Some(&base), &changes)?)
        }
        _ => None,
    };
    let merged = Group::derived(&base, &changes, stored);
    if let (Some(ids), Some(_)) = (memo, merged.id) {
        room.remember_merge(ids, merged.clone());
    }
    Ok(merged)
}

/// The whole state of a stored group.
pub fn load_state(conn: &mut DbConn, group: i64) -> Result<StateMap, StoreError> {
    let mut out = StateMap::new();
    for (key, id) in state::full_state(conn, group)? {
        let id = OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        out.insert(key, id);
    }
    Ok(out)
}
