//! [`LlamaConfig`]: the shape of a Llama-family model, read from GGUF metadata or an HF `config.json`.

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Architectures the runtime implements (same block, small differences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama, SmolLM, Mistral-style dense models.
    Llama,
    /// Qwen2: Llama plus biases on the q/k/v projections.
    Qwen2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position: usize,
    pub tie_embeddings: bool,
}

impl LlamaConfig {
    /// Checks the numbers fit together (a corrupt header must not become a panic later).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Unsupported(m));
        if self.hidden_size == 0
            || self.num_layers == 0
            || self.num_heads == 0
            || self.vocab_size == 0
        {
            return bad(format!("empty dimensions in {self:?}"));
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} heads cannot share {} kv heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dim {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if self.hidden_size > 1 << 16 || self.num_layers > 1024 || self.vocab_size > 1 << 22 {
            return bad("dimensions are implausibly large".into());
        }
        Ok(())
    }

    /// The `transformers` config for this shape (written next to safetensors we produce).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let (arch, model_type) = match self.arch {
            Arch::Llama => ("LlamaForCausalLM", "llama"),
            Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        })
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Hf {
            #[serde(default)]
            architectures: Vec<String>,
            #[serde(default)]
            model_type: Option<String>,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            vocab_size: usize,
            rms_norm_eps: f64,
            rope_theta: Option<f64>,
            max_position_embeddings: Option<usize>,
            #[serde(default)]
            tie_word_embeddings: bool,
            hidden_act: Option<String>,
            #[serde(default)]
            rope_scaling: Option<serde_json::Value>,
            #[serde(default)]
            attention_bias: bool,
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let hf: Hf =
            serde_json::from_str(&text).map_err(|e| ModelError::format(path, e.to_string()))?;
        let kind = hf.model_type.clone().unwrap_or_default();
        let arch = if kind == "qwen2" || hf.architectures.iter().any(|a| a.starts_with("Qwen2")) {
            Arch::Qwen2
        } else if ["llama", "mistral", ""].contains(&kind.as_str()) {
            Arch::Llama
        } else {
            return Err(ModelError::Unsupported(format!(
                "{}: model_type {kind:?} is not a Llama-family model (llama, mistral, qwen2)",
                path.display()
            )));
        };
        if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(ModelError::Unsupported(format!(
                "hidden_act {act:?} (only silu)"
            )));
        }
        if let Some(rs) = hf.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            let kind = rs["rope_type"]
                .as_str()
                .or(rs["type"].as_str())
                .unwrap_or("?");
            if kind != "default" {
                return Err(ModelError::Unsupported(format!(
                    "rope_scaling {kind:?} (only unscaled rotary embeddings)"
                )));
            }
        }
        if hf.attention_bias && arch == Arch::Llama {
            return Err(ModelError::Unsupported(
                "attention_bias on a Llama model".into(),
            ));
        }
        let cfg = Self {
            arch,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            max_position: hf.max_position_embeddings.unwrap_or(4096),
            tie_embeddings: hf.tie_word_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
