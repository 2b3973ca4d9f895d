//! Admin API request and response bodies.

use serde::{Deserialize, Serialize};

/// A Matrix-style error body: `{"errcode": "M_…", "error": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code such as `M_NOT_FOUND`.
    pub errcode: String,
    /// Human-readable message.
    pub error: String,
}

/// `POST /rooms`: create a room that knockd hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    /// Room version, "7" to "12"; default "10".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_version: Option<String>,
    /// `m.room.name`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `m.room.topic`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// `m.room.avatar` URL (`mxc://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Canonical alias on this server (`#name:server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `knock` (default), `knock_restricted` (v10+), `invite` or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_rule: Option<String>,
    /// Room IDs whose members may join a `knock_restricted` room directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// `m.room.history_visibility`; default `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_visibility: Option<String>,
}

/// `POST /rooms` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoomResponse {
    /// The new room's ID.
    pub room_id: String,
    /// Its room version.
    pub room_version: String,
}

/// One entry of a room's current state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// State key.
    pub state_key: String,
    /// The event holding it.
    pub event_id: String,
    /// Its sender.
    pub sender: String,
    /// Its content.
    pub content: serde_json::Value,
}

/// A hosted room, as listed and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// Room ID.
    pub room_id: String,
    /// Room version.
    pub room_version: String,
    /// The local user who created it.
    pub creator: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// `m.room.name`
    #[serde(default)]
    pub name: Option<String>,
    /// `m.room.topic`
    #[serde(default)]
    pub topic: Option<String>,
    /// `m.room.avatar` URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// `m.room.canonical_alias` alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// Current join rule.
    pub join_rule: String,
    /// `allow` room IDs of a restricted join rule.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `m.room.history_visibility`
    #[serde(default)]
    pub history_visibility: Option<String>,
    /// Users whose membership is `join`.
    pub joined_members: i64,
    /// Users whose membership is `knock`.
    pub knocking_members: i64,
    /// Number of forward extremities (more than one means the room graph has a fork).
    pub forward_extremities: i64,
}

/// `GET /rooms/{roomId}` answer: the summary plus the full current state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: RoomSummary,
    /// Current state, sorted by type and state key.
    pub state: Vec<StateEntry>,
}

/// `GET /rooms` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomList {
    /// Rooms, oldest first.
    pub rooms: Vec<RoomSummary>,
    /// Cursor for the next page, if any.
    pub next: Option<String>,
}
