//! CSV: a header row is required; the `text` column (text schema) or the `prompt` and `response`
//! columns (prompt/response schema) are read, matched case-insensitively; other columns are ignored.

use super::utf8;
use crate::{
    error::IngestError,
    row::{Location, Record, Row, Schema},
};

/// Parses a `.csv` file.
pub(super) fn parse(name: &str, bytes: &[u8], schema: Schema) -> Result<Vec<Record>, IngestError> {
    let text = utf8(name, bytes)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let csv_err = |e: csv::Error| IngestError::Csv {
        file: name.to_string(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        message: e.to_string(),
    };
    let headers = reader.headers().map_err(csv_err)?.clone();
    let columns: Vec<usize> = schema
        .fields()
        .iter()
        .map(|&field| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(field))
                .ok_or_else(|| IngestError::MissingField {
                    file: name.to_string(),
                    at: format!(
                        "header (columns found: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                    field,
                    schema,
                })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let cell = |i: usize| record.get(columns[i]).unwrap_or_default().to_string();
        let row = match schema {
            Schema::Text => Row::text(cell(0)),
            Schema::PromptResponse => Row::prompt_response(cell(0), cell(1)),
        };
        out.push(Record {
            at: Location::Line(line),
            row,
        });
    }
    Ok(out)
}
