//! Moderation end to end (issue: moderation; KNOCK-SPEC D, E, H.42–43, H.48): approvals reach the
//! knocker's server as invites, denials reach the room's servers as kicks or bans, every decision
//! is recorded, and the outbound queue survives outages and restarts.

use std::time::Duration;

use knockd_shared::{ClientError, CreateRoomRequest, DecisionQuery, KnockQuery};
use knockd_tests::{SimServer, TestBackend, TestDb, TestKnockd, backends, sim::Mode};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

async fn start(backend: TestBackend) -> TestKnockd {
    TestKnockd::start_with(TestDb::new(backend), &FAST).await
}

async fn room(k: &TestKnockd, v: &str) -> String {
    k.admin
        .create_room(&CreateRoomRequest {
            room_version: Some(v.into()),
            name: Some("Moderated".into()),
            ..CreateRoomRequest::default()
        })
        .await
        .unwrap()
        .room_id
}

/// Knocks `local` from the sim and returns the knock's queue id.
async fn knock(k: &TestKnockd, sim: &SimServer, room_id: &str, local: &str) -> i64 {
    let (status, body) = sim.knock(&k.server_name, room_id, local, Some("let me in")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = sim.user(local);
    k.admin
        .list_knocks(&KnockQuery {
            user_id: Some(user.to_string()),
            room_id: Some(room_id.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .knocks[0]
        .id
}

async fn wait_status(k: &TestKnockd, id: i64, status: &str) -> knockd_shared::KnockDetail {
    for _ in 0..400 {
        let d = k.admin.knock(id).await.unwrap();
        if d.knock.status == status {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("knock {id} never became {status}: {:?}", k.admin.knock(id).await.unwrap().knock);
}

fn membership(detail: &knockd_shared::RoomDetail, user: &str) -> Option<String> {
    detail
        .state
        .iter()
        .find(|s| s.event_type == "m.room.member" && s.state_key == user)
        .and_then(|s| s.content["membership"].as_str().map(str::to_owned))
}

fn api_status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, body } => (status, body.error),
        other => panic!("expected an API error: {other}"),
    }
}

// CPL-1.10, KNOCK-SPEC D.27–D.29, H.43: approve → the knocker's server receives a valid invite with the
// full create event, counter-signs it, and knockd then shows the invite in room state.
#[tokio::test]
async fn cpl_1_10_approve_delivers_a_countersigned_invite() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        for v in ["7", "10", "11", "12"] {
            let room_id = room(&k, v).await;
            let id = knock(&k, &sim, &room_id, "alice").await;
            let decision = k.admin.approve(id, Some("welcome")).await.unwrap();
            assert_eq!(decision.action, "approve");
            assert_eq!(decision.actor, k.admin_user());
            let detail = wait_status(&k, id, "approved").await;
            let d = &detail.decisions[0];
            assert_eq!(d.delivery, "delivered", "{backend:?} v{v}: {d:?}");
            let invite_id = d.event_id.clone().expect("invite event id");
            let inbox = sim.inbox();
            assert_eq!(inbox.bad_signatures, 0, "our requests verify at the peer");
            let sent = inbox
                .invites
                .iter()
                .find(|i| i["event"]["room_id"] == room_id.as_str())
                .expect("invite received");
            assert_eq!(sent["room_version"], v);
            assert_eq!(sent["event"]["content"]["membership"], "invite");
            assert_eq!(sent["event"]["content"]["reason"], "welcome");
            let state = sent["invite_room_state"].as_array().unwrap();
            let create =
                state.iter().find(|e| e["type"] == "m.room.create").expect("full create PDU");
            assert!(create["origin_server_ts"].is_number() && create["signatures"].is_object());
            assert!(
                state
                    .iter()
                    .any(|e| e["type"] == "m.room.member"
                        && e["state_key"] == k.admin_user().as_str())
            );
            let shown = k.admin.room(&room_id).await.unwrap();
            assert_eq!(membership(&shown, sim.user("alice").as_str()).as_deref(), Some("invite"));
            let stored =
                shown.state.iter().find(|s| s.event_id == invite_id).expect("invite in state");
            assert_eq!(stored.sender, k.admin_user());
            assert!(
                k.admin
                    .list_knocks(&KnockQuery {
                        room_id: Some(room_id.clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .knocks
                    .is_empty()
            );
        }
        k.stop().await;
    }
}

// H.42/H.43: with the knocker's server down for a while, the invite is delivered once it is back,
// exactly once, also across a restart.
#[tokio::test]
async fn invite_survives_outage_and_restart_exactly_once() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let id = knock(&k, &sim, &room_id, "bob").await;
        sim.set_mode(Mode::Down);
        k.admin.approve(id, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let detail = k.admin.knock(id).await.unwrap();
        assert_eq!(detail.knock.status, "delivery_pending");
        assert_eq!(detail.decisions[0].delivery, "pending");
        let k = k.restart().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(sim.inbox().invites.is_empty());
        sim.set_mode(Mode::Accept);
        wait_status(&k, id, "approved").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.inbox().invites.len(), 1, "{backend:?}: exactly once");
        k.stop().await;
    }
}

// H.43: a final refusal (403 M_INVITE_BLOCKED) ends as "approve failed" with the remote errcode.
#[tokio::test]
async fn refused_invite_is_approve_failed_with_the_remote_errcode() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let id = knock(&k, &sim, &room_id, "carol").await;
        sim.set_mode(Mode::RefuseInvites(403, "M_INVITE_BLOCKED".into()));
        k.admin.approve(id, None).await.unwrap();
        let detail = wait_status(&k, id, "approve_failed").await;
        let d = &detail.decisions[0];
        assert_eq!(d.delivery, "failed");
        assert!(
            d.delivery_error.as_deref().unwrap_or_default().contains("M_INVITE_BLOCKED"),
            "{d:?}"
        );
        let shown = k.admin.room(&room_id).await.unwrap();
        assert_eq!(
            membership(&shown, sim.user("carol").as_str()).as_deref(),
            Some("knock"),
            "no invite stored"
        );
        k.stop().await;
    }
}

// H.43: if the knocker rescinds before delivery, the pending approval is dropped and the admin told.
#[tokio::test]
async fn approval_dropped_when_the_knocker_left_meanwhile() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "11").await;
        let id = knock(&k, &sim, &room_id, "dora").await;
        sim.set_mode(Mode::Down);
        k.admin.approve(id, None).await.unwrap();
        let user = sim.user("dora");
        k.seed_state(
            &room_id,
            user.as_str(),
            "m.room.member",
            user.as_str(),
            json!({ "membership": "leave" }),
        )
        .await
        .unwrap();
        sim.set_mode(Mode::Accept);
        let detail = wait_status(&k, id, "rescinded").await;
        for _ in 0..200 {
            if k.admin.knock(id).await.unwrap().decisions[0].delivery == "dropped" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let d = &k.admin.knock(id).await.unwrap().decisions[0];
        assert_eq!(d.delivery, "dropped", "{detail:?}");
        assert!(d.delivery_error.as_deref().unwrap_or_default().contains("rescinded"));
        // An attempt already on the wire may have reached the server, but knockd never stores it.
        let shown = k.admin.room(&room_id).await.unwrap();
        assert_eq!(membership(&shown, user.as_str()).as_deref(), Some("leave"));
        k.stop().await;
    }
}

// KNOCK-SPEC E.32–E.33, H.48; CPL-1.8, CPL-1.13: deny kicks (the room's joined servers receive it,
// the knocker's server best-effort), the user may knock again; a ban stops further knocks.
#[tokio::test]
async fn deny_kicks_and_ban_blocks() {
    for backend in backends() {
        let k = start(backend).await;
        let knocker = SimServer::start().await;
        let member = SimServer::start().await;
        for v in ["7", "12"] {
            let room_id = room(&k, v).await;
            // A remote server with a joined member observes the room.
            let david = member.user("david");
            k.seed_state(
                &room_id,
                &k.admin_user(),
                "m.room.member",
                david.as_str(),
                json!({ "membership": "invite" }),
            )
            .await
            .unwrap();
            k.seed_state(
                &room_id,
                david.as_str(),
                "m.room.member",
                david.as_str(),
                json!({ "membership": "join" }),
            )
            .await
            .unwrap();

            let id = knock(&k, &knocker, &room_id, "eve").await;
            let decision = k.admin.deny(id, Some("I don't think so"), false).await.unwrap();
            assert_eq!(decision.action, "deny");
            let kick_id = decision.event_id.clone().expect("kick event");
            let eve = knocker.user("eve");
            let shown = k.admin.room(&room_id).await.unwrap();
            assert_eq!(membership(&shown, eve.as_str()).as_deref(), Some("leave"));
            let kick = shown.state.iter().find(|s| s.event_id == kick_id).unwrap();
            assert_eq!(kick.sender, k.admin_user());
            assert_eq!(kick.content["reason"], "I don't think so");
            let has_kick = |inbox: &knockd_tests::sim::Inbox| {
                inbox.pdus().iter().any(|p| {
                    p["content"]["membership"] == "leave"
                        && p["state_key"] == eve.as_str()
                        && p["room_id"] == room_id.as_str()
                })
            };
            member.wait_for(10, "the kick at the joined server", has_kick).await;
            knocker.wait_for(10, "the kick at the knocker's server", has_kick).await;
            assert_eq!(knocker.inbox().bad_signatures + member.inbox().bad_signatures, 0);
            assert_eq!(k.admin.knock(id).await.unwrap().knock.status, "denied");

            // CPL-1.8: knock again after a denial.
            let again = knock(&k, &knocker, &room_id, "eve").await;
            assert_ne!(again, id);
            let decision =
                k.admin.deny(again, Some("Turns out not trustworthy"), true).await.unwrap();
            assert_eq!(decision.action, "ban");
            assert_eq!(k.admin.knock(again).await.unwrap().knock.status, "banned");
            let (status, _) = knocker.knock(&k.server_name, &room_id, "eve", Some("please")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "CPL-1.13: banned users cannot knock");
        }
        k.stop().await;
    }
}

// Concurrency and bad input: one of two racing decisions wins, the other gets 409 naming who
// decided; unknown knock 404; already decided 409; bad token 401; no power 403 with the reason.
#[tokio::test]
async fn races_and_refusals() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let id = knock(&k, &sim, &room_id, "fred").await;
        let (a, b) = tokio::join!(k.admin.approve(id, None), k.admin.deny(id, None, false));
        let err = match (a, b) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
            other => panic!("{backend:?}: exactly one decision must win: {other:?}"),
        };
        let (status, message) = api_status(err);
        assert_eq!(status, 409);
        assert!(message.contains(&k.admin_user()), "409 names who decided: {message}");
        let (status, _) = api_status(k.admin.approve(id, None).await.unwrap_err());
        assert_eq!(status, 409);
        let (status, _) = api_status(k.admin.approve(999_999, None).await.unwrap_err());
        assert_eq!(status, 404);
        let (status, _) = api_status(k.admin.knock(999_999).await.unwrap_err());
        assert_eq!(status, 404);
        let stranger = knockd_shared::AdminClient::new(k.admin_url.clone(), "wrong");
        let (status, _) = api_status(stranger.approve(id, None).await.unwrap_err());
        assert_eq!(status, 401);

        // A joined local member without power.
        let modr = format!("@mod:{}", k.server_name);
        k.seed_state(
            &room_id,
            &k.admin_user(),
            "m.room.member",
            &modr,
            json!({ "membership": "invite" }),
        )
        .await
        .unwrap();
        k.seed_state(&room_id, &modr, "m.room.member", &modr, json!({ "membership": "join" }))
            .await
            .unwrap();
        let token = "kd_test_moderator_token";
        let user = modr.clone();
        k.app
            .db
            .write(move |conn| -> Result<(), knockd::store::StoreError> {
                knockd::store::users::ensure_user(conn, &user, 0)?;
                knockd::store::users::add_token(conn, token, &user, None, 0)?;
                Ok(())
            })
            .await
            .unwrap();
        let weak = knockd_shared::AdminClient::new(k.admin_url.clone(), token);
        let next = knock(&k, &sim, &room_id, "gina").await;
        for (what, result) in [
            ("approve", weak.approve(next, None).await.map(|_| ())),
            ("deny", weak.deny(next, None, false).await.map(|_| ())),
            ("ban", weak.deny(next, None, true).await.map(|_| ())),
        ] {
            let (status, message) = api_status(result.unwrap_err());
            assert_eq!(status, 403, "{what}: {message}");
            assert!(message.contains("cannot"), "{what}: the reason is given: {message}");
        }
        assert_eq!(
            k.admin.knock(next).await.unwrap().knock.status,
            "pending",
            "nothing half-written"
        );
        k.stop().await;
    }
}

// Bulk decisions, the audit log, and a knock's history.
#[tokio::test]
async fn bulk_decisions_audit_log_and_history() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "9").await;
        let ids = [
            knock(&k, &sim, &room_id, "h1").await,
            knock(&k, &sim, &room_id, "h2").await,
            knock(&k, &sim, &room_id, "h3").await,
        ];
        let bulk = k.admin.deny_many(&ids[..2], Some("spam wave"), false).await.unwrap();
        assert!(bulk.results.iter().all(|r| r.decision.is_some()), "{bulk:?}");
        let bulk = k.admin.approve_many(&[ids[1], ids[2]], None).await.unwrap();
        assert!(bulk.results[0].error.is_some(), "already decided");
        assert!(bulk.results[1].decision.is_some());
        let log = k
            .admin
            .decisions(&DecisionQuery { room_id: Some(room_id.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(log.decisions.len(), 3);
        assert_eq!(log.decisions[0].action, "approve", "newest first");
        assert!(log.decisions.iter().all(|d| d.actor == k.admin_user()));
        let denials = k
            .admin
            .decisions(&DecisionQuery { action: Some("deny".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(denials.decisions.len(), 2);
        assert_eq!(denials.decisions[0].reason.as_deref(), Some("spam wave"));

        let again = knock(&k, &sim, &room_id, "h1").await;
        let detail = k.admin.knock(again).await.unwrap();
        assert_eq!(detail.user_history.len(), 1, "the earlier, denied knock");
        assert_eq!(detail.user_decisions[0].action, "deny");
        assert!(detail.server_history.len() >= 3);
        assert_eq!(detail.knock_room_state[0]["type"], "m.room.create");
        let expired_filter = k
            .admin
            .list_knocks(&KnockQuery { status: Some("denied".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(expired_filter.knocks.len(), 2);
        let bad = k
            .admin
            .list_knocks(&KnockQuery { status: Some("nonsense".into()), ..Default::default() })
            .await;
        assert_eq!(api_status(bad.unwrap_err()).0, 400);
        k.stop().await;
    }
}

// Queue hygiene: pending knocks older than the configured age expire locally (no event is sent).
#[tokio::test]
async fn stale_knocks_expire_locally() {
    for backend in backends() {
        let env = [("KNOCKD_KNOCK_EXPIRE_AFTER_MS", "1")];
        let k = TestKnockd::start_with(TestDb::new(backend), &env).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "10").await;
        let id = knock(&k, &sim, &room_id, "old").await;
        let footprint = k.room_footprint(&room_id).await;
        let k = k.restart().await;
        wait_status(&k, id, "expired").await;
        assert_eq!(k.room_footprint(&room_id).await, footprint, "no event for an expiry");
        let _: Value = json!({});
        k.stop().await;
    }
}
