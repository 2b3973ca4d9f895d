//! The TUI end to end: the real binary in a pseudo-terminal approves a knock with keystrokes.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use knockd_tests::{SimServer, backends};
use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};

use crate::common::{command, knock, room, run_raw, start, status, token_file, wait_status};

/// What the terminal received, with escape sequences removed (enough to find a word).
fn text(screen: &Mutex<Vec<u8>>) -> String {
    let bytes = screen.lock().unwrap().clone();
    let raw = String::from_utf8_lossy(&bytes);
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ params final-byte; other escapes: ESC and one character.
        if chars.next_if_eq(&'[').is_some() {
            for p in chars.by_ref() {
                if ('@'..='~').contains(&p) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

async fn wait_for(screen: &Mutex<Vec<u8>>, what: &str) {
    for _ in 0..400 {
        if text(screen).contains(what) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the TUI never showed {what:?}; it showed:\n{}", text(screen));
}

/// knockctl running in a 100x30 pseudo-terminal.
struct Tty {
    screen: Arc<Mutex<Vec<u8>>>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    child: Box<dyn Child + Send + Sync>,
}

impl Tty {
    fn spawn(url: &str, token: &Path, args: &[&str]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize { rows: 30, cols: 100, pixel_width: 0, pixel_height: 0 })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_knockctl"));
        for var in ["KNOCKCTL_URL", "KNOCKCTL_TOKEN", "KNOCKCTL_TOKEN_FILE", "NO_COLOR"] {
            cmd.env_remove(var);
        }
        cmd.env("TERM", "xterm-256color");
        cmd.args(["--url", url, "--token-file", token.to_str().expect("utf-8 path")]);
        cmd.args(args);
        let child = pty.slave.spawn_command(cmd).expect("spawn knockctl in a pty");
        drop(pty.slave);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::new(Mutex::new(pty.master.take_writer().expect("pty writer")));
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let (seen, answer) = (screen.clone(), writer.clone());
        std::thread::spawn(move || {
            let _master = pty.master;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                // Answer cursor-position queries like a terminal would.
                if buf[..n].windows(4).any(|w| w == b"\x1b[6n") {
                    let _ = answer.lock().unwrap().write_all(b"\x1b[1;1R");
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { screen, writer, child }
    }

    fn press(&self, keys: &[u8]) {
        let mut w = self.writer.lock().unwrap();
        w.write_all(keys).and_then(|()| w.flush()).expect("write keys");
    }

    async fn wait_for(&self, what: &str) {
        wait_for(&self.screen, what).await
    }

    /// Presses q and expects a clean exit.
    async fn quit(mut self) {
        self.press(b"q");
        for _ in 0..200 {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                assert!(exit.success(), "{exit:?}\n{}", text(&self.screen));
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = self.child.kill();
        panic!("q did not quit:\n{}", text(&self.screen));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tui_approves_a_knock_with_keystrokes() {
    for backend in backends() {
        let k = start(backend).await;
        let sim = SimServer::start().await;
        let room_id = room(&k, "Terminal").await;
        let id = knock(&k, &sim, &room_id, "ptyalice", "let me in, I typed this").await;

        let tty = Tty::spawn(&k.admin_url, &token_file(&k), &["tui"]);
        tty.wait_for("ptyalice").await;
        tty.wait_for("1/1").await;
        assert_eq!(status(&k, id).await, "pending", "{backend:?}");
        // One knock, no marks: `a` approves it without a confirmation.
        tty.press(b"a");
        wait_status(&k, id, &["delivery_pending", "approved"]).await;
        tty.wait_for("invite").await;
        // knockd goes away and comes back: the banner shows, then new knocks appear by themselves.
        let k = k.restart().await;
        tty.wait_for("knockd unreachable").await;
        knock(&k, &sim, &room_id, "ptybob", "after the restart").await;
        tty.wait_for("ptybob").await;
        tty.quit().await;
        k.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_knockctl_on_a_terminal_opens_the_tui_and_shows_an_unreachable_daemon() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("knockctl-tui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin.token");
    std::fs::write(&token, "whatever").unwrap();

    let tty = Tty::spawn(&url, &token, &[]);
    tty.wait_for("knockd unreachable").await;
    tty.wait_for("retrying").await;
    tty.quit().await;

    // Not on a terminal: `tui` is a usage error, and no subcommand prints the help.
    let run = run_raw(command(&url, &token, &["tui"]), None).await.expect(2);
    assert!(run.stderr.contains("needs a terminal"), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
