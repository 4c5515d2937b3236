//! Text normalisation applied to every row before hashing, so that trivially different copies
//! (CRLF vs LF, composed vs decomposed accents, extra spaces) hash the same:
//! Unicode NFC; CRLF and lone CR → LF; runs of spaces/tabs → one space; trailing spaces on a
//! line dropped; 3+ newlines → 2 (one blank line); the whole text trimmed.

use crate::row::Row;
use unicode_normalization::UnicodeNormalization;

/// Normalises one string.
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut newlines = 0usize;
    let mut chars = s.nfc().peekable();
    while let Some(c) = chars.next() {
        let c = if c == '\r' {
            if chars.peek() == Some(&'\n') {
                continue;
            }
            '\n'
        } else {
            c
        };
        match c {
            ' ' | '\t' => pending_space = true,
            '\n' => {
                pending_space = false;
                newlines += 1;
            }
            _ => {
                if !out.is_empty() {
                    if newlines > 0 {
                        out.push_str(if newlines >= 2 { "\n\n" } else { "\n" });
                        if pending_space {
                            out.push(' ');
                        }
                    } else if pending_space {
                        out.push(' ');
                    }
                }
                newlines = 0;
                pending_space = false;
                out.push(c);
            }
        }
    }
    out
}

/// Normalises every field of a row.
pub fn normalize_row(row: &Row) -> Row {
    match row {
        Row::Text { text } => Row::text(normalize_text(text)),
        Row::PromptResponse { prompt, response } => {
            Row::prompt_response(normalize_text(prompt), normalize_text(response))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_whitespace_newlines_and_unicode() {
        assert_eq!(
            normalize_text("  a \t b  \r\nc\r\n\r\n\r\n\r\nd  "),
            "a b\nc\n\nd"
        );
        assert_eq!(normalize_text("x\ry"), "x\ny");
        assert_eq!(normalize_text("e\u{301}"), "\u{e9}");
        assert_eq!(normalize_text("list:\n  - item"), "list:\n - item");
        assert_eq!(normalize_text(" \n\t "), "");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for s in ["a  b\n\n\n c ", "\r\n\u{301}x", "p\n \n q"] {
            let once = normalize_text(s);
            assert_eq!(normalize_text(&once), once);
        }
    }
}
