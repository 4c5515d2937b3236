//! The LoRA update on the CPU inference path: plain loops over a packed copy of the adapter's
//! weights (no candle op, no tensor per projection).
//!
//! Serving many adapters at once is bound by reading their weights: every row of a decode batch
//! with its own adapter reads that adapter's whole `A` and `B` once per token, as many bytes as the
//! quantized base model itself when eight rank-8 adapters share a batch. So each adapter is packed
//! once ([`Packed`]) in the order the kernels stream it: `Aᵀ` as `[in][r₈]` (`r₈`: the rank rounded
//! up to 8, zero-padded) and `Bᵀ` as `[r][out₈]` (`out₈`: the outputs rounded up to 8); in f16 by
//! default (half the bytes; see [`KernelPrecision`]) or f32. Both layouts are strided views of `A`
//! and `B`, so an adapter read for serving keeps no other copy: its tensors are views of the packed
//! data ([`Packed::views`]).
//!
//! For one projection and one batch the rows are grouped by adapter ([`RowAdapters`]) into segments.
//! A [`Plan`] turns each chunk of a segment's rows into one task of the base product's parallel loop
//! (Punica/S-LoRA's shrink and expand): `s = scale·(A·x)` (`r` values per row), then `s·Bᵀ`,
//! written into the row of the output, to which the base product then adds its own part.
//! Accumulation is in f32, and each row is computed the same way whatever else is in the batch.

use crate::error::{ModelError, Result};
use crate::lora::{KernelPrecision, LoraAdapter, LoraPair, RowAdapters, Target};
use crate::quant::matmul::Outputs;
use candle_core::{CpuStorage, DType, Device, Storage, StorageRef, Tensor};
use half::f16;

pub(crate) use simd::Elem;

/// f16's largest finite value: an adapter with a larger weight is packed in f32.
const F16_MAX: f32 = 65504.0;

fn target_index(t: Target) -> usize {
    Target::ALL
        .iter()
        .position(|&x| x == t)
        .expect("every target is in ALL")
}

fn padded_rank(r: usize) -> Option<usize> {
    r.checked_next_multiple_of(8)
}

/// Where one pair sits in the packed data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    at: usize,
    bt: usize,
    r: usize,
    cols: usize,
    out: usize,
}

impl Slot {
    /// `Aᵀ`'s elements (`cols × r₈`).
    fn a_len(&self) -> usize {
        self.cols * self.r.next_multiple_of(8)
    }
    /// `Bᵀ`'s elements (`r × out₈`).
    fn b_len(&self) -> usize {
        self.r * self.out.next_multiple_of(8)
    }
}

/// Where every pair of an adapter goes in its packed data, and how many elements that takes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// Indexed by `layer · 7 + target`.
    slots: Vec<Option<Slot>>,
    total: usize,
}

impl Layout {
    /// Adds the pair `(layer, t)` with `A: [r, cols]`, `B: [out, r]` after the ones added before;
    /// `None` on overflow or rank 0.
    pub(crate) fn push(
        &mut self,
        layer: usize,
        t: Target,
        r: usize,
        cols: usize,
        out: usize,
    ) -> Option<Slot> {
        if r == 0 {
            return None;
        }
        let at = self.total;
        let bt = at.checked_add(cols.checked_mul(padded_rank(r)?)?)?;
        self.total = bt.checked_add(out.checked_next_multiple_of(8)?.checked_mul(r)?)?;
        let i = layer.checked_mul(Target::ALL.len())? + target_index(t);
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let slot = Slot {
            at,
            bt,
            r,
            cols,
            out,
        };
        self.slots[i] = Some(slot);
        Some(slot)
    }

    /// Elements of the packed data.
    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

/// An adapter's weights packed for the kernels (see the module doc): one 1-D CPU tensor, f16 or
/// f32, that the adapter's pair tensors may be views of.
#[derive(Debug)]
pub(crate) struct Packed {
    data: Tensor,
    layout: Layout,
    scale: f32,
}

/// One packed pair's weights: `Aᵀ` (`cols × r₈`) and `Bᵀ` (`r × out₈`), as raw parts of the packed
/// data; valid while the [`Plan`] that made them holds the data's read guard.
#[derive(Clone, Copy)]
enum Weights {
    F16 { at: *const f16, b: *const f16 },
    F32 { at: *const f32, b: *const f32 },
}

/// One packed pair.
#[derive(Clone, Copy)]
pub(crate) struct PairRef {
    w: Weights,
    pub r: usize,
    pub cols: usize,
    pub out: usize,
}

impl PairRef {
    /// `Aᵀ` and `Bᵀ` as slices.
    ///
    /// # Safety
    /// The packed data the pair points into must still be alive and unwritten: the caller holds
    /// its read guard (as a [`Plan`] does for its lifetime).
    unsafe fn slices<E: simd::Elem>(&self, at: *const E, b: *const E) -> (&[E], &[E]) {
        let rp = self.r.next_multiple_of(8);
        (
            std::slice::from_raw_parts(at, self.cols * rp),
            std::slice::from_raw_parts(b, self.r * self.out.next_multiple_of(8)),
        )
    }
}

/// Calls `f` with a tensor's values as a row-major f32 slice: in place when the tensor is a
/// contiguous f32 CPU tensor, else through a converted copy.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((s, e))) =
            (&*storage, layout.contiguous_offsets())
        {
            return v.get(s..e).map(f);
        }
    }
    let v: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .ok()?;
    Some(f(&v))
}

/// Writes `A` (`r × cols`, row-major) into `data` as `Aᵀ` at its slot; false when a value does not
/// fit the element type.
pub(crate) fn pack_a<E: simd::Elem>(data: &mut [E], s: &Slot, a: &[f32]) -> bool {
    let (r, cols) = (s.r, s.cols);
    let rp = r.next_multiple_of(8);
    if a.len() != r * cols || !E::fits(a) {
        return false;
    }
    // Aᵀ: element (j, c) of A at `c·r₈ + j`.
    let dst = &mut data[s.at..s.at + s.a_len()];
    let (r8, c8) = (r - r % 8, cols - cols % 8);
    for j0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            simd::transpose8(&a[j0 * cols + c0..], cols, &mut dst[c0 * rp + j0..], rp);
        }
    }
    for j in 0..r {
        let from = if j < r8 { c8 } else { 0 };
        for c in from..cols {
            dst[c * rp + j] = E::from_f32(a[j * cols + c]);
        }
    }
    true
}

/// Writes `B` (`out × r`, row-major) into `data` as `Bᵀ` at its slot; false when a value does not
/// fit the element type.
pub(crate) fn pack_b<E: simd::Elem>(data: &mut [E], s: &Slot, b: &[f32]) -> bool {
    let (r, out) = (s.r, s.out);
    let o_p = out.next_multiple_of(8);
    if b.len() != out * r || !E::fits(b) {
        return false;
    }
    // Bᵀ: element (o, j) of B at `j·out₈ + o`.
    let dst = &mut data[s.bt..s.bt + s.b_len()];
    let (r8, o8) = (r - r % 8, out - out % 8);
    for o0 in (0..o8).step_by(8) {
        for j0 in (0..r8).step_by(8) {
            simd::transpose8(&b[o0 * r + j0..], r, &mut dst[j0 * o_p + o0..], o_p);
        }
    }
    for o in 0..out {
        let from = if o < o8 { r8 } else { 0 };
        for j in from..r {
            dst[j * o_p + o] = E::from_f32(b[o * r + j]);
        }
    }
    true
}

/// Packs `pairs` (each with its slot) into `data`; false when a value does not fit the element
/// type.
fn fill<E: simd::Elem>(pairs: &[(&LoraPair, Slot)], data: &mut [E]) -> Option<bool> {
    pairs.iter().try_fold(true, |fits, (p, s)| {
        Some(
            fits && with_values(&p.a, |a| pack_a(data, s, a))?
                && with_values(&p.b, |b| pack_b(data, s, b))?,
        )
    })
}

impl Packed {
    /// Packs every pair in `precision` (f32 where a weight is beyond f16's range); `None` when the
    /// adapter cannot be packed (see [`LoraAdapter::prepare`]).
    pub(crate) fn build(adapter: &LoraAdapter, precision: KernelPrecision) -> Option<Self> {
        let mut layout = Layout::default();
        let mut pairs = Vec::new();
        for (layer, t, pair) in adapter.pairs() {
            if pair.a.is_variable() || pair.b.is_variable() || !pair.a.device().is_cpu() {
                return None;
            }
            let (r, cols) = pair.a.dims2().ok()?;
            let (out, r_b) = pair.b.dims2().ok()?;
            if r_b != r {
                return None;
            }
            pairs.push((pair, layout.push(layer, t, r, cols, out)?));
        }
        let total = layout.total();
        let scale = adapter.config.scale() as f32;
        if precision == KernelPrecision::F16 {
            let mut d = crate::big_buffer::filled(total, f16::ZERO);
            if fill(&pairs, &mut d)? {
                return Self::new(d, layout, scale).ok();
            }
        }
        let mut d = crate::big_buffer::filled(total, 0f32);
        fill(&pairs, &mut d)?.then_some(())?;
        Self::new(d, layout, scale).ok()
    }

    /// The packed data `data` (f16 or f32, laid out by `layout`) of an adapter with that scale.
    pub(crate) fn new<E: simd::Elem + candle_core::WithDType>(
        data: Vec<E>,
        layout: Layout,
        scale: f32,
    ) -> Result<Self> {
        if data.len() != layout.total {
            return Err(ModelError::Adapter(format!(
                "packed data holds {} values, its layout {}",
                data.len(),
                layout.total
            )));
        }
        let n = data.len();
        Ok(Self {
            data: Tensor::from_vec(data, n, &Device::Cpu)?,
            layout,
            scale,
        })
    }

    /// Bytes of the packed weights.
    pub(crate) fn bytes(&self) -> usize {
        self.data.elem_count() * self.data.dtype().size_in_bytes()
            + self.layout.slots.len() * std::mem::size_of::<Option<Slot>>()
    }

    /// The element type the weights are packed in.
    pub(crate) fn precision(&self) -> KernelPrecision {
        match self.data.dtype() {
            DType::F16 => KernelPrecision::F16,
            _ => KernelPrecision::F32,
        }
    }

    /// The slot of `(layer, target)`, if the adapter has that pair.
    fn slot(&self, layer: usize, t: Target) -> Option<Slot> {
        *self
            .layout
            .slots
            .get(layer.checked_mul(Target::ALL.len())? + target_index(t))?
    }

    /// Every pair's `A` (`[r, cols]`) and `B` (`[out, r]`) as strided views of the packed data (no
    /// copy), in the packed element type: `(layer, target, A, B)`.
    pub(crate) fn views(&self) -> Result<Vec<(usize, Target, Tensor, Tensor)>> {
        let mut out = Vec::new();
        for (i, slot) in self.layout.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            let (layer, t) = (i / Target::ALL.len(), Target::ALL[i % Target::ALL.len()]);
            let rp = s.r.next_multiple_of(8);
            let a = self
                .data
                .narrow(0, s.at, s.a_len())?
                .reshape((s.cols, rp))?
                .narrow(1, 0, s.r)?
                .t()?;
            let b = self
                .data
                .narrow(0, s.bt, s.b_len())?
                .reshape((s.r, s.out.next_multiple_of(8)))?
                .narrow(1, 0, s.out)?
                .t()?;
            out.push((layer, t, a, b));
        }
        Ok(out)
    }

    /// Read access to the packed data for a [`Plan`].
    fn read(&self) -> Option<Guard<'_>> {
        let (storage, layout) = self.data.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        let base = match &*storage {
            Storage::Cpu(CpuStorage::F16(v)) if end <= v.len() => Base::F16(v[start..].as_ptr()),
            Storage::Cpu(CpuStorage::F32(v)) if end <= v.len() => Base::F32(v[start..].as_ptr()),
            _ => return None,
        };
        Some(Guard {
            _storage: storage,
            base,
        })
    }

    /// The pair for `(layer, target)` in data read through `g`, if the adapter has one.
    fn pair(&self, g: &Guard<'_>, layer: usize, t: Target) -> Option<PairRef> {
        let s = self.slot(layer, t)?;
        // SAFETY: `at + a_len` and `bt + b_len` lie inside the data (the layout made them, and
        // `Packed::new` checked the data holds `layout.total` values), which `g` keeps alive.
        let w = unsafe {
            match g.base {
                Base::F16(p) => Weights::F16 {
                    at: p.add(s.at),
                    b: p.add(s.bt),
                },
                Base::F32(p) => Weights::F32 {
                    at: p.add(s.at),
                    b: p.add(s.bt),
                },
            }
        };
        Some(PairRef {
            w,
            r: s.r,
            cols: s.cols,
            out: s.out,
        })
    }
}

/// The start of a packed tensor's values.
#[derive(Clone, Copy)]
enum Base {
    F16(*const f16),
    F32(*const f32),
}

/// A read guard on packed data: while it lives nothing writes or frees the values `base` points at.
struct Guard<'a> {
    _storage: StorageRef<'a>,
    base: Base,
}

/// The rows of one segment: every row of the batch, or the listed ones.
#[derive(Clone, Copy)]
enum Rows<'a> {
    All(usize),
    Some(&'a [u32]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::All(n) => *n,
            Rows::Some(r) => r.len(),
        }
    }
    fn get(&self, i: usize) -> usize {
        match self {
            Rows::All(_) => i,
            Rows::Some(r) => r[i] as usize,
        }
    }
}

/// One adapter's rows for one projection.
struct Segment<'g> {
    pair: PairRef,
    rows: Rows<'g>,
    scale: f32,
}

/// The LoRA updates of sibling projections over one batch, as `pre` tasks of the base product's
/// parallel loop ([`crate::quant::matmul::matmul_many_after`]): each task takes a chunk of one
/// segment's rows through shrink and expand and writes the updates into those rows of the
/// projection's output, to which the product then adds.
pub(crate) struct Plan<'g> {
    /// Per projection, its segments.
    targets: Vec<Vec<Segment<'g>>>,
    /// (projection, segment, first row, end row).
    tasks: Vec<(usize, usize, usize, usize)>,
    /// Read guards on every group's packed data, which the segments' pairs point into.
    _guards: Vec<Guard<'g>>,
}

// SAFETY: the raw pointers in the segments point into packed data behind the read guards this
// plan holds: shared, unwritten, alive as long as the plan; tasks on other threads only read it.
unsafe impl Sync for Plan<'_> {}

/// Rows per task: enough to reuse a pair's weights from cache, few enough to spread one adapter's
/// rows over the threads.
const CHUNK: usize = 4;

impl<'g> Plan<'g> {
    /// The tasks for `targets` (their outputs `outs[k]` wide) over a batch of `n` rows of `cols`
    /// inputs. `None` when some adapter has no packed copy (the caller then uses the candle
    /// reference); an error when a pair does not fit the projection.
    pub(crate) fn new(
        adapters: &'g RowAdapters<'_>,
        layer: usize,
        targets: &[Target],
        n: usize,
        cols: usize,
        outs: &[usize],
    ) -> Option<Result<Self>> {
        let groups: Vec<(Rows<'g>, &'g Packed)> = adapters
            .groups()
            .map(|(a, rows)| Some((rows.map_or(Rows::All(n), Rows::Some), a.packed()?)))
            .collect::<Option<_>>()?;
        let guards: Vec<Guard<'g>> = groups
            .iter()
            .map(|(_, p)| p.read())
            .collect::<Option<_>>()?;
        Some(Self::with_groups(
            &groups, guards, layer, targets, n, cols, outs,
        ))
    }

    fn with_groups(
        groups: &[(Rows<'g>, &'g Packed)],
        guards: Vec<Guard<'g>>,
        layer: usize,
        targets: &[Target],
        n: usize,
        cols: usize,
        outs: &[usize],
    ) -> Result<Self> {
        let mut plan_targets = Vec::with_capacity(targets.len());
        let mut tasks = Vec::new();
        for (k, (&t, &out)) in targets.iter().zip(outs).enumerate() {
            let mut segments = Vec::new();
            for (&(rows, packed), g) in groups.iter().zip(&guards) {
                let Some(pair) = packed.pair(g, layer, t) else {
                    continue;
                };
                if (pair.cols, pair.out) != (cols, out) {
                    return Err(ModelError::Adapter(format!(
                        "layer {layer} {}: adapter is {}x{}, the projection {out}x{cols}",
                        t.peft_name(),
                        pair.out,
                        pair.cols
                    )));
                }
                if let Rows::Some(r) = rows {
                    if r.iter().any(|&i| i as usize >= n) {
                        return Err(ModelError::Adapter(
                            "an adapter row lies outside the batch".into(),
                        ));
                    }
                }
                let len = rows.len();
                let si = segments.len();
                tasks.extend(
                    (0..len)
                        .step_by(CHUNK)
                        .map(|f| (k, si, f, (f + CHUNK).min(len))),
                );
                segments.push(Segment {
                    pair,
                    rows,
                    scale: packed.scale,
                });
            }
            plan_targets.push(segments);
        }
        Ok(Self {
            targets: plan_targets,
            tasks,
            _guards: guards,
        })
    }

    /// Whether no row has an update in any of the projections.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Tasks for [`Plan::run`].
    pub(crate) fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Runs task `i` on the batch `x`: for each of its rows, `s = scale·(A·x)` (shrink), then
    /// row `t` of output `k` is set to `s·Bᵀ` (expand).
    pub(crate) fn run(&self, i: usize, x: &[f32], outs: &Outputs) {
        let (k, si, first, end) = self.tasks[i];
        let seg = &self.targets[k][si];
        let (r, cols, out) = (seg.pair.r, seg.pair.cols, seg.pair.out);
        let rp = r.next_multiple_of(8);
        let m = end - first;
        // Up to CHUNK rows: fixed arrays, and the shrunk values on the stack for ranks up to 64
        // (tasks run per projection per token; they should not allocate).
        let mut rows = [0usize; CHUNK];
        let mut xs: [&[f32]; CHUNK] = [&[]; CHUNK];
        for (j, i) in (first..end).enumerate() {
            rows[j] = seg.rows.get(i);
            xs[j] = &x[rows[j] * cols..(rows[j] + 1) * cols];
        }
        let mut small = [0f32; CHUNK * 64];
        let mut large = Vec::new();
        let s: &mut [f32] = if m * rp <= small.len() {
            &mut small[..m * rp]
        } else {
            large.resize(m * rp, 0f32);
            &mut large
        };
        // SAFETY (both matches): the plan holds the read guard of the data the pair points into.
        match seg.pair.w {
            Weights::F16 { at, b } => {
                simd::shrink_rows(unsafe { seg.pair.slices(at, b) }.0, &xs[..m], s)
            }
            Weights::F32 { at, b } => {
                simd::shrink_rows(unsafe { seg.pair.slices(at, b) }.0, &xs[..m], s)
            }
        }
        for v in s.iter_mut() {
            *v *= seg.scale;
        }
        let mut ys: [&mut [f32]; CHUNK] = Default::default();
        for (y, &t) in ys.iter_mut().zip(&rows[..m]) {
            // SAFETY: this is a `pre` task of the product loop, and each row of output k belongs
            // to one segment (rows are grouped by adapter) and one chunk of it: no other task
            // accesses these rows, which are distinct.
            *y = unsafe { &mut outs.row(k, t)[..out] };
        }
        let mut ss: [&[f32]; CHUNK] = [&[]; CHUNK];
        for (sj, chunk) in ss.iter_mut().zip(s.chunks_exact(rp)) {
            *sj = &chunk[..r];
        }
        match seg.pair.w {
            Weights::F16 { at, b } => {
                simd::expand_rows(unsafe { seg.pair.slices(at, b) }.1, &ss[..m], &mut ys[..m])
            }
            Weights::F32 { at, b } => {
                simd::expand_rows(unsafe { seg.pair.slices(at, b) }.1, &ss[..m], &mut ys[..m])
            }
        }
    }
}

/// The inner loops, generic over the element type, with AVX2 + FMA + F16C versions chosen at run
/// time and plain fallbacks.
mod simd {
    use half::f16;

    /// An element type of packed weights.
    pub trait Elem: Copy + Default + Send + Sync + 'static {
        fn to_f32(self) -> f32;
        /// Rounded to nearest even.
        fn from_f32(v: f32) -> Self;
        /// Whether every value of `src` fits (is within range; NaN carries over).
        fn fits(src: &[f32]) -> bool;
        /// Eight values from `p` as f32 lanes.
        ///
        /// # Safety
        /// AVX2 and F16C must be available, and `p..p + 8` readable.
        #[cfg(target_arch = "x86_64")]
        unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
        /// Stores eight f32 lanes at `p`.
        ///
        /// # Safety
        /// AVX2 and F16C must be available, and `p..p + 8` writable.
        #[cfg(target_arch = "x86_64")]
        unsafe fn store8(p: *mut Self, v: std::arch::x86_64::__m256);
    }

    impl Elem for f32 {
        fn to_f32(self) -> f32 {
            self
        }
        fn from_f32(v: f32) -> f32 {
            v
        }
        fn fits(_: &[f32]) -> bool {
            true
        }
        #[cfg(target_arch = "x86_64")]
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
            std::arch::x86_64::_mm256_loadu_ps(p)
        }
        #[cfg(target_arch = "x86_64")]
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn store8(p: *mut f32, v: std::arch::x86_64::__m256) {
            std::arch::x86_64::_mm256_storeu_ps(p, v)
        }
    }

    impl Elem for f16 {
        fn to_f32(self) -> f32 {
            f16::to_f32(self)
        }
        fn from_f32(v: f32) -> f16 {
            f16::from_f32(v)
        }
        fn fits(src: &[f32]) -> bool {
            // NaN passes (f16 keeps it). A fold rather than `all`, so it vectorizes.
            src.iter()
                .fold(true, |ok, v| ok & (v.abs() <= super::F16_MAX || v.is_nan()))
        }
        #[cfg(target_arch = "x86_64")]
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
            use std::arch::x86_64::*;
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        }
        #[cfg(target_arch = "x86_64")]
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn store8(p: *mut f16, v: std::arch::x86_64::__m256) {
            use std::arch::x86_64::*;
            _mm_storeu_si128(p.cast(), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT))
        }
    }

    /// `dst[i·dst_stride + k] = src[k·src_stride + i]` for `i, k < 8`, converted: an 8×8 block
    /// transposed (packing `Aᵀ` and `Bᵀ`).
    pub fn transpose8<E: Elem>(src: &[f32], src_stride: usize, dst: &mut [E], dst_stride: usize) {
        assert!(src.len() > 7 * src_stride + 7 && dst.len() > 7 * dst_stride + 7);
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the features were checked; every row read and written is inside the slices
            // (asserted above).
            return unsafe { x86::transpose8(src, src_stride, dst, dst_stride) };
        }
        for i in 0..8 {
            for k in 0..8 {
                dst[i * dst_stride + k] = E::from_f32(src[k * src_stride + i]);
            }
        }
    }

    /// `s[j] = Σ_c at[c·s.len() + j] · x[c]`: the shrink over `Aᵀ` packed `[cols][s.len()]`.
    pub fn shrink<E: Elem>(at: &[E], x: &[f32], s: &mut [f32]) {
        let rp = s.len();
        assert!(rp.is_multiple_of(8) && at.len() == x.len() * rp);
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the features were checked; the lengths were asserted above.
            return unsafe { x86::shrink(at, x, s) };
        }
        s.fill(0.0);
        for (c, &xc) in x.iter().enumerate() {
            for (j, v) in s.iter_mut().enumerate() {
                *v += at[c * rp + j].to_f32() * xc;
            }
        }
    }

    /// [`shrink`] for several rows sharing `Aᵀ`: `ss` holds one `r₈`-wide result per row, each the
    /// bits [`shrink`] gives that row alone.
    pub fn shrink_rows<E: Elem>(at: &[E], xs: &[&[f32]], ss: &mut [f32]) {
        let rp = ss.len() / xs.len().max(1);
        #[cfg(target_arch = "x86_64")]
        if rp == 8 && x86::available() && xs.iter().all(|x| at.len() == x.len() * 8) {
            for (xs, ss) in xs.chunks(2).zip(ss.chunks_mut(16)) {
                // SAFETY: the features and every length were checked.
                unsafe {
                    match xs {
                        [x] => x86::shrink(at, x, ss),
                        [x0, x1] => x86::shrink8_pair(at, [x0, x1], ss),
                        _ => unreachable!("chunks of two"),
                    }
                }
            }
            return;
        }
        for (x, s) in xs.iter().zip(ss.chunks_exact_mut(rp)) {
            shrink(at, x, s);
        }
    }

    /// `d[o] = Σ_j s[j] · B[o][j]` with `B` packed as `Bᵀ`, `[s.len()][out₈]` (`out₈`: `d.len()`
    /// rounded up to 8): the expand.
    pub fn expand<E: Elem>(b: &[E], s: &[f32], d: &mut [f32]) {
        let r = s.len();
        let o_p = d.len().next_multiple_of(8);
        assert!(b.len() == o_p * r);
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            // SAFETY: the features were checked; the lengths were asserted above.
            return unsafe { x86::expand(b, s, d) };
        }
        for (o, v) in d.iter_mut().enumerate() {
            *v = (0..r).map(|j| s[j] * b[j * o_p + o].to_f32()).sum();
        }
    }

    /// [`expand`] for several rows sharing `B`, each getting the bits [`expand`] gives it alone.
    pub fn expand_rows<E: Elem>(b: &[E], ss: &[&[f32]], ds: &mut [&mut [f32]]) {
        #[cfg(target_arch = "x86_64")]
        if ss.len() > 1 && x86::available() {
            let r = ss[0].len();
            let out = ds[0].len();
            if ss.iter().all(|s| s.len() == r)
                && ds.iter().all(|d| d.len() == out)
                && b.len() == out.next_multiple_of(8) * r
            {
                for (ss, ds) in ss.chunks(4).zip(ds.chunks_mut(4)) {
                    // SAFETY: the features and every length were checked.
                    unsafe {
                        match ss.len() {
                            1 => x86::expand(b, ss[0], ds[0]),
                            2 => x86::expand_rows::<E, 2>(b, ss, ds),
                            3 => x86::expand_rows::<E, 3>(b, ss, ds),
                            _ => x86::expand_rows::<E, 4>(b, ss, ds),
                        }
                    }
                }
                return;
            }
        }
        for (s, d) in ss.iter().zip(ds.iter_mut()) {
            expand(b, s, d);
        }
    }

    /// The AVX2 bodies of the safe functions above.
    ///
    /// # Safety
    /// Every `unsafe fn` here needs AVX2, FMA and F16C ([`x86::available`]) and the slice lengths
    /// its safe wrapper asserts or checks before calling it (`transpose8`: eight strided rows
    /// inside both slices; `shrink`: `at.len() == x.len() · s.len()`, `s.len()` a multiple of 8;
    /// `expand`/`expand_rows`: `b.len() == ⌈d.len()/8⌉·8 · s.len()` for every row, `B` as `Bᵀ`). They are
    /// called only from those wrappers.
    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::Elem;
        use std::arch::x86_64::*;

        pub fn available() -> bool {
            use std::arch::is_x86_feature_detected as has;
            static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *YES.get_or_init(|| has!("avx2") && has!("fma") && has!("f16c"))
        }

        #[target_feature(enable = "avx2,f16c")]
        pub unsafe fn transpose8<E: Elem>(
            src: &[f32],
            src_stride: usize,
            dst: &mut [E],
            dst_stride: usize,
        ) {
            let p = src.as_ptr();
            let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(p.add(k * src_stride)));
            // Interleave pairs, then quads, then swap 128-bit halves.
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let rows = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            let q = dst.as_mut_ptr();
            for (i, row) in rows.iter().enumerate() {
                E::store8(q.add(i * dst_stride), *row);
            }
        }

        /// One pass over `Aᵀ`; rank 8 keeps four independent sums (over `c mod 4`), wider ranks up
        /// to 32 lanes of sums per pass.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn shrink<E: Elem>(at: &[E], x: &[f32], s: &mut [f32]) {
            let (rp, cols) = (s.len(), x.len());
            let (pa, px) = (at.as_ptr(), x.as_ptr());
            if rp == 8 {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut c = 0;
                while c + 4 <= cols {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm256_set1_ps(*px.add(c + k));
                        *acc = _mm256_fmadd_ps(xv, E::load8(pa.add((c + k) * 8)), *acc);
                    }
                    c += 4;
                }
                while c < cols {
                    let xv = _mm256_set1_ps(*px.add(c));
                    acc[0] = _mm256_fmadd_ps(xv, E::load8(pa.add(c * 8)), acc[0]);
                    c += 1;
                }
                let sum =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                _mm256_storeu_ps(s.as_mut_ptr(), sum);
                return;
            }
            for v0 in (0..rp).step_by(32) {
                let lanes = ((rp - v0) / 8).min(4);
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in 0..cols {
                    let xv = _mm256_set1_ps(*px.add(c));
                    let row = pa.add(c * rp + v0);
                    for (l, acc) in acc.iter_mut().enumerate().take(lanes) {
                        *acc = _mm256_fmadd_ps(xv, E::load8(row.add(8 * l)), *acc);
                    }
                }
                for (l, acc) in acc.iter().enumerate().take(lanes) {
                    _mm256_storeu_ps(s.as_mut_ptr().add(v0 + 8 * l), *acc);
                }
            }
        }

        /// Rank 8, two rows at once: each `Aᵀ` row is loaded once for both. Each row is summed
        /// exactly as [`shrink`] sums it (four chains over `c mod 4`, the tail into the first, then
        /// `(0 + 1) + (2 + 3)`), so a row's result does not depend on its neighbours.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[allow(clippy::needless_range_loop)] // k and m index two accumulator dimensions
        pub unsafe fn shrink8_pair<E: Elem>(at: &[E], xs: [&[f32]; 2], ss: &mut [f32]) {
            let cols = xs[0].len();
            let pa = at.as_ptr();
            let px = [xs[0].as_ptr(), xs[1].as_ptr()];
            let mut acc = [[_mm256_setzero_ps(); 4]; 2];
            let mut c = 0;
            while c + 4 <= cols {
                for k in 0..4 {
                    let a = E::load8(pa.add((c + k) * 8));
                    for m in 0..2 {
                        let xv = _mm256_set1_ps(*px[m].add(c + k));
                        acc[m][k] = _mm256_fmadd_ps(xv, a, acc[m][k]);
                    }
                }
                c += 4;
            }
            while c < cols {
                let a = E::load8(pa.add(c * 8));
                for m in 0..2 {
                    acc[m][0] = _mm256_fmadd_ps(_mm256_set1_ps(*px[m].add(c)), a, acc[m][0]);
                }
                c += 1;
            }
            for (m, acc) in acc.iter().enumerate() {
                let sum =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                _mm256_storeu_ps(ss.as_mut_ptr().add(m * 8), sum);
            }
        }

        /// Stores lanes of `v` to `d[o..]` (all eight, or as many as `d` has left).
        #[target_feature(enable = "avx2")]
        unsafe fn store_tile(d: &mut [f32], o: usize, v: __m256) {
            if o + 8 <= d.len() {
                _mm256_storeu_ps(d.as_mut_ptr().add(o), v);
            } else {
                let mut tmp = [0f32; 8];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                let n = d.len() - o;
                d[o..].copy_from_slice(&tmp[..n]);
            }
        }

        /// Four tiles (32 outputs) at a time, each an independent sum over the rank.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn expand<E: Elem>(b: &[E], s: &[f32], d: &mut [f32]) {
            let tiles = d.len().div_ceil(8);
            let o_p = tiles * 8;
            let pb = b.as_ptr();
            let mut t = 0;
            while t < tiles {
                let group = (tiles - t).min(4);
                let mut acc = [_mm256_setzero_ps(); 4];
                for (j, &sj) in s.iter().enumerate() {
                    let sv = _mm256_set1_ps(sj);
                    let row = pb.add(j * o_p);
                    for (k, acc) in acc.iter_mut().enumerate().take(group) {
                        *acc = _mm256_fmadd_ps(sv, E::load8(row.add((t + k) * 8)), *acc);
                    }
                }
                for (k, acc) in acc.iter().enumerate().take(group) {
                    store_tile(d, (t + k) * 8, *acc);
                }
                t += group;
            }
        }

        /// `M` rows at once, two tiles (16 outputs) at a time: each tile row is loaded once for all
        /// of them; every (row, tile) sums over the rank in the order [`expand`] does.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[allow(clippy::needless_range_loop)] // j indexes every row's shrunk values
        pub unsafe fn expand_rows<E: Elem, const M: usize>(
            b: &[E],
            ss: &[&[f32]],
            ds: &mut [&mut [f32]],
        ) {
            let r = ss[0].len();
            let tiles = ds[0].len().div_ceil(8);
            let o_p = tiles * 8;
            let pb = b.as_ptr();
            let mut t = 0;
            while t < tiles {
                let group = (tiles - t).min(2);
                let mut acc = [[_mm256_setzero_ps(); 2]; M];
                for j in 0..r {
                    let row = pb.add(j * o_p);
                    let w0 = E::load8(row.add(t * 8));
                    let w1 = E::load8(row.add((t + group - 1) * 8));
                    for (m, acc) in acc.iter_mut().enumerate() {
                        let sv = _mm256_set1_ps(ss[m][j]);
                        acc[0] = _mm256_fmadd_ps(sv, w0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(sv, w1, acc[1]);
                    }
                }
                for (m, acc) in acc.iter().enumerate() {
                    for (k, acc) in acc.iter().enumerate().take(group) {
                        store_tile(ds[m], (t + k) * 8, *acc);
                    }
                }
                t += group;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn values(n: usize, salt: usize) -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + salt * 104729) % 2001) as f32 - 1000.0) / 997.0)
                .collect()
        }

        fn halves(v: &[f32]) -> Vec<f16> {
            v.iter().map(|&x| f16::from_f32(x)).collect()
        }

        #[test]
        fn packing_checks_range_and_transposes() {
            let src = [values(37, 1), vec![65504.0, -1e-7, 0.0, f32::NAN, 3.0e-5]].concat();
            assert!(f16::fits(&src) && f32::fits(&src));
            for too_big in [65520.0, -1e9, f32::INFINITY] {
                let mut src = values(19, 2);
                src[17] = too_big;
                assert!(!f16::fits(&src), "{too_big}");
            }
            let src = values(8 * 13, 3);
            let mut halves = vec![f16::ZERO; 8 * 11];
            let mut singles = vec![0f32; 8 * 11];
            transpose8(&src, 13, &mut halves, 11);
            transpose8(&src, 13, &mut singles, 11);
            for i in 0..8 {
                for k in 0..8 {
                    let v = src[k * 13 + i];
                    assert_eq!(halves[i * 11 + k].to_bits(), f16::from_f32(v).to_bits());
                    assert_eq!(singles[i * 11 + k].to_bits(), v.to_bits());
                }
            }
        }

        /// Every loop computes its definition, for sizes that use every SIMD tail, and several rows
        /// at once give each row the bits it gets alone (batch invariance).
        fn loops_for<E: Elem>(pack: impl Fn(&[f32]) -> Vec<E>) {
            for (rp, cols) in [(8, 576), (8, 7), (16, 40), (40, 33), (64, 9)] {
                let (at, x) = (pack(&values(rp * cols, 3)), values(cols, 4));
                let mut s = vec![f32::NAN; rp];
                shrink(&at, &x, &mut s);
                for (j, v) in s.iter().enumerate() {
                    let want: f32 = (0..cols).map(|c| at[c * rp + j].to_f32() * x[c]).sum();
                    let tol = 1e-4 * want.abs().max(1.0);
                    assert!((v - want).abs() < tol, "rp {rp} cols {cols} j {j}");
                }
            }
            for (r, out) in [(8usize, 576usize), (3, 45), (1, 64), (16, 7), (5, 200)] {
                let (b, s) = (pack(&values(out.next_multiple_of(8) * r, 5)), values(r, 6));
                let mut d = vec![f32::NAN; out];
                expand(&b, &s, &mut d);
                for (o, v) in d.iter().enumerate() {
                    let o_p = out.next_multiple_of(8);
                    let want: f32 = (0..r).map(|j| s[j] * b[j * o_p + o].to_f32()).sum();
                    let tol = 1e-4 * want.abs().max(1.0);
                    assert!((v - want).abs() < tol, "r {r} out {out} o {o}");
                }
            }
            for (rp, cols, out) in [(8usize, 576, 1536usize), (8, 13, 20), (24, 40, 9)] {
                let at = pack(&values(rp * cols, 7));
                let b = pack(&values(out.next_multiple_of(8) * rp, 8));
                for m in 1..=5 {
                    let xs: Vec<Vec<f32>> = (0..m).map(|i| values(cols, 10 + i)).collect();
                    let xr: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
                    let mut ss = vec![0f32; m * rp];
                    shrink_rows(&at, &xr, &mut ss);
                    let mut ys = vec![vec![0f32; out]; m];
                    let sr: Vec<&[f32]> = ss.chunks_exact(rp).collect();
                    let mut yr: Vec<&mut [f32]> = ys.iter_mut().map(Vec::as_mut_slice).collect();
                    expand_rows(&b, &sr, &mut yr);
                    for (i, x) in xs.iter().enumerate() {
                        let mut s = vec![0f32; rp];
                        shrink(&at, x, &mut s);
                        assert_eq!(s, ss[i * rp..(i + 1) * rp], "shrink, row {i} of {m}");
                        let mut y = vec![0f32; out];
                        expand(&b, &s, &mut y);
                        assert_eq!(y, ys[i], "expand, row {i} of {m}");
                    }
                }
            }
        }

        #[test]
        fn f16_loops_match_their_definitions() {
            loops_for(halves);
        }

        #[test]
        fn f32_loops_match_their_definitions() {
            loops_for(|v| v.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, LoraPair};
    use crate::quant::matmul::matmul_many_after;
    use crate::quant::{matmul_many, QFormat, QWeight};
    use candle_core::{Device, Var};

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt * 104729) % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    /// `base + scale·B·A·x` for every row, in f64, with the weights as given or first rounded to
    /// f16 (what the kernels read).
    fn by_definition(
        base: &[f32],
        x: &[f32],
        per_row: &[Option<&LoraAdapter>],
        layer: usize,
        t: Target,
        round: bool,
    ) -> Vec<f32> {
        let n = per_row.len();
        let (out, cols) = (base.len() / n, x.len() / n);
        let w = |v: f32| {
            if round {
                half::f16::from_f32(v).to_f64()
            } else {
                v as f64
            }
        };
        let mut y: Vec<f64> = base.iter().map(|&v| v as f64).collect();
        for (row, adapter) in per_row.iter().enumerate() {
            let Some((adapter, pair)) = adapter.and_then(|a| a.get(layer, t).map(|p| (a, p)))
            else {
                continue;
            };
            let a: Vec<Vec<f32>> = pair.a.to_vec2().unwrap();
            let b: Vec<Vec<f32>> = pair.b.to_vec2().unwrap();
            let xr = &x[row * cols..(row + 1) * cols];
            let ax: Vec<f64> = a
                .iter()
                .map(|aj| aj.iter().zip(xr).map(|(p, q)| w(*p) * *q as f64).sum())
                .collect();
            for (o, bo) in b.iter().enumerate() {
                let d: f64 = bo.iter().zip(&ax).map(|(p, q)| w(*p) * q).sum();
                y[row * out + o] += adapter.config.scale() * d;
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        assert!(!a.is_empty());
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    }

    /// The kernel path (tasks in the quantized product's loop, deltas added by its epilogue) equals
    /// `base + scale·B·A·x` on a batch mixing rows without an adapter, adapters of ranks 1, 3, 8
    /// and 20 (rsLoRA among them) and an adapter that does not target every projection: to float
    /// rounding against the f16-rounded weights it reads, and to f16's precision against the f32
    /// candle reference ([`RowAdapters::apply`]).
    #[test]
    fn kernel_update_matches_the_definition_and_the_candle_reference() {
        for precision in [KernelPrecision::F16, KernelPrecision::F32] {
            kernel_update_matches(precision);
        }
    }

    fn kernel_update_matches(precision: KernelPrecision) {
        let dev = Device::Cpu;
        let (cols, outs) = (96, [72usize, 40, 132]);
        let targets = [Target::Q, Target::K, Target::V];
        let dims = |t: Target| (outs[targets.iter().position(|&x| x == t).unwrap()], cols);
        let mut rs = LoraConfig::new(20, 8.0, &targets);
        rs.use_rslora = true;
        let init = |cfg, seed| LoraAdapter::init(cfg, &dims, 2, seed, true, &dev).unwrap();
        let adapters = [
            init(LoraConfig::new(8, 16.0, &targets), 1),
            init(LoraConfig::new(1, 2.0, &targets), 2),
            init(rs, 3),
            init(LoraConfig::new(3, 6.0, &[Target::K]), 4),
        ];
        for a in &adapters {
            a.prepare_as(precision);
            assert_eq!(a.kernel_precision(), Some(precision));
        }
        let [a, b, c, d] = [&adapters[0], &adapters[1], &adapters[2], &adapters[3]];
        let weights: Vec<QWeight> = outs
            .iter()
            .enumerate()
            .map(|(i, &o)| QWeight::quantize(QFormat::Q4_1, o, cols, &values(o * cols, i)).unwrap())
            .collect();
        let qs: Vec<&QWeight> = weights.iter().collect();
        #[rustfmt::skip]
        let layouts: [&[Option<&LoraAdapter>]; 4] = [
            &[Some(a), None, Some(b), Some(a), Some(c), None, Some(d), Some(b), Some(a), Some(a),
              Some(a)],
            &[Some(c), Some(c), Some(c)],
            &[None, Some(d)],
            &[Some(b)],
        ];
        for per_row in layouts {
            let n = per_row.len();
            let x = values(n * cols, 9 + n);
            let rows = RowAdapters::from_rows(per_row, &dev).unwrap();
            let plan = Plan::new(&rows, 1, &targets, n, cols, &outs)
                .expect("packed")
                .unwrap();
            let fused =
                matmul_many_after(&qs, &x, n, plan.tasks(), &|i, outs| plan.run(i, &x, outs))
                    .unwrap();
            let base = matmul_many(&qs, &x, n).unwrap();
            let xt = Tensor::from_slice(&x, (n, cols), &dev).unwrap();
            for (k, &t) in targets.iter().enumerate() {
                let round = precision == KernelPrecision::F16;
                let exact = by_definition(&base[k], &x, per_row, 1, t, round);
                let err = max_diff(&fused[k], &exact);
                assert!(
                    err < 1e-4,
                    "{per_row:?} {t:?}: differs from the definition by {err}"
                );
                let yt = Tensor::from_slice(&base[k], (n, outs[k]), &dev).unwrap();
                let reference: Vec<f32> = rows
                    .apply(&xt, yt, 1, t)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                // f16 weights are within 2⁻¹¹ of the f32 ones; f32 weights leave only summation order.
                let delta = max_diff(&reference, &base[k]);
                let err = max_diff(&fused[k], &reference);
                let y_max = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = if round { 2e-3 * delta } else { 1e-6 * y_max };
                assert!(
                    err <= tol,
                    "{precision:?} {t:?}: differs from candle's by {err}, updates up to {delta}"
                );
                // Each row's update is there: rows with an adapter on `t` moved, others did not.
                for (row, ad) in per_row.iter().enumerate() {
                    let o = outs[k];
                    let moved = max_diff(&fused[k][row * o..][..o], &base[k][row * o..][..o]);
                    let has = ad.is_some_and(|ad| ad.get(1, t).is_some());
                    assert_eq!(moved > 1e-3, has, "row {row} {t:?}: moved by {moved}");
                }
            }
        }
    }

    /// The kernel path's outputs for `adapter` on every row of `x` (`n` rows), layer 1, Q/K/V.
    fn kernel_outputs(adapter: &LoraAdapter, x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let (cols, outs) = (96, [72usize, 44, 132]);
        let weights: Vec<QWeight> = outs
            .iter()
            .enumerate()
            .map(|(i, &o)| QWeight::quantize(QFormat::Q4_1, o, cols, &values(o * cols, i)).unwrap())
            .collect();
        let qs: Vec<&QWeight> = weights.iter().collect();
        let per_row = vec![Some(adapter); n];
        let rows = RowAdapters::from_rows(&per_row, &Device::Cpu).unwrap();
        let targets = [Target::Q, Target::K, Target::V];
        let plan = Plan::new(&rows, 1, &targets, n, cols, &outs)
            .expect("packed")
            .unwrap();
        matmul_many_after(&qs, x, n, plan.tasks(), &|i, outs| plan.run(i, x, outs)).unwrap()
    }

    fn saved(rank: usize, seed: u64, scale_b: f64) -> (tempfile::TempDir, LoraAdapter) {
        let dims = |t: Target| ([72usize, 44, 132][t as usize], 96);
        let targets = [Target::Q, Target::K, Target::V];
        let mut a = LoraAdapter::init(
            LoraConfig::new(rank, 2.0 * rank as f64, &targets),
            &dims,
            2,
            seed,
            true,
            &Device::Cpu,
        )
        .unwrap();
        if scale_b != 1.0 {
            let pairs: Vec<_> = a.pairs().map(|(l, t, p)| (l, t, p.clone())).collect();
            for (l, t, p) in pairs {
                let b = (&p.b * scale_b).unwrap();
                a.insert(l, t, LoraPair { a: p.a, b }).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        crate::peft::save(&a, dir.path()).unwrap();
        (dir, a)
    }

    /// An adapter read for serving keeps only its packed copy, its tensors are views of it holding
    /// the values the kernels read, and the kernels compute the same bits as from an adapter read
    /// with its f32 tensors and packed after: ranks 3 and 8, outputs not a multiple of 8, f16 and
    /// f32, and a weight beyond f16's range (packed in f32 either way).
    #[test]
    fn served_adapters_keep_only_the_packed_copy_and_compute_the_same_bits() {
        let n = 5;
        let x = values(n * 96, 21);
        for (rank, scale_b) in [(3, 1.0), (8, 1.0), (8, 1e7)] {
            let (dir, _) = saved(rank, rank as u64, scale_b);
            for precision in [KernelPrecision::F16, KernelPrecision::F32] {
                // `load` packs in the process default: a copy of its tensors, packed as asked.
                let loaded = crate::peft::load(dir.path(), &Device::Cpu).unwrap();
                let exact = loaded.to_f32(&Device::Cpu).unwrap();
                exact.prepare_as(precision);
                let served = crate::peft::load_packed_as(dir.path(), precision).unwrap();
                let want = if scale_b > 1.0 {
                    KernelPrecision::F32
                } else {
                    precision
                };
                assert_eq!(served.kernel_precision(), Some(want));
                assert_eq!(exact.kernel_precision(), Some(want));
                assert!(served.tensors_are_packed() && !exact.tensors_are_packed());
                assert_eq!(served.resident_bytes(), served.packed_bytes());
                assert_eq!(
                    exact.resident_bytes(),
                    exact.packed_bytes() + exact.num_params() * 4
                );
                assert_eq!(served.config, exact.config);
                let (pe, ps): (Vec<_>, Vec<_>) =
                    (exact.pairs().collect(), served.pairs().collect());
                assert_eq!(pe.len(), 6);
                assert_eq!(pe.len(), ps.len());
                for ((l1, t1, p1), (l2, t2, p2)) in pe.iter().zip(&ps) {
                    assert_eq!((l1, t1), (l2, t2));
                    for (x, y) in [(&p1.a, &p2.a), (&p1.b, &p2.b)] {
                        assert_eq!(x.dims(), y.dims());
                        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                        let y: Vec<f32> = y
                            .to_dtype(DType::F32)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap();
                        let round = |v: f32| match want {
                            KernelPrecision::F16 => half::f16::from_f32(v).to_f32(),
                            KernelPrecision::F32 => v,
                        };
                        assert!(x
                            .iter()
                            .zip(&y)
                            .all(|(p, q)| round(*p).to_bits() == q.to_bits()));
                    }
                }
                let (a, b) = (
                    kernel_outputs(&exact, &x, n),
                    kernel_outputs(&served, &x, n),
                );
                assert_eq!(
                    a, b,
                    "rank {rank} {precision:?}: the served adapter computes other bits"
                );
                // The update is there (the adapter moved the outputs).
                let (ty, _) = saved(1, 99, 0.0);
                let zero = crate::peft::load_packed_as(ty.path(), precision).unwrap();
                assert_ne!(a, kernel_outputs(&zero, &x, n));
            }
        }
    }

    /// Loads into memory other adapters were dropped from (the allocator hands it back) read
    /// nothing of them: a rank-3 adapter, whose packed rows have zero padding, loaded after large
    /// rank-8 ones were dropped computes the bits of its first load, as does a rank-8 one after it.
    #[test]
    fn a_load_after_others_were_dropped_reads_nothing_stale() {
        let n = 3;
        let x = values(n * 96, 22);
        let (big, _) = saved(8, 5, 100.0);
        let (small, _) = saved(3, 6, 1.0);
        let p = KernelPrecision::F16;
        let fresh_small = kernel_outputs(
            &crate::peft::load_packed_as(small.path(), p).unwrap(),
            &x,
            n,
        );
        let fresh_big = kernel_outputs(&crate::peft::load_packed_as(big.path(), p).unwrap(), &x, n);
        assert_ne!(fresh_small, fresh_big);
        for _ in 0..3 {
            let b = crate::peft::load_packed_as(big.path(), p).unwrap();
            assert_eq!(kernel_outputs(&b, &x, n), fresh_big);
            drop(b);
            let s = crate::peft::load_packed_as(small.path(), p).unwrap();
            assert_eq!(kernel_outputs(&s, &x, n), fresh_small);
        }
    }

    /// Adapters the kernels cannot take are not packed, and their batches go to candle (training
    /// variables: their values change in place); a weight beyond f16's range is packed in f32.
    #[test]
    fn packing_follows_the_weights() {
        let dev = Device::Cpu;
        let dims = |_| (32, 64);
        let cfg = LoraConfig::new(4, 8.0, &[Target::Q]);
        let a = LoraAdapter::init(cfg.clone(), &dims, 1, 1, true, &dev).unwrap();
        let slot = std::mem::size_of::<Option<Slot>>();
        let elems = 64 * 8 + 32 * 4;
        a.prepare_as(KernelPrecision::F16);
        assert_eq!(a.packed_bytes(), elems * 2 + slot);
        assert_eq!(a.kernel_precision(), Some(KernelPrecision::F16));
        let pair = a.get(0, Target::Q).unwrap();
        let with = |a: Tensor, b: Tensor| {
            let mut ad = LoraAdapter::empty(cfg.clone());
            ad.insert(0, Target::Q, LoraPair { a, b }).unwrap();
            ad
        };
        let huge = with((&pair.a * 1e6).unwrap(), pair.b.clone());
        huge.prepare_as(KernelPrecision::F16);
        assert_eq!(huge.kernel_precision(), Some(KernelPrecision::F32));
        assert_eq!(huge.packed_bytes(), elems * 4 + slot);
        let var = Var::from_tensor(&pair.a).unwrap();
        let trained = with(var.as_tensor().clone(), pair.b.clone());
        trained.prepare();
        assert_eq!(
            (trained.packed_bytes(), trained.kernel_precision()),
            (0, None)
        );
        let rows = RowAdapters::from_rows(&[Some(&trained), Some(&a)], &dev).unwrap();
        assert!(Plan::new(&rows, 0, &[Target::Q], 2, 64, &[32]).is_none());
        // Replacing a pair drops the packed copy made from the old one.
        let mut b = a.clone();
        b.insert(0, Target::Q, pair.clone()).unwrap();
        assert_eq!(b.packed_bytes(), 0);
    }
}
