//! dLoRA on SmolLM2: the time to build a merged copy of the f32 base and to unmerge, and the
//! throughput of one dominant adapter's traffic through the engine merged vs unmerged, next to the
//! same traffic on the quantized (Q4_1) base, where merging is refused.
//!
//! `OPENLEDGER_THREADS=2 cargo run --release -p openledger-serve --example dlora_speed -- [MODEL] [CLIENTS] [TOKENS] [RANK]`

use openledger_model::{load, Device, GenerateParams, Llama, LoraAdapter, LoraConfig, Target};
use openledger_model::{Tokenizer, DEFAULT_MODEL_PATH};
use openledger_serve::dlora::{merged_copy, DloraConfig};
use openledger_serve::{Engine, EngineConfig, Event};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().map_or(DEFAULT_MODEL_PATH, String::as_str);
    let clients: usize = args.get(1).map_or(Ok(8), |s| s.parse())?;
    let tokens: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let rank: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let dev = Device::Cpu;
    let quant = Arc::new(load::load(path.as_ref(), &dev)?);
    let tok = Arc::new(Tokenizer::for_model(path.as_ref())?);
    let t = Instant::now();
    let mut f32_model = (*quant).clone();
    f32_model.dequantize()?;
    let f32_model = Arc::new(f32_model);
    println!(
        "dequantize projections to f32: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let adapter = Arc::new(LoraAdapter::init(
        LoraConfig::new(rank, 2.0 * rank as f64, &Target::ALL),
        &|t| quant.target_dims(t),
        quant.config.num_layers,
        7,
        true,
        &dev,
    )?);

    // Merge / unmerge, 5 times each: median.
    let mut build = Vec::new();
    let mut swap_back = Vec::new();
    let mut subtract = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut m = merged_copy(&f32_model, &adapter)?;
        build.push(t.elapsed());
        // The engine's unmerge swaps the base back; freeing the copy happens on a helper thread.
        let copy = Arc::new(merged_copy(&f32_model, &adapter)?);
        let t = Instant::now();
        drop(copy);
        swap_back.push(t.elapsed());
        // For comparison, the arithmetic unmerge in place (W' − s·BA).
        let t = Instant::now();
        m.unmerge(&adapter)?;
        subtract.push(t.elapsed());
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "merged copy (rank {rank}, all 7 projections x {} layers): {:.1} ms; freeing it after an unmerge (off the engine thread): {:.1} ms; arithmetic unmerge in place, for comparison: {:.1} ms",
        quant.config.num_layers,
        med(&mut build),
        med(&mut swap_back),
        med(&mut subtract)
    );

    let engine = |model: &Arc<Llama>, dlora: DloraConfig| {
        Engine::start_with(
            model.clone(),
            tok.clone(),
            EngineConfig {
                max_batch: clients,
                max_waiting: clients.max(64),
                ..EngineConfig::default()
            },
            dlora,
        )
    };
    let on = DloraConfig {
        merge_window: 16,
        ..DloraConfig::default()
    };
    let off = DloraConfig {
        enabled: false,
        ..on.clone()
    };
    let setups = [
        ("f32 base, adapter unmerged", &f32_model, off.clone()),
        ("f32 base, adapter merged (dLoRA)", &f32_model, on),
        ("Q4_1 base, adapter unmerged", &quant, off),
    ];
    let mut engines = Vec::new();
    for (name, model, dlora) in setups {
        let e = engine(model, dlora)?;
        // Warm-up rounds (and, with dLoRA on, until the adapter is merged).
        for _ in 0..4 {
            round(&e, &tok, &adapter, clients, 16)?;
        }
        let merged_before = e.dlora().merged_steps.load(Ordering::Relaxed);
        engines.push((name, e, merged_before, 0f64));
    }
    // The setups take turns, 5 rounds each, so a busy spell on the machine hits them alike.
    for _ in 0..5 {
        for (_, e, _, best) in &mut engines {
            let t = Instant::now();
            let n = round(e, &tok, &adapter, clients, tokens)?;
            *best = best.max(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    for (name, e, merged_before, best) in &engines {
        let merged_steps = e.dlora().merged_steps.load(Ordering::Relaxed) - merged_before;
        println!(
            "{name}: {best:.0} tok/s ({clients} streams x {tokens} tokens, best of 5 interleaved; steps on merged weights: {merged_steps})"
        );
    }
    Ok(())
}

/// `clients` greedy requests for `adapter` at once; tokens generated.
fn round(
    e: &Engine,
    tok: &Tokenizer,
    adapter: &Arc<LoraAdapter>,
    clients: usize,
    tokens: usize,
) -> Res<usize> {
    let mut rxs = Vec::new();
    for i in 0..clients {
        let prompt = tok.encode(&format!("Request {i}: tell me about bees."), true)?;
        let params = GenerateParams {
            max_tokens: tokens,
            stop_at_eos: false,
            ..GenerateParams::default()
        };
        rxs.push(e.submit_one(Some(("dominant".into(), adapter.clone())), prompt, params)?);
    }
    let mut n = 0;
    for mut rx in rxs {
        while let Some((_, ev)) = rx.blocking_recv() {
            if let Event::Done {
                completion_tokens, ..
            } = ev
            {
                n += completion_tokens;
                break;
            } else if let Event::Error(err) = ev {
                return Err(err.into());
            }
        }
    }
    Ok(n)
}
