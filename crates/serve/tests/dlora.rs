//! dLoRA: merging a dominant adapter into the base weights (and unmerging it) changes no output
//! beyond float tolerance — logits at the model level, greedy outputs through the engine with base,
//! merged-adapter and other-adapter requests in the same batches — unmerging gives the base back,
//! a cold adapter is served while another one is merged, and a quantized base never merges.

mod common;

use candle_core::{DType, Tensor};
use openledger_model::linear::{Linear, Weight};
use openledger_model::llama::Block;
use openledger_model::{
    Arch, Device, GenerateParams, Llama, LlamaConfig, Logits, LoraAdapter, LoraConfig, SeqInput,
    Target, Tokenizer,
};
use openledger_serve::dlora::{merged_copy, DloraConfig};
use openledger_serve::{metrics, EngineConfig, Event, Serve, ServeConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

const DEV: Device = Device::Cpu;

fn tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::for_model(&common::model_path()).expect("SmolLM2's tokenizer"))
}

/// A small random f32 Llama over SmolLM2's vocabulary (so prompts and output text are real).
fn float_model(vocab: usize) -> Arc<Llama> {
    let config = LlamaConfig {
        arch: Arch::Llama,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        vocab_size: vocab,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position: 512,
        tie_embeddings: false,
    };
    let mut seed = 0x0d10_7a5e_u64;
    let mut rand = |rows: usize, cols: usize, scale: f32| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, (rows, cols), &DEV).unwrap()
    };
    let (h, f) = (config.hidden_size, config.intermediate_size);
    let (q, kv) = (
        config.num_heads * config.head_dim,
        config.num_kv_heads * config.head_dim,
    );
    let mut lin =
        |o: usize, i: usize| Linear::new(Weight::Float(rand(o, i, 1.0 / (i as f32).sqrt())), None);
    let ones = || Tensor::ones(h, DType::F32, &DEV).unwrap();
    let blocks: Vec<Block> = (0..config.num_layers)
        .map(|_| Block {
            attn_norm: ones(),
            q: lin(q, h),
            k: lin(kv, h),
            v: lin(kv, h),
            o: lin(h, q),
            ffn_norm: ones(),
            gate: lin(f, h),
            up: lin(f, h),
            down: lin(h, f),
        })
        .collect();
    let embed = Weight::Float(rand(vocab, h, 1.0));
    let head = Weight::Float(rand(vocab, h, 1.0 / (h as f32).sqrt()));
    Arc::new(Llama::new(config, embed, blocks, ones(), head, &DEV).unwrap())
}

/// A rank-8 adapter on every projection with random, non-zero A and B, scaled (×20) so that it
/// changes the greedy output.
fn adapter(model: &Llama, seed: u64) -> Arc<LoraAdapter> {
    adapter_on(model, seed, &Target::ALL)
}

fn adapter_on(model: &Llama, seed: u64, targets: &[Target]) -> Arc<LoraAdapter> {
    let a = LoraAdapter::init(
        LoraConfig::new(8, 160.0, targets),
        &|t| model.target_dims(t),
        model.config.num_layers,
        seed,
        true,
        &DEV,
    )
    .unwrap();
    Arc::new(a)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `max |got − want| / max |want|`.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    d / want.iter().map(|w| w.abs()).fold(0f32, f32::max).max(1e-30)
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// One batched step of three sequences on `model` with one adapter per row; their logits.
fn step(
    model: &Llama,
    inputs: &[Vec<u32>],
    caches: &mut [openledger_model::SeqCache],
    adapters: [Option<&LoraAdapter>; 3],
) -> Vec<Vec<f32>> {
    let mut seqs: Vec<SeqInput> = inputs
        .iter()
        .zip(caches.iter_mut())
        .zip(adapters)
        .map(|((t, c), a)| SeqInput {
            tokens: t,
            cache: c,
            adapter: a,
        })
        .collect();
    model
        .forward(&mut seqs, Logits::Last)
        .unwrap()
        .iter()
        .map(flat)
        .collect()
}

#[test]
fn merged_weights_give_the_unmerged_logits_across_switches_with_the_kv_caches_kept() {
    let tok = tokenizer();
    let base = float_model(tok.vocab_size());
    // y touches fewer projections than x: where it has none, the stacked adapter is x's negation.
    let (x, y) = (
        adapter(&base, 1),
        adapter_on(&base, 2, &[Target::Q, Target::V]),
    );
    let merged = merged_copy(&base, &x).unwrap();
    let negated = x.negated().unwrap();
    let y_on_merged = y.stacked(&negated).unwrap();
    let prompts: Vec<Vec<u32>> = ["The base model", "Adapter x speaks", "And adapter y"]
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    // Rows: base, x (the merged one), y (another adapter).
    let unmerged_rows = [None, Some(&*x), Some(&*y)];
    let merged_rows = [Some(&negated), None, Some(&y_on_merged)];

    // The reference: unmerged throughout, greedy.
    let mut ref_caches: Vec<_> = (0..3).map(|_| base.new_cache()).collect();
    let mut inputs = prompts.clone();
    let mut reference = Vec::new();
    for _ in 0..8 {
        let logits = step(&base, &inputs, &mut ref_caches, unmerged_rows);
        inputs = logits.iter().map(|l| vec![argmax(l)]).collect();
        reference.push((logits, inputs.clone()));
    }
    // The adapters matter: x's row differs from what the base alone gives it.
    let mut fresh: Vec<_> = (0..3).map(|_| base.new_cache()).collect();
    let alone = step(&base, &prompts, &mut fresh, [None; 3]);
    assert!(rel(&alone[1], &reference[0].0[1]) > 1e-2);
    assert!(rel(&alone[2], &reference[0].0[2]) > 1e-2);

    // Unmerged for 3 steps, merged for 3, unmerged again: the same caches all along.
    let mut caches: Vec<_> = (0..3).map(|_| base.new_cache()).collect();
    let mut inputs = prompts.clone();
    for (i, (want, next)) in reference.iter().enumerate() {
        let merged_now = (3..6).contains(&i);
        let got = if merged_now {
            step(&merged, &inputs, &mut caches, merged_rows)
        } else {
            step(&base, &inputs, &mut caches, unmerged_rows)
        };
        for row in 0..3 {
            let r = rel(&got[row], &want[row]);
            assert!(r < 1e-4, "step {i} row {row} (merged: {merged_now}): {r}");
            assert_eq!(argmax(&got[row]), next[row][0], "step {i} row {row}");
        }
        inputs = next.clone();
    }

    // Without the negation a base row on the merged weights would be x's output, not the base's:
    // the tolerance above is tight enough to tell.
    let mut c = [base.new_cache(), base.new_cache(), base.new_cache()];
    let wrong = step(&merged, &prompts, &mut c, [None, None, Some(&y_on_merged)]);
    assert!(rel(&wrong[0], &reference[0].0[0]) > 1e-2);
}

fn params(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        stop_at_eos: false,
        ..GenerateParams::default()
    }
}

fn serve(model: Arc<Llama>, tok: Arc<Tokenizer>, dlora: DloraConfig) -> Arc<Serve> {
    Serve::new(
        "tiny-f32".into(),
        model,
        tok,
        DEV,
        ServeConfig {
            engine: EngineConfig {
                max_batch: 8,
                ..EngineConfig::default()
            },
            dlora,
            ..ServeConfig::default()
        },
    )
    .unwrap()
}

fn dlora_on() -> DloraConfig {
    DloraConfig {
        enabled: true,
        merge_window: 8,
        merge_share: 0.9,
        unmerge_share: 0.6,
    }
}

fn dlora_off() -> DloraConfig {
    DloraConfig {
        enabled: false,
        ..dlora_on()
    }
}

type Req = (Option<(String, Arc<LoraAdapter>)>, String, usize);

fn submit(s: &Serve, reqs: &[Req]) -> Vec<UnboundedReceiver<(usize, Event)>> {
    reqs.iter()
        .map(|(a, p, n)| {
            let prompt = s.engine.tokenizer().encode(p, true).unwrap();
            s.engine.submit_one(a.clone(), prompt, params(*n)).unwrap()
        })
        .collect()
}

/// The text and token count of one sequence, once it is done.
async fn finish(rx: &mut UnboundedReceiver<(usize, Event)>) -> (String, usize) {
    let mut text = String::new();
    while let Some((_, ev)) = rx.recv().await {
        if let Event::Text(t, _) = ev {
            text.push_str(&t);
        } else if let Event::Done {
            completion_tokens, ..
        } = ev
        {
            return (text, completion_tokens);
        } else if let Event::Error(e) = ev {
            panic!("generation failed: {e}");
        }
    }
    panic!("the engine dropped a sequence")
}

async fn run(s: &Serve, reqs: &[Req]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for mut rx in submit(s, reqs) {
        out.push(finish(&mut rx).await);
    }
    out
}

/// Requests for one adapter (or the base) with distinct prompts.
fn reqs(adapter: Option<&(String, Arc<LoraAdapter>)>, n: usize, tag: &str, len: usize) -> Vec<Req> {
    (0..n)
        .map(|i| (adapter.cloned(), format!("{tag} request number {i}"), len))
        .collect()
}

/// Runs rounds of `round` on both servers until `done` holds for `dl` (at most `max` rounds);
/// every output must match the reference server's.
async fn rounds_until(
    dl: &Serve,
    reference: &Serve,
    round: &[Req],
    max: usize,
    done: impl Fn(&Serve) -> bool,
) {
    for _ in 0..max {
        assert_eq!(run(dl, round).await, run(reference, round).await);
        if done(dl) {
            return;
        }
    }
    panic!("the policy did not switch within {max} rounds");
}

fn sample_value(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_outputs_are_unchanged_when_a_dominant_adapter_merges_and_unmerges() {
    let tok = tokenizer();
    let base = float_model(tok.vocab_size());
    let q0 = flat(&base.blocks[0].q.weight.to_float(&DEV).unwrap());
    let dl = serve(base.clone(), tok.clone(), dlora_on());
    let reference = serve(base.clone(), tok.clone(), dlora_off());
    let x = ("x".to_string(), adapter(&base, 1));
    let y = ("y".to_string(), adapter(&base, 2));
    assert_eq!(dl.engine.dlora().off_reason(), None);
    let before = metrics::render(&dl);
    assert_eq!(
        sample_value(&before, "openledger_adapter_merge_enabled"),
        "1"
    );
    assert_eq!(sample_value(&before, "openledger_adapter_merged"), "0");

    // x dominates: merged (sequences running at the switch keep their caches).
    let warm = reqs(Some(&x), 8, "x warm", 12);
    rounds_until(&dl, &reference, &warm, 10, |s| {
        s.engine.dlora().merged().is_some()
    })
    .await;
    let d = dl.engine.dlora();
    assert_eq!(d.merged().as_deref(), Some("x"));
    assert_eq!(d.merges.load(Ordering::Relaxed), 1);
    // The engine runs the base plus x's update; the base it was given is untouched.
    let m = d.merged_model().unwrap();
    let want: Vec<f32> = flat(&base.blocks[0].q.weight.to_float(&DEV).unwrap())
        .iter()
        .zip(flat(
            &x.1.get(0, Target::Q)
                .unwrap()
                .delta(x.1.config.scale())
                .unwrap(),
        ))
        .map(|(w, d)| w + d)
        .collect();
    assert!(rel(&flat(&m.blocks[0].q.weight.to_float(&DEV).unwrap()), &want) < 1e-6);

    // Base, x and y requests in the same batches, merged throughout (x keeps 6/8 of the rows).
    let steps = d.merged_steps.load(Ordering::Relaxed);
    let mut mixed = reqs(Some(&x), 6, "x mixed", 12);
    mixed.extend(reqs(None, 1, "base mixed", 12));
    mixed.extend(reqs(Some(&y), 1, "y mixed", 12));
    let got = run(&dl, &mixed).await;
    assert_eq!(got, run(&reference, &mixed).await);
    assert!(d.merged_steps.load(Ordering::Relaxed) >= steps + 12);
    assert_eq!(d.unmerges.load(Ordering::Relaxed), 0);
    assert_eq!(
        sample_value(&metrics::render(&dl), "openledger_adapter_merged"),
        "1"
    );
    // The outputs differ by adapter, so the equality above is about each one's own weights.
    assert_ne!(
        run(&reference, &reqs(None, 1, "x mixed", 12)).await[0],
        got[0]
    );

    // The traffic moves to the base: unmerged, back on the base's own weights.
    let plain = reqs(None, 8, "base", 12);
    rounds_until(&dl, &reference, &plain, 10, |s| {
        s.engine.dlora().merged().is_none()
    })
    .await;
    assert_eq!(d.unmerges.load(Ordering::Relaxed), 1);
    assert!(d.merged_model().is_none());
    assert_eq!(flat(&base.blocks[0].q.weight.to_float(&DEV).unwrap()), q0);
    let text = metrics::render(&dl);
    assert_eq!(sample_value(&text, "openledger_adapter_merges_total"), "1");
    assert_eq!(
        sample_value(&text, "openledger_adapter_unmerges_total"),
        "1"
    );
    assert_eq!(sample_value(&text, "openledger_adapter_merged"), "0");
    assert_eq!(
        sample_value(&text, "openledger_adapter_merge_seconds_count"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_adapter_is_served_while_another_stays_merged() {
    let tok = tokenizer();
    let base = float_model(tok.vocab_size());
    let dl = serve(base.clone(), tok.clone(), dlora_on());
    let reference = serve(base.clone(), tok.clone(), dlora_off());
    let x = ("x".to_string(), adapter(&base, 1));
    let cold = ("cold".to_string(), adapter(&base, 3));
    let warm = reqs(Some(&x), 8, "x warm", 12);
    rounds_until(&dl, &reference, &warm, 10, |s| {
        s.engine.dlora().merged().is_some()
    })
    .await;

    // Seven long x requests and one short request for an adapter never seen before, together.
    let mut batch = reqs(Some(&x), 7, "x long", 160);
    batch.push((Some(cold.clone()), "a cold adapter's turn".into(), 8));
    let mut rxs = submit(&dl, &batch);
    let cold_rx = rxs.last_mut().unwrap();
    let got = finish(cold_rx).await;
    // Served at once, beside the merged traffic: no x request has ended and nothing was unmerged.
    let d = dl.engine.dlora();
    assert_eq!(d.merged().as_deref(), Some("x"));
    assert_eq!(d.unmerges.load(Ordering::Relaxed), 0);
    for rx in &mut rxs[..7] {
        while let Ok((_, ev)) = rx.try_recv() {
            assert!(
                !matches!(ev, Event::Done { .. }),
                "an x request ended first"
            );
        }
    }
    let want = run(&reference, &batch[7..]).await;
    assert_eq!(got, want[0]);
    for rx in &mut rxs[..7] {
        finish(rx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantized_base_never_merges_and_says_why() {
    let s = common::serve();
    let d = s.engine.dlora();
    // Decided at start, before any traffic.
    let why = d
        .off_reason()
        .expect("the policy is off on a quantized base");
    assert!(why.contains("quantized"), "{why}");
    let model = s.engine.model().clone();
    let a = Arc::new(
        LoraAdapter::init(
            LoraConfig::new(8, 16.0, &[Target::Q, Target::V]),
            &|t| model.target_dims(t),
            model.config.num_layers,
            7,
            true,
            &DEV,
        )
        .unwrap(),
    );
    // One adapter only, for more steps than the default window.
    let only = ("only".to_string(), a);
    let got = run(&s, &reqs(Some(&only), 2, "quantized", 48)).await;
    assert!(got.iter().all(|(_, n)| *n == 48));
    assert_eq!(d.merges.load(Ordering::Relaxed), 0);
    assert!(d.merged().is_none());
    let text = metrics::render(&s);
    assert_eq!(sample_value(&text, "openledger_adapter_merges_total"), "0");
    let enabled = text
        .lines()
        .find(|l| l.starts_with("openledger_adapter_merge_enabled{"))
        .unwrap();
    assert!(
        enabled.contains("reason=\"the base model's projections are quantized"),
        "{enabled}"
    );
    assert!(enabled.ends_with(" 0"), "{enabled}");
}
