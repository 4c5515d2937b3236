//! LoRA on the CPU serving path (SmolLM2 Q4_1): the packed kernels give what the candle reference
//! gives, for batches mixing rows without an adapter and adapters of different ranks and targets,
//! and a sequence gets the same bits whatever else shares its batch.
//!
//! The reference is the same adapter with its tensors as training variables, which the kernels do
//! not take, so those rows run `RowAdapters::apply` (candle) on the same quantized base. The model
//! is cut to its first two layers for the comparisons: through 30 layers of 8-bit activations any
//! perturbation, even a different summation order, can tip an activation's rounding and grow from
//! there, so only the short model compares tightly.

mod common;

use candle_core::{DType, Tensor, Var};
use openledger_model::lora::KernelPrecision;
use openledger_model::{Llama, Logits, LoraAdapter, LoraConfig, LoraPair, SeqInput, Target};

/// Adapters of ranks 4, 8 and 16: all seven projections, attention only (rsLoRA), MLP only.
fn adapters(m: &Llama) -> Vec<LoraAdapter> {
    let dims = |t| m.target_dims(t);
    let layers = m.config.num_layers;
    let mut rs = LoraConfig::new(16, 32.0, &[Target::Q, Target::K, Target::V, Target::O]);
    rs.use_rslora = true;
    [
        LoraConfig::new(8, 16.0, &Target::ALL),
        rs,
        LoraConfig::new(4, 8.0, &[Target::Gate, Target::Up, Target::Down]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, cfg)| {
        let dev = openledger_model::Device::Cpu;
        LoraAdapter::init(cfg, &dims, layers, 11 + i as u64, true, &dev).unwrap()
    })
    .collect()
}

/// The same adapter (its weights rounded to f16 first when `round`) as training variables: the
/// kernels do not take those, so it runs on the candle reference.
fn reference(a: &LoraAdapter, round: bool) -> LoraAdapter {
    let mut r = LoraAdapter::empty(a.config.clone());
    let var = |x: &Tensor| {
        let x = if round {
            x.to_dtype(DType::F16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        } else {
            x.clone()
        };
        Var::from_tensor(&x).unwrap().as_tensor().clone()
    };
    for (layer, t, p) in a.pairs() {
        let pair = LoraPair {
            a: var(&p.a),
            b: var(&p.b),
        };
        r.insert(layer, t, pair).unwrap();
    }
    r.prepare();
    assert_eq!(r.kernel_precision(), None, "a reference must not be packed");
    r
}

/// The first `layers` layers of SmolLM2.
fn cut(layers: usize) -> Llama {
    let mut m = common::model().0.clone();
    m.blocks.truncate(layers);
    m.config.num_layers = layers;
    m
}

/// Prompt then two decode steps for every sequence in one batch: each sequence's logits, per step.
fn run(m: &Llama, seqs: &[(Vec<u32>, Option<&LoraAdapter>)]) -> Vec<Vec<Vec<f32>>> {
    let mut caches: Vec<_> = seqs.iter().map(|_| m.new_cache()).collect();
    let mut out = vec![Vec::new(); seqs.len()];
    for step in 0..3u32 {
        let toks: Vec<Vec<u32>> = seqs
            .iter()
            .map(|(p, _)| {
                if step == 0 {
                    p.clone()
                } else {
                    vec![500 + p[0] % 1000 + step]
                }
            })
            .collect();
        let mut inputs: Vec<SeqInput> = toks
            .iter()
            .zip(caches.iter_mut())
            .zip(seqs)
            .map(|((t, cache), (_, a))| SeqInput {
                tokens: t,
                cache,
                adapter: *a,
            })
            .collect();
        let logits = m.forward(&mut inputs, Logits::Last).unwrap();
        for (o, l) in out.iter_mut().zip(logits) {
            o.push(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    out
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|r| !r.is_empty()), "no logits to compare");
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn prompt(i: usize) -> Vec<u32> {
    (0..5 + i)
        .map(|j| (1000 + (j * 7919 + i * 104729) % 40000) as u32)
        .collect()
}

/// Rows without an adapter and rows of three different adapters, interleaved.
const LAYOUT: [Option<usize>; 14] = [
    Some(0),
    None,
    Some(1),
    Some(0),
    Some(2),
    None,
    Some(1),
    Some(2),
    Some(0),
    Some(1),
    None,
    Some(2),
    Some(1),
    Some(0),
];

fn batch(set: &[LoraAdapter]) -> Vec<(Vec<u32>, Option<&LoraAdapter>)> {
    LAYOUT
        .iter()
        .enumerate()
        .map(|(i, a)| (prompt(i), a.map(|a| &set[a])))
        .collect()
}

/// Packs `set` in `precision`, then checks every sequence of [`LAYOUT`] against the reference
/// (on f16-rounded weights when `round`): rows without an adapter are untouched and rows with one
/// move; the kernels and the reference agree to 2% of that move on at least half the sequences and
/// to half of it on all (a different summation order can tip an 8-bit activation's rounding, which
/// moves the logits by up to about 0.5 on this model; a wrong update misses on every sequence).
fn compare(precision: KernelPrecision, round: bool) {
    let m = &cut(2);
    let fast = adapters(m);
    for a in &fast {
        a.prepare_as(precision);
        assert_eq!(a.kernel_precision(), Some(precision));
    }
    let slow: Vec<LoraAdapter> = fast.iter().map(|a| reference(a, round)).collect();
    let (with_fast, with_slow) = (run(m, &batch(&fast)), run(m, &batch(&slow)));
    let plain: Vec<_> = (0..LAYOUT.len()).map(|i| (prompt(i), None)).collect();
    let base = run(m, &plain);
    let mut close = 0;
    for (i, a) in LAYOUT.iter().enumerate() {
        let (err, effect) = (
            max_diff(&with_fast[i], &with_slow[i]),
            max_diff(&with_slow[i], &base[i]),
        );
        if a.is_none() {
            assert_eq!(max_diff(&with_fast[i], &base[i]), 0.0, "sequence {i}");
            assert_eq!(effect, 0.0, "sequence {i}");
            continue;
        }
        assert!(
            effect > 0.3,
            "sequence {i}: the adapter moves logits by only {effect}"
        );
        assert!(
            err <= 0.5 * effect,
            "{precision:?} sequence {i}: kernels and candle differ by {err}, the adapter moves logits by {effect}"
        );
        close += usize::from(err <= 0.02 * effect);
    }
    let with_adapter = LAYOUT.iter().flatten().count();
    assert!(
        close * 2 >= with_adapter,
        "{precision:?}: only {close} of {with_adapter} sequences agree to 2%"
    );
}

#[test]
fn f32_kernels_give_the_candle_reference() {
    compare(KernelPrecision::F32, false);
}

#[test]
fn f16_kernels_give_the_candle_reference_on_f16_weights() {
    compare(KernelPrecision::F16, true);
}

#[test]
fn a_sequence_gets_the_same_bits_alone_or_batched() {
    let (m, _) = common::model();
    for precision in [KernelPrecision::F16, KernelPrecision::F32] {
        let set = adapters(m);
        for a in &set {
            a.prepare_as(precision);
        }
        let layout = [Some(0), Some(0), None, Some(2), Some(0), Some(1), Some(2)];
        let seqs: Vec<(Vec<u32>, Option<&LoraAdapter>)> = layout
            .iter()
            .enumerate()
            .map(|(i, a)| (prompt(i), a.map(|a| &set[a])))
            .collect();
        let together = run(m, &seqs);
        for (i, s) in seqs.iter().enumerate() {
            let alone = run(m, std::slice::from_ref(s));
            let same = alone[0]
                .iter()
                .flatten()
                .zip(together[i].iter().flatten())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            let by = max_diff(&alone[0], &together[i]);
            assert!(
                same,
                "{precision:?} sequence {i}: alone and batched differ by {by}"
            );
        }
    }
}
