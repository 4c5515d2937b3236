//! Reading data files into [`Record`]s: datanet exports (`{"prompt","response"}` / `{"text"}` lines
//! with `contribution_id`, `contributor`, `row_hash`), and LLaMA-Factory's alpaca and sharegpt
//! formats, as JSONL or as one JSON array. A line that cannot become an example is [`Rejected`] with
//! its reason; a file that cannot be read at all is an error.

use super::{Example, Record, Rejected};
use crate::config::{DatasetSpec, Format};
use crate::error::{Error, Result};
use openledger_model::chat::Message;
use serde_json::{Map, Value};

/// Largest data file read (a datanet export of this size is far beyond a CPU fine-tune).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Reads one dataset: its records and the lines it rejected.
pub fn load(spec: &DatasetSpec) -> Result<(Vec<Record>, Vec<Rejected>)> {
    let path = &spec.path;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is more than the {} this reader takes",
                meta.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let source = spec.datanet.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    });
    let items: Vec<(usize, std::result::Result<Value, String>)> =
        if text.trim_start().starts_with('[') {
            let all: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| Error::data(path, format!("not a valid JSON array: {e}")))?;
            all.into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, Ok(v)))
                .collect()
        } else {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    (
                        i + 1,
                        serde_json::from_str(l).map_err(|e| format!("not valid JSON: {e}")),
                    )
                })
                .collect()
        };
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for (line, item) in items {
        let parsed = item.and_then(|v| match v {
            Value::Object(o) => parse(&o, spec.format),
            _ => Err("not a JSON object".into()),
        });
        match parsed {
            Ok((example, contribution_id, row_hash)) => records.push(Record {
                example,
                source: source.clone(),
                line,
                contribution_id,
                row_hash,
            }),
            Err(reason) => rejected.push(Rejected {
                source: source.clone(),
                line,
                reason,
            }),
        }
    }
    Ok((records, rejected))
}

type Parsed = (Example, Option<u64>, Option<String>);

/// One object in the given format (`Auto` decides by its keys).
pub fn parse(o: &Map<String, Value>, format: Format) -> std::result::Result<Parsed, String> {
    let format = match format {
        Format::Auto if o.contains_key("conversations") || o.contains_key("messages") => {
            Format::Sharegpt
        }
        Format::Auto if o.contains_key("instruction") => Format::Alpaca,
        Format::Auto if o.contains_key("prompt") || o.contains_key("text") => Format::Datanet,
        Format::Auto => {
            return Err(
                "no known fields (prompt/response, text, instruction/output, or conversations)"
                    .into(),
            )
        }
        f => f,
    };
    let example = match format {
        Format::Datanet => datanet(o)?,
        Format::Alpaca => alpaca(o)?,
        Format::Sharegpt => sharegpt(o)?,
        Format::Auto => unreachable!("resolved above"),
    };
    let contribution_id = o.get("contribution_id").and_then(Value::as_u64);
    let row_hash = o
        .get("row_hash")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((example, contribution_id, row_hash))
}

fn string(o: &Map<String, Value>, key: &str) -> std::result::Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("\"{key}\" is {other}, not a string")),
    }
}

fn required(o: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match string(o, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(format!("\"{key}\" is empty")),
        None => Err(format!("missing \"{key}\"")),
    }
}

fn datanet(o: &Map<String, Value>) -> std::result::Result<Example, String> {
    if o.contains_key("prompt") || o.contains_key("response") {
        let prompt = required(o, "prompt")?;
        let response = required(o, "response")?;
        return Ok(Example::Chat {
            messages: vec![
                Message::new("user", &prompt),
                Message::new("assistant", &response),
            ],
        });
    }
    Ok(Example::Text {
        text: required(o, "text")?,
    })
}

/// LLaMA-Factory alpaca: the prompt is `instruction` and `input` joined by a newline; `history` is a
/// list of `[user, assistant]` pairs before it.
fn alpaca(o: &Map<String, Value>) -> std::result::Result<Example, String> {
    let instruction = required(o, "instruction")?;
    let input = string(o, "input")?.unwrap_or_default();
    let output = required(o, "output")?;
    let mut messages = Vec::new();
    if let Some(system) = string(o, "system")?.filter(|s| !s.trim().is_empty()) {
        messages.push(Message::new("system", &system));
    }
    match o.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(turns)) => {
            for (i, t) in turns.iter().enumerate() {
                let pair = t
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .and_then(|p| Some((p[0].as_str()?, p[1].as_str()?)))
                    .ok_or_else(|| {
                        format!("history[{i}] is not a [user, assistant] pair of strings")
                    })?;
                messages.push(Message::new("user", pair.0));
                messages.push(Message::new("assistant", pair.1));
            }
        }
        Some(other) => return Err(format!("\"history\" is {other}, not a list of pairs")),
    }
    let prompt = if input.trim().is_empty() {
        instruction
    } else {
        format!("{instruction}\n{input}")
    };
    messages.push(Message::new("user", &prompt));
    messages.push(Message::new("assistant", &output));
    Ok(Example::Chat { messages })
}

/// LLaMA-Factory sharegpt (`conversations` of `{from, value}` with human/gpt tags) or the OpenAI
/// style (`messages` of `{role, content}`); a top-level `system` string becomes the system turn.
fn sharegpt(o: &Map<String, Value>) -> std::result::Result<Example, String> {
    let (key, role_key, content_key) = if o.contains_key("conversations") {
        ("conversations", "from", "value")
    } else {
        ("messages", "role", "content")
    };
    let turns = o
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("\"{key}\" is not a list of turns"))?;
    let mut messages = Vec::new();
    if let Some(system) = string(o, "system")?.filter(|s| !s.trim().is_empty()) {
        messages.push(Message::new("system", &system));
    }
    for (i, t) in turns.iter().enumerate() {
        let role = t
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{key}[{i}] has no \"{role_key}\""))?;
        let content = t
            .get(content_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{key}[{i}] has no \"{content_key}\" string"))?;
        let role = match role {
            "human" | "user" => "user",
            "gpt" | "assistant" => "assistant",
            "system" if messages.is_empty() => "system",
            "system" => return Err(format!("{key}[{i}]: a system turn after the first turn")),
            other => {
                return Err(format!(
                "{key}[{i}]: role {other:?} is not supported (human/user, gpt/assistant, system)"
            ))
            }
        };
        let want = match messages.last().map(|m: &Message| m.role.as_str()) {
            None | Some("system") | Some("assistant") => "user",
            _ => "assistant",
        };
        if role != want {
            return Err(format!(
                "{key}[{i}] is a {role} turn where a {want} turn should come (turns must alternate, starting with the user)"
            ));
        }
        messages.push(Message::new(role, content));
    }
    // A trailing user turn has nothing to learn from: drop it, as LLaMA-Factory does.
    if messages.last().is_some_and(|m| m.role == "user") {
        messages.pop();
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no assistant turn to train on".into());
    }
    if messages
        .iter()
        .any(|m| m.role == "assistant" && m.content.trim().is_empty())
    {
        return Err("an assistant turn is empty".into());
    }
    Ok(Example::Chat { messages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn auto_detects_each_format() {
        let (e, c, h) = parse(
            &obj(json!({"prompt":"p","response":"r","contribution_id":7,"contributor":"0x1","row_hash":"0xab"})),
            Format::Auto,
        )
        .unwrap();
        assert_eq!(
            e,
            Example::Chat {
                messages: vec![Message::new("user", "p"), Message::new("assistant", "r")]
            }
        );
        assert_eq!((c, h.as_deref()), (Some(7), Some("0xab")));
        let (e, ..) = parse(&obj(json!({"text":"t"})), Format::Auto).unwrap();
        assert_eq!(e, Example::Text { text: "t".into() });
        let (e, ..) = parse(
            &obj(json!({"instruction":"i","input":"x","output":"o","system":"s","history":[["u0","a0"]]})),
            Format::Auto,
        )
        .unwrap();
        let Example::Chat { messages } = e else {
            panic!()
        };
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(messages[3].content, "i\nx");
        let (e, ..) = parse(
            &obj(json!({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"},{"from":"human","value":"dangling"}]})),
            Format::Auto,
        )
        .unwrap();
        let Example::Chat { messages } = e else {
            panic!()
        };
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn bad_rows_say_why() {
        for (v, f, why) in [
            (
                json!({"prompt":"p","response":""}),
                Format::Datanet,
                "empty",
            ),
            (json!({"instruction":"i"}), Format::Alpaca, "output"),
            (
                json!({"conversations":[{"from":"gpt","value":"a"}]}),
                Format::Sharegpt,
                "alternate",
            ),
            (
                json!({"conversations":[{"from":"tool","value":"a"}]}),
                Format::Sharegpt,
                "tool",
            ),
            (json!({"foo":1}), Format::Auto, "no known fields"),
        ] {
            let e = parse(&obj(v), f).unwrap_err();
            assert!(e.contains(why), "{e} should mention {why}");
        }
    }
}
