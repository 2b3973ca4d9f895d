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

/// `template` placed right after `prev` (its only prev event, one deeper).
fn chained(mut template: Value, prev: &(ruma::OwnedEventId, ruma::CanonicalJsonObject)) -> Value {
    template["prev_events"] = json!([prev.0.as_str()]);
    template["depth"] = (prev.1["depth"].as_integer().map(i64::from).unwrap() + 1).into();
    template
}

/// The state before `at` as knockd serves it to `sim`: `(type, state_key, event ID)` and the
/// auth chain's IDs.
async fn served_state(
    k: &TestKnockd,
    sim: &SimServer,
    room_id: &str,
    at: &str,
) -> (Vec<(String, String, String)>, Vec<String>) {
    use knockd::matrix::client::encode_segment;
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={}",
        encode_segment(room_id),
        encode_segment(at)
    );
    let (s, body) = sim.request(reqwest::Method::GET, &k.server_name, &path, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rules = ruma::RoomVersionId::V10.rules().unwrap();
    let id_of = |v: &Value| {
        let obj: ruma::CanonicalJsonObject = serde_json::from_value(v.clone()).unwrap();
        knockd::matrix::event::event_id(&obj, &rules).unwrap().to_string()
    };
    let state = body["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |f: &str| p[f].as_str().unwrap().to_owned();
            (field("type"), field("state_key"), id_of(p))
        })
        .collect();
    (state, body["auth_chain"].as_array().unwrap().iter().map(id_of).collect())
}

// A gap /get_missing_events cannot fill: the state at the missing prev comes from the origin's
// /state_ids and its events from /event, each checked; the state change inside the gap wins.
// A gap whose events do not verify stays open and nothing of it is stored.
#[tokio::test]
async fn a_gap_get_missing_events_cannot_fill_is_filled_through_state_ids() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = joined_room(&k, &sim, "10", "bob").await;
        let bob = sim.user("bob");
        let msg = |body: &str| json!({ "msgtype": "m.text", "body": body });
        // m0 reaches knockd: the state after it is the state before it (a message).
        let t0 = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("0")).await;
        let m0 = sim.sign_event("10", t0);
        let (_, answer) =
            sim.send_txn(&k.server_name, "m0", std::slice::from_ref(&m0.1), &[]).await;
        assert_eq!(result(&answer, m0.0.as_str()), &json!({}), "{answer}");
        let (state0, chain0) = served_state(&k, &sim, &room_id, m0.0.as_str()).await;
        let old_join = state0
            .iter()
            .find(|(t, key, _)| t == "m.room.member" && key == bob.as_str())
            .map(|(_, _, id)| id.clone())
            .expect("bob's join");

        for tampered in [true, false] {
            // Inside the gap: bob changes his display name (state), then a message; then the
            // one knockd is sent. The origin walks no gap (/get_missing_events answers nothing).
            let name = if tampered { "Mallory" } else { "Robert" };
            let t1 = k
                .template(
                    &room_id,
                    bob.as_str(),
                    "m.room.member",
                    Some(bob.as_str()),
                    json!({ "membership": "join", "displayname": name }),
                )
                .await;
            let mut e1 = sim.sign_event("10", chained(t1, &m0));
            if tampered {
                let sigs = json!({ sim.server_name.as_str(): { "ed25519:bogus": "AAAA" } });
                e1.1.insert("signatures".into(), serde_json::from_value(sigs).unwrap());
            }
            let t2 = k.template(&room_id, bob.as_str(), "m.room.message", None, msg(name)).await;
            let e2 = sim.sign_event("10", chained(t2, &e1));
            let t3 = k.template(&room_id, bob.as_str(), "m.room.message", None, msg(name)).await;
            let e3 = sim.sign_event("10", chained(t3, &e2));
            let before_e2: Vec<String> = state0
                .iter()
                .map(|(_, _, id)| if *id == old_join { e1.0.to_string() } else { id.clone() })
                .collect();
            let mut chain = chain0.clone();
            chain.push(old_join.clone());
            sim.serve_state_ids(e2.0.as_str(), &before_e2, &chain);
            sim.serve_events(&[e1.clone(), e2.clone()]);
            let (status, answer) = sim
                .send_txn(&k.server_name, &format!("gap-{name}"), std::slice::from_ref(&e3.1), &[])
                .await;
            assert_eq!(status, StatusCode::OK);
            let case = format!("{backend:?} {name}");
            if tampered {
                assert!(result(&answer, e3.0.as_str())["error"].is_string(), "{case}: {answer}");
                for id in [&e1.0, &e2.0, &e3.0] {
                    assert_eq!(k.event_status(id.as_str()).await, None, "{case}: {id} stored");
                }
                continue;
            }
            assert_eq!(result(&answer, e3.0.as_str()), &json!({}), "{case}: {answer}");
            assert_eq!(k.event_status(e1.0.as_str()).await.as_deref(), Some("outlier"));
            assert_eq!(k.event_status(e2.0.as_str()).await.as_deref(), Some("accepted"));
            assert_eq!(k.event_status(e3.0.as_str()).await.as_deref(), Some("accepted"));
            // The display name change is in current state now: bob's next event cites it.
            let next = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("4")).await;
            let auth: Vec<&str> =
                next["auth_events"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(auth.contains(&e1.0.as_str()), "{case}: {auth:?}");
            assert!(!auth.contains(&old_join.as_str()), "{case}: {auth:?}");
            // And knockd's state at e3 (the state before it) holds it too.
            let (at_e3, _) = served_state(&k, &sim, &room_id, e3.0.as_str()).await;
            assert!(at_e3.iter().any(|(_, _, id)| *id == e1.0.as_str()), "{case}");
            // The outlier arriving in the timeline later takes its place in the graph.
            let (_, answer) =
                sim.send_txn(&k.server_name, "late-e1", std::slice::from_ref(&e1.1), &[]).await;
            assert_eq!(result(&answer, e1.0.as_str()), &json!({}), "{case}: {answer}");
            assert_eq!(k.event_status(e1.0.as_str()).await.as_deref(), Some("accepted"));
            // e3 builds on it already: e1 is not a forward extremity.
            let next = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("5")).await;
            assert_eq!(next["prev_events"], json!([e3.0.as_str()]), "{case}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        k.stop().await;
    }
}

/// Makes every insert into `events` fail (a full or broken disk), or stops doing so.
async fn break_event_inserts(k: &TestKnockd, backend: knockd_tests::TestBackend, broken: bool) {
    use diesel::RunQueryDsl;
    let statements: &[&str] = match (backend, broken) {
        (knockd_tests::TestBackend::Sqlite, true) => {
            &["CREATE TRIGGER knockd_test_fail BEFORE INSERT ON events \
             BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"]
        }
        (knockd_tests::TestBackend::Sqlite, false) => &["DROP TRIGGER knockd_test_fail"],
        (knockd_tests::TestBackend::Postgres, true) => &[
            "CREATE FUNCTION knockd_test_fail() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'disk full (test)'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER knockd_test_fail BEFORE INSERT ON events \
             FOR EACH ROW EXECUTE FUNCTION knockd_test_fail()",
        ],
        (knockd_tests::TestBackend::Postgres, false) => {
            &["DROP TRIGGER knockd_test_fail ON events"]
        }
    };
    k.app
        .db
        .write(move |conn| -> Result<(), knockd::store::StoreError> {
            for sql in statements {
                diesel::sql_query(*sql).execute(conn)?;
            }
            Ok(())
        })
        .await
        .expect("trigger");
}

// Issue 15.3: our own storage failure while handling /send is a 5xx, and the answer is not
// remembered: the origin sends the transaction again and the PDU is then taken.
#[tokio::test]
async fn a_storage_failure_answers_5xx_and_the_resent_transaction_is_taken() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = joined_room(&k, &sim, "10", "bob").await;
        let bob = sim.user("bob");
        let msg = k
            .template(
                &room_id,
                bob.as_str(),
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": "through a bad disk" }),
            )
            .await;
        let (id, pdu) = sim.sign_event("10", msg);
        break_event_inserts(&k, backend, true).await;
        let (s, answer) =
            sim.send_txn(&k.server_name, "disk", std::slice::from_ref(&pdu), &[]).await;
        assert!(s.is_server_error(), "{backend:?}: {s} {answer}");
        assert_eq!(k.event_status(id.as_str()).await, None);
        break_event_inserts(&k, backend, false).await;
        let (s, answer) = sim.send_txn(&k.server_name, "disk", &[pdu], &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(result(&answer, id.as_str()), &json!({}), "{backend:?}: {answer}");
        assert_eq!(k.event_status(id.as_str()).await.as_deref(), Some("accepted"));
        k.stop().await;
    }
}
