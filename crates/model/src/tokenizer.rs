//! The tokenizer: built from GGUF metadata (byte-level BPE vocabularies) or read from `tokenizer.json`,
//! plus the special tokens and chat template that come with the model.
//!
//! A GGUF file names its pre-tokenizer (`tokenizer.ggml.pre`); we rebuild the same split rules as
//! llama.cpp and Hugging Face do for that name, so ids match both token for token.

use crate::error::{ModelError, Result};
use crate::load::Gguf;
use serde_json::{json, Value};
use std::path::Path;

/// GPT-2's split regex, shared by most byte-level BPE vocabularies.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer with special-token matching off (untrusted text).
    plain: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "{}: GGUF tokenizer model {model:?} is not supported from metadata (only byte-level BPE, \"gpt2\"); put the model's tokenizer.json next to it",
                g.path.display()
            )));
        }
        let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("default");
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" | "refact" | "codeshell" => {
                json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]})
            }
            "gpt2" | "default" | "gpt-2" | "olmo" => byte_level(true),
            "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
            "llama-bpe" | "llama3" | "smaug-bpe" => {
                json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
            }
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "{}: pre-tokenizer {other:?} is not known here (smollm, gpt2, qwen2, llama-bpe are); put the model's tokenizer.json next to it",
                    g.path.display()
                )))
            }
        };
        let tokens = g.meta_strings("tokenizer.ggml.tokens")?;
        let types = g.meta_ints("tokenizer.ggml.token_type").unwrap_or_default();
        let merges = g.meta_strings("tokenizer.ggml.merges")?;
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole before BPE, as llama.cpp does.
        let added: Vec<Value> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": types.get(i) == Some(&3)})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner = spec
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| {
                ModelError::Tokenizer(format!("{}: building the tokenizer: {e}", g.path.display()))
            })?;
        let bos = g.meta_u32("tokenizer.ggml.bos_token_id");
        let eos: Vec<u32> = g
            .meta_u32("tokenizer.ggml.eos_token_id")
            .into_iter()
            .chain(g.meta_u32("tokenizer.ggml.eot_token_id"))
            .collect();
        let add_bos = g
            .meta("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let chat_template = g
            .meta_str("tokenizer.chat_template")
            .ok()
            .map(str::to_string);
        Ok(Self::assemble(inner, bos, eos, add_bos, chat_template))
    }

    /// Reads `tokenizer.json` from a model directory, and `tokenizer_config.json` (special tokens,
    /// chat template) when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                ModelError::format(dir.join("tokenizer_config.json"), e.to_string())
            })?,
            Err(_) => Value::Null,
        };
        let token_id = |key: &str| -> Option<u32> {
            let v = &cfg[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            inner.token_to_id(text)
        };
        let eos = token_id("eos_token").into_iter().collect();
        let bos = token_id("bos_token");
        let add_bos = cfg["add_bos_token"].as_bool().unwrap_or(false);
        let template = cfg["chat_template"].as_str().map(str::to_string);
        Ok(Self::assemble(inner, bos, eos, add_bos, template))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Vec<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Self {
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Self {
            inner,
            plain,
            bos,
            eos,
            add_bos,
            chat_template,
        }
    }

    /// The tokenizer for a model path: GGUF metadata, or the model directory's `tokenizer.json`.
    /// A `tokenizer.json` next to a GGUF file takes precedence.
    pub fn for_model(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if let Some(dir) = path.parent().filter(|d| d.join("tokenizer.json").exists()) {
            return Self::from_dir(dir);
        }
        Self::from_gguf(&Gguf::open(path)?)
    }

    /// Token ids for `text`. With `special`, special-token text (`<|im_start|>`) becomes its id;
    /// without, it is tokenized as plain text (safe for untrusted input). Adds BOS if the model wants it.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = if special { &self.inner } else { &self.plain }.encode_fast(text, false);
        let enc = enc.map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids for `text` as a corpus holds it: plain text, no BOS (what an attribution index
    /// stores and is queried with).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .plain
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text for `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// Ids that end generation (EOS / end-of-turn).
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// The underlying `tokenizers` object (for tools that need offsets and such).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns a stream of token ids into text pieces, never splitting a UTF-8 character.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// Feeds one id; returns the new text it completes, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read], true)?;
        let now = tok.decode(&self.ids[self.prefix..], true)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }
}
