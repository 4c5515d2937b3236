//! Model files are untrusted input: a corpus of mutated GGUF headers and tensor tables (sizes, shapes,
//! offsets, dtypes, counts, string lengths, metadata and config values), truncations at many offsets,
//! random byte and field mutations, broken safetensors directories and PEFT adapters all load with a
//! clear error (or, for harmless random mutations, load and run), and never panic, abort or hang.
//!
//! The GGUF files are built here from a tiny Llama (2 layers, Q8_0/Q4_1/Q4_0/F16/F32 tensors), and from
//! the real SmolLM2 header when `models/` has it (skipped with a message otherwise: run
//! ./scripts/fetch-model). Each load runs on its own thread under `catch_unwind`, with a generous bound
//! on its wall time that only a hang can reach.

use openledger_model::quant::formats::quantize_row;
use openledger_model::quant::QFormat;
use openledger_model::{load, peft, Device, Llama, LoraAdapter, LoraConfig, Target};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// A GGUF file as fields, so tests can change any of them and write the bytes back out.
mod image {
    /// GGUF value type ids.
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// A metadata value: its type id and its encoded bytes (arrays and strings carry their own
    /// length prefixes inside `bytes`), so a test can write any type with any payload.
    #[derive(Clone, Debug)]
    pub struct Val {
        pub ty: u32,
        pub bytes: Vec<u8>,
    }

    impl Val {
        pub fn u32(v: u32) -> Self {
            Self {
                ty: U32,
                bytes: v.to_le_bytes().to_vec(),
            }
        }
        pub fn i32(v: i32) -> Self {
            Self {
                ty: I32,
                bytes: v.to_le_bytes().to_vec(),
            }
        }
        pub fn u64(v: u64) -> Self {
            Self {
                ty: U64,
                bytes: v.to_le_bytes().to_vec(),
            }
        }
        pub fn f32(v: f32) -> Self {
            Self {
                ty: F32,
                bytes: v.to_le_bytes().to_vec(),
            }
        }
        pub fn str(s: &str) -> Self {
            Self {
                ty: STRING,
                bytes: string(s.as_bytes()),
            }
        }
        /// An array of `elem_ty` whose elements are already encoded in `items`.
        pub fn array(elem_ty: u32, len: u64, items: &[u8]) -> Self {
            let mut bytes = elem_ty.to_le_bytes().to_vec();
            bytes.extend(len.to_le_bytes());
            bytes.extend(items);
            Self { ty: ARRAY, bytes }
        }
    }

    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend(s);
        out
    }

    #[derive(Clone, Debug)]
    pub struct Tensor {
        pub name: Vec<u8>,
        /// GGML order: `dims[0]` is the row length.
        pub dims: Vec<u64>,
        pub dtype: u32,
        /// Offset written in the table (relative to the data section).
        pub offset: u64,
    }

    /// A GGUF v3 file: header fields, and the data section as one opaque block (its length is all
    /// that matters to a header-only image).
    #[derive(Clone, Debug)]
    pub struct Gguf {
        pub magic: [u8; 4],
        pub version: u32,
        /// Counts written in the header; `None` writes the true ones.
        pub tensor_count: Option<u64>,
        pub kv_count: Option<u64>,
        pub kvs: Vec<(Vec<u8>, Val)>,
        pub tensors: Vec<Tensor>,
        /// Alignment used to place the data section (independent of any `general.alignment` kv,
        /// so a test can make them disagree).
        pub align: u64,
        pub data: Vec<u8>,
        /// Length of the data section when `data` is not held (a header-only image of a big file).
        pub data_len: u64,
    }

    impl Gguf {
        pub fn header(&self) -> Vec<u8> {
            let mut out = self.magic.to_vec();
            out.extend(self.version.to_le_bytes());
            out.extend(
                self.tensor_count
                    .unwrap_or(self.tensors.len() as u64)
                    .to_le_bytes(),
            );
            out.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
            for (k, v) in &self.kvs {
                out.extend(string(k));
                out.extend(v.ty.to_le_bytes());
                out.extend(&v.bytes);
            }
            for t in &self.tensors {
                out.extend(string(&t.name));
                out.extend((t.dims.len() as u32).to_le_bytes());
                for d in &t.dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(t.dtype.to_le_bytes());
                out.extend(t.offset.to_le_bytes());
            }
            let pad = (self.align - out.len() as u64 % self.align) % self.align;
            out.extend(std::iter::repeat_n(0u8, pad as usize));
            out
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut out = self.header();
            out.extend(&self.data);
            out
        }

        pub fn set(&mut self, key: &str, v: Val) {
            match self.kvs.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                Some((_, old)) => *old = v,
                None => self.kvs.push((key.as_bytes().to_vec(), v)),
            }
        }

        pub fn remove(&mut self, key: &str) {
            self.kvs.retain(|(k, _)| k != key.as_bytes());
        }

        pub fn tensor(&mut self, name: &str) -> &mut Tensor {
            self.tensors
                .iter_mut()
                .find(|t| t.name == name.as_bytes())
                .unwrap_or_else(|| panic!("no tensor {name} in the image"))
        }

        /// Parses a (well-formed, v3) GGUF header; `len` is the whole file's length.
        pub fn parse(b: &[u8], len: u64) -> Self {
            struct Cur<'a> {
                b: &'a [u8],
                p: usize,
            }
            impl Cur<'_> {
                fn take(&mut self, n: usize) -> Vec<u8> {
                    let s = self.b[self.p..self.p + n].to_vec();
                    self.p += n;
                    s
                }
                fn u32(&mut self) -> u32 {
                    u32::from_le_bytes(self.take(4).try_into().unwrap())
                }
                fn u64(&mut self) -> u64 {
                    u64::from_le_bytes(self.take(8).try_into().unwrap())
                }
            }
            fn value_len(b: &[u8], ty: u32) -> usize {
                match ty {
                    U8 | I8 | BOOL => 1,
                    U16 | I16 => 2,
                    U32 | I32 | F32 => 4,
                    U64 | I64 | F64 => 8,
                    STRING => 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize,
                    ARRAY => {
                        let et = u32::from_le_bytes(b[..4].try_into().unwrap());
                        let n = u64::from_le_bytes(b[4..12].try_into().unwrap());
                        let mut at = 12;
                        for _ in 0..n {
                            at += value_len(&b[at..], et);
                        }
                        at
                    }
                    t => panic!("value type {t}"),
                }
            }
            let mut c = Cur { b, p: 0 };
            let magic: [u8; 4] = c.take(4).try_into().unwrap();
            let version = c.u32();
            assert_eq!(version, 3, "the test parser reads GGUF v3");
            let nt = c.u64();
            let nkv = c.u64();
            let mut kvs = Vec::new();
            for _ in 0..nkv {
                let kl = c.u64() as usize;
                let key = c.take(kl);
                let ty = c.u32();
                let vl = value_len(&b[c.p..], ty);
                kvs.push((
                    key,
                    Val {
                        ty,
                        bytes: c.take(vl),
                    },
                ));
            }
            let mut tensors = Vec::new();
            for _ in 0..nt {
                let nl = c.u64() as usize;
                let name = c.take(nl);
                let nd = c.u32();
                let dims = (0..nd).map(|_| c.u64()).collect();
                let dtype = c.u32();
                let offset = c.u64();
                tensors.push(Tensor {
                    name,
                    dims,
                    dtype,
                    offset,
                });
            }
            let mut g = Self {
                magic,
                version,
                tensor_count: None,
                kv_count: None,
                kvs,
                tensors,
                align: 32,
                data: Vec::new(),
                data_len: 0,
            };
            g.data_len = len - g.header().len() as u64;
            g
        }
    }
}

use image::{Gguf, Tensor as T, Val};

/// GGML dtype ids.
const F32: u32 = 0;
const F16: u32 = 1;
const Q4_0: u32 = 2;
const Q4_1: u32 = 3;
const Q8_0: u32 = 8;
const Q4_K: u32 = 12;

const HIDDEN: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const HEAD_DIM: u64 = 16;
const FFN: u64 = 96;
const VOCAB: u64 = 96;
const LAYERS: u64 = 2;

fn pseudo(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f32 / 2000.0 - 0.25)
        .collect()
}

/// The bytes of `rows × cols` values in `dtype`.
fn encode(dtype: u32, rows: u64, cols: u64, salt: u64) -> Vec<u8> {
    let v = pseudo((rows * cols) as usize, salt);
    match dtype {
        F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Q4_0 => quantize_row(QFormat::Q4_0, &v),
        Q4_1 => quantize_row(QFormat::Q4_1, &v),
        Q8_0 => quantize_row(QFormat::Q8_0, &v),
        _ => unreachable!(),
    }
}

/// A tiny Llama as a GGUF image: every projection format the runtime handles natively or through
/// candle, Q/K stored as llama.cpp permutes them, an untied output head.
fn tiny() -> Gguf {
    let mut g = Gguf {
        magic: *b"GGUF",
        version: 3,
        tensor_count: None,
        kv_count: None,
        kvs: Vec::new(),
        tensors: Vec::new(),
        align: 32,
        data: Vec::new(),
        data_len: 0,
    };
    g.set("general.architecture", Val::str("llama"));
    g.set("general.alignment", Val::u32(32));
    g.set("llama.embedding_length", Val::u32(HIDDEN as u32));
    g.set("llama.feed_forward_length", Val::u32(FFN as u32));
    g.set("llama.block_count", Val::u32(LAYERS as u32));
    g.set("llama.attention.head_count", Val::u32(HEADS as u32));
    g.set("llama.attention.head_count_kv", Val::u32(KV_HEADS as u32));
    g.set("llama.context_length", Val::u32(256));
    g.set("llama.vocab_size", Val::u32(VOCAB as u32));
    g.set("llama.rope.freq_base", Val::f32(10_000.0));
    g.set("llama.attention.layer_norm_rms_epsilon", Val::f32(1e-5));
    // (rows, cols) as the runtime sees them; GGUF stores [cols, rows].
    let add = |g: &mut Gguf, name: String, dtype: u32, rows: u64, cols: u64| {
        let salt = g.tensors.len() as u64;
        let data = encode(dtype, rows, cols, salt);
        let dims = if rows == 1 {
            vec![cols]
        } else {
            vec![cols, rows]
        };
        g.tensors.push(T {
            name: name.into_bytes(),
            dims,
            dtype,
            offset: g.data.len() as u64,
        });
        g.data.extend(&data);
        while !g.data.len().is_multiple_of(32) {
            g.data.push(0);
        }
    };
    add(&mut g, "token_embd.weight".into(), Q8_0, VOCAB, HIDDEN);
    for i in 0..LAYERS {
        let p = |n: &str| format!("blk.{i}.{n}");
        let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
        add(&mut g, p("attn_norm.weight"), F32, 1, HIDDEN);
        add(&mut g, p("attn_q.weight"), Q4_1, q, HIDDEN);
        add(&mut g, p("attn_k.weight"), Q4_0, kv, HIDDEN);
        add(&mut g, p("attn_v.weight"), Q8_0, kv, HIDDEN);
        add(&mut g, p("attn_output.weight"), F16, HIDDEN, q);
        add(&mut g, p("ffn_norm.weight"), F32, 1, HIDDEN);
        add(&mut g, p("ffn_gate.weight"), Q4_1, FFN, HIDDEN);
        add(&mut g, p("ffn_up.weight"), F32, FFN, HIDDEN);
        add(&mut g, p("ffn_down.weight"), Q8_0, HIDDEN, FFN);
    }
    add(&mut g, "output_norm.weight".into(), F32, 1, HIDDEN);
    add(&mut g, "output.weight".into(), Q8_0, VOCAB, HIDDEN);
    // No padding after the last tensor: any cut of the file removes some tensor's bytes.
    let last = g.tensors.last().unwrap();
    g.data
        .truncate((last.offset + VOCAB * HIDDEN / 32 * 34) as usize);
    g
}

/// What one guarded load did.
#[derive(Debug)]
enum Outcome {
    /// Loaded, and scored a few tokens without trouble.
    Loaded,
    Refused(String),
}

/// Loads `path` on its own thread under `catch_unwind`; a panic or a hang (no answer within
/// `limit`) is returned as `Err`. A model that loads must also score a few tokens.
fn guarded(path: &Path, limit: Duration, score: bool) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| match load::load(&p, &Device::Cpu) {
            Ok(m) => {
                if score {
                    try_score(&m)?;
                }
                Ok(Outcome::Loaded)
            }
            Err(e) => Ok(Outcome::Refused(e.to_string())),
        });
        let _ = tx.send(match r {
            Ok(r) => r,
            Err(p) => Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        });
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?} (a hang)")))
}

/// Scores up to three tokens (no more than the model's context, which a mutated header may set
/// as low as 1); a model that loaded must produce logits of the vocabulary's width.
fn try_score(m: &Llama) -> Result<(), String> {
    let vocab = m.config.vocab_size as u32;
    let n = m.config.max_position.clamp(1, 3);
    let ids: Vec<u32> = (1..=n as u32).map(|i| i % vocab).collect();
    let logits = m
        .score(&ids, None)
        .map_err(|e| format!("a model that loaded failed to score: {e}"))?;
    let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(|e| e.to_string())?;
    if rows.len() != n || rows.iter().any(|r| r.len() != vocab as usize) {
        return Err(format!("logits have shape {:?}", logits.dims()));
    }
    Ok(())
}

const LIMIT: Duration = Duration::from_secs(120);

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Loads `bytes` and requires a refusal whose message contains every one of `want`.
fn refused(dir: &Path, what: &str, bytes: &[u8], want: &[&str]) {
    let p = write(dir, "case.gguf", bytes);
    match guarded(&p, LIMIT, true) {
        Ok(Outcome::Refused(msg)) => {
            for w in want {
                assert!(
                    msg.contains(w),
                    "{what}: the error should mention {w:?}: {msg}"
                );
            }
        }
        Ok(Outcome::Loaded) => panic!("{what}: loaded, should have been refused"),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn the_tiny_gguf_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "tiny.gguf", &tiny().bytes());
    let m = load::load(&p, &Device::Cpu).unwrap();
    assert_eq!(
        (m.config.num_layers, m.config.head_dim, m.config.vocab_size),
        (2, 16, 96)
    );
    try_score(&m).unwrap();
}

/// One structured mutation: what it does, the change, and words the refusal must contain.
type Case = (
    &'static str,
    Box<dyn Fn(&mut Gguf)>,
    &'static [&'static str],
);

fn m(f: impl Fn(&mut Gguf) + 'static) -> Box<dyn Fn(&mut Gguf)> {
    Box::new(f)
}

/// Overwrites the 8-byte length prefix in front of the first occurrence of `needle`.
fn patch_len_before(bytes: &mut [u8], needle: &[u8], len: u64) {
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the header");
    bytes[at - 8..at].copy_from_slice(&len.to_le_bytes());
}

fn header_cases() -> Vec<Case> {
    let set = |k: &'static str, v: Val| m(move |g: &mut Gguf| g.set(k, v.clone()));
    vec![
        (
            "bad magic",
            m(|g: &mut Gguf| g.magic = *b"GGUX"),
            &["magic"],
        ),
        (
            "big-endian magic",
            m(|g: &mut Gguf| g.magic = *b"FUGG"),
            &["magic"],
        ),
        ("version 0", m(|g: &mut Gguf| g.version = 0), &["version"]),
        ("version 4", m(|g: &mut Gguf| g.version = 4), &["version"]),
        (
            "tensor count 2^63",
            m(|g: &mut Gguf| g.tensor_count = Some(1 << 63)),
            &["tensor"],
        ),
        (
            "tensor count one more than the table",
            m(|g: &mut Gguf| g.tensor_count = Some(g.tensors.len() as u64 + 1)),
            &[],
        ),
        (
            "metadata count u64::MAX",
            m(|g: &mut Gguf| g.kv_count = Some(u64::MAX)),
            &["metadata"],
        ),
        (
            "metadata count one more than written",
            m(|g: &mut Gguf| g.kv_count = Some(g.kvs.len() as u64 + 1)),
            &[],
        ),
        (
            "string value 2^40 bytes long",
            set(
                "general.name",
                Val {
                    ty: image::STRING,
                    bytes: (1u64 << 40).to_le_bytes().to_vec(),
                },
            ),
            &["string"],
        ),
        (
            "array of 2^62 elements",
            set(
                "tokenizer.ggml.scores",
                Val::array(image::F32, 1 << 62, &[0; 16]),
            ),
            &["array"],
        ),
        (
            "array longer than the file",
            set(
                "tokenizer.ggml.scores",
                Val::array(image::F32, 1 << 20, &[0; 16]),
            ),
            &["array"],
        ),
        (
            "array of arrays",
            set(
                "general.tags",
                Val::array(
                    image::ARRAY,
                    1,
                    &Val::array(image::U8, 1, &[7]).bytes.clone(),
                ),
            ),
            &["array"],
        ),
        (
            "unknown value type",
            set(
                "general.name",
                Val {
                    ty: 13,
                    bytes: vec![0; 8],
                },
            ),
            &["type"],
        ),
        (
            "array of unknown type",
            set("general.tags", Val::array(99, 1, &[0; 8])),
            &["type"],
        ),
        (
            "bool that is 2",
            set(
                "general.flag",
                Val {
                    ty: image::BOOL,
                    bytes: vec![2],
                },
            ),
            &["bool"],
        ),
        (
            "n_dims 0",
            m(|g: &mut Gguf| g.tensor("blk.1.ffn_norm.weight").dims = vec![]),
            &["dimensions"],
        ),
        (
            "n_dims 5",
            m(|g: &mut Gguf| g.tensor("blk.1.ffn_norm.weight").dims = vec![HIDDEN, 1, 1, 1, 1]),
            &["dimensions"],
        ),
        (
            "dims whose product overflows u64",
            m(
                |g: &mut Gguf| {
                    g.tensor("blk.1.attn_v.weight").dims = vec![1 << 32, 1 << 32, 1 << 8]
                },
            ),
            &["blk.1.attn_v.weight"],
        ),
        (
            "dims whose byte size overflows u64 but whose product does not",
            m(|g: &mut Gguf| g.tensor("blk.1.ffn_up.weight").dims = vec![1 << 31, 1 << 31]),
            &["blk.1.ffn_up.weight"],
        ),
        (
            "a Q4_1 tensor whose byte size wraps to zero",
            // 2^59 rows × 32 cols: rows·cols wraps to 0 in 64 bits, so a wrapping size check passes.
            m(|g: &mut Gguf| g.tensor("blk.1.attn_q.weight").dims = vec![32, 1 << 59]),
            &["blk.1.attn_q.weight"],
        ),
        (
            "a tensor larger than the file",
            m(|g: &mut Gguf| g.tensor("blk.1.ffn_up.weight").dims = vec![HIDDEN, 1 << 30]),
            &["blk.1.ffn_up.weight"],
        ),
        (
            "unknown dtype",
            m(|g: &mut Gguf| g.tensor("blk.0.attn_v.weight").dtype = 99),
            &["blk.0.attn_v.weight"],
        ),
        (
            "removed dtype Q4_2",
            m(|g: &mut Gguf| g.tensor("blk.0.attn_v.weight").dtype = 4),
            &["blk.0.attn_v.weight"],
        ),
        (
            "row length not a multiple of the block",
            m(|g: &mut Gguf| g.tensor("blk.1.ffn_gate.weight").dtype = Q4_K),
            &["blk.1.ffn_gate.weight"],
        ),
        (
            "offset not aligned",
            m(|g: &mut Gguf| g.tensor("blk.1.attn_k.weight").offset += 1),
            &["blk.1.attn_k.weight", "align"],
        ),
        (
            "offset past the end",
            m(|g: &mut Gguf| g.tensor("blk.1.attn_k.weight").offset = 1 << 40),
            &["blk.1.attn_k.weight"],
        ),
        (
            "offset that overflows with the data start",
            m(|g: &mut Gguf| g.tensor("output.weight").offset = u64::MAX - 31),
            &["output.weight"],
        ),
        (
            "duplicate tensor name",
            m(|g: &mut Gguf| {
                let t = g.tensor("blk.1.attn_v.weight").clone();
                g.tensors.push(t);
            }),
            &["duplicate", "blk.1.attn_v.weight"],
        ),
        (
            "alignment 0",
            set("general.alignment", Val::u32(0)),
            &["general.alignment"],
        ),
        (
            "alignment 3",
            set("general.alignment", Val::u32(3)),
            &["general.alignment"],
        ),
        (
            "alignment as a string",
            set("general.alignment", Val::str("32")),
            &["general.alignment"],
        ),
    ]
}

fn tensor_table_cases() -> Vec<Case> {
    let shape = |name: &'static str, dims: Vec<u64>| {
        m(move |g: &mut Gguf| g.tensor(name).dims = dims.clone()) as Box<dyn Fn(&mut Gguf)>
    };
    let q = HEADS * HEAD_DIM;
    vec![
        (
            "missing layer-1 tensor",
            m(|g: &mut Gguf| g.tensors.retain(|t| t.name != b"blk.1.ffn_down.weight")),
            &["blk.1.ffn_down.weight"],
        ),
        (
            "missing output norm",
            m(|g: &mut Gguf| g.tensors.retain(|t| t.name != b"output_norm.weight")),
            &["output_norm.weight"],
        ),
        // Wrong shapes that fit in the file (fewer elements than the real tensor), in layer 1.
        (
            "layer-1 k with the rows of q/2",
            shape("blk.1.attn_k.weight", vec![HIDDEN, KV_HEADS * HEAD_DIM / 2]),
            &["blk.1.attn_k.weight"],
        ),
        (
            "layer-1 v transposed",
            shape("blk.1.attn_v.weight", vec![KV_HEADS * HEAD_DIM, HIDDEN / 2]),
            &["blk.1.attn_v.weight"],
        ),
        (
            "layer-1 q with fewer rows",
            shape("blk.1.attn_q.weight", vec![HIDDEN, q - 8]),
            &["blk.1.attn_q.weight"],
        ),
        (
            "layer-1 output projection with fewer columns",
            shape("blk.1.attn_output.weight", vec![q - 32, HIDDEN]),
            &["blk.1.attn_output.weight"],
        ),
        (
            "layer-1 gate with fewer rows",
            shape("blk.1.ffn_gate.weight", vec![HIDDEN, FFN - 8]),
            &["blk.1.ffn_gate.weight"],
        ),
        (
            "layer-1 up with fewer rows",
            shape("blk.1.ffn_up.weight", vec![HIDDEN, FFN / 2]),
            &["blk.1.ffn_up.weight"],
        ),
        (
            "layer-1 down with fewer columns",
            shape("blk.1.ffn_down.weight", vec![FFN - 32, HIDDEN]),
            &["blk.1.ffn_down.weight"],
        ),
        (
            "layer-1 attention norm too short",
            shape("blk.1.attn_norm.weight", vec![HIDDEN / 2]),
            &["blk.1.attn_norm.weight"],
        ),
        (
            "layer-1 ffn norm as a matrix",
            shape("blk.1.ffn_norm.weight", vec![HIDDEN / 2, 2]),
            &["blk.1.ffn_norm.weight"],
        ),
        (
            "layer-0 q as 3-d",
            shape("blk.0.attn_q.weight", vec![HIDDEN, q / 2, 2]),
            &["blk.0.attn_q.weight"],
        ),
        (
            "embedding with fewer rows than the vocabulary",
            shape("token_embd.weight", vec![HIDDEN, VOCAB - 32]),
            &["token_embd.weight"],
        ),
        (
            "output head with fewer rows than the vocabulary",
            shape("output.weight", vec![HIDDEN, VOCAB / 2]),
            &["output.weight"],
        ),
        (
            "output norm too short",
            shape("output_norm.weight", vec![32]),
            &["output_norm.weight"],
        ),
    ]
}

fn config_cases() -> Vec<Case> {
    let set = |k: &'static str, v: Val| m(move |g: &mut Gguf| g.set(k, v.clone()));
    vec![
        (
            "head_count 0",
            set("llama.attention.head_count", Val::u32(0)),
            &["llama.attention.head_count"],
        ),
        (
            "head_count 2^40",
            set("llama.attention.head_count", Val::u64(1 << 40)),
            &["llama.attention.head_count"],
        ),
        (
            "head_count negative",
            set("llama.attention.head_count", Val::i32(-4)),
            &["llama.attention.head_count"],
        ),
        (
            "head_count as a string",
            set("llama.attention.head_count", Val::str("4")),
            &["llama.attention.head_count"],
        ),
        (
            "embedding_length not divisible by head_count",
            set("llama.attention.head_count", Val::u32(3)),
            &["llama.embedding_length", "llama.attention.head_count"],
        ),
        (
            "head_count_kv 0",
            set("llama.attention.head_count_kv", Val::u32(0)),
            &["llama.attention.head_count_kv"],
        ),
        (
            "head_count_kv not dividing head_count",
            set("llama.attention.head_count_kv", Val::u32(3)),
            &["llama.attention.head_count_kv"],
        ),
        (
            "head size (key_length) 0",
            set("llama.attention.key_length", Val::u32(0)),
            &["llama.attention.key_length"],
        ),
        (
            "head size odd",
            set("llama.attention.key_length", Val::u32(15)),
            &["llama.attention.key_length"],
        ),
        (
            "head size 2^20",
            set("llama.attention.key_length", Val::u32(1 << 20)),
            &["llama.attention.key_length"],
        ),
        (
            "value_length differing from key_length",
            set("llama.attention.value_length", Val::u32(32)),
            &["llama.attention.value_length"],
        ),
        (
            "context_length 2^40",
            set("llama.context_length", Val::u64(1 << 40)),
            &["llama.context_length"],
        ),
        (
            "context_length 0",
            set("llama.context_length", Val::u32(0)),
            &["llama.context_length"],
        ),
        (
            "embedding_length 0",
            set("llama.embedding_length", Val::u32(0)),
            &["llama.embedding_length"],
        ),
        (
            "embedding_length 2^40",
            set("llama.embedding_length", Val::u64(1 << 40)),
            &["llama.embedding_length"],
        ),
        (
            "feed_forward_length 0",
            set("llama.feed_forward_length", Val::u32(0)),
            &["llama.feed_forward_length"],
        ),
        (
            "feed_forward_length 2^40",
            set("llama.feed_forward_length", Val::u64(1 << 40)),
            &["llama.feed_forward_length"],
        ),
        (
            "block_count 0",
            set("llama.block_count", Val::u32(0)),
            &["llama.block_count"],
        ),
        (
            "block_count 2^40",
            set("llama.block_count", Val::u64(1 << 40)),
            &["llama.block_count"],
        ),
        (
            "block_count one more than the file holds",
            set("llama.block_count", Val::u32(3)),
            &["blk.2."],
        ),
        (
            "vocab_size 2^40",
            set("llama.vocab_size", Val::u64(1 << 40)),
            &["llama.vocab_size"],
        ),
        (
            "vocab_size 0",
            set("llama.vocab_size", Val::u32(0)),
            &["llama.vocab_size"],
        ),
        (
            "rms epsilon NaN",
            set("llama.attention.layer_norm_rms_epsilon", Val::f32(f32::NAN)),
            &["llama.attention.layer_norm_rms_epsilon"],
        ),
        (
            "rms epsilon negative",
            set("llama.attention.layer_norm_rms_epsilon", Val::f32(-1.0)),
            &["llama.attention.layer_norm_rms_epsilon"],
        ),
        (
            "rope base 0",
            set("llama.rope.freq_base", Val::f32(0.0)),
            &["llama.rope.freq_base"],
        ),
        (
            "rope base infinite",
            set("llama.rope.freq_base", Val::f32(f32::INFINITY)),
            &["llama.rope.freq_base"],
        ),
        (
            "architecture gpt2",
            set("general.architecture", Val::str("gpt2")),
            &["gpt2"],
        ),
        (
            "architecture as a number",
            set("general.architecture", Val::u32(7)),
            &["general.architecture"],
        ),
        (
            "architecture missing",
            m(|g: &mut Gguf| g.remove("general.architecture")),
            &["general.architecture"],
        ),
    ]
}

fn run_cases(base: &Gguf, cases: Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    for (what, mutate, want) in cases {
        let mut g = base.clone();
        mutate(&mut g);
        refused(dir.path(), what, &g.bytes(), want);
    }
}

#[test]
fn mutated_gguf_headers_are_refused_with_reasons() {
    run_cases(&tiny(), header_cases());
    // Length prefixes that no field of the image controls directly.
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], u64, &[&str]); 4] = [
        (
            "key length past the file",
            b"llama.block_count",
            u64::MAX,
            &["string"],
        ),
        (
            "key length 2^40",
            b"llama.block_count",
            1 << 40,
            &["string"],
        ),
        (
            "tensor name length 2^40",
            b"blk.1.attn_k.weight",
            1 << 40,
            &["string"],
        ),
        ("tensor name length 0", b"blk.1.attn_k.weight", 0, &[]),
    ];
    for (what, needle, len, want) in cases {
        let mut bytes = tiny().bytes();
        patch_len_before(&mut bytes, needle, len);
        refused(dir.path(), what, &bytes, want);
    }
    // A megabyte-long key with a bad value: refused, and the message stays readable.
    let mut g = tiny();
    g.kvs.push((
        vec![b'k'; 1 << 20],
        Val {
            ty: 13,
            bytes: vec![0; 8],
        },
    ));
    let p = write(dir.path(), "long-key.gguf", &g.bytes());
    match guarded(&p, LIMIT, false) {
        Ok(Outcome::Refused(msg)) => {
            assert!(msg.contains("unknown value type"), "{msg}");
            assert!(msg.len() < 1000, "a {}-byte message", msg.len());
        }
        other => panic!("a megabyte-long key: {other:?}"),
    }
}

#[test]
fn wrong_tensor_shapes_in_any_layer_are_refused() {
    run_cases(&tiny(), tensor_table_cases());
}

#[test]
fn out_of_bounds_configs_are_refused_naming_the_field() {
    run_cases(&tiny(), config_cases());
}

/// Cut at every offset of the header and at many offsets of the tensor data: always an error.
#[test]
fn truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = tiny();
    let bytes = g.bytes();
    let header = g.header().len();
    let cuts = (0..header)
        .chain((header..bytes.len()).step_by(61))
        .chain([bytes.len() - 1]);
    for cut in cuts {
        let p = write(dir.path(), "cut.gguf", &bytes[..cut]);
        match guarded(&p, LIMIT, false) {
            Ok(Outcome::Refused(_)) => {}
            Ok(Outcome::Loaded) => panic!("cut at {cut} of {} loaded", bytes.len()),
            Err(e) => panic!("cut at {cut}: {e}"),
        }
    }
}

/// Interesting values for an overwritten 8- or 4-byte field.
fn boundary(i: u8) -> u64 {
    [
        0,
        1,
        3,
        31,
        u32::MAX as u64,
        1 << 32,
        1 << 40,
        1 << 62,
        u64::MAX,
        u64::MAX - 31,
        i64::MAX as u64,
        0x8000_0000,
    ][i as usize % 12]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte changes and boundary values written anywhere in the header: an error or a model
    /// that runs, never a panic or a hang.
    #[test]
    fn random_header_mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3, any::<u8>()), 1..6)
    ) {
        let g = tiny();
        let mut bytes = g.bytes();
        let header = g.header().len();
        for (at, byte, kind, pick) in edits {
            let at = at.index(header);
            match kind {
                0 => bytes[at] = byte,
                1 => {
                    let v = boundary(pick).to_le_bytes();
                    let n = v.len().min(bytes.len() - at);
                    bytes[at..at + n].copy_from_slice(&v[..n]);
                }
                _ => {
                    let v = (boundary(pick) as u32).to_le_bytes();
                    let n = v.len().min(bytes.len() - at);
                    bytes[at..at + n].copy_from_slice(&v[..n]);
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "fuzz.gguf", &bytes);
        let r = guarded(&p, LIMIT, true);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    /// A field of the tensor table or a config value set to a boundary value.
    #[test]
    fn random_field_mutations_never_panic(
        tensor in any::<prop::sample::Index>(),
        field in 0u8..4,
        pick in any::<u8>(),
        kv in any::<prop::sample::Index>(),
        as_u64 in any::<bool>(),
    ) {
        let mut g = tiny();
        let v = boundary(pick);
        let n = g.tensors.len();
        let t = &mut g.tensors[tensor.index(n)];
        match field {
            0 => { let i = (pick as usize) % t.dims.len(); t.dims[i] = v; }
            1 => t.offset = v,
            2 => t.dtype = v as u32,
            _ => {
                let nk = g.kvs.len();
                let key = String::from_utf8(g.kvs[kv.index(nk)].0.clone()).unwrap();
                g.set(&key, if as_u64 { Val::u64(v) } else { Val::u32(v as u32) });
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "fuzz.gguf", &g.bytes());
        let r = guarded(&p, LIMIT, true);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// The real SmolLM2 header, or `None` (with a message) when the model is not installed.
fn real_header() -> Option<(Gguf, Vec<u8>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(openledger_model::DEFAULT_MODEL_FILE);
    if !path.exists() {
        eprintln!(
            "skipping the SmolLM2 header corpus: {} is missing (run ./scripts/fetch-model)",
            path.display()
        );
        return None;
    }
    use std::io::Read;
    let len = std::fs::metadata(&path).unwrap().len();
    let mut head = vec![0u8; (len as usize).min(8 << 20)];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    let g = Gguf::parse(&head, len);
    let header = g.header();
    assert_eq!(
        header[..],
        head[..header.len()],
        "the test's GGUF writer must reproduce the real header byte for byte"
    );
    Some((g, header))
}

/// Writes a header followed by a sparse data section of the original length.
fn with_sparse_data(dir: &Path, header: &[u8], data_len: u64) -> PathBuf {
    let p = write(dir, "real.gguf", header);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(header.len() as u64 + data_len).unwrap();
    p
}

#[test]
fn mutations_of_the_real_smollm2_header_are_refused_with_reasons() {
    let Some((real, _)) = real_header() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let last = real.tensors.len() - 1;
    let cases: Vec<Case> = vec![
        (
            "head_count 0",
            m(|g: &mut Gguf| g.set("llama.attention.head_count", Val::u32(0))),
            &["llama.attention.head_count"],
        ),
        (
            "context_length 2^40",
            m(|g: &mut Gguf| g.set("llama.context_length", Val::u64(1 << 40))),
            &["llama.context_length"],
        ),
        (
            "embedding_length not divisible by heads",
            m(|g: &mut Gguf| g.set("llama.attention.head_count", Val::u32(7))),
            &["llama.embedding_length"],
        ),
        (
            "feed_forward_length 2^40",
            m(|g: &mut Gguf| g.set("llama.feed_forward_length", Val::u64(1 << 40))),
            &["llama.feed_forward_length"],
        ),
        (
            "a wrong shape in the last layer",
            m(|g: &mut Gguf| {
                let t = g.tensor("blk.29.ffn_down.weight");
                t.dims[1] /= 2;
            }),
            &["blk.29.ffn_down.weight"],
        ),
        (
            "a tensor past the end of the file",
            m(move |g: &mut Gguf| g.tensors[last].offset = g.data_len.div_ceil(32) * 32),
            &["truncated"],
        ),
        (
            "dims that overflow",
            m(|g: &mut Gguf| g.tensor("blk.3.attn_q.weight").dims = vec![1 << 40, 1 << 40]),
            &["blk.3.attn_q.weight"],
        ),
        (
            "n_dims 5",
            m(|g: &mut Gguf| g.tensor("blk.3.attn_q.weight").dims = vec![1; 5]),
            &["dimensions"],
        ),
        (
            "tensor count 2^40",
            m(|g: &mut Gguf| g.tensor_count = Some(1 << 40)),
            &["tensor"],
        ),
    ];
    for (what, mutate, want) in cases {
        let mut g = real.clone();
        mutate(&mut g);
        let p = with_sparse_data(dir.path(), &g.header(), g.data_len);
        match guarded(&p, LIMIT, false) {
            Ok(Outcome::Refused(msg)) => {
                for w in want {
                    assert!(
                        msg.contains(w),
                        "{what}: the error should mention {w:?}: {msg}"
                    );
                }
            }
            Ok(Outcome::Loaded) => panic!("{what}: loaded"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn random_mutations_of_the_real_smollm2_tensor_table_never_panic() {
    let Some((real, header)) = real_header() else {
        return;
    };
    // Mutate the config keys (before the vocabulary arrays) and the tensor table (the tail of the
    // header, after the arrays): that is where sizes, shapes, offsets and config values live.
    let config_end = header
        .windows(21)
        .position(|w| w == b"tokenizer.ggml.tokens")
        .expect("SmolLM2's header holds its vocabulary");
    let table_start = {
        let mut g = real.clone();
        g.tensors.clear();
        g.header().len().saturating_sub(32) // minus at most 31 bytes of padding
    }
    .min(header.len() - 1);
    let dir = tempfile::tempdir().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    any::<u8>(),
                    any::<bool>(),
                    any::<bool>(),
                ),
                1..4,
            ),
            |edits| {
                let mut bytes = header.clone();
                for (at, pick, wide, in_table) in edits {
                    let at = if in_table {
                        table_start + at.index(header.len() - table_start)
                    } else {
                        24 + at.index(config_end - 24)
                    };
                    let v = boundary(pick).to_le_bytes();
                    let n = if wide { 8 } else { 4 }.min(bytes.len() - at);
                    bytes[at..at + n].copy_from_slice(&v[..n]);
                }
                let p = with_sparse_data(dir.path(), &bytes, real.data_len);
                let r = guarded(&p, LIMIT, false);
                prop_assert!(r.is_ok(), "{:?}", r);
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Safetensors directories and PEFT adapters.

fn tiny_llama_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_llama")
}

/// A copy of the tiny safetensors model whose config.json is changed by `edit`.
fn hf_dir_with(edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_llama_dir().join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    edit(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn refused_dir(what: &str, dir: &Path, want: &[&str]) {
    match guarded(dir, LIMIT, true) {
        Ok(Outcome::Refused(msg)) => {
            for w in want {
                assert!(
                    msg.contains(w),
                    "{what}: the error should mention {w:?}: {msg}"
                );
            }
        }
        Ok(Outcome::Loaded) => panic!("{what}: loaded, should have been refused"),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn out_of_bounds_hf_configs_are_refused_naming_the_field() {
    use serde_json::json;
    let cases: &[(&str, &str, serde_json::Value, &[&str])] = &[
        (
            "heads 0",
            "num_attention_heads",
            json!(0),
            &["num_attention_heads"],
        ),
        ("head_dim 0", "head_dim", json!(0), &["head_dim"]),
        ("head_dim odd", "head_dim", json!(15), &["head_dim"]),
        (
            "context 2^40",
            "max_position_embeddings",
            json!(1u64 << 40),
            &["max_position_embeddings"],
        ),
        (
            "ffn 2^40",
            "intermediate_size",
            json!(1u64 << 40),
            &["intermediate_size"],
        ),
        (
            "ffn 0",
            "intermediate_size",
            json!(0),
            &["intermediate_size"],
        ),
        (
            "vocab 2^40",
            "vocab_size",
            json!(1u64 << 40),
            &["vocab_size"],
        ),
        (
            "layers 2^40",
            "num_hidden_layers",
            json!(1u64 << 40),
            &["num_hidden_layers"],
        ),
        (
            "hidden 2^40",
            "hidden_size",
            json!(1u64 << 40),
            &["hidden_size"],
        ),
        (
            "kv heads 3",
            "num_key_value_heads",
            json!(3),
            &["num_key_value_heads"],
        ),
        (
            "kv heads 0",
            "num_key_value_heads",
            json!(0),
            &["num_key_value_heads"],
        ),
        (
            "eps negative",
            "rms_norm_eps",
            json!(-1.0),
            &["rms_norm_eps"],
        ),
        ("rope theta 0", "rope_theta", json!(0.0), &["rope_theta"]),
        (
            "layers more than the file holds",
            "num_hidden_layers",
            json!(3),
            &["model.layers.2."],
        ),
    ];
    for (what, key, v, want) in cases {
        let dir = hf_dir_with(|c| c[*key] = v.clone());
        refused_dir(what, dir.path(), want);
    }
    // Without head_dim, hidden_size must divide into the heads.
    let dir = hf_dir_with(|c| {
        c.as_object_mut().unwrap().remove("head_dim");
        c["num_attention_heads"] = json!(3);
    });
    refused_dir(
        "hidden not divisible by heads",
        dir.path(),
        &["hidden_size", "num_attention_heads"],
    );
}

/// Rewrites the tiny model's safetensors with `edit` applied to the (name → (shape, f32 data)) map.
fn hf_dir_with_tensors(
    edit: impl Fn(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) -> tempfile::TempDir {
    let dir = hf_dir_with(|_| {});
    let bytes = std::fs::read(tiny_llama_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map = std::collections::BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        map.insert(name, (view.shape().to_vec(), data));
    }
    edit(&mut map);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .into_iter()
        .map(|(n, (s, d))| (n, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    dir
}

#[test]
fn wrong_safetensors_shapes_in_any_layer_are_refused() {
    let dir = hf_dir_with_tensors(|_| {});
    assert!(matches!(
        guarded(dir.path(), LIMIT, true),
        Ok(Outcome::Loaded)
    ));
    for name in [
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        let dir = hf_dir_with_tensors(|m| {
            let (shape, data) = m.get_mut(name).unwrap();
            shape[0] /= 2;
            data.truncate(shape.iter().product());
        });
        refused_dir(name, dir.path(), &[name]);
    }
}

fn peft_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A copy of a checked-in PEFT adapter with its config edited.
fn adapter_with(edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
        std::fs::copy(peft_dir("peft_all_targets").join(f), dir.path().join(f)).unwrap();
    }
    let p = dir.path().join(peft::CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, cfg.to_string()).unwrap();
    dir
}

#[test]
fn adapter_configs_out_of_bounds_are_refused() {
    use serde_json::json;
    let cases: &[(&str, &str, serde_json::Value, &str)] = &[
        ("rank 0", "r", json!(0), "\"r\""),
        ("rank 2^40", "r", json!(1u64 << 40), "\"r\""),
        ("rank as a string", "r", json!("8"), "\"r\""),
        ("alpha as a string", "lora_alpha", json!("16"), "lora_alpha"),
        ("alpha 0", "lora_alpha", json!(0), "lora_alpha"),
        ("alpha 1e300", "lora_alpha", json!(1e300), "lora_alpha"),
        ("alpha negative", "lora_alpha", json!(-8), "lora_alpha"),
        ("dropout 2", "lora_dropout", json!(2.0), "lora_dropout"),
        ("no targets", "target_modules", json!([]), "target_modules"),
        (
            "a target that is not a string",
            "target_modules",
            json!([7]),
            "target_modules",
        ),
        (
            "rslora as a string",
            "use_rslora",
            json!("yes"),
            "use_rslora",
        ),
    ];
    for (what, key, v, want) in cases {
        let dir = adapter_with(|c| c[*key] = v.clone());
        let err = peft::load(dir.path(), &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{what}: loaded"))
            .to_string();
        assert!(err.contains(want), "{what}: should mention {want}: {err}");
    }
}

/// Writes an adapter directory holding exactly `tensors` (name → (shape, values)).
fn adapter_tensors(cfg: &LoraConfig, tensors: &[(&str, Vec<usize>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(peft::CONFIG_FILE),
        peft::config_json(cfg).to_string(),
    )
    .unwrap();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| {
            let n_el: usize = s.iter().product();
            (n.to_string(), s.clone(), vec![0u8; n_el * 4])
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.path().join(peft::WEIGHTS_FILE),
        safetensors::tensor::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn adapter_tensors_that_do_not_fit_the_config_or_the_base_are_refused() {
    let base = load::load(&tiny_llama_dir(), &Device::Cpu).unwrap();
    let cfg = LoraConfig::new(4, 8.0, &[Target::Q]);
    let a = |l: usize| format!("base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight");
    let b = |l: usize| format!("base_model.model.model.layers.{l}.self_attn.q_proj.lora_B.weight");
    let (a0, b0, a1, b1) = (a(0), b(0), a(1), b(1));
    let a_dup = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight";
    let huge = a(usize::MAX);
    type Tensors<'a> = Vec<(&'a str, Vec<usize>)>;
    let cases: Vec<(&str, Tensors, &str)> = vec![
        (
            "A of the wrong rank",
            vec![(&a0, vec![3, 64]), (&b0, vec![64, 4])],
            "rank",
        ),
        (
            "B of the wrong rank",
            vec![(&a0, vec![4, 64]), (&b0, vec![64, 5])],
            "rank",
        ),
        (
            "A as 3-d",
            vec![(&a0, vec![4, 8, 8]), (&b0, vec![64, 4])],
            "lora_A",
        ),
        (
            "B as 1-d",
            vec![(&a0, vec![4, 64]), (&b0, vec![256])],
            "lora_B",
        ),
        (
            "A for another model's width",
            vec![(&a0, vec![4, 32]), (&b0, vec![64, 4])],
            "another base model",
        ),
        (
            "B for another model's width",
            vec![(&a0, vec![4, 64]), (&b0, vec![48, 4])],
            "another base model",
        ),
        (
            "a layer the base does not have",
            vec![
                (&a0, vec![4, 64]),
                (&b0, vec![64, 4]),
                (&a1, vec![4, 64]),
                (&b1, vec![64, 4]),
                (&huge, vec![4, 64]),
            ],
            "layer",
        ),
        (
            "the same tensor twice",
            vec![(&a0, vec![4, 64]), (&b0, vec![64, 4]), (a_dup, vec![4, 64])],
            "twice",
        ),
    ];
    for (what, tensors, want) in cases {
        let dir = adapter_tensors(&cfg, &tensors);
        let err = match peft::load(dir.path(), &Device::Cpu) {
            Err(e) => e.to_string(),
            Ok(adapter) => match base.check_adapter(&adapter) {
                Err(e) => e.to_string(),
                Ok(()) => panic!("{what}: accepted"),
            },
        };
        assert!(err.contains(want), "{what}: should mention {want:?}: {err}");
    }
    // The same files with the right shapes load and fit.
    let dir = adapter_tensors(&cfg, &[(&a0, vec![4, 64]), (&b0, vec![64, 4])]);
    let ok: LoraAdapter = peft::load(dir.path(), &Device::Cpu).unwrap();
    base.check_adapter(&ok).unwrap();
}
