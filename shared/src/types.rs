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
    /// List the room in the public room directory; default false.
    #[serde(default)]
    pub published: bool,
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
    /// Listed in the public room directory.
    #[serde(default)]
    pub published: bool,
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

/// One knock in the moderation queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnockSummary {
    /// Queue id (use it with show/approve/deny).
    pub id: i64,
    /// The room knocked on.
    pub room_id: String,
    /// Its name, if it has one.
    #[serde(default)]
    pub room_name: Option<String>,
    /// The knocker.
    pub user_id: String,
    /// The knocker's display name from the knock event.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The knocker's avatar URL from the knock event.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// The knock event.
    pub event_id: String,
    /// The reason the knocker gave (untrusted text).
    #[serde(default)]
    pub reason: Option<String>,
    /// The server that delivered the knock.
    pub origin_server: String,
    /// `pending`, `replaced`, …
    pub status: String,
    /// When knockd accepted it, ms since the epoch.
    pub received_at_ms: i64,
    /// The content hash did not match, so the event was redacted (reason and name lost).
    pub content_redacted: bool,
}

/// `GET /knocks` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnockList {
    /// Knocks, oldest first.
    pub knocks: Vec<KnockSummary>,
    /// Cursor for the next page, if any.
    pub next: Option<String>,
}

/// Filters for `GET /knocks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnockQuery {
    /// A status, or `all`; default `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// Only knocks delivered by this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Only this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Cursor from a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /knocks/{id}/approve` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Shown to the knocker in the invite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /knocks/{id}/deny` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    /// Put in the kick or ban event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ban instead of kick: the user cannot knock again.
    #[serde(default)]
    pub ban: bool,
}

/// `POST /knocks/approve` and `POST /knocks/deny` bodies: the same decision on many knocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Knock ids.
    pub ids: Vec<i64>,
    /// Reason for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Deny only: ban instead of kick.
    #[serde(default)]
    pub ban: bool,
}

/// One decision of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Decision id.
    pub id: i64,
    /// The knock decided.
    pub knock_id: i64,
    /// Its room.
    pub room_id: String,
    /// The knocker.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The local user who decided.
    pub actor: String,
    /// `approve`, `deny` or `ban`.
    pub action: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// When, ms since the epoch.
    pub decided_at_ms: i64,
    /// The invite, kick or ban event, once it exists.
    #[serde(default)]
    pub event_id: Option<String>,
    /// `pending` (invite on its way), `delivered`, `failed`, `dropped`, or `queued` (kick/ban sent
    /// to the room's servers).
    pub delivery: String,
    /// Why delivery failed, e.g. the knocker server's errcode.
    #[serde(default)]
    pub delivery_error: Option<String>,
}

/// Result for one id of a bulk request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkItem {
    /// Knock id.
    pub id: i64,
    /// The decision, when it was taken.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// The error, when it was not.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// Bulk answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResponse {
    /// One result per id, in request order.
    pub results: Vec<BulkItem>,
}

/// `GET /decisions` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionList {
    /// Newest first.
    pub decisions: Vec<Decision>,
    /// Cursor for the next page, if any.
    pub next: Option<String>,
}

/// `GET /knocks/{id}` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnockDetail {
    /// The knock.
    #[serde(flatten)]
    pub knock: KnockSummary,
    /// The room state the knocker was answered with (full PDUs).
    pub knock_room_state: Vec<serde_json::Value>,
    /// Decisions on this knock.
    pub decisions: Vec<Decision>,
    /// This user's other knocks in this room, newest first.
    pub user_history: Vec<KnockSummary>,
    /// Decisions on those knocks.
    pub user_decisions: Vec<Decision>,
    /// Recent knocks delivered by the same server, newest first.
    pub server_history: Vec<KnockSummary>,
}

/// Filters for `GET /decisions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionQuery {
    /// Only this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// Only decisions by this local user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `approve`, `deny` or `ban`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only decisions on this knock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knock_id: Option<i64>,
    /// Cursor from a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `PUT /rooms/{roomId}`: change room settings; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// `m.room.name`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `m.room.topic`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// `m.room.avatar` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Canonical alias on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `knock`, `knock_restricted` (with `allow`), `invite` or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_rule: Option<String>,
    /// Allow list for `knock_restricted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// List the room in the public room directory (`/publicRooms` over federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
}

/// `POST /rooms/{roomId}/members`: make a local user a member (invite + join).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// A user of this server.
    pub user_id: String,
    /// Power level to give, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_level: Option<i64>,
}

/// `PUT /rooms/{roomId}/power_levels/{userId}` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPowerLevel {
    /// The new power level.
    pub power_level: i64,
}

/// The events a room change produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIds {
    /// Event IDs, in order.
    pub event_ids: Vec<String>,
}

/// One change of the moderation queue, as streamed by `GET /events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueEvent {
    /// `knock` (a knock arrived or changed), `decision` (a decision was taken or delivered),
    /// or `resync` (events were missed: reload).
    pub kind: String,
    /// The knock concerned.
    #[serde(default)]
    pub knock_id: Option<i64>,
    /// The room concerned.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The knock's status after the change.
    #[serde(default)]
    pub status: Option<String>,
}

/// A queued outbound item, as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Item id.
    pub id: i64,
    /// The server it is for.
    pub destination: String,
    /// `pdu` or `invite`.
    pub kind: String,
    /// When it was queued.
    pub created_ms: i64,
    /// When it was parked, if it was.
    #[serde(default)]
    pub parked_ms: Option<i64>,
    /// Why it is parked or failing.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// `GET /version` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// `knockd`.
    pub server: String,
    /// Its version.
    pub version: String,
}

/// `POST /outbox/{id}/retry` and `DELETE /outbox/{id}` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxAction {
    /// The item.
    pub id: i64,
    /// `requeued` or `dropped`.
    pub status: String,
}

/// `GET /outbox` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Items still to be sent.
    pub pending: i64,
    /// Items given up on after failing too long, with the reason.
    pub parked: Vec<OutboxItem>,
}
