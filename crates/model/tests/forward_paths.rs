//! The two forward paths agree: the CPU inference path (plain buffers, fused products, in-place
//! attention) and the candle path used for training, on a quantized GGUF model with f16 attention and on
//! a float model with a batch of mixed LoRA adapters — through a prompt, decode steps, and a cache
//! filled by one path and continued by the other.

mod common;

use candle_core::Tensor;
use openledger_model::linear::Weight;
use openledger_model::{load, peft, Device, Llama, Logits, LoraAdapter, SeqCache, SeqInput};
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Runs one batched pass with the chosen path; returns each sequence's logits as rows.
fn pass(
    m: &mut Llama,
    differentiable: bool,
    seqs: &[(Vec<u32>, Option<&LoraAdapter>)],
    caches: &mut [SeqCache],
) -> Vec<Vec<Vec<f32>>> {
    m.set_differentiable(differentiable);
    let mut inputs: Vec<SeqInput> = seqs
        .iter()
        .zip(caches.iter_mut())
        .map(|((t, a), cache)| SeqInput {
            tokens: t,
            cache,
            adapter: *a,
        })
        .collect();
    let out: Vec<Tensor> = m.forward(&mut inputs, Logits::All).unwrap();
    m.set_differentiable(false);
    out.iter().map(|t| t.to_vec2().unwrap()).collect()
}

fn worst(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f32>>]) -> f32 {
    // Same sequences, rows and widths, and something to compare: a short output must not pass.
    let shape = |x: &[Vec<Vec<f32>>]| -> Vec<Vec<usize>> {
        x.iter().map(|s| s.iter().map(Vec::len).collect()).collect()
    };
    assert_eq!(shape(a), shape(b), "the two outputs differ in shape");
    assert!(
        a.iter().flatten().any(|r| !r.is_empty()),
        "no logits to compare"
    );
    a.iter()
        .flatten()
        .flatten()
        .zip(b.iter().flatten().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmaxes(a: &[Vec<Vec<f32>>]) -> Vec<usize> {
    a.iter()
        .flatten()
        .map(|r| openledger_model::sampling::argmax(r) as usize)
        .collect()
}

/// Prompt, then two decode steps, on both paths; and the fast path continuing the candle path's cache.
fn compare(m: &mut Llama, prompts: &[(Vec<u32>, Option<&LoraAdapter>)], tol: f32) {
    let steps: [Vec<u32>; 2] = [vec![42, 7, 300], vec![9, 1000, 5]];
    let mut fast_c: Vec<_> = prompts.iter().map(|_| m.new_cache()).collect();
    let mut slow_c = fast_c.clone();
    let mut mixed_c = fast_c.clone();
    let fast = pass(m, false, prompts, &mut fast_c);
    let slow = pass(m, true, prompts, &mut slow_c);
    pass(m, true, prompts, &mut mixed_c);
    assert!(
        worst(&fast, &slow) < tol,
        "prompt: paths differ by {}",
        worst(&fast, &slow)
    );
    assert_eq!(argmaxes(&fast), argmaxes(&slow));
    for (k, step) in steps.iter().enumerate() {
        let next: Vec<(Vec<u32>, Option<&LoraAdapter>)> = prompts
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (vec![step[i % step.len()] % 250], *a))
            .collect();
        let fast = pass(m, false, &next, &mut fast_c);
        let slow = pass(m, true, &next, &mut slow_c);
        let mixed = pass(m, false, &next, &mut mixed_c);
        assert!(
            worst(&fast, &slow) < tol,
            "step {k}: paths differ by {}",
            worst(&fast, &slow)
        );
        assert!(
            worst(&mixed, &slow) < tol,
            "step {k}: cache handed between paths differs"
        );
        assert_eq!(argmaxes(&fast), argmaxes(&slow), "step {k}");
    }
    assert_eq!(fast_c.len(), slow_c.len());
    for (f, s) in fast_c.iter().zip(&slow_c) {
        assert_eq!(f.len(), s.len());
        assert_eq!(f.size_bytes(), s.size_bytes());
    }
}

/// SmolLM2 with f16 attention, its weights dequantized: both paths then compute in f32 throughout and
/// differ only in summation order (and the f16 roundings that order can tip). With 8-bit activations
/// those tiny differences can flip an activation's rounding, so the quantized model is compared
/// through the llama.cpp parity tests instead.
#[test]
fn smollm2_paths_agree() {
    let (m, tok) = common::model();
    let mut m = m.clone();
    m.dequantize().unwrap();
    m.lm_head = Weight::Float(m.lm_head.to_float(&Device::Cpu).unwrap());
    let a = tok
        .encode(
            "The suffix array of a corpus lists every suffix in order.",
            true,
        )
        .unwrap();
    let b = tok
        .encode("def add(a, b):\n    return a + b", true)
        .unwrap();
    compare(&mut m, &[(a, None), (b, None)], 0.05);
}

#[test]
fn float_model_with_mixed_adapters_paths_agree() {
    let mut m = load::load(&data().join("tiny_llama"), &Device::Cpu).unwrap();
    let a = peft::load(&data().join("peft_all_targets"), &Device::Cpu).unwrap();
    let b = peft::load(&data().join("peft_rslora"), &Device::Cpu).unwrap();
    compare(
        &mut m,
        &[
            (vec![5, 9, 200, 3, 77, 1], Some(&a)),
            (vec![18, 2], None),
            (vec![100, 101, 102, 103], Some(&b)),
        ],
        1e-4,
    );
}

/// A pass that fails (an out-of-vocabulary id in one sequence) leaves every cache as it was, and the
/// next good pass continues from there.
#[test]
fn failed_pass_leaves_caches_unchanged() {
    let mut m = load::load(&data().join("tiny_llama"), &Device::Cpu).unwrap();
    let first = [(vec![1, 2, 3], None), (vec![4], None)];
    let mut caches = vec![m.new_cache(), m.new_cache()];
    pass(&mut m, false, &first, &mut caches);
    let bytes: Vec<usize> = caches.iter().map(|c| c.size_bytes()).collect();
    let (good, bad) = ([5u32], [u32::MAX]);
    let mut inputs: Vec<SeqInput> = [&good[..], &bad[..]]
        .into_iter()
        .zip(caches.iter_mut())
        .map(|(tokens, cache)| SeqInput {
            tokens,
            cache,
            adapter: None,
        })
        .collect();
    assert!(m.forward(&mut inputs, Logits::Last).is_err());
    drop(inputs);
    assert_eq!(caches.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(
        caches.iter().map(|c| c.size_bytes()).collect::<Vec<_>>(),
        bytes
    );
    let mut fresh = vec![m.new_cache(), m.new_cache()];
    pass(&mut m, false, &first, &mut fresh);
    let next = [(vec![5], None), (vec![6], None)];
    assert_eq!(
        pass(&mut m, false, &next, &mut caches),
        pass(&mut m, false, &next, &mut fresh)
    );
}
