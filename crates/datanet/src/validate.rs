//! Row checks before deduplication: schema conformance (no empty required field), length within
//! [`Limits`], and encoding sanity (no U+FFFD replacement characters, no control characters other
//! than newline, and mostly letters, digits and spaces). A failing row is dropped with its reason.

use crate::{limits::Limits, row::Row};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a row was dropped before deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Problem {
    /// A required field is empty after normalisation.
    EmptyField {
        /// The field.
        field: String,
    },
    /// Shorter than the minimum.
    TooShort {
        /// Characters.
        chars: usize,
    },
    /// Longer than the maximum.
    TooLong {
        /// Characters.
        chars: usize,
    },
    /// Contains U+FFFD, the mark of text that was decoded from the wrong encoding.
    ReplacementChar,
    /// Contains a control character (other than newline).
    ControlChar {
        /// The code point.
        code: u32,
    },
    /// Less than half of the characters are letters, digits or spaces.
    MostlyNonText,
}

/// The score component a problem counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// Schema conformance.
    Schema,
    /// Row length.
    Length,
    /// Encoding sanity.
    Encoding,
}

impl Problem {
    /// The check this problem fails.
    pub fn check(&self) -> Check {
        match self {
            Problem::EmptyField { .. } => Check::Schema,
            Problem::TooShort { .. } | Problem::TooLong { .. } => Check::Length,
            _ => Check::Encoding,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptyField { field } => write!(f, "field {field:?} is empty"),
            Problem::TooShort { chars } => write!(f, "only {chars} characters"),
            Problem::TooLong { chars } => write!(f, "{chars} characters"),
            Problem::ReplacementChar => {
                write!(f, "contains U+FFFD (text decoded from the wrong encoding)")
            }
            Problem::ControlChar { code } => write!(f, "contains control character U+{code:04X}"),
            Problem::MostlyNonText => write!(f, "mostly not letters, digits or spaces"),
        }
    }
}

/// Checks a normalised row; `None` when it passes.
pub fn check_row(row: &Row, limits: &Limits) -> Option<Problem> {
    let fields = row_fields(row);
    let names = row.schema().fields();
    for (name, value) in names.iter().zip(fields.iter().flatten()) {
        if value.is_empty() {
            return Some(Problem::EmptyField {
                field: name.to_string(),
            });
        }
    }
    let chars: usize = fields.iter().flatten().map(|f| f.chars().count()).sum();
    if chars < limits.min_row_chars {
        return Some(Problem::TooShort { chars });
    }
    if chars > limits.max_row_chars {
        return Some(Problem::TooLong { chars });
    }
    let mut texty = 0usize;
    for field in fields.iter().flatten() {
        match check_encoding(field) {
            Ok(n) => texty += n,
            Err(problem) => return Some(problem),
        }
    }
    (texty * 2 < chars).then_some(Problem::MostlyNonText)
}

/// The row's fields in canonical order, without allocating (a text row has one).
pub(crate) fn row_fields(row: &Row) -> [Option<&str>; 2] {
    match row {
        Row::Text { text } => [Some(text), None],
        Row::PromptResponse { prompt, response } => [Some(prompt), Some(response)],
    }
}

/// Counts a field's letters, digits and whitespace, or returns its encoding problem. Runs of
/// ASCII bytes are classified through a table ([`check_ascii`]); other characters go through
/// `char`'s Unicode tables.
fn check_encoding(field: &str) -> Result<usize, Problem> {
    if field.is_ascii() {
        return check_ascii(field.as_bytes());
    }
    let mut texty = 0usize;
    let mut rest = field;
    while !rest.is_empty() {
        let ascii = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        texty += check_ascii(&rest.as_bytes()[..ascii])?;
        rest = &rest[ascii..];
        let Some(c) = rest.chars().next() else { break };
        if c == '\u{fffd}' {
            return Err(Problem::ReplacementChar);
        }
        if c.is_control() {
            return Err(Problem::ControlChar { code: c as u32 });
        }
        texty += (c.is_alphanumeric() || c.is_whitespace()) as usize;
        rest = &rest[c.len_utf8()..];
    }
    Ok(texty)
}

/// Bit 0: an ASCII letter, digit, space or newline (the only ASCII whitespace left once the
/// controls are out). Bit 1: a control character other than newline.
const ASCII_CLASS: [u8; 128] = {
    let mut class = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b' ' || c == b'\n' {
            class[b] |= 1;
        }
        if c.is_ascii_control() && c != b'\n' {
            class[b] |= 2;
        }
        b += 1;
    }
    class
};

/// [`check_encoding`] of an ASCII run: a branch-free pass through [`ASCII_CLASS`], then a search
/// for the first control character only when there is one.
fn check_ascii(run: &[u8]) -> Result<usize, Problem> {
    let (texty, flags) = run.iter().fold((0usize, 0u8), |(texty, flags), &b| {
        let class = ASCII_CLASS[(b & 0x7f) as usize];
        (texty + (class & 1) as usize, flags | class)
    });
    if flags & 2 != 0 {
        let code = run
            .iter()
            .find(|&&b| ASCII_CLASS[(b & 0x7f) as usize] & 2 != 0)
            .expect("a control character was seen");
        return Err(Problem::ControlChar { code: *code as u32 });
    }
    Ok(texty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The original character-at-a-time encoding check, the reference for the ASCII fast path.
    fn reference_encoding(fields: &[&str]) -> Result<usize, Problem> {
        let mut texty = 0;
        for c in fields.iter().flat_map(|f| f.chars()) {
            if c == '\u{fffd}' {
                return Err(Problem::ReplacementChar);
            }
            if c.is_control() && c != '\n' {
                return Err(Problem::ControlChar { code: c as u32 });
            }
            if c.is_alphanumeric() || c.is_whitespace() {
                texty += 1;
            }
        }
        Ok(texty)
    }

    proptest! {
        #[test]
        fn encoding_check_matches_the_reference(
            a in "[a-c0 \n\t\r\u{b}\u{7f}.é\u{85}\u{fffd}\u{3000}{}]{0,12}",
            b in "[a-c0 \n\t\r\u{b}\u{7f}.é\u{85}\u{fffd}\u{3000}{}]{0,12}",
        ) {
            let ours = check_encoding(&a).and_then(|x| Ok(x + check_encoding(&b)?));
            prop_assert_eq!(ours, reference_encoding(&[&a, &b]));
        }
    }

    #[test]
    fn flags_each_problem() {
        let l = Limits {
            max_row_chars: 10,
            min_row_chars: 2,
            ..Limits::default()
        };
        assert_eq!(check_row(&Row::text("hello"), &l), None);
        assert!(matches!(
            check_row(&Row::prompt_response("q", ""), &l),
            Some(Problem::EmptyField { .. })
        ));
        assert_eq!(
            check_row(&Row::text("a"), &l),
            Some(Problem::TooShort { chars: 1 })
        );
        assert_eq!(
            check_row(&Row::text("abcdefghijk"), &l),
            Some(Problem::TooLong { chars: 11 })
        );
        assert_eq!(
            check_row(&Row::text("ab\u{fffd}"), &l),
            Some(Problem::ReplacementChar)
        );
        assert_eq!(
            check_row(&Row::text("a\u{7}b"), &l),
            Some(Problem::ControlChar { code: 7 })
        );
        assert_eq!(
            check_row(&Row::text("a{}[]<>"), &l),
            Some(Problem::MostlyNonText)
        );
    }
}
