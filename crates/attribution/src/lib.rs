//! Proof of Attribution over a datanet's rows, in the class of infini-gram and OLMoTrace.
//!
//! Rows are tokenised with the serving model's tokenizer (by the caller: this crate sees token
//! ids only) and indexed as shards of a suffix array ([`build`]: libsais; large batches are
//! split and built side by side by [`parts`]; files memory-mapped by [`shard`]). An [`Index`]
//! answers n-gram counts, occurrences with their contribution and contributor, rows containing a
//! span, next-token distributions, ∞-gram probabilities and the longest match at every position
//! of a text, across all its shards as one corpus. Each row maps to its contribution id and
//! contributor, which is what attribution pays. [`attribute`] turns an output into weighted
//! contributions with their evidence (OLMoTrace's span algorithm, BM25 re-ranking in [`bm25`]);
//! [`commitment`] is what an inference receipt commits to.

pub mod attribute;
pub mod bm25;
pub mod build;
pub mod commitment;
pub mod error;
pub mod index;
pub mod parts;
pub mod shard;
pub mod tokens;

pub use attribute::{attribute, Attribution, ContributionWeight, Params, Span};
pub use build::{build_shard, ContributionRows, RowTokens, ShardMeta};
pub use commitment::{commit, Commitment};
pub use error::{IndexError, Result};
pub use index::{Index, InfGram, Manifest, Occurrence, RowHit};
pub use parts::BuildOptions;
pub use tokens::{TokenId, Width};
