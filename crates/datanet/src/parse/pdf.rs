//! Text PDFs via `lopdf`: each page's text layer is split into paragraphs at blank lines (a page
//! end always ends a paragraph), and the lines of a paragraph are joined with spaces since PDF
//! line breaks are layout. PDF readers can panic on hostile input, so extraction runs under
//! `catch_unwind` and a panic becomes an error.
//!
//! Decompression is charged to the file's and the upload's expansion budgets
//! ([`crate::budget`]), so a small file cannot inflate without bound: object streams as the
//! document loads (each inflated once, in place), and for every page the content streams and
//! font `ToUnicode` maps it reads (inflated once, in place, but charged on every page that uses
//! them, since each use yields text again), then the text it yields. A page's content is parsed
//! whole, so its token count is bounded too ([`Limits::max_pdf_page_tokens`]).
//!
//! Left to lopdf's own per-stream bound: cross-reference streams (read before any object) and
//! the object streams of an encrypted document (lopdf decrypts them without calling back).

use super::paragraphs;
use crate::{
    budget::FileBudget,
    error::IngestError,
    limits::Limits,
    row::{Location, Record, Row},
};
use lopdf::{DecompressError, Document, LoadOptions, Object, ObjectId};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why extraction stopped.
enum Failure {
    /// A budget was crossed.
    Budget(IngestError),
    /// The PDF could not be read; the message says why.
    Unreadable(String),
}

impl From<IngestError> for Failure {
    fn from(e: IngestError) -> Self {
        Failure::Budget(e)
    }
}

/// Parses a `.pdf` file.
pub(super) fn parse(
    bytes: &[u8],
    limits: &Limits,
    budget: &mut FileBudget<'_>,
) -> Result<Vec<Record>, IngestError> {
    let file = budget.file().to_string();
    let err = |message: String| IngestError::Pdf {
        file: file.clone(),
        message,
    };
    let pages = catch_unwind(AssertUnwindSafe(|| extract_pages(bytes, limits, budget)));
    LOAD_BUDGET.set(None);
    let pages = match pages {
        Ok(Ok(pages)) => pages,
        Ok(Err(Failure::Budget(e))) => return Err(e),
        Ok(Err(Failure::Unreadable(m))) => return Err(err(m)),
        Err(_) => {
            return Err(err(
                "the PDF reader failed on malformed content; re-export the PDF and try again"
                    .into(),
            ))
        }
    };
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

thread_local! {
    /// While a document loads on this thread: how many bytes its object streams may still
    /// inflate to, and whether one went past that. lopdf's load filter is a plain function, so
    /// this is how it reaches the budget.
    static LOAD_BUDGET: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
}

/// lopdf's load filter: inflates each object stream in place against [`LOAD_BUDGET`] (so lopdf
/// does not inflate it again), and drops one that would pass it. Other objects pass unchanged.
fn charge_object_streams(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    if let Object::Stream(stream) = object {
        if stream.dict.has_type(b"ObjStm") && stream.filters().is_ok() {
            let (left, over) = LOAD_BUDGET.get().unwrap_or((0, false));
            if over {
                return None;
            }
            match stream
                .decompressed_content_with_limit(usize::try_from(left).unwrap_or(usize::MAX))
            {
                Ok(plain) => {
                    let left = left.saturating_sub(plain.len() as u64);
                    LOAD_BUDGET.set(Some((left, false)));
                    stream.set_plain_content(plain);
                }
                Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                    LOAD_BUDGET.set(Some((0, true)));
                    return None;
                }
                // lopdf reports or skips a stream it cannot decode, as it would unfiltered.
                Err(_) => {}
            }
        }
    }
    Some((id, object.clone()))
}

fn is_over_limit(e: &lopdf::Error) -> bool {
    matches!(
        e,
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })
    )
}

/// Inflates stream `id` in place (a stream that does not decode keeps its raw bytes, as lopdf
/// reads it) and returns its plain length; a stream that would pass what is left of the budget
/// is refused. Not a stream: 0.
fn inflate_in_place(
    doc: &mut Document,
    id: ObjectId,
    budget: &FileBudget<'_>,
) -> Result<u64, Failure> {
    let Ok(stream) = doc.get_object_mut(id).and_then(Object::as_stream_mut) else {
        return Ok(0);
    };
    if stream.filters().is_ok() {
        match stream.decompressed_content_with_limit(budget.remaining_usize()) {
            Ok(plain) => stream.set_plain_content(plain),
            Err(e) if is_over_limit(&e) => return Err(budget.exceeded().into()),
            Err(_) => {
                let raw = std::mem::take(&mut stream.content);
                stream.set_plain_content(raw);
            }
        }
    }
    Ok(stream.content.len() as u64)
}

/// About how many tokens lopdf's content parser makes of `content`: runs of regular
/// characters, and each delimiter.
fn token_count(content: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut in_token = false;
    for &b in content {
        match b {
            b' ' | b'\n' | b'\r' | b'\t' | b'\x0c' | 0 => in_token = false,
            b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%' => {
                n += 1;
                in_token = false;
            }
            _ if !in_token => {
                n += 1;
                in_token = true;
            }
            _ => {}
        }
    }
    n
}

fn extract_pages(
    bytes: &[u8],
    limits: &Limits,
    budget: &mut FileBudget<'_>,
) -> Result<Vec<(u32, String)>, Failure> {
    let start = budget.remaining();
    LOAD_BUDGET.set(Some((start, false)));
    let options = LoadOptions {
        max_decompressed_size: Some(budget.remaining_usize()),
        filter: Some(charge_object_streams),
        ..LoadOptions::default()
    };
    let loaded = Document::load_mem_with_options(bytes, options);
    let (left, over) = LOAD_BUDGET.get().unwrap_or((start, false));
    LOAD_BUDGET.set(None);
    if over {
        return Err(budget.exceeded().into());
    }
    let mut doc = match loaded {
        Ok(doc) => doc,
        Err(e) if is_over_limit(&e) => return Err(budget.exceeded().into()),
        Err(e) => return Err(Failure::Unreadable(e.to_string())),
    };
    budget.charge(start.saturating_sub(left))?;
    if doc.is_encrypted() {
        return Err(Failure::Unreadable(
            "the PDF is encrypted; remove the password and try again".into(),
        ));
    }
    let mut out = Vec::new();
    for (number, page_id) in doc.get_pages() {
        let unreadable = |e: lopdf::Error| Failure::Unreadable(format!("page {number}: {e}"));
        let mut tokens = 0u64;
        let mut content_bytes = 0u64;
        for id in doc.get_page_contents(page_id) {
            let len = inflate_in_place(&mut doc, id, budget)?;
            budget.charge(len)?;
            content_bytes += len;
            if let Ok(s) = doc.get_object(id).and_then(Object::as_stream) {
                tokens += token_count(&s.content);
            }
        }
        if tokens > limits.max_pdf_page_tokens {
            return Err(Failure::Unreadable(format!(
                "page {number} holds about {tokens} content tokens, over the {} this node reads from one page",
                limits.max_pdf_page_tokens
            )));
        }
        let maps: Vec<ObjectId> = doc
            .get_page_fonts(page_id)
            .map_err(unreadable)?
            .values()
            .filter_map(|font| font.get(b"ToUnicode").and_then(Object::as_reference).ok())
            .collect();
        for id in maps {
            let len = inflate_in_place(&mut doc, id, budget)?;
            budget.charge(len)?;
        }
        // Everything this page reads is plain now; the limit only bounds lopdf's copies.
        let limit = usize::try_from(limits.max_expanded_bytes)
            .unwrap_or(usize::MAX)
            .max(
                usize::try_from(content_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1024),
            );
        let text = doc.extract_text_with_limit(&[number], limit).map_err(|e| {
            if is_over_limit(&e) {
                Failure::Budget(budget.exceeded())
            } else {
                unreadable(e)
            }
        })?;
        budget.charge(text.len() as u64)?;
        out.push((number, text));
    }
    Ok(out)
}
