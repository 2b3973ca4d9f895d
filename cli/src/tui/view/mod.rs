//! Rendering: a pure function of the state into a frame.

mod bars;
mod detail;
mod help;
mod popups;
mod queue;
mod theme;

use ratatui::{
    Frame,
    layout::Position,
    text::{Line, Span},
    widgets::Paragraph,
};

pub use self::{bars::group, theme::Theme};
use super::{
    app::{App, Mode},
    keys::{self, Context},
    layout,
    sanitize::{clean, tail, width},
};

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let theme = Theme::new(app.color);
    let areas = layout::areas(area, app);
    bars::title(frame, areas.title, app, &theme);
    if let Some(banner) = areas.banner {
        bars::banner(frame, banner, app, &theme);
    }
    if let Some(list) = areas.list {
        queue::render(frame, list, app, &theme);
    }
    if let Some(detail) = areas.detail {
        detail::render(frame, detail, app, &theme);
    }
    if let Some(status) = areas.status {
        bars::status(frame, status, app, &theme);
    }
    if let Some(input) = areas.input {
        filter_line(frame, input, app, &theme);
    }
    match &app.mode {
        Mode::Help => help::render(frame, area, &theme),
        Mode::Reason(p) => popups::prompt(frame, area, p, &theme),
        Mode::Confirm(p) => popups::confirm(frame, area, p, &theme),
        Mode::Normal | Mode::Filter => {}
    }
}

/// `/ room:Lobby spam` while the filter line has the keys.
fn filter_line(frame: &mut Frame, area: ratatui::layout::Rect, app: &App, theme: &Theme) {
    let hint: Vec<String> =
        keys::help(Context::FilterLine).map(|(k, t)| format!("{k}: {t}")).collect();
    let hint = format!(" {} ", hint.join("  "));
    let text = clean(&app.filter_input);
    let room = usize::from(area.width).saturating_sub(width(&hint) + 2);
    // Show the end of the text, where the cursor is.
    let shown = tail(&text, room).to_owned();
    let line = Line::from(vec![Span::styled("/", theme.key()), Span::raw(shown.clone())]);
    frame.render_widget(Paragraph::new(line), area);
    if usize::from(area.width) > width(&hint) + 2 + width(&shown) {
        let hint_area = ratatui::layout::Rect {
            x: area.right().saturating_sub(width(&hint) as u16),
            width: width(&hint) as u16,
            ..area
        };
        frame.render_widget(Paragraph::new(Span::styled(hint, theme.dim())), hint_area);
    }
    let x = area.x + 1 + width(&shown) as u16;
    if x < area.right() {
        frame.set_cursor_position(Position { x, y: area.y });
    }
}
