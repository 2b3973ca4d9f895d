//! Bounded forks: when a batch leaves a room with more forward extremities than the threshold
//! (`rooms.dummy_event_threshold`), knockd sends a dummy event (`org.matrix.dummy_event`, as Synapse does)
//! from a local member, citing up to [`crate::matrix::event::MAX_PREV_EVENTS`] of them. Concurrent knocks from
//! one template each fork the room; this joins the forks back, so extremities stay few and the
//! state before our next event stays cheap to work out.

use ruma::{OwnedEventId, UserId};
use serde_json::json;

use super::{RoomTxn, local};
use crate::{
    matrix::{EventTemplate, now_ms},
    store::StoreError,
};

/// Local members tried as the dummy event's sender, at most.
const SENDERS_TRIED: usize = 3;

/// Dummy events one batch sends at most (each joins 20 extremities into one).
const MAX_DUMMIES: usize = 8;

/// Sends dummy events while the room has more than `threshold` forward extremities (0: never),
/// at most [`MAX_DUMMIES`]; their IDs.
pub fn heal(txn: &mut RoomTxn<'_>, threshold: usize) -> Result<Vec<OwnedEventId>, StoreError> {
    let mut sent = Vec::new();
    while threshold > 0 && txn.room.extremities.len() > threshold && sent.len() < MAX_DUMMIES {
        match dummy(txn)? {
            Some(id) => sent.push(id),
            None => break,
        }
    }
    Ok(sent)
}

/// One dummy event citing up to 20 extremities, from the first local member allowed to send it.
fn dummy(txn: &mut RoomTxn<'_>) -> Result<Option<OwnedEventId>, StoreError> {
    let suffix = format!(":{}", txn.keys.server_name());
    let members = ("m.room.member".to_owned(), String::new())..;
    let mut senders: Vec<ruma::OwnedUserId> = txn
        .room
        .current
        .state
        .range(members)
        .take_while(|((t, _), _)| t == "m.room.member")
        .filter(|((_, k), _)| k.ends_with(&suffix))
        .filter_map(|((_, k), _)| UserId::parse(k).ok())
        .collect();
    senders.sort();
    for sender in senders.into_iter().take(SENDERS_TRIED) {
        let template = EventTemplate {
            event_type: "org.matrix.dummy_event".to_owned(),
            state_key: None,
            sender,
            content: json!({}),
        };
        match local::append(txn, &template, now_ms(), &[]) {
            Ok(pdu) => return Ok(Some(pdu.event_id)),
            // Not joined, or not allowed to send it: the next one.
            Err(StoreError::Rejected(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
