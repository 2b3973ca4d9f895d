//! The federation knock path against a simulated remote homeserver, on every backend and room
//! version. Test names carry the KNOCK-SPEC line or Complement case they check.

use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestKnockd, backends};
use reqwest::StatusCode;
use serde_json::Value;

async fn room(k: &TestKnockd, version: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest {
            room_version: Some(version.into()),
            name: Some(format!("Knock v{version}")),
            topic: Some("Ask nicely".into()),
            ..CreateRoomRequest::default()
        })
        .await
        .unwrap()
        .room_id
}

fn types_of(state: &Value) -> Vec<String> {
    state.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

// KNOCK-SPEC B.13, C.23, C.25; CPL-1.4
#[tokio::test]
async fn knock_is_accepted_queued_and_answered_with_room_state() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "8", "9", "10", "11", "12"] {
            let room_id = room(&k, v).await;
            let user = sim.user("alice");
            let (status, made) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {made}");
            assert_eq!(made["room_version"], v);
            let event = &made["event"];
            assert_eq!(event["type"], "m.room.member");
            assert_eq!(event["state_key"], user.as_str());
            assert_eq!(event["sender"], user.as_str());
            assert_eq!(event["content"]["membership"], "knock");
            assert_eq!(event["room_id"], room_id.as_str());
            for absent in ["event_id", "signatures", "hashes", "unsigned"] {
                assert!(event.get(absent).is_none(), "template has {absent}");
            }
            let auth_events = event["auth_events"].as_array().unwrap();
            assert_eq!(
                auth_events.len(),
                if v == "12" { 2 } else { 3 },
                "v{v}: PL, join_rules (+create)"
            );
            let (id, pdu) = sim.sign_template(v, event, Some("Let me in... LET ME IN!!!"));
            let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {body}");
            let state = &body["knock_room_state"];
            let types = types_of(state);
            assert_eq!(types[0], "m.room.create", "create first");
            for t in ["m.room.join_rules", "m.room.name", "m.room.topic"] {
                assert!(types.contains(&t.to_owned()), "v{v}: {t} in {types:?}");
            }
            // Full PDUs (spec 1.16): the create event carries its signatures and timestamp.
            assert!(state[0]["signatures"].is_object() && state[0]["origin_server_ts"].is_number());

            let queue = k
                .admin
                .list_knocks(&KnockQuery {
                    room_id: Some(room_id.clone()),
                    ..KnockQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(queue.knocks.len(), 1, "v{v}");
            let knock = &queue.knocks[0];
            assert_eq!(knock.user_id, user.as_str());
            assert_eq!(knock.reason.as_deref(), Some("Let me in... LET ME IN!!!"));
            assert_eq!(knock.room_name.as_deref(), Some(format!("Knock v{v}").as_str()));
            assert_eq!(knock.origin_server, sim.server_name.as_str());
            assert_eq!(knock.status, "pending");
            assert_eq!(knock.event_id, id.as_str());
            let detail = k.admin.room(&room_id).await.unwrap();
            assert_eq!(detail.summary.knocking_members, 1);
        }
        k.stop().await;
    }
}

async fn pending(k: &TestKnockd, room_id: &str) -> Vec<knockd_shared::KnockSummary> {
    k.admin
        .list_knocks(&KnockQuery { room_id: Some(room_id.into()), ..KnockQuery::default() })
        .await
        .unwrap()
        .knocks
}

async fn all_knocks(k: &TestKnockd, room_id: &str) -> Vec<knockd_shared::KnockSummary> {
    k.admin
        .list_knocks(&KnockQuery {
            room_id: Some(room_id.into()),
            status: Some("all".into()),
            ..KnockQuery::default()
        })
        .await
        .unwrap()
        .knocks
}

// KNOCK-SPEC C.23; CPL-1.5: a re-knock replaces the pending row and keeps the history.
#[tokio::test]
async fn cpl_1_5_reknock_replaces_pending_row_and_keeps_history() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "10", "12"] {
            let room_id = room(&k, v).await;
            let (s1, _) = sim.knock(&k.server_name, &room_id, "bob", Some("first")).await;
            let (s2, _) = sim.knock(&k.server_name, &room_id, "bob", Some("second")).await;
            assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{backend:?} v{v}");
            let p = pending(&k, &room_id).await;
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].reason.as_deref(), Some("second"));
            let all = all_knocks(&k, &room_id).await;
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].status, "replaced");
            assert_eq!(all[0].reason.as_deref(), Some("first"));
            // CPL-1.9: no reason at all is fine.
            let (s3, _) = sim.knock(&k.server_name, &room_id, "carol", None).await;
            assert_eq!(s3, StatusCode::OK);
            let carol = pending(&k, &room_id)
                .await
                .into_iter()
                .find(|x| x.user_id.starts_with("@carol"))
                .unwrap();
            assert_eq!(carol.reason, None);
        }
        k.stop().await;
    }
}

// KNOCK-SPEC C.26: the same knock twice gets the same answer and one row.
#[tokio::test]
async fn same_knock_twice_is_idempotent() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let user = sim.user("dan");
        let (_, made) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
        let (id, pdu) = sim.sign_template("10", &made["event"], Some("hi"));
        let (s1, b1) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
        let footprint = k.room_footprint(&room_id).await;
        let (s2, b2) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
        assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{backend:?}: {b2}");
        assert_eq!(b1, b2);
        assert_eq!(k.room_footprint(&room_id).await, footprint);
        assert_eq!(all_knocks(&k, &room_id).await.len(), 1);
        k.stop().await;
    }
}

// KNOCK-SPEC H.39, C.23: many knocks from one stale template make a fork; past 20 forward
// extremities a dummy event (org.matrix.dummy_event) from a local member joins 20 of them;
// knockd's next template cites at most 20 forward extremities, and a knock built on it is
// accepted.
#[tokio::test]
async fn knocks_from_one_stale_template_fork_and_heal() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["9", "12"] {
            let room_id = room(&k, v).await;
            let (template, _) = sim.stale_knocks(&k.server_name, &room_id, "u", 24).await;
            // 21 knocks made 21 extremities, a dummy event joined 20 of them, 3 more came.
            let (extremities, _) = k.room_footprint(&room_id).await;
            assert_eq!(extremities, 1 + 1 + 3, "{backend:?} v{v}");
            let r = room_id.clone();
            let dummies = k
                .app
                .db
                .read(move |conn| knockd::store::events::room_events(conn, &r, 0, 1000))
                .await
                .unwrap()
                .into_iter()
                .map(|(_, _, pdu)| serde_json::from_str::<serde_json::Value>(&pdu).unwrap())
                .filter(|pdu| pdu["type"] == "org.matrix.dummy_event")
                .collect::<Vec<_>>();
            assert_eq!(dummies.len(), 1, "{backend:?} v{v}");
            assert_eq!(dummies[0]["prev_events"].as_array().unwrap().len(), 20);
            assert_eq!(dummies[0]["sender"], k.admin_user());
            let late = sim.user("late");
            let (status, made) = sim.make_knock(&k.server_name, &room_id, late.as_str()).await;
            assert_eq!(status, StatusCode::OK);
            let prev = made["event"]["prev_events"].as_array().unwrap();
            assert_eq!(prev.len(), 5, "every extremity, at most 20");
            let stale_depth = template["depth"].as_i64().unwrap();
            assert_eq!(made["event"]["depth"], stale_depth + 2, "depth = max(prev depth) + 1");
            let (id, pdu) = sim.sign_template(v, &made["event"], Some("late"));
            let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {body}");
            assert_eq!(k.room_footprint(&room_id).await.0, 1);
            assert_eq!(pending(&k, &room_id).await.len(), 25);
            let detail = k.admin.room(&room_id).await.unwrap();
            assert_eq!(detail.summary.knocking_members, 25);
        }
        k.stop().await;
    }
}

// Concurrent knocks from one stale template land in few batches, each adding many forward
// extremities at once: a batch sends as many dummy events as it takes (up to 8) to leave at
// most 20.
#[tokio::test]
async fn a_burst_of_stale_knocks_heals_down_to_the_threshold() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let first = sim.user("s0");
        let (status, made) = sim.make_knock(&k.server_name, &room_id, first.as_str()).await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let signed: Vec<_> = (0..80)
            .map(|i| {
                let user = sim.user(&format!("s{i}"));
                let mut event = made["event"].clone();
                event["sender"] = user.as_str().into();
                event["state_key"] = user.as_str().into();
                sim.sign_template("10", &event, None)
            })
            .collect();
        let answers = futures::future::join_all(
            signed
                .iter()
                .map(|(id, pdu)| sim.send_knock(&k.server_name, &room_id, id.as_str(), pdu)),
        )
        .await;
        assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK), "{backend:?}: {answers:?}");
        let (extremities, _) = k.room_footprint(&room_id).await;
        assert!(extremities <= 20, "{backend:?}: {extremities} forward extremities");
        assert_eq!(pending(&k, &room_id).await.len(), 80);
        k.stop().await;
    }
}

// CPL-1.1 / KNOCK-SPEC B.11: no knocking on a room whose join rule is not knock.
#[tokio::test]
async fn cpl_1_1_knock_on_invite_room_is_forbidden() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "10"] {
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    join_rule: Some("invite".into()),
                    ..CreateRoomRequest::default()
                })
                .await
                .unwrap()
                .room_id;
            let (status, body) =
                sim.make_knock(&k.server_name, &room_id, sim.user("eve").as_str()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?} v{v}: {body}");
            assert_eq!(body["errcode"], "M_FORBIDDEN");
        }
        k.stop().await;
    }
}

// CPL-2 (v10 knock_restricted) knocks are accepted too.
#[tokio::test]
async fn cpl_2_knock_restricted_rooms_take_knocks() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["10", "11", "12"] {
            let room_id = k
                .admin
                .create_room(&CreateRoomRequest {
                    room_version: Some(v.into()),
                    join_rule: Some("knock_restricted".into()),
                    ..CreateRoomRequest::default()
                })
                .await
                .unwrap()
                .room_id;
            let (status, body) = sim.knock(&k.server_name, &room_id, "fay", Some("please")).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} v{v}: {body}");
        }
        k.stop().await;
    }
}

// CPL-1.11, CPL-1.12, CPL-1.13 / KNOCK-SPEC B.11: invited, joined and banned users cannot knock.
#[tokio::test]
async fn cpl_1_11_to_13_invited_joined_banned_cannot_knock() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "10", "12"] {
            let room_id = room(&k, v).await;
            let admin = k.admin_user();
            let invited = sim.user("invited");
            let joined = sim.user("joined");
            let banned = sim.user("banned");
            let invite = serde_json::json!({ "membership": "invite" });
            k.seed_state(&room_id, &admin, "m.room.member", invited.as_str(), invite.clone())
                .await
                .unwrap();
            k.seed_state(&room_id, &admin, "m.room.member", joined.as_str(), invite).await.unwrap();
            k.seed_state(
                &room_id,
                joined.as_str(),
                "m.room.member",
                joined.as_str(),
                serde_json::json!({ "membership": "join" }),
            )
            .await
            .unwrap();
            k.seed_state(
                &room_id,
                &admin,
                "m.room.member",
                banned.as_str(),
                serde_json::json!({ "membership": "ban" }),
            )
            .await
            .unwrap();
            for who in [&invited, &joined, &banned] {
                let (status, body) = sim.make_knock(&k.server_name, &room_id, who.as_str()).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?} v{v} {who}: {body}");
            }
            // A template obtained before the ban is refused at send_knock too.
            let late = sim.user("late");
            let (_, made) = sim.make_knock(&k.server_name, &room_id, late.as_str()).await;
            k.seed_state(
                &room_id,
                &admin,
                "m.room.member",
                late.as_str(),
                serde_json::json!({ "membership": "ban" }),
            )
            .await
            .unwrap();
            let (id, pdu) = sim.sign_template(v, &made["event"], None);
            let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?} v{v}: {body}");
            assert!(pending(&k, &room_id).await.is_empty());
        }
        k.stop().await;
    }
}

// KNOCK-SPEC C.21 step 6 (our decision): passes its auth events but fails current state → 403,
// nothing stored.
#[tokio::test]
async fn join_rule_flipped_after_template_is_forbidden_and_stores_nothing() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "11", "12"] {
            let room_id = room(&k, v).await;
            let user = sim.user("gil");
            let (_, made) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
            k.seed_state(
                &room_id,
                &k.admin_user(),
                "m.room.join_rules",
                "",
                serde_json::json!({ "join_rule": "invite" }),
            )
            .await
            .unwrap();
            let footprint = k.room_footprint(&room_id).await;
            let (id, pdu) = sim.sign_template(v, &made["event"], Some("too late"));
            let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{backend:?} v{v}: {body}");
            assert_eq!(body["errcode"], "M_FORBIDDEN");
            assert_eq!(k.room_footprint(&room_id).await, footprint);
            assert!(all_knocks(&k, &room_id).await.is_empty());
        }
        k.stop().await;
    }
}

// KNOCK-SPEC C.20: a content hash mismatch with a valid signature is accepted redacted and flagged.
#[tokio::test]
async fn content_hash_mismatch_is_accepted_redacted_and_flagged() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let user = sim.user("hal");
        let (_, made) = sim.make_knock(&k.server_name, &room_id, user.as_str()).await;
        let (id, mut pdu) = sim.sign_template("10", &made["event"], Some("original reason"));
        let content = pdu.get_mut("content").and_then(|c| c.as_object_mut()).unwrap();
        content.insert("reason".into(), ruma::CanonicalJsonValue::String("tampered".into()));
        let (status, body) = sim.send_knock(&k.server_name, &room_id, id.as_str(), &pdu).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let p = pending(&k, &room_id).await;
        assert_eq!(p.len(), 1);
        assert!(p[0].content_redacted);
        assert_eq!(p[0].reason, None, "the reason does not survive redaction");
        k.stop().await;
    }
}
