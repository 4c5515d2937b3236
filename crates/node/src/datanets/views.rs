//! The JSON shapes of the datanet REST routes: the chain's records with readable field names,
//! shared by the node (which writes them) and the CLI and dashboard (which read them).

use alloy_primitives::{Address, B256};
use openledger_datanet::{Schema, Status};
use openledger_types::abi::IDatanet::{ContributionInfo, DatanetInfo, VersionInfo};
use serde::{Deserialize, Serialize};

/// A datanet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatanetView {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    pub summary: String,
    /// Markdown.
    pub description: String,
    pub tags: Vec<String>,
    /// `None` for a data type this node does not know.
    pub schema: Option<Schema>,
    pub licence: String,
    pub permissioned: bool,
    pub version_count: u64,
    /// Root of the latest version.
    pub latest_root: B256,
    /// Rows in the latest version (as approved contributions counted them).
    pub row_count: u64,
    pub contribution_count: u64,
    /// Unix seconds.
    pub created_at: u64,
}

impl DatanetView {
    /// From the chain's record and its contribution count.
    pub fn new(d: &DatanetInfo, contribution_count: u64) -> Self {
        DatanetView {
            id: d.id,
            owner: d.owner,
            name: d.name.clone(),
            summary: d.summary.clone(),
            description: d.description.clone(),
            tags: d.tags.clone(),
            schema: Schema::from_data_type(d.dataType),
            licence: d.licence.clone(),
            permissioned: d.permissioned,
            version_count: d.versionCount,
            latest_root: d.latestRoot,
            row_count: d.rowCount,
            contribution_count,
            created_at: d.createdAt,
        }
    }
}

/// A contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionView {
    pub id: u64,
    pub datanet_id: u64,
    pub contributor: Address,
    pub rows_root: B256,
    pub row_count: u64,
    pub byte_size: u64,
    pub score_bps: u16,
    pub metadata_uri: String,
    pub status: Status,
    /// The owner's reason, when rejected.
    pub reason: String,
    /// The version it created, when approved.
    pub version: u64,
    /// Why this node cannot serve its rows, if it cannot.
    pub rows_unavailable: Option<String>,
}

impl ContributionView {
    /// From the chain's record and the node's row availability.
    pub fn new(c: &ContributionInfo, rows_unavailable: Option<String>) -> Self {
        ContributionView {
            id: c.id,
            datanet_id: c.datanetId,
            contributor: c.contributor,
            rows_root: c.rowsRoot,
            row_count: c.rowCount,
            byte_size: c.byteSize,
            score_bps: c.score,
            metadata_uri: c.metadataUri.clone(),
            status: Status::from_code(c.status).unwrap_or(Status::Pending),
            reason: c.reason.clone(),
            version: c.version,
            rows_unavailable,
        }
    }
}

/// A version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    pub version: u64,
    pub root: B256,
    /// The contribution whose approval created it.
    pub contribution_id: u64,
    /// Rows in the datanet at this version.
    pub row_count: u64,
    /// Unix seconds.
    pub created_at: u64,
}

impl From<&VersionInfo> for VersionView {
    fn from(v: &VersionInfo) -> Self {
        VersionView {
            version: v.version,
            root: v.root,
            contribution_id: v.contributionId,
            row_count: v.rowCount,
            created_at: v.createdAt,
        }
    }
}
