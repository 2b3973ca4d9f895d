//! Server ACLs and the cap on pending knocks, on every path a knock enters by (the knock queue
//! itself is fed by the room engine's effects).

use ruma::ServerName;

use super::{AppState, ServiceError};
use crate::{
    matrix::acl,
    room::{LoadedRoom, RoomTxn, effects, load_pdus, state_pdus},
    store::{DbConn, events as ev},
};

/// The wait suggested to a knock refused because the room's queue is full: moderators decide
/// knocks on their own time, so this is a hint, not a promise.
pub const PENDING_CAP_RETRY_MS: u64 = 60_000;

/// 429 when the room already has `max_pending` knocks waiting (`user`'s own, which a new knock
/// replaces, not counted). Inside the room's write, so concurrent knocks cannot both take the
/// last place, whether they came through send_knock or over /send. `max_pending` 0 is no cap.
pub fn check_pending_cap(
    txn: &mut RoomTxn<'_>,
    user: &str,
    max_pending: i64,
) -> Result<(), ServiceError> {
    if max_pending <= 0 {
        return Ok(());
    }
    let pending = effects::pending_knocks_except(txn, user)?;
    if pending < max_pending {
        return Ok(());
    }
    let room_id = &txn.room.ctx.room_id;
    tracing::info!(%room_id, pending, "knock refused: room's queue full");
    Err(ServiceError::LimitExceeded(
        format!(
            "this room has {pending} knocks waiting for a decision, the most it takes; try again \
             later"
        ),
        PENDING_CAP_RETRY_MS,
    ))
}

/// [`check_acl`] against the room as the engine holds it (the ACL event is kept in memory; the
/// store is asked only when it is not).
pub async fn check_acl_loaded(
    app: &AppState,
    room: &LoadedRoom,
    origin: &ServerName,
) -> Result<(), ServiceError> {
    let Some(id) = room.current_id("m.room.server_acl", "") else { return Ok(()) };
    let Some(pdu) = room.pdu(id) else {
        let (r, o) = (room.ctx.room_id.to_string(), origin.to_owned());
        return app.db.read(move |conn| check_acl(conn, &r, &o)).await;
    };
    if acl::allows(pdu.content.get(), origin) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!("server {origin} is denied by the room's server ACL")))
    }
}

/// 403 when the room's server ACL denies `origin` (KNOCK-SPEC B.7, C.14, H.45).
pub fn check_acl(
    conn: &mut DbConn,
    room_id: &str,
    origin: &ServerName,
) -> Result<(), ServiceError> {
    if let Some(id) = ev::current(conn, room_id, "m.room.server_acl", "")? {
        for pdu in load_pdus(conn, &[id])? {
            if !acl::allows(pdu.content.get(), origin) {
                return Err(ServiceError::Forbidden(format!(
                    "server {origin} is denied by the room's server ACL"
                )));
            }
        }
    }
    Ok(())
}

/// [`check_acl`] inside the room's write, where the state cannot change under us.
pub fn check_acl_in(txn: &mut RoomTxn<'_>, origin: &ServerName) -> Result<(), ServiceError> {
    let Some(id) = txn.room.current_id("m.room.server_acl", "").cloned() else { return Ok(()) };
    let pdu = match txn.room.pdu(&id) {
        Some(pdu) => Some(pdu),
        None => {
            let (conn, room, _) = txn.parts()?;
            state_pdus(conn, room, std::slice::from_ref(&id))?.remove(&id)
        }
    };
    match pdu {
        Some(pdu) if !acl::allows(pdu.content.get(), origin) => Err(ServiceError::Forbidden(
            format!("server {origin} is denied by the room's server ACL"),
        )),
        _ => Ok(()),
    }
}
