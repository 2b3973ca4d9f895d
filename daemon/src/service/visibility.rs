//! history_visibility for servers with no joined user now (KNOCK-SPEC H.46).
//!
//! Per event, from the state before it, read for the asking server's users the way the spec
//! reads it for a user: `world_readable` is visible to all; `shared` if one of them was joined
//! then or joined later; `invited` if one was joined or invited then; `joined` if one was joined
//! then. An event the server may not see is answered redacted, as Synapse does.

use std::collections::HashMap;

use ruma::ServerName;
use serde_json::Value;

use crate::{
    matrix::{Pdu, event},
    room::{RoomCtx, load_pdus, parse_stored},
    store::{DbConn, StoreError, events as ev, rooms, state},
};

/// What the asking server's users have been in the room.
pub struct ServerView {
    joined_now: bool,
    /// Membership events of the server's users: event ID → (user, depth, membership).
    members: HashMap<String, (String, i64, String)>,
    users: Vec<String>,
}

fn membership(pdu: &Pdu) -> String {
    serde_json::from_str::<Value>(pdu.content.get())
        .ok()
        .and_then(|c| c["membership"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ServerView {
    pub fn load(conn: &mut DbConn, room_id: &str, origin: &ServerName) -> Result<Self, StoreError> {
        let joined_now = rooms::joined_servers(conn, room_id)?.iter().any(|s| s == origin.as_str());
        let mut members = HashMap::new();
        let mut users = Vec::new();
        if joined_now {
            // Sees everything: its memberships are never consulted.
            return Ok(Self { joined_now, members, users });
        }
        for (id, user, depth, text) in ev::member_events_of_server(conn, room_id, origin.as_str())?
        {
            let ours = ruma::UserId::parse(&user).is_ok_and(|u| u.server_name() == origin);
            if !ours {
                continue;
            }
            let pdu = parse_stored(&id, &text)?;
            if !users.contains(&user) {
                users.push(user.clone());
            }
            members.insert(id, (user, depth, membership(&pdu)));
        }
        Ok(Self { joined_now, members, users })
    }

    /// Whether the server has a joined user now (then it sees everything).
    pub fn joined_now(&self) -> bool {
        self.joined_now
    }

    /// Whether any of the server's users was ever joined or invited (a knock alone does not
    /// open the room's history, not even redacted).
    pub fn ever_member(&self) -> bool {
        self.members.values().any(|(_, _, m)| m == "join" || m == "invite")
    }

    /// Whether the server may see `pdu` in full.
    pub fn sees(&self, conn: &mut DbConn, pdu: &Pdu) -> Result<bool, StoreError> {
        if self.joined_now || pdu.event_type.to_string() == "m.room.create" {
            return Ok(true);
        }
        let Some(group) = ev::state_before(conn, pdu.event_id.as_str())? else {
            return Ok(false);
        };
        let hv_key = ("m.room.history_visibility".to_owned(), String::new());
        let mut keys = vec![hv_key.clone()];
        keys.extend(self.users.iter().map(|u| ("m.room.member".to_owned(), u.clone())));
        let found = state::lookup_many(conn, group, &keys)?;
        // Absent or unreadable: "shared", the spec's default.
        let visibility = match found.get(&hv_key) {
            Some(id) => load_pdus(conn, std::slice::from_ref(id))?
                .pop()
                .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
                .and_then(|c| c["history_visibility"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "shared".to_owned()),
            None => "shared".to_owned(),
        };
        let at: Vec<&str> = found
            .iter()
            .filter(|(k, _)| k.0 == "m.room.member")
            .filter_map(|(_, id)| self.members.get(id).map(|(_, _, m)| m.as_str()))
            .collect();
        let joined_then = at.contains(&"join");
        Ok(match visibility.as_str() {
            "world_readable" => true,
            "shared" => {
                joined_then
                    || self.members.values().any(|(_, depth, m)| m == "join" && *depth >= pdu.depth)
            }
            "invited" => joined_then || at.contains(&"invite"),
            _ => joined_then,
        })
    }

    /// `pdus` as this server may see them: in full, or redacted.
    pub fn filter(
        &self,
        conn: &mut DbConn,
        room: &RoomCtx,
        pdus: Vec<Pdu>,
    ) -> Result<Vec<Pdu>, StoreError> {
        let mut out = Vec::with_capacity(pdus.len());
        for pdu in pdus {
            if self.sees(conn, &pdu)? {
                out.push(pdu);
                continue;
            }
            let redacted =
                event::redact((*pdu.json).clone(), &room.rules).map_err(StoreError::Corrupt)?;
            out.push(
                Pdu::from_canonical(pdu.event_id.clone(), redacted).map_err(StoreError::Corrupt)?,
            );
        }
        Ok(out)
    }
}
