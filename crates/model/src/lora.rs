//! LoRA adapters and how a batch says which rows use which adapter.
//!
//! An adapter adds `scale·B(Ax)` to a target projection, with `A: [r, in]`, `B: [out, r]` and
//! `scale = alpha/r` (or `alpha/√r` with rsLoRA). In a batch every row (token) may use a different
//! adapter or none: [`RowAdapters`] groups the rows by adapter so each adapter runs one gathered
//! product over its rows (the SGMV idea of Punica/S-LoRA). [`RowAdapters::apply`] expresses it as
//! gather → two matmuls → scatter-add, all candle ops, so it also trains; the CPU inference path runs
//! the same math as plain loops over a packed copy of the adapter's weights (`lora_kernel`).

use crate::error::{ModelError, Result};
use crate::lora_kernel::Packed;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The projections an adapter can target, named as in PEFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// PEFT / transformers module name (`q_proj`, …).
    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// Parent module in the transformers layer (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }

    /// Parses a PEFT name; accepts the short forms `q`, `gate`, … too.
    pub fn parse(name: &str) -> Option<Target> {
        let short = name.strip_suffix("_proj").unwrap_or(name);
        Some(match short {
            "q" => Target::Q,
            "k" => Target::K,
            "v" => Target::V,
            "o" => Target::O,
            "gate" => Target::Gate,
            "up" => Target::Up,
            "down" => Target::Down,
            _ => return None,
        })
    }
}

/// Hyper-parameters of an adapter (PEFT's `LoraConfig` subset that changes the math).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub targets: Vec<Target>,
    pub dropout: f64,
    /// The base model the adapter was trained on (PEFT's `base_model_name_or_path`).
    pub base_model: Option<String>,
}

impl LoraConfig {
    pub fn new(r: usize, alpha: f64, targets: &[Target]) -> Self {
        Self {
            r,
            alpha,
            use_rslora: false,
            targets: targets.to_vec(),
            dropout: 0.0,
            base_model: None,
        }
    }

    /// `alpha/r`, or `alpha/√r` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// One target's low-rank pair: `A: [r, in]`, `B: [out, r]`.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
}

impl LoraPair {
    /// `scale·B·A`, the dense update `[out, in]`, computed in f32 (an adapter read for serving
    /// holds f16 views of its packed copy; f32 pairs are used as they are).
    pub fn delta(&self, scale: f64) -> Result<Tensor> {
        let f32 = |t: &Tensor| -> Result<Tensor> {
            Ok(match t.dtype() {
                DType::F32 | DType::F64 => t.clone(),
                _ => t.to_dtype(DType::F32)?,
            })
        };
        Ok((f32(&self.b)?.matmul(&f32(&self.a)?)? * scale)?)
    }
}

/// How the CPU kernels keep an adapter's weights (see [`LoraAdapter::prepare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPrecision {
    /// Rounded to f16 (relative error at most 2⁻¹¹): half the bytes of f32, so a batch of rows
    /// with different adapters reads half as much. The default.
    F16,
    /// The weights exactly as loaded.
    F32,
}

static DEFAULT_PRECISION: AtomicBool = AtomicBool::new(false);

/// Sets the precision adapters packed from now on get (by [`LoraAdapter::prepare`], by
/// [`crate::peft::load`], or on first use); adapters already packed keep theirs.
pub fn set_default_kernel_precision(precision: KernelPrecision) {
    DEFAULT_PRECISION.store(precision == KernelPrecision::F32, Ordering::Relaxed);
}

/// The precision [`LoraAdapter::prepare`] packs in: [`KernelPrecision::F16`] unless set otherwise.
pub fn default_kernel_precision() -> KernelPrecision {
    if DEFAULT_PRECISION.load(Ordering::Relaxed) {
        KernelPrecision::F32
    } else {
        KernelPrecision::F16
    }
}

/// A LoRA adapter: config plus one [`LoraPair`] per (layer, target) it touches.
///
/// For the CPU inference path the adapter also keeps its weights packed in the layout the kernels
/// stream (`lora_kernel::Packed`), in f16 by default ([`KernelPrecision`]: serving many adapters at
/// once is bound by reading them). It is made once, by [`LoraAdapter::prepare`] (which
/// [`crate::peft::load`] calls) or on first use; the tensors stay the adapter's exact values for
/// everything else (saving, merging, training, the candle path).
///
/// An adapter read for serving ([`crate::peft::load_packed`]) keeps only the packed copy: its
/// tensors are strided views of it ([`LoraAdapter::tensors_are_packed`]), so they hold the values
/// the kernels serve (f16-rounded by default), and a load writes a third of the bytes.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pairs: BTreeMap<(usize, Target), LoraPair>,
    packed: OnceLock<Option<Arc<Packed>>>,
    /// Whether the tensors are views of `packed` (no memory of their own).
    views: bool,
}

impl LoraAdapter {
    /// An adapter with no weights yet (fill with [`LoraAdapter::insert`]).
    pub fn empty(config: LoraConfig) -> Self {
        Self {
            config,
            pairs: BTreeMap::new(),
            packed: OnceLock::new(),
            views: false,
        }
    }

    /// An adapter whose only copy of the weights is `packed`: every pair is a view of it. The
    /// pairs' ranks are checked against `config`.
    pub(crate) fn from_packed(config: LoraConfig, packed: Packed) -> Result<Self> {
        let mut adapter = Self::empty(config);
        for (layer, t, a, b) in packed.views()? {
            adapter.insert(layer, t, LoraPair { a, b })?;
        }
        adapter.packed = OnceLock::from(Some(Arc::new(packed)));
        adapter.views = true;
        Ok(adapter)
    }

    /// Whether the tensors are views of the packed copy (an adapter read for serving) rather than
    /// weights of their own.
    pub fn tensors_are_packed(&self) -> bool {
        self.views
    }

    /// Bytes the adapter's weights take in memory: the tensors' own storage (none when they are
    /// views of the packed copy) plus the packed copy.
    pub fn resident_bytes(&self) -> usize {
        let tensors = if self.views {
            0
        } else {
            self.pairs
                .values()
                .map(|p| {
                    p.a.elem_count() * p.a.dtype().size_in_bytes()
                        + p.b.elem_count() * p.b.dtype().size_in_bytes()
                })
                .sum()
        };
        tensors + self.packed_bytes()
    }

    /// Adds the pair for `(layer, target)`, checking its rank.
    pub fn insert(&mut self, layer: usize, target: Target, pair: LoraPair) -> Result<()> {
        let (r_a, _) = pair.a.dims2()?;
        let (_, r_b) = pair.b.dims2()?;
        if r_a != self.config.r || r_b != self.config.r {
            return Err(ModelError::Adapter(format!(
                "layer {layer} {}: A has rank {r_a} and B rank {r_b}, config says r={}",
                target.peft_name(),
                self.config.r
            )));
        }
        self.pairs.insert((layer, target), pair);
        self.packed = OnceLock::new();
        self.views = false;
        Ok(())
    }

    /// A freshly initialised adapter for a model shape: A random (seeded), B zero as PEFT does, or
    /// both random when `random_b` (tests use that so the adapter changes the output).
    pub fn init(
        config: LoraConfig,
        dims: &dyn Fn(Target) -> (usize, usize),
        layers: usize,
        seed: u64,
        random_b: bool,
        device: &Device,
    ) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut adapter = Self::empty(config.clone());
        for layer in 0..layers {
            for &t in &config.targets {
                let (out_f, in_f) = dims(t);
                let bound = 1.0 / (in_f as f32).sqrt();
                let a: Vec<f32> = (0..config.r * in_f)
                    .map(|_| rng.gen_range(-bound..bound))
                    .collect();
                let b: Vec<f32> = if random_b {
                    (0..out_f * config.r)
                        .map(|_| rng.gen_range(-0.05..0.05))
                        .collect()
                } else {
                    vec![0.0; out_f * config.r]
                };
                let pair = LoraPair {
                    a: Tensor::from_vec(a, (config.r, in_f), device)?,
                    b: Tensor::from_vec(b, (out_f, config.r), device)?,
                };
                adapter.insert(layer, t, pair)?;
            }
        }
        Ok(adapter)
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    /// Every (layer, target, pair), in order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, Target, &LoraPair)> {
        self.pairs.iter().map(|(&(l, t), p)| (l, t, p))
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// Packs the weights for the CPU kernels now rather than on first use (see the type's doc), in
    /// the process default [`KernelPrecision`]. Nothing is packed for adapters the kernels cannot
    /// take: tensors on another device, or training variables (the optimizer changes them in
    /// place); those run on the candle path.
    pub fn prepare(&self) {
        self.packed();
    }

    /// [`LoraAdapter::prepare`] in a given precision (f32 anyway for a weight beyond f16's range).
    /// The first packing stays: this does nothing once the adapter is packed.
    pub fn prepare_as(&self, precision: KernelPrecision) {
        self.packed
            .get_or_init(|| Packed::build(self, precision).map(Arc::new));
    }

    /// The precision the packed copy was made in; `None` while there is none.
    pub fn kernel_precision(&self) -> Option<KernelPrecision> {
        Some(self.packed.get()?.as_ref()?.precision())
    }

    /// Bytes of the packed copy for the CPU kernels (0 until [`LoraAdapter::prepare`] or first use,
    /// and for adapters that are not packed), on top of the tensors' own bytes.
    pub fn packed_bytes(&self) -> usize {
        self.packed
            .get()
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p.bytes())
    }

    /// The packed copy, made on first call; `None` for adapters the kernels cannot take.
    pub(crate) fn packed(&self) -> Option<&Packed> {
        self.packed
            .get_or_init(|| Packed::build(self, default_kernel_precision()).map(Arc::new))
            .as_deref()
    }

    /// The same adapter with every B negated: its update is exactly `−scale·B·A` (negation does
    /// not round), so a row running it on weights with `self` merged in sees the base weights.
    /// Packed for the kernels in the precision `self` was packed in (exact in f16 too).
    pub fn negated(&self) -> Result<Self> {
        let mut out = Self::empty(self.config.clone());
        for (&k, p) in &self.pairs {
            let pair = LoraPair {
                a: p.a.clone(),
                b: p.b.neg()?,
            };
            out.pairs.insert(k, pair);
        }
        if let Some(p) = self.kernel_precision() {
            out.prepare_as(p);
        }
        Ok(out)
    }

    /// One adapter whose update is `self`'s plus `other`'s, for a row that needs both: the ranks
    /// stacked (`A = [A₁; A₂]`, `B = [s₁·B₁ | s₂·B₂]`, scale 1), the targets united; where only
    /// one side has a pair the other's half is zeros. f32, on the pairs' device.
    pub fn stacked(&self, other: &LoraAdapter) -> Result<Self> {
        let (r1, r2) = (self.config.r, other.config.r);
        let r = r1 + r2;
        let mut targets = self.config.targets.clone();
        for t in &other.config.targets {
            if !targets.contains(t) {
                targets.push(*t);
            }
        }
        targets.sort();
        let mut config = LoraConfig::new(r, r as f64, &targets);
        config.base_model = self.config.base_model.clone();
        let mut out = Self::empty(config);
        let keys: std::collections::BTreeSet<(usize, Target)> = self
            .pairs
            .keys()
            .chain(other.pairs.keys())
            .copied()
            .collect();
        for k in keys {
            let (mine, theirs) = (self.pairs.get(&k), other.pairs.get(&k));
            let Some(any) = mine.or(theirs) else {
                continue;
            };
            let ((out_f, _), (_, in_f)) = (any.b.dims2()?, any.a.dims2()?);
            let dev = any.a.device();
            let half =
                |p: Option<&LoraPair>, rank: usize, scale: f64| -> Result<(Tensor, Tensor)> {
                    Ok(match p {
                        Some(p) => (
                            p.a.to_dtype(DType::F32)?,
                            (p.b.to_dtype(DType::F32)? * scale)?,
                        ),
                        None => (
                            Tensor::zeros((rank, in_f), DType::F32, dev)?,
                            Tensor::zeros((out_f, rank), DType::F32, dev)?,
                        ),
                    })
                };
            let (a1, b1) = half(mine, r1, self.config.scale())?;
            let (a2, b2) = half(theirs, r2, other.config.scale())?;
            let pair = LoraPair {
                a: Tensor::cat(&[&a1, &a2], 0)?,
                b: Tensor::cat(&[&b1, &b2], 1)?,
            };
            out.insert(k.0, k.1, pair)?;
        }
        Ok(out)
    }

    /// Converts every tensor to f32 on `device` (adapters may arrive as f16/bf16).
    pub fn to_f32(&self, device: &Device) -> Result<Self> {
        let mut out = Self::empty(self.config.clone());
        for (&k, p) in &self.pairs {
            let a = p.a.to_device(device)?.to_dtype(DType::F32)?;
            let b = p.b.to_device(device)?.to_dtype(DType::F32)?;
            out.pairs.insert(k, LoraPair { a, b });
        }
        Ok(out)
    }
}

/// Which rows of a batch use which adapter. Rows not in any group use the base model alone.
pub struct RowAdapters<'a> {
    groups: Vec<Group<'a>>,
    device: Device,
}

struct Group<'a> {
    adapter: &'a LoraAdapter,
    /// The rows, ascending; `None` when the group covers every row (no gather/scatter needed).
    rows: Option<Vec<u32>>,
    /// `rows` as a tensor for the candle path, made the first time it is needed.
    rows_tensor: OnceLock<Tensor>,
}

impl<'a> RowAdapters<'a> {
    /// No adapters: the base model.
    pub fn none() -> Self {
        Self {
            groups: Vec::new(),
            device: Device::Cpu,
        }
    }

    /// Builds the groups from one optional adapter per row (adapters compared by address).
    pub fn from_rows(per_row: &[Option<&'a LoraAdapter>], device: &Device) -> Result<Self> {
        let mut groups: Vec<(&'a LoraAdapter, Vec<u32>)> = Vec::new();
        for (row, adapter) in per_row.iter().enumerate() {
            if let Some(a) = adapter {
                match groups.iter_mut().find(|(g, _)| std::ptr::eq(*g, *a)) {
                    Some((_, rows)) => rows.push(row as u32),
                    None => groups.push((a, vec![row as u32])),
                }
            }
        }
        let n = per_row.len();
        let groups = groups
            .into_iter()
            .map(|(adapter, rows)| Group {
                adapter,
                rows: (rows.len() != n).then_some(rows),
                rows_tensor: OnceLock::new(),
            })
            .collect();
        Ok(Self {
            groups,
            device: device.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Each group's adapter and rows (`None`: every row of the batch).
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&'a LoraAdapter, Option<&[u32]>)> + '_ {
        self.groups.iter().map(|g| (g.adapter, g.rows.as_deref()))
    }

    /// Adds every group's `scale·B(A·x[rows])` into `y[rows]` for `(layer, target)`, as candle ops
    /// (the reference, differentiable; the CPU inference path uses `lora_kernel`).
    pub fn apply(&self, x: &Tensor, y: Tensor, layer: usize, target: Target) -> Result<Tensor> {
        let mut y = y;
        for g in &self.groups {
            let Some(pair) = g.adapter.get(layer, target) else {
                continue;
            };
            let scale = g.adapter.config.scale();
            let cast = |t: &Tensor| -> Result<Tensor> {
                Ok(if t.dtype() == x.dtype() {
                    t.clone()
                } else {
                    t.to_dtype(x.dtype())?
                })
            };
            let pair = &LoraPair {
                a: cast(&pair.a)?,
                b: cast(&pair.b)?,
            };
            match &g.rows {
                None => {
                    let d = (x.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)? * scale)?;
                    y = (y + d)?;
                }
                Some(rows) => {
                    let rows = match g.rows_tensor.get() {
                        Some(t) => t,
                        None => {
                            let t = Tensor::new(rows.as_slice(), &self.device)?;
                            g.rows_tensor.get_or_init(|| t)
                        }
                    };
                    let xs = x.index_select(rows, 0)?;
                    let d = (xs.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)? * scale)?;
                    y = y.index_add(rows, &d, 0)?;
                }
            }
        }
        Ok(y)
    }
}
