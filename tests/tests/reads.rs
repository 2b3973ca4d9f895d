//! Read endpoints and history_visibility for servers with no joined user (issue: resident server,
//! part 5; KNOCK-SPEC H.46).

use knockd::matrix::client::encode_segment;
use knockd_shared::CreateRoomRequest;
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A message from `user` of `sim`, sent over `/send`; its event ID.
async fn message(
    k: &TestKnockd,
    sim: &SimServer,
    room_id: &str,
    local: &str,
    body: &str,
) -> String {
    let user = sim.user(local);
    let content = json!({ "msgtype": "m.text", "body": body });
    let template = k.template(room_id, user.as_str(), "m.room.message", None, content).await;
    send(k, sim, template).await
}

async fn send(k: &TestKnockd, sim: &SimServer, template: Value) -> String {
    let (id, pdu) = sim.sign_event("10", template);
    let (s, answer) = sim.send_txn(&k.server_name, &format!("t-{id}"), &[pdu], &[]).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][id.as_str()], json!({}), "{answer}");
    id.to_string()
}

/// The event ID (reference hash) of a PDU as served: v3+ PDUs do not carry it.
fn event_id_of(pdu: &Value) -> String {
    let obj: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone()).expect("object");
    let rules = ruma::RoomVersionId::V10.rules().expect("v10 rules");
    knockd::matrix::event::event_id(&obj, &rules).expect("event id").to_string()
}

async fn get(sim: &SimServer, k: &TestKnockd, path: &str) -> (StatusCode, Value) {
    sim.request(Method::GET, &k.server_name, path, None).await
}

/// `GET /event/{id}` as `sim`: the status and the event's content (`{}` when redacted).
async fn content_seen(sim: &SimServer, k: &TestKnockd, id: &str) -> (StatusCode, Value) {
    let (s, body) =
        get(sim, k, &format!("/_matrix/federation/v1/event/{}", encode_segment(id))).await;
    (s, body["pdus"][0]["content"].clone())
}

#[tokio::test]
async fn history_visibility_applies_to_servers_without_a_joined_user() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let (was, stays, stranger) =
            (SimServer::start().await, SimServer::start().await, SimServer::start().await);
        for visibility in ["shared", "joined", "invited", "world_readable"] {
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some("10".into()),
                    join_rule: Some("public".into()),
                    history_visibility: Some(visibility.into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .room_id;
            // `stays` is in the room throughout; `was` joins after m0 and leaves before m2.
            let (s, b) = stays.membership("join", &k.server_name, &room_id, "carol").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let m0 = message(&k, &stays, &room_id, "carol", "before bob").await;
            let (s, b) = was.membership("join", &k.server_name, &room_id, "bob").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let m1 = message(&k, &was, &room_id, "bob", "while bob is here").await;
            let bob = was.user("bob");
            let leave = k
                .template(
                    &room_id,
                    bob.as_str(),
                    "m.room.member",
                    Some(bob.as_str()),
                    json!({ "membership": "leave" }),
                )
                .await;
            send(&k, &was, leave).await;
            let m2 = message(&k, &stays, &room_id, "carol", "after bob").await;
            let case = format!("{backend:?} {visibility}");

            // A server with a joined user sees everything.
            for id in [&m0, &m1, &m2] {
                let (s, content) = content_seen(&stays, &k, id).await;
                assert_eq!(s, StatusCode::OK, "{case}");
                assert!(content["body"].is_string(), "{case}: joined server sees {id}");
            }
            // The server whose user left: per event, from the state before it.
            let expect = |id: &str| match visibility {
                "world_readable" => true,
                "shared" => id != m2, // joined then or later, not after it left
                _ => id == m1,        // joined (or invited) at the event
            };
            for id in [&m0, &m1, &m2] {
                let (s, content) = content_seen(&was, &k, id).await;
                assert_eq!(s, StatusCode::OK, "{case}");
                assert_eq!(content["body"].is_string(), expect(id), "{case}: {id} {content}");
                if !expect(id) {
                    assert_eq!(content, json!({}), "{case}: hidden events come redacted");
                }
            }
            // /state_ids at a hidden event is refused; at a visible one it answers.
            let state_ids = |id: &str| {
                format!(
                    "/_matrix/federation/v1/state_ids/{}?event_id={}",
                    encode_segment(&room_id),
                    encode_segment(id)
                )
            };
            let (s, body) = get(&was, &k, &state_ids(&m1)).await;
            assert_eq!(s, StatusCode::OK, "{case}: {body}");
            assert!(body["pdu_ids"].as_array().is_some_and(|a| !a.is_empty()), "{case}");
            let (s, body) = get(&was, &k, &state_ids(&m2)).await;
            if visibility == "world_readable" {
                assert_eq!(s, StatusCode::OK, "{case}: {body}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{case}: {body}");
                assert_eq!(body["errcode"], "M_FORBIDDEN");
            }
            // Backfill from m2 filters the same way.
            let (s, body) = get(
                &was,
                &k,
                &format!(
                    "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
                    encode_segment(&room_id),
                    encode_segment(&m2)
                ),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{case}: {body}");
            let pdus = body["pdus"].as_array().expect("pdus");
            for id in [&m0, &m1, &m2] {
                let pdu = pdus
                    .iter()
                    .find(|p| event_id_of(p) == *id)
                    .unwrap_or_else(|| panic!("{case}: {id} not backfilled"));
                assert_eq!(pdu["content"]["body"].is_string(), expect(id), "{case}: {id}");
            }
            // A server that never had a user in the room reads only world-readable rooms.
            let (s, content) = content_seen(&stranger, &k, &m0).await;
            if visibility == "world_readable" {
                assert_eq!(s, StatusCode::OK, "{case}");
                assert!(content["body"].is_string(), "{case}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{case}: a stranger gets nothing");
            }
        }
        k.stop().await;
    }
}
