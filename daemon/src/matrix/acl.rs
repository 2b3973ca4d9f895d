//! Server ACLs (`m.room.server_acl`), evaluated by ruma.

use ruma::{ServerName, events::room::server_acl::RoomServerAclEventContent};

/// Whether the ACL content (JSON text of the event's content) lets `server` in. Content that does
/// not parse as an ACL denies nobody, as in Synapse.
pub fn allows(content_json: &str, server: &ServerName) -> bool {
    match serde_json::from_str::<RoomServerAclEventContent>(content_json) {
        Ok(acl) => acl.is_allowed(server),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_ports_are_ignored() {
        let acl = r#"{"allow": ["*"], "deny": ["evil.example", "*.bad.example"], "allow_ip_literals": false}"#;
        fn name(s: &str) -> &ServerName {
            <&ServerName>::try_from(s).unwrap()
        }
        assert!(allows(acl, name("good.example:8448")));
        assert!(!allows(acl, name("evil.example:8448")));
        assert!(!allows(acl, name("EVIL.example")));
        assert!(!allows(acl, name("x.bad.example")));
        assert!(!allows(acl, name("127.0.0.1:8448")));
        assert!(allows("not json", name("evil.example")));
    }
}
