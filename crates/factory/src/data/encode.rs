//! Tokenization for training. A conversation is rendered with the model's chat template (ChatML when
//! it has none) turn by turn: the text up to each assistant reply (with the generation prompt) is
//! context, the reply through its end-of-turn marker is target, so the loss falls on the responses
//! only. Text examples are plain language modelling on every token, ended by the EOS token. Examples
//! are cut at `cutoff_len` tokens; one left with nothing to predict is rejected with the reason.

use super::{Encoded, Example};
use openledger_model::chat::{self, Message};
use openledger_model::Tokenizer;

/// Turns [`Example`]s into token ids and target masks for one tokenizer.
pub struct Encoder<'t> {
    tok: &'t Tokenizer,
    template: String,
    bos: String,
    eos: String,
    eos_id: Option<u32>,
}

/// A held-out prompt for sample generations: its tokens, its text and the reference answer.
#[derive(Debug, Clone)]
pub struct SamplePrompt {
    pub tokens: Vec<u32>,
    pub prompt: String,
    pub reference: String,
}

impl<'t> Encoder<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        Self {
            tok,
            template: tok.chat_template().unwrap_or(chat::CHATML).to_string(),
            bos: name(tok.bos()),
            eos: name(tok.eos().first().copied()),
            eos_id: tok.eos().first().copied(),
        }
    }

    fn render(&self, messages: &[Message], generation_prompt: bool) -> Result<String, String> {
        chat::render(
            &self.template,
            messages,
            generation_prompt,
            &self.bos,
            &self.eos,
        )
        .map_err(|e| e.to_string())
    }

    /// Ids of one piece of rendered text; the first piece gets the model's BOS if it wants one.
    fn ids(&self, text: &str, first: bool) -> Result<Vec<u32>, String> {
        if first {
            return self.tok.encode(text, true).map_err(|e| e.to_string());
        }
        let enc = self
            .tok
            .inner()
            .encode_fast(text, false)
            .map_err(|e| format!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokens and targets of an example, cut at `cutoff` tokens.
    pub fn encode(&self, example: &Example, cutoff: usize) -> Result<Encoded, String> {
        let mut e = Encoded {
            tokens: Vec::new(),
            targets: Vec::new(),
        };
        match example {
            Example::Text { text } => {
                e.tokens = self.tok.encode(text, false).map_err(|e| e.to_string())?;
                e.tokens.extend(self.eos_id);
                e.targets = vec![true; e.tokens.len()];
            }
            Example::Chat { messages } => {
                let mut done = String::new();
                for (i, m) in messages.iter().enumerate() {
                    if m.role != "assistant" {
                        continue;
                    }
                    let prefix = self.render(&messages[..i], true)?;
                    let full = self.render(&messages[..=i], false)?;
                    let (Some(context), Some(reply)) =
                        (prefix.strip_prefix(&done), full.strip_prefix(&prefix))
                    else {
                        return Err("the chat template does not render earlier turns as a prefix of later ones, so the response cannot be told apart".into());
                    };
                    for (piece, target) in [(context, false), (reply, true)] {
                        let ids = self.ids(piece, e.tokens.is_empty())?;
                        e.targets.extend(std::iter::repeat_n(target, ids.len()));
                        e.tokens.extend(ids);
                    }
                    done = full;
                }
            }
        }
        if e.tokens.len() > cutoff {
            e.tokens.truncate(cutoff);
            e.targets.truncate(cutoff);
        }
        if e.num_targets() == 0 {
            return Err(if matches!(example, Example::Chat { .. }) {
                format!("no response tokens within cutoff_len ({cutoff}): raise cutoff_len or shorten the prompt")
            } else {
                "the text is too short to train on (fewer than 2 tokens)".into()
            });
        }
        Ok(e)
    }

    /// The prompt a sample generation starts from: a conversation up to its last reply, or the first
    /// part of a text (at most `max_tokens` tokens of reference follow).
    pub fn sample_prompt(
        &self,
        example: &Example,
        max_tokens: usize,
    ) -> Result<SamplePrompt, String> {
        match example {
            Example::Chat { messages } => {
                let last = messages
                    .iter()
                    .rposition(|m| m.role == "assistant")
                    .ok_or("no assistant turn")?;
                let prompt = self.render(&messages[..last], true)?;
                let tokens = self.ids(&prompt, true)?;
                Ok(SamplePrompt {
                    tokens,
                    prompt,
                    reference: messages[last].content.clone(),
                })
            }
            Example::Text { text } => {
                let ids = self.tok.encode(text, false).map_err(|e| e.to_string())?;
                let cut = (ids.len() / 2).clamp(1, 32.min(ids.len()));
                let decode = |s: &[u32]| self.tok.decode(s, true).map_err(|e| e.to_string());
                let end = (cut + max_tokens).min(ids.len());
                Ok(SamplePrompt {
                    tokens: ids[..cut].to_vec(),
                    prompt: decode(&ids[..cut])?,
                    reference: decode(&ids[cut..end])?,
                })
            }
        }
    }
}
