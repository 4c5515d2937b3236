//! Merging LoRA adapters of one base model into a new adapter (OpenLoRA's adapter merging, with LoRAX's
//! strategies and the semantics of PEFT's `add_weighted_adapter`), and merging one adapter into a base
//! weight and back (the primitive dLoRA-style serving uses to run a hot adapter merged).
//!
//! [`merge`] takes `(adapter, weight)` pairs and a [`MergeOptions`] and returns the merged adapter with a
//! [`MergeRecord`] (serde) that says how it was made. Write `ΔWᵢ = sᵢ·Bᵢ·Aᵢ` for parent `i`'s update of
//! one projection (`sᵢ = alpha/r`, or `alpha/√r` with rsLoRA) and `wᵢ` for its weight. Methods:
//!
//! - `linear` — PEFT's `linear`: `A = Σ √(wᵢsᵢ)·Aᵢ`, `B = Σ √(wᵢsᵢ)·Bᵢ`, at the parents' common rank.
//!   With one parent this reproduces `w·ΔW`; with several the product has cross terms `Bᵢ·Aⱼ`, so it is
//!   *not* the weighted sum of the updates (that is `cat`). Needs equal ranks and weights ≥ 0 (PEFT takes
//!   the square root), and refuses otherwise, naming `cat`/`svd`.
//! - `cat` — PEFT's `cat`: the factors stacked, `A = [wᵢsᵢ·Aᵢ]`, `B = [Bᵢ]`, rank `Σ rᵢ`: exactly
//!   `Σ wᵢ·ΔWᵢ`. Any ranks, any finite weights.
//! - `svd` — PEFT's `svd`: `Σ wᵢ·ΔWᵢ`, truncated to `rank` by SVD ([`svd`]); computed from the
//!   stacked factors without forming the dense update, so it is exact and fast.
//! - `ties` — TIES (Yadav et al. 2023) on the dense updates, PEFT's `ties_svd`: keep the `density`
//!   fraction of each `ΔWᵢ` with the largest magnitude, elect a sign per element from the kept values
//!   (`total`: the sign of their sum; `frequency`: the sign of the count of signs; ties go to `+`), then
//!   average `wᵢ·ΔWᵢ` over the parents that agree with the elected sign; truncate by SVD.
//! - `dare_linear` — DARE (Yu et al. 2023), PEFT's `dare_linear_svd`: drop each element of each `ΔWᵢ`
//!   with probability `1 − density`, rescale the kept ones by `1/density`, sum with weights; SVD.
//! - `dare_ties` — DARE's drop and rescale, then TIES's sign election and disjoint mean; SVD.
//!
//! `ties`/`dare_*` work on the dense updates, not on `A` and `B` separately as PEFT's plain `ties` and
//! LoRAX do: pruning a factor prunes a whole rank-one slice of the update, and averaging factors adds
//! cross terms. `density` has no default (neither LoRAX nor PEFT has one); `density = 1` prunes nothing.
//! The SVD result has `B = U·Σ`, `A = Vᵀ` and `lora_alpha = r` (scale 1), as PEFT writes it; `rank`
//! defaults to the largest parent rank. Unlike PEFT's `*svd` paths, `sᵢ` is applied once (PEFT multiplies
//! `get_delta_weight`, already scaled, by `wᵢ·sᵢ` again).
//!
//! Parents may target different projections and layers: the result covers the union, and each
//! projection is merged from the parents that have it (as PEFT and LoRAX do); for `ties` the mean runs
//! over those parents only. Parents must come from one base model: every projection kind must have one
//! shape across all parents and layers, and declared base model names must agree (compared by their
//! last path segment, case-insensitively). DARE's drop mask and the SVD sketch are pure functions of
//! `seed` and the position (layer, projection, parent, element), so a merge is reproducible.
//!
//! [`merge_task_vectors`] exposes the element-wise kernels on plain vectors; [`merge_into_weight`] and
//! [`unmerge_from_weight`] add and remove `s·B·A` on a base weight.

#[path = "svd.rs"]
pub mod svd;

use crate::error::{ModelError, Result};
use crate::lora::{LoraAdapter, LoraConfig, LoraPair, Target};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The most adapters one merge takes.
pub const MAX_PARENTS: usize = 256;
/// The largest dense update (`out·in` elements, f64) a `svd`/`ties`/`dare_*` merge builds per projection:
/// 2^27, 1 GiB; a 13B Llama's MLP is 71M.
pub const MAX_DENSE_ELEMENTS: usize = 1 << 27;
/// The largest merged rank (what the PEFT loader accepts).
pub const MAX_RANK: usize = crate::peft::MAX_RANK;
/// Rows of the dense update built at a time per parent (bounds the scratch memory).
const BLOCK_ROWS: usize = 64;

/// How adapters are combined (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    Linear,
    Cat,
    Svd,
    Ties,
    DareLinear,
    DareTies,
}

impl MergeMethod {
    pub const ALL: [MergeMethod; 6] = [
        MergeMethod::Linear,
        MergeMethod::Cat,
        MergeMethod::Svd,
        MergeMethod::Ties,
        MergeMethod::DareLinear,
        MergeMethod::DareTies,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MergeMethod::Linear => "linear",
            MergeMethod::Cat => "cat",
            MergeMethod::Svd => "svd",
            MergeMethod::Ties => "ties",
            MergeMethod::DareLinear => "dare_linear",
            MergeMethod::DareTies => "dare_ties",
        }
    }

    /// PEFT's `combination_type` that computes the same update.
    pub fn peft_combination_type(self) -> &'static str {
        match self {
            MergeMethod::Linear => "linear",
            MergeMethod::Cat => "cat",
            MergeMethod::Svd => "svd",
            MergeMethod::Ties => "ties_svd",
            MergeMethod::DareLinear => "dare_linear_svd",
            MergeMethod::DareTies => "dare_ties_svd",
        }
    }

    /// Whether the method prunes with a `density`.
    pub fn uses_density(self) -> bool {
        matches!(
            self,
            MergeMethod::Ties | MergeMethod::DareLinear | MergeMethod::DareTies
        )
    }

    /// Whether the method elects a majority sign.
    pub fn uses_sign(self) -> bool {
        matches!(self, MergeMethod::Ties | MergeMethod::DareTies)
    }

    /// Whether the method builds the dense update and truncates it by SVD (and so takes a `rank`).
    pub fn uses_svd(self) -> bool {
        !matches!(self, MergeMethod::Linear | MergeMethod::Cat)
    }

    fn is_random(self) -> bool {
        matches!(self, MergeMethod::DareLinear | MergeMethod::DareTies)
    }
}

impl fmt::Display for MergeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MergeMethod {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        MergeMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                ModelError::Adapter(format!(
                    "unknown merge method {s:?}; choose one of linear, cat, svd, ties, dare_linear, dare_ties"
                ))
            })
    }
}

/// How `ties`/`dare_ties` elect the sign of each element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MajoritySign {
    /// The sign of the sum of the (pruned, unweighted) values.
    #[default]
    Total,
    /// The sign of the sum of their signs.
    Frequency,
}

impl MajoritySign {
    pub fn name(self) -> &'static str {
        match self {
            MajoritySign::Total => "total",
            MajoritySign::Frequency => "frequency",
        }
    }
}

impl fmt::Display for MajoritySign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MajoritySign {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "total" => Ok(MajoritySign::Total),
            "frequency" => Ok(MajoritySign::Frequency),
            _ => Err(ModelError::Adapter(format!(
                "unknown majority sign method {s:?}; choose total or frequency"
            ))),
        }
    }
}

/// What to merge and how.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    pub method: MergeMethod,
    /// The fraction of each update to keep, in (0, 1]; required by `ties`/`dare_*`, refused by the others.
    pub density: Option<f64>,
    /// For `ties`/`dare_ties` (default `total`).
    pub majority_sign: MajoritySign,
    /// The merged rank for `svd`/`ties`/`dare_*` (default: the largest parent rank). `linear` keeps the
    /// parents' rank and `cat` sums them, so those refuse a rank.
    pub rank: Option<usize>,
    /// Fixes DARE's drop mask and the SVD sketch.
    pub seed: u64,
}

impl MergeOptions {
    pub fn new(method: MergeMethod) -> Self {
        Self {
            method,
            density: None,
            majority_sign: MajoritySign::Total,
            rank: None,
            seed: 0,
        }
    }
}

impl Default for MergeOptions {
    /// LoRAX's default strategy, `linear`.
    fn default() -> Self {
        Self::new(MergeMethod::Linear)
    }
}

/// How a merged adapter was made; the caller fills each parent's `id` (a path or content hash) and
/// stores it as JSON next to the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub method: MergeMethod,
    /// The PEFT `combination_type` with the same result.
    pub peft_combination_type: String,
    pub parents: Vec<ParentRecord>,
    pub density: Option<f64>,
    pub majority_sign_method: Option<MajoritySign>,
    /// The seed, for the methods whose result depends on it (`dare_*`, and the SVD sketch).
    pub seed: Option<u64>,
    /// The merged adapter's rank and `lora_alpha` (equal: scale 1).
    pub rank: usize,
    pub lora_alpha: f64,
    pub base_model: Option<String>,
    /// PEFT names of the targeted projections (the union of the parents').
    pub targets: Vec<String>,
    /// (layer, projection) pairs in the merged adapter.
    pub pairs: usize,
    pub svd: Option<SvdSummary>,
}

/// One parent as the merge saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentRecord {
    /// Filled by the caller (the merge does not know where the adapter came from).
    pub id: Option<String>,
    pub weight: f64,
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub base_model: Option<String>,
    pub pairs: usize,
}

/// What the SVD truncation lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvdSummary {
    pub oversampling: usize,
    pub power_iterations: usize,
    /// The largest `‖ΔW − B·A‖_F / ‖ΔW‖_F` over the projections, and where it occurred.
    pub max_relative_error: f64,
    pub worst_layer: usize,
    pub worst_target: String,
    /// The mean of that error over the projections.
    pub mean_relative_error: f64,
}

/// A parent as the merge uses it.
struct Parent<'a> {
    adapter: &'a LoraAdapter,
    weight: f64,
    scale: f64,
}

/// One parent's factors for one projection, in f64 on the CPU.
struct Factors {
    index: usize,
    weight: f64,
    scale: f64,
    r: usize,
    a: Vec<f64>,
    b: Vec<f64>,
}

/// Merges `parents` (adapter, weight) into one adapter; see the module docs for the methods.
pub fn merge(
    parents: &[(&LoraAdapter, f64)],
    opts: &MergeOptions,
) -> Result<(LoraAdapter, MergeRecord)> {
    check_options(parents, opts)?;
    let parents = check_parents(parents, opts.method)?;
    let shapes = check_shapes(&parents)?;
    let keys: BTreeSet<(usize, Target)> = parents
        .iter()
        .flat_map(|p| p.adapter.pairs().map(|(l, t, _)| (l, t)))
        .collect();
    if keys.is_empty() {
        return Err(bad("the adapters hold no LoRA weights".into()));
    }
    let rank = merged_rank(&parents, &shapes, opts)?;
    let device = parents
        .iter()
        .flat_map(|p| p.adapter.pairs())
        .map(|(_, _, pair)| pair.a.device().clone())
        .next()
        .unwrap_or(Device::Cpu);
    let keys: Vec<(usize, Target)> = keys.into_iter().collect();
    let merged: Vec<(LoraPair, Option<f64>)> = keys
        .par_iter()
        .map(|&key| merge_pair(key, &parents, shapes[&key.1], rank, opts, &device))
        .collect::<Result<_>>()?;

    let targets: Vec<Target> = keys
        .iter()
        .map(|k| k.1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let first = &parents[0].adapter.config;
    let base_model = parents
        .iter()
        .find_map(|p| p.adapter.config.base_model.clone());
    let config = LoraConfig {
        r: rank,
        alpha: rank as f64,
        use_rslora: false,
        targets: targets.clone(),
        dropout: first.dropout,
        base_model: base_model.clone(),
    };
    let mut adapter = LoraAdapter::empty(config);
    let mut errors = Vec::new();
    for (&(layer, target), (pair, err)) in keys.iter().zip(merged) {
        adapter.insert(layer, target, pair)?;
        if let Some(e) = err {
            errors.push((e, layer, target));
        }
    }
    let svd = summarize(&errors);
    let record = MergeRecord {
        method: opts.method,
        peft_combination_type: opts.method.peft_combination_type().into(),
        parents: parents
            .iter()
            .map(|p| ParentRecord {
                id: None,
                weight: p.weight,
                r: p.adapter.config.r,
                lora_alpha: p.adapter.config.alpha,
                use_rslora: p.adapter.config.use_rslora,
                base_model: p.adapter.config.base_model.clone(),
                pairs: p.adapter.pairs().count(),
            })
            .collect(),
        density: opts.density,
        majority_sign_method: opts.method.uses_sign().then_some(opts.majority_sign),
        seed: opts.method.uses_svd().then_some(opts.seed),
        rank,
        lora_alpha: rank as f64,
        base_model,
        targets: targets.iter().map(|t| t.peft_name().to_string()).collect(),
        pairs: keys.len(),
        svd,
    };
    Ok((adapter, record))
}

fn bad(msg: String) -> ModelError {
    ModelError::Adapter(format!("merge: {msg}"))
}

fn check_options(parents: &[(&LoraAdapter, f64)], opts: &MergeOptions) -> Result<()> {
    let method = opts.method;
    if parents.is_empty() {
        return Err(bad("nothing to merge: give at least one adapter".into()));
    }
    if parents.len() > MAX_PARENTS {
        return Err(bad(format!(
            "{} adapters given; at most {MAX_PARENTS} merge at once",
            parents.len()
        )));
    }
    for (i, &(_, w)) in parents.iter().enumerate() {
        if !w.is_finite() {
            return Err(bad(format!(
                "the weight of adapter {i} is {w}; weights must be finite numbers"
            )));
        }
        if method == MergeMethod::Linear && w < 0.0 {
            return Err(bad(format!(
                "the weight of adapter {i} is {w}: linear scales both factors by √(weight·scale), as PEFT \
                 does, so weights must be ≥ 0; use cat (exact) or svd to subtract an adapter"
            )));
        }
    }
    match (method.uses_density(), opts.density) {
        (true, None) => {
            return Err(bad(format!(
                "{method} needs a density, the fraction of each update to keep, in (0, 1] \
                 (LoRAX and PEFT have no default either; 1 keeps everything)"
            )))
        }
        (true, Some(d)) if !(d > 0.0 && d <= 1.0) => {
            return Err(bad(format!(
                "density {d} is outside (0, 1]: it is the fraction of each update to keep"
            )))
        }
        (false, Some(_)) => {
            return Err(bad(format!(
                "{method} takes no density; density applies to ties, dare_linear and dare_ties"
            )))
        }
        _ => {}
    }
    match (method.uses_svd(), opts.rank) {
        (_, Some(0)) => Err(bad("rank 0: the merged rank must be at least 1".into())),
        (false, Some(r)) => Err(bad(format!(
            "{method} takes no rank (asked for {r}): linear keeps the parents' rank and cat sums them; \
             svd, ties, dare_linear and dare_ties truncate to a chosen rank"
        ))),
        _ => Ok(()),
    }
}

fn check_parents<'a>(
    parents: &[(&'a LoraAdapter, f64)],
    method: MergeMethod,
) -> Result<Vec<Parent<'a>>> {
    let out: Vec<Parent<'a>> = parents
        .iter()
        .enumerate()
        .map(|(i, &(adapter, weight))| {
            let scale = adapter.config.scale();
            if adapter.config.r == 0 || !(scale.is_finite() && scale > 0.0) {
                return Err(bad(format!(
                    "adapter {i} has r={} and lora_alpha={}: its scale {scale} is not a positive number",
                    adapter.config.r, adapter.config.alpha
                )));
            }
            Ok(Parent {
                adapter,
                weight,
                scale,
            })
        })
        .collect::<Result<_>>()?;
    let mut named: Option<(usize, &str)> = None;
    for (i, p) in out.iter().enumerate() {
        let Some(name) = p.adapter.config.base_model.as_deref() else {
            continue;
        };
        match named {
            None => named = Some((i, name)),
            Some((j, other)) if model_key(other) != model_key(name) => {
                return Err(bad(format!(
                    "adapter {j} was trained on {other:?} and adapter {i} on {name:?}; \
                     adapters merge only when they share one base model"
                )))
            }
            _ => {}
        }
    }
    if method == MergeMethod::Linear {
        let r0 = out[0].adapter.config.r;
        if let Some((i, p)) = out
            .iter()
            .enumerate()
            .find(|(_, p)| p.adapter.config.r != r0)
        {
            return Err(bad(format!(
                "linear needs one rank (as in PEFT and LoRAX): adapter 0 has r={r0}, adapter {i} r={}; \
                 use cat (exact, rank = the sum) or svd (truncated to --rank)",
                p.adapter.config.r
            )));
        }
    }
    Ok(out)
}

/// A base model name compared by its last path segment: `HuggingFaceTB/SmolLM2-135M` and
/// `/models/smollm2-135m/` are the same model.
fn model_key(name: &str) -> String {
    let trimmed = name.trim().trim_end_matches(['/', '\\']);
    let last = trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed);
    last.to_lowercase()
}

/// `(out, in)` of each projection kind, the same for every parent and layer.
fn check_shapes(parents: &[Parent]) -> Result<BTreeMap<Target, (usize, usize)>> {
    let mut seen: BTreeMap<Target, ((usize, usize), usize, usize)> = BTreeMap::new();
    for (i, p) in parents.iter().enumerate() {
        for (layer, t, pair) in p.adapter.pairs() {
            let (ra, inn) = pair.a.dims2()?;
            let (out, rb) = pair.b.dims2()?;
            if ra != rb {
                return Err(bad(format!(
                    "adapter {i} layer {layer} {}: lora_A has rank {ra}, lora_B {rb}",
                    t.peft_name()
                )));
            }
            match seen.get(&t) {
                None => {
                    seen.insert(t, ((out, inn), i, layer));
                }
                Some(&((o, n), j, l)) if (o, n) != (out, inn) => {
                    return Err(bad(format!(
                        "adapter {i} layer {layer} {} updates a {out}x{inn} weight, adapter {j} layer {l} \
                         a {o}x{n} one: these adapters were trained on different base models",
                        t.peft_name()
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(seen.into_iter().map(|(t, (s, _, _))| (t, s)).collect())
}

fn merged_rank(
    parents: &[Parent],
    shapes: &BTreeMap<Target, (usize, usize)>,
    opts: &MergeOptions,
) -> Result<usize> {
    let ranks = parents.iter().map(|p| p.adapter.config.r);
    match opts.method {
        MergeMethod::Linear => Ok(parents[0].adapter.config.r),
        MergeMethod::Cat => {
            let total = cat_rank(parents);
            if total > MAX_RANK {
                return Err(bad(format!(
                    "cat would make rank {total} (the sum of the parents'); at most {MAX_RANK}: use svd"
                )));
            }
            Ok(total)
        }
        _ => {
            let (limit, t) = shapes
                .iter()
                .map(|(&t, &(o, i))| (o.min(i), t))
                .min()
                .expect("at least one projection");
            let factored = opts.method == MergeMethod::Svd;
            for (&t, &(o, i)) in shapes {
                let dense = !factored || cat_rank(parents) > o.min(i);
                if dense && o.saturating_mul(i) > MAX_DENSE_ELEMENTS {
                    return Err(bad(format!(
                        "{} is {o}x{i}, larger than the {MAX_DENSE_ELEMENTS} elements a dense merge builds; \
                         use linear or cat",
                        t.peft_name()
                    )));
                }
            }
            match opts.rank {
                Some(r) if r > limit || r > MAX_RANK => Err(bad(format!(
                    "rank {r} is above what {} allows ({limit}, the smaller side of its weight; at most {MAX_RANK})",
                    t.peft_name()
                ))),
                Some(r) => Ok(r),
                None => Ok(ranks.max().unwrap_or(1).min(limit)),
            }
        }
    }
}

/// Merges one (layer, projection); returns the pair and, for SVD methods, the truncation error.
fn merge_pair(
    key: (usize, Target),
    parents: &[Parent],
    (out, inn): (usize, usize),
    rank: usize,
    opts: &MergeOptions,
    device: &Device,
) -> Result<(LoraPair, Option<f64>)> {
    let (layer, target) = key;
    let mut members = Vec::new();
    for (index, p) in parents.iter().enumerate() {
        let Some(pair) = p.adapter.get(layer, target) else {
            continue;
        };
        let where_ = |m: &str| {
            bad(format!(
                "adapter {index} layer {layer} {} lora_{m} holds a value that is not finite",
                target.peft_name()
            ))
        };
        let a = to_f64(&pair.a)?;
        if a.iter().any(|x| !x.is_finite()) {
            return Err(where_("A"));
        }
        let b = to_f64(&pair.b)?;
        if b.iter().any(|x| !x.is_finite()) {
            return Err(where_("B"));
        }
        members.push(Factors {
            index,
            weight: p.weight,
            scale: p.scale,
            r: p.adapter.config.r,
            a,
            b,
        });
    }
    let (a, b, err) = match opts.method {
        MergeMethod::Linear => {
            let (a, b) = linear(&members, rank, out, inn);
            (a, b, None)
        }
        MergeMethod::Cat => {
            let (a, b) = cat(&members, parents, rank, out, inn);
            (a, b, None)
        }
        method => {
            let tag = position_tag(layer, target);
            let seed = svd::mix(opts.seed ^ svd::mix(tag ^ 0x5344_5f53_4b45_5443));
            let s = if method == MergeMethod::Svd {
                // Σ wᵢ·sᵢ·Bᵢ·Aᵢ is the product of cat's stacked factors: decomposed exactly, unformed.
                let r_cat = cat_rank(parents);
                let (a, b) = cat(&members, parents, r_cat, out, inn);
                svd::truncated_product(
                    &svd::Matrix::new(out, r_cat, b)?,
                    &svd::Matrix::new(r_cat, inn, a)?,
                    rank,
                    seed,
                )
            } else {
                let dense = dense_update(&members, tag, out, inn, opts)?;
                svd::truncated(svd::Matrix::new(out, inn, dense)?, rank, seed)
            }
            .map_err(|e| {
                bad(format!(
                    "layer {layer} {} ({method}): {e}",
                    target.peft_name()
                ))
            })?;
            let b: Vec<f64> = (0..out * rank)
                .map(|e| s.u.get(e / rank, e % rank) * s.s[e % rank])
                .collect();
            (s.vt.into_data(), b, Some(s.relative_error))
        }
    };
    let tensor = |v: Vec<f64>, shape: (usize, usize), which: &str| -> Result<Tensor> {
        if v.iter()
            .any(|x| !x.is_finite() || x.abs() > f32::MAX as f64)
        {
            return Err(bad(format!(
                "layer {layer} {} lora_{which} overflows f32: the weights are too large",
                target.peft_name()
            )));
        }
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    };
    Ok((
        LoraPair {
            a: tensor(a, (rank, inn), "A")?,
            b: tensor(b, (out, rank), "B")?,
        },
        err,
    ))
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// PEFT's `linear`: both factors summed with `√(w·s)`.
fn linear(members: &[Factors], r: usize, out: usize, inn: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = vec![0.0; r * inn];
    let mut b = vec![0.0; out * r];
    for f in members {
        let c = (f.weight * f.scale).sqrt();
        add_scaled(&mut a, c, &f.a);
        add_scaled(&mut b, c, &f.b);
    }
    (a, b)
}

/// The rank of `cat`: the sum of the parents' ranks.
fn cat_rank(parents: &[Parent]) -> usize {
    parents.iter().map(|p| p.adapter.config.r).sum()
}

/// PEFT's `cat`: parent `i` owns ranks `[offset_i, offset_i + r_i)`; absent parents leave zeros.
fn cat(
    members: &[Factors],
    parents: &[Parent],
    r: usize,
    out: usize,
    inn: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut offsets = Vec::with_capacity(parents.len());
    let mut acc = 0;
    for p in parents {
        offsets.push(acc);
        acc += p.adapter.config.r;
    }
    let mut a = vec![0.0; r * inn];
    let mut b = vec![0.0; out * r];
    for f in members {
        let off = offsets[f.index];
        let c = f.weight * f.scale;
        for (dst, src) in a[off * inn..(off + f.r) * inn].iter_mut().zip(&f.a) {
            *dst = c * src;
        }
        for row in 0..out {
            b[row * r + off..row * r + off + f.r].copy_from_slice(&f.b[row * f.r..(row + 1) * f.r]);
        }
    }
    (a, b)
}

fn add_scaled(dst: &mut [f64], c: f64, src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += c * s;
    }
}

/// A number naming (layer, projection), for deriving random streams.
fn position_tag(layer: usize, target: Target) -> u64 {
    let t = Target::ALL
        .iter()
        .position(|&x| x == target)
        .expect("every target is in ALL") as u64;
    (layer as u64) << 8 | t
}

/// The seed of parent `index`'s drop mask at the position `tag`.
fn stream(seed: u64, tag: u64, index: usize) -> u64 {
    svd::mix(seed ^ svd::mix(tag.wrapping_add(svd::mix(index as u64 ^ 0x4441_5245))))
}

/// The merged dense update `out×in` for the SVD methods, built `BLOCK_ROWS` rows at a time.
fn dense_update(
    members: &[Factors],
    tag: u64,
    out: usize,
    inn: usize,
    opts: &MergeOptions,
) -> Result<Vec<f64>> {
    let density = opts.density.unwrap_or(1.0);
    let mut pruners = Vec::with_capacity(members.len());
    for f in members {
        pruners.push(match opts.method {
            MergeMethod::Ties => {
                let mut abs = Vec::with_capacity(out * inn);
                let mut block = vec![0.0; BLOCK_ROWS * inn];
                for row0 in (0..out).step_by(BLOCK_ROWS) {
                    let rows = BLOCK_ROWS.min(out - row0);
                    let blk = &mut block[..rows * inn];
                    task_rows(f, row0, rows, inn, blk);
                    abs.extend(blk.iter().map(|x| x.abs() as f32));
                }
                Pruner::magnitude(abs, density)
            }
            m if m.is_random() => Pruner::random(stream(opts.seed, tag, f.index), density),
            _ => Pruner::Keep,
        });
    }
    let weights: Vec<f64> = members.iter().map(|f| f.weight).collect();
    let mut merged = vec![0.0; out * inn];
    let mut scratch: Vec<Vec<f64>> = members
        .iter()
        .map(|_| vec![0.0; BLOCK_ROWS * inn])
        .collect();
    for row0 in (0..out).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(out - row0);
        for ((f, pruner), buf) in members.iter().zip(&mut pruners).zip(&mut scratch) {
            let blk = &mut buf[..rows * inn];
            task_rows(f, row0, rows, inn, blk);
            pruner.apply(blk);
        }
        let tasks: Vec<&[f64]> = scratch.iter().map(|b| &b[..rows * inn]).collect();
        combine(
            opts.method,
            opts.majority_sign,
            &weights,
            &tasks,
            &mut merged[row0 * inn..(row0 + rows) * inn],
        );
    }
    Ok(merged)
}

/// Rows `row0..row0+rows` of `s·B·A` into `out` (row-major, `rows×inn`).
fn task_rows(f: &Factors, row0: usize, rows: usize, inn: usize, out: &mut [f64]) {
    out.fill(0.0);
    for i in 0..rows {
        let orow = &mut out[i * inn..(i + 1) * inn];
        let brow = &f.b[(row0 + i) * f.r..(row0 + i + 1) * f.r];
        for (p, &bv) in brow.iter().enumerate() {
            let c = f.scale * bv;
            if c != 0.0 {
                add_scaled(orow, c, &f.a[p * inn..(p + 1) * inn]);
            }
        }
    }
}

/// Sparsifies a task vector as it streams past, block by block in element order.
enum Pruner {
    Keep,
    /// Keeps exactly `k` elements: those above `threshold` (compared in f32) and, of those equal to
    /// it, the first `ties_left` in element order.
    Magnitude {
        threshold: f32,
        ties_left: usize,
    },
    /// DARE: keeps element `e` when the `e`-th uniform of the stream `key` is below `density`, and
    /// divides it by `density`.
    Random {
        key: u64,
        density: f64,
        next: u64,
    },
}

impl Pruner {
    /// PEFT's magnitude pruning: keep the `⌊density·n⌋` largest |values| (`abs` is consumed).
    fn magnitude(mut abs: Vec<f32>, density: f64) -> Self {
        let n = abs.len();
        let k = (density * n as f64).floor() as usize;
        if density >= 1.0 || k >= n {
            return Pruner::Keep;
        }
        if k == 0 {
            return Pruner::Magnitude {
                threshold: f32::INFINITY,
                ties_left: 0,
            };
        }
        let (_, &mut threshold, _) = abs.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
        let above = abs.iter().filter(|&&a| a > threshold).count();
        Pruner::Magnitude {
            threshold,
            ties_left: k - above,
        }
    }

    fn random(key: u64, density: f64) -> Self {
        if density >= 1.0 {
            return Pruner::Keep;
        }
        Pruner::Random {
            key,
            density,
            next: 0,
        }
    }

    fn apply(&mut self, block: &mut [f64]) {
        match self {
            Pruner::Keep => {}
            Pruner::Magnitude {
                threshold,
                ties_left,
            } => {
                for x in block {
                    let a = x.abs() as f32;
                    if a > *threshold {
                        continue;
                    }
                    if a == *threshold && *ties_left > 0 {
                        *ties_left -= 1;
                        continue;
                    }
                    *x = 0.0;
                }
            }
            Pruner::Random { key, density, next } => {
                for x in block {
                    *x = if svd::unit(*key, *next) < *density {
                        *x / *density
                    } else {
                        0.0
                    };
                    *next += 1;
                }
            }
        }
    }
}

/// Combines pruned task blocks into `out` (which holds zeros): a weighted sum, or TIES's elected-sign
/// disjoint mean.
fn combine(
    method: MergeMethod,
    sign: MajoritySign,
    weights: &[f64],
    tasks: &[&[f64]],
    out: &mut [f64],
) {
    if !method.uses_sign() {
        for (t, &w) in tasks.iter().zip(weights) {
            add_scaled(out, w, t);
        }
        return;
    }
    for (e, o) in out.iter_mut().enumerate() {
        let vote: f64 = tasks
            .iter()
            .map(|t| match sign {
                MajoritySign::Total => t[e],
                MajoritySign::Frequency => sign_of(t[e]),
            })
            .sum();
        let elected = if vote >= 0.0 { 1.0 } else { -1.0 };
        let (mut sum, mut count) = (0.0, 0usize);
        for (t, &w) in tasks.iter().zip(weights) {
            if sign_of(t[e]) == elected {
                sum += w * t[e];
                count += 1;
            }
        }
        *o = sum / count.max(1) as f64;
    }
}

/// −1, 0 or 1 (`torch.sign`).
fn sign_of(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The element-wise kernels of `svd`/`ties`/`dare_linear`/`dare_ties` on flat task vectors (each pruned
/// as one tensor, then combined), without the SVD: what [`merge`] applies to each dense update.
/// The drop masks use `opts.seed` and the vector's index.
pub fn merge_task_vectors(
    tasks: &[&[f64]],
    weights: &[f64],
    opts: &MergeOptions,
) -> Result<Vec<f64>> {
    if !opts.method.uses_svd() {
        return Err(bad(format!(
            "{} combines LoRA factors, not task vectors; use svd (the weighted sum)",
            opts.method
        )));
    }
    let n = tasks.first().map_or(0, |t| t.len());
    if tasks.is_empty() || tasks.len() != weights.len() || tasks.iter().any(|t| t.len() != n) {
        return Err(bad(format!(
            "{} task vectors and {} weights: give one weight per vector, all vectors of one length",
            tasks.len(),
            weights.len()
        )));
    }
    if tasks.iter().any(|t| t.iter().any(|x| !x.is_finite())) {
        return Err(bad("a task vector holds a value that is not finite".into()));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(bad(format!(
            "a weight is {w}; weights must be finite numbers"
        )));
    }
    if opts.method.uses_density() {
        match opts.density {
            Some(d) if d > 0.0 && d <= 1.0 => {}
            other => {
                return Err(bad(format!(
                    "{} needs a density in (0, 1], got {other:?}",
                    opts.method
                )))
            }
        }
    }
    let density = opts.density.unwrap_or(1.0);
    let pruned: Vec<Vec<f64>> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut v = t.to_vec();
            let mut pruner = match opts.method {
                MergeMethod::Ties => {
                    Pruner::magnitude(v.iter().map(|x| x.abs() as f32).collect(), density)
                }
                m if m.is_random() => Pruner::random(stream(opts.seed, u64::MAX, i), density),
                _ => Pruner::Keep,
            };
            pruner.apply(&mut v);
            v
        })
        .collect();
    let views: Vec<&[f64]> = pruned.iter().map(Vec::as_slice).collect();
    let mut out = vec![0.0; n];
    combine(opts.method, opts.majority_sign, weights, &views, &mut out);
    Ok(out)
}

fn summarize(errors: &[(f64, usize, Target)]) -> Option<SvdSummary> {
    let &(max, layer, target) = errors.iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(SvdSummary {
        oversampling: svd::OVERSAMPLING,
        power_iterations: svd::POWER_ITERATIONS,
        max_relative_error: max,
        worst_layer: layer,
        worst_target: target.peft_name().into(),
        mean_relative_error: errors.iter().map(|e| e.0).sum::<f64>() / errors.len() as f64,
    })
}

/// `W + s·B·A` for the adapter's pair at `(layer, target)`: the base weight with the adapter merged in
/// (`W` itself when the adapter does not touch that projection). `weight` is the f32 `[out, in]`
/// projection; the result stays on its device.
pub fn merge_into_weight(
    weight: &Tensor,
    adapter: &LoraAdapter,
    layer: usize,
    target: Target,
) -> Result<Tensor> {
    shift_weight(weight, adapter, layer, target, 1.0)
}

/// `W − s·B·A`: undoes [`merge_into_weight`] (to float rounding: each element is back within an ulp or
/// two of the merged value's magnitude).
pub fn unmerge_from_weight(
    weight: &Tensor,
    adapter: &LoraAdapter,
    layer: usize,
    target: Target,
) -> Result<Tensor> {
    shift_weight(weight, adapter, layer, target, -1.0)
}

fn shift_weight(
    weight: &Tensor,
    adapter: &LoraAdapter,
    layer: usize,
    target: Target,
    sign: f64,
) -> Result<Tensor> {
    if weight.dtype() != DType::F32 {
        return Err(bad(format!(
            "merging into a base weight needs f32; this one is {:?} (dequantize or convert it first)",
            weight.dtype()
        )));
    }
    let (out, inn) = weight.dims2().map_err(|_| {
        bad(format!(
            "a base weight is a matrix; this one is {:?}",
            weight.dims()
        ))
    })?;
    let Some(pair) = adapter.get(layer, target) else {
        return Ok(weight.clone());
    };
    let dev = weight.device();
    let a = pair.a.to_device(dev)?.to_dtype(DType::F32)?;
    let b = pair.b.to_device(dev)?.to_dtype(DType::F32)?;
    let (_, a_in) = a.dims2()?;
    let (b_out, _) = b.dims2()?;
    if (b_out, a_in) != (out, inn) {
        return Err(bad(format!(
            "layer {layer} {}: the adapter updates a {b_out}x{a_in} weight, the base weight is {out}x{inn}",
            target.peft_name()
        )));
    }
    let delta = (b.matmul(&a)? * (adapter.config.scale() * sign))?;
    Ok((weight + delta)?)
}
