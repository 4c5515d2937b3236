//! Training data: records from datanet exports and LLaMA-Factory files ([`formats`]), tokenized
//! through the model's chat template with the loss on the responses ([`encode`]), then split, shuffled
//! and batched by seed ([`plan`]).

pub mod encode;
pub mod formats;
pub mod plan;

use openledger_model::chat::Message;
use serde::{Deserialize, Serialize};

/// One training example before tokenization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Example {
    /// A conversation (optional system turn, then user/assistant turns ending with the assistant);
    /// the loss is on the assistant turns.
    Chat { messages: Vec<Message> },
    /// Plain text, trained as language modelling on every token.
    Text { text: String },
}

/// An example and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub example: Example,
    /// The dataset: its `ID@VERSION` for a datanet export, else the file name.
    pub source: String,
    /// 1-based line (or array element) in the source file.
    #[serde(default)]
    pub line: usize,
    /// The datanet contribution that brought the row (exports carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_hash: Option<String>,
}

/// A record that was not used, and why (reported, never silently dropped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub source: String,
    /// 1-based line (or array element) number.
    pub line: usize,
    pub reason: String,
}

/// A tokenized example: `targets[i]` says whether token `i` is predicted (trained on).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub tokens: Vec<u32>,
    pub targets: Vec<bool>,
}

impl Encoded {
    /// Tokens the loss is computed on (a first token is never predicted).
    pub fn num_targets(&self) -> usize {
        self.targets.iter().skip(1).filter(|&&t| t).count()
    }
}
