//! Joins after approval and rescinds (issue: resident server, parts 1–2; KNOCK-SPEC F.34, H.44).

use std::time::Duration;

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

async fn room(k: &TestKnockd, v: &str, rule: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest {
            room_version: Some(v.into()),
            join_rule: Some(rule.into()),
            name: Some("Joinable".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .room_id
}

async fn knock_id(k: &TestKnockd, sim: &SimServer, room_id: &str, local: &str) -> i64 {
    let (s, b) = sim.knock(&k.server_name, room_id, local, Some("hi")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    k.admin
        .list_knocks(&KnockQuery {
            user_id: Some(sim.user(local).to_string()),
            room_id: Some(room_id.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .knocks[0]
        .id
}

async fn wait_status(k: &TestKnockd, id: i64, status: &str) {
    for _ in 0..400 {
        if k.admin.knock(id).await.unwrap().knock.status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("knock {id} never became {status}");
}

fn types(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

// CPL-1.3, CPL-1.12, KNOCK-SPEC H.44: no join on a knock alone; after approval the user joins
// through knockd and gets the full state before the join and its auth chain.
#[tokio::test]
async fn cpl_1_3_and_1_12_join_needs_the_invite_then_works() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        for v in ["7", "10", "12"] {
            let room_id = room(&k, v, "knock").await;
            let id = knock_id(&k, &sim, &room_id, "ann").await;
            let (status, body) = sim
                .make_membership("join", &k.server_name, &room_id, sim.user("ann").as_str())
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "CPL-1.3 {backend:?} v{v}: {body}");

            k.admin.approve(id, None).await.unwrap();
            wait_status(&k, id, "approved").await;
            let (status, made) = sim
                .make_membership("join", &k.server_name, &room_id, sim.user("ann").as_str())
                .await;
            assert_eq!(status, StatusCode::OK, "{made}");
            assert_eq!(made["room_version"], v);
            let (jid, jpdu) = sim.sign_event(v, made["event"].clone());
            let (status, answer) =
                sim.send_membership("join", 2, &k.server_name, &room_id, jid.as_str(), &jpdu).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {answer}");
            assert_eq!(answer["members_omitted"], false);
            let state = types(&answer["state"]);
            for t in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"]
            {
                assert!(state.contains(&t.to_owned()), "v{v}: {t} in state {state:?}");
            }
            let invited = answer["state"].as_array().unwrap().iter().any(|e| {
                e["state_key"] == sim.user("ann").as_str() && e["content"]["membership"] == "invite"
            });
            assert!(invited, "the state before the join has the invite");
            assert!(!answer["auth_chain"].as_array().unwrap().is_empty());
            assert!(
                answer["servers_in_room"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == k.server_name.as_str())
            );
            wait_status(&k, id, "joined").await;
            let detail = k.admin.room(&room_id).await.unwrap();
            assert_eq!(detail.summary.joined_members, 2);
            // A retried send_join gets the same answer (v1 wraps it as [200, {...}]).
            let (status, v1) =
                sim.send_membership("join", 1, &k.server_name, &room_id, jid.as_str(), &jpdu).await;
            assert_eq!(status, StatusCode::OK, "{v1}");
            assert_eq!(v1[0], 200);
            assert_eq!(types(&v1[1]["state"]).len(), state.len());
            // CPL-1.12: a joined user cannot knock.
            let (status, _) = sim.knock(&k.server_name, &room_id, "ann", None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
        k.stop().await;
    }
}

// KNOCK-SPEC H.44: ver negotiation on make_join.
#[tokio::test]
async fn make_join_negotiates_the_room_version() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "11", "public").await;
        let user = sim.user("v");
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=9&ver=10",
            knockd::matrix::client::encode_segment(&room_id),
            knockd::matrix::client::encode_segment(user.as_str())
        );
        let (status, body) = sim.request(reqwest::Method::GET, &k.server_name, &path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION");
        assert_eq!(body["room_version"], "11");
        let (status, answer) = sim.membership("join", &k.server_name, &room_id, "v").await;
        assert_eq!(status, StatusCode::OK, "public rooms need no invite: {answer}");
        k.stop().await;
    }
}

// KNOCK-SPEC F.34: a knocker rescinds with make_leave/send_leave (v1 answers [200, {}], v2 {});
// the queue row becomes rescinded.
#[tokio::test]
async fn rescind_over_federation() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for (v, api) in [("7", 1u8), ("12", 2u8)] {
            let room_id = room(&k, v, "knock").await;
            let id = knock_id(&k, &sim, &room_id, "rita").await;
            let (status, made) = sim
                .make_membership("leave", &k.server_name, &room_id, sim.user("rita").as_str())
                .await;
            assert_eq!(status, StatusCode::OK, "{made}");
            let (lid, lpdu) = sim.sign_event(v, made["event"].clone());
            let (status, answer) = sim
                .send_membership("leave", api, &k.server_name, &room_id, lid.as_str(), &lpdu)
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            if api == 1 {
                assert_eq!(answer, json!([200, {}]));
            } else {
                assert_eq!(answer, json!({}));
            }
            assert_eq!(k.admin.knock(id).await.unwrap().knock.status, "rescinded");
            // Knock again afterwards (CPL-1.7's federated form).
            let (status, _) = sim.knock(&k.server_name, &room_id, "rita", Some("again")).await;
            assert_eq!(status, StatusCode::OK);
            // Someone who never knocked cannot leave.
            let (status, _) = sim
                .make_membership("leave", &k.server_name, &room_id, sim.user("stranger").as_str())
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
        k.stop().await;
    }
}

// CPL-5 / CPL-6 for send_join and send_leave (v1 and v2): structural checks answer 400.
#[tokio::test]
async fn cpl_5_6_send_join_and_send_leave_reject_other_events_with_400() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for (case, v) in [("CPL-5", "7"), ("CPL-6", "10")] {
            let room_id = room(&k, v, "public").await;
            let footprint = k.room_footprint(&room_id).await;
            let charlie = sim.user("charlie");
            let doris = sim.user("doris");
            let base = json!({
                "type": "m.room.member", "sender": charlie.as_str(), "state_key": charlie.as_str(),
                "room_id": room_id, "origin_server_ts": 1, "depth": 10, "prev_events": [], "auth_events": [],
                "content": { "membership": "join" },
            });
            for (kind, right) in [("join", "join"), ("leave", "leave")] {
                let mut cases: Vec<(String, Value)> = Vec::new();
                let mut message = base.clone();
                message["type"] = "m.room.message".into();
                message.as_object_mut().unwrap().remove("state_key");
                cases.push(("regular event".into(), message));
                let mut no_key = base.clone();
                no_key["content"]["membership"] = right.into();
                no_key.as_object_mut().unwrap().remove("state_key");
                cases.push(("non-state membership event".into(), no_key));
                for m in ["join", "leave", "invite", "knock"].into_iter().filter(|m| *m != right) {
                    let mut e = base.clone();
                    e["content"]["membership"] = m.into();
                    cases.push((format!("{m} event"), e));
                }
                let mut mismatched = base.clone();
                mismatched["content"]["membership"] = right.into();
                mismatched["state_key"] = doris.as_str().into();
                cases.push(("mismatched state key".into(), mismatched));
                for api in [1u8, 2u8] {
                    for (name, e) in &cases {
                        let (id, pdu) = sim.sign_event(v, e.clone());
                        let (status, body) = sim
                            .send_membership(kind, api, &k.server_name, &room_id, id.as_str(), &pdu)
                            .await;
                        assert_eq!(
                            status,
                            StatusCode::BAD_REQUEST,
                            "{case} {backend:?} send_{kind} v{api} {name}: {body}"
                        );
                    }
                }
            }
            assert_eq!(k.room_footprint(&room_id).await, footprint);
        }
        k.stop().await;
    }
}

// CPL-1.6: a joined remote server sees a knock within 5 s.
#[tokio::test]
async fn cpl_1_6_joined_servers_see_knocks() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let member = SimServer::start().await;
        let knocker = SimServer::start().await;
        let room_id = room(&k, "10", "public").await;
        let (s, b) = member.membership("join", &k.server_name, &room_id, "david").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        k.admin
            .update_room(
                &room_id,
                &knockd_shared::RoomSettings {
                    join_rule: Some("knock".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let (s, _) = knocker
            .knock(&k.server_name, &room_id, "charlie", Some("Let me in... LET ME IN!!!"))
            .await;
        assert_eq!(s, StatusCode::OK);
        let charlie = knocker.user("charlie");
        let inbox = member
            .wait_for(5, "the knock at the joined server", |i| {
                i.pdus().iter().any(|p| {
                    p["state_key"] == charlie.as_str() && p["content"]["membership"] == "knock"
                })
            })
            .await;
        let knock = inbox.pdus().into_iter().find(|p| p["state_key"] == charlie.as_str()).unwrap();
        assert_eq!(knock["content"]["reason"], "Let me in... LET ME IN!!!", "the reason survives");
        assert_eq!(member.inbox().bad_signatures, 0);
        // The knocker's own server is not sent its own knock.
        assert!(knocker.inbox().pdus().iter().all(|p| p["content"]["membership"] != "knock"));
        k.stop().await;
    }
}

// CPL-7 (knockd's part): in a knock_restricted room (v10+), a member of an allow room that knockd
// hosts joins directly; knockd authorises the join and returns the event it signed.
#[tokio::test]
async fn restricted_join_authorised_by_knockd() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["10", "12"] {
            let allow_room = room(&k, v, "public").await;
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    join_rule: Some("knock_restricted".into()),
                    allow: vec![allow_room.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .room_id;
            // Not in the allow room: the join is refused.
            let (status, _) = sim
                .make_membership("join", &k.server_name, &room_id, sim.user("kim").as_str())
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            let (s, b) = sim.membership("join", &k.server_name, &allow_room, "kim").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let (status, made) = sim
                .make_membership("join", &k.server_name, &room_id, sim.user("kim").as_str())
                .await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {made}");
            assert_eq!(
                made["event"]["content"]["join_authorised_via_users_server"],
                k.admin_user().as_str()
            );
            let (jid, jpdu) = sim.sign_event(v, made["event"].clone());
            let (status, answer) =
                sim.send_membership("join", 2, &k.server_name, &room_id, jid.as_str(), &jpdu).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert!(
                answer["event"]["signatures"][k.server_name.as_str()].is_object(),
                "the event signed by knockd comes back"
            );
            assert_eq!(k.admin.room(&room_id).await.unwrap().summary.joined_members, 2);
        }
        k.stop().await;
    }
}
