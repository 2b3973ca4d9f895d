//! The outbound worker: leases destinations with work, delivers invites, and sends PDUs in
//! transactions (≤ 50 PDUs), one transaction in flight per destination, retried with the same
//! txnId and body, backing off on failure, parking what keeps failing (KNOCK-SPEC H.42).
//!
//! One sender per destination, across every knockd sharing the database: a destination is only
//! worked under its lease, renewed right before each request, and a lease outlasts any request
//! (`outbox.lease_ms` ≥ 2 × `federation.request_timeout_ms`). Every write for the destination is
//! fenced by the lease's generation, so a sender whose lease was taken over commits nothing; a
//! started transaction stays stored until it is answered, and whoever holds the lease next sends
//! it again, same txnId, same body.

use std::{collections::HashMap, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::{Id, JoinSet};

use crate::{
    matrix::{
        client::{FedError, encode_segment},
        now_ms,
    },
    service::{AppState, ServiceError, delivery},
    store::{StoreError, outbox, outbox::Lease},
};

/// PDUs per transaction (spec limit).
const MAX_PDUS: i64 = 50;

/// Runs until dropped. Every task it starts is aborted with it.
pub async fn run(app: AppState, owner: String) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Destinations this process is working on: never leased twice, even if a lease ran out.
    let mut busy: HashMap<Id, String> = HashMap::new();
    // Leases of an earlier run of this instance (crashed or killed) are ours to take back.
    let me = owner.clone();
    if let Err(e) = app.db.write(move |conn| outbox::release_all(conn, &me)).await {
        tracing::warn!(error = %e, "outbox: cannot release stale leases");
    }
    loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            busy.remove(&id);
        }
        let now = now_ms();
        let lease_ms = app.config.outbox.lease_ms;
        let due = app.db.read(move |conn| outbox::due(conn, now, 64)).await;
        match due {
            Ok(due) => {
                for destination in due {
                    if busy.values().any(|d| *d == destination) {
                        continue;
                    }
                    let (d, o) = (destination.clone(), owner.clone());
                    let leased = app
                        .db
                        .write(move |conn| outbox::lease(conn, &d, &o, now_ms(), lease_ms))
                        .await;
                    match leased {
                        Ok(Some(lease)) => {
                            let task = tasks.spawn(serve_destination(app.clone(), lease));
                            busy.insert(task.id(), destination);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(%destination, error = %e, "outbox: cannot lease"),
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

/// Why a sender stopped working on a destination before its queue was empty.
#[derive(Debug)]
enum Failure {
    /// The lease was taken over (or released): stop and write nothing more.
    LeaseLost,
    /// Back off and try again later. `refused` names the transaction whose body was refused.
    Retry { error: String, refused: Option<String> },
}

impl Failure {
    fn retry(error: impl ToString) -> Self {
        Self::Retry { error: error.to_string(), refused: None }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost => Self::LeaseLost,
            e => Self::retry(e),
        }
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(e) => e.into(),
            e => Self::retry(e),
        }
    }
}

async fn serve_destination(app: AppState, lease: Lease) {
    let destination = lease.destination.clone();
    match send_all(&app, &lease).await {
        Ok(()) => {}
        Err(Failure::LeaseLost) => {
            tracing::warn!(%destination, "outbox: lease taken over by another sender; stopping");
            return;
        }
        Err(Failure::Retry { error, refused }) => {
            tracing::warn!(%destination, %error, "outbox: delivery failed; backing off");
            back_off(&app, &lease, error, refused).await;
        }
    }
    let l = lease.clone();
    let _ = app.db.write(move |conn| outbox::release(conn, &l)).await;
    // Work may have arrived meanwhile.
    app.outbox_wake.notify_one();
}

/// Records a failure: back-off with jitter, parking a transaction whose body keeps being refused,
/// parking everything of a destination failing for too long.
async fn back_off(app: &AppState, lease: &Lease, error: String, refused: Option<String>) {
    app.metrics.outbox_failure(&lease.destination);
    let config = &app.config.outbox;
    let (backoff, park_after, refusals) = (
        (config.min_backoff_ms, config.max_backoff_ms),
        config.park_after_ms,
        config.park_after_refusals,
    );
    let l = lease.clone();
    let result = app
        .db
        .write(move |conn| -> Result<(usize, usize), StoreError> {
            let now = now_ms();
            let parked_txn = match &refused {
                Some(txn_id) => outbox::refused(conn, &l, txn_id, &error, now, refusals)?,
                None => 0,
            };
            outbox::failed(conn, &l, &error, now, backoff, jittered)?;
            let parked = outbox::park_if_failing_since(conn, &l, now - park_after, now)?;
            Ok((parked_txn, parked))
        })
        .await;
    let destination = &lease.destination;
    match result {
        Ok((parked_txn, parked)) => {
            if parked_txn > 0 {
                let parked = parked_txn;
                tracing::warn!(%destination, parked, "outbox: parked a refused transaction");
            }
            if parked > 0 {
                tracing::warn!(%destination, parked, "outbox: parked items after failing too long");
            }
        }
        Err(StoreError::LeaseLost) => {
            tracing::warn!(%destination, "outbox: lease taken over by another sender; stopping");
        }
        Err(e) => tracing::warn!(%destination, error = %e, "outbox: cannot record the failure"),
    }
}

/// `backoff` plus up to a quarter more, at random: servers that failed together retry apart.
fn jittered(backoff: i64) -> i64 {
    let mut bytes = [0u8; 8];
    let random = getrandom::fill(&mut bytes).map(|()| u64::from_le_bytes(bytes)).unwrap_or(0);
    backoff + (random % (backoff.max(0) as u64 / 4 + 1)) as i64
}

/// Sends everything queued for the leased destination.
async fn send_all(app: &AppState, lease: &Lease) -> Result<(), Failure> {
    let destination = lease.destination.as_str();
    let server = ruma::OwnedServerName::try_from(destination)
        .map_err(|e| Failure::retry(format!("bad destination: {e}")))?;
    for _ in 0..1000 {
        // Renewed right before each request: the request ends (answer or timeout) within the lease.
        let (l, lease_ms) = (lease.clone(), app.config.outbox.lease_ms);
        if !app.db.write(move |conn| outbox::renew(conn, &l, now_ms(), lease_ms)).await? {
            return Err(Failure::LeaseLost);
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
            .await?;
        let Some(row) = row else { return Ok(()) };
        if let (Some(txn_id), Some(body)) = (row.txn_id, row.txn_body) {
            send_txn(app, &server, &txn_id, body).await.map_err(|e| Failure::Retry {
                refused: e.refuses_body().then(|| txn_id.clone()),
                error: e.to_string(),
            })?;
            let l = lease.clone();
            app.db.write(move |conn| outbox::finish_txn(conn, &l, &txn_id)).await?;
            continue;
        }
        if let Some(item) = invites.first() {
            match delivery::deliver_invite(app, lease, item).await? {
                delivery::Outcome::Done => {
                    let l = lease.clone();
                    app.db.write(move |conn| outbox::succeeded(conn, &l)).await?;
                    continue;
                }
                delivery::Outcome::Retry(why) => return Err(Failure::retry(why)),
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
        let l = lease.clone();
        app.db.write(move |conn| outbox::start_txn(conn, &l, &txn_id, &body, &ids)).await?;
    }
    Ok(())
}

/// One attempt at a transaction. Any answer but a 2xx is an error to retry later: nothing is
/// dropped here (a body refused again and again is parked by the caller, with the reason).
async fn send_txn(
    app: &AppState,
    server: &ruma::ServerName,
    txn_id: &str,
    body: String,
) -> Result<(), FedError> {
    let path = format!("/_matrix/federation/v1/send/{}", encode_segment(txn_id));
    let answer = app
        .federation
        .request(Method::PUT, server, &path, Some(body.into_bytes()), true, 1024 * 1024)
        .await?;
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

#[cfg(test)]
mod tests {
    use super::jittered;

    #[test]
    fn jitter_adds_up_to_a_quarter_at_random() {
        let waits: Vec<i64> = (0..1000).map(|_| jittered(2_000)).collect();
        assert!(waits.iter().all(|w| (2_000..=2_500).contains(w)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "random");
        assert_eq!(jittered(0), 0);
    }
}
