//! Token streams as stored in a shard: every row preceded by a separator, in infini-gram's layout
//! (`\xff\xff` before each document when ids are u16). Ids are stored as u16 when the vocabulary
//! leaves room for the separator (at most 65,535 ids), else as u32; both little-endian.

use serde::{Deserialize, Serialize};

/// A token id.
pub type TokenId = u32;

/// How token ids are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    /// Two bytes per token; separator 0xFFFF.
    U16,
    /// Four bytes per token; separator 0xFFFF_FFFF.
    U32,
}

impl Width {
    /// The width for a vocabulary of `vocab_size` ids (0..vocab_size).
    pub fn for_vocab(vocab_size: usize) -> Width {
        if vocab_size <= u16::MAX as usize {
            Width::U16
        } else {
            Width::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> usize {
        match self {
            Width::U16 => 2,
            Width::U32 => 4,
        }
    }

    /// The row separator.
    pub fn separator(self) -> TokenId {
        match self {
            Width::U16 => u16::MAX as TokenId,
            Width::U32 => u32::MAX,
        }
    }
}

/// Read access to a stored token array of either width.
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    /// u16 ids.
    U16(&'a [u16]),
    /// u32 ids.
    U32(&'a [u32]),
}

impl Tokens<'_> {
    /// Number of tokens (separators included).
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(t) => t.len(),
            Tokens::U32(t) => t.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token at `i`; `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<TokenId> {
        match self {
            Tokens::U16(t) => t.get(i).map(|&x| x as TokenId),
            Tokens::U32(t) => t.get(i).copied(),
        }
    }
}
