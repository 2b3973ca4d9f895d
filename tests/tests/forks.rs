//! Forks (issue: resident server; KNOCK-SPEC H.39–H.40): concurrent remote events on the same
//! prev_events, plus ours, resolved by state resolution v2; a server joining later gets the
//! resolved state.

use knockd_shared::{CreateRoomRequest, RoomSettings};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
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

// KNOCK-SPEC H.39–H.40: with more forward extremities than an event may cite (dummy events
// off), our own events
// are checked against, and cite auth events from, the state after the prev events they cite
// (what other servers check them against), not the current state; a kick cites the knock it
// ends, so that state resolution keeps the kick.
#[tokio::test]
async fn our_events_past_twenty_extremities_use_the_state_of_what_they_cite() {
    for backend in backends() {
        // No dummy events: the forks stay for our own events to meet.
        let k = TestKnockd::start_with(TestDb::new(backend), &NO_DUMMY).await;
        let sim = SimServer::start().await;
        for v in ["10", "12"] {
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .room_id;
            let knocks = sim.stale_knocks(&k.server_name, &room_id, "a", 24).await.1;
            assert_eq!(k.room_footprint(&room_id).await.0, 24);
            // A knocker whose knock is not among the twenty an event would cite by depth.
            let cited = cited_by_depth(&k, &room_id).await;
            let (target, target_knock) =
                knocks.iter().find(|(_, id)| !cited.contains(id)).cloned().unwrap();
            let list = k
                .admin
                .list_knocks(&knockd_shared::KnockQuery {
                    room_id: Some(room_id.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let knock = list.knocks.iter().find(|kn| kn.user_id == target).unwrap();
            let decision = k.admin.deny(knock.id, Some("no"), false).await.unwrap();
            let kick_id = decision.event_id.expect("the kick's event ID");
            let kick = stored_pdu(&k, &kick_id).await;
            let prev = ids(&kick["prev_events"]);
            assert_eq!(prev.len(), 20);
            assert!(prev.contains(&target_knock), "{backend:?} v{v}: the kick follows the knock");
            assert!(ids(&kick["auth_events"]).contains(&target_knock));
            let shown = k.admin.room(&room_id).await.unwrap();
            assert_eq!(shown.summary.forward_extremities, 24 - 20 + 1);
            let holder = |shown: &knockd_shared::RoomDetail, user: &str| {
                shown
                    .state
                    .iter()
                    .find(|s| s.event_type == "m.room.member" && s.state_key == user)
                    .map(|s| s.event_id.clone())
            };
            assert_eq!(holder(&shown, &target), Some(kick_id.clone()), "{backend:?} v{v}");
            assert_eq!(k.admin.knock(knock.id).await.unwrap().knock.status, "denied");

            // An event that depends on no knock: its state before is its prev events' state,
            // which lacks the knocks it does not cite; every knock stays in the current state.
            let more = sim.stale_knocks(&k.server_name, &room_id, "b", 22).await.1;
            assert!(k.room_footprint(&room_id).await.0 > 20);
            let cited = cited_by_depth(&k, &room_id).await;
            let (uncited, _) = more.iter().find(|(_, id)| !cited.contains(id)).cloned().unwrap();
            k.admin
                .update_room(
                    &room_id,
                    &RoomSettings { name: Some("Busy".into()), ..Default::default() },
                )
                .await
                .unwrap();
            let shown = k.admin.room(&room_id).await.unwrap();
            let name_id = shown.state.iter().find(|s| s.event_type == "m.room.name").unwrap();
            let name_id = name_id.event_id.clone();
            let (n, u) = (name_id.clone(), uncited.clone());
            let before_has_uncited = k
                .app
                .db
                .read(move |conn| -> Result<Option<String>, knockd::store::StoreError> {
                    let group = knockd::store::events::state_before(conn, &n)?.unwrap();
                    knockd::store::state::lookup(conn, group, "m.room.member", &u)
                })
                .await
                .unwrap();
            assert_eq!(before_has_uncited, None, "{backend:?} v{v}");
            assert_eq!(k.event_status(&name_id).await.as_deref(), Some("accepted"));
            // Two knocks citing the same forked extremities share one resolved state before.
            let twins = sim.stale_knocks(&k.server_name, &room_id, "c", 2).await.1;
            let (a, b) = (twins[0].1.clone(), twins[1].1.clone());
            let (before_a, before_b) = k
                .app
                .db
                .read(move |conn| -> Result<_, knockd::store::StoreError> {
                    Ok((
                        knockd::store::events::state_before(conn, &a)?,
                        knockd::store::events::state_before(conn, &b)?,
                    ))
                })
                .await
                .unwrap();
            assert!(before_a.is_some());
            assert_eq!(before_a, before_b, "{backend:?} v{v}: one resolution for both");
            for (user, id) in knocks.iter().chain(more.iter()).filter(|(u, _)| *u != target) {
                assert_eq!(holder(&shown, user).as_ref(), Some(id), "{backend:?} v{v} {user}");
            }
        }
        k.stop().await;
    }
}

/// Dummy events off, so that forks stay.
const NO_DUMMY: [(&str, &str); 1] = [("KNOCKD_ROOMS_DUMMY_EVENT_THRESHOLD", "0")];

/// The twenty forward extremities of the greatest depth.
async fn cited_by_depth(k: &TestKnockd, room_id: &str) -> Vec<String> {
    let r = room_id.to_owned();
    k.app
        .db
        .read(move |conn| knockd::store::events::extremities(conn, &r, 20))
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn stored_pdu(k: &TestKnockd, event_id: &str) -> serde_json::Value {
    let id = event_id.to_owned();
    let row = k
        .app
        .db
        .read(move |conn| knockd::store::events::get(conn, &id))
        .await
        .unwrap()
        .expect("stored");
    serde_json::from_str(&row.pdu).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}
