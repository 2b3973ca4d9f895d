//! watch: queue changes as JSON lines.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use knockd_shared::QueueEvent;
use knockd_tests::{SimServer, backends};

use crate::common::{command, room, start, token_file};

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_a_json_line_when_a_knock_arrives() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Watched").await;

        let mut child = command(&k.admin_url, &token_file(&k), &["watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn knockctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Knock until watch reports one (it may not have subscribed before the first).
        let mut line = None;
        'knocking: for n in 0..20 {
            let user = format!("watcher{n}");
            let (status, body) = sim.knock(&k.server_name, &room_id, &user, Some("hi")).await;
            assert_eq!(status.as_u16(), 200, "{body}");
            for _ in 0..20 {
                if let Ok(l) = rx.try_recv() {
                    line = Some(l);
                    break 'knocking;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        child.kill().expect("kill watch");
        let status = child.wait().expect("wait");
        let line = line.unwrap_or_else(|| panic!("{backend:?}: watch printed nothing ({status})"));
        let event: QueueEvent = serde_json::from_str(&line).expect("one QueueEvent per line");
        assert_eq!(event.kind, "knock", "{line}");
        assert_eq!(event.room_id.as_deref(), Some(room_id.as_str()));
        assert_eq!(event.status.as_deref(), Some("pending"));
        assert!(event.knock_id.is_some());
        k.stop().await;
    }
}
