//! The final metrics of a job (`metrics.json`) and the process's peak memory.

use serde::{Deserialize, Serialize};

/// What a job reports at its end (and, partially, when stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// `finished`, `early_stopped` or `stopped`.
    pub status: String,
    pub steps: u64,
    pub total_steps: u64,
    pub epochs: f64,
    pub train_loss: Option<f64>,
    pub initial_val_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_ppl: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub train_examples: usize,
    pub val_examples: usize,
    pub rejected_rows: usize,
    pub trainable_params: usize,
    pub tokens_seen: u64,
    pub train_seconds: f64,
    pub tokens_per_s: f64,
    pub seconds_per_step: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    pub threads: usize,
    /// The precision of the products with the frozen float base weights: `bf16` (bf16 operands,
    /// f32 sums; CPUs with AVX512_BF16) or `f32` (also QLoRA, whose quantized weights keep their
    /// own kernels). Empty in metrics written before it was recorded.
    #[serde(default)]
    pub precision: String,
    /// BLAKE3 of `config.toml`, `data.jsonl` and the final `adapter_model.safetensors`.
    pub config_hash: String,
    pub data_hash: String,
    pub adapter_hash: Option<String>,
}

/// The process's peak resident set size in bytes (Linux `VmHWM`), if the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = super::peak_rss_bytes().expect("VmHWM");
            assert!(rss > 1 << 20, "{rss}");
        }
    }
}
