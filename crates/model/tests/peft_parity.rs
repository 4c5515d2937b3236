//! LoRA against Hugging Face PEFT on a tiny random Llama (made by scripts/make-peft-references with
//! transformers + peft, checked in): adapters made by peft give peft's logits here; the adapter we
//! write is byte-for-byte the one peft loaded and gives the logits peft computed from it; mixed-adapter
//! batches equal each adapter run alone; merge/unmerge are exact inverses.

use candle_core::Tensor;
use openledger_model::{load, peft, Device, Llama, LoraAdapter, LoraConfig, SeqInput, Target};
use serde_json::Value;
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn base() -> Llama {
    load::load(&data().join("tiny_llama"), &Device::Cpu).unwrap()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("peft_reference.json")).unwrap())
        .unwrap()
}

fn tokens(r: &Value) -> Vec<u32> {
    r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// The largest difference between our logits and a reference's, which must have the same shape
/// (and not be empty): a missing row or a short one fails instead of shrinking the comparison.
fn max_diff(ours: &Tensor, theirs: &Value) -> f32 {
    let rows: Vec<Vec<f32>> = ours.to_vec2().unwrap();
    let theirs = theirs.as_array().unwrap();
    assert!(!rows.is_empty(), "no logits to compare");
    assert_eq!(rows.len(), theirs.len(), "rows of logits vs the reference");
    let mut worst = 0f32;
    for (r, t) in rows.iter().zip(theirs) {
        let t = t.as_array().unwrap();
        assert!(!r.is_empty(), "an empty row of logits");
        assert_eq!(r.len(), t.len(), "width of a logits row vs the reference");
        for (a, b) in r.iter().zip(t) {
            worst = worst.max((a - b.as_f64().unwrap() as f32).abs());
        }
    }
    worst
}

fn adapter(name: &str) -> LoraAdapter {
    peft::load(&data().join(name), &Device::Cpu).unwrap()
}

#[test]
fn base_model_matches_transformers() {
    let r = reference();
    let d = max_diff(&base().score(&tokens(&r), None).unwrap(), &r["base"]);
    assert!(d < 1e-4, "base logits differ from transformers by {d}");
}

#[test]
fn peft_made_adapters_give_peft_logits() {
    let (m, r) = (base(), reference());
    for name in ["peft_all_targets", "peft_rslora"] {
        let a = adapter(name);
        let d = max_diff(
            &m.score(&tokens(&r), Some(&a)).unwrap(),
            &r["adapters"][name],
        );
        assert!(d < 1e-4, "{name}: logits differ from peft by {d}");
        let off = max_diff(&m.score(&tokens(&r), None).unwrap(), &r["adapters"][name]);
        assert!(
            off > 1e-2,
            "{name}: the adapter should change the logits (differs by only {off})"
        );
    }
    assert!(adapter("peft_rslora").config.use_rslora);
}

/// Recreates the adapter `examples/write_peft_adapter.rs` writes.
fn our_adapter() -> LoraAdapter {
    let dims = |t: Target| match t {
        Target::Q | Target::O => (64, 64),
        Target::K | Target::V => (32, 64),
        Target::Gate | Target::Up => (128, 64),
        Target::Down => (64, 128),
    };
    let mut cfg = LoraConfig::new(
        6,
        12.0,
        &[Target::Q, Target::K, Target::O, Target::Up, Target::Down],
    );
    cfg.use_rslora = true;
    cfg.base_model = Some("tiny_llama".into());
    LoraAdapter::init(cfg, &dims, 2, 7, true, &Device::Cpu).unwrap()
}

#[test]
fn our_adapter_is_what_peft_loaded_and_gives_peft_logits() {
    let dir = tempfile::tempdir().unwrap();
    let ours = our_adapter();
    peft::save(&ours, dir.path()).unwrap();
    for f in [peft::WEIGHTS_FILE, peft::CONFIG_FILE] {
        let written = std::fs::read(dir.path().join(f)).unwrap();
        let checked_in = std::fs::read(data().join("ours_adapter").join(f)).unwrap();
        assert!(
            written == checked_in,
            "{f} changed: rerun scripts/make-peft-references so peft checks the new output"
        );
    }
    let r = reference();
    let d = max_diff(
        &base().score(&tokens(&r), Some(&ours)).unwrap(),
        &r["adapters"]["ours_adapter"],
    );
    assert!(
        d < 1e-4,
        "peft's logits for our adapter differ from ours by {d}"
    );
}

#[test]
fn mixed_adapter_batch_equals_each_adapter_alone() {
    let m = base();
    let (a, b, c) = (
        adapter("peft_all_targets"),
        adapter("peft_rslora"),
        our_adapter(),
    );
    let prompts: [(&[u32], Option<&LoraAdapter>); 5] = [
        (&[5, 9, 200, 3, 77, 1], Some(&a)),
        (&[18, 2], None),
        (&[100, 101, 102, 103], Some(&b)),
        (&[7, 7, 7], Some(&a)),
        (&[250, 0, 19, 44, 45], Some(&c)),
    ];
    let alone: Vec<Tensor> = prompts
        .iter()
        .map(|(t, ad)| m.score(t, *ad).unwrap())
        .collect();
    let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache()).collect();
    let mut inputs: Vec<SeqInput> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|((t, ad), cache)| SeqInput {
            tokens: t,
            cache,
            adapter: *ad,
        })
        .collect();
    let batched = m
        .forward(&mut inputs, openledger_model::Logits::All)
        .unwrap();
    assert_eq!(batched.len(), prompts.len(), "one output per sequence");
    for (i, (x, y)) in batched.iter().zip(&alone).enumerate() {
        assert_eq!(x.dims(), y.dims(), "row group {i}: shapes");
        assert!(x.elem_count() > 0, "row group {i}: empty logits");
        let d = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "row group {i}: batched differs from alone by {d}");
    }
    // A decode step for all five at once continues each sequence correctly.
    let next: [u32; 5] = [11, 12, 13, 14, 15];
    let mut inputs: Vec<SeqInput> = prompts
        .iter()
        .zip(caches.iter_mut())
        .zip(&next)
        .map(|(((_, ad), cache), n)| SeqInput {
            tokens: std::slice::from_ref(n),
            cache,
            adapter: *ad,
        })
        .collect();
    let step = m
        .forward(&mut inputs, openledger_model::Logits::Last)
        .unwrap();
    assert_eq!(step.len(), prompts.len(), "one decode output per sequence");
    for (i, ((t, ad), n)) in prompts.iter().zip(&next).enumerate() {
        let full: Vec<u32> = t.iter().copied().chain([*n]).collect();
        let want = m.score(&full, *ad).unwrap();
        let want = want.narrow(0, full.len() - 1, 1).unwrap();
        let d = (&step[i] - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            d < 1e-4,
            "sequence {i}: cached decode differs from a fresh pass by {d}"
        );
    }
}

#[test]
fn merge_and_unmerge_are_exact() {
    let r = reference();
    let toks = tokens(&r);
    let a = adapter("peft_rslora");
    let mut m = base();
    let with_adapter = m.score(&toks, Some(&a)).unwrap();
    m.merge(&a).unwrap();
    let merged = m.score(&toks, None).unwrap();
    let d = (merged - &with_adapter)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-4, "merged differs from unmerged adapter by {d}");
    m.unmerge(&a).unwrap();
    let d = max_diff(&m.score(&toks, None).unwrap(), &r["base"]);
    assert!(d < 1e-4, "unmerge did not restore the base ({d})");
}

#[test]
fn adapters_for_another_model_are_refused() {
    let m = base();
    let dims = |_t: Target| (32, 32);
    let wrong = LoraAdapter::init(
        LoraConfig::new(2, 4.0, &[Target::Q]),
        &dims,
        1,
        1,
        true,
        &Device::Cpu,
    )
    .unwrap();
    let err = m.score(&[1, 2, 3], Some(&wrong)).unwrap_err().to_string();
    assert!(err.contains("another base model"), "{err}");
    let mut m2 = m.clone();
    assert!(m2.merge(&wrong).is_err());
    let too_deep = LoraAdapter::init(
        LoraConfig::new(2, 4.0, &[Target::Q]),
        &|_| (64, 64),
        3,
        1,
        true,
        &Device::Cpu,
    )
    .unwrap();
    assert!(m.score(&[1], Some(&too_deep)).is_err());
}

#[test]
fn merging_into_a_quantized_model_is_refused_with_a_reason() {
    // Quantize the tiny model's projections to Q8_0 and try to merge.
    let mut m = base();
    for b in &mut m.blocks {
        let w = match &b.q.weight {
            openledger_model::linear::Weight::Float(t) => t.clone(),
            _ => unreachable!(),
        };
        let (rows, cols) = w.dims2().unwrap();
        let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let q = openledger_model::quant::QWeight::quantize(
            openledger_model::quant::QFormat::Q8_0,
            rows,
            cols,
            &values,
        )
        .unwrap();
        b.q.weight = openledger_model::linear::Weight::Quant(q);
    }
    let err = m.merge(&adapter("peft_rslora")).unwrap_err().to_string();
    assert!(err.contains("quantized"), "{err}");
}
