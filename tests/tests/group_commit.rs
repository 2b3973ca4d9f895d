//! Concurrent send_knock requests to one room share a transaction (group commit): each is
//! answered only once durable, and one refused knock in a batch undoes nothing of the others.

use futures::future::join_all;
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
