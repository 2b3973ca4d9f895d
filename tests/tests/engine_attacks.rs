//! Attacks on the room engine from a joined remote server, and stale memory across instances.

use std::time::Duration;

use knockd_shared::{CreateRoomRequest, KnockQuery, RoomSettings};
use knockd_tests::{SimServer, TestBackend, TestDb, TestKnockd, backends};
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

fn chained(mut template: Value, prev: &(ruma::OwnedEventId, ruma::CanonicalJsonObject)) -> Value {
    template["prev_events"] = json!([prev.0.as_str()]);
    template["depth"] = (prev.1["depth"].as_integer().map(i64::from).unwrap() + 1).into();
    template
}

// gap.rs takes any known event that is not rejected into a gap's state (soft-failed ones too,
// as the old code did), but the engine's Fetcher and usable_pdus only read accepted and outlier
// events. A joined server serves, as the state at a gap, our current state with one member key
// pointing at an event we soft-failed. Resolving that state with anything ("event … is missing")
// is a StoreError::Corrupt: the /send answers 500; resent, the PDU is stored without the merge
// (from_gap is false the second time) and becomes a forward extremity holding the poisoned
// state, chosen first by depth. From then on every make_knock template cites it and every
// send_knock fails with 500; with more than ten extremities our own events (settings,
// approve/deny) fail too, so nothing can heal the room.
#[tokio::test]
async fn a_soft_failed_event_in_a_gap_state_does_not_wedge_the_room() {
    let mut all = Vec::new();
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = joined_room(&k, &sim, "10", "bob").await;
        let bob = sim.user("bob");
        let msg = |body: &str| json!({ "msgtype": "m.text", "body": body });
        let mut problems = Vec::new();

        // An old point of the room.
        let t0 = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("0")).await;
        let m0 = sim.sign_event("10", t0);
        let (s, answer) =
            sim.send_txn(&k.server_name, "m0", std::slice::from_ref(&m0.1), &[]).await;
        assert_eq!((s, &answer["pdus"][m0.0.as_str()]), (StatusCode::OK, &json!({})));

        // spam knocks and is banned; a knock of spam forked from before that is soft-failed.
        let (s, b) = sim.knock(&k.server_name, &room_id, "spam", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let spam = sim.user("spam");
        let list = k
            .admin
            .list_knocks(&KnockQuery { room_id: Some(room_id.clone()), ..Default::default() })
            .await
            .unwrap();
        let knock = list.knocks.iter().find(|kn| kn.user_id == spam.as_str()).unwrap();
        k.admin.deny(knock.id, Some("spam"), true).await.unwrap();
        let ban = k.admin.room(&room_id).await.unwrap();
        let ban = ban
            .state
            .iter()
            .find(|s| s.event_type == "m.room.member" && s.state_key == spam.as_str())
            .unwrap()
            .event_id
            .clone();
        let mut t = k
            .template(
                &room_id,
                spam.as_str(),
                "m.room.member",
                Some(spam.as_str()),
                json!({ "membership": "knock" }),
            )
            .await;
        let auth: Vec<Value> = t["auth_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|id| id.as_str() != Some(ban.as_str()))
            .cloned()
            .collect();
        t["auth_events"] = auth.into();
        let sf = sim.sign_event("10", chained(t, &m0));
        let (s, answer) =
            sim.send_txn(&k.server_name, "sf", std::slice::from_ref(&sf.1), &[]).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(k.event_status(sf.0.as_str()).await.as_deref(), Some("soft_failed"));

        // The gap: p (a message of bob, unknown to knockd), its state served as our current state
        // with spam's ban replaced by the soft-failed knock; e cites p, very deep.
        let state: Vec<String> = k
            .admin
            .room(&room_id)
            .await
            .unwrap()
            .state
            .iter()
            .map(|s| if s.event_id == ban { sf.0.to_string() } else { s.event_id.clone() })
            .collect();
        let tp = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("p")).await;
        let p = sim.sign_event("10", tp);
        let mut te = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("e")).await;
        te["prev_events"] = json!([p.0.as_str()]);
        te["depth"] = 1_000_000.into();
        let e = sim.sign_event("10", te);
        sim.serve_state_ids(p.0.as_str(), &state, &[]);
        sim.serve_events(std::slice::from_ref(&p));
        let (s, answer) = sim.send_txn(&k.server_name, "e1", std::slice::from_ref(&e.1), &[]).await;
        if s != StatusCode::OK {
            problems.push(format!("/send of e answered {s} {answer}"));
            // The origin sends it again (Synapse retries): now taken, with no merge.
            let (s, answer) =
                sim.send_txn(&k.server_name, "e2", std::slice::from_ref(&e.1), &[]).await;
            assert_eq!(s, StatusCode::OK, "{answer}");
        }
        // Anyone may knock still.
        let (s, b) = sim.knock(&k.server_name, &room_id, "newbie", None).await;
        if s != StatusCode::OK {
            problems.push(format!("a knock with e among its prev events: {s} {b}"));
        }
        // More than ten forward extremities (bob's messages on the old point).
        for i in 0..10 {
            let t = k.template(&room_id, bob.as_str(), "m.room.message", None, msg("x")).await;
            let x = sim.sign_event("10", chained(t, &m0));
            let (s, a) = sim
                .send_txn(&k.server_name, &format!("x{i}"), std::slice::from_ref(&x.1), &[])
                .await;
            assert_eq!((s, &a["pdus"][x.0.as_str()]), (StatusCode::OK, &json!({})), "{a}");
        }
        let changed = k
            .admin
            .update_room(
                &room_id,
                &RoomSettings { name: Some("Still ours".into()), ..Default::default() },
            )
            .await;
        if let Err(e) = changed {
            problems.push(format!("our own event (room name): {e:?}"));
        }
        let (s, b) = sim.knock(&k.server_name, &room_id, "newbie2", None).await;
        if s != StatusCode::OK {
            problems.push(format!("a knock after that: {s} {b}"));
        }
        // Why: the state before the ten deepest extremities (what templates cite) cannot be
        // worked out.
        let why = k
            .app
            .rooms
            .write(&room_id, |txn| -> Result<String, knockd::store::StoreError> {
                use knockd::room::state_before::{Mode, state_before};
                let prevs: Vec<_> = txn
                    .room
                    .extremities_by_depth()
                    .into_iter()
                    .take(10)
                    .map(|(id, _)| id)
                    .collect();
                let (conn, room, _) = txn.parts()?;
                Ok(match state_before(conn, room, &prevs, Mode::Look) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.to_string(),
                })
            })
            .await;
        if !matches!(why.as_deref(), Ok("ok")) {
            problems.push(format!("state before the deepest extremities: {why:?}"));
        }
        all.extend(problems.into_iter().map(|p| format!("{backend:?}: {p}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
        k.stop().await;
    }
    assert!(all.is_empty(), "\n{}", all.join("\n"));
}

// Engine::snapshot is "the room as of its last committed write" of *this* instance: it is never
// checked against the room's version. With two instances on one PostgreSQL, a ban made through
// the second leaves the first offering make_knock templates to the banned user (and checking
// restricted joins before signing against stale state) until the first writes the room itself.
#[tokio::test]
async fn make_knock_on_another_instance_sees_a_ban() {
    if !backends().contains(&TestBackend::Postgres) {
        eprintln!("skipped: KNOCKD_TEST_DATABASE_URL is not set");
        return;
    }
    let db = TestDb::new(TestBackend::Postgres);
    let first = TestKnockd::start_with(db.alias(), &[]).await;
    let second = first.start_peer(&[]).await;
    let room_id = first.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
    let sim = SimServer::start().await;
    let (s, b) = sim.knock(&first.server_name, &room_id, "mallory", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mallory = sim.user("mallory");
    let list = second
        .admin
        .list_knocks(&KnockQuery { room_id: Some(room_id.clone()), ..Default::default() })
        .await
        .unwrap();
    let knock = list.knocks.iter().find(|kn| kn.user_id == mallory.as_str()).unwrap();
    second.admin.deny(knock.id, Some("banned"), true).await.unwrap();
    let (s, b) = sim.make_knock(&first.server_name, &room_id, mallory.as_str()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the first instance offers a banned user a template: {b}");
    second.stop().await;
    first.stop().await;
}

// A knock citing an event ID with U+0000 in it (ruma's identifiers accept "$\u0000x";
// PostgreSQL's text refuses the byte) is refused as malformed, and a knock sent at the same
// time is accepted: one stranger's event cannot fail the batch it shares with others.
#[tokio::test]
async fn a_nul_in_an_event_is_refused_and_fails_no_one_else() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("10".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let user = sim.user("mallory");
        let (status, template) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
        assert_eq!(status, StatusCode::OK, "{template}");
        for field in ["auth_events", "prev_events"] {
            let mut event = template["event"].clone();
            event[field].as_array_mut().unwrap().push(json!("$\u{0}x"));
            let (event_id, pdu) = sim.sign_event("10", event);
            let bad = sim.send_knock(&k.server_name, &room_id, event_id.as_str(), &pdu);
            let honest = format!("honest-{field}");
            let good = sim.knock(&k.server_name, &room_id, &honest, None);
            let ((bad_status, bad_body), (good_status, good_body)) = tokio::join!(bad, good);
            assert_eq!(bad_status, StatusCode::BAD_REQUEST, "{:?}: {bad_body}", k.backend);
            assert_eq!(bad_body["errcode"], "M_BAD_JSON", "{bad_body}");
            assert_eq!(good_status, StatusCode::OK, "{:?}: {good_body}", k.backend);
        }
    }
}
