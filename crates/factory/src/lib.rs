//! ModelFactory: LoRA fine-tuning jobs on the model runtime (`openledger-model`).
//!
//! A job trains a LoRA adapter on a base model (GGUF, dequantized to f32, or a safetensors
//! directory) or, with `method = "qlora"`, on the base kept quantized (GGUF Q4_0 / Q4_1 / Q8_0 as
//! the runtime serves it; float weights quantized to 4 or 8 bits), from datanet exports and
//! LLaMA-Factory alpaca / sharegpt files, on the CPU:
//!
//! ```no_run
//! use openledger_factory::{config::TrainConfig, Job, TerminalProgress};
//! use std::sync::atomic::AtomicBool;
//! # fn main() -> openledger_factory::Result<()> {
//! let config = TrainConfig::from_toml_file("train.toml".as_ref())?;
//! let mut job = Job::prepare(config, "jobs/first".as_ref())?;   // refuses bad settings and data
//! let outcome = job.run(&TerminalProgress::new(), &AtomicBool::new(false))?;
//! println!("{:?} -> {:?}", outcome.status, outcome.adapter_dir);
//! // after a crash or a stop: Job::resume("jobs/first".as_ref())?.run(…)
//! # Ok(()) }
//! ```
//!
//! # The job directory
//!
//! ```text
//! JOB/
//!   config.toml          the complete resolved config (every knob, absolute paths): repeat the run with it
//!   data.jsonl           the examples used, one record a line (with datanet contribution ids)
//!   rejected.jsonl       rows that could not train, each with its source, line and reason
//!   log.jsonl            training lines {step, epoch, loss, lr, grad_norm, tokens_per_s}
//!                        and evaluation lines {step, epoch, val_loss, val_ppl}
//!   loss.png, loss.svg   the training and validation loss curves
//!   samples.json         greedy generations on held-out prompts, "before" and "after" training
//!   metrics.json         final metrics: losses, perplexity, tokens/s, peak RSS, hashes
//!   checkpoints/
//!     LATEST             the name of the newest complete checkpoint
//!     step-00000100/     adapter_config.json + adapter_model.safetensors (PEFT), optimizer.safetensors,
//!                        state.json (step, epoch, the epoch's data order, dropout stream, counters)
//!   adapter/             the final adapter (PEFT)
//!   adapter-best/        the adapter at the best validation loss
//! ```
//!
//! # Modules
//!
//! - [`config`]: settings (LLaMA-Factory names and defaults), TOML, validation.
//! - [`data`]: file formats, tokenization with the chat template and response-only loss, split,
//!   shuffling, packing and batching.
//! - [`forward`] and [`ops`]: the differentiable forward pass and its CPU custom ops;
//!   [`quantized`]: QLoRA's quantized frozen weights; [`bf16`]: the frozen float weights'
//!   products in bf16 on CPUs with AVX512_BF16 (`OPENLEDGER_TRAIN_PRECISION=f32` keeps f32).
//! - [`adapter`], [`optim`]: trainable LoRA variables, AdamW, clipping, schedules.
//! - [`job`], [`checkpoint`]: the training loop, evaluation, checkpoints and resume.
//! - [`progress`], [`plot`], [`metrics`]: reporting.
//!
//! Every random choice derives from the seed ([`rng`]), so a run is reproducible, and a resumed run
//! is bit-identical to an uninterrupted one on the same number of threads (`RAYON_NUM_THREADS`).

pub mod adapter;
pub mod bf16;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod forward;
pub mod fused;
pub mod job;
pub mod metrics;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod quantized;
pub mod rng;

pub use config::TrainConfig;
pub use error::{Error, Result};
pub use job::{Job, Outcome, Status};
pub use metrics::Metrics;
pub use progress::{Event, NoProgress, Progress, TerminalProgress};

pub const CONFIG_FILE: &str = "config.toml";
pub const DATA_FILE: &str = "data.jsonl";
pub const REJECTED_FILE: &str = "rejected.jsonl";
pub const LOG_FILE: &str = "log.jsonl";
pub const SAMPLES_FILE: &str = "samples.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const PLOT_PNG: &str = "loss.png";
pub const PLOT_SVG: &str = "loss.svg";
pub const ADAPTER_DIR: &str = "adapter";
pub const BEST_ADAPTER_DIR: &str = "adapter-best";
