//! Deciding: approve right away, or deny/ban through the reason prompt and the confirmation; on
//! the marked knocks when there are any (always confirmed). Results go to the status line.

use knockd_shared::{BulkItem, Decision};

use super::{App, Effect, FetchError, Mode};
use crate::tui::sanitize::clean;

/// A decision to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Approve,
    Deny,
    Ban,
}

impl Verb {
    /// `approve`, `deny`, `ban`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Ban => "ban",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Deny => "denied",
            Self::Ban => "banned",
        }
    }

    fn ing(self) -> &'static str {
        match self {
            Self::Approve => "approving",
            Self::Deny => "denying",
            Self::Ban => "banning",
        }
    }
}

/// The knocks a decision is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets {
    pub ids: Vec<i64>,
    /// `knock 12 (@u:x in Room)` or `3 marked knocks`, escaped.
    pub label: String,
    /// `@u:x in Room` for the first few loaded ones, escaped.
    pub lines: Vec<String>,
}

/// The reason prompt's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub verb: Verb,
    pub targets: Targets,
    pub text: String,
}

/// A decision waiting for confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub verb: Verb,
    pub targets: Targets,
    pub reason: Option<String>,
}

/// Target lines shown in popups.
const LINES: usize = 4;

impl App {
    fn who(&self, id: i64) -> Option<String> {
        let k = self.knock_by_id(id)?;
        let room = k.room_name.clone().unwrap_or_else(|| k.room_id.clone());
        Some(format!("{} in {}", clean(&k.user_id), clean(&room)))
    }

    /// The marked knocks, else the selected one.
    fn targets(&self) -> Option<Targets> {
        if self.marked.is_empty() {
            let id = self.selected_knock()?.id;
            let who = self.who(id).unwrap_or_default();
            return Some(Targets {
                ids: vec![id],
                label: format!("knock {id} ({who})"),
                lines: vec![who],
            });
        }
        let ids: Vec<i64> = self.marked.iter().copied().collect();
        let mut lines: Vec<String> = ids
            .iter()
            .take(LINES)
            .map(|id| self.who(*id).unwrap_or(format!("knock {id}")))
            .collect();
        if ids.len() > LINES {
            lines.push(format!("… and {} more", ids.len() - LINES));
        }
        let label = format!("{} marked knock{}", ids.len(), if ids.len() == 1 { "" } else { "s" });
        Some(Targets { ids, label, lines })
    }

    pub(super) fn decide(&mut self, verb: Verb) -> Vec<Effect> {
        let Some(targets) = self.targets() else {
            self.error("no knock selected");
            return Vec::new();
        };
        let bulk = !self.marked.is_empty();
        match verb {
            Verb::Approve if !bulk => self.go(Pending { verb, targets, reason: None }),
            Verb::Approve => {
                self.mode = Mode::Confirm(Pending { verb, targets, reason: None });
                Vec::new()
            }
            Verb::Deny | Verb::Ban => {
                self.mode = Mode::Reason(Prompt { verb, targets, text: String::new() });
                Vec::new()
            }
        }
    }

    pub(super) fn reason_done(&mut self) -> Vec<Effect> {
        if let Mode::Reason(p) = std::mem::replace(&mut self.mode, Mode::Normal) {
            let text = p.text.trim();
            let reason = (!text.is_empty()).then(|| text.to_owned());
            self.mode = Mode::Confirm(Pending { verb: p.verb, targets: p.targets, reason });
        }
        Vec::new()
    }

    pub(super) fn confirm(&mut self) -> Vec<Effect> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Confirm(pending) => self.go(pending),
            other => {
                self.mode = other;
                Vec::new()
            }
        }
    }

    fn go(&mut self, p: Pending) -> Vec<Effect> {
        self.mode = Mode::Normal;
        self.info(format!("{} {}…", p.verb.ing(), p.targets.label));
        vec![Effect::Decide { verb: p.verb, ids: p.targets.ids, reason: p.reason }]
    }

    pub(super) fn on_decided(
        &mut self,
        verb: Verb,
        result: Result<Vec<BulkItem>, FetchError>,
    ) -> Vec<Effect> {
        let items = match result {
            Ok(items) => items,
            Err(e) => {
                self.error(format!("cannot {}: {}", verb.name(), e.message));
                if e.unreachable {
                    self.down(e.message);
                }
                return Vec::new();
            }
        };
        let total = items.len();
        let mut done: Vec<&Decision> = Vec::new();
        let mut failed = Vec::new();
        for item in &items {
            match (&item.decision, &item.error) {
                (Some(d), _) => done.push(d),
                (None, Some(e)) => failed.push(format!(
                    "knock {}: {} ({})",
                    item.id,
                    clean(&e.error),
                    clean(&e.errcode)
                )),
                (None, None) => failed.push(format!("knock {}: no decision", item.id)),
            }
        }
        for d in &done {
            self.marked.remove(&d.knock_id);
            if verb == Verb::Approve {
                self.decided_here.insert(d.knock_id);
            }
        }
        match (done.as_slice(), failed.first()) {
            ([d], None) => {
                self.info(format!("{} knock {}{}", verb.past(), d.knock_id, delivery(d)))
            }
            (_, None) => self.info(format!("{} {} knocks", verb.past(), done.len())),
            ([], Some(first)) if total == 1 => self.error(first.clone()),
            (_, Some(first)) => self.error(format!(
                "{} {} of {total}; {} failed, e.g. {first}",
                verb.past(),
                done.len(),
                failed.len()
            )),
        }
        let mut effects = Vec::new();
        if let Some(open) = self.detail.as_ref().map(|d| d.id)
            && items.iter().any(|i| i.id == open)
        {
            effects.push(Effect::FetchDetail(open));
        }
        effects.extend(self.changed());
        effects
    }
}

/// What became of a decision's event, for the status line.
fn delivery(d: &Decision) -> String {
    match (d.delivery.as_str(), &d.delivery_error) {
        ("pending", _) => ": invite on its way (delivery pending)".into(),
        ("delivered", _) => ": invite delivered".into(),
        ("failed", Some(e)) => format!(": the invite failed: {}", clean(e)),
        ("queued", _) => ": sent to the room's servers".into(),
        (other, _) => format!(" (delivery {})", clean(other)),
    }
}
