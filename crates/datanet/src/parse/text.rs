//! Plain text and markdown: rows are paragraphs separated by blank lines; markdown stays as text.

use super::{paragraphs, utf8};
use crate::{
    error::IngestError,
    row::{Location, Record, Row},
};

/// Parses a `.txt` or `.md` file.
pub(super) fn parse(name: &str, bytes: &[u8]) -> Result<Vec<Record>, IngestError> {
    let text = utf8(name, bytes)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(paragraphs(text)
        .into_iter()
        .map(|(line, p)| Record {
            at: Location::Line(line),
            row: Row::text(p),
        })
        .collect())
}
