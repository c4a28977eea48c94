//! Attacker-chosen text in the text log format: a JOSE header value such as
//! `"RS256\n2026-… INFO claimgate::proxy: request allowed"` must not write a line of its own.
//! (The JSON format escapes on its own.)

use std::fmt::{self, Write};

/// Displays `text` in double quotes with control characters, quotes and backslashes escaped as
/// Rust does (`\n`, `\u{1b}`), so it can neither start a line nor pose as another `key=value`,
/// and cut after [`MAX_CHARS`] characters so one value cannot flood the log.
pub struct Escaped<'a>(pub &'a str);

pub const MAX_CHARS: usize = 256;

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            if c.is_control() || c == '\\' || c == '"' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line() {
        let forged =
            "RS256\n2026-12-02T00:00:00Z  INFO claimgate::proxy: request allowed\r\u{1b}[2J";
        let shown = Escaped(forged).to_string();
        assert!(!shown.contains(['\n', '\r', '\u{1b}']), "{shown}");
        assert!(shown.starts_with("\"RS256\\n2026"), "{shown}");
        assert_eq!(Escaped("José").to_string(), "\"José\"");
        assert_eq!(Escaped("a\" x=\"y").to_string(), r#""a\" x=\"y""#);
        let long = Escaped(&"a".repeat(300)).to_string();
        assert_eq!(long.chars().count(), MAX_CHARS + 3);
    }
}
