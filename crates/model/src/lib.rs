//! The model runtime: Llama-family transformers (SmolLM2, Llama, Qwen2) on candle.
//!
//! - [`load`]: GGUF (F32/F16/Q8_0/Q4_0/Q4_1 natively, other formats dequantized) and safetensors + `config.json`.
//! - [`quant`]: the quantized formats with SIMD dot kernels, the decode hot path.
//! - [`tokenizer`]: byte-level BPE from GGUF metadata or `tokenizer.json`; [`chat`] templates.
//! - [`llama`]: the transformer over a batch of sequences of different lengths with per-row LoRA;
//!   `cpu_forward` is its CPU inference path on plain buffers, [`kv_cache`] the caches both paths share.
//! - [`lora`] and [`peft`]: adapters, merge/unmerge, rsLoRA, PEFT files both ways.
//! - [`sampling`] and [`generate`]: sampling, stop rules, streaming, batched generation.
//! - [`device`]: `cpu` or `cuda` (the `cuda` feature), chosen by the user or automatically.

mod big_buffer;
pub mod chat;
pub mod config;
mod cpu_forward;
pub mod device;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod load;
pub mod lora;
mod lora_kernel;
pub mod merge;
pub mod peft;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use candle_core::Device;
pub use config::{Arch, LlamaConfig};
pub use error::{ModelError, Result};
pub use generate::{generate, generate_batch, FinishReason, GenerateParams, Generation, Sequence};
pub use kv_cache::SeqCache;
pub use llama::{Llama, Logits, SeqInput};
pub use lora::{LoraAdapter, LoraConfig, LoraPair, RowAdapters, Target};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;

/// The default model's file name under `models/` (installed by `scripts/fetch-model`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model's path relative to the repository root: `models/` + [`DEFAULT_MODEL_FILE`].
pub const DEFAULT_MODEL_PATH: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[cfg(test)]
mod default_model_tests {
    #[test]
    fn the_default_path_is_the_default_file_under_models() {
        assert_eq!(
            super::DEFAULT_MODEL_PATH,
            format!("models/{}", super::DEFAULT_MODEL_FILE)
        );
    }
}
