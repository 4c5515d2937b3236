//! OpenLoRA: one base model serving many LoRA adapters through an OpenAI-compatible HTTP API.
//!
//! - [`engine`]: a dedicated thread runs continuous batching; rows with different adapters (or none)
//!   share each forward pass; admission is round-robin across adapters; a full queue refuses at once.
//! - [`dlora`]: an adapter that dominates the traffic is merged into a copy of the (f32) base
//!   weights and unmerged when the traffic mixes again, outputs unchanged within float tolerance.
//! - [`adapters`]: adapters by name from PEFT directories, a RAM cache with a byte budget.
//! - [`api`]: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (SSE streaming or
//!   JSON), vLLM's `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter`, and `GET /metrics`.
//!   Every completion runs in a `tracing` span `openai_request` whose `request_id` is the response's
//!   `id`.
//! - [`metrics`]: `GET /metrics` in Prometheus' text format under vLLM's names (`vllm:` with a
//!   `model_name` label): `num_requests_running`/`_waiting`, `prompt_tokens_total`,
//!   `generation_tokens_total`, `request_success_total{finished_reason}`, and histograms
//!   `time_to_first_token_seconds`, `inter_token_latency_seconds`, `e2e_request_latency_seconds`,
//!   `request_queue_time_seconds`, measured by the engine per sequence (a request with `n` choices
//!   counts `n`); the adapter cache as `openlora:adapter_cache_{hits,misses,evictions}_total`,
//!   `openlora:adapter_loads_total`, `openlora:adapter_load_seconds`, `openlora:adapter_cache_bytes`.
//!
//! - [`ledger`]: the chain side, supplied by the node ([`Serve::set_ledger`]): `model` may name an
//!   adapter registered on chain (by name or `adapter-<id>`), resolved to its verified blob; calls
//!   to on-chain adapters need an API key bound to an account (401), hold the most they can cost
//!   against its prepaid credit before any compute (402), and are charged durably before the
//!   answer's last bytes go out — for the tokens the client received.
//! - [`attribution`]: each completion of an on-chain adapter with an index is attributed to the
//!   datanet contributions that shaped it; the response carries an `attribution` object (in the
//!   last chunk when streaming) and the receipt commits to it.
//!
//! Build a [`Serve`] with [`Serve::open`] and merge [`router`] into an axum server.

pub mod adapters;
pub mod api;
pub mod attribution;
pub mod dlora;
pub mod engine;
pub mod error;
pub mod ledger;
pub mod metrics;
mod prompt;

pub use adapters::AdapterRegistry;
pub use api::router;
pub use engine::{Engine, EngineConfig, EngineStats, Event, Job};
pub use error::ServeError;
pub use ledger::{ChainAdapter, Hold, Ledger, Served};

use openledger_model::{load, Device, Llama, Tokenizer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Serving settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// RAM budget for cached adapter weights.
    pub adapter_cache_bytes: usize,
    /// `max_tokens` when a request gives none (capped by the context left).
    pub default_max_tokens: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Whether `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` are served. They load
    /// any local path the server can read, so they are off unless the operator turns them on
    /// (as vLLM's `VLLM_ALLOW_RUNTIME_LORA_UPDATING`).
    pub allow_runtime_lora: bool,
    /// When a dominant adapter is merged into the base weights (f32 bases only).
    pub dlora: dlora::DloraConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            adapter_cache_bytes: 512 << 20,
            default_max_tokens: 256,
            max_body_bytes: 1 << 20,
            allow_runtime_lora: false,
            dlora: dlora::DloraConfig::default(),
        }
    }
}

/// Everything the routes need: the model's id, the engine and the adapters.
pub struct Serve {
    /// The base model's id in the API (`model` field, `/v1/models`).
    pub model_id: String,
    pub engine: Engine,
    pub adapters: Arc<AdapterRegistry>,
    pub config: ServeConfig,
    ledger: OnceLock<Arc<dyn Ledger>>,
    /// Open attribution indexes.
    pub indexes: attribution::Indexes,
    /// On-chain adapters resolved so far, by the `model` value that named them (registrations
    /// never change, so a resolution stays true).
    chain_adapters: Mutex<HashMap<String, ChainAdapter>>,
}

/// Most resolved on-chain `model` values remembered.
const MAX_CHAIN_CACHE: usize = 65_536;

impl Serve {
    /// Wraps an already loaded model and starts its engine thread.
    pub fn new(
        model_id: String,
        model: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        device: Device,
        config: ServeConfig,
    ) -> Result<Arc<Self>, ServeError> {
        let adapters = Arc::new(AdapterRegistry::new(
            model.clone(),
            device,
            config.adapter_cache_bytes,
        ));
        let engine = Engine::start_with(
            model,
            tokenizer,
            config.engine.clone(),
            config.dlora.clone(),
        )
        .map_err(|e| {
            ServeError::Model(openledger_model::ModelError::Generation(format!(
                "cannot start the engine thread: {e}"
            )))
        })?;
        Ok(Arc::new(Self {
            model_id,
            engine,
            adapters,
            config,
            ledger: OnceLock::new(),
            indexes: attribution::Indexes::default(),
            chain_adapters: Mutex::new(HashMap::new()),
        }))
    }

    /// Loads adapters (local names, on-chain names or `adapter-<id>`) into the RAM cache ahead of
    /// traffic; on-chain ones are resolved and verified first.
    pub async fn preload(self: &Arc<Self>, names: &[String]) -> Result<(), ServeError> {
        for n in names {
            api::resolve_model(self, n).await?;
        }
        Ok(())
    }

    /// Connects the chain side (once; later calls are ignored).
    pub fn set_ledger(&self, ledger: Arc<dyn Ledger>) {
        let _ = self.ledger.set(ledger);
    }

    /// The chain side, when connected.
    pub fn ledger(&self) -> Option<&Arc<dyn Ledger>> {
        self.ledger.get()
    }

    pub(crate) fn cached_chain_adapter(&self, model: &str) -> Option<ChainAdapter> {
        let g = self
            .chain_adapters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        g.get(model).cloned()
    }

    pub(crate) fn remember_chain_adapter(&self, model: &str, a: &ChainAdapter) {
        let mut g = self
            .chain_adapters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if g.len() >= MAX_CHAIN_CACHE {
            g.clear();
        }
        g.insert(model.to_string(), a.clone());
    }

    /// Loads a GGUF file or Hugging Face directory on `device` (blocking; seconds for a large model)
    /// and starts serving it; the model id is the file or directory name.
    pub fn open(path: &Path, device: Device, config: ServeConfig) -> Result<Arc<Self>, ServeError> {
        let model = load::load(path, &device)?;
        let tokenizer = Tokenizer::for_model(path)?;
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::new(id, Arc::new(model), Arc::new(tokenizer), device, config)
    }
}
