//! `knock-sim bench-send`: a joined server's bursts of `/send` transactions (50 messages each),
//! and send_knock latency from another server alone and during the burst.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use knockd::matrix::event;
use knockd_tests::SimServer;
use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, RoomVersionId};
use serde_json::json;

use crate::{Target, stats};

/// A joined member of `sim` and what its messages cite.
struct Member {
    version: String,
    sender: String,
    auth_events: Vec<String>,
    prev: String,
    depth: i64,
}

/// Knock, get approved through the admin API, accept the invite, join.
async fn join(target: &Target, sim: &SimServer, room_id: &str) -> Result<Member, String> {
    let user = sim.user("sender");
    let (status, body) = sim.knock(&target.server, room_id, "sender", Some("bench")).await;
    if status != StatusCode::OK {
        return Err(format!("knock: {status} {body}"));
    }
    let admin = crate::admin(target)?;
    let knocks = admin
        .list_knocks(&knockd_shared::KnockQuery {
            user_id: Some(user.to_string()),
            room_id: Some(room_id.to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let id = knocks.knocks.first().ok_or("knock not queued")?.id;
    admin.approve(id, None).await.map_err(|e| e.to_string())?;
    // Approved once the counter-signed invite is stored in the room (after it reached us).
    let t0 = Instant::now();
    loop {
        let status = admin.knock(id).await.map_err(|e| e.to_string())?.knock.status;
        if status == "approved" {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("the approval never completed (knock is {status})"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, made) = sim.make_membership("join", &target.server, room_id, user.as_str()).await;
    if status != StatusCode::OK {
        return Err(format!("make_join: {status} {made}"));
    }
    let version = made["room_version"].as_str().unwrap_or_default().to_owned();
    let (join_id, join_pdu) = sim.sign_event(&version, made["event"].clone());
    let (status, answer) =
        sim.send_membership("join", 2, &target.server, room_id, join_id.as_str(), &join_pdu).await;
    if status != StatusCode::OK {
        return Err(format!("send_join: {status} {answer}"));
    }
    let rules = RoomVersionId::try_from(version.as_str())
        .ok()
        .and_then(|v| event::rules(&v).ok())
        .ok_or("unknown room version")?;
    let mut auth_events = vec![join_id.to_string()];
    for pdu in answer["state"].as_array().cloned().unwrap_or_default() {
        let wanted = match pdu["type"].as_str() {
            Some("m.room.power_levels") => true,
            Some("m.room.create") => !rules.authorization.room_create_event_id_as_room_id,
            _ => false,
        };
        if wanted {
            let object: CanonicalJsonObject =
                serde_json::from_value(pdu).map_err(|e| e.to_string())?;
            auth_events.push(event::event_id(&object, &rules)?.to_string());
        }
    }
    let depth = join_pdu["depth"].as_integer().map(i64::from).unwrap_or_default();
    Ok(Member { version, sender: user.to_string(), auth_events, prev: join_id.to_string(), depth })
}

/// `txns` transactions of `per_txn` messages, each citing the one before (signed now, untimed).
fn messages(
    sim: &SimServer,
    room_id: &str,
    m: &mut Member,
    txns: usize,
    per_txn: usize,
) -> Vec<Vec<CanonicalJsonObject>> {
    (0..txns)
        .map(|t| {
            (0..per_txn)
                .map(|i| {
                    m.depth += 1;
                    let template = json!({
                        "room_id": room_id, "sender": m.sender, "type": "m.room.message",
                        "content": { "msgtype": "m.text", "body": format!("burst {t}.{i}") },
                        "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
                        "depth": m.depth, "prev_events": [m.prev], "auth_events": m.auth_events,
                    });
                    let (id, pdu) = sim.sign_event(&m.version, template);
                    m.prev = id.to_string();
                    pdu
                })
                .collect()
        })
        .collect()
}

/// `n` knocks at C=1 from `knocker`, only send_knock timed; the latencies.
async fn knocks(
    target: &Target,
    knocker: &SimServer,
    room_id: &str,
    prefix: &str,
    n: usize,
) -> Result<Vec<Duration>, String> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let user = knocker.user(&format!("{prefix}{i}"));
        let (status, made) = knocker.make_knock(&target.server, room_id, user.as_str()).await;
        if status != StatusCode::OK {
            return Err(format!("make_knock: {status} {made}"));
        }
        let version = made["room_version"].as_str().unwrap_or_default().to_owned();
        let (id, pdu) = knocker.sign_template(&version, &made["event"], Some("benchmark"));
        let t0 = Instant::now();
        let (status, body) = knocker.send_knock(&target.server, room_id, id.as_str(), &pdu).await;
        took.push(t0.elapsed());
        if status != StatusCode::OK {
            return Err(format!("send_knock: {status} {body}"));
        }
    }
    Ok(took)
}

/// `knock-sim bench-send`.
pub async fn run(
    target: Target,
    txns: usize,
    per_txn: usize,
    n_knocks: usize,
    as_json: bool,
) -> Result<(), String> {
    let sim = Arc::new(SimServer::start().await);
    let knocker = SimServer::start().await;
    let room_id = crate::room(&target, "Transaction benchmark").await?;
    let mut member = join(&target, &sim, &room_id).await?;
    let bursts = messages(&sim, &room_id, &mut member, txns, per_txn);
    let mut alone = knocks(&target, &knocker, &room_id, "alone", n_knocks).await?;

    let (burst_sim, server) = (sim.clone(), target.server.clone());
    let burst = tokio::spawn(async move {
        let mut took = Vec::with_capacity(bursts.len());
        let mut errors = 0usize;
        let started = Instant::now();
        for (t, pdus) in bursts.iter().enumerate() {
            let t0 = Instant::now();
            let (status, answer) =
                burst_sim.send_txn(&server, &format!("burst{t}"), pdus, &[]).await;
            took.push(t0.elapsed());
            let failed = answer["pdus"]
                .as_object()
                .map(|m| m.values().filter(|r| r.get("error").is_some()).count())
                .unwrap_or(pdus.len());
            errors += if status == StatusCode::OK { failed } else { pdus.len() };
        }
        (took, errors, started.elapsed())
    });
    let mut during = knocks(&target, &knocker, &room_id, "during", n_knocks).await?;
    let (mut txn_took, pdu_errors, burst_wall) = burst.await.map_err(|e| e.to_string())?;
    let pdus = txns * per_txn;
    let alone_stats = stats::latency(&mut alone);
    let during_stats = stats::latency(&mut during);
    let ratio = during_stats.p50_ms / alone_stats.p50_ms.max(1e-9);
    let result = json!({
        "bench": "send_burst", "target": target.server, "room_id": room_id,
        "transactions": txns, "pdus_per_transaction": per_txn, "pdus_per_second": pdus as f64 / burst_wall.as_secs_f64(),
        "transaction_latency": stats::latency(&mut txn_took), "pdu_errors": pdu_errors,
        "knocks": n_knocks, "send_knock_alone": alone_stats, "send_knock_during_burst": during_stats,
        "p50_during_over_alone": ratio,
    });
    if as_json {
        println!("{result}");
    } else if let Some(map) = result.as_object() {
        for (k, v) in map {
            println!("{k:>28}: {v}");
        }
    }
    if pdu_errors > 0 {
        return Err(format!("{pdu_errors} of {pdus} PDUs were refused"));
    }
    Ok(())
}
