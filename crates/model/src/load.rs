//! Loading models from disk: a GGUF file, or a directory with `config.json` + `*.safetensors`.
//!
//! GGUF Q4_0/Q4_1/Q8_0 projections stay in their bytes and run on our kernels; F32/F16/BF16 and the
//! k-quant formats are dequantized to f32 through candle. Llama GGUF files store Q/K rows permuted for
//! llama.cpp's interleaved rotary; we undo that at load so every model (and every PEFT adapter, which
//! is trained on the HF layout) sees the Hugging Face row order.

use crate::config::{Arch, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::linear::{Linear, Weight};
use crate::llama::{has_qkv_bias, Block, Llama};
use crate::quant::{QFormat, QWeight};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A GGUF file opened for reading: metadata plus lazy tensor access.
pub struct Gguf {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    file: BufReader<File>,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut file = BufReader::new(file);
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::format(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file,
        })
    }

    pub fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    fn err(&self, msg: impl Into<String>) -> ModelError {
        ModelError::format(&self.path, msg)
    }

    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.meta(key)
            .ok_or_else(|| self.err(format!("missing metadata {key}")))?
            .to_string()
            .map(String::as_str)
            .map_err(|e| self.err(format!("{key}: {e}")))
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self
            .meta(key)
            .ok_or_else(|| self.err(format!("missing metadata {key}")))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
            .map(|x| x as usize)
            .map_err(|e| self.err(format!("{key}: {e}")))
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        let v = self.meta(key)?;
        v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
    }

    /// The items of an array-valued key, each converted by `item`.
    fn meta_array<T>(
        &self,
        key: &str,
        item: impl Fn(&gguf_file::Value) -> candle_core::Result<T>,
    ) -> Result<Vec<T>> {
        let arr = self
            .meta(key)
            .ok_or_else(|| self.err(format!("missing metadata {key}")))?;
        let arr = arr.to_vec().map_err(|e| self.err(format!("{key}: {e}")))?;
        arr.iter()
            .map(|v| item(v).map_err(|e| self.err(format!("{key}: {e}"))))
            .collect()
    }

    /// Strings of an array-valued key (tokens, merges).
    pub fn meta_strings(&self, key: &str) -> Result<Vec<String>> {
        self.meta_array(key, |v| v.to_string().cloned())
    }

    /// Integers of an array-valued key (token types).
    pub fn meta_ints(&self, key: &str) -> Result<Vec<i64>> {
        self.meta_array(key, |v| {
            v.to_i32()
                .map(i64::from)
                .or_else(|_| v.to_u32().map(i64::from))
        })
    }

    pub fn meta_u32(&self, key: &str) -> Option<u32> {
        self.meta_usize(key).ok().map(|v| v as u32)
    }

    /// The model shape from `<arch>.*` metadata.
    pub fn config(&self) -> Result<LlamaConfig> {
        let arch_name = self.meta_str("general.architecture")?.to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "{}: architecture {other:?} (supported: llama, qwen2)",
                    self.path.display()
                )))
            }
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let hidden = self.meta_usize(&p("embedding_length"))?;
        let heads = self.meta_usize(&p("attention.head_count"))?;
        let vocab = match self.meta_usize(&p("vocab_size")) {
            Ok(v) => v,
            Err(_) => self.meta_strings("tokenizer.ggml.tokens")?.len(),
        };
        let cfg = LlamaConfig {
            arch,
            hidden_size: hidden,
            intermediate_size: self.meta_usize(&p("feed_forward_length"))?,
            num_layers: self.meta_usize(&p("block_count"))?,
            num_heads: heads,
            num_kv_heads: self
                .meta_usize(&p("attention.head_count_kv"))
                .unwrap_or(heads),
            head_dim: self
                .meta_usize(&p("attention.key_length"))
                .unwrap_or(hidden / heads.max(1)),
            vocab_size: vocab,
            rms_norm_eps: self
                .meta_f64(&p("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: self.meta_f64(&p("rope.freq_base")).unwrap_or(10_000.0),
            max_position: self.meta_usize(&p("context_length")).unwrap_or(4096),
            tie_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor as a [`Weight`]: native formats keep their bytes, others become f32.
    pub fn weight(&mut self, name: &str, device: &Device) -> Result<Weight> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.err(format!("missing tensor {name}")))?;
        let format = match info.ggml_dtype {
            GgmlDType::Q4_0 => Some(QFormat::Q4_0),
            GgmlDType::Q4_1 => Some(QFormat::Q4_1),
            GgmlDType::Q8_0 => Some(QFormat::Q8_0),
            _ => None,
        };
        let dims = info.shape.dims().to_vec();
        if let (Some(format), [rows, cols]) = (format, dims.as_slice()) {
            if device.is_cpu() {
                let bytes = rows * cols / 32 * format.block_bytes();
                let start = self.content.tensor_data_offset + info.offset;
                let mut data = vec![0u8; bytes];
                self.file
                    .seek(SeekFrom::Start(start))
                    .map_err(|e| ModelError::io(&self.path, e))?;
                self.file
                    .read_exact(&mut data)
                    .map_err(|e| self.err(format!("tensor {name} is truncated: {e}")))?;
                return QWeight::new(format, *rows, *cols, data)
                    .map(Weight::Quant)
                    .map_err(|m| self.err(format!("{name}: {m}")));
            }
        }
        Ok(Weight::Float(self.tensor_f32(name, device)?))
    }

    /// A tensor dequantized to f32.
    pub fn tensor_f32(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        let q = self
            .content
            .tensor(&mut self.file, name, device)
            .map_err(|e| self.err(format!("tensor {name}: {e}")))?;
        Ok(q.dequantize(device)?.to_dtype(DType::F32)?)
    }
}

/// Reorders Q/K rows from llama.cpp's interleaved-rotary order to the HF half-split order.
fn unpermute_rows(w: Weight, heads: usize, device: &Device) -> Result<Weight> {
    let (rows, _) = w.dims();
    let hd = rows / heads;
    let order: Vec<u32> = (0..heads)
        .flat_map(|h| {
            (0..2).flat_map(move |j| (0..hd / 2).map(move |i| (h * hd + 2 * i + j) as u32))
        })
        .collect();
    Ok(match w {
        Weight::Float(t) => {
            Weight::Float(t.index_select(&Tensor::new(order.as_slice(), device)?, 0)?)
        }
        Weight::Quant(q) => Weight::Quant(q.permute_rows(&order)),
    })
}

/// Loads a GGUF model.
pub fn load_gguf(path: &Path, device: &Device) -> Result<Llama> {
    let mut g = Gguf::open(path)?;
    let cfg = g.config()?;
    let permuted = cfg.arch == Arch::Llama;
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("blk.{i}.{n}");
        let bias = |g: &mut Gguf, n: &str| -> Result<Option<Tensor>> {
            if has_qkv_bias(cfg.arch) && g.has(&p(n)) {
                Ok(Some(g.tensor_f32(&p(n), device)?))
            } else {
                Ok(None)
            }
        };
        let mut q = g.weight(&p("attn_q.weight"), device)?;
        let mut k = g.weight(&p("attn_k.weight"), device)?;
        if permuted {
            q = unpermute_rows(q, cfg.num_heads, device)?;
            k = unpermute_rows(k, cfg.num_kv_heads, device)?;
        }
        blocks.push(Block {
            attn_norm: g.tensor_f32(&p("attn_norm.weight"), device)?,
            q: Linear::new(q, bias(&mut g, "attn_q.bias")?),
            k: Linear::new(k, bias(&mut g, "attn_k.bias")?),
            v: Linear::new(
                g.weight(&p("attn_v.weight"), device)?,
                bias(&mut g, "attn_v.bias")?,
            ),
            o: Linear::new(g.weight(&p("attn_output.weight"), device)?, None),
            ffn_norm: g.tensor_f32(&p("ffn_norm.weight"), device)?,
            gate: Linear::new(g.weight(&p("ffn_gate.weight"), device)?, None),
            up: Linear::new(g.weight(&p("ffn_up.weight"), device)?, None),
            down: Linear::new(g.weight(&p("ffn_down.weight"), device)?, None),
        });
    }
    let embed = g.weight("token_embd.weight", device)?;
    let lm_head = if cfg.tie_embeddings {
        embed.clone()
    } else {
        g.weight("output.weight", device)?
    };
    let norm = g.tensor_f32("output_norm.weight", device)?;
    check_shapes(&cfg, &embed, &blocks, path)?;
    let mut model = Llama::new(cfg, embed, blocks, norm, lm_head, device)?;
    model.set_f16_attention(true);
    Ok(model)
}

/// Loads a Hugging Face model directory (`config.json` + one or more `*.safetensors`).
pub fn load_safetensors(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "safetensors")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("adapter_"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::format(
            dir,
            "no *.safetensors weights in the directory",
        ));
    }
    for f in &files {
        let loaded = candle_core::safetensors::load(f, device)
            .map_err(|e| ModelError::format(f, e.to_string()))?;
        tensors.extend(loaded);
    }
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| ModelError::format(dir, format!("missing tensor {name}")))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let mut lin = |n: &str, bias: bool| -> Result<Linear> {
            let w = take(&p(&format!("{n}.weight")))?;
            let b = if bias {
                Some(take(&p(&format!("{n}.bias")))?)
            } else {
                None
            };
            Ok(Linear::new(Weight::Float(w), b))
        };
        let qb = has_qkv_bias(cfg.arch);
        let (q, k, v) = (
            lin("self_attn.q_proj", qb)?,
            lin("self_attn.k_proj", qb)?,
            lin("self_attn.v_proj", qb)?,
        );
        let o = lin("self_attn.o_proj", false)?;
        let (gate, up, down) = (
            lin("mlp.gate_proj", false)?,
            lin("mlp.up_proj", false)?,
            lin("mlp.down_proj", false)?,
        );
        blocks.push(Block {
            attn_norm: take(&p("input_layernorm.weight"))?,
            q,
            k,
            v,
            o,
            ffn_norm: take(&p("post_attention_layernorm.weight"))?,
            gate,
            up,
            down,
        });
    }
    let embed = Weight::Float(take("model.embed_tokens.weight")?);
    // Checkpoints with tied embeddings usually omit lm_head.weight.
    let lm_head = take("lm_head.weight")
        .map(Weight::Float)
        .unwrap_or_else(|_| embed.clone());
    let norm = take("model.norm.weight")?;
    check_shapes(&cfg, &embed, &blocks, dir)?;
    Llama::new(cfg, embed, blocks, norm, lm_head, device)
}

/// Loads whatever `path` is: a `.gguf` file or a safetensors directory.
pub fn load(path: &Path, device: &Device) -> Result<Llama> {
    if path.is_dir() {
        load_safetensors(path, device)
    } else if path.exists() {
        load_gguf(path, device)
    } else {
        Err(ModelError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model file or directory (run ./scripts/fetch-model for the default one)",
            ),
        ))
    }
}

fn check_shapes(cfg: &LlamaConfig, embed: &Weight, blocks: &[Block], path: &Path) -> Result<()> {
    let (h, kv) = (cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim);
    let want = [
        ("embedding", embed.dims(), (cfg.vocab_size, h)),
        (
            "q",
            blocks[0].q.weight.dims(),
            (cfg.num_heads * cfg.head_dim, h),
        ),
        ("k", blocks[0].k.weight.dims(), (kv, h)),
        ("v", blocks[0].v.weight.dims(), (kv, h)),
        (
            "gate",
            blocks[0].gate.weight.dims(),
            (cfg.intermediate_size, h),
        ),
        (
            "down",
            blocks[0].down.weight.dims(),
            (h, cfg.intermediate_size),
        ),
    ];
    for (name, got, want) in want {
        if got != want {
            return Err(ModelError::format(
                path,
                format!("{name} weight is {got:?}, the config implies {want:?}"),
            ));
        }
    }
    Ok(())
}
