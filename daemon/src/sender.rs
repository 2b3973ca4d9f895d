//! The outbound worker: leases destinations with work, delivers invites, and sends PDUs in
//! transactions (≤ 50 PDUs), one transaction in flight per destination, retried with the same
//! txnId and body, backing off on failure, parking what keeps failing (KNOCK-SPEC H.42).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{
    matrix::{client::encode_segment, now_ms},
    service::{AppState, delivery},
    store::{StoreError, outbox},
};

/// PDUs per transaction (spec limit).
const MAX_PDUS: i64 = 50;

/// Runs until dropped. Every task it starts is aborted with it.
pub async fn run(app: AppState, owner: String) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Leases of an earlier run of this instance (crashed or killed) are ours to take back.
    let me = owner.clone();
    if let Err(e) = app.db.write(move |conn| outbox::release_all(conn, &me)).await {
        tracing::warn!(error = %e, "outbox: cannot release stale leases");
    }
    loop {
        while tasks.try_join_next().is_some() {}
        let now = now_ms();
        let lease_ms = app.config.outbox.lease_ms;
        let due = app.db.read(move |conn| outbox::due(conn, now, 64)).await;
        match due {
            Ok(due) => {
                for destination in due {
                    let (d, o) = (destination.clone(), owner.clone());
                    let leased =
                        app.db.write(move |conn| outbox::lease(conn, &d, &o, now, lease_ms)).await;
                    if matches!(leased, Ok(true)) {
                        tasks.spawn(serve_destination(app.clone(), owner.clone(), destination));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox: cannot read due destinations"),
        }
        tokio::select! {
            () = app.outbox_wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(app.config.outbox.poll_ms)) => {}
        }
    }
}

async fn serve_destination(app: AppState, owner: String, destination: String) {
    if let Err(e) = send_all(&app, &owner, &destination).await {
        tracing::warn!(%destination, error = %e, "outbox: destination failed");
        let (d, err) = (destination.clone(), e.clone());
        let (min, max, park_after) = (
            app.config.outbox.min_backoff_ms,
            app.config.outbox.max_backoff_ms,
            app.config.outbox.park_after_ms,
        );
        let _ = app
            .db
            .write(move |conn| -> Result<(), StoreError> {
                let now = now_ms();
                outbox::failed(conn, &d, &err, now, min, max)?;
                let parked = outbox::park_if_failing_since(conn, &d, now - park_after, now)?;
                if parked > 0 {
                    tracing::warn!(destination = %d, parked, "outbox: parked items after failing too long");
                }
                Ok(())
            })
            .await;
    }
    let (d, o) = (destination, owner);
    let _ = app.db.write(move |conn| outbox::release(conn, &d, &o)).await;
    // Work may have arrived meanwhile.
    app.outbox_wake.notify_one();
}

/// Sends everything queued for one destination; `Err` means back off.
async fn send_all(app: &AppState, owner: &str, destination: &str) -> Result<(), String> {
    let server = ruma::OwnedServerName::try_from(destination)
        .map_err(|e| format!("bad destination: {e}"))?;
    for _ in 0..1000 {
        let (d, o) = (destination.to_owned(), owner.to_owned());
        let lease_ms = app.config.outbox.lease_ms;
        let renewed = app
            .db
            .write(move |conn| outbox::renew(conn, &d, &o, now_ms(), lease_ms))
            .await
            .map_err(|e| e.to_string())?;
        if !renewed {
            return Ok(());
        }
        let d = destination.to_owned();
        let (row, invites, pdus) = app
            .db
            .read(move |conn| -> Result<_, StoreError> {
                let row = outbox::destination(conn, &d)?;
                let invites = outbox::items(conn, &d, outbox::KIND_INVITE, 1)?;
                let pdus = outbox::items(conn, &d, outbox::KIND_PDU, MAX_PDUS)?;
                Ok((row, invites, pdus))
            })
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = row else { return Ok(()) };
        if let (Some(txn_id), Some(body)) = (row.txn_id, row.txn_body) {
            send_txn(app, &server, &txn_id, body).await?;
            let d = destination.to_owned();
            app.db
                .write(move |conn| outbox::finish_txn(conn, &d, &txn_id))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(item) = invites.first() {
            match delivery::deliver_invite(app, item).await.map_err(|e| e.to_string())? {
                delivery::Outcome::Done => {
                    let d = destination.to_owned();
                    app.db
                        .write(move |conn| outbox::succeeded(conn, &d))
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                delivery::Outcome::Retry(why) => return Err(why),
            }
        }
        if pdus.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = pdus.iter().map(|i| i.item_id).collect();
        let txn_id = format!("{}.{}", now_ms(), ids[0]);
        let body = json!({
            "origin": app.keys.server_name().as_str(),
            "origin_server_ts": now_ms(),
            "pdus": pdus.iter().map(|i| serde_json::from_str::<Value>(&i.payload).unwrap_or(Value::Null)).collect::<Vec<_>>(),
            "edus": [],
        })
        .to_string();
        let d = destination.to_owned();
        app.db
            .write(move |conn| outbox::start_txn(conn, &d, &txn_id, &body, &ids))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn send_txn(
    app: &AppState,
    server: &ruma::ServerName,
    txn_id: &str,
    body: String,
) -> Result<(), String> {
    let path = format!("/_matrix/federation/v1/send/{}", encode_segment(txn_id));
    match app
        .federation
        .request(Method::PUT, server, &path, Some(body.into_bytes()), true, 1024 * 1024)
        .await
    {
        Ok(answer) => {
            // A 200 is final even when some PDUs were refused: log them, never resend.
            if let Ok(v) = serde_json::from_slice::<Value>(&answer)
                && let Some(pdus) = v.get("pdus").and_then(Value::as_object)
            {
                for (id, result) in pdus {
                    if let Some(error) = result.get("error") {
                        tracing::info!(%server, event_id = %id, %error, "peer refused a PDU");
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.is_transient() => Err(e.to_string()),
        Err(e) => {
            // A final refusal of the whole transaction: drop it rather than resend forever.
            tracing::warn!(%server, %txn_id, error = %e, "transaction refused; dropping it");
            Ok(())
        }
    }
}
