//! Staged row sets: what staging computed for each upload, kept so the chain never takes a
//! contribution's claims on trust, and so unreferenced uploads can be deleted.
//!
//! When files are staged (signed, so the signer is known) the node stores the accepted rows as a
//! blob and records, under the blob's id, the datanet, the signer and the figures staging
//! computed: rows root, row count, bytes and score. A `contribute` transaction is admitted only
//! when its `metadataUri` names a blob staged by this node for that datanet by that sender and
//! its claims equal that record ([`StagedRecords::check`]); anything else is refused before it
//! executes. Records are held in memory and persisted, one JSON file per blob under
//! `<data>/blobs-staging` (beside the blob store), written before the blob itself, so a restart forgets nothing.
//!
//! This is an admission rule of the sequencer: follower nodes re-executing its blocks do not
//! hold the uploads, trust the sequencer for it, and check only what the chain checks.
//!
//! Garbage collection ([`StagedRecords::collect`], run by [`run_gc`]) forgets records older than
//! the TTL ([`StagingConfig::ttl_secs`]; a record's age restarts when a transaction citing it is
//! admitted) and deletes a blob once it has no live record and no contribution on chain
//! references it. A referenced blob is never deleted.

use super::ApiError;
use crate::sequencer::{now, Node};
use alloy_primitives::{Address, B256};
use alloy_sol_types::SolCall;
use openledger_state::{modules::datanet, StateRead};
use openledger_store::{blob_uri, parse_blob_uri, BlobStore};
use openledger_types::{abi::IDatanet, modules};
use serde::{Deserialize, Serialize};
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

/// Staging limits and garbage collection (`[staging]` in `config.toml`). Fields left out keep
/// their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagingConfig {
    /// Most bytes one upload may carry, files and multipart framing together.
    pub max_request_bytes: u64,
    /// Most uploads one account may stage per minute.
    pub max_per_minute: u32,
    /// Most bytes one account may upload per hour.
    pub max_bytes_per_hour: u64,
    /// Most uploads read and ingested at once; more wait for a slot.
    pub max_concurrent: usize,
    /// Seconds an upload waits for a slot before it is turned away (503).
    pub queue_wait_secs: u64,
    /// Seconds an upload may take to arrive (408 after).
    pub max_upload_secs: u64,
    /// Seconds a staged row set is kept while no contribution on chain references it.
    pub ttl_secs: u64,
    /// Seconds between garbage collection passes.
    pub gc_interval_secs: u64,
    /// Most signed requests remembered at once against replay; when full, further signed
    /// requests are turned away (503) until old ones expire.
    pub max_remembered_requests: usize,
    /// Most signed requests remembered at once for one account (signed within the last
    /// 5 minutes, the replay window); past it that account's signed requests are turned away
    /// (429) until its old ones expire, so no single account can fill the table for everyone.
    pub max_signed_per_account: usize,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            max_request_bytes: 64 * 1024 * 1024,
            max_per_minute: 30,
            max_bytes_per_hour: 1024 * 1024 * 1024,
            max_concurrent: 2,
            queue_wait_secs: 30,
            max_upload_secs: 600,
            ttl_secs: 24 * 3600,
            gc_interval_secs: 600,
            max_remembered_requests: 100_000,
            max_signed_per_account: 1000,
        }
    }
}

/// What staging computed for one upload: the claims a contribution citing it must make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRecord {
    /// The datanet it was staged for.
    pub datanet_id: u64,
    /// Who signed the upload.
    pub staged_by: Address,
    /// Merkle root of the accepted rows.
    pub rows_root: B256,
    /// Accepted rows.
    pub row_count: u64,
    /// Bytes of the rows' JSONL.
    pub byte_size: u64,
    /// Score in basis points.
    pub score: u16,
    /// When it was staged (unix seconds).
    pub staged_at: u64,
    /// When a transaction citing it was last admitted (unix seconds; not persisted).
    #[serde(skip)]
    pub last_used: u64,
}

impl StagedRecord {
    fn expires_at(&self, ttl: u64) -> u64 {
        self.staged_at.max(self.last_used).saturating_add(ttl)
    }
}

/// What one garbage collection pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Staging records forgotten.
    pub records_expired: usize,
    /// Blobs deleted.
    pub blobs_deleted: usize,
    /// Blobs whose records expired but which a contribution references, so kept.
    pub blobs_kept_referenced: usize,
}

/// The staging records, in memory and on disk. See the module documentation.
pub struct StagedRecords {
    dir: PathBuf,
    by_blob: Mutex<HashMap<B256, Vec<StagedRecord>>>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn hex(id: &B256) -> String {
    format!("{id:x}").trim_start_matches("0x").to_string()
}

impl StagedRecords {
    /// Opens (creating if needed) the records in `dir`, loading every one.
    pub fn open(dir: &Path) -> Result<StagedRecords, ApiError> {
        let io = |e: std::io::Error| internal(format!("staging records {}: {e}", dir.display()));
        fs::create_dir_all(dir).map_err(io)?;
        let mut by_blob = HashMap::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|_| path.extension().is_some_and(|e| e == "json"))
                .and_then(|s| s.parse::<B256>().ok())
            else {
                continue;
            };
            let bytes = fs::read(&path).map_err(io)?;
            let mut records: Vec<StagedRecord> = serde_json::from_slice(&bytes).map_err(|e| {
                internal(format!(
                    "staging record {} is damaged ({e}); delete it to forget that upload",
                    path.display()
                ))
            })?;
            for r in &mut records {
                r.last_used = r.staged_at;
            }
            by_blob.insert(id, records);
        }
        Ok(StagedRecords {
            dir: dir.to_path_buf(),
            by_blob: Mutex::new(by_blob),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<B256, Vec<StagedRecord>>> {
        self.by_blob.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, blob: &B256) -> PathBuf {
        self.dir.join(format!("{}.json", hex(blob)))
    }

    /// Writes a blob's records durably (temporary file, sync, rename, sync the directory), or
    /// removes the file when there are none.
    fn persist(&self, blob: &B256, records: &[StagedRecord]) -> Result<(), ApiError> {
        let path = self.path(blob);
        let io = |e: std::io::Error| internal(format!("staging record {}: {e}", path.display()));
        if records.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec(records).map_err(internal)?;
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }

    /// Records an upload and stores its blob: the record is written first, so no blob is ever
    /// without the record that lets garbage collection find it.
    pub fn stage(
        &self,
        blobs: &BlobStore,
        bytes: &[u8],
        record: StagedRecord,
    ) -> Result<B256, ApiError> {
        let id = openledger_store::blob_id(bytes);
        let mut all = self.lock();
        let mut records = all.get(&id).cloned().unwrap_or_default();
        records.retain(|r| !(r.datanet_id == record.datanet_id && r.staged_by == record.staged_by));
        records.push(record);
        self.persist(&id, &records)?;
        all.insert(id, records);
        blobs.put(bytes).map_err(internal)?;
        Ok(id)
    }

    /// The records of one blob.
    pub fn records(&self, blob: &B256) -> Vec<StagedRecord> {
        self.lock().get(blob).cloned().unwrap_or_default()
    }

    /// Admits or refuses a transaction from `sender` with calldata `input` to `to`: a call of
    /// `IDatanet.contribute` must cite a row set this node staged for that datanet by that
    /// sender, with the very figures staging computed. Any other transaction passes. Admitting
    /// one restarts its record's age, so garbage collection keeps the blob while the
    /// transaction waits to be sealed.
    pub fn check(
        &self,
        blobs: &BlobStore,
        sender: Address,
        to: Option<Address>,
        input: &[u8],
        now: u64,
    ) -> Result<(), String> {
        if to != Some(modules::DATANET)
            || input.get(..4) != Some(&IDatanet::contributeCall::SELECTOR[..])
        {
            return Ok(());
        }
        // Malformed calldata is the executor's to report.
        let Ok(c) = IDatanet::contributeCall::abi_decode(input) else {
            return Ok(());
        };
        let stage_first = "stage the files first (openledger datanet contribute, or POST /v1/datanets/<id>/stage) and send the figures and the blake3: URI its report gives";
        let blob = parse_blob_uri(&c.metadataUri).map_err(|_| {
            format!(
                "metadataUri {:?} is not a row set staged on this node; {stage_first}",
                c.metadataUri
            )
        })?;
        let mut all = self.lock();
        let at = all.get(&blob).and_then(|rs| {
            rs.iter()
                .position(|r| r.datanet_id == c.datanetId && r.staged_by == sender)
        });
        let Some(at) = at else {
            return Err(match records_summary(&all, &blob) {
                Some(who) => format!(
                    "row set {} was staged on this node {who}, not for datanet {} by {sender}; {stage_first}",
                    c.metadataUri, c.datanetId
                ),
                None => format!(
                    "row set {} was not staged on this node (or it expired unreferenced); {stage_first}",
                    c.metadataUri
                ),
            });
        };
        let Some(r) = all.get_mut(&blob).and_then(|rs| rs.get_mut(at)) else {
            return Err(format!(
                "row set {} was not staged on this node",
                c.metadataUri
            ));
        };
        if !blobs.contains(&blob) {
            return Err(format!(
                "the rows of {} are no longer on this node; {stage_first}",
                c.metadataUri
            ));
        }
        let mut wrong = Vec::new();
        if c.rowsRoot != r.rows_root {
            wrong.push(format!(
                "rowsRoot is {}, the staged rows' root is {}",
                c.rowsRoot, r.rows_root
            ));
        }
        if c.rowCount != r.row_count {
            wrong.push(format!(
                "rowCount is {}, staging accepted {} rows",
                c.rowCount, r.row_count
            ));
        }
        if c.byteSize != r.byte_size {
            wrong.push(format!(
                "byteSize is {}, the staged rows are {} bytes",
                c.byteSize, r.byte_size
            ));
        }
        if c.score != r.score {
            wrong.push(format!("score is {}, staging scored {}", c.score, r.score));
        }
        if !wrong.is_empty() {
            return Err(format!(
                "the contribution's claims differ from the rows staged as {}: {}; send the figures of the staging report",
                c.metadataUri,
                wrong.join("; ")
            ));
        }
        r.last_used = r.last_used.max(now);
        Ok(())
    }

    /// One garbage collection pass at `now`: forgets records older than `ttl`, and deletes the
    /// blob of each upload left without records unless a contribution on chain (`state`)
    /// references it.
    pub fn collect(
        &self,
        blobs: &BlobStore,
        state: &dyn StateRead,
        now: u64,
        ttl: u64,
    ) -> Result<GcReport, ApiError> {
        let expired_any = self
            .lock()
            .values()
            .flatten()
            .any(|r| r.expires_at(ttl) <= now);
        let mut report = GcReport::default();
        if !expired_any {
            return Ok(report);
        }
        let referenced = referenced_blobs(state)?;
        let mut all = self.lock();
        let ids: Vec<B256> = all.keys().copied().collect();
        for id in ids {
            let Some(records) = all.get_mut(&id) else {
                continue;
            };
            let before = records.len();
            records.retain(|r| r.expires_at(ttl) > now);
            if records.len() == before {
                continue;
            }
            report.records_expired += before - records.len();
            let left = records.clone();
            if left.is_empty() {
                if referenced.contains(&id) {
                    report.blobs_kept_referenced += 1;
                } else {
                    blobs.remove(&id).map_err(internal)?;
                    report.blobs_deleted += 1;
                    tracing::info!(blob = %blob_uri(&id), "deleted an unreferenced staged row set");
                }
                all.remove(&id);
            }
            self.persist(&id, &left)?;
        }
        Ok(report)
    }
}

/// Who a blob was staged for, in words; `None` when it has no records.
fn records_summary(all: &HashMap<B256, Vec<StagedRecord>>, blob: &B256) -> Option<String> {
    let rs = all.get(blob).filter(|rs| !rs.is_empty())?;
    Some(
        rs.iter()
            .map(|r| format!("for datanet {} by {}", r.datanet_id, r.staged_by))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The blobs that contributions on chain cite.
fn referenced_blobs(state: &dyn StateRead) -> Result<HashSet<B256>, ApiError> {
    let mut out = HashSet::new();
    for d in 1..=datanet::datanet_count(state)? {
        let n = datanet::contribution_count_of(state, d)?;
        let mut offset = 0;
        while offset < n {
            let ids = datanet::contribution_ids(state, d, offset, datanet::MAX_PAGE)?;
            if ids.is_empty() {
                break;
            }
            for cid in &ids {
                let c = datanet::contribution(state, *cid)?;
                if let Ok(id) = parse_blob_uri(&c.metadataUri) {
                    out.insert(id);
                }
            }
            offset += ids.len() as u64;
        }
    }
    Ok(out)
}

/// Runs garbage collection every [`StagingConfig::gc_interval_secs`] until `stop` resolves.
pub async fn run_gc(node: Arc<Node>, stop: impl std::future::Future<Output = ()>) {
    let cfg = node.config.staging.clone();
    let every = std::time::Duration::from_secs(cfg.gc_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let node = node.clone();
        let ttl = cfg.ttl_secs;
        let pass = tokio::task::spawn_blocking(move || {
            let store = node.chain().store().clone();
            node.datanets.collect_garbage(&*store, now(), ttl)
        })
        .await;
        match pass {
            Ok(Ok(r)) if r != GcReport::default() => tracing::info!(
                records = r.records_expired,
                deleted = r.blobs_deleted,
                kept = r.blobs_kept_referenced,
                "staging garbage collection"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("staging garbage collection failed: {e}"),
            Err(e) => tracing::error!("staging garbage collection task failed: {e}"),
        }
    }
}
