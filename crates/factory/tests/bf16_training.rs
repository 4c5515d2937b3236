//! A short training run in bf16 follows the f32 run's loss curve (the same model, adapter, data and
//! optimizer; only the frozen products' precision differs), and where the CPU lacks AVX512_BF16
//! bf16 is refused and f32 trains (the fallback every such machine runs).

mod common;

use candle_core::Device;
use openledger_factory::adapter::TrainableAdapter;
use openledger_factory::bf16::{available, Precision};
use openledger_factory::data::Encoded;
use openledger_factory::forward::{LoraView, TrainModel};
use openledger_factory::optim::{AdamW, AdamWParams};
use openledger_model::{load, LoraConfig, Target};

/// Losses of `steps` full-batch AdamW steps (lr 5e-3) on three fixed examples.
fn curve(precision: Precision, steps: usize) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let path = common::tiny_model(dir.path());
    let dev = Device::Cpu;
    let m = load::load(&path, &dev).unwrap();
    let dims = |t| m.target_dims(t);
    let cfg = LoraConfig::new(8, 16.0, &Target::ALL);
    let adapter = TrainableAdapter::init(cfg, &dims, m.blocks.len(), 7, &dev).unwrap();
    let tm = TrainModel::with_precision(m, precision).unwrap();
    assert_eq!(tm.precision(), precision);
    let batch: Vec<Encoded> = [
        vec![1u32, 6, 7, 8, 9, 10, 2, 1, 4, 9, 10, 11, 26, 2],
        vec![1, 20, 21, 22, 23, 24, 2, 1, 4, 25, 26, 27, 2],
        vec![1, 30, 31, 32, 33, 2, 1, 4, 34, 35, 36, 37, 38, 39, 40, 2],
    ]
    .into_iter()
    .map(|tokens| Encoded {
        targets: (0..tokens.len()).map(|i| i >= 7).collect(),
        tokens,
    })
    .collect();
    let batch: Vec<&Encoded> = batch.iter().collect();
    let vars = adapter.vars();
    let params = AdamWParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(params, &vars);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let pass = tm
            .loss(&batch, &LoraView::training(&adapter), None)
            .unwrap();
        let mean = (&pass.sum_nll * (1.0 / pass.targets as f64)).unwrap();
        losses.push(mean.to_scalar::<f32>().unwrap());
        let g = mean.backward().unwrap();
        let grads: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        opt.step(&vars, &grads, 5e-3).unwrap();
    }
    losses
}

#[test]
fn bf16_training_follows_the_f32_loss_curve() {
    let f32_curve = curve(Precision::F32, 30);
    assert!(
        f32_curve[29] < 0.5 * f32_curve[0],
        "f32 training did not learn: {f32_curve:?}"
    );
    if !available() {
        eprintln!("no AVX512_BF16 on this CPU: checking the f32 fallback only");
        let dir = tempfile::tempdir().unwrap();
        let m = load::load(&common::tiny_model(dir.path()), &Device::Cpu).unwrap();
        let e = TrainModel::with_precision(m.clone(), Precision::Bf16)
            .err()
            .expect("bf16 refused without AVX512_BF16");
        assert!(e.to_string().contains("AVX512_BF16"), "{e}");
        assert_eq!(
            TrainModel::with_precision(m, Precision::parse(None).unwrap())
                .unwrap()
                .precision(),
            Precision::F32
        );
        return;
    }
    let bf16_curve = curve(Precision::Bf16, 30);
    // Same start (the products differ by bf16 rounding only), same descent: every step within
    // 2% of the f32 loss (the rounding moves each logit by ~2⁻⁸ of its terms), and the last loss
    // learned as much.
    for (i, (b, f)) in bf16_curve.iter().zip(&f32_curve).enumerate() {
        assert!(
            (b - f).abs() <= 0.02 * f + 0.01,
            "step {i}: bf16 loss {b} vs f32 {f}\nbf16 {bf16_curve:?}\nf32 {f32_curve:?}"
        );
    }
    assert_ne!(bf16_curve, f32_curve, "the bf16 run computed in f32");
}
