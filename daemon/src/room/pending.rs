//! Rows a batch holds back and writes together when it ends: the events it stored, the knocks
//! they queued and the PDUs they send, a few multi-row statements whatever the batch's size.
//!
//! They live in the room in memory, so a failed write that restores the room drops its own rows
//! too. Everything that reads those tables inside a batch either asks here first (the engine's
//! own reads) or goes through `RoomTxn::conn`, which writes them out before.

use std::sync::Arc;

use ruma::OwnedEventId;

use crate::{
    matrix::Pdu,
    store::{
        DbConn, StoreError, events as ev, knocks, outbox,
        state::{self, IdKind, NewChain, NewGroup},
    },
};

/// Ids reserved at a time for groups and chains not written yet.
const RESERVE: i64 = 64;

/// An event to store.
#[derive(Clone, Debug)]
pub struct PendingEvent {
    pub pdu: Arc<Pdu>,
    pub status: &'static str,
    pub state_before: Option<i64>,
    pub state_after: Option<i64>,
    /// The state after an accepted event (its group is held back too).
    pub after: Option<Arc<super::loaded::Group>>,
}

/// A knock to queue.
#[derive(Clone, Debug)]
pub struct PendingKnock {
    pub user_id: String,
    pub event_id: String,
    pub origin_server: String,
    pub reason: Option<String>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub content_redacted: bool,
    pub knock_room_state: String,
    pub now_ms: i64,
    /// Pending, or replaced by a later knock of the same user in the same batch.
    pub status: &'static str,
}

/// A PDU to send to a destination.
#[derive(Clone, Debug)]
struct PendingPdu {
    destination: String,
    payload: Arc<str>,
    now_ms: i64,
}

/// Ids reserved for rows not written yet (see `state::reserve_ids`).
#[derive(Clone, Debug, Default)]
struct Ids {
    free: Vec<i64>,
    /// The largest handed out.
    last: i64,
}

/// What a batch holds back (see the module's comment).
#[derive(Clone, Debug, Default)]
pub struct Pending {
    /// New state chains, by id (a chain made here may be extended here).
    chains: imbl::OrdMap<i64, NewChain>,
    groups: imbl::Vector<NewGroup>,
    /// New tips of stored chains extended here.
    tips: imbl::OrdMap<i64, i64>,
    group_ids: Ids,
    chain_ids: Ids,
    events: imbl::OrdMap<OwnedEventId, PendingEvent>,
    /// `events` in the order they were stored (the store's order is the order of arrival).
    order: imbl::Vector<OwnedEventId>,
    knocks: imbl::Vector<PendingKnock>,
    outbox: imbl::Vector<PendingPdu>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.knocks.is_empty()
            && self.outbox.is_empty()
            && self.groups.is_empty()
            && self.chains.is_empty()
            && self.tips.is_empty()
    }

    /// An id for a group or chain written with this batch's rows.
    pub fn take_id(&mut self, conn: &mut DbConn, kind: IdKind) -> Result<i64, StoreError> {
        let ids = match kind {
            IdKind::Group => &mut self.group_ids,
            IdKind::Chain => &mut self.chain_ids,
        };
        if ids.free.is_empty() {
            ids.free = state::reserve_ids(conn, kind, RESERVE, ids.last)?;
            ids.free.reverse();
        }
        let id = ids
            .free
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no state group id reserved".into()))?;
        ids.last = ids.last.max(id);
        Ok(id)
    }

    pub fn add_chain(&mut self, chain: NewChain) {
        self.chains.insert(chain.chain_id, chain);
    }

    /// The tip of a chain this batch extended or made, if it did.
    pub fn tip(&self, chain_id: i64) -> Option<i64> {
        self.chains.get(&chain_id).map(|c| c.tip_pos).or_else(|| self.tips.get(&chain_id).copied())
    }

    /// A chain's last group is now at `pos`.
    pub fn move_tip(&mut self, chain_id: i64, pos: i64) {
        match self.chains.get_mut(&chain_id) {
            Some(chain) => chain.tip_pos = pos,
            None => {
                self.tips.insert(chain_id, pos);
            }
        }
    }

    pub fn add_group(&mut self, group: NewGroup) {
        self.groups.push_back(group);
    }

    pub fn has_knocks(&self) -> bool {
        !self.knocks.is_empty()
    }

    /// An event held back, as the store would answer for it.
    pub fn event(&self, id: &ruma::EventId) -> Option<&PendingEvent> {
        self.events.get(id)
    }

    /// The stored-event row of an event held back.
    pub fn event_row(&self, id: &ruma::EventId, room_id: &str) -> Option<ev::EventRow> {
        let e = self.events.get(id)?;
        Some(ev::EventRow {
            event_id: id.to_string(),
            room_id: room_id.to_owned(),
            depth: e.pdu.depth,
            status: e.status.to_owned(),
            state_after: e.state_after,
            pdu: e.pdu.to_json_string(),
        })
    }

    pub fn add_event(&mut self, event: PendingEvent) {
        let id = event.pdu.event_id.clone();
        if self.events.insert(id.clone(), event).is_none() {
            self.order.push_back(id);
        }
    }

    /// Drops an outlier held back (it is stored again as what it turned out to be). Whether it
    /// was held.
    pub fn remove_outlier(&mut self, id: &ruma::EventId) -> bool {
        match self.events.get(id) {
            Some(e) if e.status == ev::OUTLIER => {
                self.events.remove(id);
                self.order.retain(|held| held != id);
                true
            }
            _ => false,
        }
    }

    /// Queues a knock; one held back for the same user becomes replaced.
    pub fn add_knock(&mut self, knock: PendingKnock) {
        for held in self.knocks.iter_mut() {
            if held.user_id == knock.user_id && held.status == knocks::PENDING {
                held.status = knocks::REPLACED;
            }
        }
        self.knocks.push_back(knock);
    }

    /// Users with a pending knock held back, and how many there are.
    pub fn pending_knock_users(&self) -> Vec<&str> {
        self.knocks
            .iter()
            .filter(|k| k.status == knocks::PENDING)
            .map(|k| k.user_id.as_str())
            .collect()
    }

    pub fn add_pdu(&mut self, destination: &str, payload: Arc<str>, now_ms: i64) {
        self.outbox.push_back(PendingPdu { destination: destination.to_owned(), payload, now_ms });
    }

    /// Writes everything held back and empties the buffer; returns the ids the queued knocks
    /// got, by event ID.
    pub fn write(
        &mut self,
        conn: &mut DbConn,
        room_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let Self { chains, groups, tips, events, order, knocks: queued, outbox: pdus, .. } =
            std::mem::take(self);
        let chains: Vec<NewChain> = chains.into_iter().map(|(_, c)| c).collect();
        let groups: Vec<NewGroup> = groups.into_iter().collect();
        let tips: Vec<(i64, i64)> = tips.into_iter().collect();
        state::insert_groups(conn, room_id, &chains, &groups, &tips)?;
        let texts: Vec<(String, String, &PendingEvent)> = order
            .iter()
            .filter_map(|id| events.get(id))
            .map(|e| (e.pdu.event_type.to_string(), e.pdu.to_json_string(), e))
            .collect();
        let rows: Vec<ev::NewEventRow<'_>> = texts
            .iter()
            .map(|(event_type, text, e)| ev::NewEventRow {
                event_id: e.pdu.event_id.as_str(),
                room_id,
                event_type,
                state_key: e.pdu.state_key.as_deref(),
                sender: e.pdu.sender.as_str(),
                origin_server_ts: i64::from(e.pdu.origin_server_ts.0),
                depth: e.pdu.depth,
                status: e.status,
                state_before: e.state_before,
                state_after: e.state_after,
                pdu: text,
            })
            .collect();
        ev::insert_many(conn, &rows)?;
        let mut ids = Vec::new();
        if !queued.is_empty() {
            let now = queued.iter().map(|k| k.now_ms).max().unwrap_or_default();
            let mut users: Vec<&str> = queued.iter().map(|k| k.user_id.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            knocks::replace_pending_many(conn, room_id, &users, now)?;
            let rows: Vec<knocks::NewKnock<'_>> = queued
                .iter()
                .map(|k| knocks::NewKnock {
                    room_id,
                    user_id: &k.user_id,
                    event_id: &k.event_id,
                    origin_server: &k.origin_server,
                    reason: k.reason.as_deref(),
                    display_name: k.display_name.as_deref(),
                    avatar_url: k.avatar_url.as_deref(),
                    content_redacted: k.content_redacted,
                    knock_room_state: &k.knock_room_state,
                    now_ms: k.now_ms,
                    status: k.status,
                })
                .collect();
            ids = knocks::insert_many(conn, &rows)?;
        }
        let items: Vec<outbox::NewItem<'_>> = pdus
            .iter()
            .map(|p| outbox::NewItem {
                destination: &p.destination,
                kind: outbox::KIND_PDU,
                payload: &p.payload,
                room_id,
                now_ms: p.now_ms,
            })
            .collect();
        outbox::enqueue_many(conn, &items)?;
        Ok(ids)
    }
}
