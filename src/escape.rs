//! One escaping rule for every logged value that comes from outside the plugin.
//!
//! A token claim (`oid`), a remote name, a server's error message or an environment
//! variable's name may hold a line break or a terminal control sequence; printed as it is,
//! it forges a log line (`\n… INFO uploaded`) or rewrites what the log shows. [`shown`]
//! escapes every control character (C0, DEL, C1), the Unicode line and paragraph
//! separators and the bidirectional overrides, as `\n`, `\u{1b}`, …, and keeps every other
//! character (so names in any script read as they are). A leaf: every layer may use it.

use std::borrow::Cow;

/// Characters that move the cursor, end a line or reorder text when printed.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` safe to print on one log line: control characters escaped (`\n`, `\r`, `\t`,
/// `\u{1b}`), a backslash doubled only when something was escaped (so an escape cannot be
/// faked), anything else as it is. Borrows when nothing needs escaping.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) || c == '\\' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert!(matches!(shown("build-42/é 文字.txt"), Cow::Borrowed(_)));
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown("x\r\n2026-01-01T00:00:00Z  INFO uploaded"), "x\\r\\n2026-01-01T00:00:00Z  INFO uploaded");
        assert_eq!(shown("\u{1b}[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(shown("tab\there"), "tab\\there");
        assert_eq!(shown("\u{85}\u{2028}\u{202e}"), "\\u{85}\\u{2028}\\u{202e}");
        // A backslash is doubled once anything is escaped, so `\\n` cannot pose as an escape.
        assert_eq!(shown("a\\nb"), "a\\nb");
        assert_eq!(shown("a\\n\nb"), "a\\\\n\\nb");
        for s in ["\u{0}", "\u{7f}", "\u{9b}", "x\u{2029}y"] {
            assert!(!shown(s).chars().any(needs_escape), "{s:?}");
        }
    }
}
