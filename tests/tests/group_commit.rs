//! Concurrent send_knock requests to one room share a transaction (group commit): each is
//! answered only once durable, and one refused knock in a batch undoes nothing of the others.

use futures::future::join_all;
use knockd::store::{StoreError, events, rooms, state};
use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::StatusCode;

#[tokio::test]
async fn concurrent_knocks_commit_together_and_a_refused_one_spoils_none() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        // Mallory knocks and is banned; her second knock, signed from a template made before
        // the ban, passes the state before it but not the current state: 403.
        let (status, body) = sim.knock(&k.server_name, &room_id, "mallory", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, made) = sim.make_knock(&k.server_name, &room_id, "@x:y").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{made}: a user of another server");
        let (_, made) = sim.make_knock(&k.server_name, &room_id, sim.user("t").as_str()).await;
        let version = made["room_version"].as_str().unwrap().to_owned();
        let list = k
            .admin
            .list_knocks(&KnockQuery { room_id: Some(room_id.clone()), ..Default::default() })
            .await
            .unwrap();
        k.admin.deny(list.knocks[0].id, Some("spam"), true).await.unwrap();

        let mut signed = Vec::new();
        for local in (0..24).map(|i| format!("u{i}")).chain(["mallory".to_owned()]) {
            let user = sim.user(&local);
            let mut event = made["event"].clone();
            event["sender"] = user.as_str().into();
            event["state_key"] = user.as_str().into();
            let (id, pdu) = sim.sign_template(&version, &event, Some("let me in"));
            signed.push((user.to_string(), id.to_string(), pdu));
        }
        let answers = join_all(
            signed.iter().map(|(_, id, pdu)| sim.send_knock(&k.server_name, &room_id, id, pdu)),
        )
        .await;
        for ((user, _, _), (status, body)) in signed.iter().zip(&answers) {
            if user.starts_with("@mallory") {
                assert_eq!(status, &StatusCode::FORBIDDEN, "{backend:?}: {body}");
                assert_eq!(body["errcode"], "M_FORBIDDEN");
            } else {
                assert_eq!(status, &StatusCode::OK, "{backend:?} {user}: {body}");
                assert!(body["knock_room_state"].as_array().is_some_and(|s| !s.is_empty()));
            }
        }

        // Everything answered 200 survives a restart: queued, accepted, in the current state.
        let k = k.restart().await;
        let pending = k
            .admin
            .list_knocks(&KnockQuery {
                room_id: Some(room_id.clone()),
                status: Some("pending".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.knocks.len(), 24, "{backend:?}");
        let shown = k.admin.room(&room_id).await.unwrap();
        for (user, id, _) in &signed {
            let holder = shown
                .state
                .iter()
                .find(|s| s.event_type == "m.room.member" && &s.state_key == user)
                .map(|s| s.event_id.clone());
            if user.starts_with("@mallory") {
                assert_ne!(holder.as_ref(), Some(id), "{backend:?}: the refused knock");
                assert_eq!(k.event_status(id).await, None, "{backend:?}: nothing stored");
            } else {
                assert_eq!(holder.as_ref(), Some(id), "{backend:?} {user}");
                assert_eq!(k.event_status(id).await.as_deref(), Some("accepted"));
            }
        }
        k.stop().await;
    }
}

// Concurrent knocks, each from a fresh make_knock: every template cites forks the others made
// meanwhile, so most states before are merges of several branches, and merges of merges. The
// state before each knock is exactly its prev events' states together (distinct users: nothing
// conflicts), the current state holds every knock, and state groups stay shallow.
#[tokio::test]
async fn merged_states_before_are_exact_and_stay_shallow() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let knockers = (0..8).map(|w| {
            let (sim, server, room_id) = (&sim, k.server_name.clone(), room_id.clone());
            async move {
                for i in 0..8 {
                    let (status, body) =
                        sim.knock(&server, &room_id, &format!("w{w}k{i}"), None).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            }
        });
        join_all(knockers).await;
        let room = room_id.clone();
        k.app
            .db
            .read(move |conn| -> Result<(), StoreError> {
                let current = rooms::current_group(conn, &room)?.expect("current state");
                let current = state::full_state(conn, current)?;
                let members = current.keys().filter(|(t, _)| t == "m.room.member").count();
                assert_eq!(members, 1 + 64, "the creator and every knocker");
                let mut merged = 0;
                for (key, event_id) in current.iter().filter(|(k, _)| k.1.starts_with("@w")) {
                    let pdu: serde_json::Value =
                        serde_json::from_str(&events::get(conn, event_id)?.unwrap().pdu).unwrap();
                    let prev: Vec<String> = pdu["prev_events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_str().unwrap().to_owned())
                        .collect();
                    let mut expected = state::StateMap::new();
                    for placed in events::placements(conn, &prev)? {
                        expected.extend(state::full_state(conn, placed.state_after.unwrap())?);
                    }
                    let before = events::state_before(conn, event_id)?.unwrap();
                    assert_eq!(state::full_state(conn, before)?, expected, "{key:?}");
                    merged += usize::from(prev.len() > 1);
                    let depth = state::ancestry(conn, before)?.len();
                    assert!(depth <= 3, "{key:?}: state before {depth} chains deep");
                }
                assert!(merged > 0, "some knocks cite several forks");
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        k.stop().await;
    }
}
