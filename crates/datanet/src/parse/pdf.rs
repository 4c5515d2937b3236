//! Text PDFs via `lopdf`: each page's text layer is split into paragraphs at blank lines (a page
//! end always ends a paragraph), and the lines of a paragraph are joined with spaces since PDF
//! line breaks are layout. PDF readers can panic on hostile input, so extraction runs under
//! `catch_unwind` and a panic becomes an error. Decompressed page content is bounded.

use super::paragraphs;
use crate::{
    error::IngestError,
    limits::Limits,
    row::{Location, Record, Row},
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Parses a `.pdf` file.
pub(super) fn parse(name: &str, bytes: &[u8], limits: &Limits) -> Result<Vec<Record>, IngestError> {
    let err = |message: String| IngestError::Pdf {
        file: name.to_string(),
        message,
    };
    let max = usize::try_from(limits.max_expanded_bytes).unwrap_or(usize::MAX);
    let pages = catch_unwind(AssertUnwindSafe(|| extract_pages(bytes, max)))
        .map_err(|_| {
            err(
                "the PDF reader failed on malformed content; re-export the PDF and try again"
                    .into(),
            )
        })?
        .map_err(err)?;
    let mut out = Vec::new();
    for (page, text) in pages {
        for (_, p) in paragraphs(&text) {
            let joined = p.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            out.push(Record {
                at: Location::Page(page),
                row: Row::text(joined),
            });
        }
    }
    Ok(out)
}

fn extract_pages(bytes: &[u8], max: usize) -> Result<Vec<(u32, String)>, String> {
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| e.to_string())?;
    if doc.is_encrypted() {
        return Err("the PDF is encrypted; remove the password and try again".into());
    }
    let mut out = Vec::new();
    for page in doc.get_pages().into_keys() {
        let text = doc
            .extract_text_with_limit(&[page], max)
            .map_err(|e| format!("page {page}: {e}"))?;
        out.push((page, text));
    }
    Ok(out)
}
