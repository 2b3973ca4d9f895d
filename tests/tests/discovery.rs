//! Discovery a deployment needs (KNOCK-SPEC H.47; CPL-3, CPL-4): aliases, room summaries,
//! profiles, the public room directory, empty device answers.

use knockd::matrix::client::encode_segment;
use knockd_shared::{CreateRoomRequest, RoomSettings};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn get(sim: &SimServer, k: &TestKnockd, path: &str) -> (StatusCode, Value) {
    sim.request(Method::GET, &k.server_name, path, None).await
}

#[tokio::test]
async fn aliases_summaries_profiles_and_devices() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let alias = format!("#lobby:{}", k.server_name);
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("12".into()),
                name: Some("Lobby".into()),
                topic: Some("Knock first".into()),
                alias: Some(alias.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let (status, body) = get(
            &sim,
            &k,
            &format!(
                "/_matrix/federation/v1/query/directory?room_alias={}",
                encode_segment(&alias)
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room_id.as_str());
        assert_eq!(body["servers"][0], k.server_name.as_str());
        let missing = format!("#nope:{}", k.server_name);
        let (status, body) = get(
            &sim,
            &k,
            &format!(
                "/_matrix/federation/v1/query/directory?room_alias={}",
                encode_segment(&missing)
            ),
        )
        .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
        );

        // The summary Synapse shows before "ask to join".
        let (status, body) = get(
            &sim,
            &k,
            &format!("/_matrix/federation/v1/hierarchy/{}", encode_segment(&room_id)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let room = &body["room"];
        assert_eq!(room["name"], "Lobby");
        assert_eq!(room["topic"], "Knock first");
        assert_eq!(room["join_rule"], "knock");
        assert_eq!(room["canonical_alias"], alias.as_str());
        assert_eq!(room["num_joined_members"], 1);
        assert_eq!(room["room_version"], "12");
        let private = k
            .admin
            .create_room(&CreateRoomRequest {
                join_rule: Some("invite".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let (status, _) = get(
            &sim,
            &k,
            &format!("/_matrix/federation/v1/hierarchy/{}", encode_segment(&private)),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "invite-only rooms are not previewed");

        let admin = k.admin_user();
        let (status, body) = get(
            &sim,
            &k,
            &format!("/_matrix/federation/v1/query/profile?user_id={}", encode_segment(&admin)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = get(
            &sim,
            &k,
            &format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                encode_segment(&format!("@ghost:{}", k.server_name))
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) = sim
            .request(
                Method::POST,
                &k.server_name,
                "/_matrix/federation/v1/user/keys/query",
                Some(br#"{"device_keys":{}}"#),
            )
            .await;
        assert_eq!((status, body["device_keys"].is_object()), (StatusCode::OK, true));
        let (status, body) = get(
            &sim,
            &k,
            &format!("/_matrix/federation/v1/user/devices/{}", encode_segment(&admin)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["devices"], serde_json::json!([]));
        k.stop().await;
    }
}

// CPL-3 (v7 knock) and CPL-4 (v10 knock_restricted): published rooms carry their join rule.
#[tokio::test]
async fn cpl_3_4_public_directory_shows_join_rules() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let knock = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("7".into()),
                name: Some("K".into()),
                published: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let restricted = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("10".into()),
                join_rule: Some("knock_restricted".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        k.admin
            .update_room(&restricted, &RoomSettings { published: Some(true), ..Default::default() })
            .await
            .unwrap();
        let public = k
            .admin
            .create_room(&CreateRoomRequest {
                join_rule: Some("public".into()),
                published: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let _hidden = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap();
        let (status, body) = get(&sim, &k, "/_matrix/federation/v1/publicRooms").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rule = |id: &str| {
            body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["room_id"] == id)
                .map(|r| r["join_rule"].clone())
        };
        assert_eq!(rule(&knock), Some("knock".into()));
        assert_eq!(rule(&restricted), Some("knock_restricted".into()));
        assert_eq!(rule(&public), Some("public".into()));
        assert_eq!(body["chunk"].as_array().unwrap().len(), 3, "unpublished rooms stay out");
        let (status, body) = sim
            .request(
                Method::POST,
                &k.server_name,
                "/_matrix/federation/v1/publicRooms",
                Some(br#"{"limit":2}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["chunk"].as_array().unwrap().len(), 2);
        assert!(body["next_batch"].is_string());
        assert!(k.admin.room(&knock).await.unwrap().summary.published);
        k.stop().await;
    }
}
