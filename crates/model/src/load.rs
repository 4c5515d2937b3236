//! Loading models from disk: a GGUF file, or a directory with `config.json` + `*.safetensors`.
//!
//! GGUF Q4_0/Q4_1/Q8_0 projections stay in their bytes and run on our kernels; F32/F16/BF16 and the
//! k-quant formats are dequantized to f32 through candle. Llama GGUF files store Q/K rows permuted for
//! llama.cpp's interleaved rotary; we undo that at load so every model (and every PEFT adapter, which
//! is trained on the HF layout) sees the Hugging Face row order.

use crate::config::{Arch, Field, LlamaConfig};
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

/// Limits on what a GGUF header may declare. Real files sit far below each (SmolLM2's header holds 33
/// keys and 272 tensors; the largest vocabularies, 256k tokens). A header past them is refused before
/// anything is allocated for it.
pub mod gguf_limits {
    pub const MAX_TENSORS: u64 = 1 << 16;
    pub const MAX_METADATA_KEYS: u64 = 1 << 16;
    /// Bytes of one string (a key, a value, a tensor name, a chat template).
    pub const MAX_STRING: u64 = 1 << 24;
    /// Elements of one array (vocabularies, merges).
    pub const MAX_ARRAY: u64 = 1 << 24;
    /// Array elements over all metadata (each becomes a value in memory).
    pub const MAX_METADATA_VALUES: u64 = 1 << 25;
    /// Dimensions of a tensor (GGML_MAX_DIMS).
    pub const MAX_DIMS: u32 = 4;
    /// Largest `general.alignment` (a power of two).
    pub const MAX_ALIGNMENT: u64 = 1 << 16;
}

/// Where a tensor's bytes lie in the file, computed with checked arithmetic and compared with the
/// file's length when the header is read.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Absolute offset in the file.
    start: u64,
    /// Bytes of data.
    bytes: usize,
}

/// A GGUF file opened for reading: metadata plus lazy tensor access.
///
/// [`Gguf::open`] reads the header with its own bounded parser: every count, length, dimension and
/// offset is checked against [`gguf_limits`] and the file's length, every tensor's byte range is
/// computed with checked arithmetic and must lie inside the file, so nothing later trusts a number
/// from the header.
pub struct Gguf {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    spans: HashMap<String, Span>,
    file: BufReader<File>,
}

/// A reader over the header that knows the file's length, so every length-prefixed read is
/// compared with the bytes left before anything is allocated for it.
struct HeaderReader<'a> {
    r: &'a mut BufReader<File>,
    pos: u64,
    len: u64,
    path: &'a Path,
    /// Lengths and dimensions are u32 in GGUF v1, u64 after.
    v1: bool,
    /// Array elements read so far (against [`gguf_limits::MAX_METADATA_VALUES`]).
    values: u64,
}

impl HeaderReader<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> ModelError {
        ModelError::format(self.path, format!("GGUF header (byte {}): {msg}", self.pos))
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        if (N as u64) > self.remaining() {
            return Err(self.err(format!("the file is truncated in {what}")));
        }
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(format!("reading {what}: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.bytes::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }
    /// A length or dimension: u32 in v1, u64 after.
    fn len_field(&mut self, what: &str) -> Result<u64> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    /// Reads `n` bytes, `n` already checked against a limit; refused when the file is shorter.
    fn vec(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{what} is {n} bytes long, but only {} bytes of the file remain",
                self.remaining()
            )));
        }
        let mut v = vec![0u8; n as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|e| self.err(format!("reading {what}: {e}")))?;
        self.pos += n;
        Ok(v)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len_field(what)?;
        if n > gguf_limits::MAX_STRING {
            return Err(self.err(format!(
                "{what} is a string of {n} bytes, over the limit of {}",
                gguf_limits::MAX_STRING
            )));
        }
        let mut v = self.vec(n, &format!("{what} (a string)"))?;
        // Writers sometimes NUL-terminate strings; GGUF strings are not.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// The smallest encoding of a value of type `ty`, or `None` for an unknown type.
    fn min_size(&self, ty: u32) -> Option<u64> {
        Some(match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => {
                if self.v1 {
                    4
                } else {
                    8
                }
            }
            9 => 4 + if self.v1 { 4 } else { 8 },
            10..=12 => 8,
            _ => return None,
        })
    }

    fn value(&mut self, ty: u32, key: &str, in_array: bool) -> Result<gguf_file::Value> {
        use gguf_file::Value as V;
        Ok(match ty {
            0 => V::U8(self.u8(key)?),
            1 => V::I8(self.u8(key)? as i8),
            2 => V::U16(self.u16(key)?),
            3 => V::I16(self.u16(key)? as i16),
            4 => V::U32(self.u32(key)?),
            5 => V::I32(self.u32(key)? as i32),
            6 => V::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.err(format!("{key}: a bool must be 0 or 1, found {b}"))),
            },
            8 => V::String(self.string(key)?),
            9 if in_array => {
                return Err(self.err(format!(
                    "{key}: nested arrays (arrays of arrays) are not supported"
                )))
            }
            9 => {
                let elem = self.u32(key)?;
                let Some(min) = self.min_size(elem) else {
                    return Err(self.err(format!("{key}: unknown array element type {elem}")));
                };
                if elem == 9 {
                    return Err(self.err(format!(
                        "{key}: nested arrays (arrays of arrays) are not supported"
                    )));
                }
                let n = self.len_field(key)?;
                if n > gguf_limits::MAX_ARRAY {
                    return Err(self.err(format!(
                        "{key}: an array of {n} elements, over the limit of {}",
                        gguf_limits::MAX_ARRAY
                    )));
                }
                // n ≤ 2^24 and min ≤ 12, so the product cannot overflow.
                if n * min > self.remaining() {
                    return Err(self.err(format!(
                        "{key}: an array of {n} elements needs at least {} bytes, only {} remain",
                        n * min,
                        self.remaining()
                    )));
                }
                self.values += n;
                if self.values > gguf_limits::MAX_METADATA_VALUES {
                    return Err(self.err(format!(
                        "metadata arrays hold more than {} values in all",
                        gguf_limits::MAX_METADATA_VALUES
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, true)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64(key)?),
            11 => V::I64(self.u64(key)? as i64),
            12 => V::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(self.err(format!("{key}: unknown value type {t}"))),
        })
    }
}

/// A name from the file as it goes into a message: control characters escaped, and cut short
/// (a key may be megabytes long).
fn label(name: &str) -> String {
    const MAX: usize = 96;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(MAX).is_some() {
        out.push_str(&format!("… ({} bytes)", name.len()));
    }
    out
}

/// The GGML dtype with this GGUF id (candle's own mapping is private).
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Bytes of a tensor of `dtype` with GGML dimensions `ne` (row length first), or why it has none:
/// the row length must be a whole number of blocks and every product must fit in 64 bits.
fn tensor_bytes(dtype: GgmlDType, ne: &[u64]) -> std::result::Result<u64, String> {
    let (bs, ts) = (dtype.block_size() as u64, dtype.type_size() as u64);
    let row = ne.first().copied().unwrap_or(1);
    if !row.is_multiple_of(bs) {
        return Err(format!(
            "its rows of {row} values are not a whole number of {dtype:?} blocks of {bs}"
        ));
    }
    let overflow = || format!("its size ({ne:?} of {dtype:?}) overflows 64 bits");
    // The element count must fit too: candle multiplies the dimensions out.
    ne.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(overflow)?;
    ne.iter()
        .skip(1)
        .try_fold((row / bs).checked_mul(ts), |acc, &d| {
            acc.map(|a| a.checked_mul(d))
        })
        .flatten()
        .ok_or_else(overflow)
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let mut file = BufReader::new(f);
        let (content, spans) = read_header(&mut file, path, len)?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            spans,
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
        match self.meta(key) {
            Some(gguf_file::Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(format!(
                "metadata {key} must be a string, found {:?}",
                v.value_type()
            ))),
            None => Err(self.err(format!("missing metadata {key}"))),
        }
    }

    /// An integer value as `usize`: `None` when absent; refused when it is not an integer or is
    /// negative.
    fn meta_opt_usize(&self, key: &str) -> Result<Option<usize>> {
        use gguf_file::Value as V;
        let n: i128 = match self.meta(key) {
            None => return Ok(None),
            Some(V::U8(x)) => (*x).into(),
            Some(V::I8(x)) => (*x).into(),
            Some(V::U16(x)) => (*x).into(),
            Some(V::I16(x)) => (*x).into(),
            Some(V::U32(x)) => (*x).into(),
            Some(V::I32(x)) => (*x).into(),
            Some(V::U64(x)) => (*x).into(),
            Some(V::I64(x)) => (*x).into(),
            Some(v) => {
                return Err(self.err(format!(
                    "metadata {key} must be an integer, found {:?}",
                    v.value_type()
                )))
            }
        };
        if n < 0 {
            return Err(self.err(format!("metadata {key} is {n}; it must not be negative")));
        }
        usize::try_from(n)
            .map(Some)
            .map_err(|_| self.err(format!("metadata {key} is {n}, too large for this machine")))
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        self.meta_opt_usize(key)?
            .ok_or_else(|| self.err(format!("missing metadata {key}")))
    }

    /// A number (float or integer): `None` when absent; refused when it is not a number.
    fn meta_opt_f64(&self, key: &str) -> Result<Option<f64>> {
        use gguf_file::Value as V;
        match self.meta(key) {
            None => Ok(None),
            Some(V::F32(x)) => Ok(Some((*x).into())),
            Some(V::F64(x)) => Ok(Some(*x)),
            Some(_) => self.meta_opt_usize(key).map(|v| v.map(|v| v as f64)),
        }
    }

    /// The items of an array-valued key, each converted by `item`.
    fn meta_array<T>(
        &self,
        key: &str,
        item: impl Fn(&gguf_file::Value) -> candle_core::Result<T>,
    ) -> Result<Vec<T>> {
        let arr = match self.meta(key) {
            Some(gguf_file::Value::Array(a)) => a,
            Some(v) => {
                return Err(self.err(format!(
                    "metadata {key} must be an array, found {:?}",
                    v.value_type()
                )))
            }
            None => return Err(self.err(format!("missing metadata {key}"))),
        };
        arr.iter()
            .map(|v| {
                item(v).map_err(|_| {
                    self.err(format!(
                        "metadata {key} holds a {:?} where it needs another type",
                        v.value_type()
                    ))
                })
            })
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

    /// An integer key that fits in a u32 (token ids); `None` when absent, of another type, or larger.
    pub fn meta_u32(&self, key: &str) -> Option<u32> {
        self.meta_opt_usize(key)
            .ok()
            .flatten()
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The model shape from `<arch>.*` metadata, checked against [`crate::config::limits`]; a refusal
    /// names the GGUF key.
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
        let key = |f: Field| format!("{arch_name}.{}", f.gguf_key());
        let hidden = self.meta_usize(&key(Field::Hidden))?;
        let heads = self.meta_usize(&key(Field::Heads))?;
        let vocab = match self.meta_opt_usize(&key(Field::Vocab))? {
            Some(v) => v,
            None => match self.meta("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(a)) => a.len(),
                _ => {
                    return Err(self.err(format!(
                        "missing metadata {} (and no tokenizer.ggml.tokens to count)",
                        key(Field::Vocab)
                    )))
                }
            },
        };
        // Without key_length the head size is embedding_length / head_count, which must divide.
        let head_dim = match self.meta_opt_usize(&key(Field::HeadDim))? {
            Some(d) => d,
            None if (1..=crate::config::limits::MAX_HEADS).contains(&heads)
                && !hidden.is_multiple_of(heads) =>
            {
                return Err(self.err(format!(
                    "{} {hidden} is not divisible by {} {heads}, and no {} gives the head size",
                    key(Field::Hidden),
                    key(Field::Heads),
                    key(Field::HeadDim)
                )))
            }
            None => hidden.checked_div(heads).unwrap_or(0),
        };
        let cfg = LlamaConfig {
            arch,
            hidden_size: hidden,
            intermediate_size: self.meta_usize(&key(Field::Ffn))?,
            num_layers: self.meta_usize(&key(Field::Layers))?,
            num_heads: heads,
            num_kv_heads: self.meta_opt_usize(&key(Field::KvHeads))?.unwrap_or(heads),
            head_dim,
            vocab_size: vocab,
            rms_norm_eps: self.meta_opt_f64(&key(Field::NormEps))?.unwrap_or(1e-5),
            rope_theta: self
                .meta_opt_f64(&key(Field::RopeTheta))?
                .unwrap_or(10_000.0),
            max_position: self.meta_opt_usize(&key(Field::Context))?.unwrap_or(4096),
            tie_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
        };
        cfg.check()
            .map_err(|e| self.err(format!("{} {}", key(e.field), e.msg)))?;
        // Per-head value size and rotary width: this runtime needs both to be the head size.
        for (k, what) in [
            ("attention.value_length", "value heads of another size"),
            ("rope.dimension_count", "partial rotary embeddings"),
        ] {
            let k = format!("{arch_name}.{k}");
            if let Some(v) = self.meta_opt_usize(&k)? {
                if v != head_dim {
                    return Err(self.err(format!(
                        "{k} {v} differs from the head size {head_dim} ({what} are not supported)"
                    )));
                }
            }
        }
        Ok(cfg)
    }

    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Checks the tensor table against the config before any tensor data is read: every tensor the
    /// model needs is present, in every layer, with exactly the shape the config implies.
    pub fn check_tensors(&self, cfg: &LlamaConfig) -> Result<()> {
        for (name, want, required) in expected_tensors(cfg, &GGUF_NAMES) {
            match self.content.tensor_infos.get(&name) {
                Some(info) if info.shape.dims() != want.as_slice() => {
                    return Err(self.err(format!(
                        "tensor {name} is {:?}, the config implies {want:?}",
                        info.shape.dims()
                    )))
                }
                None if required => return Err(self.err(format!("missing tensor {name}"))),
                _ => {}
            }
        }
        Ok(())
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
                // The span was computed from these dimensions with checked arithmetic when the header
                // was read, and lies inside the file: nothing here is sized by an unchecked number.
                let span = *self
                    .spans
                    .get(name)
                    .ok_or_else(|| self.err(format!("missing tensor {name}")))?;
                let mut data = vec![0u8; span.bytes];
                self.file
                    .seek(SeekFrom::Start(span.start))
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
        // Candle sizes its read from the same header numbers; they were checked in `open`.
        let q = self
            .content
            .tensor(&mut self.file, name, device)
            .map_err(|e| self.err(format!("tensor {name}: {e}")))?;
        Ok(q.dequantize(device)?.to_dtype(DType::F32)?)
    }
}

/// Reads and checks a GGUF header: metadata, the tensor table, and each tensor's byte range.
fn read_header(
    file: &mut BufReader<File>,
    path: &Path,
    len: u64,
) -> Result<(gguf_file::Content, HashMap<String, Span>)> {
    use gguf_limits::*;
    let mut r = HeaderReader {
        r: file,
        pos: 0,
        len,
        path,
        v1: false,
        values: 0,
    };
    let magic = r.bytes::<4>("the magic number")?;
    if &magic != b"GGUF" {
        return Err(r.err(format!(
            "not a GGUF file (magic {:?}, expected \"GGUF\"{})",
            String::from_utf8_lossy(&magic),
            if &magic == b"FUGG" {
                "; big-endian files are not supported"
            } else {
                ""
            }
        )));
    }
    let version = r.u32("the version")?;
    let magic = match version {
        1 => gguf_file::VersionedMagic::GgufV1,
        2 => gguf_file::VersionedMagic::GgufV2,
        3 => gguf_file::VersionedMagic::GgufV3,
        v => {
            return Err(r.err(format!(
                "unsupported GGUF version {v} (supported: 1, 2, 3){}",
                if (1..=3).contains(&v.swap_bytes()) {
                    "; big-endian files are not supported"
                } else {
                    ""
                }
            )))
        }
    };
    r.v1 = version == 1;
    let n_tensors = r.len_field("the tensor count")?;
    let n_keys = r.len_field("the metadata key count")?;
    if n_tensors > MAX_TENSORS {
        return Err(r.err(format!(
            "the header declares {n_tensors} tensors, over the limit of {MAX_TENSORS}"
        )));
    }
    if n_keys > MAX_METADATA_KEYS {
        return Err(r.err(format!(
            "the header declares {n_keys} metadata keys, over the limit of {MAX_METADATA_KEYS}"
        )));
    }
    // Both counts are bounded above, so these products cannot overflow.
    let prefix = if r.v1 { 4 } else { 8 };
    let least = n_keys * (prefix + 4 + 1) + n_tensors * (prefix + 4 + 4 + 8);
    if least > r.remaining() {
        return Err(r.err(format!(
            "the header declares {n_tensors} tensors and {n_keys} metadata keys, which need at least {least} bytes; only {} remain (the file is truncated?)",
            r.remaining()
        )));
    }
    let mut metadata = HashMap::new();
    for _ in 0..n_keys {
        let key = r.string("a metadata key")?;
        let shown = label(&key);
        let ty = r.u32(&shown)?;
        let value = r.value(ty, &shown, false)?;
        if metadata.insert(key, value).is_some() {
            return Err(r.err(format!("metadata key {shown} appears twice (duplicate)")));
        }
    }
    let mut table = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("a tensor name")?;
        let shown = label(&name);
        let n_dims = r.u32(&shown)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.err(format!(
                "tensor {shown} has {n_dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(r.len_field(&shown)?);
        }
        // An empty tensor is never a model weight, and candle's reader casts an empty buffer's
        // dangling pointer to the element type (undefined behaviour for f32): refuse it here.
        if ne.contains(&0) {
            return Err(r.err(format!("tensor {shown} has a zero dimension ({ne:?})")));
        }
        let id = r.u32(&shown)?;
        let dtype = ggml_dtype(id)
            .ok_or_else(|| r.err(format!("tensor {shown} has unknown data type {id}")))?;
        let offset = r.u64(&shown)?;
        table.push((name, ne, dtype, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        None => gguf_file::DEFAULT_ALIGNMENT,
        Some(v) => {
            use gguf_file::Value as V;
            let a = match v {
                V::U8(x) => u64::from(*x),
                V::U16(x) => u64::from(*x),
                V::U32(x) => u64::from(*x),
                V::U64(x) => *x,
                V::I8(x) => u64::try_from(*x).unwrap_or(0),
                V::I16(x) => u64::try_from(*x).unwrap_or(0),
                V::I32(x) => u64::try_from(*x).unwrap_or(0),
                V::I64(x) => u64::try_from(*x).unwrap_or(0),
                other => {
                    return Err(ModelError::format(
                        path,
                        format!(
                            "metadata general.alignment must be an integer, found {:?}",
                            other.value_type()
                        ),
                    ))
                }
            };
            if !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(ModelError::format(
                    path,
                    format!(
                        "metadata general.alignment is {v:?}; it must be a power of two up to {MAX_ALIGNMENT}"
                    ),
                ));
            }
            a
        }
    };
    // pos ≤ len, and alignment ≤ 2^16: no overflow for any real file length.
    let data_start = r
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| r.err("the tensor data offset overflows"))?;
    let mut tensor_infos = HashMap::with_capacity(table.len());
    let mut spans = HashMap::with_capacity(table.len());
    for (name, ne, dtype, offset) in table {
        let bad =
            |msg: String| ModelError::format(path, format!("GGUF tensor {}: {msg}", label(&name)));
        if spans.contains_key(&name) {
            return Err(bad("appears twice in the tensor table (duplicate)".into()));
        }
        let bytes = tensor_bytes(dtype, &ne).map_err(bad)?;
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "its offset {offset} is not aligned to {alignment} bytes (general.alignment)"
            )));
        }
        let end = data_start
            .checked_add(offset)
            .and_then(|start| start.checked_add(bytes));
        match end {
            Some(end) if end <= len => {}
            _ => {
                return Err(bad(format!(
                    "the file is truncated or the offset is wrong: {bytes} bytes at data offset {offset} (from byte {data_start}) do not fit in the file of {len} bytes"
                )))
            }
        }
        // end ≤ len: both fit in usize wherever the file could be read at all.
        let bytes = usize::try_from(bytes).map_err(|_| bad("too large for this machine".into()))?;
        let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        spans.insert(
            name.clone(),
            Span {
                start: data_start + offset,
                bytes,
            },
        );
        tensor_infos.insert(
            name,
            gguf_file::TensorInfo {
                ggml_dtype: dtype,
                shape: candle_core::Shape::from(shape),
                offset,
            },
        );
    }
    Ok((
        gguf_file::Content {
            magic,
            metadata,
            tensor_infos,
            tensor_data_offset: data_start,
        },
        spans,
    ))
}

/// Tensor names in one file format.
struct Names {
    embed: &'static str,
    norm: &'static str,
    output: &'static str,
    /// `(layer, part) -> name`, part one of the `LAYER_PARTS`.
    layer: fn(usize, &str) -> String,
    /// Whether q/k/v biases must be present (where the architecture has them).
    bias_required: bool,
}

/// The parts of a layer, in GGUF spelling; the HF names map from these.
const LAYER_PARTS: [&str; 12] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
];

const GGUF_NAMES: Names = Names {
    embed: "token_embd.weight",
    norm: "output_norm.weight",
    output: "output.weight",
    layer: |i, part| format!("blk.{i}.{part}"),
    bias_required: false,
};

const HF_NAMES: Names = Names {
    embed: "model.embed_tokens.weight",
    norm: "model.norm.weight",
    output: "lm_head.weight",
    layer: |i, part| {
        let hf = match part {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            other => other,
        };
        format!("model.layers.{i}.{hf}")
    },
    bias_required: true,
};

/// Every tensor a model of this config reads, with the shape the config implies (`[rows, cols]`, or
/// `[len]` for norms and biases) and whether it is required. The config is checked, so none of these
/// products overflows. Biases are read (and listed) only for architectures that have them; there
/// they are optional in GGUF and required in safetensors, as the loaders treat them.
fn expected_tensors(cfg: &LlamaConfig, names: &Names) -> Vec<(String, Vec<usize>, bool)> {
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let mut out = vec![
        (names.embed.to_string(), vec![v, h], true),
        (names.norm.to_string(), vec![h], true),
        (names.output.to_string(), vec![v, h], false),
    ];
    for i in 0..cfg.num_layers {
        for part in LAYER_PARTS {
            let (shape, required) = match part {
                "attn_norm.weight" | "ffn_norm.weight" => (vec![h], true),
                "attn_q.weight" => (vec![q, h], true),
                "attn_k.weight" | "attn_v.weight" => (vec![kv, h], true),
                "attn_output.weight" => (vec![h, q], true),
                "ffn_gate.weight" | "ffn_up.weight" => (vec![f, h], true),
                "ffn_down.weight" => (vec![h, f], true),
                _ if !has_qkv_bias(cfg.arch) => continue,
                "attn_q.bias" => (vec![q], names.bias_required),
                _ => (vec![kv], names.bias_required),
            };
            out.push(((names.layer)(i, part), shape, required));
        }
    }
    out
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
    g.check_tensors(&cfg)?;
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
    check_model(&cfg, &embed, &blocks, &norm, &lm_head, path)?;
    let mut model = Llama::new(cfg, embed, blocks, norm, lm_head, device)?;
    model.set_f16_attention(true);
    Ok(model)
}

/// Loads a Hugging Face model directory (`config.json` + one or more `*.safetensors`).
///
/// Every file's header is validated (by the safetensors reader: offsets inside the file, sizes that
/// match dtypes and shapes) and every tensor's shape is checked against the config before any tensor
/// is converted.
pub fn load_safetensors(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
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
    let buffers: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| ModelError::io(f, e)))
        .collect::<Result<_>>()?;
    let readers: Vec<candle_core::safetensors::SliceSafetensors> = buffers
        .iter()
        .zip(&files)
        .map(|(b, f)| {
            candle_core::safetensors::SliceSafetensors::new(b)
                .map_err(|e| ModelError::format(f, format!("not a readable safetensors file: {e}")))
        })
        .collect::<Result<_>>()?;
    // Which file holds each tensor; a name in two shards is ambiguous.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, r) in readers.iter().enumerate() {
        for (name, _) in r.tensors() {
            if let Some(j) = index.insert(name.clone(), i) {
                return Err(ModelError::format(
                    dir,
                    format!(
                        "tensor {name} appears in both {} and {}",
                        files[j].display(),
                        files[i].display()
                    ),
                ));
            }
        }
    }
    for (name, want, required) in expected_tensors(&cfg, &HF_NAMES) {
        match index.get(&name) {
            Some(&i) => {
                let view = readers[i]
                    .get(&name)
                    .map_err(|e| ModelError::format(&files[i], format!("tensor {name}: {e}")))?;
                if view.shape() != want.as_slice() {
                    return Err(ModelError::format(
                        &files[i],
                        format!(
                            "tensor {name} is {:?}, the config implies {want:?}",
                            view.shape()
                        ),
                    ));
                }
            }
            None if required => {
                return Err(ModelError::format(dir, format!("missing tensor {name}")))
            }
            None => {}
        }
    }
    let take = |name: &str| -> Result<Tensor> {
        let i = *index
            .get(name)
            .ok_or_else(|| ModelError::format(dir, format!("missing tensor {name}")))?;
        let t = readers[i]
            .load(name, device)
            .map_err(|e| ModelError::format(&files[i], format!("tensor {name}: {e}")))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let lin = |n: &str, bias: bool| -> Result<Linear> {
            let w = take(&p(&format!("{n}.weight")))?;
            let b = if bias {
                Some(take(&p(&format!("{n}.bias")))?)
            } else {
                None
            };
            Ok(Linear::new(Weight::Float(w), b))
        };
        let qb = has_qkv_bias(cfg.arch);
        blocks.push(Block {
            attn_norm: take(&p("input_layernorm.weight"))?,
            q: lin("self_attn.q_proj", qb)?,
            k: lin("self_attn.k_proj", qb)?,
            v: lin("self_attn.v_proj", qb)?,
            o: lin("self_attn.o_proj", false)?,
            ffn_norm: take(&p("post_attention_layernorm.weight"))?,
            gate: lin("mlp.gate_proj", false)?,
            up: lin("mlp.up_proj", false)?,
            down: lin("mlp.down_proj", false)?,
        });
    }
    let embed = Weight::Float(take("model.embed_tokens.weight")?);
    // Checkpoints with tied embeddings usually omit lm_head.weight.
    let lm_head = if index.contains_key("lm_head.weight") {
        Weight::Float(take("lm_head.weight")?)
    } else {
        embed.clone()
    };
    let norm = take("model.norm.weight")?;
    check_model(&cfg, &embed, &blocks, &norm, &lm_head, dir)?;
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

/// The assembled model's shapes, every layer, against the config (the loaders checked the files'
/// tables already; this guards what was built from them).
fn check_model(
    cfg: &LlamaConfig,
    embed: &Weight,
    blocks: &[Block],
    norm: &Tensor,
    lm_head: &Weight,
    path: &Path,
) -> Result<()> {
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let mismatch = |what: String, got: &[usize], want: &[usize]| {
        Err(ModelError::format(
            path,
            format!("{what} is {got:?}, the config implies {want:?}"),
        ))
    };
    let matrix = |what: String, w: &Weight, want: (usize, usize)| {
        let got = w.dims();
        if got != want {
            return mismatch(what, &[got.0, got.1], &[want.0, want.1]);
        }
        Ok(())
    };
    let vector = |what: String, t: &Tensor, n: usize| {
        if t.dims() != [n] {
            return mismatch(what, t.dims(), &[n]);
        }
        Ok(())
    };
    matrix("the embedding".into(), embed, (v, h))?;
    matrix("the output head".into(), lm_head, (v, h))?;
    vector("the output norm".into(), norm, h)?;
    if blocks.len() != cfg.num_layers {
        return Err(ModelError::format(
            path,
            format!(
                "{} layers built, the config has {}",
                blocks.len(),
                cfg.num_layers
            ),
        ));
    }
    for (i, b) in blocks.iter().enumerate() {
        let at = |n: &str| format!("layer {i} {n}");
        vector(at("attention norm"), &b.attn_norm, h)?;
        vector(at("ffn norm"), &b.ffn_norm, h)?;
        matrix(at("q"), &b.q.weight, (q, h))?;
        matrix(at("k"), &b.k.weight, (kv, h))?;
        matrix(at("v"), &b.v.weight, (kv, h))?;
        matrix(at("o"), &b.o.weight, (h, q))?;
        matrix(at("gate"), &b.gate.weight, (f, h))?;
        matrix(at("up"), &b.up.weight, (f, h))?;
        matrix(at("down"), &b.down.weight, (h, f))?;
        for (n, bias, len) in [
            ("q bias", &b.q.bias, q),
            ("k bias", &b.k.bias, kv),
            ("v bias", &b.v.bias, kv),
        ] {
            if let Some(t) = bias {
                vector(at(n), t, len)?;
            }
        }
    }
    Ok(())
}
