//! Key sequences in, state and effects out.

use ratatui::crossterm::event::KeyCode;

use super::fixtures::*;
use crate::tui::{
    Effect, Msg,
    app::{Mode, Verb},
};

fn decide_effect(effects: &[Effect]) -> Option<(Verb, Vec<i64>, Option<String>)> {
    effects.iter().find_map(|e| match e {
        Effect::Decide { verb, ids, reason } => Some((*verb, ids.clone(), reason.clone())),
        _ => None,
    })
}

#[test]
fn moves_with_j_k_arrows_g_and_capital_g() {
    let mut app = loaded(80, 24);
    assert_eq!(selected_id(&app), 3, "oldest first");
    app.update(key('j'));
    app.update(code(KeyCode::Down));
    assert_eq!(selected_id(&app), 12);
    app.update(key('k'));
    assert_eq!(selected_id(&app), 7);
    app.update(key('G'));
    assert_eq!(selected_id(&app), 100_234);
    app.update(key('j'));
    assert_eq!(selected_id(&app), 100_234, "stays on the last row");
    app.update(key('g'));
    assert_eq!(selected_id(&app), 3);
    app.update(code(KeyCode::Up));
    assert_eq!(selected_id(&app), 3);
}

#[test]
fn j_and_k_are_text_while_the_filter_line_has_focus() {
    let mut app = loaded(80, 24);
    app.update(key('/'));
    assert_eq!(app.mode, Mode::Filter);
    let effects = typed(&mut app, "jk q?");
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(app.filter_input, "jk q?");
    assert_eq!(selected_id(&app), 3, "j did not move");
    app.update(code(KeyCode::Backspace));
    assert_eq!(app.filter_input, "jk q");
}

#[test]
fn enter_applies_the_filter_and_esc_clears_it() {
    let mut app = loaded(80, 24);
    app.update(key('/'));
    typed(&mut app, "garden");
    // Free text only: filtered locally, no request.
    let effects = app.update(code(KeyCode::Enter));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.view_len(), 3);
    assert_eq!(selected_id(&app), 12);
    // A room filter asks knockd.
    app.update(key('/'));
    assert_eq!(app.filter_input, "garden", "the line starts with the current filter");
    app.update(Msg::Key(ratatui::crossterm::event::KeyEvent::new(
        KeyCode::Char('u'),
        ratatui::crossterm::event::KeyModifiers::CONTROL,
    )));
    typed(&mut app, "room:lobby");
    let effects = app.update(code(KeyCode::Enter));
    let Some(Effect::Fetch { query, start: 0, .. }) = effects.first() else {
        panic!("{effects:?}")
    };
    assert_eq!(query.room_id.as_deref(), Some(LOBBY));
    assert_eq!(query.status.as_deref(), Some("pending"));
    // Esc in the filter line clears the filter.
    app.update(key('/'));
    let effects = app.update(code(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.query, Default::default());
    assert!(matches!(effects.first(), Some(Effect::Fetch { .. })));
}

#[test]
fn a_bad_filter_stays_open_with_an_error() {
    let mut app = loaded(80, 24);
    app.update(key('/'));
    typed(&mut app, "status:bogus");
    assert!(app.update(code(KeyCode::Enter)).is_empty());
    assert_eq!(app.mode, Mode::Filter);
    assert!(app.status.as_ref().is_some_and(|s| s.error && s.text.contains("bogus")));
}

#[test]
fn approve_without_marks_decides_at_once() {
    let mut app = loaded(80, 24);
    let effects = app.update(key('a'));
    assert_eq!(decide_effect(&effects), Some((Verb::Approve, vec![3], None)));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn space_marks_and_a_approves_all_marked_after_confirming() {
    let mut app = loaded(80, 24);
    app.update(key(' '));
    assert_eq!(selected_id(&app), 7, "space moves on");
    app.update(key('j'));
    app.update(key(' '));
    assert_eq!(app.marked.iter().copied().collect::<Vec<_>>(), [3, 12]);
    let effects = app.update(key('a'));
    assert!(decide_effect(&effects).is_none(), "bulk asks first");
    let Mode::Confirm(pending) = &app.mode else { panic!("{:?}", app.mode) };
    assert_eq!(pending.targets.ids, [3, 12]);
    let effects = app.update(key('y'));
    assert_eq!(decide_effect(&effects), Some((Verb::Approve, vec![3, 12], None)));
    // Space again unmarks.
    app.update(key('k'));
    app.update(key(' '));
    assert_eq!(app.marked.iter().copied().collect::<Vec<_>>(), [3]);
}

#[test]
fn deny_asks_for_a_reason_with_templates_then_confirms() {
    let mut app = loaded(80, 24);
    app.update(key('j'));
    app.update(key('d'));
    assert!(matches!(app.mode, Mode::Reason(_)));
    app.update(key('2'));
    let Mode::Reason(prompt) = &app.mode else { panic!() };
    assert_eq!(prompt.text, "Not a member of our community");
    // Digits are text once there is text; j and q too.
    typed(&mut app, " 2jq");
    let Mode::Reason(prompt) = &app.mode else { panic!() };
    assert_eq!(prompt.text, "Not a member of our community 2jq");
    assert!(app.update(code(KeyCode::Enter)).is_empty());
    let Mode::Confirm(pending) = &app.mode else { panic!("{:?}", app.mode) };
    assert_eq!(pending.reason.as_deref(), Some("Not a member of our community 2jq"));
    let effects = app.update(code(KeyCode::Enter));
    let expected = Some("Not a member of our community 2jq".to_owned());
    assert_eq!(decide_effect(&effects), Some((Verb::Deny, vec![7], expected)));
}

#[test]
fn ban_can_be_cancelled_at_each_step() {
    let mut app = loaded(80, 24);
    app.update(key('b'));
    app.update(code(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
    app.update(key('b'));
    app.update(key('1'));
    app.update(code(KeyCode::Enter));
    let effects = app.update(key('n'));
    assert!(effects.is_empty());
    assert_eq!(app.mode, Mode::Normal);
    app.update(key('b'));
    app.update(code(KeyCode::Enter));
    let effects = app.update(key('y'));
    assert_eq!(
        decide_effect(&effects),
        Some((Verb::Ban, vec![3], None)),
        "an empty reason is none"
    );
}

#[test]
fn esc_closes_popups_then_clears_filter_detail_and_marks_before_quitting() {
    let mut app = loaded(80, 24);
    app.update(key(' '));
    app.update(code(KeyCode::Enter));
    assert!(app.detail_open);
    app.update(key('/'));
    typed(&mut app, "lobby");
    app.update(code(KeyCode::Enter));
    app.update(key('?'));
    assert_eq!(app.mode, Mode::Help);
    assert!(app.update(code(KeyCode::Esc)).is_empty());
    assert_eq!(app.mode, Mode::Normal, "help closed");
    assert!(app.update(code(KeyCode::Esc)).is_empty());
    assert_eq!(app.query, Default::default(), "filter cleared");
    app.update(code(KeyCode::Esc));
    assert!(!app.detail_open, "detail closed");
    app.update(code(KeyCode::Esc));
    assert!(app.marked.is_empty(), "marks cleared");
    assert_eq!(app.update(code(KeyCode::Esc)), vec![Effect::Quit]);
}

#[test]
fn q_closes_help_and_otherwise_quits() {
    let mut app = loaded(80, 24);
    app.update(key('?'));
    assert!(app.update(key('q')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.update(key('q')), vec![Effect::Quit]);
}

#[test]
fn the_detail_follows_the_selection_and_ignores_stale_answers() {
    let mut app = loaded(80, 24);
    let effects = app.update(code(KeyCode::Enter));
    assert_eq!(effects, vec![Effect::FetchDetail(3)]);
    let effects = app.update(key('j'));
    assert_eq!(effects, vec![Effect::FetchDetail(7)]);
    let k3 = app.knock_by_id(3).unwrap().clone();
    app.update(Msg::Detail { id: 3, result: Ok(Box::new(detail(&k3, vec![]))) });
    assert!(app.detail.as_ref().unwrap().data.is_none(), "an answer for another knock");
    let k7 = app.selected_knock().unwrap().clone();
    app.update(Msg::Detail { id: 7, result: Ok(Box::new(detail(&k7, vec![]))) });
    assert!(app.detail.as_ref().unwrap().data.is_some());
}
