//! Room administration through the admin API: settings, local members with power levels, the
//! live event stream, and parked outbound items.

use std::time::Duration;

use knockd_shared::{AdminClient, ClientError, CreateRoomRequest, KnockQuery, RoomSettings};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends, sim::Mode};
use reqwest::StatusCode;

fn status_of(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, body } => (status, body.error),
        other => panic!("expected an API error: {other}"),
    }
}

async fn token_for(k: &TestKnockd, user: &str) -> AdminClient {
    let (user, token) = (user.to_owned(), knockd::server::new_token().unwrap());
    let t = token.clone();
    k.app
        .db
        .write(move |conn| -> Result<(), knockd::store::StoreError> {
            knockd::store::users::ensure_user(conn, &user, 0)?;
            knockd::store::users::add_token(conn, &t, &user, Some("test"), 0)?;
            Ok(())
        })
        .await
        .unwrap();
    AdminClient::new(k.admin_url.clone(), token)
}

#[tokio::test]
async fn settings_members_and_power_levels() {
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
        let alias = format!("#lobby:{}", k.server_name);
        let changed = k
            .admin
            .update_room(
                &room_id,
                &RoomSettings {
                    name: Some("Lobby".into()),
                    topic: Some("Hi".into()),
                    alias: Some(alias.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(changed.event_ids.len(), 3);
        let shown = k.admin.room(&room_id).await.unwrap();
        assert_eq!(shown.summary.name.as_deref(), Some("Lobby"));
        assert_eq!(shown.summary.alias.as_deref(), Some(alias.as_str()));
        let (status, msg) = status_of(
            k.admin
                .update_room(
                    &room_id,
                    &RoomSettings {
                        join_rule: Some("knock_restricted".into()),
                        allow: vec!["nope".into()],
                        ..Default::default()
                    },
                )
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 400, "{msg}");
        let (status, _) =
            status_of(k.admin.update_room(&room_id, &RoomSettings::default()).await.unwrap_err());
        assert_eq!(status, 400);

        // A moderator: a local member with power 50 (kick, ban and invite need 50 here).
        let moderator = format!("@mod:{}", k.server_name);
        k.admin.add_member(&room_id, &moderator, Some(50)).await.unwrap();
        let shown = k.admin.room(&room_id).await.unwrap();
        assert_eq!(shown.summary.joined_members, 2);
        let pl = shown.state.iter().find(|s| s.event_type == "m.room.power_levels").unwrap();
        assert_eq!(pl.content["users"][&moderator], 50);
        let mod_client = token_for(&k, &moderator).await;
        let (s, _) = sim.knock(&k.server_name, &room_id, "x1", None).await;
        assert_eq!(s, StatusCode::OK);
        let id = k.admin.list_knocks(&KnockQuery::default()).await.unwrap().knocks[0].id;
        let decision = mod_client.deny(id, Some("no"), false).await.unwrap();
        assert_eq!(decision.actor, moderator, "the moderator's own kick");

        // Lowering the moderator's power takes the right away (403 with the reason).
        k.admin.set_power_level(&room_id, &moderator, 0).await.unwrap();
        let (s, _) = sim.knock(&k.server_name, &room_id, "x2", None).await;
        assert_eq!(s, StatusCode::OK);
        let id = k.admin.list_knocks(&KnockQuery::default()).await.unwrap().knocks[0].id;
        let (status, msg) = status_of(mod_client.deny(id, None, true).await.unwrap_err());
        assert_eq!(status, 403, "{msg}");
        // A moderator cannot change the power levels (PL event needs 100).
        let (status, _) =
            status_of(mod_client.set_power_level(&room_id, &moderator, 100).await.unwrap_err());
        assert_eq!(status, 403);
        // Removing the member: they can no longer act at all.
        k.admin.remove_member(&room_id, &moderator).await.unwrap();
        assert_eq!(k.admin.room(&room_id).await.unwrap().summary.joined_members, 1);
        let (status, _) = status_of(
            k.admin.add_member(&room_id, "@x:elsewhere.example", None).await.unwrap_err(),
        );
        assert_eq!(status, 400, "only local users");
        k.stop().await;
    }
}

#[tokio::test]
async fn event_stream_reports_queue_changes() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let response = k.admin.events().await.unwrap();
        assert!(
            response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream")
        );
        let mut response = response;
        let (s, _) = sim.knock(&k.server_name, &room_id, "live", Some("hello")).await;
        assert_eq!(s, StatusCode::OK);
        let mut seen = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains("\"kind\":\"knock\"") {
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.contains("event: knock") && seen.contains(&room_id), "{seen}");
        drop(response);
        let stranger = AdminClient::new(k.admin_url.clone(), "nope");
        assert_eq!(status_of(stranger.events().await.unwrap_err()).0, 401);
        k.stop().await;
    }
}

#[tokio::test]
async fn items_failing_too_long_are_parked_with_the_reason() {
    for backend in backends() {
        let env = [
            ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "20"),
            ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "50"),
            ("KNOCKD_OUTBOX_POLL_MS", "20"),
            ("KNOCKD_OUTBOX_PARK_AFTER_MS", "300"),
        ];
        let k = TestKnockd::start_with(TestDb::new(backend), &env).await;
        let sim = SimServer::start().await;
        let room_id = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap().room_id;
        let (s, _) = sim.knock(&k.server_name, &room_id, "p", None).await;
        assert_eq!(s, StatusCode::OK);
        let id = k.admin.list_knocks(&KnockQuery::default()).await.unwrap().knocks[0].id;
        sim.set_mode(Mode::Down);
        k.admin.approve(id, None).await.unwrap();
        let mut parked = Vec::new();
        for _ in 0..200 {
            parked = k.admin.outbox().await.unwrap().parked;
            if !parked.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(parked.len(), 1, "{backend:?}");
        assert_eq!(parked[0].destination, sim.server_name.as_str());
        assert!(
            parked[0].last_error.as_deref().unwrap_or_default().contains("503"),
            "{:?}",
            parked[0]
        );
        k.stop().await;
    }
}
