//! A room as the engine holds it in memory: its current state, forward extremities, joined
//! servers, and the recent states and PDUs the auth rules read. Every map is persistent (`imbl`),
//! so a copy is cheap: a write works on a copy and keeps it only when it succeeds.

use std::{
    collections::BTreeSet,
    sync::{Arc, Weak},
};

use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules};

use crate::{
    matrix::{Pdu, event},
    store::{DbConn, StoreError, events as ev, rooms},
};

/// `(event type, state key)`
pub type StateKey = (String, String);
/// A room state: which event holds each key (ordered: all keys of a type are read as a range).
pub type StateMap = imbl::OrdMap<StateKey, OwnedEventId>;

/// How many PDUs a loaded room keeps, beyond the ones its current state needs.
const RECENT: usize = 1_024;
/// How many recent events with their state after a loaded room keeps, beyond its extremities
/// (each state's own part costs tens of kilobytes in a large room).
pub(super) const RECENT_STATES: usize = 256;
/// How many member events' facts for state resolution a loaded room keeps.
const FACTS: usize = 16_384;
/// How many states [`Group::meeting`] passes on its way up before giving up.
const MAX_STEPS: usize = 1_024;

/// Creation order of states: a parent is always older than what is made from it.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_seq() -> u64 {
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A room's identity and rules.
#[derive(Clone, Debug)]
pub struct RoomCtx {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
}

impl RoomCtx {
    pub fn load(conn: &mut DbConn, room_id: &str) -> Result<Option<Self>, StoreError> {
        let Some(row) = rooms::get(conn, room_id)? else { return Ok(None) };
        Self::from_row(&row).map(Some)
    }

    pub fn from_row(row: &rooms::RoomRow) -> Result<Self, StoreError> {
        let version = RoomVersionId::try_from(row.room_version.as_str())
            .map_err(|e| StoreError::Corrupt(format!("room {} version: {e}", row.room_id)))?;
        let rules = event::rules(&version).map_err(StoreError::Corrupt)?;
        let room_id = OwnedRoomId::try_from(row.room_id.as_str())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self { room_id, version, rules })
    }
}

/// Where a stored state group sits: its id, and `(chain, position)` of every state chain its
/// state draws on, its own first (what storing a group on top of it needs).
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: i64,
    pub ancestry: Arc<[(i64, i64)]>,
}

/// A state of the room, as stored in a state group. States made in this process know the state
/// they were made from and what changed, so what two of them differ in is found without
/// comparing them whole.
#[derive(Debug)]
pub struct Group {
    /// The stored state group; `None` for a state worked out to answer a question, not stored.
    pub id: Option<i64>,
    /// How many state chains the stored group draws on (what reading it costs); 0 when not
    /// stored.
    pub chains: usize,
    /// The stored group's ancestry, when known.
    pub ancestry: Option<Arc<[(i64, i64)]>>,
    pub state: StateMap,
    /// The state this one was made from (kept alive by the room's recent events, not by this).
    pub parent: Option<Weak<Group>>,
    /// The keys changed since `parent`.
    pub changed: Vec<StateKey>,
    /// When it was made (see [`Group::meeting`]).
    seq: u64,
}

impl Group {
    /// A state already stored.
    pub fn stored(stored: Stored, state: StateMap) -> Arc<Self> {
        Arc::new(Self {
            id: Some(stored.id),
            chains: stored.ancestry.len(),
            ancestry: Some(stored.ancestry),
            state,
            parent: None,
            changed: Vec::new(),
            seq: next_seq(),
        })
    }

    /// A state stored whole (or not stored), with no parent.
    pub fn whole(state: StateMap, stored: Option<Stored>) -> Arc<Self> {
        let changed = state.keys().cloned().collect();
        Arc::new(Self {
            id: stored.as_ref().map(|s| s.id),
            chains: stored.as_ref().map_or(0, |s| s.ancestry.len()),
            ancestry: stored.map(|s| s.ancestry),
            state,
            parent: None,
            changed,
            seq: next_seq(),
        })
    }

    /// The state before the create event.
    pub fn empty() -> Arc<Self> {
        Arc::new(Self {
            id: None,
            chains: 0,
            ancestry: None,
            state: StateMap::new(),
            parent: None,
            changed: Vec::new(),
            seq: next_seq(),
        })
    }

    /// A new state: `parent` with `changes` applied, stored (or not).
    pub fn derived(
        parent: &Arc<Group>,
        changes: &[(StateKey, OwnedEventId)],
        stored: Option<Stored>,
    ) -> Arc<Self> {
        let mut state = parent.state.clone();
        for (key, event_id) in changes {
            state.insert(key.clone(), event_id.clone());
        }
        Arc::new(Self {
            id: stored.as_ref().map(|s| s.id),
            chains: stored.as_ref().map_or(0, |s| s.ancestry.len()),
            ancestry: stored.map(|s| s.ancestry),
            state,
            parent: Some(Arc::downgrade(parent)),
            changed: changes.iter().map(|(k, _)| k.clone()).collect(),
            seq: next_seq(),
        })
    }

    pub fn id(&self) -> Option<i64> {
        self.id
    }

    pub fn same(a: &Arc<Group>, b: &Arc<Group>) -> bool {
        Arc::ptr_eq(a, b) || (a.id.is_some() && a.id == b.id)
    }

    /// Where `groups` meet: their nearest common ancestor in memory, if found within a bounded
    /// walk. The newest state of those not yet met moves up to its parent until all are one: a
    /// parent is always older than its children, so the meeting point is never passed.
    pub fn meeting(groups: &[Arc<Group>]) -> Option<Arc<Group>> {
        let mut frontier: std::collections::BTreeMap<u64, Arc<Group>> =
            groups.iter().map(|g| (g.seq, g.clone())).collect();
        for _ in 0..MAX_STEPS {
            if frontier.len() == 1 {
                return frontier.pop_first().map(|(_, met)| met);
            }
            let (_, newest) = frontier.pop_last()?;
            let parent = newest.parent.as_ref().and_then(Weak::upgrade)?;
            frontier.insert(parent.seq, parent);
        }
        None
    }

    /// This state or the nearest of its ancestors in memory that `wanted`, within a bounded
    /// walk.
    pub fn nearest_ancestor(
        self: &Arc<Self>,
        wanted: impl Fn(&Group) -> bool,
    ) -> Option<Arc<Self>> {
        let mut at = self.clone();
        for _ in 0..MAX_STEPS {
            if wanted(&at) {
                return Some(at);
            }
            at = at.parent.as_ref().and_then(Weak::upgrade)?;
        }
        None
    }

    /// The keys where `groups` differ. States made from one another share their unchanged
    /// parts, and comparing them skips what they share: the cost follows the differences, not
    /// the size of the room.
    pub fn differing_keys(groups: &[Arc<Group>]) -> BTreeSet<StateKey> {
        differing_keys(&groups.iter().map(|g| &g.state).collect::<Vec<_>>())
    }
}

/// The keys where `states` differ (see [`Group::differing_keys`]).
pub fn differing_keys(states: &[&StateMap]) -> BTreeSet<StateKey> {
    let mut keys = BTreeSet::new();
    let Some((first, rest)) = states.split_first() else { return keys };
    for other in rest {
        for item in first.diff(other) {
            let key = match item {
                imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k,
                imbl::ordmap::DiffItem::Update { new: (k, _), .. } => k,
            };
            keys.insert(key.clone());
        }
    }
    keys
}

/// What turns `base` into `into`: the keys to set, or `None` when `into` lacks a key `base` has
/// (stored groups only add).
pub fn additions(base: &StateMap, into: &StateMap) -> Option<Vec<(StateKey, OwnedEventId)>> {
    let mut out = Vec::new();
    for item in base.diff(into) {
        match item {
            imbl::ordmap::DiffItem::Add(k, v) => out.push((k.clone(), v.clone())),
            imbl::ordmap::DiffItem::Update { new: (k, v), .. } => out.push((k.clone(), v.clone())),
            imbl::ordmap::DiffItem::Remove(..) => return None,
        }
    }
    Some(out)
}

/// A recent accepted event: its depth and the state after it.
#[derive(Clone, Debug)]
pub struct Placed {
    pub depth: i64,
    pub after: Arc<Group>,
    seq: u64,
}

/// The room as the engine holds it.
#[derive(Clone, Debug)]
pub struct LoadedRoom {
    pub ctx: RoomCtx,
    /// The room row's version this copy matches.
    pub version: i64,
    /// Whether the current batch changed what other instances hold in memory (the current
    /// state, extremities, cached events): the version is then bumped.
    pub touched: bool,
    pub current: Arc<Group>,
    /// The current state as the store holds it (the batch writes `current` at its end).
    pub flushed: Arc<Group>,
    /// Forward extremities and their depth.
    pub extremities: imbl::OrdMap<OwnedEventId, i64>,
    /// The forward extremities as the store holds them.
    pub flushed_extremities: imbl::OrdMap<OwnedEventId, i64>,
    /// Rows the batch writes when it ends.
    pub pending: super::pending::Pending,
    /// What the store held at the batch's start of events the batch's writes named (`None`: not
    /// stored), until something writes to the store directly.
    pub known: imbl::HashMap<OwnedEventId, Option<ev::EventRow>>,
    /// The ids the knocks written by this batch got, by event ID.
    pub knock_ids: imbl::HashMap<String, i64>,
    /// Joined members per server.
    pub joined: imbl::OrdMap<String, i64>,
    /// Recent accepted events (the extremities among them).
    placed: imbl::HashMap<OwnedEventId, Placed>,
    /// PDUs that may be cited as auth events: accepted or outlier events of this room.
    pdus: imbl::HashMap<OwnedEventId, (Arc<Pdu>, u64)>,
    /// States made by resolving several states together, by the sorted ids of those states.
    pub merges: imbl::HashMap<Vec<i64>, Arc<Group>>,
    /// What state resolution's fast path reads of recent member events (far smaller than the
    /// events: a burst of knocks from an old template is resolved against thousands of them).
    facts: imbl::HashMap<OwnedEventId, super::resolve::Facts>,
    /// The tip position of state chains this room's writer made (see `store::state`): this
    /// writer alone extends them, and another instance's write makes the room be read again.
    tips: imbl::HashMap<i64, i64>,
    seq: u64,
}

impl LoadedRoom {
    /// A room with no events yet (being created).
    pub fn empty(ctx: RoomCtx) -> Self {
        Self {
            ctx,
            version: 0,
            touched: false,
            current: Group::empty(),
            flushed: Group::empty(),
            extremities: imbl::OrdMap::new(),
            flushed_extremities: imbl::OrdMap::new(),
            pending: Default::default(),
            known: imbl::HashMap::new(),
            knock_ids: imbl::HashMap::new(),
            joined: imbl::OrdMap::new(),
            placed: imbl::HashMap::new(),
            pdus: imbl::HashMap::new(),
            merges: imbl::HashMap::new(),
            tips: imbl::HashMap::new(),
            facts: imbl::HashMap::new(),
            seq: 0,
        }
    }

    /// Reads the room from the store: current state, extremities, joined servers, and the PDUs
    /// of the current state's non-member events. `None` when the room is not hosted here.
    pub fn load(conn: &mut DbConn, room_id: &str) -> Result<Option<Self>, StoreError> {
        let Some(row) = rooms::get(conn, room_id)? else { return Ok(None) };
        let ctx = RoomCtx::from_row(&row)?;
        let mut state = StateMap::new();
        let mut non_members = Vec::new();
        for (t, k, id, _) in rooms::current_state_rows(conn, room_id)? {
            let id = OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if t != "m.room.member" {
                non_members.push(id.to_string());
            }
            state.insert((t, k), id);
        }
        let mut room = Self::empty(ctx);
        room.version = row.version;
        room.current = match row.current_group {
            Some(id) => {
                let ancestry = crate::store::state::ancestry(conn, id)?.into();
                Group::stored(Stored { id, ancestry }, state)
            }
            None => Group::empty(),
        };
        room.flushed = room.current.clone();
        for (id, depth) in ev::extremities(conn, room_id, i64::MAX)? {
            let id = OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            room.extremities.insert(id, depth);
        }
        room.flushed_extremities = room.extremities.clone();
        for (server, n) in rooms::joined_counts(conn, room_id)? {
            room.joined.insert(server, n);
        }
        // Memory holds only what may be cited as an auth event (a state from a gap may hold a
        // soft-failed event: read from the store when asked for).
        for (id, text) in ev::room_pdus(conn, room_id, &non_members, ev::AUTHORISED)? {
            room.remember_pdu(Arc::new(super::parse_stored(&id, &text)?));
        }
        Ok(Some(room))
    }

    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Remembers the resolution of the states `ids` (a memo: dropped whole past its bound).
    pub fn remember_merge(&mut self, ids: Vec<i64>, merged: Arc<Group>) {
        if self.merges.len() >= RECENT_STATES {
            self.merges = imbl::HashMap::new();
        }
        self.merges.insert(ids, merged);
    }

    /// The fast path's facts of a recent member event, if remembered.
    pub fn facts(&self, id: &ruma::EventId) -> Option<super::resolve::Facts> {
        self.facts.get(id).cloned()
    }

    /// Remembers a member event's facts (a memo: dropped whole past its bound).
    pub fn remember_facts(&mut self, pdu: &Pdu) {
        if pdu.event_type.to_string() != "m.room.member" {
            return;
        }
        if self.facts.len() >= FACTS {
            self.facts = imbl::HashMap::new();
        }
        self.facts.insert(pdu.event_id.clone(), super::resolve::Facts::of(pdu));
    }

    /// Drops the memo of chain tips (as happens when it reaches its bound).
    #[cfg(test)]
    pub fn forget_tips(&mut self) {
        self.tips = imbl::HashMap::new();
    }

    /// The tip of a state chain this writer made, if remembered.
    pub fn tip(&self, chain: i64) -> Option<i64> {
        self.tips.get(&chain).copied()
    }

    /// Remembers a chain's tip (a memo: dropped whole past its bound).
    pub fn remember_tip(&mut self, chain: i64, pos: i64) {
        if self.tips.len() >= 4 * RECENT && !self.tips.contains_key(&chain) {
            self.tips = imbl::HashMap::new();
        }
        self.tips.insert(chain, pos);
    }

    /// The state after a recent accepted event, if in memory.
    pub fn placed(&self, id: &OwnedEventId) -> Option<&Placed> {
        self.placed.get(id)
    }

    /// Marks a recent event as used just now (a prev event cited again stays in memory).
    pub fn touch_placed(&mut self, id: &OwnedEventId) {
        let seq = self.tick();
        if let Some(p) = self.placed.get_mut(id) {
            p.seq = seq;
        }
    }

    /// Remembers an accepted event and the state after it.
    pub fn place(&mut self, id: OwnedEventId, depth: i64, after: Arc<Group>) {
        let seq = self.tick();
        self.placed.insert(id, Placed { depth, after, seq });
        if self.placed.len() > 2 * RECENT_STATES {
            // The least recently used go (ticks count every use of either cache).
            let mut seqs: Vec<u64> = self.placed.values().map(|p| p.seq).collect();
            seqs.sort_unstable();
            let cut = seqs[seqs.len() - RECENT_STATES];
            let keep = self.extremities.clone();
            self.placed.retain(|id, p| p.seq >= cut || keep.contains_key(id));
        }
    }

    /// A cached PDU that may be cited as an auth event.
    pub fn pdu(&self, id: &ruma::EventId) -> Option<Arc<Pdu>> {
        self.pdus.get(id).map(|(p, _)| p.clone())
    }

    pub fn remember_pdu(&mut self, pdu: Arc<Pdu>) {
        let seq = self.tick();
        self.pdus.insert(pdu.event_id.clone(), (pdu, seq));
        if self.pdus.len() > 2 * RECENT {
            let cut = self.seq.saturating_sub(RECENT as u64);
            let pinned: std::collections::HashSet<OwnedEventId> = self
                .current
                .state
                .iter()
                .filter(|((t, _), _)| t != "m.room.member")
                .map(|(_, id)| id.clone())
                .collect();
            self.pdus.retain(|id, (_, seq)| *seq > cut || pinned.contains(id));
        }
    }

    /// An event that may no longer be cited (stored as rejected or soft-failed after being an
    /// outlier).
    /// Whether it was held.
    pub fn forget_pdu(&mut self, id: &ruma::EventId) -> bool {
        self.pdus.remove(id).is_some()
    }

    /// Forward extremities, deepest first.
    pub fn extremities_by_depth(&self) -> Vec<(OwnedEventId, i64)> {
        let mut out: Vec<(OwnedEventId, i64)> =
            self.extremities.iter().map(|(id, d)| (id.clone(), *d)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Servers with a joined member.
    pub fn joined_servers(&self) -> Vec<String> {
        self.joined.iter().filter(|(_, n)| **n > 0).map(|(s, _)| s.clone()).collect()
    }

    /// The current state's event for a key.
    pub fn current_id(&self, event_type: &str, state_key: &str) -> Option<&OwnedEventId> {
        self.current.state.get(&(event_type.to_owned(), state_key.to_owned()))
    }
}
