//! Rows and schemas: what a datanet holds. A row serialises to one canonical JSON object
//! (`{"text":…}` or `{"prompt":…,"response":…}`), which is both its export line and its hash input.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The shape of a datanet's rows (the chain's `dataType`: 0 text, 1 prompt/response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// Free text rows: `{"text": ...}`.
    Text,
    /// Instruction pairs: `{"prompt": ..., "response": ...}`.
    PromptResponse,
}

impl Schema {
    /// The chain's `dataType` for this schema.
    pub fn data_type(self) -> u8 {
        match self {
            Schema::Text => 0,
            Schema::PromptResponse => 1,
        }
    }

    /// The schema of a chain `dataType`, if known.
    pub fn from_data_type(t: u8) -> Option<Self> {
        match t {
            0 => Some(Schema::Text),
            1 => Some(Schema::PromptResponse),
            _ => None,
        }
    }

    /// The fields a record must carry.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Schema::Text => &["text"],
            Schema::PromptResponse => &["prompt", "response"],
        }
    }

    /// A valid JSONL line for this schema, for error messages.
    pub fn example(self) -> &'static str {
        match self {
            Schema::Text => r#"{"text": "..."}"#,
            Schema::PromptResponse => r#"{"prompt": "...", "response": "..."}"#,
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schema::Text => "text",
            Schema::PromptResponse => "prompt/response",
        })
    }
}

/// One datanet row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Row {
    /// A prompt and its response.
    PromptResponse {
        /// The prompt.
        prompt: String,
        /// The response.
        response: String,
    },
    /// A text row.
    Text {
        /// The text.
        text: String,
    },
}

impl Row {
    /// A text row.
    pub fn text(text: impl Into<String>) -> Self {
        Row::Text { text: text.into() }
    }

    /// A prompt/response row.
    pub fn prompt_response(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Row::PromptResponse {
            prompt: prompt.into(),
            response: response.into(),
        }
    }

    /// The schema this row belongs to.
    pub fn schema(&self) -> Schema {
        match self {
            Row::Text { .. } => Schema::Text,
            Row::PromptResponse { .. } => Schema::PromptResponse,
        }
    }

    /// The row's string fields, in canonical order.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Row::Text { text } => vec![text],
            Row::PromptResponse { prompt, response } => vec![prompt, response],
        }
    }

    /// Number of characters over all fields.
    pub fn char_count(&self) -> usize {
        self.fields().iter().map(|f| f.chars().count()).sum()
    }

    /// The canonical JSON object of this row (fields in schema order, no whitespace).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a row of strings always serialises")
    }
}

/// Where a record came from inside its file, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// 1-based line (text, markdown, JSONL, CSV).
    Line(u64),
    /// 1-based page (PDF).
    Page(u32),
    /// 1-based paragraph (DOCX).
    Paragraph(u32),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Page(n) => write!(f, "page {n}"),
            Location::Paragraph(n) => write!(f, "paragraph {n}"),
        }
    }
}

/// A parsed, not yet normalised row and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where in the file.
    pub at: Location,
    /// The row as parsed.
    pub row: Row,
}
