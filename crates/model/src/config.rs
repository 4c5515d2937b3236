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

/// Upper bounds on a model's shape. Every Llama-family model we know sits well inside them (Llama 3.1
/// 405B: hidden 16384, 126 layers, 128 heads of 128, FFN 53248, vocabulary 128256, context 131072);
/// numbers past them come from a corrupt or hostile file and are refused before they size anything.
pub mod limits {
    pub const MAX_HIDDEN: usize = 1 << 16;
    pub const MAX_FFN: usize = 1 << 18;
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_HEADS: usize = 1024;
    pub const MAX_HEAD_DIM: usize = 1024;
    pub const MAX_VOCAB: usize = 1 << 22;
    pub const MAX_CONTEXT: usize = 1 << 20;
    /// `context × head_dim`: the rotary tables hold that many f32 (cos and sin, half each), 1 GiB.
    pub const MAX_ROTARY: usize = 1 << 28;
}

/// A field of [`LlamaConfig`], so loaders can name it as their file format spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Hidden,
    Ffn,
    Layers,
    Heads,
    KvHeads,
    HeadDim,
    Vocab,
    Context,
    NormEps,
    RopeTheta,
}

impl Field {
    /// The key in GGUF metadata, after the `<arch>.` prefix.
    pub fn gguf_key(self) -> &'static str {
        match self {
            Field::Hidden => "embedding_length",
            Field::Ffn => "feed_forward_length",
            Field::Layers => "block_count",
            Field::Heads => "attention.head_count",
            Field::KvHeads => "attention.head_count_kv",
            Field::HeadDim => "attention.key_length",
            Field::Vocab => "vocab_size",
            Field::Context => "context_length",
            Field::NormEps => "attention.layer_norm_rms_epsilon",
            Field::RopeTheta => "rope.freq_base",
        }
    }

    /// The key in a Hugging Face `config.json`.
    pub fn hf_key(self) -> &'static str {
        match self {
            Field::Hidden => "hidden_size",
            Field::Ffn => "intermediate_size",
            Field::Layers => "num_hidden_layers",
            Field::Heads => "num_attention_heads",
            Field::KvHeads => "num_key_value_heads",
            Field::HeadDim => "head_dim",
            Field::Vocab => "vocab_size",
            Field::Context => "max_position_embeddings",
            Field::NormEps => "rms_norm_eps",
            Field::RopeTheta => "rope_theta",
        }
    }
}

/// Why a config was refused: the field, and what is wrong with it (a sentence that follows its name).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub field: Field,
    pub msg: String,
}

impl LlamaConfig {
    /// Checks every number is inside [`limits`] and that they fit together (a corrupt header must be
    /// refused here, not become a huge allocation or a panic later).
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        use limits::*;
        let err = |field, msg: String| Err(ConfigError { field, msg });
        let range = |field, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                err(field, format!("is {v}; it must be between {lo} and {hi}"))
            } else {
                Ok(())
            }
        };
        range(Field::Hidden, self.hidden_size, 1, MAX_HIDDEN)?;
        range(Field::Ffn, self.intermediate_size, 1, MAX_FFN)?;
        range(Field::Layers, self.num_layers, 1, MAX_LAYERS)?;
        range(Field::Heads, self.num_heads, 1, MAX_HEADS)?;
        range(Field::KvHeads, self.num_kv_heads, 1, self.num_heads)?;
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return err(
                Field::KvHeads,
                format!(
                    "is {}, which does not divide the {} attention heads",
                    self.num_kv_heads, self.num_heads
                ),
            );
        }
        range(Field::HeadDim, self.head_dim, 2, MAX_HEAD_DIM)?;
        if !self.head_dim.is_multiple_of(2) {
            return err(
                Field::HeadDim,
                format!(
                    "is {}; it must be even for rotary embeddings",
                    self.head_dim
                ),
            );
        }
        range(Field::Vocab, self.vocab_size, 1, MAX_VOCAB)?;
        range(Field::Context, self.max_position, 1, MAX_CONTEXT)?;
        if self.max_position * self.head_dim > MAX_ROTARY {
            return err(
                Field::Context,
                format!(
                    "is {} with a head size of {}: the rotary tables would exceed {MAX_ROTARY} values",
                    self.max_position, self.head_dim
                ),
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return err(
                Field::NormEps,
                format!(
                    "is {}; it must be a number between 0 and 1 (exclusive)",
                    self.rms_norm_eps
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return err(
                Field::RopeTheta,
                format!(
                    "is {}; it must be a positive finite number",
                    self.rope_theta
                ),
            );
        }
        Ok(())
    }

    /// [`LlamaConfig::check`] as a [`ModelError`] naming the field as [`LlamaConfig`] spells it.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|e| ModelError::Unsupported(format!("config field {:?} {}", e.field, e.msg)))
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
        let bad = |msg: String| ModelError::format(path, msg);
        // Without head_dim, the head size is hidden_size / num_attention_heads, which must divide.
        let (hidden, heads) = (hf.hidden_size, hf.num_attention_heads);
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None if heads > 0 && !hidden.is_multiple_of(heads) => {
                return Err(bad(format!(
                    "hidden_size {hidden} is not divisible by num_attention_heads {heads}, and no head_dim gives the head size"
                )))
            }
            None => hidden.checked_div(heads).unwrap_or(0),
        };
        let cfg = Self {
            arch,
            hidden_size: hidden,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            max_position: hf.max_position_embeddings.unwrap_or(4096),
            tie_embeddings: hf.tie_word_embeddings,
        };
        cfg.check()
            .map_err(|e| bad(format!("{} {}", e.field.hf_key(), e.msg)))?;
        Ok(cfg)
    }
}
