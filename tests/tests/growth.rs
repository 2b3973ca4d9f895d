//! Unbounded growth (issue "Federation edge under abuse", item 4): over-long txnIds are refused
//! and not stored, housekeeping forgets inbound transaction answers after a day and deletes old
//! parked outbox items without disturbing a destination's lease or transaction.

use std::time::{Duration, Instant};

use knockd::{
    matrix::now_ms,
    store::{StoreError, outbox, txns},
};
use knockd_tests::{SimServer, TestDb, TestKnockd, backends};
use reqwest::StatusCode;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

async fn remembered(k: &TestKnockd, origin: &str) -> i64 {
    let origin = origin.to_owned();
    k.app.db.read(move |conn| txns::count_for(conn, &origin)).await.expect("count")
}

#[tokio::test]
async fn an_overlong_txn_id_is_refused_and_not_stored() {
    for backend in backends() {
        let k = TestKnockd::start_with(TestDb::new(backend), &[]).await;
        let sim = SimServer::start().await;
        let origin = sim.server_name.to_string();
        let long = "x".repeat(256);
        let (status, body) = sim.send_txn(&k.server_name, &long, &[], &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}: {body}");
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("at most 255 bytes"), "{error}");
        assert_eq!(remembered(&k, &origin).await, 0, "{backend:?}: nothing stored");
        // Multi-byte characters count in bytes: 128 × 2 bytes is over the limit too.
        let (status, _) = sim.send_txn(&k.server_name, &"é".repeat(128), &[], &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // 255 bytes is fine, and remembered.
        let (status, body) = sim.send_txn(&k.server_name, &"y".repeat(255), &[], &[]).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(remembered(&k, &origin).await, 1);
        k.stop().await;
    }
}

/// Polls `check` until it holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn housekeeping_forgets_old_answers_and_purges_old_parked_items() {
    for backend in backends() {
        let env = [("KNOCKD_OUTBOX_PURGE_PARKED_AFTER_MS", &*(2 * DAY_MS).to_string())];
        let k = TestKnockd::start_with(TestDb::new(backend), &env).await;
        let now = now_ms();
        let dest = "parked.example";
        // Answers of a day and a bit ago and of an hour ago; items parked eight days and an hour
        // ago; one live item in a transaction under a lease that another sender holds.
        let (lease, ids) = k
            .app
            .db
            .write(move |conn| -> Result<_, StoreError> {
                txns::remember(conn, "old.example", "t-old", "{}", now - DAY_MS - HOUR_MS)?;
                txns::remember(conn, "old.example", "t-new", "{}", now - HOUR_MS)?;
                let mut ids = Vec::new();
                for _ in 0..3 {
                    ids.push(outbox::enqueue(conn, dest, outbox::KIND_PDU, "{}", "!r:x", now)?);
                }
                let lease =
                    outbox::lease(conn, dest, "another-sender", now, 600_000)?.expect("lease");
                for (txn, id, at) in
                    [("t1", ids[0], now - 8 * DAY_MS), ("t2", ids[1], now - HOUR_MS)]
                {
                    outbox::start_txn(conn, &lease, txn, "{}", &[id])?;
                    assert_eq!(outbox::refused(conn, &lease, txn, "400", at, 1)?, 1);
                }
                outbox::start_txn(conn, &lease, "t3", "{}", &[ids[2]])?;
                Ok((lease, ids))
            })
            .await
            .expect("seed");
        assert_eq!(remembered(&k, "old.example").await, 2);
        // Housekeeping runs at start (and every minute).
        let k = k.restart().await;
        eventually(20, "the day-old answer forgotten", async || {
            remembered(&k, "old.example").await == 1
        })
        .await;
        let parked = async || {
            k.app
                .db
                .read(|conn| outbox::parked(conn, None, 100))
                .await
                .expect("parked")
                .into_iter()
                .map(|i| i.item_id)
                .collect::<Vec<_>>()
        };
        eventually(20, "the old parked item purged", async || parked().await.len() == 1).await;
        assert_eq!(parked().await, vec![ids[1]], "{backend:?}: the recently parked one stays");
        let (answer, row, held, pending) = k
            .app
            .db
            .write(move |conn| -> Result<_, StoreError> {
                let answer = txns::answer(conn, "old.example", "t-new")?;
                let row = outbox::destination(conn, dest)?.expect("destination");
                let held = outbox::hold(conn, &lease).is_ok();
                Ok((answer, row, held, outbox::pending_count(conn, None)?))
            })
            .await
            .expect("read back");
        assert_eq!(answer.as_deref(), Some("{}"), "{backend:?}: the recent answer stays");
        assert!(held, "{backend:?}: the lease is still the other sender's");
        assert_eq!(row.txn_id.as_deref(), Some("t3"), "its transaction is untouched");
        assert_eq!(pending, 1, "the live item stays");
        k.stop().await;
    }
}
