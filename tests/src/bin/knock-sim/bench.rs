//! The benchmarks: send_knock throughput and latency, approve → invite latency, make_knock
//! throughput. Only the named request is timed; preparation is not.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use knockd_tests::SimServer;
use reqwest::StatusCode;
use ruma::CanonicalJsonObject;
use serde_json::{Value, json};

use crate::{Target, stats};

struct Outcome {
    took: Duration,
    status: StatusCode,
    errcode: Option<String>,
    has_join_rules: bool,
}

fn tally(outcomes: &[Outcome]) -> (usize, BTreeMap<String, usize>, usize) {
    let mut errors = BTreeMap::new();
    let mut ok = 0;
    let mut missing_state = 0;
    for o in outcomes {
        if o.status == StatusCode::OK {
            ok += 1;
            if !o.has_join_rules {
                missing_state += 1;
            }
        } else {
            *errors
                .entry(format!("{} {}", o.status.as_u16(), o.errcode.clone().unwrap_or_default()))
                .or_default() += 1;
        }
    }
    (ok, errors, missing_state)
}

/// `knock-sim bench`.
pub async fn send_knock(
    target: Target,
    n: usize,
    c: usize,
    template: &str,
    as_json: bool,
) -> Result<(), String> {
    let stale = match template {
        "fresh" => false,
        "stale" => true,
        other => return Err(format!("--template {other:?}: expected fresh or stale")),
    };
    let sim = Arc::new(SimServer::start().await);
    let room_id = crate::room(&target, "Benchmark room").await?;
    // Warm the target's key cache and our connection pool (untimed).
    let (status, made) =
        sim.make_knock(&target.server, &room_id, sim.user("warmup").as_str()).await;
    if status != StatusCode::OK {
        return Err(format!("make_knock on {}: {status} {made}", target.server));
    }
    let version = made["room_version"].as_str().unwrap_or_default().to_owned();
    let prepared: Vec<(String, CanonicalJsonObject)> = if stale {
        (0..n)
            .map(|i| {
                let user = sim.user(&format!("s{i}"));
                let mut event = made["event"].clone();
                event["sender"] = user.as_str().into();
                event["state_key"] = user.as_str().into();
                let (id, pdu) = sim.sign_template(&version, &event, Some("benchmark"));
                (id.to_string(), pdu)
            })
            .collect()
    } else {
        Vec::new()
    };
    let queue = Arc::new(Mutex::new((0..n).collect::<Vec<_>>()));
    let prepared = Arc::new(prepared);
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..c.max(1) {
        let (sim, queue, prepared, outcomes, target, room_id, version) = (
            sim.clone(),
            queue.clone(),
            prepared.clone(),
            outcomes.clone(),
            target.clone(),
            room_id.clone(),
            version.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut busy = Duration::ZERO;
            loop {
                let Some(i) = queue.lock().expect("queue").pop() else { break };
                let (id, pdu) = if stale {
                    prepared[i].clone()
                } else {
                    let user = sim.user(&format!("f{i}"));
                    let (_, made) = sim.make_knock(&target.server, &room_id, user.as_str()).await;
                    let (id, pdu) = sim.sign_template(&version, &made["event"], Some("benchmark"));
                    (id.to_string(), pdu)
                };
                let t0 = Instant::now();
                let (status, body) = sim.send_knock(&target.server, &room_id, &id, &pdu).await;
                let took = t0.elapsed();
                busy += took;
                let has_join_rules = body["knock_room_state"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.join_rules"));
                let errcode = body["errcode"].as_str().map(str::to_owned);
                outcomes.lock().expect("outcomes").push(Outcome {
                    took,
                    status,
                    errcode,
                    has_join_rules,
                });
            }
            busy
        }));
    }
    let mut busy = Duration::ZERO;
    for w in workers {
        busy += w.await.map_err(|e| e.to_string())?;
    }
    let wall = started.elapsed();
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let (ok, errors, missing_state) = tally(&outcomes);
    let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
    let latency = stats::latency(&mut took);
    // Throughput of the timed requests only: in fresh mode the workers also spend (untimed)
    // time on make_knock, so use the time each connection spent in send_knock.
    let send_seconds =
        if stale { wall.as_secs_f64() } else { busy.as_secs_f64() / c.max(1) as f64 };
    let per_second = n as f64 / send_seconds.max(1e-9);
    let (extremities, next_prev) = fork_report(&target, &sim, &room_id).await;
    let result = json!({
        "bench": "send_knock", "target": target.server, "room_id": room_id, "template": template,
        "n": n, "c": c, "knocks_per_second": per_second, "latency": latency, "ok": ok, "errors": errors,
        "ok_without_join_rules": missing_state, "forward_extremities_after": extremities,
        "next_template_prev_events": next_prev,
    });
    print_result(&result, as_json);
    if ok != n || missing_state > 0 {
        return Err(format!(
            "{} of {n} knocks failed or lacked join_rules",
            n - ok + missing_state
        ));
    }
    Ok(())
}

/// The room's forward extremities (knockd only) and how many prev_events the next template cites.
async fn fork_report(target: &Target, sim: &SimServer, room_id: &str) -> (Value, Value) {
    let extremities = match crate::admin(target) {
        Ok(admin) => admin
            .room(room_id)
            .await
            .map(|r| json!(r.summary.forward_extremities))
            .unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let (_, next) = sim.make_knock(&target.server, room_id, sim.user("after").as_str()).await;
    let prev =
        next["event"]["prev_events"].as_array().map(|p| json!(p.len())).unwrap_or(Value::Null);
    (extremities, prev)
}

fn print_result(result: &Value, as_json: bool) {
    if as_json {
        println!("{result}");
        return;
    }
    if let Some(map) = result.as_object() {
        for (k, v) in map {
            println!("{k:>28}: {v}");
        }
    }
}

/// `knock-sim bench-approve`: approve → invite received at the knocker's server.
pub async fn approve(target: Target, n: usize, as_json: bool) -> Result<(), String> {
    let sim = SimServer::start().await;
    let admin = crate::admin(&target)?;
    let room_id = crate::room(&target, "Approval benchmark").await?;
    for i in 0..n {
        let (status, body) =
            sim.knock(&target.server, &room_id, &format!("a{i}"), Some("approve me")).await;
        if status != StatusCode::OK {
            return Err(format!("knock {i}: {status} {body}"));
        }
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let user = sim.user(&format!("a{i}"));
        let knock = admin
            .list_knocks(&knockd_shared::KnockQuery {
                user_id: Some(user.to_string()),
                room_id: Some(room_id.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let id = knock.knocks.first().ok_or("knock not queued")?.id;
        let before = sim.inbox().invites.len();
        let t0 = Instant::now();
        admin.approve(id, None).await.map_err(|e| e.to_string())?;
        loop {
            if sim.inbox().invites.len() > before {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("invite {i} never arrived"));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(t0.elapsed());
    }
    let latency = stats::latency(&mut samples);
    print_result(&json!({ "bench": "approve_to_invite", "n": n, "latency": latency }), as_json);
    Ok(())
}

/// `knock-sim bench-make-knock`.
pub async fn make_knock(target: Target, n: usize, c: usize, as_json: bool) -> Result<(), String> {
    let sim = Arc::new(SimServer::start().await);
    let room_id = crate::room(&target, "make_knock benchmark").await?;
    let (status, body) =
        sim.make_knock(&target.server, &room_id, sim.user("warmup").as_str()).await;
    if status != StatusCode::OK {
        return Err(format!("make_knock: {status} {body}"));
    }
    let queue = Arc::new(Mutex::new((0..n).collect::<Vec<_>>()));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let failures = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..c.max(1) {
        let (sim, queue, samples, failures, server, room_id) = (
            sim.clone(),
            queue.clone(),
            samples.clone(),
            failures.clone(),
            target.server.clone(),
            room_id.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(i) = queue.lock().expect("queue").pop() else { break };
                let user = sim.user(&format!("m{i}"));
                let t0 = Instant::now();
                let (status, _) = sim.make_knock(&server, &room_id, user.as_str()).await;
                samples.lock().expect("samples").push(t0.elapsed());
                if status != StatusCode::OK {
                    *failures.lock().expect("failures") += 1;
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let wall = started.elapsed();
    let mut samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let latency = stats::latency(&mut samples);
    let failures = *failures.lock().expect("failures");
    print_result(
        &json!({ "bench": "make_knock", "n": n, "c": c, "per_second": n as f64 / wall.as_secs_f64(), "latency": latency, "failures": failures }),
        as_json,
    );
    if failures > 0 {
        return Err(format!("{failures} make_knock requests failed"));
    }
    Ok(())
}
