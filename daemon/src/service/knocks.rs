//! Server ACLs on the knock endpoints (the knock queue itself is fed by the room engine's
//! effects).

use ruma::ServerName;

use super::ServiceError;
use crate::{
    matrix::acl,
    room::load_pdus,
    store::{DbConn, events as ev},
};

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
