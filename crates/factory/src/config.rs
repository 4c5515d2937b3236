//! [`TrainConfig`]: every knob of a fine-tuning job, with LLaMA-Factory's names and (mostly) its
//! defaults, read from and written to TOML. [`TrainConfig::check`] refuses settings that cannot train
//! before anything is loaded, with a message that says what to change; the checks that need the model
//! (targets, context length) are in [`TrainConfig::check_against`].

use crate::error::{Error, Result};
use openledger_model::{peft, LlamaConfig, Target};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// LoRA on a float base (a GGUF model is dequantized), or QLoRA on the quantized base (kept in
/// its GGUF blocks, float weights quantized to `quantization_bit`; see [`crate::quantized`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Lora,
    Qlora,
}

/// How the learning rate moves after warm-up (Hugging Face `get_scheduler` semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// What a data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Decided per line: `conversations` → sharegpt, `instruction` → alpaca, `prompt`/`response`
    /// or `text` → datanet rows.
    #[default]
    Auto,
    /// `openledger datanet export` lines: `{"prompt","response",…}` or `{"text",…}`.
    Datanet,
    /// LLaMA-Factory alpaca: `instruction`, `input`, `output`, `system`, `history`.
    Alpaca,
    /// LLaMA-Factory sharegpt: `conversations: [{from, value}]`, optional `system`.
    Sharegpt,
}

/// One data source of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A JSONL file (or a JSON array for alpaca / sharegpt).
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// `ID@VERSION` when the file is a datanet export (provenance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datanet: Option<String>,
}

/// A fine-tuning job's settings. Field names follow LLaMA-Factory; 0 means "off" for the optional
/// counts (`max_steps`, `early_stopping_patience`, `max_samples`, `warmup_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    /// QLoRA only: the bits float weights are quantized to, 4 (Q4_1, the default) or 8 (Q8_0).
    /// Weights the base already holds quantized (GGUF Q4_0, Q4_1, Q8_0) stay as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization_bit: Option<u32>,
    /// A GGUF file or a Hugging Face model directory.
    pub base_model: PathBuf,
    pub datasets: Vec<DatasetSpec>,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// `all`, or projections by name: `q_proj,v_proj` (short forms `q,v` too), as a string or a list.
    #[serde(deserialize_with = "string_or_list")]
    pub lora_target: String,
    pub use_rslora: bool,
    pub learning_rate: f64,
    #[serde(alias = "lr_scheduler")]
    pub lr_scheduler_type: Scheduler,
    pub warmup_steps: u64,
    /// Warm-up as a fraction of the steps, used when `warmup_steps` is 0.
    pub warmup_ratio: f64,
    pub num_train_epochs: f64,
    /// Stop after this many optimizer steps (0: run `num_train_epochs`).
    pub max_steps: u64,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    /// Longest example in tokens; longer ones are cut.
    pub cutoff_len: usize,
    /// Held-out share: a fraction in `[0, 1)`, or a whole number of examples (≥ 1).
    pub val_size: f64,
    pub seed: u64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Pack examples into rows of `cutoff_len` tokens (attention never crosses examples).
    pub packing: bool,
    pub logging_steps: u64,
    pub save_steps: u64,
    pub eval_steps: u64,
    /// Checkpoints kept on disk (the newest ones).
    pub save_total_limit: usize,
    /// Stop after this many evaluations without a better validation loss (0: off).
    pub early_stopping_patience: u64,
    /// Use at most this many examples (0: all).
    pub max_samples: u64,
    /// Held-out prompts generated before and after training.
    pub sample_prompts: usize,
    pub sample_max_tokens: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Lora,
            quantization_bit: None,
            base_model: PathBuf::from(openledger_model::DEFAULT_MODEL_PATH),
            datasets: Vec::new(),
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            lora_target: "all".into(),
            use_rslora: false,
            learning_rate: 5e-5,
            lr_scheduler_type: Scheduler::Cosine,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            num_train_epochs: 3.0,
            max_steps: 0,
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 1,
            cutoff_len: 1024,
            val_size: 0.1,
            seed: 42,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            packing: false,
            logging_steps: 10,
            save_steps: 100,
            eval_steps: 100,
            save_total_limit: 3,
            early_stopping_patience: 0,
            max_samples: 0,
            sample_prompts: 3,
            sample_max_tokens: 32,
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s,
        Either::Many(v) => v.join(","),
    })
}

fn refuse<T>(msg: String) -> Result<T> {
    Err(Error::Invalid(msg))
}

impl TrainConfig {
    /// Parses a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Invalid(format!("config: {e}")))
    }

    /// The complete config as TOML (every field, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serializes")
    }

    /// The targets `lora_target` names, checked.
    pub fn targets(&self) -> Result<Vec<Target>> {
        let spec = self.lora_target.trim();
        if spec.eq_ignore_ascii_case("all") {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let t = Target::parse(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "lora_target names {name:?}, which this model does not have; use \"all\" or some of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return refuse(
                "lora_target is empty; use \"all\" or list projections such as \"q_proj,v_proj\""
                    .into(),
            );
        }
        out.sort();
        Ok(out)
    }

    /// Refuses settings that cannot train, before anything is loaded.
    pub fn check(&self) -> Result<()> {
        let finite = |name: &str, v: f64| -> Result<()> {
            if v.is_finite() {
                Ok(())
            } else {
                refuse(format!("{name} is {v}; it must be a finite number"))
            }
        };
        for (n, v) in [
            ("lora_alpha", self.lora_alpha),
            ("lora_dropout", self.lora_dropout),
            ("learning_rate", self.learning_rate),
            ("warmup_ratio", self.warmup_ratio),
            ("num_train_epochs", self.num_train_epochs),
            ("val_size", self.val_size),
            ("max_grad_norm", self.max_grad_norm),
            ("weight_decay", self.weight_decay),
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
            ("adam_epsilon", self.adam_epsilon),
        ] {
            finite(n, v)?;
        }
        match (self.method, self.quantization_bit) {
            (Method::Lora, Some(bits)) => {
                return refuse(format!(
                    "quantization_bit is {bits} but method is lora (a float base); set method = \"qlora\" to train on a quantized base, or remove quantization_bit"
                ))
            }
            (Method::Qlora, Some(bits)) => {
                crate::quantized::format_for_bits(bits)?;
            }
            _ => {}
        }
        if self.lora_rank == 0 || self.lora_rank > peft::MAX_RANK {
            return refuse(format!(
                "lora_rank is {}; set it between 1 and {} (8 or 16 are usual)",
                self.lora_rank,
                peft::MAX_RANK
            ));
        }
        if self.lora_alpha <= 0.0 || self.lora_alpha > peft::MAX_ALPHA {
            return refuse(format!(
                "lora_alpha is {}; set it above 0 and at most {} (usually twice the rank)",
                self.lora_alpha,
                peft::MAX_ALPHA
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return refuse(format!(
                "lora_dropout is {}; set it in [0, 1) (0 or 0.05 are usual)",
                self.lora_dropout
            ));
        }
        self.targets()?;
        if self.learning_rate <= 0.0 || self.learning_rate > 1.0 {
            return refuse(format!(
                "learning_rate is {}; set it above 0 and at most 1 (LoRA usually trains at 5e-5 to 5e-4)",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return refuse(format!(
                "warmup_ratio is {}; set it in [0, 1)",
                self.warmup_ratio
            ));
        }
        if self.max_steps == 0 && self.num_train_epochs <= 0.0 {
            return refuse(format!(
                "num_train_epochs is {} and max_steps is 0; set num_train_epochs above 0 or max_steps to a number of steps",
                self.num_train_epochs
            ));
        }
        if self.per_device_train_batch_size == 0 {
            return refuse("per_device_train_batch_size is 0; set it to 1 or more".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return refuse("gradient_accumulation_steps is 0; set it to 1 or more".into());
        }
        if self.cutoff_len < 2 {
            return refuse(format!(
                "cutoff_len is {}; an example needs at least 2 tokens (1024 is usual)",
                self.cutoff_len
            ));
        }
        if self.val_size < 0.0 || (self.val_size >= 1.0 && self.val_size.fract() != 0.0) {
            return refuse(format!(
                "val_size is {}; give a fraction in [0, 1) (0.1 holds out a tenth) or a whole number of examples",
                self.val_size
            ));
        }
        if self.max_grad_norm < 0.0 {
            return refuse(format!(
                "max_grad_norm is {}; set it above 0 to clip, or 0 for no clipping",
                self.max_grad_norm
            ));
        }
        if self.weight_decay < 0.0 {
            return refuse(format!(
                "weight_decay is {}; set it to 0 or more",
                self.weight_decay
            ));
        }
        for (n, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return refuse(format!(
                    "{n} is {b}; set it in [0, 1) (0.9 and 0.999 are usual)"
                ));
            }
        }
        if self.adam_epsilon <= 0.0 {
            return refuse(format!(
                "adam_epsilon is {}; set it above 0 (1e-8 is usual)",
                self.adam_epsilon
            ));
        }
        for (n, v) in [
            ("logging_steps", self.logging_steps),
            ("save_steps", self.save_steps),
            ("eval_steps", self.eval_steps),
        ] {
            if v == 0 {
                return refuse(format!("{n} is 0; set it to 1 or more"));
            }
        }
        if self.save_total_limit == 0 {
            return refuse(
                "save_total_limit is 0; keep at least 1 checkpoint so the job can resume".into(),
            );
        }
        if self.early_stopping_patience > 0 && self.val_size == 0.0 {
            return refuse("early_stopping_patience needs a validation set; set val_size (0.1 holds out a tenth) or set early_stopping_patience to 0".into());
        }
        if self.datasets.is_empty() {
            return refuse(
                "no datasets: name a datanet export or a file ([[datasets]] path = \"…\")".into(),
            );
        }
        Ok(())
    }

    /// Checks that need the model's shape: the context length.
    pub fn check_against(&self, model: &LlamaConfig) -> Result<()> {
        if self.cutoff_len > model.max_position {
            return refuse(format!(
                "cutoff_len is {}, above the model's context of {} tokens; set cutoff_len to {} or less",
                self.cutoff_len, model.max_position, model.max_position
            ));
        }
        Ok(())
    }

    /// The block format QLoRA quantizes float weights to (`None` for LoRA).
    pub fn quant_format(&self) -> Result<Option<openledger_model::quant::QFormat>> {
        match self.method {
            Method::Lora => Ok(None),
            Method::Qlora => {
                crate::quantized::format_for_bits(self.quantization_bit.unwrap_or(4)).map(Some)
            }
        }
    }

    /// The PEFT config of the adapter this job trains.
    pub fn lora_config(&self) -> Result<openledger_model::LoraConfig> {
        let mut c =
            openledger_model::LoraConfig::new(self.lora_rank, self.lora_alpha, &self.targets()?);
        c.use_rslora = self.use_rslora;
        c.dropout = self.lora_dropout;
        c.base_model = self
            .base_model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        Ok(c)
    }

    /// Makes relative paths absolute against `base` so the written config works from anywhere.
    pub fn absolutize(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.base_model = abs(&self.base_model);
        for d in &mut self.datasets {
            d.path = abs(&d.path);
        }
    }

    /// BLAKE3 of the TOML text: the config's identity in provenance records.
    pub fn hash(&self) -> String {
        blake3::hash(self.to_toml().as_bytes()).to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let mut c = TrainConfig::default();
        c.datasets.push(DatasetSpec {
            path: "a.jsonl".into(),
            format: Format::Alpaca,
            datanet: None,
        });
        let back = TrainConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(c, back);
        assert_eq!(back.lora_rank, 8);
        assert_eq!(back.lora_alpha, 16.0);
        assert_eq!(back.learning_rate, 5e-5);
    }

    #[test]
    fn targets_accept_lists_short_names_and_all() {
        let c = TrainConfig::from_toml("lora_target = [\"q_proj\", \"v\"]").unwrap();
        assert_eq!(c.targets().unwrap(), vec![Target::Q, Target::V]);
        let c = TrainConfig::from_toml("lora_target = \"all\"").unwrap();
        assert_eq!(c.targets().unwrap().len(), 7);
        let c = TrainConfig::from_toml("lora_target = \"q,qkv_proj\"").unwrap();
        let e = c.targets().unwrap_err().to_string();
        assert!(e.contains("qkv_proj") && e.contains("q_proj"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = TrainConfig::from_toml("lora_rnak = 4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lora_rnak"), "{e}");
    }
}
