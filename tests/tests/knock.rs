//! The federation knock path against a simulated remote homeserver, on every backend and room
//! version. Test names carry the KNOCK-SPEC line or Complement case they check.

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::Value;

async fn room(k: &TestKnockd, version: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest {
            room_version: Some(version.into()),
            name: Some(format!("Knock v{version}")),
            topic: Some("Ask nicely".into()),
            ..CreateRoomRequest::default()
        })
        .await
        .unwrap()
        .room_id
}

fn types_of(state: &Value) -> Vec<String> {
    state.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

// KNOCK-SPEC B.13, C.23, C.25; CPL-1.4
#[tokio::test]
async fn knock_is_accepted_queued_and_answered_with_room_state() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "8", "9", "10", "11", "12"] {
            let room_id = room(&k, v).await;
            let user = sim.user("alice");
            let (status, made) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {made}");
            assert_eq!(made["room_version"], v);
            let event = &made["event"];
            assert_eq!(event["type"], "m.room.member");
            assert_eq!(event["state_key"], user.as_str());
            assert_eq!(event["sender"], user.as_str());
            assert_eq!(event["content"]["membership"], "knock");
            assert_eq!(event["room_id"], room_id.as_str());
            for absent in ["event_id", "signatures", "hashes", "unsigned"] {
                assert!(event.get(absent).is_none(), "template has {absent}");
            }
            let auth_events = event["auth_events"].as_array().unwrap();
            assert_eq!(
                auth_events.len(),
                if v == "12" { 2 } else { 3 },
                "v{v}: PL, join_rules (+create)"
            );
            let (id, pdu) = sim.sign_template(v, event, Some("Let me in... LET ME IN!!!"));
            let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {body}");
            let state = &body["knock_room_state"];
            let types = types_of(state);
            assert_eq!(types[0], "m.room.create", "create first");
            for t in ["m.room.join_rules", "m.room.name", "m.room.topic"] {
                assert!(types.contains(&t.to_owned()), "v{v}: {t} in {types:?}");
            }
            // Full PDUs (spec 1.16): the create event carries its signatures and timestamp.
            assert!(state[0]["signatures"].is_object() && state[0]["origin_server_ts"].is_number());

            let queue = k
                .admin
                .list_knocks(&KnockQuery {
                    room_id: Some(room_id.clone()),
                    ..KnockQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(queue.knocks.len(), 1, "v{v}");
            let knock = &queue.knocks[0];
            assert_eq!(knock.user_id, user.as_str());
            assert_eq!(knock.reason.as_deref(), Some("Let me in... LET ME IN!!!"));
            assert_eq!(knock.room_name.as_deref(), Some(format!("Knock v{v}").as_str()));
            assert_eq!(knock.origin_server, sim.server_name.as_str());
            assert_eq!(knock.status, "pending");
            assert_eq!(knock.event_id, id.as_str());
            let detail = k.admin.room(&room_id).await.unwrap();
            assert_eq!(detail.summary.knocking_members, 1);
        }
        k.stop().await;
    }
}
