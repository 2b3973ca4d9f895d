//! The key table: every binding of every context, with its help text. Key dispatch and the help
//! overlay are both generated from [`BINDINGS`], so they cannot disagree.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Down,
    Up,
    Top,
    Bottom,
    PageDown,
    PageUp,
    ToggleDetail,
    ExpandReason,
    ScrollDetailDown,
    ScrollDetailUp,
    Mark,
    Approve,
    Deny,
    Ban,
    Filter,
    CycleStatus,
    CycleRoom,
    Refresh,
    Help,
    Back,
    Quit,
    /// Filter line or reason prompt: accept the text.
    Submit,
    /// Filter line, reason prompt, confirmation or help: close (the filter line also clears).
    Cancel,
    /// Filter line or reason prompt: delete the last character.
    DeleteChar,
    /// Filter line or reason prompt: delete everything.
    ClearInput,
    /// Reason prompt: use the reason template of the digit typed, while the reason is empty.
    Template,
    /// Confirmation: go ahead.
    Confirm,
}

/// Where a binding applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// The queue and the detail pane: moving around.
    Queue,
    /// The queue: deciding.
    Decide,
    /// The queue: everything else.
    General,
    /// Typing in the filter line (other keys are text).
    FilterLine,
    /// Typing a deny/ban reason (other keys are text).
    Reason,
    /// Editing either text input.
    Input,
    /// The confirmation popup.
    Confirm,
    /// The help overlay.
    Help,
}

impl Context {
    /// The heading of this context in the help overlay.
    pub fn title(self) -> &'static str {
        match self {
            Self::Queue => "Queue",
            Self::Decide => "Decide",
            Self::General => "General",
            Self::FilterLine => "Filter line",
            Self::Reason => "Reason prompt",
            Self::Input => "Text input",
            Self::Confirm => "Confirmation",
            Self::Help => "Help",
        }
    }
}

/// A key with modifiers (Shift is ignored for characters: `G` is `G`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn k(c: char) -> Key {
    Key { code: KeyCode::Char(c), mods: KeyModifiers::NONE }
}
const fn code(code: KeyCode) -> Key {
    Key { code, mods: KeyModifiers::NONE }
}
const fn ctrl(c: char) -> Key {
    Key { code: KeyCode::Char(c), mods: KeyModifiers::CONTROL }
}

impl Key {
    /// Whether a key event is this key.
    pub fn matches(&self, event: &KeyEvent) -> bool {
        let mods = match event.code {
            KeyCode::Char(_) => event.modifiers - KeyModifiers::SHIFT,
            _ => event.modifiers,
        };
        event.code == self.code && mods == self.mods
    }

    /// How the help overlay names the key.
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_owned(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Down => "↓".to_owned(),
            KeyCode::Up => "↑".to_owned(),
            KeyCode::Home => "Home".to_owned(),
            KeyCode::End => "End".to_owned(),
            KeyCode::PageDown => "PgDn".to_owned(),
            KeyCode::PageUp => "PgUp".to_owned(),
            KeyCode::Enter => "Enter".to_owned(),
            KeyCode::Esc => "Esc".to_owned(),
            KeyCode::Backspace => "Bksp".to_owned(),
            other => format!("{other:?}"),
        };
        if self.mods.contains(KeyModifiers::CONTROL) { format!("Ctrl-{base}") } else { base }
    }
}

/// One line of the key table.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub context: Context,
    pub keys: &'static [Key],
    pub action: Action,
    pub help: &'static str,
}

const fn b(context: Context, keys: &'static [Key], action: Action, help: &'static str) -> Binding {
    Binding { context, keys, action, help }
}

use Action as A;
use Context as C;

/// Every binding, in help order.
pub const BINDINGS: &[Binding] = &[
    b(C::Queue, &[k('j'), code(KeyCode::Down)], A::Down, "next knock"),
    b(C::Queue, &[k('k'), code(KeyCode::Up)], A::Up, "previous knock"),
    b(C::Queue, &[k('g'), code(KeyCode::Home)], A::Top, "first (oldest) knock"),
    b(C::Queue, &[k('G'), code(KeyCode::End)], A::Bottom, "last knock (loads all)"),
    b(C::Queue, &[code(KeyCode::PageDown)], A::PageDown, "page down"),
    b(C::Queue, &[code(KeyCode::PageUp)], A::PageUp, "page up"),
    b(C::Queue, &[code(KeyCode::Enter)], A::ToggleDetail, "show/hide details"),
    b(C::Queue, &[k('e')], A::ExpandReason, "full/short reason"),
    b(C::Queue, &[k('J')], A::ScrollDetailDown, "scroll details down"),
    b(C::Queue, &[k('K')], A::ScrollDetailUp, "scroll details up"),
    b(C::Decide, &[k(' ')], A::Mark, "mark/unmark (a d b: all)"),
    b(C::Decide, &[k('a')], A::Approve, "approve"),
    b(C::Decide, &[k('d')], A::Deny, "deny (kick), with reason"),
    b(C::Decide, &[k('b')], A::Ban, "deny and ban, with reason"),
    b(C::General, &[k('/')], A::Filter, "filter: room:R status:S text"),
    b(C::General, &[k('s')], A::CycleStatus, "next status filter"),
    b(C::General, &[k('f')], A::CycleRoom, "next room filter"),
    b(C::General, &[k('r')], A::Refresh, "refresh"),
    b(C::General, &[k('?')], A::Help, "this help"),
    b(C::General, &[code(KeyCode::Esc)], A::Back, "close/clear/unmark, quit"),
    b(C::General, &[k('q'), ctrl('c')], A::Quit, "quit"),
    b(C::FilterLine, &[code(KeyCode::Enter)], A::Submit, "apply"),
    b(C::FilterLine, &[code(KeyCode::Esc)], A::Cancel, "clear the filter"),
    b(C::Reason, &[k('1'), k('2'), k('3')], A::Template, "a template (empty reason)"),
    b(C::Reason, &[code(KeyCode::Enter)], A::Submit, "continue"),
    b(C::Reason, &[code(KeyCode::Esc)], A::Cancel, "cancel"),
    b(C::Input, &[code(KeyCode::Backspace)], A::DeleteChar, "delete a character"),
    b(C::Input, &[ctrl('u')], A::ClearInput, "delete all"),
    b(C::Confirm, &[k('y'), code(KeyCode::Enter)], A::Confirm, "yes, do it"),
    b(C::Confirm, &[k('n'), code(KeyCode::Esc)], A::Cancel, "no"),
    b(C::Help, &[code(KeyCode::Esc), k('?'), k('q')], A::Cancel, "close this help"),
];

/// Reason templates the prompt offers, by number.
pub const TEMPLATES: [&str; 3] =
    ["Spam", "Not a member of our community", "Please contact an admin first"];

/// The action a key has in one of `contexts`, if any.
pub fn lookup(contexts: &[Context], event: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .filter(|b| contexts.contains(&b.context))
        .find(|b| b.keys.iter().any(|k| k.matches(event)))
        .map(|b| b.action)
}

/// Help lines of a context: (keys, text).
pub fn help(context: Context) -> impl Iterator<Item = (String, &'static str)> {
    BINDINGS.iter().filter(move |b| b.context == context).map(|b| {
        let keys: Vec<String> = b.keys.iter().map(Key::label).collect();
        (keys.join(" "), b.help)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn every_key_is_bound_once_per_context() {
        for a in BINDINGS {
            for b in BINDINGS {
                if std::ptr::eq(a, b) || a.context != b.context {
                    continue;
                }
                for key in a.keys {
                    assert!(!b.keys.contains(key), "{key:?} twice in {:?}", a.context);
                }
            }
        }
    }

    #[test]
    fn shift_is_ignored_for_characters_only() {
        let shifted_g = ev(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(lookup(&[Context::Queue], &shifted_g), Some(Action::Bottom));
        let ctrl_c = ev(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(&[Context::General], &ctrl_c), Some(Action::Quit));
        let plain_c = ev(KeyCode::Char('c'), KeyModifiers::NONE);
        assert_eq!(lookup(&[Context::General], &plain_c), None);
    }

    #[test]
    fn help_is_generated_from_the_table() {
        let lines: Vec<_> = help(Context::Queue).collect();
        assert_eq!(lines[0], ("j ↓".to_owned(), "next knock"));
        assert_eq!(help(Context::Confirm).count(), 2);
        assert_eq!(help(Context::Reason).next().unwrap().0, "1 2 3");
    }
}
