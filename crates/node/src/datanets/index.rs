//! The in-memory row index of one datanet: every row of its live (pending or approved)
//! contributions by hash, with MinHash signatures for near-duplicate search, and which
//! contribution first brought each row. Built from the chain and the blob store and brought up to
//! date on each use; a rejection (which frees its rows) rebuilds it.

use super::{ApiError, Datanets};
use openledger_datanet::{dedup::signature_of_parts, DatanetIndex, RowHash, Schema};
use openledger_state::{modules::datanet, StateRead};
use openledger_types::abi::IDatanet::DatanetInfo;
use std::collections::HashMap;

/// See the module documentation.
#[derive(Default)]
pub struct RowIndex {
    /// How many of the datanet's contributions have been looked at.
    processed: u64,
    /// Pending contributions seen, whose rejection would free their rows.
    pending: Vec<u64>,
    known: DatanetIndex,
    first: HashMap<RowHash, u64>,
    missing: HashMap<u64, String>,
}

impl RowIndex {
    /// The rows, for deduplication.
    pub fn known(&self) -> &DatanetIndex {
        &self.known
    }

    /// The contribution that first brought a row.
    pub fn locate(&self, hash: &RowHash) -> Option<u64> {
        self.first.get(hash).copied()
    }

    /// Why a contribution's rows are not served, if they are not.
    pub fn missing(&self, cid: u64) -> Option<String> {
        self.missing.get(&cid).cloned()
    }

    /// Catches up with the chain.
    pub fn refresh(
        &mut self,
        state: &dyn StateRead,
        d: &DatanetInfo,
        rows: &Datanets,
    ) -> Result<(), ApiError> {
        let mut still_pending = Vec::with_capacity(self.pending.len());
        for &cid in &self.pending {
            match datanet::contribution(state, cid)?.status {
                datanet::REJECTED => {
                    *self = RowIndex::default();
                    return self.refresh(state, d, rows);
                }
                datanet::PENDING => still_pending.push(cid),
                _ => {}
            }
        }
        self.pending = still_pending;
        let schema = super::schema_of(d)?;
        let total = datanet::contribution_count_of(state, d.id)?;
        while self.processed < total {
            let ids = datanet::contribution_ids(state, d.id, self.processed, datanet::MAX_PAGE)?;
            for cid in &ids {
                self.add(state, schema, *cid, rows)?;
            }
            self.processed += ids.len() as u64;
            if ids.is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        state: &dyn StateRead,
        schema: Schema,
        cid: u64,
        rows: &Datanets,
    ) -> Result<(), ApiError> {
        let c = datanet::contribution(state, cid)?;
        if c.status == datanet::REJECTED {
            return Ok(());
        }
        if c.status == datanet::PENDING {
            self.pending.push(cid);
        }
        match rows.rows_of(schema, &c) {
            Ok(set) => {
                for (row, hash) in set.rows.iter().zip(&set.hashes) {
                    self.first.entry(*hash).or_insert(cid);
                    // Signed as the ingestion pipeline signs a row: its fields, in order.
                    self.known.insert(*hash, signature_of_parts(&row.fields()));
                }
            }
            Err(why) => {
                tracing::warn!(
                    contribution = cid,
                    datanet = c.datanetId,
                    "rows unavailable: {why}"
                );
                self.missing.insert(cid, why);
            }
        }
        Ok(())
    }
}
