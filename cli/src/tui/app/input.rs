//! Keys: what a key means in the current mode, and the actions they map to (the key table is in
//! `keys`). Text inputs (filter line, reason prompt) take the keys the table does not bind.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{App, Effect, Mode, Query, Verb};
use crate::tui::keys::{self, Action, Context};

impl App {
    /// Maps a key to an action for the current mode and applies it; text keys edit inputs.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return vec![Effect::Quit];
        }
        let (contexts, text): (&[Context], bool) = match &self.mode {
            Mode::Normal => (&[Context::Queue, Context::Decide, Context::General], false),
            Mode::Help => (&[Context::Help], false),
            Mode::Filter => (&[Context::FilterLine, Context::Input], true),
            Mode::Reason(_) => (&[Context::Reason, Context::Input], true),
            Mode::Confirm(_) => (&[Context::Confirm], false),
        };
        let action = match keys::lookup(contexts, &key) {
            // Template keys are digits like any other once the reason has text.
            Some(Action::Template) if !self.input_empty() => None,
            other => other,
        };
        match (action, key.code) {
            (Some(Action::Template), KeyCode::Char(c)) => {
                self.template(c.to_digit(10).unwrap_or(0) as usize);
                Vec::new()
            }
            (Some(action), _) => self.apply(action),
            (None, KeyCode::Char(c)) if text && !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.type_char(c);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Applies an action (what a key means in the current mode).
    pub fn apply(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Down => self.move_by(1),
            Action::Up => self.move_by(-1),
            Action::PageDown => self.move_by(self.list_rows() as isize),
            Action::PageUp => self.move_by(-(self.list_rows() as isize)),
            Action::Top => self.move_to(0),
            Action::Bottom => self.bottom(),
            Action::ToggleDetail => self.toggle_detail(),
            Action::ExpandReason if self.detail_open => {
                self.expanded = !self.expanded;
                Vec::new()
            }
            Action::ExpandReason => {
                self.expanded = true;
                self.toggle_detail()
            }
            Action::ScrollDetailDown | Action::ScrollDetailUp => {
                if let Some(d) = &mut self.detail {
                    d.scroll = match action {
                        Action::ScrollDetailDown => d.scroll.saturating_add(1).min(500),
                        _ => d.scroll.saturating_sub(1),
                    };
                }
                Vec::new()
            }
            Action::Mark => self.toggle_mark(),
            Action::Approve => self.decide(Verb::Approve),
            Action::Deny => self.decide(Verb::Deny),
            Action::Ban => self.decide(Verb::Ban),
            Action::Filter => {
                self.filter_input = self.query.expr();
                self.mode = Mode::Filter;
                Vec::new()
            }
            Action::CycleStatus => self.cycle_status(),
            Action::CycleRoom => self.cycle_room(),
            Action::Refresh => {
                let mut effects = vec![Effect::FetchRooms];
                effects.extend(self.detail.as_ref().map(|d| Effect::FetchDetail(d.id)));
                effects.extend(self.changed());
                self.info(super::REFRESHING);
                effects
            }
            Action::Help => {
                self.mode = Mode::Help;
                Vec::new()
            }
            Action::Back => self.back(),
            Action::Quit => vec![Effect::Quit],
            Action::Submit => self.submit(),
            Action::Cancel => self.cancel(),
            Action::Confirm => self.confirm(),
            Action::DeleteChar => {
                self.input_mut().map(String::pop);
                Vec::new()
            }
            Action::ClearInput => {
                self.input_mut().map(String::clear);
                Vec::new()
            }
            Action::Template => {
                self.template(1);
                Vec::new()
            }
        }
    }

    /// Esc: close the detail pane, clear the filter, unmark, and only then quit.
    fn back(&mut self) -> Vec<Effect> {
        if self.query != Query::default() {
            self.filter_input.clear();
            return self.set_query(Query::default());
        }
        if self.detail_open {
            self.detail_open = false;
            self.detail = None;
            return Vec::new();
        }
        if !self.marked.is_empty() {
            self.marked.clear();
            return Vec::new();
        }
        vec![Effect::Quit]
    }

    fn cancel(&mut self) -> Vec<Effect> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Filter => {
                self.filter_input.clear();
                self.set_query(Query::default())
            }
            Mode::Reason(_) | Mode::Confirm(_) => {
                self.info("cancelled");
                Vec::new()
            }
            Mode::Normal | Mode::Help => Vec::new(),
        }
    }

    fn submit(&mut self) -> Vec<Effect> {
        match &self.mode {
            Mode::Filter => self.apply_filter(),
            Mode::Reason(_) => self.reason_done(),
            _ => Vec::new(),
        }
    }

    fn input_mut(&mut self) -> Option<&mut String> {
        match &mut self.mode {
            Mode::Filter => Some(&mut self.filter_input),
            Mode::Reason(p) => Some(&mut p.text),
            _ => None,
        }
    }

    fn input_empty(&self) -> bool {
        match &self.mode {
            Mode::Reason(p) => p.text.is_empty(),
            Mode::Filter => self.filter_input.is_empty(),
            _ => true,
        }
    }

    /// Fills the reason prompt with template `n` (1-based).
    fn template(&mut self, n: usize) {
        let template = n.checked_sub(1).and_then(|i| keys::TEMPLATES.get(i));
        if let (Mode::Reason(p), Some(t)) = (&mut self.mode, template) {
            p.text = (*t).to_owned();
        }
    }

    fn type_char(&mut self, c: char) {
        if let Some(input) = self.input_mut()
            && input.chars().count() < 1000
        {
            input.push(c);
        }
    }
}
