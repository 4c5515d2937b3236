//! Datanet ingestion core: turns contributed files into normalised, hashed, deduplicated and
//! scored rows with a Merkle root (the `rowsRoot` that `IDatanet.contribute` takes).
//!
//! The pipeline, one module per step:
//! [`parse`] (files → records) → [`normalize`] → [`hash`] (BLAKE3 of the canonical JSON) →
//! [`validate`] (schema, length, encoding) → [`dedup`] (exact by hash, near by MinHash + LSH) →
//! [`score`] (per-file basis points and reasons) → [`merkle`] (rows root and proofs).
//! [`ingest::ingest`] runs all of it. No I/O beyond reading the files it is given: the chain, the
//! blob store and the REST/CLI front ends are wired on top of [`Contribution`].
//!
//! Decompression is bounded per file and per upload by [`budget`].
//!
//! Around it: [`report`] (the contributor's JSON report), [`rowset`] (a contribution's rows as a
//! blob, checked against its on-chain root on the way back), [`proof`] (a row's inclusion proof
//! against a datanet version root) and [`stats`] (contributor statistics and the leaderboard).

pub mod budget;
pub mod dedup;
pub mod error;
pub mod hash;
pub mod ingest;
pub mod limits;
pub mod merkle;
pub mod normalize;
pub mod parse;
pub mod proof;
pub mod report;
pub mod row;
pub mod rowset;
pub mod score;
pub mod source;
pub mod stats;
pub mod validate;

pub use budget::{FileBudget, RequestBudget};
pub use dedup::{DatanetIndex, KnownRows, Signature};
pub use error::{IngestError, Result};
pub use hash::{row_hash, RowHash};
pub use ingest::{
    ingest, AcceptedRow, Contribution, DuplicateOf, ExactDuplicate, FileReport, NearDuplicate,
};
pub use limits::Limits;
pub use merkle::RowProof;
pub use proof::{DatanetProof, ProofContext, ProofError};
pub use report::Report;
pub use row::{Location, Record, Row, Schema};
pub use rowset::{RowSet, RowSetError};
pub use source::SourceFile;
pub use stats::{leaderboard, ContributionSummary, ContributorStats, Status};
