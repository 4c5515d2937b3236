//! DOCX: the ZIP's `word/document.xml` is read with `quick-xml`; each `<w:p>` paragraph with text
//! is a row. Runs' `<w:t>` text is concatenated, `<w:tab/>` becomes a tab and `<w:br/>` a line
//! break. The decompressed part is charged to the file's and the upload's expansion budgets
//! ([`crate::budget`]) as it is read, so a ZIP bomb is an error, not an allocation.

use crate::{
    budget::FileBudget,
    error::IngestError,
    row::{Location, Record, Row},
};
use quick_xml::events::Event;
use std::io::{Cursor, Read};

/// Parses a `.docx` file.
pub(super) fn parse(
    name: &str,
    bytes: &[u8],
    budget: &mut FileBudget<'_>,
) -> Result<Vec<Record>, IngestError> {
    let err = |message: String| IngestError::Docx {
        file: name.to_string(),
        message,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| err(format!("not a valid DOCX (ZIP) archive: {e}")))?;
    let part = archive
        .by_name("word/document.xml")
        .map_err(|e| err(format!("word/document.xml: {e}")))?;
    // Read one byte past what the budgets allow, then charge what was read.
    let allowed = budget.remaining();
    let mut xml = Vec::new();
    part.take(allowed.saturating_add(1))
        .read_to_end(&mut xml)
        .map_err(|e| err(format!("word/document.xml: {e}")))?;
    budget.charge(xml.len() as u64)?;
    let xml = std::str::from_utf8(&xml)
        .map_err(|e| err(format!("word/document.xml is not UTF-8: {e}")))?;
    paragraphs(xml).map_err(err)
}

fn paragraphs(xml: &str) -> Result<Vec<Record>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_text = false;
    let mut index = 0u32;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "word/document.xml at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                "p" => current.clear(),
                "t" => in_text = true,
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => current.push('\t'),
                "br" | "cr" => current.push('\n'),
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => {
                    index += 1;
                    if !current.trim().is_empty() {
                        out.push(Record {
                            at: Location::Paragraph(index),
                            row: Row::text(std::mem::take(&mut current)),
                        });
                    }
                    current.clear();
                }
                _ => {}
            },
            Event::Text(t) if in_text => current.push_str(&t.xml10_content()),
            Event::CData(t) if in_text => current.push_str(&t),
            Event::GeneralRef(r) if in_text => {
                let name = r.into_inner();
                let c = entity(&name).ok_or_else(|| format!("unknown entity &{name};"))?;
                current.push(c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}
