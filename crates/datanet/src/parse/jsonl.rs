//! JSON Lines: one object per line, `{"text": …}` or `{"prompt": …, "response": …}` as the
//! datanet's schema requires. Blank lines are skipped; other fields are ignored.

use super::utf8;
use crate::{
    error::IngestError,
    row::{Location, Record, Row, Schema},
};
use serde_json::{Map, Value};

/// Parses a `.jsonl` file.
pub(super) fn parse(name: &str, bytes: &[u8], schema: Schema) -> Result<Vec<Record>, IngestError> {
    let text = utf8(name, bytes)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i as u64 + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let json_err = |message: String| IngestError::Json {
            file: name.to_string(),
            line: n,
            message,
            example: schema.example(),
        };
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => o,
            Ok(other) => return Err(json_err(format!("found {}", kind(&other)))),
            Err(e) => return Err(json_err(e.to_string())),
        };
        let row = match schema {
            Schema::Text => Row::text(field(name, n, &obj, "text", schema)?),
            Schema::PromptResponse => Row::prompt_response(
                field(name, n, &obj, "prompt", schema)?,
                field(name, n, &obj, "response", schema)?,
            ),
        };
        out.push(Record {
            at: Location::Line(n),
            row,
        });
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field(
    name: &str,
    line: u64,
    obj: &Map<String, Value>,
    field: &'static str,
    schema: Schema,
) -> Result<String, IngestError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(IngestError::NotAString {
            file: name.to_string(),
            line,
            field,
        }),
        None => Err(IngestError::MissingField {
            file: name.to_string(),
            at: format!("line {line}"),
            field,
            schema,
        }),
    }
}
