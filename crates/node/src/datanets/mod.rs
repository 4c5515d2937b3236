//! Datanet rows off chain: the node stages contributions (ingests uploaded files against the rows
//! the datanet already holds and stores the accepted rows in the blob store), and serves what the
//! chain's roots commit to — a version's rows with their contribution and contributor, exports,
//! and row inclusion proofs — to the REST routes in [`crate::rest`].
//!
//! The chain is the source of truth: a contribution's rows are the blob its `metadataUri` names
//! (`blake3:<hash>`), accepted only when they hash to its on-chain `rowsRoot`. Blobs are
//! immutable, so a restart loses nothing: the in-memory row index ([`index::RowIndex`]) is rebuilt
//! from the chain and the blobs on first use. Staging also records what it computed for each
//! upload ([`staging`]): a `contribute` transaction must match it to be admitted, and uploads no
//! contribution references are deleted after a TTL. [`guard`] bounds what clients may ask of the
//! node (replays, rates, concurrent uploads).

mod error;
pub mod guard;
mod index;
pub mod staging;
pub mod views;

pub use error::ApiError;
pub use staging::{run_gc, GcReport, StagedRecord, StagingConfig};

use alloy_primitives::{Address, B256};
use guard::Guards;
use index::RowIndex;
use openledger_datanet::{
    hash::to_b256, ingest, rowset, DatanetProof, Limits, ProofContext, Report, Row, RowHash,
    RowSet, Schema, SourceFile,
};
use openledger_state::{modules::datanet, StateRead};
use openledger_store::{blob_uri, parse_blob_uri, BlobStore};
use openledger_types::{
    abi::IDatanet::{ContributionInfo, DatanetInfo},
    merkle::version_leaf,
};
use serde::{Deserialize, Serialize};
use staging::StagedRecords;
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex, OnceLock},
};

/// A staged contribution: the report, and where its rows now are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Staged {
    /// The datanet.
    pub datanet_id: u64,
    /// What `contribute` will carry, file verdicts, duplicates.
    pub report: Report,
    /// The `metadataUri` to send: `blake3:<hash of the rows blob>`.
    pub metadata_uri: String,
}

/// One row of a version, as exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportRow {
    /// The row's fields (`text`, or `prompt` and `response`).
    #[serde(flatten)]
    pub row: Row,
    /// The contribution that brought it.
    pub contribution_id: u64,
    /// Who contributed it.
    pub contributor: Address,
    /// Its BLAKE3 hash.
    pub row_hash: B256,
}

/// The node's datanet row service.
pub struct Datanets {
    blobs: BlobStore,
    limits: Limits,
    indexes: Mutex<HashMap<u64, Arc<Mutex<RowIndex>>>>,
    staged: StagedRecords,
    guards: OnceLock<Guards>,
    /// Unix seconds when the service opened (the node's start): signed requests from before it
    /// are refused, since the replay table did not survive the restart.
    started: u64,
}

/// The schema of a datanet's `dataType`.
pub fn schema_of(d: &DatanetInfo) -> Result<Schema, ApiError> {
    Schema::from_data_type(d.dataType).ok_or_else(|| {
        ApiError::Internal(format!(
            "datanet {} has data type {}, which this node cannot read",
            d.id, d.dataType
        ))
    })
}

fn datanet_info(state: &dyn StateRead, id: u64) -> Result<DatanetInfo, ApiError> {
    datanet::datanet(state, id).map_err(ApiError::from)
}

fn contribution_info(state: &dyn StateRead, id: u64) -> Result<ContributionInfo, ApiError> {
    datanet::contribution(state, id).map_err(ApiError::from)
}

/// Refuses `who` unless the datanet is public or they have access.
pub fn check_access(
    state: &dyn StateRead,
    d: &DatanetInfo,
    who: Option<Address>,
) -> Result<(), ApiError> {
    if !d.permissioned {
        return Ok(());
    }
    let Some(who) = who else {
        return Err(ApiError::Unauthorized(format!(
            "datanet {} is permissioned: sign the request (openledger --from <key>) with an address the owner granted access",
            d.id
        )));
    };
    if datanet::has_access(state, d, &who)? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{who} has no access to permissioned datanet {}: ask the owner (openledger datanet request-access {})",
            d.id, d.id
        )))
    }
}

impl Datanets {
    /// Opens the service over the blob store in `blobs_dir`, with the staging records in the
    /// `staging` directory beside it.
    pub fn open(blobs_dir: &Path, limits: Limits) -> Result<Datanets, ApiError> {
        let staging_dir = blobs_dir.parent().unwrap_or(blobs_dir).join(format!(
            "{}-staging",
            blobs_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "blobs".into())
        ));
        Ok(Datanets {
            blobs: BlobStore::open(blobs_dir).map_err(|e| ApiError::Internal(e.to_string()))?,
            limits,
            indexes: Mutex::new(HashMap::new()),
            staged: StagedRecords::open(&staging_dir)?,
            guards: OnceLock::new(),
            started: crate::sequencer::now(),
        })
    }

    /// The request guards, built from `cfg` on first use (a node's config does not change).
    /// They refuse requests signed before the service opened, not before this first use: a
    /// request signed a moment before the first upload reached the node is not a replay.
    pub fn guards(&self, cfg: &StagingConfig) -> &Guards {
        self.guards.get_or_init(|| Guards::new(cfg, self.started))
    }

    /// What staging recorded for a blob.
    pub fn staged(&self, blob: &B256) -> Vec<StagedRecord> {
        self.staged.records(blob)
    }

    /// The sequencer's admission rule for datanet contributions (see [`staging`]): a
    /// `contribute` transaction must cite a row set this node staged for that datanet by its
    /// sender, with the figures staging computed. Other transactions pass.
    pub fn check_contribution(
        &self,
        tx: &openledger_state::VerifiedTx,
    ) -> Result<(), openledger_state::ExecError> {
        self.staged
            .check(
                &self.blobs,
                tx.sender,
                tx.to(),
                tx.input(),
                crate::sequencer::now(),
            )
            .map_err(openledger_state::ExecError::Invalid)
    }

    /// One garbage collection pass over staged uploads (see [`staging`]).
    pub fn collect_garbage(
        &self,
        state: &dyn StateRead,
        now: u64,
        ttl: u64,
    ) -> Result<GcReport, ApiError> {
        self.staged.collect(&self.blobs, state, now, ttl)
    }

    /// The ingestion limits uploads are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn index(&self, id: u64) -> Arc<Mutex<RowIndex>> {
        let mut all = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(id).or_default().clone()
    }

    /// The rows of a contribution, checked against its on-chain root.
    pub fn rows_of(&self, schema: Schema, c: &ContributionInfo) -> Result<RowSet, String> {
        let id = parse_blob_uri(&c.metadataUri).map_err(|e| e.to_string())?;
        let bytes = self
            .blobs
            .get(&id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "its rows blob {} is not in this node's blob store",
                    c.metadataUri
                )
            })?;
        RowSet::decode_checked(&bytes, schema, c.rowsRoot).map_err(|e| e.to_string())
    }

    /// Whether `who` may stage to datanet `id` (it exists, and they have access).
    pub fn check_stage(
        &self,
        state: &dyn StateRead,
        id: u64,
        who: Address,
    ) -> Result<(), ApiError> {
        let d = datanet_info(state, id)?;
        check_access(state, &d, Some(who))
    }

    /// Ingests `files` as a contribution to datanet `id` signed by `who`, against the rows the
    /// datanet holds (approved and pending), stores the accepted rows and records what staging
    /// computed, which the contribution must then claim. Writes nothing when a file cannot be
    /// read or no row is accepted.
    pub fn stage(
        &self,
        state: &dyn StateRead,
        id: u64,
        files: &[SourceFile],
        who: Address,
    ) -> Result<Staged, ApiError> {
        let d = datanet_info(state, id)?;
        check_access(state, &d, Some(who))?;
        if files.is_empty() {
            return Err(ApiError::BadRequest("no files were uploaded".into()));
        }
        let schema = schema_of(&d)?;
        let index = self.index(id);
        let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
        index.refresh(state, &d, self)?;
        let c = ingest(files, schema, &self.limits, index.known())
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let report = Report::new(&c);
        if c.rows.is_empty() {
            return Err(ApiError::Rejected(Box::new(report)));
        }
        let record = StagedRecord {
            datanet_id: id,
            staged_by: who,
            rows_root: report.rows_root,
            row_count: report.row_count,
            byte_size: report.byte_size,
            score: report.score_bps,
            staged_at: crate::sequencer::now(),
            last_used: 0,
        };
        let blob = self
            .staged
            .stage(&self.blobs, &rowset::encode(&c), record)?;
        Ok(Staged {
            datanet_id: id,
            report,
            metadata_uri: blob_uri(&blob),
        })
    }

    /// The datanet's contributions in submission order, each with whether its rows are here.
    pub fn contributions(
        &self,
        state: &dyn StateRead,
        id: u64,
    ) -> Result<Vec<(ContributionInfo, Option<String>)>, ApiError> {
        let d = datanet_info(state, id)?;
        let index = self.index(id);
        let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
        index.refresh(state, &d, self)?;
        let n = datanet::contribution_count_of(state, id)?;
        let mut out = Vec::with_capacity(n as usize);
        let mut offset = 0;
        while offset < n {
            for cid in datanet::contribution_ids(state, id, offset, datanet::MAX_PAGE)? {
                let c = contribution_info(state, cid)?;
                let missing = index.missing(cid);
                out.push((c, missing));
            }
            offset += datanet::MAX_PAGE;
        }
        Ok(out)
    }

    /// Checks a request to export version `version` (0 = latest) of datanet `id` before any
    /// row is sent: access, the version, and that every contribution's rows blob is here.
    /// Returns the version to export.
    pub fn export_version(
        &self,
        state: &dyn StateRead,
        id: u64,
        version: u64,
        who: Option<Address>,
    ) -> Result<u64, ApiError> {
        let d = datanet_info(state, id)?;
        check_access(state, &d, who)?;
        let version = resolve_version(&d, version)?;
        for v in 1..=version {
            let c = contribution_info(state, datanet::version(state, id, v)?.contributionId)?;
            let present = parse_blob_uri(&c.metadataUri)
                .map(|b| self.blobs.contains(&b))
                .unwrap_or(false);
            if !present {
                return Err(ApiError::Unavailable(format!(
                    "version {v} of datanet {id} cannot be served: the rows of contribution {} ({}) are not in this node's blob store",
                    c.id, c.metadataUri
                )));
            }
        }
        Ok(version)
    }

    /// Calls `each` with every row of version `version` (0 = latest) in order: contributions in
    /// approval order, rows in leaf order, a row already brought by an earlier contribution left
    /// out (its first contributor keeps the credit). Returns the version exported.
    pub fn for_each_row(
        &self,
        state: &dyn StateRead,
        id: u64,
        version: u64,
        who: Option<Address>,
        mut each: impl FnMut(ExportRow) -> bool,
    ) -> Result<u64, ApiError> {
        let d = datanet_info(state, id)?;
        check_access(state, &d, who)?;
        let version = resolve_version(&d, version)?;
        let schema = schema_of(&d)?;
        let mut seen: HashSet<RowHash> = HashSet::new();
        for v in 1..=version {
            let info = datanet::version(state, id, v)?;
            let c = contribution_info(state, info.contributionId)?;
            let rows = self.rows_of(schema, &c).map_err(|e| {
                ApiError::Unavailable(format!(
                    "version {v} of datanet {id} cannot be served: contribution {}: {e}",
                    c.id
                ))
            })?;
            for (row, hash) in rows.rows.into_iter().zip(rows.hashes) {
                if !seen.insert(hash) {
                    continue;
                }
                let keep_going = each(ExportRow {
                    row,
                    contribution_id: c.id,
                    contributor: c.contributor,
                    row_hash: to_b256(&hash),
                });
                if !keep_going {
                    return Ok(version);
                }
            }
        }
        Ok(version)
    }

    /// Rows `offset..offset+limit` of one contribution, whatever its status (the owner reviews
    /// pending ones before approving).
    pub fn contribution_rows(
        &self,
        state: &dyn StateRead,
        cid: u64,
        who: Option<Address>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ExportRow>, ApiError> {
        let c = contribution_info(state, cid)?;
        let d = datanet_info(state, c.datanetId)?;
        check_access(state, &d, who)?;
        let rows = self
            .rows_of(schema_of(&d)?, &c)
            .map_err(|e| ApiError::Unavailable(format!("contribution {cid}: {e}")))?;
        Ok(rows
            .rows
            .into_iter()
            .zip(rows.hashes)
            .skip(offset as usize)
            .take(limit as usize)
            .map(|(row, hash)| ExportRow {
                row,
                contribution_id: cid,
                contributor: c.contributor,
                row_hash: to_b256(&hash),
            })
            .collect())
    }

    /// The inclusion proof of the row with hash `row` in version `version` (0 = latest).
    pub fn proof(
        &self,
        state: &dyn StateRead,
        id: u64,
        row: B256,
        version: u64,
        who: Option<Address>,
    ) -> Result<DatanetProof, ApiError> {
        let d = datanet_info(state, id)?;
        check_access(state, &d, who)?;
        let version = resolve_version(&d, version)?;
        let schema = schema_of(&d)?;
        let located = {
            let index = self.index(id);
            let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
            index.refresh(state, &d, self)?;
            index.locate(&row.0)
        };
        let not_in = || {
            ApiError::NotFound(format!(
                "row {row} is not in version {version} of datanet {id}"
            ))
        };
        let cid = located.ok_or_else(not_in)?;
        let c = contribution_info(state, cid)?;
        if c.status != datanet::APPROVED || c.version > version {
            return Err(ApiError::NotFound(format!(
                "row {row} is in contribution {cid}, which is {} version {version} of datanet {id}",
                if c.status == datanet::APPROVED {
                    "approved after"
                } else {
                    "not approved, so not in"
                }
            )));
        }
        let rows = self
            .rows_of(schema, &c)
            .map_err(|e| ApiError::Unavailable(format!("contribution {cid}: {e}")))?;
        let row_index = rows.position(&row.0).ok_or_else(not_in)?;
        let mut leaves = Vec::with_capacity(version as usize);
        for v in 1..=version {
            let info = datanet::version(state, id, v)?;
            let vc = contribution_info(state, info.contributionId)?;
            leaves.push(version_leaf(vc.id, vc.rowsRoot, vc.rowCount));
        }
        let ctx = ProofContext {
            datanet_id: id,
            version,
            contribution_id: cid,
            contributor: c.contributor,
            version_leaves: &leaves,
            leaf_index: (c.version - 1) as usize,
        };
        let proof = DatanetProof::new(&ctx, &rows, row_index).ok_or_else(not_in)?;
        let on_chain = datanet::version(state, id, version)?.root;
        if proof.version_root != on_chain {
            return Err(ApiError::Internal(format!(
                "the proof's root {} differs from version {version}'s root {on_chain} on chain",
                proof.version_root
            )));
        }
        Ok(proof)
    }
}

/// The version a request means: 0 is the latest; a datanet without versions has none to serve.
fn resolve_version(d: &DatanetInfo, version: u64) -> Result<u64, ApiError> {
    if d.versionCount == 0 {
        return Err(ApiError::NotFound(format!(
            "datanet {} has no versions yet: no contribution has been approved",
            d.id
        )));
    }
    match version {
        0 => Ok(d.versionCount),
        v if v <= d.versionCount => Ok(v),
        v => Err(ApiError::NotFound(format!(
            "datanet {} has {} versions; there is no version {v}",
            d.id, d.versionCount
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_signed_after_the_node_opened_is_accepted_however_late_the_first_upload_comes() {
        // The guards are built on the first upload; "before the node started" must still mean
        // before the service opened, or a request signed a second before the first upload
        // arrives is refused as a possible replay (a slow machine did exactly that).
        let dir = tempfile::tempdir().unwrap();
        let d = Datanets::open(&dir.path().join("blobs"), Limits::default()).unwrap();
        let signed = crate::sequencer::now();
        while crate::sequencer::now() == signed {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let guards = d.guards(&StagingConfig::default());
        let now = crate::sequencer::now();
        guards
            .replay
            .remember(B256::repeat_byte(7), Address::repeat_byte(1), signed, now)
            .unwrap();
    }
}
