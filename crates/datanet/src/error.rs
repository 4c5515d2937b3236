//! Errors of the ingestion pipeline. Each names the file and, where it applies, the line, record,
//! page or paragraph, and says what the contributor can change to make the file acceptable.

use crate::row::Schema;

/// Result alias for this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Why a file could not be read or parsed. A file with any of these yields no rows.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file is larger than [`crate::Limits::max_file_bytes`].
    #[error(
        "{file}: {size} bytes is over the {max}-byte limit per file; split it into smaller files"
    )]
    TooLarge {
        /// File name.
        file: String,
        /// Size in bytes (at least `max + 1` when the size is unknown beforehand).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file's compressed content expands past its budget or its upload's (a decompression
    /// bomb, or more than this node reads).
    #[error("{file}: its compressed content expands past the {limit}-byte budget per {scope}; split the upload or save the document without the bulk (a decompression bomb is refused)")]
    Expands {
        /// File name.
        file: String,
        /// The budget crossed, in bytes.
        limit: u64,
        /// "file" or "upload".
        scope: &'static str,
    },
    /// The file has no bytes or no rows.
    #[error("{file}: the file has no rows (it is empty or holds only whitespace{hint})")]
    Empty {
        /// File name.
        file: String,
        /// A format-specific hint, starting with "; " or empty.
        hint: &'static str,
    },
    /// The extension is not one this crate reads.
    #[error("{file}: unsupported file type {ext:?}; use .txt, .md, .jsonl, .csv, .pdf or .docx")]
    UnknownFormat {
        /// File name.
        file: String,
        /// The extension found (empty when none).
        ext: String,
    },
    /// A text format holds bytes that are not UTF-8.
    #[error("{file} line {line}: invalid UTF-8 at byte {byte}; save the file as UTF-8")]
    InvalidUtf8 {
        /// File name.
        file: String,
        /// 1-based line of the first invalid byte.
        line: u64,
        /// 0-based byte offset of the first invalid byte.
        byte: u64,
    },
    /// Reading the file failed.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// File name.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSONL line is not a JSON object.
    #[error("{file} line {line}: not a JSON object: {message}; each line must be one object such as {example}")]
    Json {
        /// File name.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What the JSON parser said.
        message: String,
        /// An example of a valid line for the schema.
        example: &'static str,
    },
    /// A record lacks a field (JSONL) or a column (CSV) the schema requires, or it is not a string.
    #[error("{file} {at}: missing field {field:?} (this datanet's schema is {schema})")]
    MissingField {
        /// File name.
        file: String,
        /// Where: "line 7" or "header".
        at: String,
        /// The field or column name.
        field: &'static str,
        /// The datanet's schema.
        schema: Schema,
    },
    /// A free-text format (plain text, markdown, PDF, DOCX) was given to a prompt/response datanet.
    #[error("{file}: a {format} file holds free text, but this datanet's schema is {schema}; upload .jsonl or .csv with \"prompt\" and \"response\"")]
    SchemaMismatch {
        /// File name.
        file: String,
        /// The file's format, in words.
        format: &'static str,
        /// The datanet's schema.
        schema: Schema,
    },
    /// A field is present but is not a string.
    #[error("{file} line {line}: field {field:?} must be a string")]
    NotAString {
        /// File name.
        file: String,
        /// 1-based line number.
        line: u64,
        /// The field name.
        field: &'static str,
    },
    /// A CSV record could not be read.
    #[error("{file} line {line}: malformed CSV: {message}")]
    Csv {
        /// File name.
        file: String,
        /// 1-based line number (0 when unknown).
        line: u64,
        /// What the CSV reader said.
        message: String,
    },
    /// A PDF could not be read.
    #[error("{file}: cannot read this PDF: {message}")]
    Pdf {
        /// File name.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// A DOCX could not be read.
    #[error("{file}: cannot read this DOCX: {message}")]
    Docx {
        /// File name.
        file: String,
        /// What went wrong.
        message: String,
    },
}
