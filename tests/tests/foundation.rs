//! The foundation, end to end on every backend: server keys, version, rooms of every version made
//! of real signed PDUs, the admin API's errors.

use std::collections::HashMap;

use knockd::{
    matrix::{Pdu, auth, event},
    room::parse_stored,
    store::events as ev,
};
use knockd_shared::{ClientError, CreateRoomRequest};
use knockd_tests::{TestKnockd, backends};
use ruma::{
    CanonicalJsonObject, RoomVersionId,
    events::StateEventType,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, Verified},
};
use serde_json::{Value, json};

async fn our_keys(k: &TestKnockd) -> (PublicKeyMap, Value) {
    let body: Value = k
        .federation_http()
        .get(format!("{}/_matrix/key/v2/server", k.federation_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut set = std::collections::BTreeMap::new();
    for (id, key) in body["verify_keys"].as_object().unwrap() {
        set.insert(id.clone(), Base64::<Standard>::parse(key["key"].as_str().unwrap()).unwrap());
    }
    let mut map = PublicKeyMap::new();
    map.insert(k.server_name.clone(), set);
    (map, body)
}

// KNOCK-SPEC A.1
#[tokio::test]
async fn server_keys_are_self_signed_and_version_answers_without_auth() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let (keys, body) = our_keys(&k).await;
        assert_eq!(body["server_name"], k.server_name.as_str());
        let object: CanonicalJsonObject = serde_json::from_value(body.clone()).unwrap();
        ruma::signatures::verify_json(&keys, &object).expect("self-signature verifies");
        let valid_until = body["valid_until_ts"].as_u64().unwrap();
        let now = knockd::matrix::now_ms() as u64;
        assert!(valid_until > now && valid_until <= now + 8 * 24 * 3600 * 1000);
        assert!(body["old_verify_keys"].is_object());

        let version: Value = k
            .federation_http()
            .get(format!("{}/_matrix/federation/v1/version", k.federation_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(version["server"]["name"], "knockd");
        k.stop().await;
    }
}

async fn stored_events(k: &TestKnockd, room_id: &str) -> Vec<Pdu> {
    let room = room_id.to_owned();
    k.app
        .db
        .read(move |conn| {
            ev::room_events(conn, &room, 0, 1000)?
                .into_iter()
                .map(|(_, id, text)| parse_stored(&id, &text))
                .collect()
        })
        .await
        .unwrap()
}

/// Every event verifies with our published key, its ID recomputes, and it passes ruma's auth rules
/// against its auth events and the state before it.
fn check_room_events(version: &RoomVersionId, room_id: &str, events: &[Pdu], keys: &PublicKeyMap) {
    let rules = event::rules(version).unwrap();
    let mut seen: HashMap<_, Pdu> = HashMap::new();
    let mut state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
    for pdu in events {
        let json = (*pdu.json).clone();
        assert_eq!(event::event_id(&json, &rules).unwrap(), pdu.event_id, "v{version}");
        assert_eq!(
            event::verify(&json, keys, &rules),
            Ok(Verified::All),
            "v{version}: {}",
            pdu.event_id
        );
        assert!(!json.contains_key("event_id") && !json.contains_key("unsigned"));
        auth::check_against_auth_events(&rules.authorization, pdu, |e| seen.get(e).cloned())
            .unwrap_or_else(|e| panic!("v{version} {}: {e}", pdu.event_type));
        auth::check_against_state(&rules.authorization, pdu, |t, k| {
            state.get(&(t.clone(), k.to_owned())).cloned()
        })
        .unwrap_or_else(|e| panic!("v{version} {}: {e}", pdu.event_type));
        if let Some(key) = &pdu.state_key {
            state.insert((pdu.event_type.to_string().into(), key.clone()), pdu.clone());
        }
        seen.insert(pdu.event_id.clone(), pdu.clone());
    }
    let create = &events[0];
    assert_eq!(create.event_type.to_string(), "m.room.create");
    if rules.authorization.room_create_event_id_as_room_id {
        assert!(create.room_id.is_none(), "v12 create has no room_id");
        assert_eq!(event::room_id_from_create(&create.event_id).unwrap().as_str(), room_id);
        for pdu in &events[1..] {
            assert!(!pdu.auth_events.contains(&create.event_id), "v12 never cites create");
        }
    } else {
        assert_eq!(create.room_id.as_ref().unwrap().as_str(), room_id);
    }
}

#[tokio::test]
async fn rooms_of_every_version_are_real_signed_pdus() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let (keys, _) = our_keys(&k).await;
        let alias = format!("#lobby:{}", k.server_name);
        for v in ["7", "8", "9", "10", "11", "12"] {
            let created = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    name: Some(format!("Room v{v}")),
                    topic: Some("Knock to enter".into()),
                    avatar_url: Some("mxc://example.org/abc".into()),
                    alias: (v == "10").then(|| alias.clone()),
                    ..CreateRoomRequest::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{backend:?} v{v}: {e}"));
            assert_eq!(created.room_version, v);
            let detail = k.admin.room(&created.room_id).await.unwrap();
            assert_eq!(detail.summary.name.as_deref(), Some(format!("Room v{v}").as_str()));
            assert_eq!(detail.summary.topic.as_deref(), Some("Knock to enter"));
            assert_eq!(detail.summary.avatar_url.as_deref(), Some("mxc://example.org/abc"));
            assert_eq!(detail.summary.join_rule, "knock");
            assert_eq!(detail.summary.history_visibility.as_deref(), Some("shared"));
            assert_eq!(detail.summary.joined_members, 1);
            assert_eq!(detail.summary.forward_extremities, 1);
            assert_eq!(detail.summary.creator, format!("@admin:{}", k.server_name));
            if v == "10" {
                assert_eq!(detail.summary.alias.as_deref(), Some(alias.as_str()));
            }
            let types: Vec<&str> = detail.state.iter().map(|s| s.event_type.as_str()).collect();
            for t in [
                "m.room.create",
                "m.room.member",
                "m.room.power_levels",
                "m.room.join_rules",
                "m.room.history_visibility",
            ] {
                assert!(types.contains(&t), "v{v} state lacks {t}");
            }
            let version = RoomVersionId::try_from(v).unwrap();
            let events = stored_events(&k, &created.room_id).await;
            check_room_events(&version, &created.room_id, &events, &keys);
            let pl = detail.state.iter().find(|s| s.event_type == "m.room.power_levels").unwrap();
            let creator = format!("@admin:{}", k.server_name);
            let create = detail.state.iter().find(|s| s.event_type == "m.room.create").unwrap();
            if v == "11" || v == "12" {
                assert!(create.content.get("creator").is_none(), "v{v} create has no creator");
            } else {
                assert_eq!(create.content["creator"], creator.as_str());
            }
            if v == "12" {
                assert!(
                    pl.content["users"].get(&creator).is_none(),
                    "v12 creators are not in users"
                );
            } else {
                assert_eq!(pl.content["users"][&creator], 100);
            }
        }
        let list = k.admin.list_rooms(None, None).await.unwrap();
        assert_eq!(list.rooms.len(), 6);
        assert!(list.next.is_none());
        let page = k.admin.list_rooms(None, Some(4)).await.unwrap();
        assert_eq!(page.rooms.len(), 4);
        let rest = k.admin.list_rooms(page.next.as_deref(), Some(4)).await.unwrap();
        assert_eq!(rest.rooms.len(), 2);
        assert!(rest.next.is_none());
        k.stop().await;
    }
}

#[tokio::test]
async fn knock_restricted_and_other_join_rules() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let other = k.admin.create_room(&CreateRoomRequest::default()).await.unwrap();
        assert_eq!(other.room_version, "10", "default room version");
        let created = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("10".into()),
                join_rule: Some("knock_restricted".into()),
                allow: vec![other.room_id.clone()],
                ..CreateRoomRequest::default()
            })
            .await
            .unwrap();
        let detail = k.admin.room(&created.room_id).await.unwrap();
        assert_eq!(detail.summary.join_rule, "knock_restricted");
        assert_eq!(detail.summary.allow, vec![other.room_id.clone()]);
        for rule in ["invite", "public"] {
            let r = k
                .admin
                .create_room(&CreateRoomRequest {
                    join_rule: Some(rule.into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(k.admin.room(&r.room_id).await.unwrap().summary.join_rule, rule);
        }
        k.stop().await;
    }
}

fn api_error(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, body } => (status, body.errcode, body.error),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn bad_room_requests_get_clear_errors_and_write_nothing() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let bad = |v: Option<&str>, rule: Option<&str>, alias: Option<String>| CreateRoomRequest {
            room_version: v.map(Into::into),
            join_rule: rule.map(Into::into),
            alias,
            ..CreateRoomRequest::default()
        };
        for v in ["7", "8", "9"] {
            let (status, code, msg) = api_error(
                k.admin
                    .create_room(&bad(Some(v), Some("knock_restricted"), None))
                    .await
                    .unwrap_err(),
            );
            assert_eq!((status, code.as_str()), (400, "M_INVALID_PARAM"));
            assert!(msg.contains("knock_restricted") && msg.contains("10"), "{msg}");
        }
        let (status, _, msg) =
            api_error(k.admin.create_room(&bad(Some("6"), None, None)).await.unwrap_err());
        assert_eq!(status, 400);
        assert!(msg.contains("not supported"), "{msg}");
        let (status, _, msg) =
            api_error(k.admin.create_room(&bad(None, Some("private"), None)).await.unwrap_err());
        assert_eq!(status, 400);
        assert!(msg.contains("private"), "{msg}");
        let (status, _, msg) = api_error(
            k.admin
                .create_room(&bad(None, None, Some("#a:elsewhere.example".into())))
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 400);
        assert!(msg.contains("not on this server"), "{msg}");

        let http = reqwest::Client::new();
        let url = format!("{}/_knockd/admin/v1/rooms", k.admin_url);
        let token = std::fs::read_to_string(k.data_dir.join("admin.token")).unwrap();
        let token = token.trim();
        let send = |body: &'static str, auth: Option<String>| {
            let mut r = http.post(&url).body(body);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send()
        };
        let r = send("{not json", Some(format!("Bearer {token}"))).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
        let r = send(r#"{"room_version": 10}"#, Some(format!("Bearer {token}"))).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");
        let r = send(r#"{"nmae": "typo"}"#, Some(format!("Bearer {token}"))).await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");
        let r = send("{}", None).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_MISSING_TOKEN");
        let r = send("{}", Some("Bearer nope".into())).await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
        assert!(body["error"].is_string());

        let (status, code, _) = api_error(k.admin.room("!nope:example.org").await.unwrap_err());
        assert_eq!((status, code.as_str()), (404, "M_NOT_FOUND"));
        assert!(k.admin.list_rooms(None, None).await.unwrap().rooms.is_empty(), "nothing written");
        let (status, _, _) =
            api_error(k.admin.list_rooms(Some("garbage"), None).await.unwrap_err());
        assert_eq!(status, 400);

        let ready = http.get(format!("{}/readyz", k.admin_url)).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
        let _ = json!({});
        k.stop().await;
    }
}

// Issue 15.3: revoking the token kept in admin.token (`knockd admin token revoke`) leaves it
// revoked; the next start writes a new working one instead of failing.
#[tokio::test]
async fn a_revoked_admin_token_is_replaced_at_the_next_start() {
    use knockd::store::{StoreError, users};
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        k.admin.list_rooms(None, None).await.expect("the first token works");
        let revoked = k
            .app
            .db
            .write(|conn| -> Result<bool, StoreError> {
                let id = users::tokens(conn)?
                    .into_iter()
                    .find(|t| t.label.as_deref() == Some("admin.token"))
                    .expect("admin.token's row")
                    .token_id;
                users::revoke(conn, &id, 1)
            })
            .await
            .unwrap();
        assert!(revoked);
        let stale = k.admin.clone();
        let k = k.restart().await;
        assert!(
            stale.list_rooms(None, None).await.is_err(),
            "{backend:?}: the revoked token stays revoked"
        );
        k.admin.list_rooms(None, None).await.expect("the new token in admin.token works");
        k.stop().await;
    }
}
