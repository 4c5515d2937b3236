//! The training forward pass computes what the runtime computes: its loss on a batch equals the
//! negative log-likelihood from `Llama::score` with the same adapter, examples in one batch do not
//! see each other, and its gradient agrees with a finite difference.

mod common;

use candle_core::{Device, Tensor};
use openledger_factory::adapter::TrainableAdapter;
use openledger_factory::bf16::Precision;
use openledger_factory::data::Encoded;
use openledger_factory::forward::{LoraView, TrainModel};
use openledger_model::{load, LoraAdapter, LoraConfig, Target};

fn runtime_nll(m: &openledger_model::Llama, e: &Encoded, a: &LoraAdapter) -> f64 {
    let logits = m.score(&e.tokens, Some(a)).unwrap();
    let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    let rows: Vec<Vec<f32>> = lsm.to_vec2().unwrap();
    (1..e.tokens.len())
        .filter(|&i| e.targets[i])
        .map(|i| -(rows[i - 1][e.tokens[i] as usize] as f64))
        .sum()
}

fn example(tokens: &[u32], from: usize) -> Encoded {
    Encoded {
        tokens: tokens.to_vec(),
        targets: (0..tokens.len()).map(|i| i >= from).collect(),
    }
}

#[test]
fn training_loss_matches_the_runtime_and_examples_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::tiny_model(dir.path());
    let dev = Device::Cpu;
    let m = load::load(&path, &dev).unwrap();
    let mut cfg = LoraConfig::new(4, 8.0, &Target::ALL);
    cfg.use_rslora = true;
    let adapter = LoraAdapter::init(cfg, &|t| m.target_dims(t), 2, 7, true, &dev).unwrap();
    let trainable = TrainableAdapter::from_adapter(&adapter, &dev).unwrap();
    let tm = TrainModel::new(m.clone()).unwrap();
    let a = example(&[1, 3, 4, 5, 6, 7, 8, 2, 1, 4, 9, 10, 11, 2], 10);
    let b = example(&[1, 20, 21, 22, 23, 24, 2], 3);
    let view = LoraView::frozen(&trainable);
    let one = |e: &Encoded| {
        tm.loss(&[e], &view, None)
            .unwrap()
            .sum_nll
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    for e in [&a, &b] {
        let (ours, theirs) = (one(e), runtime_nll(&m, e, &adapter));
        assert!(
            (ours - theirs).abs() < 1e-3 * theirs.abs().max(1.0),
            "{ours} vs {theirs}"
        );
    }
    let both = tm.loss(&[&a, &b], &view, None).unwrap();
    assert_eq!(both.targets, a.num_targets() + b.num_targets());
    assert_eq!(both.tokens, a.tokens.len() + b.tokens.len());
    let sum = both.sum_nll.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (sum - one(&a) - one(&b)).abs() < 1e-3,
        "a batch is the sum of its examples"
    );
}

#[test]
fn gradients_agree_with_a_finite_difference() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::tiny_model(dir.path());
    let dev = Device::Cpu;
    let m = load::load(&path, &dev).unwrap();
    let cfg = LoraConfig::new(4, 8.0, &[Target::Q, Target::Down]);
    let adapter = LoraAdapter::init(cfg, &|t| m.target_dims(t), 2, 3, true, &dev).unwrap();
    let trainable = TrainableAdapter::from_adapter(&adapter, &dev).unwrap();
    // f32 products: a finite difference of bf16-rounded activations measures the rounding steps,
    // not the slope (the bf16 products are checked against f32 in tests/bf16_kernel.rs and
    // tests/bf16_training.rs).
    let tm = TrainModel::with_precision(m, Precision::F32).unwrap();
    let e = example(&[1, 3, 4, 5, 6, 7, 8, 2, 1, 4, 9, 10, 11, 2], 5);
    let pass = tm
        .loss(&[&e], &LoraView::training(&trainable), None)
        .unwrap();
    let grads = pass.sum_nll.backward().unwrap();
    // Layer 0's q A and layer 1's down B: one entry each, nudged both ways.
    for (pair, which, idx) in [(0usize, 'a', 5usize), (3, 'b', 2)] {
        let (_, a, b) = &trainable.pairs[pair];
        let var = if which == 'a' { a } else { b };
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-2f32;
        let at = |d: f32| {
            let mut w = orig.clone();
            w[idx] += d;
            var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap())
                .unwrap();
            let l = tm.loss(&[&e], &LoraView::frozen(&trainable), None).unwrap();
            l.sum_nll.to_scalar::<f32>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        at(0.0);
        assert!(
            g[idx].abs() > 1e-4,
            "gradient of pair {pair} {which} is {}",
            g[idx]
        );
        assert!(
            (fd - g[idx]).abs() < 0.05 * g[idx].abs() + 1e-3,
            "pair {pair} {which}: backward {} vs finite difference {fd}",
            g[idx]
        );
    }
}
