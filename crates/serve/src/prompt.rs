//! Request text to token ids: chat messages through the model's chat template, with each message's
//! content tokenized as plain text so that it can never inject special tokens.

use crate::error::ServeError;
use openledger_model::chat::{self, Message};
use openledger_model::Tokenizer;

/// Token ids of a chat prompt ending where the assistant's reply begins.
pub fn chat_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, ServeError> {
    const MARK: &str = "\u{E000}";
    let masked: Vec<Message> = (0..messages.len())
        .map(|i| Message::new(&messages[i].role, &format!("{MARK}{i}{MARK}")))
        .collect();
    let template = tok.chat_template().unwrap_or(chat::CHATML);
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    let rendered = chat::render(
        template,
        &masked,
        true,
        &name(tok.bos()),
        &name(tok.eos().first().copied()),
    )
    .map_err(|e| {
        ServeError::bad(
            "messages",
            format!("the chat template refused the messages: {e}"),
        )
    })?;
    let altered = || {
        ServeError::Model(openledger_model::ModelError::Template(
            "the chat template altered a message placeholder".into(),
        ))
    };
    let mut ids = Vec::new();
    let mut rest = rendered.as_str();
    while let Some(start) = rest.find(MARK) {
        ids.extend(tok.encode(&rest[..start], true)?);
        let after = &rest[start + MARK.len()..];
        let end = after.find(MARK).ok_or_else(altered)?;
        let i: usize = after[..end].parse().map_err(|_| altered())?;
        let m = messages.get(i).ok_or_else(altered)?;
        ids.extend(tok.encode(&m.content, false)?);
        rest = &after[end + MARK.len()..];
    }
    ids.extend(tok.encode(rest, true)?);
    Ok(ids)
}
