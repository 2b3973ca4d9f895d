//! Every screen at 80x24 (and the split detail at 120x40), with fixed data and a fixed "now".
//! Review changes with `INSTA_UPDATE=always` and a diff of the `.snap` files.

use knockd_shared::{Decision, KnockList};
use ratatui::{crossterm::event::KeyCode, style::Color};

use super::fixtures::*;
use crate::tui::{App, Msg};

fn snap(name: &str, app: &App, width: u16, height: u16) {
    let terminal = render(app, width, height);
    insta::assert_snapshot!(name, terminal.backend());
}

fn with_detail(app: &mut App, decisions: Vec<Decision>) {
    app.update(code(KeyCode::Enter));
    let k = app.selected_knock().unwrap().clone();
    app.update(Msg::Detail { id: k.id, result: Ok(Box::new(detail(&k, decisions))) });
}

#[test]
fn queue() {
    let mut app = loaded(80, 24);
    app.update(key(' '));
    app.update(key('j'));
    snap("queue", &app, 80, 24);
}

#[test]
fn queue_wide() {
    let mut app = loaded(120, 40);
    app.update(key('j'));
    snap("queue_120x40", &app, 120, 40);
}

#[test]
fn detail_pane() {
    let mut app = loaded(80, 24);
    with_detail(&mut app, vec![]);
    snap("detail", &app, 80, 24);
}

#[test]
fn detail_with_the_full_reason() {
    let mut app = loaded(80, 24);
    app.update(key('j'));
    with_detail(&mut app, vec![]);
    app.update(key('e'));
    snap("detail_full_reason", &app, 80, 24);
}

#[test]
fn detail_split_with_a_failed_invite() {
    let mut app = loaded(120, 40);
    let mut knocks = knocks();
    knocks[0].status = "approve_failed".into();
    let effects = app.update(key('s')); // approve_failed
    answer(&mut app, &effects, knocks, None);
    let blocked = "M_INVITE_BLOCKED: invites from unknown servers are blocked";
    let failed = decision(3, "approve", "failed", Some(blocked));
    with_detail(&mut app, vec![failed]);
    snap("detail_120x40", &app, 120, 40);
}

#[test]
fn help_overlay() {
    let mut app = loaded(80, 24);
    app.update(key('?'));
    snap("help", &app, 80, 24);
}

#[test]
fn confirm_bulk_ban() {
    let mut app = loaded(80, 24);
    app.update(key(' '));
    app.update(key(' '));
    app.update(key('b'));
    app.update(key('1'));
    app.update(code(KeyCode::Enter));
    snap("confirm", &app, 80, 24);
}

#[test]
fn filter_line() {
    let mut app = loaded(80, 24);
    app.update(key('/'));
    typed(&mut app, "room:garden bob");
    snap("filter", &app, 80, 24);
}

#[test]
fn reason_prompt() {
    let mut app = loaded(80, 24);
    app.update(key('j'));
    app.update(key('d'));
    typed(&mut app, "Spam\x1b[31m, go away");
    snap("reason_prompt", &app, 80, 24);
}

#[test]
fn empty_queue() {
    let mut app = App::new("http://127.0.0.1:8449", NOW, false);
    let effects = app.start();
    answer(&mut app, &effects, vec![], None);
    snap("empty", &app, 80, 24);
}

#[test]
fn before_the_first_answer() {
    let mut app = App::new("http://127.0.0.1:8449", NOW, false);
    app.start();
    snap("loading", &app, 80, 24);
}

#[test]
fn daemon_down_banner() {
    let mut app = loaded(80, 24);
    app.update(Msg::StreamDown(unreachable()));
    app.update(Msg::Tick { now_ms: NOW + 12_000 });
    snap("daemon_down", &app, 80, 24);
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = loaded(80, 24);
    app.update(Msg::StreamDown(unreachable()));
    let setups: [&[Msg]; 6] = [
        &[],
        &[key('?')],
        &[key('/'), key('x')],
        &[key('d')],
        &[key('d'), code(KeyCode::Enter)],
        &[code(KeyCode::Enter)],
    ];
    for setup in setups {
        for msg in setup {
            app.update(msg.clone());
        }
        for (w, h) in [(1, 1), (10, 3), (20, 5), (0, 0), (2, 40), (200, 2)] {
            app.update(Msg::Resize { width: w, height: h });
            render(&app, w.max(1), h.max(1));
            app.update(key('j'));
            render(&app, w.max(1), h.max(1));
        }
        app.update(code(KeyCode::Esc));
        app.update(code(KeyCode::Esc));
    }
    let app = loaded(20, 5);
    snap("tiny_20x5", &app, 20, 5);
}

#[test]
fn monochrome_uses_no_colour() {
    let mut app = loaded(80, 24);
    app.update(Msg::StreamDown(unreachable()));
    app.update(key(' '));
    let terminal = render(&app, 80, 24);
    for cell in terminal.backend().buffer().content() {
        assert!(cell.fg == Color::Reset && cell.bg == Color::Reset, "{cell:?}");
    }
    app.color = true;
    let terminal = render(&app, 80, 24);
    assert!(terminal.backend().buffer().content().iter().any(|c| c.bg != Color::Reset));
}

#[test]
fn no_raw_control_characters_reach_the_screen() {
    let mut app = loaded(80, 24);
    app.update(key('j'));
    with_detail(&mut app, vec![]);
    app.update(key('e'));
    for (w, h) in [(80, 24), (120, 40)] {
        app.update(Msg::Resize { width: w, height: h });
        let terminal = render(&app, w, h);
        for cell in terminal.backend().buffer().content() {
            assert!(!cell.symbol().chars().any(|c| c.is_control() || c == '\u{202e}'), "{cell:?}");
        }
    }
    let _ = KnockList { knocks: vec![], next: None };
}
