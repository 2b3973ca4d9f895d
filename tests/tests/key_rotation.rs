//! `knockd key rotate` (issue "Federation edge", item 7): after a rotation knockd signs with the new
//! key and publishes the replaced one in `old_verify_keys`, so a server that joins later can still
//! check the room's older events. (The files and knockd's own checks with old keys are tested in
//! daemon/src/matrix/keys.rs, the command in daemon/tests/cli.rs.)

use knockd::{
    matrix::{event, keys, now_ms},
    server::SIGNING_KEY_FILE,
};
use knockd_shared::{CreateRoomRequest, RoomSettings};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, RoomVersionId,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, Verified},
};
use serde_json::Value;

/// Our key response.
async fn key_response(k: &TestKnockd) -> Value {
    let body: Value = k
        .federation_http()
        .get(format!("{}/_matrix/key/v2/server", k.federation_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body
}

fn key_map(server: &str, keys: &[(&str, &str)]) -> PublicKeyMap {
    let set = keys
        .iter()
        .map(|(id, key)| (id.to_string(), Base64::<Standard>::parse(key).unwrap()))
        .collect();
    PublicKeyMap::from([(server.to_owned(), set)])
}

// A peer joining after the rotation: the room's events signed before it verify with the old key
// (and not without it), those signed after with the new one; the key response carries both and
// is signed with the new key.
#[tokio::test]
async fn events_signed_before_a_rotation_still_verify() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("10".into()),
                join_rule: Some("public".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        let old_id = k.app.keys.key_id();
        let old_public = k.app.keys.public_key_base64();
        let before = now_ms() as u64;
        let k = k
            .restart_with(|dir| {
                keys::rotate(&dir.join(SIGNING_KEY_FILE), now_ms() as u64).unwrap();
            })
            .await;
        let after = now_ms() as u64;
        let new_id = k.app.keys.key_id();
        assert_ne!(new_id, old_id);

        let body = key_response(&k).await;
        let server = k.server_name.as_str();
        let old = &body["old_verify_keys"][&old_id];
        assert_eq!(old["key"], old_public.as_str(), "{body}");
        let expired = old["expired_ts"].as_u64().unwrap();
        assert!(before <= expired && expired <= after, "{body}");
        let new_public = body["verify_keys"][&new_id]["key"].as_str().unwrap().to_owned();
        let object: CanonicalJsonObject = serde_json::from_value(body.clone()).unwrap();
        ruma::signatures::verify_json(&key_map(server, &[(&new_id, &new_public)]), &object)
            .expect("the key response is signed with the new key");

        // Something knockd signs after the rotation.
        let settings =
            RoomSettings { topic: Some("after the rotation".into()), ..Default::default() };
        k.admin.update_room(&room_id, &settings).await.unwrap();
        let sim = SimServer::start().await;
        let (s, joined) = sim.membership("join", &k.server_name, &room_id, "pat").await;
        assert_eq!(s, StatusCode::OK, "{joined}");
        let rules = event::rules(&RoomVersionId::V10).unwrap();
        let both = key_map(server, &[(&old_id, &old_public), (&new_id, &new_public)]);
        let only_new = key_map(server, &[(&new_id, &new_public)]);
        let (mut signed_before, mut signed_after) = (0, 0);
        for pdu in joined["state"]
            .as_array()
            .unwrap()
            .iter()
            .chain(joined["auth_chain"].as_array().unwrap())
        {
            let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
            if pdu["sender"].as_str().is_some_and(|s| !s.ends_with(&format!(":{server}"))) {
                continue;
            }
            assert_eq!(event::verify(&object, &both, &rules), Ok(Verified::All), "{pdu}");
            let signed_with_old = pdu["signatures"][server].get(&old_id).is_some();
            if signed_with_old {
                signed_before += 1;
                assert!(pdu["origin_server_ts"].as_u64().unwrap() <= expired, "{pdu}");
                assert!(event::verify(&object, &only_new, &rules).is_err(), "{pdu}");
            } else {
                signed_after += 1;
                assert!(pdu["signatures"][server].get(&new_id).is_some(), "{pdu}");
            }
        }
        assert!(signed_before >= 4, "create, member, power levels, join rules: {joined}");
        assert!(signed_after >= 1, "the topic: {joined}");
        k.stop().await;
    }
}
