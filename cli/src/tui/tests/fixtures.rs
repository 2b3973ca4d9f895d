//! Fixed data: knocks, a detail, and an app with a fixed "now".

use knockd_shared::{Decision, KnockDetail, KnockList, KnockSummary, RoomList, RoomSummary};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
};
use serde_json::json;

use crate::tui::{
    App, Effect, Msg,
    app::{FetchError, PAGE},
    view,
};

/// 2023-11-14 22:13:20Z.
pub const NOW: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

pub const LOBBY: &str = "!lobby:knock.example";
pub const GARDEN: &str = "!garden:knock.example";

pub fn knock(id: i64, room: &str, user: &str, reason: Option<&str>, ago_min: i64) -> KnockSummary {
    let server = user.split_once(':').map_or("example.org", |(_, s)| s).to_owned();
    KnockSummary {
        id,
        room_id: room.to_owned(),
        room_name: Some(if room == LOBBY { "Lobby" } else { "Garden club" }.to_owned()),
        user_id: user.to_owned(),
        display_name: None,
        avatar_url: None,
        event_id: format!("$knock{id}"),
        reason: reason.map(str::to_owned),
        origin_server: server,
        status: "pending".to_owned(),
        received_at_ms: NOW - ago_min * MIN,
        content_redacted: false,
    }
}

/// Six pending knocks, oldest first, with awkward text.
pub fn knocks() -> Vec<KnockSummary> {
    let mut alice = knock(
        3,
        LOBBY,
        "@alice:example.org",
        Some("Hi! Bob invited me, we met at the conference."),
        3 * 24 * 60,
    );
    alice.display_name = Some("Alice".into());
    let mallory = knock(
        7,
        LOBBY,
        "@mallory:spam.example",
        Some("\x1b[2J\x1b[31mFREE CRYPTO\nclick here\u{202e}now"),
        26 * 60,
    );
    let long = "I would like to join the garden club because ".repeat(6);
    let bob = knock(12, GARDEN, "@bob:matrix.org", Some(&long), 5 * 60);
    let carol = knock(15, GARDEN, "@carol:example.net", None, 90);
    let mut redacted = knock(21, LOBBY, "@dave:example.com", Some("lost"), 12);
    redacted.content_redacted = true;
    let wide = knock(100_234, GARDEN, "@日本語:example.jp", Some("こんにちは、参加したいです"), 1);
    vec![alice, mallory, bob, carol, redacted, wide]
}

pub fn rooms() -> RoomList {
    let room = |room_id: &str, name: &str| -> RoomSummary {
        serde_json::from_value(json!({
            "room_id": room_id, "room_version": "10", "creator": "@admin:knock.example",
            "created_ms": NOW, "name": name, "join_rule": "knock", "joined_members": 3,
            "knocking_members": 2, "forward_extremities": 1,
        }))
        .expect("a room summary")
    };
    RoomList { rooms: vec![room(LOBBY, "Lobby"), room(GARDEN, "Garden club")], next: None }
}

pub fn decision(knock_id: i64, action: &str, delivery: &str, error: Option<&str>) -> Decision {
    Decision {
        id: knock_id * 10,
        knock_id,
        room_id: LOBBY.into(),
        user_id: None,
        actor: "@mod:knock.example".into(),
        action: action.into(),
        reason: (action != "approve").then(|| "Spam".into()),
        decided_at_ms: NOW - 30 * MIN,
        event_id: None,
        delivery: delivery.into(),
        delivery_error: error.map(str::to_owned),
    }
}

/// The detail of `k`: the room it was shown, an earlier denied knock and server history.
pub fn detail(k: &KnockSummary, decisions: Vec<Decision>) -> KnockDetail {
    let pdu = |kind: &str, content: serde_json::Value| json!({"type": kind, "state_key": "", "sender": "@admin:knock.example", "content": content});
    let mut earlier = knock(1, &k.room_id, &k.user_id, Some("let me in\x07"), 10 * 24 * 60);
    earlier.status = "denied".into();
    let mut other = knock(2, GARDEN, "@eve:example.org", Some("hello"), 9 * 24 * 60);
    other.status = "banned".into();
    KnockDetail {
        knock: k.clone(),
        knock_room_state: vec![
            pdu("m.room.create", json!({"room_version": "10", "creator": "@admin:knock.example"})),
            pdu("m.room.join_rules", json!({"join_rule": "knock"})),
            pdu("m.room.name", json!({"name": "Lobby"})),
            pdu("m.room.topic", json!({"topic": "Welcome!\nBe nice \x1b[5m"})),
            pdu("m.room.avatar", json!({"url": "mxc://knock.example/lobby"})),
            pdu("m.room.canonical_alias", json!({"alias": "#lobby:knock.example"})),
        ],
        decisions,
        user_history: vec![earlier],
        user_decisions: vec![decision(1, "deny", "queued", None)],
        server_history: vec![k.clone(), other],
    }
}

pub fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub fn code(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

/// Sends keys typed as text.
pub fn typed(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars().flat_map(|c| app.update(key(c))).collect()
}

/// Answers the app's outstanding page request with `knocks`.
pub fn answer(app: &mut App, effects: &[Effect], knocks: Vec<KnockSummary>, next: Option<&str>) {
    let (seq, start) = effects
        .iter()
        .find_map(|e| match e {
            Effect::Fetch { seq, start, .. } => Some((*seq, *start)),
            _ => None,
        })
        .expect("a page request");
    let page = KnockList { knocks, next: next.map(str::to_owned) };
    app.update(Msg::Page { seq, start, result: Ok(page) });
}

/// An app of `width` x `height` with the fixture knocks loaded.
pub fn loaded(width: u16, height: u16) -> App {
    let mut app = App::new("http://127.0.0.1:8449", NOW, false);
    app.update(Msg::Resize { width, height });
    let effects = app.start();
    app.update(Msg::Rooms(Ok(rooms())));
    answer(&mut app, &effects, knocks(), None);
    // The stream connecting reloads the page shown: answer with the same knocks.
    let effects = app.update(Msg::StreamUp);
    answer(&mut app, &effects, knocks(), None);
    app
}

/// A page of `n` synthetic knocks from id `first`.
pub fn many(first: i64, n: usize) -> Vec<KnockSummary> {
    (0..n as i64)
        .map(|i| {
            knock(first + i, LOBBY, &format!("@user{}:example.org", first + i), Some("hello"), 10)
        })
        .collect()
}

pub fn page_size() -> usize {
    PAGE as usize
}

pub fn unreachable() -> FetchError {
    FetchError { message: "error sending request".into(), unreachable: true }
}

/// Renders into a test terminal.
pub fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|f| view::render(app, f)).expect("draw");
    terminal
}

/// The selected knock's id.
pub fn selected_id(app: &App) -> i64 {
    app.selected_knock().expect("a selected knock").id
}
