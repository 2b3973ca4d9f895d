//! The room engine holds each room in memory; several knockd instances on one PostgreSQL still
//! agree on every room, because each batch checks the room's version and reads the room again
//! when another instance wrote it.

use std::collections::BTreeMap;

use futures::future::join_all;
use knockd::store::{StoreError, rooms};
use knockd_shared::CreateRoomRequest;
use knockd_tests::{SimServer, TestBackend, TestDb, TestKnockd, backends};
use reqwest::StatusCode;

/// The room's current state as stored: `(type, state_key) → event_id`.
async fn stored_state(k: &TestKnockd, room_id: &str) -> BTreeMap<(String, String), String> {
    let room = room_id.to_owned();
    k.app
        .db
        .read(move |conn| -> Result<_, StoreError> {
            Ok(rooms::current_state_rows(conn, &room)?
                .into_iter()
                .map(|(t, s, id, _)| ((t, s), id))
                .collect())
        })
        .await
        .unwrap()
}

/// The room's current state as `k` holds it in memory.
async fn memory_state(k: &TestKnockd, room_id: &str) -> BTreeMap<(String, String), String> {
    let room = k.app.rooms.snapshot(room_id).await.unwrap().expect("room");
    room.current.state.iter().map(|(key, id)| (key.clone(), id.to_string())).collect()
}

// Knocks for one room through two instances at once: every knock answered 200 is in the room's
// state afterwards, and each instance, once it writes again, holds exactly the stored state.
#[tokio::test]
async fn two_instances_take_knocks_for_one_room_at_once() {
    if !backends().contains(&TestBackend::Postgres) {
        eprintln!("skipped: KNOCKD_TEST_DATABASE_URL is not set");
        return;
    }
    let db = TestDb::new(TestBackend::Postgres);
    let first = TestKnockd::start_with(db.alias(), &[]).await;
    let second = first.start_peer(&[]).await;
    let room_id = first.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
    let (to_first, to_second) = (SimServer::start().await, SimServer::start().await);
    to_second.route(&first.server_name, second.federation_url.trim_start_matches("https://"));
    let (server, room) = (&first.server_name, &room_id);
    let knockers = [&to_first, &to_second].into_iter().flat_map(|sim| {
        (0..4).map(move |w| {
            let (server, room_id) = (server.clone(), room.clone());
            async move {
                let mut knocked = Vec::new();
                for i in 0..6 {
                    let local = format!("w{w}k{i}");
                    let (status, body) = sim.knock(&server, &room_id, &local, None).await;
                    assert_eq!(status, StatusCode::OK, "{local}: {body}");
                    knocked.push(sim.user(&local).to_string());
                }
                knocked
            }
        })
    });
    let knocked: Vec<String> = join_all(knockers).await.into_iter().flatten().collect();
    assert_eq!(knocked.len(), 48);
    // One more knock through each instance, the second last: its batch must read the room again
    // (the first wrote since), then hold exactly what is stored.
    for (sim, k, local) in [(&to_first, &first, "last1"), (&to_second, &second, "last2")] {
        let (status, body) = sim.knock(&first.server_name, &room_id, local, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let stored = stored_state(k, &room_id).await;
        assert_eq!(memory_state(k, &room_id).await, stored, "{} in memory", k.admin_url);
    }
    let stored = stored_state(&first, &room_id).await;
    for user in &knocked {
        assert!(stored.contains_key(&("m.room.member".to_owned(), user.clone())), "{user}");
    }
    // The first instance is behind now; its next write catches up.
    let (status, body) = to_first.knock(&first.server_name, &room_id, "last3", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(memory_state(&first, &room_id).await, stored_state(&first, &room_id).await);
    second.stop().await;
    first.stop().await;
}

// Concurrent knocks past the room's cap on pending knocks, decided in one batch: exactly the
// cap is taken, the others get 429, and the engine's memory is what is stored. (Writes that fail
// after writing are in daemon/src/room/tests.rs.)
#[tokio::test]
async fn the_pending_cap_holds_within_a_batch_and_memory_matches_the_store() {
    for backend in backends() {
        let k = TestKnockd::start_with(
            TestDb::new(backend),
            &[("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "3")],
        )
        .await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let answers = join_all((0..8).map(|i| {
            let (sim, server, room_id) = (&sim, k.server_name.clone(), room_id.clone());
            async move { sim.knock(&server, &room_id, &format!("u{i}"), None).await.0 }
        }))
        .await;
        let ok = answers.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(ok, 3, "{backend:?}: {answers:?}");
        assert!(
            answers.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(memory_state(&k, &room_id).await, stored_state(&k, &room_id).await);
        k.stop().await;
    }
}
