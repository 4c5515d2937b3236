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
    let names = row.schema().fields();
    for (name, value) in names.iter().zip(row.fields()) {
        if value.is_empty() {
            return Some(Problem::EmptyField {
                field: name.to_string(),
            });
        }
    }
    let chars = row.char_count();
    if chars < limits.min_row_chars {
        return Some(Problem::TooShort { chars });
    }
    if chars > limits.max_row_chars {
        return Some(Problem::TooLong { chars });
    }
    let mut texty = 0usize;
    for c in row.fields().iter().flat_map(|f| f.chars()) {
        if c == '\u{fffd}' {
            return Some(Problem::ReplacementChar);
        }
        if c.is_control() && c != '\n' {
            return Some(Problem::ControlChar { code: c as u32 });
        }
        if c.is_alphanumeric() || c.is_whitespace() {
            texty += 1;
        }
    }
    (texty * 2 < chars).then_some(Problem::MostlyNonText)
}

#[cfg(test)]
mod tests {
    use super::*;

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
