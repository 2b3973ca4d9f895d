//! Output: data on stdout (text or JSON), messages on stderr, colour only where it belongs.

mod table;
mod time;

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

pub use self::{
    table::{Cell, Table},
    time::{age, age_at, now_ms, utc},
};
use crate::{
    cli::ColorMode,
    exit::{CliError, Exit},
};

/// A text style, written as an ANSI SGR code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Self::Bold => "1",
            Self::Dim => "2",
            Self::Red => "31",
            Self::Green => "32",
            Self::Yellow => "33",
        }
    }

    /// The style a knock status is shown in.
    pub fn for_status(status: &str) -> Self {
        match status {
            "pending" => Self::Yellow,
            "approved" | "joined" | "delivery_pending" => Self::Green,
            "denied" | "banned" | "approve_failed" => Self::Red,
            _ => Self::Dim,
        }
    }
}

/// Where output goes and how it looks.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`: machine-readable data on stdout.
    pub json: bool,
    color: bool,
    err_color: bool,
}

/// Whether to colour a stream: `always`, `never`, or `auto` (a terminal and no `NO_COLOR`).
fn use_color(mode: ColorMode, is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    match mode {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => is_terminal && !no_color,
    }
}

impl Output {
    /// Output settings from the global flags.
    pub fn new(json: bool, mode: ColorMode) -> Self {
        Self {
            json,
            color: use_color(mode, io::stdout().is_terminal()),
            err_color: use_color(mode, io::stderr().is_terminal()),
        }
    }

    /// Whether stdout is coloured (`--color`, `NO_COLOR` and whether it is a terminal).
    pub fn colored(&self) -> bool {
        self.color
    }

    /// `text` in `style` when stdout is coloured.
    pub fn paint(&self, style: Style, text: &str) -> String {
        paint(self.color, style, text)
    }

    /// Writes text to stdout as it is.
    pub fn write(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(write_error)
    }

    /// Writes one line to stdout.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        self.write(&format!("{text}\n"))
    }

    /// Writes a value as pretty JSON to stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::failure(format!("cannot encode JSON: {e}")))?;
        self.line(&text)
    }

    /// Writes a value as one line of compact JSON to stdout, flushed.
    pub fn json_line<T: Serialize>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::failure(format!("cannot encode JSON: {e}")))?;
        self.line(&text)
    }

    /// A table as text, fitted to the terminal and coloured like stdout.
    pub fn render(&self, table: &Table) -> String {
        table.render(self.color, terminal_width())
    }

    /// Writes a table to stdout.
    pub fn table(&self, table: &Table) -> Result<(), CliError> {
        self.write(&self.render(table))
    }

    /// A message on stderr: `knockctl: <message>`.
    pub fn note(&self, message: &str) {
        eprintln!("knockctl: {message}");
    }

    /// An error on stderr, in red on a colour terminal.
    pub fn error(&self, message: &str) {
        eprintln!("knockctl: {}", paint(self.err_color, Style::Red, message));
    }
}

/// `text` wrapped in the style's escape codes when `on`.
pub fn paint(on: bool, style: Style, text: &str) -> String {
    if on { format!("\x1b[{}m{text}\x1b[0m", style.code()) } else { text.to_owned() }
}

/// A closed stdout (`knockctl list | head`) ends the command quietly; other write errors fail.
fn write_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::reported(Exit::Ok)
    } else {
        CliError::failure(format!("cannot write output: {e}"))
    }
}

/// The width to fit tables in: `COLUMNS` if set, else the terminal's own width when stdout is
/// one, else 120 (a pipe or a file).
fn terminal_width() -> usize {
    use std::io::IsTerminal;
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    let terminal = || {
        std::io::stdout()
            .is_terminal()
            .then(ratatui::crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(w, _)| usize::from(w))
    };
    columns.or_else(terminal).filter(|w| *w >= 40).unwrap_or(120)
}

/// Untrusted text made safe for a terminal line: control and invisible formatting characters
/// become `\n`, `\t`, `\r` or `\u{…}`, and backslashes are doubled so the result is unambiguous.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Zero-width and bidirectional formatting characters, which can disguise text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// At most `width` characters: longer text is cut and ends with `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if display_width(text) <= width {
        return text.to_owned();
    }
    // Columns on a terminal, not characters: a CJK character or an emoji takes two.
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > width.saturating_sub(1) {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// The columns `text` takes on a terminal.
pub fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_controls_and_bidi() {
        assert_eq!(escape("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escape("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("héllo 👋"), "héllo 👋");
    }

    #[test]
    fn truncate_marks_cuts() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 5), "hell…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        // Wide characters take two columns: the cut counts columns.
        assert_eq!(truncate("日本語テキスト", 5), "日本…");
        assert_eq!(display_width(&truncate("日本語テキスト", 6)), 5);
        assert_eq!(truncate("👋👋👋", 6), "👋👋👋");
    }

    #[test]
    fn paint_only_when_on() {
        assert_eq!(paint(false, Style::Red, "x"), "x");
        assert_eq!(paint(true, Style::Red, "x"), "\x1b[31mx\x1b[0m");
    }
}
