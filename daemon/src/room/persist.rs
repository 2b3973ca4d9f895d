//! Storing what was decided: the event row, its state group, forward extremities and the room's
//! current state, in the store and in memory alike.

use std::sync::Arc;

use ruma::OwnedEventId;

use super::{
    LoadedRoom, StateKey,
    loaded::{Group, Stored, additions},
    pending::PendingEvent,
    state_before::{Mode, merge},
    state_pdus,
};
use crate::{
    matrix::Pdu,
    store::{
        DbConn, StoreError, events as ev, rooms,
        state::{self, IdKind, NewChain, NewGroup},
    },
};

/// `(chain, position)` of each state chain a group draws on, its own first.
type Ancestry = Arc<[(i64, i64)]>;

/// Stores a state group: `parent` (a stored state, or none) plus `changes`. Written with the
/// batch's other rows; its id and place are known now. A group whose parent is the last of its
/// chain extends the chain; any other starts a chain based on the parent (see `store::state`).
pub fn store_group(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    parent: Option<&Group>,
    changes: &[(StateKey, OwnedEventId)],
) -> Result<Stored, StoreError> {
    store_group_on(conn, room, parent, changes, true)
}

/// [`store_group`]; with `may_extend` false the group always starts a chain of its own, so that a
/// side state (after a soft-failed event) never takes the tip the room's next states extend.
fn store_group_on(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    parent: Option<&Group>,
    changes: &[(StateKey, OwnedEventId)],
    may_extend: bool,
) -> Result<Stored, StoreError> {
    let delta: Vec<(StateKey, String)> =
        changes.iter().map(|(k, id)| (k.clone(), id.to_string())).collect();
    let parent: Option<(i64, Ancestry)> =
        match parent.and_then(|p| p.id.map(|id| (id, p.ancestry.clone()))) {
            Some((id, Some(ancestry))) => Some((id, ancestry)),
            Some((id, None)) => Some((id, state::ancestry(conn, id)?.into())),
            None => None,
        };
    let parent_ancestry: &[(i64, i64)] = parent.as_ref().map_or(&[], |(_, a)| &a[..]);
    let extend = match parent_ancestry.first().filter(|_| may_extend) {
        Some(&(chain, pos)) => {
            // What the batch holds first (the memo of tips may have been dropped since), then
            // the memo, then the store.
            let tip = match room.pending.tip(chain).or_else(|| room.tip(chain)) {
                Some(tip) => tip,
                None => state::chain_tip(conn, chain)?,
            };
            (tip == pos).then_some((chain, pos))
        }
        None => None,
    };
    let (chain_id, chain_pos, inherited) = match extend {
        Some((chain, pos)) => {
            room.pending.move_tip(chain, pos + 1);
            (chain, pos + 1, &parent_ancestry[1..])
        }
        None => {
            let chain = room.pending.take_id(conn, IdKind::Chain)?;
            let base_group = parent.as_ref().map(|(id, _)| *id);
            room.pending.add_chain(NewChain { chain_id: chain, base_group, tip_pos: 0 });
            (chain, 0, parent_ancestry)
        }
    };
    let mut own = vec![(chain_id, chain_pos)];
    own.extend_from_slice(inherited);
    let ancestry: Ancestry = own.into();
    let group_id = room.pending.take_id(conn, IdKind::Group)?;
    room.pending.add_group(NewGroup {
        group_id,
        chain_id,
        chain_pos,
        parent: parent.as_ref().map(|(id, _)| *id),
        ancestry: ancestry.clone(),
        delta,
    });
    room.remember_tip(chain_id, chain_pos);
    Ok(Stored { id: group_id, ancestry })
}

/// What storing an accepted event changed in the room's current state: the events now holding
/// the keys that changed.
#[derive(Debug, Default)]
pub struct CurrentChange {
    pub changed: Vec<Arc<Pdu>>,
}

/// Stores an accepted event whose state before is `before`. `outlier`: it was stored as an
/// outlier (part of a gap's state) and now takes its place in the graph. `merge_before`: the
/// state before it came from outside our graph (a gap), so it is resolved into the current state
/// even when the event itself changes no state.
pub fn accepted(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Arc<Pdu>,
    before: &Arc<Group>,
    outlier: bool,
    merge_before: bool,
) -> Result<CurrentChange, StoreError> {
    room.touched = true;
    if outlier {
        remove_outlier(conn, room, &pdu.event_id)?;
    }
    let key = pdu.state_key.as_ref().map(|k| (pdu.event_type.to_string(), k.clone()));
    let after = hold_in_graph(conn, room, pdu, before, ev::ACCEPTED)?;
    for p in &pdu.prev_events {
        room.extremities.remove(p);
    }
    room.extremities.insert(pdu.event_id.clone(), pdu.depth);
    // An outlier may arrive after events that cite it (a gap filled through /state_ids).
    if outlier {
        write_rows(conn, room)?;
        let room_id = room.ctx.room_id.to_string();
        if ev::is_cited(conn, &room_id, pdu.event_id.as_str(), pdu.depth)? {
            room.extremities.remove(&pdu.event_id);
        }
    }
    room.place(pdu.event_id.clone(), pdu.depth, after.clone());
    room.remember_pdu(pdu.clone());
    room.remember_facts(pdu);
    // The current state: the event's own state when it extends the current state; otherwise
    // the current state and the event's branch resolved together (KNOCK-SPEC H.40).
    let extends = Group::same(before, &room.current);
    let new_current = match (extends, &key) {
        (true, _) => after,
        // The resolved current state is stored once, when the batch ends (see [`flush`]).
        (false, Some(_)) => merge(conn, room, vec![room.current.clone(), after], Mode::Look)?,
        (false, None) if merge_before => {
            merge(conn, room, vec![room.current.clone(), after], Mode::Look)?
        }
        (false, None) => return Ok(CurrentChange::default()),
    };
    set_current(conn, room, new_current)
}

/// An outlier stored before is stored again as what it turned out to be: the old row goes.
pub fn remove_outlier(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    id: &ruma::EventId,
) -> Result<(), StoreError> {
    if !room.pending.remove_outlier(id) {
        ev::remove_outlier(conn, id.as_str())?;
    }
    Ok(())
}

/// Writes the rows the batch held back (events, knocks, PDUs to send), remembering the ids the
/// knocks got.
pub fn write_rows(conn: &mut DbConn, room: &mut LoadedRoom) -> Result<(), StoreError> {
    if room.pending.is_empty() {
        return Ok(());
    }
    let room_id = room.ctx.room_id.to_string();
    for (event_id, knock_id) in room.pending.write(conn, &room_id)? {
        room.knock_ids.insert(event_id, knock_id);
    }
    Ok(())
}

/// Stores an event that is not part of the room's state: rejected, or soft-failed (its state
/// before is kept for the latter, so later questions about it can be answered), or an outlier.
/// Holds `pdu` for the batch's write as an event of the graph (accepted or soft-failed) with the
/// state after it: `before`, and the event itself when it is a state event, stored on a chain of
/// its own when soft-failed (a side state never takes the tip the room's next states extend).
fn hold_in_graph(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Arc<Pdu>,
    before: &Arc<Group>,
    status: &'static str,
) -> Result<Arc<Group>, StoreError> {
    let after = match &pdu.state_key {
        None => before.clone(),
        Some(key) => {
            let changes = [((pdu.event_type.to_string(), key.clone()), pdu.event_id.clone())];
            let main_line = status == ev::ACCEPTED;
            let stored = store_group_on(conn, room, Some(before), &changes, main_line)?;
            Group::derived(before, &changes, Some(stored))
        }
    };
    room.pending.add_event(PendingEvent {
        pdu: pdu.clone(),
        status,
        state_before: before.id,
        state_after: after.id,
        after: Some(after.clone()),
    });
    Ok(after)
}

/// Stores a soft-failed event: not in current state, not a forward extremity, but in the graph
/// with its state after it, so that events citing it are placed as the spec says ("treated
/// normally").
pub fn soft_failed(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
    before: &Arc<Group>,
) -> Result<(), StoreError> {
    room.touched = true;
    let pdu = Arc::new(pdu.clone());
    let after = hold_in_graph(conn, room, &pdu, before, ev::SOFT_FAILED)?;
    // Other instances may hold it as an outlier that could be cited: they must forget it too.
    room.forget_pdu(&pdu.event_id);
    room.place(pdu.event_id.clone(), pdu.depth, after);
    Ok(())
}

pub fn unaccepted(
    room: &mut LoadedRoom,
    pdu: &Pdu,
    status: &'static str,
    before: Option<i64>,
) -> Result<(), StoreError> {
    room.pending.add_event(PendingEvent {
        pdu: Arc::new(pdu.clone()),
        status,
        state_before: before,
        state_after: None,
        after: None,
    });
    // Other instances may hold it as an outlier that could be cited: they must forget it too.
    if status != ev::OUTLIER && room.forget_pdu(&pdu.event_id) {
        room.touched = true;
    }
    Ok(())
}

/// The room's current state becomes `new_current`, in memory: what changed, with the joined
/// servers. The store follows at [`flush`].
pub fn set_current(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    new_current: Arc<Group>,
) -> Result<CurrentChange, StoreError> {
    if Group::same(&new_current, &room.current) {
        return Ok(CurrentChange::default());
    }
    let diff = CurrentDiff::between(conn, room, &room.current.clone(), &new_current)?;
    let changed = diff
        .set
        .iter()
        .map(|(_, new, _)| {
            diff.pdus
                .get(new)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("state event {new} is missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (server, delta) in diff.joined_deltas() {
        let n = room.joined.get(&server).copied().unwrap_or(0) + delta;
        room.joined.insert(server, n.max(0));
    }
    room.current = new_current;
    Ok(CurrentChange { changed })
}

/// Writes what the batch held back: its rows (see [`super::pending`]), the forward extremities
/// that changed, and the room's current state when it moved (the state group, stored now if it
/// was worked out in memory; the changed keys in one statement; the joined-server counts and
/// the room's pointer). Every batch ends with it, and it runs before anything outside the
/// engine reads the store inside a batch.
pub fn flush(conn: &mut DbConn, room: &mut LoadedRoom) -> Result<(), StoreError> {
    if room.current.id.is_none() && !Group::same(&room.current, &room.flushed) {
        let current = room.current.clone();
        room.current = store_state(conn, room, &current)?;
    }
    write_rows(conn, room)?;
    if room.extremities != room.flushed_extremities {
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for item in room.flushed_extremities.diff(&room.extremities) {
            match item {
                imbl::ordmap::DiffItem::Add(id, depth) => added.push((id.to_string(), *depth)),
                imbl::ordmap::DiffItem::Remove(id, _) => removed.push(id.to_string()),
                imbl::ordmap::DiffItem::Update { new: (id, depth), .. } => {
                    removed.push(id.to_string());
                    added.push((id.to_string(), *depth));
                }
            }
        }
        ev::change_extremities(conn, room.ctx.room_id.as_str(), &removed, &added)?;
        room.flushed_extremities = room.extremities.clone();
    }
    if Group::same(&room.current, &room.flushed) {
        return Ok(());
    }
    let room_id = room.ctx.room_id.to_string();
    let diff = CurrentDiff::between(conn, room, &room.flushed.clone(), &room.current.clone())?;
    let membership = |id: &OwnedEventId| diff.pdus.get(id).and_then(|p| p.membership());
    let rows: Vec<(String, String, String, Option<String>)> = diff
        .set
        .iter()
        .map(|((t, k), new, _)| {
            let is = (t == "m.room.member").then(|| membership(new)).flatten();
            (t.clone(), k.clone(), new.to_string(), is)
        })
        .collect();
    ev::set_current_many(conn, &room_id, &rows)?;
    let dropped: Vec<StateKey> = diff.dropped.iter().map(|(k, _)| k.clone()).collect();
    ev::delete_current_many(conn, &room_id, &dropped)?;
    for (server, delta) in diff.joined_deltas() {
        rooms::add_joined(conn, &room_id, &server, delta)?;
    }
    if let Some(id) = room.current.id {
        rooms::set_current_group(conn, &room_id, Some(id))?;
    }
    room.flushed = room.current.clone();
    Ok(())
}

/// Stores a state worked out in memory: as the changes from the stored state it was made from,
/// or whole when it has none.
fn store_state(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    group: &Arc<Group>,
) -> Result<Arc<Group>, StoreError> {
    let parent =
        group.parent.as_ref().and_then(std::sync::Weak::upgrade).filter(|p| p.id.is_some());
    if let Some(parent) = parent
        && let Some(changes) = additions(&parent.state, &group.state)
    {
        let stored = store_group(conn, room, Some(&parent), &changes)?;
        return Ok(Group::derived(&parent, &changes, Some(stored)));
    }
    let all: Vec<(StateKey, OwnedEventId)> =
        group.state.iter().map(|(k, id)| (k.clone(), id.clone())).collect();
    let stored = store_group(conn, room, None, &all)?;
    Ok(Group::whole(group.state.clone(), Some(stored)))
}

/// How one current state turns into another.
struct CurrentDiff {
    /// Keys set: the key, its new event, the event it replaces.
    set: Vec<(StateKey, OwnedEventId, Option<OwnedEventId>)>,
    /// Keys state resolution dropped (only where a key's every value failed the auth checks),
    /// with the event that held them.
    dropped: Vec<(StateKey, OwnedEventId)>,
    /// The PDUs of every event named above.
    pdus: std::collections::HashMap<OwnedEventId, Arc<Pdu>>,
}

impl CurrentDiff {
    fn between(
        conn: &mut DbConn,
        room: &mut LoadedRoom,
        old: &Arc<Group>,
        new: &Arc<Group>,
    ) -> Result<Self, StoreError> {
        let keys = Group::differing_keys(&[old.clone(), new.clone()]);
        let dropped: Vec<(StateKey, OwnedEventId)> = keys
            .iter()
            .filter(|k| !new.state.contains_key(*k))
            .filter_map(|k| Some((k.clone(), old.state.get(k)?.clone())))
            .collect();
        let set: Vec<(StateKey, OwnedEventId, Option<OwnedEventId>)> = keys
            .into_iter()
            .filter_map(|key| {
                let now = new.state.get(&key)?.clone();
                let was = old.state.get(&key).cloned();
                (was.as_ref() != Some(&now)).then_some((key, now, was))
            })
            .collect();
        let ids: Vec<OwnedEventId> = set
            .iter()
            .flat_map(|(_, now, was)| std::iter::once(now.clone()).chain(was.clone()))
            .chain(dropped.iter().map(|(_, id)| id.clone()))
            .collect();
        let pdus = state_pdus(conn, room, &ids)?;
        Ok(Self { set, dropped, pdus })
    }

    fn joined(&self, id: &OwnedEventId) -> bool {
        self.pdus.get(id).and_then(|p| p.membership()).as_deref() == Some("join")
    }

    /// Joined members gained (or lost) per server.
    fn joined_deltas(&self) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        let mut add = |key: &StateKey, delta: i64| {
            if key.0 == "m.room.member"
                && let Some((_, server)) = key.1.split_once(':')
            {
                *out.entry(server.to_owned()).or_insert(0) += delta;
            }
        };
        for (key, now, was) in &self.set {
            let (is, was) = (self.joined(now), was.as_ref().is_some_and(|w| self.joined(w)));
            if is != was {
                add(key, if is { 1 } else { -1 });
            }
        }
        for (key, was) in &self.dropped {
            if self.joined(was) {
                add(key, -1);
            }
        }
        out.retain(|_, d| *d != 0);
        out
    }
}
