//! Parsers: a [`SourceFile`] → the [`Record`]s it holds, picked by extension (case-insensitive):
//! `.txt`/`.md` paragraphs, `.jsonl` objects, `.csv` records, `.pdf` and `.docx` paragraphs.
//! Parsers never panic; every failure is an [`IngestError`] naming the file and the place.

mod csv_table;
mod docx;
mod jsonl;
mod pdf;
mod text;

use crate::{
    budget::{FileBudget, RequestBudget},
    error::IngestError,
    limits::Limits,
    row::Record,
    row::Schema,
    source::SourceFile,
};

/// The file formats this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.txt` and `.md`: paragraphs separated by blank lines.
    Text,
    /// `.jsonl`: one JSON object per line.
    Jsonl,
    /// `.csv`: a header row, then records.
    Csv,
    /// `.pdf`: text PDFs.
    Pdf,
    /// `.docx`: Word documents.
    Docx,
}

impl Format {
    /// The format in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Text => "plain text",
            Format::Jsonl => "JSON Lines",
            Format::Csv => "CSV",
            Format::Pdf => "PDF",
            Format::Docx => "DOCX",
        }
    }

    /// The format of a lower-cased extension.
    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext {
            "txt" | "md" | "markdown" => Format::Text,
            "jsonl" => Format::Jsonl,
            "csv" => Format::Csv,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            _ => return None,
        })
    }
}

/// Parses one file into records, as an upload of its own (see [`parse_file_in`]).
pub fn parse_file(
    file: &SourceFile,
    schema: Schema,
    limits: &Limits,
) -> Result<Vec<Record>, IngestError> {
    parse_file_in(file, schema, limits, &RequestBudget::for_limits(limits))
}

/// Parses one file of an upload into records. Refuses files over the size limit, empty files,
/// files with no rows and compressed files that expand past their budget or what is left of
/// the upload's `request` budget. Text and prompt/response come out as the schema says; text
/// formats (plain text, markdown, PDF, DOCX) only fit the text schema.
pub fn parse_file_in(
    file: &SourceFile,
    schema: Schema,
    limits: &Limits,
    request: &RequestBudget,
) -> Result<Vec<Record>, IngestError> {
    let name = &file.name;
    let ext = file.extension();
    let format = Format::from_extension(&ext).ok_or_else(|| IngestError::UnknownFormat {
        file: name.clone(),
        ext: ext.clone(),
    })?;
    if file.bytes.len() as u64 > limits.max_file_bytes {
        return Err(IngestError::TooLarge {
            file: name.clone(),
            size: file.bytes.len() as u64,
            max: limits.max_file_bytes,
        });
    }
    if file.bytes.is_empty() {
        return Err(IngestError::Empty {
            file: name.clone(),
            hint: "",
        });
    }
    let free_text = matches!(format, Format::Text | Format::Pdf | Format::Docx);
    if free_text && schema != Schema::Text {
        return Err(IngestError::SchemaMismatch {
            file: name.clone(),
            format: format.describe(),
            schema,
        });
    }
    let records = match format {
        Format::Text => text::parse(name, &file.bytes)?,
        Format::Jsonl => jsonl::parse(name, &file.bytes, schema)?,
        Format::Csv => csv_table::parse(name, &file.bytes, schema)?,
        Format::Pdf => pdf::parse(
            &file.bytes,
            limits,
            &mut FileBudget::new(name, limits, request),
        )?,
        Format::Docx => docx::parse(
            name,
            &file.bytes,
            &mut FileBudget::new(name, limits, request),
        )?,
    };
    if records.is_empty() {
        let hint = match format {
            Format::Pdf => "; a scanned PDF has no text layer and needs OCR first",
            _ => "",
        };
        return Err(IngestError::Empty {
            file: name.clone(),
            hint,
        });
    }
    Ok(records)
}

/// Decodes UTF-8, naming the line of the first invalid byte.
pub(crate) fn utf8<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, IngestError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let byte = e.valid_up_to();
        let line = 1 + bytes[..byte].iter().filter(|&&b| b == b'\n').count() as u64;
        IngestError::InvalidUtf8 {
            file: name.to_string(),
            line,
            byte: byte as u64,
        }
    })
}

/// Splits text into paragraphs (runs of non-blank lines) with the 1-based line each starts on.
pub(crate) fn paragraphs(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, String)> = None;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        match &mut current {
            Some((_, p)) => {
                p.push('\n');
                p.push_str(line);
            }
            None => current = Some((i as u64 + 1, line.to_string())),
        }
    }
    out.extend(current);
    out
}
