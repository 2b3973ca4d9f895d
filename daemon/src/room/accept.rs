//! A received event through the room writer: steps 4–6 of the checks on receipt (format and
//! signatures were checked before the writer), then storing it as what it turned out to be.

use std::sync::Arc;

use super::{
    RoomTxn, auth_events,
    effects::{self, Effects, Source},
    loaded::Group,
    persist, soft_fail,
    state_before::{Missing, Mode, state_before},
};
use crate::{
    matrix::Pdu,
    store::{StoreError, events as ev},
};

/// The outcome of the auth checks.
#[derive(Debug)]
pub enum Verdict {
    /// Passed all three; `before` is the state before the event.
    Accepted { before: Arc<Group> },
    /// Failed against its auth events or the state before it: stored as rejected, never state.
    Rejected(String),
    /// Passed those but not the current state: stored, not in current state, not sent on.
    SoftFailed { before: Arc<Group>, reason: String },
    /// A prev event we do not have.
    MissingPrev(String),
}

/// Runs the auth rules three ways: against the event's auth events, the state before it, and
/// the current state.
pub fn decide(txn: &mut RoomTxn<'_>, pdu: &Pdu) -> Result<Verdict, StoreError> {
    let (conn, room) = txn.engine();
    if let Err(why) = auth_events::check_own(conn, room, pdu)? {
        return Ok(Verdict::Rejected(why));
    }
    let before = match state_before(conn, room, &pdu.prev_events, Mode::Store)? {
        Ok(g) => g,
        Err(Missing::Prev(id)) => return Ok(Verdict::MissingPrev(id)),
    };
    if let Err(e) = auth_events::check_state(conn, room, pdu, &before.state.clone())? {
        return Ok(Verdict::Rejected(format!("not allowed by the state before it: {e}")));
    }
    if let Err(reason) = soft_fail::check(conn, room, pdu, &before)? {
        return Ok(Verdict::SoftFailed { before, reason });
    }
    Ok(Verdict::Accepted { before })
}

/// The stored event with this ID, if any (any room, any status): whether a received event is
/// new.
pub fn stored(
    txn: &mut RoomTxn<'_>,
    event_id: &ruma::EventId,
) -> Result<Option<ev::EventRow>, StoreError> {
    let room_id = txn.room.ctx.room_id.to_string();
    if let Some(row) = txn.room.pending.event_row(event_id, &room_id) {
        return Ok(Some(row));
    }
    if let Some(known) = txn.room.known.get(event_id) {
        return Ok(known.clone());
    }
    ev::get(txn.engine().0, event_id.as_str())
}

/// How a decided event is stored.
#[derive(Clone, Copy, Debug)]
pub struct Placing {
    /// It is stored as an outlier now (part of a gap's state) and takes its place in the graph.
    pub outlier: bool,
    /// Its state before came from outside our graph (a gap): resolved into the current state.
    pub merge_before: bool,
}

/// Stores an accepted event and runs its effects.
pub fn store_accepted(
    txn: &mut RoomTxn<'_>,
    pdu: Pdu,
    before: &Arc<Group>,
    placing: Placing,
    source: Source<'_>,
) -> Result<Effects, StoreError> {
    let pdu = Arc::new(pdu);
    // An outlier's old row goes now, and the rows held so far are written to see what cites it.
    let (conn, room) = if placing.outlier { txn.engine_writing()? } else { txn.engine() };
    let change =
        persist::accepted(conn, room, &pdu, before, placing.outlier, placing.merge_before)?;
    effects::accepted(txn, &pdu, &change, source)
}

/// Stores a refused event: rejected, or soft-failed with its state before. An outlier refused
/// here stays what it was (part of a state we rely on).
pub fn store_refused(
    txn: &mut RoomTxn<'_>,
    pdu: &Pdu,
    verdict: &Verdict,
    outlier: bool,
) -> Result<(), StoreError> {
    // An outlier's old row goes now.
    let (conn, room) = if outlier { txn.engine_writing()? } else { txn.engine() };
    match verdict {
        Verdict::Rejected(_) if outlier => Ok(()),
        Verdict::Rejected(_) => persist::unaccepted(room, pdu, ev::REJECTED, None),
        Verdict::SoftFailed { before, .. } => {
            if outlier {
                persist::remove_outlier(conn, room, &pdu.event_id)?;
            }
            persist::soft_failed(conn, room, pdu, before)
        }
        Verdict::Accepted { .. } | Verdict::MissingPrev(_) => Ok(()),
    }
}
