//! Forks (issue: resident server; KNOCK-SPEC H.39–H.40): concurrent remote events on the same
//! prev_events, plus ours, resolved by state resolution v2; a server joining later gets the
//! resolved state.

use knockd_shared::{CreateRoomRequest, RoomSettings};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn concurrent_topics_resolve_like_state_resolution_v2() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let late = SimServer::start().await;
        for v in ["10", "12"] {
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    join_rule: Some("public".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .room_id;
            let (s, b) = sim.membership("join", &k.server_name, &room_id, "bob").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let bob = sim.user("bob");
            k.admin.set_power_level(&room_id, bob.as_str(), 50).await.unwrap();
            // Two topics from bob on the same prev_events: a fork.
            let base = k
                .template(
                    &room_id,
                    bob.as_str(),
                    "m.room.topic",
                    Some(""),
                    json!({ "topic": "first" }),
                )
                .await;
            let mut early = base.clone();
            early["origin_server_ts"] = (base["origin_server_ts"].as_i64().unwrap() - 1000).into();
            let mut later = base.clone();
            later["content"]["topic"] = "second".into();
            let (early_id, early_pdu) = sim.sign_event(v, early);
            let (later_id, later_pdu) = sim.sign_event(v, later);
            let (status, answer) = sim
                .send_txn(&k.server_name, &format!("fork-{v}"), &[later_pdu, early_pdu], &[])
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["pdus"][early_id.as_str()], json!({}), "{answer}");
            assert_eq!(answer["pdus"][later_id.as_str()], json!({}), "{answer}");
            let shown = k.admin.room(&room_id).await.unwrap();
            assert_eq!(shown.summary.forward_extremities, 2, "{backend:?} v{v}: the fork");
            // State resolution v2 orders same-power, same-type conflicts by origin_server_ts (then
            // event ID); the last applied wins, whichever arrived first.
            let topic = shown.state.iter().find(|s| s.event_type == "m.room.topic").unwrap();
            assert_eq!(topic.event_id, later_id.as_str(), "{backend:?} v{v}: the later topic wins");
            // Our next event heals the fork and keeps the resolved state.
            k.admin
                .update_room(
                    &room_id,
                    &RoomSettings { name: Some("Healed".into()), ..Default::default() },
                )
                .await
                .unwrap();
            let shown = k.admin.room(&room_id).await.unwrap();
            assert_eq!(shown.summary.forward_extremities, 1);
            assert_eq!(
                shown.state.iter().find(|s| s.event_type == "m.room.topic").unwrap().event_id,
                later_id.as_str()
            );

            // A server joining later gets the resolved state before its join.
            let (s, answer) = late.membership("join", &k.server_name, &room_id, "lena").await;
            assert_eq!(s, StatusCode::OK, "{answer}");
            let state = answer["state"].as_array().unwrap();
            let topic = state.iter().find(|e| e["type"] == "m.room.topic").expect("topic in state");
            assert_eq!(topic["content"]["topic"], "second");
            assert!(state.iter().any(|e| e["type"] == "m.room.member"
                && e["state_key"] == bob.as_str()
                && e["content"]["membership"] == "join"));
            assert!(
                state
                    .iter()
                    .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Healed")
            );
            let ids: Vec<&str> = shown.state.iter().map(|s| s.event_id.as_str()).collect();
            for e in state {
                let id = knockd::matrix::event::event_id(
                    &serde_json::from_value(e.clone()).unwrap(),
                    &knockd::matrix::event::rules(&v.try_into().unwrap()).unwrap(),
                )
                .unwrap();
                assert!(
                    ids.contains(&id.as_str()),
                    "state before the join is the current state: {id}"
                );
            }
            assert_eq!(state.len(), ids.len());
        }
        k.stop().await;
    }
}
