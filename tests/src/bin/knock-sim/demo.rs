//! `knock-sim demo`: people with names and reasons knock; invites are accepted and joined.

use std::time::{Duration, Instant};

use knockd_tests::SimServer;
use reqwest::StatusCode;

use crate::Target;

const PEOPLE: [(&str, &str, &str); 10] = [
    ("ada", "Ada Lovelace", "Heard about the analytical engine meetup here. Can I join?"),
    ("grace", "Grace Hopper", "I'd like to help with the compiler working group."),
    ("linus", "Linus", "Friend of @admin, we met at the conference last week."),
    ("margaret", "Margaret Hamilton", "Interested in the reliability discussions."),
    ("alan", "Alan Turing", "Please let me in, I have a question about decidability."),
    ("barbara", "Barbara Liskov", "Looking for the substitution principle study group."),
    ("dennis", "Dennis", "hi"),
    ("ken", "Ken", "Sent by the onboarding bot."),
    ("frances", "Frances Allen", "Optimising compilers fan. Promise to behave."),
    ("edsger", "Edsger", "GOTO considered harmful; knocking considered polite."),
];

pub async fn run(target: Target, users: usize, seconds: Option<u64>) -> Result<(), String> {
    let sim = SimServer::start().await;
    eprintln!("knock-sim: simulated homeserver {} is up", sim.server_name);
    let room_id = crate::room(&target, "Demo lobby").await?;
    for (local, name, reason) in PEOPLE.iter().cycle().take(users) {
        let (status, body) =
            sim.knock_as(&target.server, &room_id, local, Some(name), Some(reason)).await;
        if status == StatusCode::OK {
            eprintln!("knock-sim: {} ({name}) knocked: {reason}", sim.user(local));
        } else {
            eprintln!("knock-sim: {local}'s knock was refused: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "knock-sim: now approve or deny them with `knockctl` (or `knockctl list`); invites are accepted and joined"
    );
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut joined = std::collections::HashSet::new();
    loop {
        for invite in sim.inbox().invites {
            let user = invite["event"]["state_key"].as_str().unwrap_or_default().to_owned();
            let room = invite["event"]["room_id"].as_str().unwrap_or_default().to_owned();
            let Some(local) =
                user.strip_prefix('@').and_then(|u| u.split(':').next()).map(str::to_owned)
            else {
                continue;
            };
            if !joined.insert((room.clone(), user.clone())) {
                continue;
            }
            let (status, body) = sim.membership("join", &target.server, &room, &local).await;
            if status == StatusCode::OK {
                eprintln!("knock-sim: {user} was invited and joined {room}");
            } else {
                eprintln!("knock-sim: {user} could not join: {status} {body}");
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
