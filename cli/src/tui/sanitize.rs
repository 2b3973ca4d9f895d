//! Untrusted text (reasons, display names, user IDs, room state, remote errors) made safe for the
//! screen: control and invisible formatting characters are escaped exactly like the scriptable
//! commands do (`\n`, `\u{1b}`, …), so no raw ESC or newline reaches the terminal, and stacks of
//! combining marks cannot smear over neighbouring cells. Escaping is lazy, so a huge reason costs
//! only the columns shown.

use unicode_width::UnicodeWidthChar;

/// Combining marks (zero-width characters) kept on one base character; more are escaped.
const MAX_ZERO_WIDTH: usize = 2;

/// The characters `text` is shown as.
pub fn escaped(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut zero_run = 0;
    text.chars().flat_map(move |c| {
        let mut out = Piece::default();
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_invisible(c) => out.hex(c),
            c if c.width() == Some(0) => {
                zero_run += 1;
                if zero_run > MAX_ZERO_WIDTH {
                    out.hex(c)
                } else {
                    out.push(c)
                }
                return out;
            }
            c => out.push(c),
        }
        zero_run = 0;
        out
    })
}

/// `text` escaped.
pub fn clean(text: &str) -> String {
    escaped(text).collect()
}

/// Untrusted `text` escaped and cut to `width` columns; a cut ends with `…`.
pub fn fit(text: &str, width: usize) -> String {
    cut_chars(escaped(text), width)
}

/// Already escaped `text` cut to `width` columns, like [`fit`] (without escaping it twice).
pub fn cut(text: &str, width: usize) -> String {
    cut_chars(text.chars(), width)
}

fn cut_chars(chars: impl Iterator<Item = char>, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    let mut chars = chars.peekable();
    while let Some(c) = chars.next() {
        let w = c.width().unwrap_or(0);
        // Keep a column for the ellipsis unless this is the last character and it fits.
        let last = chars.peek().is_none();
        if used + w > width || (!last && used + w == width && w > 0) {
            if width > 0 {
                while used + 1 > width {
                    let Some(gone) = out.pop() else { break };
                    used -= gone.width().unwrap_or(0);
                }
                out.push('…');
            }
            return out;
        }
        used += w;
        out.push(c);
    }
    out
}

/// The end of already escaped `text` that fits in `width` columns (where a cursor types).
pub fn tail(text: &str, width: usize) -> &str {
    let (mut used, mut start) = (0, text.len());
    for (i, c) in text.char_indices().rev() {
        used += c.width().unwrap_or(0);
        if used > width {
            break;
        }
        start = i;
    }
    &text[start..]
}

/// Display columns of already-clean text.
pub fn width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
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

/// Up to a few characters, without allocating for the common case of one.
#[derive(Default)]
struct Piece {
    buf: [char; 12],
    len: usize,
    at: usize,
}

impl Piece {
    fn push(&mut self, c: char) {
        if self.len < self.buf.len() {
            self.buf[self.len] = c;
            self.len += 1;
        }
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    fn hex(&mut self, c: char) {
        self.push_str(&format!("\\u{{{:x}}}", c as u32));
    }
}

impl Iterator for Piece {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = (self.at < self.len).then(|| self.buf[self.at]);
        self.at += 1;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::escape;

    #[test]
    fn escapes_like_the_scriptable_commands() {
        for s in ["a\nb\tc", "\x1b[31mred\x1b[0m", "x\u{202e}y", "back\\slash", "\u{85}nel", "é 👋"]
        {
            assert_eq!(clean(s), escape(s), "{s:?}");
        }
        assert!(!clean("\x1b]52;c;aGk=\x07").contains('\x1b'));
    }

    #[test]
    fn combining_floods_are_escaped() {
        let zalgo = format!("a{}", "\u{301}".repeat(5));
        assert_eq!(clean(&zalgo), "a\u{301}\u{301}\\u{301}\\u{301}\\u{301}");
    }

    #[test]
    fn fit_cuts_by_columns() {
        assert_eq!(fit("hello", 5), "hello");
        assert_eq!(fit("hello world", 5), "hell…");
        assert_eq!(fit("日本語です", 5), "日本…");
        assert_eq!(fit("a\nb", 3), "a\\…");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(fit("abc", 1), "…");
        assert!(width(&fit(&"x".repeat(100_000), 30)) <= 30);
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(cut("a\\b", 10), "a\\b");
        assert_eq!(fit("a\\b", 10), "a\\\\b");
    }
}
