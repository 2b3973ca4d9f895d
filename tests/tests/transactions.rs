//! Inbound `/send` transactions (issue: resident server, part 3; KNOCK-SPEC H.39–H.41).

use std::time::Duration;

use knockd_shared::{CreateRoomRequest, KnockQuery, RoomSettings};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

/// A knock room where `sim`'s user `local` is joined (through a public join rule, then knock).
async fn joined_room(k: &TestKnockd, sim: &SimServer, v: &str, local: &str) -> String {
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
    let (s, b) = sim.membership("join", &k.server_name, &room_id, local).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    k.admin
        .update_room(
            &room_id,
            &RoomSettings { join_rule: Some("knock".into()), ..Default::default() },
        )
        .await
        .unwrap();
    room_id
}

fn result<'a>(answer: &'a Value, id: &str) -> &'a Value {
    &answer["pdus"][id]
}

#[tokio::test]
async fn messages_knocks_and_leaves_over_send() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let other = SimServer::start().await;
        for v in ["7", "11", "12"] {
            let room_id = joined_room(&k, &sim, v, "bob").await;
            let (s, _) = other.membership("join", &k.server_name, &room_id, "watcher").await;
            assert_eq!(s, StatusCode::FORBIDDEN, "knock room: no join without invite");
            let bob = sim.user("bob");
            // A message from a joined member.
            let msg = k
                .template(
                    &room_id,
                    bob.as_str(),
                    "m.room.message",
                    None,
                    json!({ "msgtype": "m.text", "body": "hello" }),
                )
                .await;
            let (mid, mpdu) = sim.sign_event(v, msg);
            let (status, answer) = sim
                .send_txn(
                    &k.server_name,
                    &format!("t1-{v}"),
                    std::slice::from_ref(&mpdu),
                    &[json!({ "edu_type": "m.typing", "content": { "ratio": 0.5 } })],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {answer}");
            assert_eq!(result(&answer, mid.as_str()), &json!({}), "{answer}");
            assert_eq!(k.event_status(mid.as_str()).await.as_deref(), Some("accepted"));
            // The same transaction again: the same answer, nothing new. The same PDU in a new one: {}.
            let (_, again) = sim
                .send_txn(&k.server_name, &format!("t1-{v}"), std::slice::from_ref(&mpdu), &[])
                .await;
            assert_eq!(again, answer);
            let (_, again) = sim.send_txn(&k.server_name, &format!("t2-{v}"), &[mpdu], &[]).await;
            assert_eq!(result(&again, mid.as_str()), &json!({}));

            // Another user of the same server knocks through /send (Synapse does this once it has a
            // joined user): the knock is queued like a send_knock.
            let carl = sim.user("carl");
            let knock = k
                .template(
                    &room_id,
                    carl.as_str(),
                    "m.room.member",
                    Some(carl.as_str()),
                    json!({ "membership": "knock", "reason": "via send" }),
                )
                .await;
            let (kid, kpdu) = sim.sign_event(v, knock);
            let (_, answer) = sim.send_txn(&k.server_name, &format!("t3-{v}"), &[kpdu], &[]).await;
            assert_eq!(result(&answer, kid.as_str()), &json!({}), "{answer}");
            let queue = k
                .admin
                .list_knocks(&KnockQuery { room_id: Some(room_id.clone()), ..Default::default() })
                .await
                .unwrap();
            assert_eq!(queue.knocks.len(), 1);
            assert_eq!(queue.knocks[0].reason.as_deref(), Some("via send"));

            // A leave of the knocker over /send rescinds it.
            let leave = k
                .template(
                    &room_id,
                    carl.as_str(),
                    "m.room.member",
                    Some(carl.as_str()),
                    json!({ "membership": "leave" }),
                )
                .await;
            let (lid, lpdu) = sim.sign_event(v, leave);
            let (_, answer) = sim.send_txn(&k.server_name, &format!("t4-{v}"), &[lpdu], &[]).await;
            assert_eq!(result(&answer, lid.as_str()), &json!({}), "{answer}");
            assert_eq!(k.admin.knock(queue.knocks[0].id).await.unwrap().knock.status, "rescinded");

            // A message from someone not in the room is rejected, stored as such, never state.
            let stranger = sim.user("stranger");
            let bad = k
                .template(
                    &room_id,
                    stranger.as_str(),
                    "m.room.message",
                    None,
                    json!({ "msgtype": "m.text", "body": "spam" }),
                )
                .await;
            let (bid, bpdu) = sim.sign_event(v, bad);
            let before = k.room_footprint(&room_id).await;
            let (_, answer) = sim.send_txn(&k.server_name, &format!("t5-{v}"), &[bpdu], &[]).await;
            assert!(result(&answer, bid.as_str())["error"].is_string(), "{answer}");
            assert_eq!(k.event_status(bid.as_str()).await.as_deref(), Some("rejected"));
            assert_eq!(
                k.room_footprint(&room_id).await,
                before,
                "rejected events are not extremities"
            );
        }
        k.stop().await;
    }
}

#[tokio::test]
async fn transactions_are_limited_and_bad_pdus_answered_per_pdu() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = joined_room(&k, &sim, "10", "bob").await;
        let bob = sim.user("bob");
        let too_many: Vec<_> = (0..51)
            .map(|i| sim.sign_event("10", json!({ "type": "m.room.message", "room_id": room_id, "sender": bob.as_str(), "content": { "body": i }, "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [] })).1)
            .collect();
        let (status, body) = sim.send_txn(&k.server_name, "big", &too_many, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // A forged signature: an error for that PDU only, in a 200.
        let msg = k
            .template(&room_id, bob.as_str(), "m.room.message", None, json!({ "body": "x" }))
            .await;
        let (_, mut pdu) = sim.sign_event("10", msg);
        pdu.insert("origin_server_ts".into(), ruma::CanonicalJsonValue::Integer(2u32.into()));
        let rules = knockd::matrix::event::rules(&ruma::RoomVersionId::V10).unwrap();
        let id = knockd::matrix::event::event_id(&pdu, &rules).unwrap();
        let good = k
            .template(&room_id, bob.as_str(), "m.room.message", None, json!({ "body": "y" }))
            .await;
        let (gid, gpdu) = sim.sign_event("10", good);
        let (status, answer) = sim.send_txn(&k.server_name, "mixed", &[pdu, gpdu], &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(result(&answer, id.as_str())["error"].is_string(), "the forged one: {answer}");
        assert_eq!(result(&answer, gid.as_str()), &json!({}), "{answer}");
        let errors =
            answer["pdus"].as_object().unwrap().values().filter(|r| r["error"].is_string()).count();
        assert_eq!(errors, 1, "{answer}");
        k.stop().await;
    }
}

// Issue: resident server, part 3: a gap in the origin's events is filled through
// /get_missing_events (knockd asks the origin, which answers from its own store).
#[tokio::test]
async fn a_gap_is_filled_through_get_missing_events() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = joined_room(&k, &sim, "10", "bob").await;
        let bob = sim.user("bob");
        // Three messages in a chain; only the last is sent; the sim serves the others.
        let first = k
            .template(&room_id, bob.as_str(), "m.room.message", None, json!({ "body": "1" }))
            .await;
        let (id1, pdu1) = sim.sign_event("10", first);
        let mut second = k
            .template(&room_id, bob.as_str(), "m.room.message", None, json!({ "body": "2" }))
            .await;
        second["prev_events"] = json!([id1.as_str()]);
        second["depth"] = (pdu1["depth"].as_integer().map(i64::from).unwrap() + 1).into();
        let (id2, pdu2) = sim.sign_event("10", second);
        let mut third = k
            .template(&room_id, bob.as_str(), "m.room.message", None, json!({ "body": "3" }))
            .await;
        third["prev_events"] = json!([id2.as_str()]);
        third["depth"] = (pdu2["depth"].as_integer().map(i64::from).unwrap() + 1).into();
        let (id3, pdu3) = sim.sign_event("10", third);
        sim.serve_missing_events(vec![pdu1, pdu2]);
        let (status, answer) = sim.send_txn(&k.server_name, "gap", &[pdu3], &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(result(&answer, id3.as_str()), &json!({}), "{answer}");
        for id in [&id1, &id2, &id3] {
            assert_eq!(
                k.event_status(id.as_str()).await.as_deref(),
                Some("accepted"),
                "{backend:?} {id}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        k.stop().await;
    }
}
