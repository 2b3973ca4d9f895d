//! Step 6 of the checks on receipt: an event whose state before is not the room's current state
//! must pass the auth rules against the current state too, or it is soft-failed (stored, never
//! part of the state, not sent on).

use std::sync::Arc;

use super::{LoadedRoom, auth_events::check_state, loaded::Group};
use crate::{
    matrix::Pdu,
    store::{DbConn, StoreError},
};

/// `Ok(Err(why))` when the event is soft-failed.
pub fn check(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    pdu: &Pdu,
    before: &Arc<Group>,
) -> Result<Result<(), String>, StoreError> {
    if Group::same(before, &room.current) {
        return Ok(Ok(()));
    }
    let current = room.current.state.clone();
    Ok(check_state(conn, room, pdu, &current)?
        .map_err(|e| format!("not allowed by the current state: {e}")))
}
