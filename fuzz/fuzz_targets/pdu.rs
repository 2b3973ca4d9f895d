//! PDU validation on receipt, step 1: the strict JSON parser, then the room engine's format
//! check (`knockd::room::format::check_format`: format and size per room version, the room, no
//! U+0000, the v12 create-event rule, the event ID) in a v10 and a v12 room, and the reference
//! hash (`knockd::matrix::event::event_id`) on its own (reached even when the format check fails
//! early).
//!
//! The room ID of each context is the PDU's own `room_id` when it is a valid room ID, so the
//! fuzzer gets past the "not in this room" check; otherwise a fixed one.
#![no_main]

use std::sync::OnceLock;

use knockd::{
    matrix::{event, json},
    room::{RoomCtx, format::check_format},
};
use libfuzzer_sys::fuzz_target;
use ruma::{
    CanonicalJsonValue, OwnedRoomId, RoomVersionId, room_version_rules::RoomVersionRules,
};

fn rules() -> &'static [(RoomVersionId, RoomVersionRules); 2] {
    static RULES: OnceLock<[(RoomVersionId, RoomVersionRules); 2]> = OnceLock::new();
    RULES.get_or_init(|| {
        [RoomVersionId::V10, RoomVersionId::V12]
            .map(|v| (v.clone(), event::rules(&v).expect("supported room version")))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(pdu) = json::parse_object(data) else { return };
    let room_id = pdu
        .get("room_id")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|s| OwnedRoomId::try_from(s).ok())
        .unwrap_or_else(|| OwnedRoomId::try_from("!fuzz:example.org").expect("valid room ID"));
    for (version, rules) in rules() {
        let ctx = RoomCtx { room_id: room_id.clone(), version: version.clone(), rules: rules.clone() };
        let checked = check_format(&ctx, &pdu);
        let id = event::event_id(&pdu, &ctx.rules);
        if let Ok(checked) = checked {
            assert_eq!(Ok(checked), id, "check_format's event ID differs from event_id's");
        }
    }
});
