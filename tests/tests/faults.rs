//! Fault suite (issue "Federation edge under abuse and faults", item 8): what knockd answered stays
//! true when many callers race, and nothing is decided or delivered twice.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use knockd_shared::{ClientError, CreateRoomRequest, DecisionQuery, KnockQuery};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
use reqwest::StatusCode;

const FAST: [(&str, &str); 3] = [
    ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
    ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "300"),
    ("KNOCKD_OUTBOX_POLL_MS", "50"),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Approve,
    Deny,
    Ban,
}

// 1,000 concurrent approve/deny/ban calls on 50 knocks (20 calls each, the three actions mixed):
// each knock gets exactly one decision — one call answered 200, every other 409 — the audit log
// has one entry per knock with the winning action, the room's state agrees, and each approved
// knocker's server receives its invite exactly once.
#[tokio::test]
async fn a_thousand_concurrent_decisions_make_exactly_one_each() {
    const KNOCKS: usize = 50;
    const CALLS: usize = 1_000;
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &FAST).await;
        let sim = SimServer::start().await;
        let room_id = k
            .admin
            .create_room(&CreateRoomRequest {
                room_version: Some("12".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .room_id;
        for i in 0..KNOCKS {
            let (s, b) = sim.knock(&k.server_name, &room_id, &format!("u{i}"), None).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let query =
            KnockQuery { room_id: Some(room_id.clone()), limit: Some(1000), ..Default::default() };
        let knocks = k.admin.list_knocks(&query).await.unwrap().knocks;
        assert_eq!(knocks.len(), KNOCKS);
        let user_of: HashMap<i64, String> =
            knocks.iter().map(|n| (n.id, n.user_id.clone())).collect();

        let calls = (0..CALLS).map(|i| {
            let id = knocks[i % KNOCKS].id;
            let action = [Action::Approve, Action::Deny, Action::Ban][(i / KNOCKS + i) % 3];
            let admin = k.admin.clone();
            async move {
                let reason = Some("race");
                let answer = match action {
                    Action::Approve => admin.approve(id, reason).await,
                    Action::Deny => admin.deny(id, reason, false).await,
                    Action::Ban => admin.deny(id, reason, true).await,
                };
                (id, action, answer)
            }
        });
        let answers = join_all(calls).await;

        let mut won: HashMap<i64, Action> = HashMap::new();
        for (id, action, answer) in answers {
            match answer {
                Ok(_) => {
                    let before = won.insert(id, action);
                    assert!(before.is_none(), "{backend:?}: knock {id} decided twice");
                }
                Err(ClientError::Api { status, .. }) => {
                    assert_eq!(status, 409, "{backend:?}: knock {id}: {action:?}");
                }
                Err(e) => panic!("{backend:?}: knock {id}: {e}"),
            }
        }
        assert_eq!(won.len(), KNOCKS, "{backend:?}: every knock decided once");

        let decisions = k
            .admin
            .decisions(&DecisionQuery {
                room_id: Some(room_id.clone()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .decisions;
        assert_eq!(decisions.len(), KNOCKS, "{backend:?}: one audit entry per knock");
        for d in &decisions {
            let expected = match won[&d.knock_id] {
                Action::Approve => "approve",
                Action::Deny => "deny",
                Action::Ban => "ban",
            };
            assert_eq!(d.action, expected, "{backend:?}: knock {}", d.knock_id);
        }

        let approved: Vec<&String> = won
            .iter()
            .filter(|(_, a)| **a == Action::Approve)
            .map(|(id, _)| &user_of[id])
            .collect();
        assert!(!approved.is_empty());
        let invited_users = |inbox: &knockd_tests::sim::Inbox| -> Vec<String> {
            inbox
                .invites
                .iter()
                .filter_map(|i| i["event"]["state_key"].as_str().map(str::to_owned))
                .collect()
        };
        sim.wait_for(30, "every approval's invite", |inbox| {
            invited_users(inbox).len() >= approved.len()
        })
        .await;
        // Anything sent twice would have come by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut invited = invited_users(&sim.inbox());
        invited.sort();
        let mut wanted: Vec<String> = approved.iter().map(|u| u.to_string()).collect();
        wanted.sort();
        assert_eq!(invited, wanted, "{backend:?}: each approved knocker invited exactly once");
        // The state: an approved knocker is invited once their server countersigned the invite.
        let mut tries = 0;
        loop {
            let detail = k.admin.room(&room_id).await.unwrap();
            let wrong: Vec<String> = won
                .iter()
                .filter_map(|(id, action)| {
                    let user = &user_of[id];
                    let membership = detail
                        .state
                        .iter()
                        .find(|s| s.event_type == "m.room.member" && &s.state_key == user)
                        .and_then(|s| s.content["membership"].as_str());
                    let expected = match action {
                        Action::Approve => "invite",
                        Action::Deny => "leave",
                        Action::Ban => "ban",
                    };
                    (membership != Some(expected))
                        .then(|| format!("{user}: {membership:?}, not {expected}"))
                })
                .collect();
            if wrong.is_empty() {
                break;
            }
            tries += 1;
            assert!(tries < 200, "{backend:?}: {wrong:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        k.stop().await;
    }
}
