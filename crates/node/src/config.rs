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
    /// Largest request body on any route, in bytes, uploads included (JSON-RPC keeps its own
    /// smaller `max_request_bytes`). Absent: room for the largest datanet upload
    /// (`max_upload_files` files of `ingest.max_file_bytes`) plus 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Most HTTP requests served at once; more wait their turn (within `request_timeout_secs`).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Most JSON-RPC request bodies executed at once.
    #[serde(default = "default_max_concurrent_rpc")]
    pub max_concurrent_rpc: usize,
    /// Seconds any request may take, waiting for its turn included; past it the node answers
    /// 503. A backstop for every route: it must leave room for the slowest datanet upload
    /// (`staging.queue_wait_secs + staging.max_upload_secs`), which has its own limits.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Seconds one JSON-RPC request body may take, waiting for a worker included; calls still
    /// running or not started by then answer error -32002.
    #[serde(default = "default_rpc_timeout_secs")]
    pub rpc_timeout_secs: u64,
    /// Largest JSON-RPC response, in bytes: a call whose answer would pass it (counting the
    /// batch's earlier answers) gets error -32005 instead.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most logs one eth_getLogs returns.
    #[serde(default = "default_max_log_results")]
    pub max_log_results: usize,
    /// Browser origins (`scheme://host[:port]`) allowed to call the node besides its own
    /// (`http://127.0.0.1:PORT`, `http://localhost:PORT`, `http://[::1]:PORT`); `"*"` allows any.
    /// A request with another `Origin` is refused (403), which stops web pages from posting to
    /// the node (CSRF).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names (without port) the node answers to besides `localhost` and IP addresses;
    /// `"*"` allows any. A request for another `Host` is refused (403), which stops DNS
    /// rebinding.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Datanet ingestion limits (file size, row length, score and near-duplicate thresholds).
    #[serde(default)]
    pub ingest: Limits,
    /// Datanet staging: upload size, per-account rates, concurrent uploads, garbage
    /// collection of unreferenced uploads.
    #[serde(default)]
    pub staging: crate::datanets::StagingConfig,
    /// OpenLoRA: the base model served through the OpenAI API (none: no inference API).
    #[serde(default)]
    pub serve: ServeSettings,
    /// ModelFactory training jobs submitted to the node (off unless enabled).
    #[serde(default)]
    pub factory: FactorySettings,
}

/// `[factory]`: training jobs the node runs for chain accounts (`POST /v1/factory/jobs`). Plain
/// settings; the CLI runs the jobs (the node crate stays free of the model runtime). A job
/// trains on this machine's CPU for a long time, so only signed requests from `allow` are
/// accepted, with bounds on what one job may ask for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FactorySettings {
    /// Accept jobs at all.
    pub enabled: bool,
    /// Accounts that may submit jobs (each request signed by one of them). `init --dev`
    /// allows the dev accounts.
    pub allow: Vec<alloy_primitives::Address>,
    /// Accounts that may cancel any job (a submitter may always cancel its own).
    pub operators: Vec<alloy_primitives::Address>,
    /// Base models jobs may train on (GGUF files or model directories); a job names one by
    /// path or file name. Empty: the `[serve]` model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub base_models: Vec<std::path::PathBuf>,
    /// Most jobs waiting behind the running one; past it submissions get 429.
    pub max_queued: usize,
    /// Largest submission body (the config as JSON), in bytes.
    pub max_config_bytes: usize,
    /// Most optimizer steps one job may run.
    pub max_steps: u64,
    /// Most tokens in one micro-batch (`per_device_train_batch_size` × `cutoff_len`).
    pub max_batch_tokens: usize,
    /// Most progress streams (`GET /v1/factory/jobs/{id}/events`) open at once.
    pub max_event_streams: usize,
}

impl Default for FactorySettings {
    fn default() -> Self {
        FactorySettings {
            enabled: false,
            allow: Vec::new(),
            operators: Vec::new(),
            base_models: Vec::new(),
            max_queued: 16,
            max_config_bytes: 64 * 1024,
            max_steps: 100_000,
            max_batch_tokens: 16 * 1024,
            max_event_streams: 16,
        }
    }
}

/// `[serve]`: what OpenLoRA serves and its limits. Plain settings; the CLI builds the server
/// (the node crate stays free of the model runtime).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// The base model: a GGUF file or a Hugging Face directory. `openledger node --model` and
    /// `OPENLEDGER_MODEL` override it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<std::path::PathBuf>,
    /// Most sequences in one batched forward pass.
    pub max_batch: usize,
    /// Most sequences waiting for a slot; past it requests get 429.
    pub max_waiting: usize,
    /// RAM budget for cached adapter weights, in MiB.
    pub adapter_cache_mib: usize,
    /// The active set: most distinct adapters in one batch, and most MiB of their weights.
    pub max_active_adapters: usize,
    pub max_active_adapter_mib: usize,
    /// Serve vLLM's `/v1/load_lora_adapter` and `/v1/unload_lora_adapter` (they load any local
    /// path the node can read: for local operators only).
    pub allow_runtime_lora: bool,
    /// dLoRA: merge an adapter that serves at least `dlora_merge_share` of the rows into a copy
    /// of the base weights (f32 bases only; a quantized base never merges, its kernels are
    /// faster), and unmerge when its share falls below `dlora_unmerge_share`.
    pub dlora: bool,
    pub dlora_merge_share: f64,
    pub dlora_unmerge_share: f64,
    /// The keystore name of the operator account that records receipts of paid calls on chain
    /// and pays their gas. With one, calls to on-chain adapters need an API key and are charged
    /// to its account's prepaid credit; without, they are served free. `init --dev` sets `dev9`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Adapters (on-chain names or `adapter-<id>`) loaded into the RAM cache at start, ahead of
    /// traffic. `openledger node --preload` adds to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<String>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            model: None,
            max_batch: 8,
            max_waiting: 64,
            adapter_cache_mib: 512,
            max_active_adapters: 64,
            max_active_adapter_mib: 256,
            allow_runtime_lora: false,
            dlora: true,
            dlora_merge_share: 0.9,
            dlora_unmerge_share: 0.6,
            operator: None,
            preload: Vec::new(),
        }
    }
}

fn default_max_upload_files() -> usize {
    64
}

fn default_max_concurrent_requests() -> usize {
    64
}

fn default_max_concurrent_rpc() -> usize {
    8
}

fn default_request_timeout_secs() -> u64 {
    900
}

fn default_rpc_timeout_secs() -> u64 {
    30
}

fn default_max_response_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_max_log_results() -> usize {
    10_000
}

impl NodeConfig {
    /// The largest request body on any route: `max_body_bytes`, or room for the largest
    /// datanet upload plus 1 MiB.
    pub fn total_body_limit(&self) -> usize {
        self.max_body_bytes.unwrap_or_else(|| {
            let per_file = usize::try_from(self.ingest.max_file_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(64 * 1024);
            self.max_upload_files
                .max(1)
                .saturating_mul(per_file)
                .saturating_add(1024 * 1024)
                .max(self.max_request_bytes)
        })
    }
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
            max_body_bytes: None,
            max_concurrent_requests: default_max_concurrent_requests(),
            max_concurrent_rpc: default_max_concurrent_rpc(),
            request_timeout_secs: default_request_timeout_secs(),
            rpc_timeout_secs: default_rpc_timeout_secs(),
            max_response_bytes: default_max_response_bytes(),
            max_log_results: default_max_log_results(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ingest: Limits::default(),
            staging: Default::default(),
            serve: Default::default(),
            factory: Default::default(),
        }
    }
}
