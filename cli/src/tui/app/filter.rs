//! The filter: which knocks the queue asks knockd for (status, room, server, user) and a free
//! text matched against the loaded rows. Written and read as `room:R status:S server:X user:U
//! text` in the filter line.

use knockd_shared::{KnockQuery, KnockSummary};

use super::{App, Effect, Mode};
use crate::cli::STATUSES;

/// Statuses `s` steps through.
const CYCLE: [&str; 4] = ["pending", "approve_failed", "delivery_pending", "all"];

/// A room the filter can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomChoice {
    pub room_id: String,
    pub name: Option<String>,
}

/// What the queue shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// A knock status, or `all`.
    pub status: String,
    /// A room ID.
    pub room: Option<String>,
    pub server: Option<String>,
    pub user: Option<String>,
    /// Free text, matched case-insensitively against the loaded rows.
    pub text: String,
}

impl Default for Query {
    fn default() -> Self {
        Self { status: "pending".into(), room: None, server: None, user: None, text: String::new() }
    }
}

impl Query {
    /// The filter line's text for this query.
    pub fn expr(&self) -> String {
        let mut parts = Vec::new();
        if let Some(room) = &self.room {
            parts.push(format!("room:{room}"));
        }
        if self.status != "pending" {
            parts.push(format!("status:{}", self.status));
        }
        if let Some(server) = &self.server {
            parts.push(format!("server:{server}"));
        }
        if let Some(user) = &self.user {
            parts.push(format!("user:{user}"));
        }
        if !self.text.is_empty() {
            parts.push(self.text.clone());
        }
        parts.join(" ")
    }

    /// The API query for a page starting after cursor `from`.
    pub fn knock_query(&self, from: Option<String>) -> KnockQuery {
        KnockQuery {
            status: Some(self.status.clone()),
            room_id: self.room.clone(),
            server: self.server.clone(),
            user_id: self.user.clone(),
            from,
            limit: Some(super::PAGE),
        }
    }

    /// Whether a knock with this status belongs in the queue.
    pub fn status_matches(&self, status: &str) -> bool {
        self.status == "all" || self.status == status
    }

    /// The free text, lowercased, if any.
    pub fn needle(&self) -> Option<String> {
        (!self.text.is_empty()).then(|| self.text.to_lowercase())
    }

    fn same_server_side(&self, other: &Query) -> bool {
        (&self.status, &self.room, &self.server, &self.user)
            == (&other.status, &other.room, &other.server, &other.user)
    }
}

/// Whether a knock matches the lowercased free text.
pub fn matches(k: &KnockSummary, needle: &str) -> bool {
    let fields = [
        Some(k.user_id.as_str()),
        k.display_name.as_deref(),
        k.room_name.as_deref(),
        Some(k.origin_server.as_str()),
        k.reason.as_deref(),
    ];
    fields.into_iter().flatten().any(|f| contains_folded(f, needle))
}

/// Whether `hay` contains the lowercased `needle`, ignoring case; without allocating for ASCII.
fn contains_folded(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() && needle.is_ascii() {
        let n = needle.as_bytes();
        return n.is_empty() || hay.as_bytes().windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

/// Parses the filter line; rooms may be named by ID, name, or a unique part of the name.
pub fn parse(input: &str, rooms: &[RoomChoice]) -> Result<Query, String> {
    let mut query = Query::default();
    let mut text = Vec::new();
    for word in input.split_whitespace() {
        match word.split_once(':') {
            Some(("room", r)) => query.room = Some(find_room(r, rooms)?),
            Some(("status", s)) if STATUSES.contains(&s) => query.status = s.to_owned(),
            Some(("status", s)) => {
                return Err(format!("unknown status {s:?}: one of {}", STATUSES.join(", ")));
            }
            Some(("server", s)) => query.server = Some(s.to_owned()),
            Some(("user", u)) => query.user = Some(u.to_owned()),
            _ => text.push(word),
        }
    }
    query.text = text.join(" ");
    Ok(query)
}

fn find_room(wanted: &str, rooms: &[RoomChoice]) -> Result<String, String> {
    if wanted.starts_with('!') {
        return Ok(wanted.to_owned());
    }
    let lower = wanted.to_lowercase();
    let name = |r: &RoomChoice| r.name.as_deref().unwrap_or("").to_lowercase();
    if let Some(r) = rooms.iter().find(|r| name(r) == lower) {
        return Ok(r.room_id.clone());
    }
    let partial: Vec<&RoomChoice> = rooms.iter().filter(|r| name(r).contains(&lower)).collect();
    match partial.as_slice() {
        [r] => Ok(r.room_id.clone()),
        [] => Err(format!("no room is called {:?}", crate::tui::sanitize::clean(wanted))),
        _ => {
            Err(format!("{} rooms match {:?}", partial.len(), crate::tui::sanitize::clean(wanted)))
        }
    }
}

impl App {
    /// The room's name when known, else its ID.
    pub fn room_label(&self, room_id: &str) -> String {
        self.rooms
            .iter()
            .find(|r| r.room_id == room_id)
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| room_id.to_owned())
    }

    pub(super) fn apply_filter(&mut self) -> Vec<Effect> {
        match parse(&self.filter_input, &self.rooms) {
            Ok(query) => {
                self.mode = Mode::Normal;
                self.set_query(query)
            }
            Err(e) => {
                self.error(e);
                Vec::new()
            }
        }
    }

    /// Shows another query: refilters locally when only the free text changed, else reloads.
    pub(super) fn set_query(&mut self, query: Query) -> Vec<Effect> {
        if query == self.query {
            return Vec::new();
        }
        let local = query.same_server_side(&self.query);
        self.query = query;
        if local {
            let selected = self.selected_knock().map(|k| k.id);
            self.view = None;
            self.refilter_from(0);
            self.reselect(selected);
            return self.settle();
        }
        self.knocks.clear();
        self.view = None;
        (self.next, self.selected, self.offset) = (None, 0, 0);
        (self.loaded, self.want_end, self.stale) = (false, false, false);
        self.detail = None;
        vec![self.request(0)]
    }

    pub(super) fn cycle_status(&mut self) -> Vec<Effect> {
        let at = CYCLE.iter().position(|s| *s == self.query.status);
        let status = CYCLE[at.map_or(0, |i| (i + 1) % CYCLE.len())];
        let query = Query { status: status.to_owned(), ..self.query.clone() };
        self.info(format!("showing {status} knocks"));
        self.set_query(query)
    }

    pub(super) fn cycle_room(&mut self) -> Vec<Effect> {
        if self.rooms.is_empty() {
            self.error("no rooms known (r reloads them)");
            return Vec::new();
        }
        let at =
            self.query.room.as_ref().and_then(|r| self.rooms.iter().position(|c| c.room_id == *r));
        let room = match at {
            None => Some(self.rooms[0].room_id.clone()),
            Some(i) => self.rooms.get(i + 1).map(|c| c.room_id.clone()),
        };
        let label = room.as_deref().map_or("all rooms".to_owned(), |r| self.room_label(r));
        self.info(format!("showing {}", crate::tui::sanitize::clean(&label)));
        let query = Query { room, ..self.query.clone() };
        self.set_query(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms() -> Vec<RoomChoice> {
        vec![
            RoomChoice { room_id: "!a:x".into(), name: Some("Lobby".into()) },
            RoomChoice { room_id: "!b:x".into(), name: Some("Lobby Annex".into()) },
            RoomChoice { room_id: "!c:x".into(), name: Some("Garden".into()) },
        ]
    }

    #[test]
    fn parses_fields_and_text() {
        let q = parse("room:lobby spam  status:all eggs user:@u:x", &rooms()).unwrap();
        assert_eq!(q.room.as_deref(), Some("!a:x"));
        assert_eq!(q.status, "all");
        assert_eq!(q.user.as_deref(), Some("@u:x"));
        assert_eq!(q.text, "spam eggs");
        assert_eq!(parse(&q.expr(), &rooms()).unwrap(), q);
        assert_eq!(parse("room:gard", &rooms()).unwrap().room.as_deref(), Some("!c:x"));
        assert!(parse("room:lob", &rooms()).unwrap_err().contains("2 rooms"));
        assert!(parse("room:nowhere", &rooms()).is_err());
        assert!(parse("status:bogus", &rooms()).is_err());
        assert_eq!(parse("", &rooms()).unwrap(), Query::default());
        assert!(contains_folded("Hello World", "o w") && contains_folded("ÉCOLE", "éco"));
        assert!(!contains_folded("abc", "abcd"));
    }
}
