//! Styles, in colour or (with NO_COLOR or `--color never`) in monochrome: then only bold,
//! reverse, dim and underline are used, never a colour.

use ratatui::style::{Color, Modifier, Style};

/// The TUI's styles.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    fn pick(&self, colored: Style, mono: Style) -> Style {
        if self.color { colored } else { mono }
    }

    pub fn bar(&self) -> Style {
        self.pick(Style::new().fg(Color::White).bg(Color::Blue), Style::new().reversed())
    }

    pub fn banner(&self) -> Style {
        self.pick(
            Style::new().fg(Color::White).bg(Color::Red).bold(),
            Style::new().reversed().bold(),
        )
    }

    pub fn header(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }

    pub fn selected(&self) -> Style {
        self.pick(Style::new().bg(Color::DarkGray).bold(), Style::new().reversed())
    }

    pub fn marked(&self) -> Style {
        self.pick(Style::new().fg(Color::Yellow).bold(), Style::new().bold())
    }

    pub fn dim(&self) -> Style {
        self.pick(Style::new().fg(Color::DarkGray), Style::new().dim())
    }

    pub fn label(&self) -> Style {
        self.pick(Style::new().fg(Color::Cyan), Style::new().dim())
    }

    pub fn title(&self) -> Style {
        Style::new().bold()
    }

    pub fn key(&self) -> Style {
        self.pick(Style::new().fg(Color::Cyan).bold(), Style::new().bold())
    }

    pub fn error(&self) -> Style {
        self.pick(Style::new().fg(Color::Red).bold(), Style::new().bold())
    }

    pub fn good(&self) -> Style {
        self.pick(Style::new().fg(Color::Green), Style::new())
    }

    pub fn popup(&self) -> Style {
        self.pick(Style::new().fg(Color::White).bg(Color::Black), Style::new())
    }

    /// The style of a knock status or a delivery state.
    pub fn status(&self, status: &str) -> Style {
        match status {
            "pending" | "delivery_pending" | "queued" => {
                self.pick(Style::new().fg(Color::Yellow), Style::new())
            }
            "approved" | "joined" | "delivered" => self.good(),
            "denied" | "banned" | "approve_failed" | "failed" | "dropped" => self.error(),
            _ => self.dim(),
        }
    }
}
