//! Our thin layer over ruma: keys, events, auth rules.

pub mod acl;
pub mod address_policy;
pub mod auth;
pub mod client;
pub mod discovery;
pub mod event;
pub mod json;
pub mod keys;
pub mod pdu;
pub mod remote_keys;

pub use event::{EventTemplate, Placement, SUPPORTED_ROOM_VERSIONS};
pub use keys::KeyRing;
pub use pdu::Pdu;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
