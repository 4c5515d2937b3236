//! OpenAI's `logprobs` on the completion routes: the request parameters, checked, and the
//! response shapes built from the engine's per-token [`TokenLogprobs`] (the model's raw
//! log-probabilities, before penalty, temperature and top-p; see that type):
//! - chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
//!   "bytes"}, …]}, …]}`;
//! - text completions: `{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}, …],
//!   "text_offset"}`, the offsets in characters from the start of the completion's text.
//!
//! A token's `bytes` are its own bytes (a token may hold part of a UTF-8 character; its `token`
//! string then shows U+FFFD); special tokens count as the text they add to the answer, which is
//! none. So the tokens' bytes, concatenated, are the answer's text (unless a stop string cut it).

use crate::error::ServeError;
use openledger_model::sampling::TokenLogprobs;
use openledger_model::Tokenizer;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// Most `top_logprobs` of a chat request, and most `logprobs` of a text completion (OpenAI's).
pub const MAX_TOP_LOGPROBS: usize = 20;
pub const MAX_LOGPROBS: usize = 5;
/// What JSON gets for an impossible token (`-inf` has no JSON form), as vLLM does.
const FLOOR: f64 = -9999.0;

/// Chat: `logprobs` (boolean) and `top_logprobs` (0 to 20, only with `logprobs: true`); the
/// number of alternatives per token when logprobs are asked for.
pub(super) fn parse_chat(obj: &Map<String, Value>) -> Result<Option<usize>, ServeError> {
    let on: bool = super::field(obj, "logprobs")?.unwrap_or(false);
    let top: Option<u64> = super::field(obj, "top_logprobs").map_err(|_| {
        ServeError::bad(
            "top_logprobs",
            format!("`top_logprobs` must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
        )
    })?;
    match (on, top) {
        (_, Some(t)) if t > MAX_TOP_LOGPROBS as u64 => Err(ServeError::bad(
            "top_logprobs",
            format!("`top_logprobs` must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
        )),
        (false, Some(_)) => Err(ServeError::bad(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        )),
        (false, None) => Ok(None),
        (true, t) => Ok(Some(t.unwrap_or(0) as usize)),
    }
}

/// Text completions: `logprobs` (0 to 5 alternatives per token).
pub(super) fn parse_completion(obj: &Map<String, Value>) -> Result<Option<usize>, ServeError> {
    let bad = || {
        ServeError::bad(
            "logprobs",
            format!("`logprobs` must be an integer from 0 to {MAX_LOGPROBS}"),
        )
    };
    match super::field::<u64>(obj, "logprobs").map_err(|_| bad())? {
        Some(n) if n > MAX_LOGPROBS as u64 => Err(bad()),
        n => Ok(n.map(|n| n as usize)),
    }
}

/// A log-probability as JSON: shortest decimal of the `f32`, `-inf` floored.
fn number(l: f32) -> Value {
    let v = l.to_string().parse::<f64>().unwrap_or(FLOOR);
    json!(if v.is_finite() { v.max(FLOOR) } else { FLOOR })
}

/// Turns token ids into the strings and bytes OpenAI shows.
pub(super) struct Shaper {
    tok: Arc<Tokenizer>,
    /// The tokenizer's vocabulary spells bytes with GPT-2's byte-to-character table.
    byte_level: bool,
    /// Added (special and user-defined) tokens, spelled as the text shows them.
    added: HashSet<u32>,
}

impl Shaper {
    pub(super) fn new(tok: Arc<Tokenizer>) -> Self {
        let decoder = tok
            .inner()
            .get_decoder()
            .and_then(|d| serde_json::to_value(d).ok())
            .unwrap_or(Value::Null);
        let byte_level = decoder["type"] == "ByteLevel"
            || decoder["decoders"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["type"] == "ByteLevel"));
        let added = tok.inner().get_added_tokens_decoder().into_keys().collect();
        Self {
            tok,
            byte_level,
            added,
        }
    }

    /// The bytes token `id` adds to the text.
    fn bytes(&self, id: u32) -> Vec<u8> {
        let added = self.added.contains(&id);
        if let (false, Some(piece)) = (added, self.tok.id_to_token(id)) {
            if self.byte_level {
                if let Some(b) = piece.chars().map(gpt2_byte).collect::<Option<Vec<u8>>>() {
                    return b;
                }
            } else if let Some(b) = piece
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                return vec![b]; // SentencePiece byte fallback
            }
        }
        self.tok
            .decode(&[id], true)
            .map(String::into_bytes)
            .unwrap_or_default()
    }

    fn entry(&self, id: u32, logprob: f32) -> (Map<String, Value>, Vec<u8>) {
        let bytes = self.bytes(id);
        let mut m = Map::new();
        m.insert(
            "token".into(),
            String::from_utf8_lossy(&bytes).into_owned().into(),
        );
        m.insert("logprob".into(), number(logprob));
        m.insert("bytes".into(), json!(bytes));
        (m, bytes)
    }

    /// A chat choice's `logprobs` for these tokens.
    pub(super) fn chat(&self, lps: &[TokenLogprobs]) -> Value {
        let content: Vec<Value> = lps
            .iter()
            .map(|lp| {
                let (mut m, _) = self.entry(lp.id, lp.logprob);
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| Value::Object(self.entry(id, l).0))
                    .collect();
                m.insert("top_logprobs".into(), top.into());
                Value::Object(m)
            })
            .collect();
        json!({ "content": content })
    }

    /// A text completion choice's `logprobs` for these tokens; `offset` carries the text offset
    /// from one streamed chunk to the next.
    pub(super) fn completion(&self, lps: &[TokenLogprobs], offset: &mut TextOffset) -> Value {
        let (mut tokens, mut logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
        for lp in lps {
            let (m, bytes) = self.entry(lp.id, lp.logprob);
            let mut top = Map::new();
            for &(id, l) in &lp.top {
                let (e, _) = self.entry(id, l);
                top.entry(e["token"].as_str().unwrap_or_default())
                    .or_insert(e["logprob"].clone());
            }
            // OpenAI always includes the chosen token: up to `logprobs + 1` entries.
            top.entry(m["token"].as_str().unwrap_or_default())
                .or_insert(m["logprob"].clone());
            offsets.push(offset.chars);
            offset.push(&bytes);
            tokens.push(m["token"].clone());
            logprobs.push(m["logprob"].clone());
            tops.push(Value::Object(top));
        }
        json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
    }
}

/// Characters of the completion's text so far, counted as a client decoding the tokens' bytes
/// sees them (an invalid byte run is one U+FFFD, an unfinished character waits for its end).
#[derive(Default)]
pub(super) struct TextOffset {
    chars: usize,
    pending: Vec<u8>,
}

impl TextOffset {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.chars += s.chars().count();
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    self.chars +=
                        std::str::from_utf8(&self.pending[..good]).map_or(0, |s| s.chars().count());
                    match e.error_len() {
                        None => {
                            self.pending.drain(..good);
                            return;
                        }
                        Some(n) => {
                            self.chars += 1;
                            self.pending.drain(..good + n);
                        }
                    }
                }
            }
        }
    }
}

/// The byte GPT-2's byte-level vocabularies spell with character `c`: printable Latin-1
/// characters stand for themselves, the other bytes for U+0100 onwards in byte order.
fn gpt2_byte(c: char) -> Option<u8> {
    static TABLE: OnceLock<[Option<u8>; 0x144]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let mut t = [None; 0x144];
        let mut next = 0x100;
        for b in 0..=255u8 {
            if printable(b) {
                t[b as usize] = Some(b);
            } else {
                t[next] = Some(b);
                next += 1;
            }
        }
        t
    });
    table.get(c as usize).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_table_round_trips_every_byte() {
        // GPT-2's table: 'Ġ' (U+0120) is the space, 'Ċ' (U+010A) the newline.
        assert_eq!(gpt2_byte('Ġ'), Some(b' '));
        assert_eq!(gpt2_byte('Ċ'), Some(b'\n'));
        assert_eq!(gpt2_byte('a'), Some(b'a'));
        assert_eq!(gpt2_byte(' '), None);
        let mut seen = [false; 256];
        for c in (0x21u32..0x200).filter_map(char::from_u32) {
            if let Some(b) = gpt2_byte(c) {
                assert!(!seen[b as usize], "byte {b} spelled twice");
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "every byte has a character");
    }

    #[test]
    fn text_offsets_count_characters_across_split_bytes() {
        let mut o = TextOffset::default();
        let euro = "€".as_bytes();
        o.push(b"a ");
        assert_eq!(o.chars, 2);
        o.push(&euro[..1]);
        assert_eq!(o.chars, 2, "half a character is not counted yet");
        o.push(&euro[1..]);
        assert_eq!(o.chars, 3);
        o.push(&[0xff, b'x']);
        assert_eq!(o.chars, 5, "an invalid byte reads as one U+FFFD");
    }

    #[test]
    fn parameters_out_of_range_name_themselves() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let param = |r: Result<Option<usize>, ServeError>| match r {
            Err(e) => e.body()["error"]["param"].as_str().unwrap().to_string(),
            Ok(v) => panic!("accepted: {v:?}"),
        };
        assert_eq!(parse_chat(&obj(json!({}))).unwrap(), None);
        assert_eq!(
            parse_chat(&obj(json!({"logprobs": true}))).unwrap(),
            Some(0)
        );
        assert_eq!(
            parse_chat(&obj(json!({"logprobs": true, "top_logprobs": 20}))).unwrap(),
            Some(20)
        );
        let bad_chat = [
            json!({"logprobs": true, "top_logprobs": 21}),
            json!({"logprobs": true, "top_logprobs": -1}),
            json!({"top_logprobs": 2}),
            json!({"logprobs": false, "top_logprobs": 0}),
        ];
        for b in bad_chat {
            assert_eq!(param(parse_chat(&obj(b))), "top_logprobs");
        }
        assert_eq!(param(parse_chat(&obj(json!({"logprobs": 3})))), "logprobs");
        assert_eq!(
            parse_completion(&obj(json!({"logprobs": 5}))).unwrap(),
            Some(5)
        );
        for b in [json!(6), json!(-1), json!(true), json!("2")] {
            assert_eq!(
                param(parse_completion(&obj(json!({"logprobs": b})))),
                "logprobs"
            );
        }
    }
}
