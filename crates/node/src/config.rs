//! The node's configuration file (`config.toml` in the chain home).

use openledger_datanet::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where JSON-RPC listens (127.0.0.1 by default).
    pub rpc_addr: SocketAddr,
    /// Milliseconds between blocks.
    pub block_time_ms: u64,
    /// Seal a block right after each request that submits transactions (for development).
    pub dev: bool,
    /// Largest JSON-RPC request body, in bytes.
    pub max_request_bytes: usize,
    /// Most calls in one JSON-RPC batch.
    pub max_batch: usize,
    /// Most blocks one eth_getLogs may scan.
    pub max_log_range: u64,
    /// Most files in one datanet contribution upload.
    #[serde(default = "default_max_upload_files")]
    pub max_upload_files: usize,
    /// Datanet ingestion limits (file size, row length, score and near-duplicate thresholds).
    #[serde(default)]
    pub ingest: Limits,
    /// Datanet staging: upload size, per-account rates, concurrent uploads, garbage
    /// collection of unreferenced uploads.
    #[serde(default)]
    pub staging: crate::datanets::StagingConfig,
}

fn default_max_upload_files() -> usize {
    64
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            rpc_addr: "127.0.0.1:8545".parse().expect("valid address"),
            block_time_ms: 2000,
            dev: false,
            max_request_bytes: 1024 * 1024,
            max_batch: 1000,
            max_log_range: 10_000,
            max_upload_files: default_max_upload_files(),
            ingest: Limits::default(),
            staging: Default::default(),
        }
    }
}
