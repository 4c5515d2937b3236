//! Text normalisation applied to every row before hashing, so that trivially different copies
//! (CRLF vs LF, composed vs decomposed accents, extra spaces) hash the same:
//! Unicode NFC; CRLF and lone CR → LF; runs of spaces/tabs → one space; trailing spaces on a
//! line dropped; 3+ newlines → 2 (one blank line); the whole text trimmed.
//!
//! Fast paths (same output, less work): ASCII text and text the NFC quick check passes are
//! already NFC, so the NFC pass is skipped; and an owned string that is already normalised (the
//! usual case for clean contributions) is returned as is, without copying.

use crate::row::Row;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Normalises one string.
pub fn normalize_text(s: &str) -> String {
    if is_nfc(s) {
        collapse_whitespace(s)
    } else {
        collapse_whitespace(&s.nfc().collect::<String>())
    }
}

/// Normalises one owned string, returning it unchanged (no copy) when it is already normal.
pub fn normalize_owned(s: String) -> String {
    if is_nfc(&s) && whitespace_is_normal(&s) {
        s
    } else {
        normalize_text(&s)
    }
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

/// Normalises every field of an owned row, reusing the fields that are already normal.
pub fn normalize_row_owned(row: Row) -> Row {
    match row {
        Row::Text { text } => Row::text(normalize_owned(text)),
        Row::PromptResponse { prompt, response } => {
            Row::prompt_response(normalize_owned(prompt), normalize_owned(response))
        }
    }
}

/// Whether `s` is certainly NFC already (ASCII always is; otherwise the NFC quick check says so).
fn is_nfc(s: &str) -> bool {
    s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes
}

/// Whether [`collapse_whitespace`] would return `s` unchanged: no CR or tab, no space next to a
/// space or before a newline, no run of 3+ newlines, and nothing to trim at either end.
fn whitespace_is_normal(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return true;
    };
    if matches!(first, b' ' | b'\n') || matches!(last, b' ' | b'\n') {
        return false;
    }
    // Branch-free passes (the compiler vectorises them) over single bytes, pairs and triples.
    let singles = b
        .iter()
        .fold(false, |bad, &c| bad | (c == b'\r') | (c == b'\t'));
    let pairs = b.iter().zip(&b[1..]).fold(false, |bad, (&p, &c)| {
        bad | ((p == b' ') & ((c == b' ') | (c == b'\n')))
    });
    let triples = b
        .iter()
        .zip(&b[1..])
        .zip(b.get(2..).unwrap_or_default())
        .fold(false, |bad, ((&x, &y), &z)| {
            bad | ((x == b'\n') & (y == b'\n') & (z == b'\n'))
        });
    !(singles | pairs | triples)
}

/// The whitespace rules of the module doc on NFC text. Every byte the rules look at is ASCII, so
/// the text is scanned as bytes and copied a run of ordinary characters at a time.
fn collapse_whitespace(s: &str) -> String {
    let bytes = s.as_bytes();
    let special = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut newlines = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => pending_space = true,
            // CRLF counts as one newline: skip the CR, the LF comes next.
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {}
            b'\r' | b'\n' => {
                pending_space = false;
                newlines += 1;
            }
            _ => {
                if !out.is_empty() {
                    if newlines > 0 {
                        out.push_str(if newlines >= 2 { "\n\n" } else { "\n" });
                    }
                    if pending_space {
                        out.push(' ');
                    }
                }
                newlines = 0;
                pending_space = false;
                // `i` and `end` sit on ASCII bytes (or the end), so both are char boundaries.
                let end = bytes[i..]
                    .iter()
                    .position(special)
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&s[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The original character-at-a-time definition, kept as the reference for the fast paths.
    fn reference(s: &str) -> String {
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
            assert_eq!(normalize_owned(once.clone()), once);
        }
    }

    proptest! {
        #[test]
        fn fast_paths_match_the_reference(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("a"), Just("Zz"), Just(" "), Just("\t"), Just("\n"), Just("\r"),
                    Just("\r\n"), Just("é"), Just("e\u{301}"), Just("\u{301}"), Just("日本"),
                    Just("\u{a0}"),
                ],
                0..24,
            )
        ) {
            let s: String = parts.concat();
            let expected = reference(&s);
            prop_assert_eq!(&normalize_text(&s), &expected);
            prop_assert_eq!(&normalize_owned(s.clone()), &expected);
        }
    }
}
