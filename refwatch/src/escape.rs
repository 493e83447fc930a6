//! Untrusted text made safe to print: process names are whatever a process chose, and a
//! trace's strings (names, stack frames, the kernel release) whatever its author wrote.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1: what a terminal acts on) written as a
/// `\xNN` or `\u{NNNN}` escape, and the backslash doubled; anything else is kept as it is.
/// JSON outputs need none of this: serde escapes control characters itself.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_escaped() {
        assert_eq!(printable("daxload"), "daxload");
        assert!(matches!(printable("fio/1"), Cow::Borrowed(_)));
        assert_eq!(
            printable("\x1b]0;PWN\x07\x1b[2J"),
            "\\x1b]0;PWN\\x07\\x1b[2J"
        );
        assert_eq!(printable("a\nb\r\t\x7f"), "a\\x0ab\\x0d\\x09\\x7f");
        assert_eq!(printable("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(printable("C:\\x1b"), "C:\\\\x1b");
        assert_eq!(printable("é�"), "é�");
    }
}
