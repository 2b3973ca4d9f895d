//! Every refusal of the knock path answers exactly as KNOCK-SPEC A–C and its decision table say,
//! and leaves nothing behind.

use knockd::matrix::client::encode_segment;
use knockd_shared::{CreateRoomRequest, KnockQuery};
use knockd_tests::{SimServer, TestKnockd, backends, sim::ALL_VERSIONS};
use reqwest::{Method, StatusCode};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

async fn room_with(k: &TestKnockd, version: &str, join_rule: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest {
            room_version: Some(version.into()),
            join_rule: Some(join_rule.into()),
            name: Some("Errors".into()),
            ..CreateRoomRequest::default()
        })
        .await
        .unwrap()
        .room_id
}

fn send_path(room_id: &str, event_id: &str) -> String {
    format!(
        "/_matrix/federation/v1/send_knock/{}/{}",
        encode_segment(room_id),
        encode_segment(event_id)
    )
}

fn make_path(room_id: &str, user: &str, query: &str) -> String {
    format!(
        "/_matrix/federation/v1/make_knock/{}/{}{query}",
        encode_segment(room_id),
        encode_segment(user)
    )
}

fn assert_err(got: &(StatusCode, Value), status: u16, errcode: &str, what: &str) {
    assert_eq!(got.0.as_u16(), status, "{what}: {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{what}: {}", got.1);
    assert!(got.1["error"].is_string(), "{what}: error message");
}

async fn nothing_queued(k: &TestKnockd) {
    let all = k
        .admin
        .list_knocks(&KnockQuery { status: Some("all".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(all.knocks.is_empty(), "no rejected request leaves a row: {:?}", all.knocks);
}

// KNOCK-SPEC A.2: X-Matrix request authentication.
#[tokio::test]
async fn request_authentication() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room_with(&k, "10", "knock").await;
        let user = sim.user("a");
        let path = make_path(&room_id, user.as_str(), "?ver=10");
        let dest = k.server_name.as_str();

        let got = sim.raw(Method::GET, dest, &path, None, None).await;
        assert_err(&got, 401, "M_UNAUTHORIZED", "missing header");
        let got = sim.raw(Method::GET, dest, &path, None, Some("X-Matrix garbage".into())).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "malformed: {}", got.1);
        assert_eq!(got.1["errcode"], "M_UNAUTHORIZED");

        let other_dest = sim.x_matrix(&Method::GET, "other.example", &path, b"");
        let got = sim.raw(Method::GET, dest, &path, None, Some(other_dest)).await;
        assert_err(&got, 401, "M_UNAUTHORIZED", "destination not us");

        // Signed over a re-encoded (decoded) target: knockd verifies the raw target, so this fails.
        let decoded = format!("/_matrix/federation/v1/make_knock/{room_id}/{user}?ver=10");
        let wrong_uri = sim.x_matrix(&Method::GET, dest, &decoded, b"");
        let got = sim.raw(Method::GET, dest, &path, None, Some(wrong_uri)).await;
        assert_err(&got, 401, "M_UNAUTHORIZED", "signature over another uri");

        let wrong_method = sim.x_matrix(&Method::PUT, dest, &path, b"");
        let got = sim.raw(Method::GET, dest, &path, None, Some(wrong_method)).await;
        assert_err(&got, 401, "M_UNAUTHORIZED", "signature over another method");

        let good = sim.x_matrix(&Method::GET, dest, &path, b"");
        let unknown_key = good.replace(&sim.keys().key_id(), "ed25519:nope");
        let got = sim.raw(Method::GET, dest, &path, None, Some(unknown_key)).await;
        assert_err(&got, 401, "M_UNAUTHORIZED", "unknown key id");

        // Parameters in any order, unquoted, different case; no destination is accepted too.
        let x: ruma::api::federation::authentication::XMatrix = good.parse().unwrap();
        let sig = x.sig.encode();
        let reordered =
            format!("X-Matrix sig=\"{sig}\", KEY=\"{}\", origin=\"{}\"", x.key, x.origin);
        let got = sim.raw(Method::GET, dest, &path, None, Some(reordered)).await;
        assert_eq!(got.0, StatusCode::OK, "reordered header: {}", got.1);
        let got = sim.raw(Method::GET, dest, &path, None, Some(good)).await;
        assert_eq!(got.0, StatusCode::OK);
        k.stop().await;
    }
}

// KNOCK-SPEC B.5–B.10, CPL-8.
#[tokio::test]
async fn make_knock_refusals() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let dest = k.server_name.as_str();
        for v in ["7", "12"] {
            let room_id = room_with(&k, v, "knock").await;
            let footprint = k.room_footprint(&room_id).await;
            let user = sim.user("b");

            let got =
                sim.request(Method::GET, dest, &make_path(&room_id, user.as_str(), ""), None).await;
            assert_err(&got, 400, "M_MISSING_PARAM", "B.5 no ver");

            let got = sim.make_knock(dest, "!unknown:elsewhere.example", user.as_str()).await;
            assert_err(&got, 404, "M_NOT_FOUND", "B.6 / CPL-8 unknown room");

            let got = sim.make_knock_with(dest, &room_id, user.as_str(), &["1", "2", "6"]).await;
            assert_err(&got, 400, "M_INCOMPATIBLE_ROOM_VERSION", "B.8");
            assert_eq!(got.1["room_version"], v);

            let foreign = format!("@b:not-{}", sim.server_name.host());
            let got = sim.make_knock(dest, &room_id, &foreign).await;
            assert_err(&got, 403, "M_FORBIDDEN", "B.10 user of another server");

            let got = sim.make_knock(dest, &room_id, "not a user id").await;
            assert_eq!(got.0, StatusCode::BAD_REQUEST);

            // B.7: the room's ACL denies the origin (ports ignored, IP literals per allow_ip_literals).
            k.seed_state(
                &room_id,
                &k.admin_user(),
                "m.room.server_acl",
                "",
                json!({ "allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": true }),
            )
            .await
            .unwrap();
            let got = sim.make_knock(dest, &room_id, user.as_str()).await;
            assert_err(&got, 403, "M_FORBIDDEN", "B.7 ACL");
            let (status, _) = sim.knock(dest, &room_id, "b", None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            // B.13: make_knock stores nothing (only the seeded ACL changed the room).
            assert_eq!(k.room_footprint(&room_id).await, (footprint.0, footprint.1 + 1));
        }
        nothing_queued(&k).await;
        k.stop().await;
    }
}

async fn template(sim: &SimServer, k: &TestKnockd, room_id: &str, local: &str) -> Value {
    let (status, made) = sim.make_knock(&k.server_name, room_id, sim.user(local).as_str()).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    made["event"].clone()
}

fn put_raw(
    sim: &SimServer,
    k: &TestKnockd,
    room_id: &str,
    event_id: &str,
    body: Vec<u8>,
) -> impl std::future::Future<Output = (StatusCode, Value)> {
    let path = send_path(room_id, event_id);
    let auth = sim.x_matrix(&Method::PUT, &k.server_name, &path, &body);
    let dest = k.server_name.clone();
    async move { sim.raw(Method::PUT, &dest, &path, Some(&body), Some(auth)).await }
}

// KNOCK-SPEC C.14–C.20 and the decision table; CPL-8.
#[tokio::test]
async fn send_knock_refusals() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let dest = k.server_name.as_str();
        for v in ["7", "10", "12"] {
            let room_id = room_with(&k, v, "knock").await;
            let footprint = k.room_footprint(&room_id).await;
            let event = template(&sim, &k, &room_id, "c").await;
            let (id, pdu) = sim.sign_template(v, &event, Some("hi"));

            let got = sim.send_knock(dest, "!unknown:elsewhere.example", id.as_str(), &pdu).await;
            assert_err(&got, 404, "M_NOT_FOUND", "C.14 / CPL-8");

            // C.15: body room_id differs from the path.
            let other = room_with(&k, v, "knock").await;
            let got = sim.send_knock(dest, &other, id.as_str(), &pdu).await;
            assert_err(&got, 400, "M_INVALID_PARAM", "C.15");

            // C.19: the path event ID is not the event's reference hash.
            let got = sim.send_knock(dest, &room_id, "$notthehash", &pdu).await;
            assert_err(&got, 400, "M_INVALID_PARAM", "C.19");

            // C.18: the sender is on another server than the X-Matrix origin.
            let other_sim = SimServer::start().await;
            let mut foreign = event.clone();
            let them = other_sim.user("c");
            foreign["sender"] = them.as_str().into();
            foreign["state_key"] = them.as_str().into();
            let (fid, fpdu) = other_sim.sign_template(v, &foreign, None);
            let got = sim.send_knock(dest, &room_id, fid.as_str(), &fpdu).await;
            assert_err(&got, 400, "M_INVALID_PARAM", "C.18");

            // C.20: not signed by the sender's server (signed with another key).
            let (_, mut forged) = other_sim.sign_template(v, &event, None);
            let sigs = forged.remove("signatures").unwrap();
            let mut renamed = CanonicalJsonObject::new();
            renamed.insert(
                sim.server_name.to_string(),
                sigs.as_object().unwrap().values().next().unwrap().clone(),
            );
            forged.insert("signatures".into(), CanonicalJsonValue::Object(renamed));
            let fid = knockd::matrix::event::event_id(
                &forged,
                &knockd::matrix::event::rules(&v.try_into().unwrap()).unwrap(),
            )
            .unwrap();
            let got = sim.send_knock(dest, &room_id, fid.as_str(), &forged).await;
            assert_err(&got, 400, "M_INVALID_PARAM", "C.20 bad signature");
            let mut unsigned = pdu.clone();
            unsigned.insert(
                "signatures".into(),
                CanonicalJsonValue::Object(CanonicalJsonObject::new()),
            );
            let got = sim.send_knock(dest, &room_id, id.as_str(), &unsigned).await;
            assert_err(&got, 400, "M_INVALID_PARAM", "C.20 unsigned");

            // C.16: shape per room version.
            let mut no_depth = event.clone();
            no_depth.as_object_mut().unwrap().remove("depth");
            let (nid, npdu) = sim.sign_event(v, no_depth);
            let got = sim.send_knock(dest, &room_id, nid.as_str(), &npdu).await;
            assert_err(&got, 400, "M_BAD_JSON", "C.16 no depth");
            let mut long_type = event.clone();
            long_type["type"] = "x".repeat(256).into();
            let (lid, lpdu) = sim.sign_event(v, long_type);
            let got = sim.send_knock(dest, &room_id, lid.as_str(), &lpdu).await;
            assert_eq!(got.0, StatusCode::BAD_REQUEST, "C.16 type over 255 bytes: {}", got.1);
            if v == "12" {
                let mut cites_create = event.clone();
                let create = format!("${}", &room_id[1..]);
                cites_create["auth_events"].as_array_mut().unwrap().push(create.into());
                let (cid, cpdu) = sim.sign_event(v, cites_create);
                let got = sim.send_knock(dest, &room_id, cid.as_str(), &cpdu).await;
                assert_err(&got, 400, "M_BAD_JSON", "C.16 v12 create in auth_events");
            }
            // C.16: over 64 KiB → 413 without reading the rest.
            let mut huge = event.clone();
            huge["content"]["reason"] = "x".repeat(70_000).into();
            let body = serde_json::to_vec(&huge).unwrap();
            let got = put_raw(&sim, &k, &room_id, "$huge", body).await;
            assert_err(&got, 413, "M_TOO_LARGE", "C.16 too large");

            // C.21: auth_events or prev_events we do not have.
            let mut unknown_prev = event.clone();
            unknown_prev["prev_events"] = json!(["$doesnotexist"]);
            let (uid, updu) = sim.sign_event(v, unknown_prev);
            let got = sim.send_knock(dest, &room_id, uid.as_str(), &updu).await;
            assert_err(&got, 403, "M_FORBIDDEN", "C.21 unknown prev");
            let mut foreign_auth = event.clone();
            let other_template = template(&sim, &k, &other, "c").await;
            foreign_auth["auth_events"] = other_template["auth_events"].clone();
            let (aid, apdu) = sim.sign_event(v, foreign_auth);
            let got = sim.send_knock(dest, &room_id, aid.as_str(), &apdu).await;
            assert_err(&got, 403, "M_FORBIDDEN", "C.21 auth events of another room");

            assert_eq!(k.room_footprint(&room_id).await, footprint, "v{v}: nothing stored");
            // The good knock still works afterwards.
            let got = sim.send_knock(dest, &room_id, id.as_str(), &pdu).await;
            assert_eq!(got.0, StatusCode::OK, "{}", got.1);
            let _ = ALL_VERSIONS;
        }
        k.stop().await;
    }
}

// CPL-5 / CPL-6 / KNOCK-SPEC C.17: structural checks answer 400 before any auth check, even in a
// public room where a generic auth check would say 403.
#[tokio::test]
async fn cpl_5_6_send_knock_rejects_non_knocks_with_400() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let dest = k.server_name.as_str();
        for (case, v) in [("CPL-5", "7"), ("CPL-6", "10")] {
            let room_id = room_with(&k, v, "public").await;
            let footprint = k.room_footprint(&room_id).await;
            let charlie = sim.user("charlie");
            let doris = sim.user("doris");
            let base = json!({
                "type": "m.room.member",
                "sender": charlie.as_str(),
                "state_key": charlie.as_str(),
                "room_id": room_id,
                "content": { "membership": "knock" },
                "origin_server_ts": 1,
                "depth": 10,
                "prev_events": [],
                "auth_events": [],
            });
            let mut cases: Vec<(&str, Value)> = Vec::new();
            let mut message = base.clone();
            message["type"] = "m.room.message".into();
            message.as_object_mut().unwrap().remove("state_key");
            message["content"] = json!({ "msgtype": "m.text", "body": "hi" });
            cases.push(("regular event", message));
            let mut no_state_key = base.clone();
            no_state_key.as_object_mut().unwrap().remove("state_key");
            cases.push(("non-state membership event", no_state_key));
            for m in ["join", "leave", "invite"] {
                let mut e = base.clone();
                e["content"]["membership"] = m.into();
                cases.push((m, e));
            }
            let mut mismatched = base.clone();
            mismatched["state_key"] = doris.as_str().into();
            cases.push(("mismatched state key", mismatched));
            for (name, e) in cases {
                let (id, pdu) = sim.sign_event(v, e);
                let got = sim.send_knock(dest, &room_id, id.as_str(), &pdu).await;
                assert_eq!(got.0, StatusCode::BAD_REQUEST, "{case} {backend:?} {name}: {}", got.1);
            }
            assert_eq!(k.room_footprint(&room_id).await, footprint);
        }
        nothing_queued(&k).await;
        k.stop().await;
    }
}

// Bad input on the wire: M_NOT_JSON, M_BAD_JSON for non-canonical JSON, long ids, no panic.
#[tokio::test]
async fn non_canonical_bodies_are_refused() {
    for backend in backends() {
        let k = TestKnockd::start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room_with(&k, "10", "knock").await;
        let event = template(&sim, &k, &room_id, "d").await;
        let text = serde_json::to_string(&event).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not json", b"{nope".to_vec(), "M_NOT_JSON"),
            (
                "float",
                text.replacen("\"depth\":", "\"depth\":1.5,\"x\":", 1).into_bytes(),
                "M_BAD_JSON",
            ),
            (
                "big int",
                text.replacen("\"depth\":", "\"big\":9007199254740993,\"depth\":", 1).into_bytes(),
                "M_BAD_JSON",
            ),
            ("duplicate key", text.replacen("{", "{\"type\":\"x\",", 1).into_bytes(), "M_BAD_JSON"),
            (
                "invalid utf-8",
                [b"{\"a\":\"".as_slice(), &[0xff, 0xfe], b"\"}"].concat(),
                "M_BAD_JSON",
            ),
            (
                "deep nesting",
                format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
                "M_BAD_JSON",
            ),
            ("array", b"[]".to_vec(), "M_BAD_JSON"),
        ];
        for (name, body, code) in cases {
            let got = put_raw(&sim, &k, &room_id, "$x", body).await;
            assert_eq!(got.0, StatusCode::BAD_REQUEST, "{backend:?} {name}: {}", got.1);
            assert_eq!(got.1["errcode"], code, "{name}");
        }
        let long = format!("${}", "a".repeat(300));
        let got = put_raw(&sim, &k, &room_id, &long, text.clone().into_bytes()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "long event id: {}", got.1);
        let got =
            sim.request(Method::GET, &k.server_name, "/_matrix/federation/v1/nope", None).await;
        assert_err(&got, 404, "M_UNRECOGNIZED", "unknown endpoint");
        nothing_queued(&k).await;
        k.stop().await;
    }
}
