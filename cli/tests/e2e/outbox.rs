//! `knockctl outbox retry|drop` (issue "Operations", item 8): a parked invite put back in the
//! queue is delivered; one dropped ends its approval as approve_failed with the operator's name;
//! only parked items of rooms in scope can be touched.

use std::time::Duration;

use knockd_tests::{SimServer, TestDb, TestKnockd, backends, sim::Mode};

use crate::common::{command, knock, knockctl, room, run_raw, status, wait_status};

#[tokio::test(flavor = "multi_thread")]
async fn parked_items_are_retried_or_dropped() {
    for backend in backends() {
        let k = TestKnockd::start_with(
            TestDb::new(backend),
            &[
                ("KNOCKD_OUTBOX_MIN_BACKOFF_MS", "50"),
                ("KNOCKD_OUTBOX_MAX_BACKOFF_MS", "100"),
                ("KNOCKD_OUTBOX_POLL_MS", "50"),
                ("KNOCKD_OUTBOX_PARK_AFTER_MS", "300"),
            ],
        )
        .await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Outbox").await;
        let first = knock(&k, &sim, &room_id, "ann", "hi").await;
        let second = knock(&k, &sim, &room_id, "bo", "hi").await;
        sim.set_mode(Mode::Down);
        knockctl(&k, &["approve", &first.to_string(), &second.to_string()]).await.expect(0);
        let mut parked = Vec::new();
        for _ in 0..200 {
            let outbox = knockctl(&k, &["outbox", "--json"]).await.expect(0).json();
            parked = outbox["parked"].as_array().cloned().unwrap_or_default();
            if parked.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(parked.len(), 2, "{backend:?}: both invites parked");
        let ids: Vec<String> = parked.iter().map(|p| p["id"].to_string()).collect();
        let text = knockctl(&k, &["outbox"]).await.expect(0);
        assert!(text.stdout.contains("parked:  2") && text.stdout.contains(&ids[0]), "{text:?}");

        // Unknown and not-parked ids are 404 (exit 3); nothing changes.
        knockctl(&k, &["outbox", "retry", "987654"]).await.expect(3);
        knockctl(&k, &["outbox", "drop", "987654"]).await.expect(3);
        knockctl(&k, &["outbox", "retry", "x"]).await.expect(2);

        // A moderator of no room sees no parked item and can touch none.
        let token = k.token_for(&format!("@mod:{}", k.server_name)).await;
        let token_file = k.data_dir.join("moderator.token");
        std::fs::write(&token_file, token).unwrap();
        let as_moderator = |args: &[&str]| command(&k.admin_url, &token_file, args);
        let seen = run_raw(as_moderator(&["outbox", "--json"]), None).await.expect(0).json();
        assert_eq!(seen["parked"].as_array().map(Vec::len), Some(0), "{seen}");
        run_raw(as_moderator(&["outbox", "retry", &ids[0]]), None).await.expect(3);
        run_raw(as_moderator(&["outbox", "drop", &ids[0]]), None).await.expect(3);

        sim.set_mode(Mode::Accept);
        let retried = knockctl(&k, &["outbox", "retry", &ids[0], "--json"]).await.expect(0);
        assert_eq!(retried.json()["status"], "requeued");
        let dropped = knockctl(&k, &["outbox", "drop", &ids[1]]).await.expect(0);
        assert!(dropped.stdout.contains(&format!("outbox item {} dropped", ids[1])), "{dropped:?}");
        knockctl(&k, &["outbox", "drop", &ids[1]]).await.expect(3);

        // Which item was which knock's invite: the one retried is delivered, the other failed.
        wait_status(&k, first, &["approved", "approve_failed"]).await;
        wait_status(&k, second, &["approved", "approve_failed"]).await;
        let (a, b) = (status(&k, first).await, status(&k, second).await);
        let mut both = [a.clone(), b.clone()];
        both.sort();
        assert_eq!(both, ["approve_failed", "approved"], "{backend:?}");
        let failed = if a == "approve_failed" { first } else { second };
        let detail = k.admin.knock(failed).await.unwrap();
        let error = detail.decisions[0].delivery_error.clone().unwrap_or_default();
        assert!(error.contains("dropped from the outbox by @admin:"), "{error}");
        assert_eq!(detail.decisions[0].delivery, "failed");
        let outbox = knockctl(&k, &["outbox", "--json"]).await.expect(0).json();
        assert_eq!(outbox["parked"].as_array().map(Vec::len), Some(0), "{outbox}");
        assert_eq!(sim.inbox().invites.len(), 1, "{backend:?}: only the retried invite");
        k.stop().await;
    }
}
