//! OpenLoRA serving speed: a fixed concurrent load driven straight into the continuous-batching
//! engine (no HTTP), with no adapter, one adapter, 8 and 64 distinct adapters in flight, plus the
//! cold-load latency of one adapter (PEFT directory on disk → usable in the registry).
//!
//! Every adapter is rank 8 on all seven linear layers (q,k,v,o,gate,up,down) with random A and B, so
//! it really computes. Each of `--clients` threads sends `--requests` requests in a loop (32-token
//! prompt, `--max-tokens` greedy tokens, end-of-sequence ignored, so every request generates exactly
//! `--max-tokens`); each scenario reports aggregate generated tokens/s and time to first token
//! (measured by the client: submission → first event). One JSON line per scenario, then a table.
//! `--lora-precision f32` packs adapters for the CPU kernels in f32 instead of the default f16
//! (`openledger_model::lora::KernelPrecision`); the cold load includes that packing.
//!
//! Usage: serve-speed [model.gguf] [--threads 2] [--clients 8] [--requests 8] [--max-tokens 64]
//! [--max-batch CLIENTS] [--registered 512] [--cold-loads 20] [--cold-gap-ms 100]
//! [--lora-precision f16|f32]
//!
//! Cold loads are `--cold-gap-ms` apart (a request for a cold adapter arriving on its own; the
//! registry faults in the next load's buffer in the background meanwhile); 0 measures a burst.

use openledger_model::generate::GenerateParams;
use openledger_model::lora::KernelPrecision;
use openledger_model::{load, Device, LoraAdapter, LoraConfig, Target, Tokenizer};
use openledger_serve::adapters::adapter_bytes;
use openledger_serve::{AdapterRegistry, EngineConfig, Event, Serve, ServeConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod flags;
use flags::arg;

/// Deterministic prompt tokens (ordinary vocabulary ids), as model-speed uses.
fn prompt(n: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (1000 + (i * 7919 + salt * 104729) % 40000) as u32)
        .collect()
}

/// A rank-8 adapter on every linear layer, A and B random (seeded), as a PEFT directory.
fn write_adapter(serve: &Serve, seed: u64, dir: &Path) -> anyhow::Result<()> {
    let model = serve.engine.model();
    let cfg = LoraConfig::new(8, 16.0, &Target::ALL);
    let a = LoraAdapter::init(
        cfg,
        &|t| model.target_dims(t),
        model.config.num_layers,
        seed,
        true,
        &Device::Cpu,
    )?;
    openledger_model::peft::save(&a, dir)?;
    Ok(())
}

/// A named adapter as the engine takes it.
type Named = (String, Arc<LoraAdapter>);

struct Outcome {
    tok_s: f64,
    tokens: usize,
    requests: usize,
    wall_s: f64,
    ttft_mean_ms: f64,
    ttft_p50_ms: f64,
    ttft_p90_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `clients` threads, each sending `requests` requests one after another; request `r` of client `c`
/// uses `adapters[(r * clients + c) % len]` (none when `adapters` is empty), so every batch of
/// concurrent requests holds up to `min(clients, len)` distinct adapters and the run visits them all.
fn run_load(
    serve: &Serve,
    adapters: &[Named],
    clients: usize,
    requests: usize,
    max_tokens: usize,
) -> anyhow::Result<Outcome> {
    let params = GenerateParams {
        max_tokens,
        stop_at_eos: false,
        ..GenerateParams::default()
    };
    let started = Instant::now();
    let per_client: Vec<anyhow::Result<Vec<(f64, usize)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let params = params.clone();
                s.spawn(move || -> anyhow::Result<Vec<(f64, usize)>> {
                    let mut out = Vec::with_capacity(requests);
                    for r in 0..requests {
                        let adapter = (!adapters.is_empty())
                            .then(|| adapters[(r * clients + c) % adapters.len()].clone());
                        let t = Instant::now();
                        let mut rx = serve.engine.submit_one(
                            adapter,
                            prompt(32, c * 1000 + r + 1),
                            params.clone(),
                        )?;
                        let mut first = None;
                        let mut done = None;
                        while let Some((_, ev)) = rx.blocking_recv() {
                            first.get_or_insert_with(|| t.elapsed().as_secs_f64());
                            match ev {
                                Event::Text(..) | Event::Logprobs(..) => {}
                                Event::Done {
                                    completion_tokens, ..
                                } => {
                                    done = Some(completion_tokens);
                                    break;
                                }
                                Event::Error(e) => anyhow::bail!("request failed: {e}"),
                            }
                        }
                        let n = done.ok_or_else(|| {
                            anyhow::anyhow!("the engine closed a request without finishing it")
                        })?;
                        out.push((first.unwrap_or(f64::NAN), n));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let wall_s = started.elapsed().as_secs_f64();
    let mut ttft = Vec::new();
    let mut tokens = 0;
    for r in per_client {
        for (t, n) in r? {
            if n != max_tokens {
                anyhow::bail!("a request generated {n} tokens, not {max_tokens}");
            }
            ttft.push(t * 1e3);
            tokens += n;
        }
    }
    ttft.sort_by(f64::total_cmp);
    Ok(Outcome {
        tok_s: tokens as f64 / wall_s,
        tokens,
        requests: ttft.len(),
        wall_s,
        ttft_mean_ms: ttft.iter().sum::<f64>() / ttft.len().max(1) as f64,
        ttft_p50_ms: percentile(&ttft, 0.5),
        ttft_p90_ms: percentile(&ttft, 0.9),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| openledger_model::DEFAULT_MODEL_PATH.to_string());
    let threads: usize = arg(&args, "--threads", 2);
    let clients: usize = arg(&args, "--clients", 8usize).max(1);
    let requests: usize = arg(&args, "--requests", 8usize).max(1);
    let max_tokens: usize = arg(&args, "--max-tokens", 64usize).max(1);
    let max_batch: usize = arg(&args, "--max-batch", clients).max(1);
    let registered: usize = arg(&args, "--registered", 512usize).max(64);
    let cold_loads: usize = arg(&args, "--cold-loads", 20usize).max(1);
    let cold_gap_ms: u64 = arg(&args, "--cold-gap-ms", 100u64);
    let precision = match arg(&args, "--lora-precision", "f16".to_string()).as_str() {
        "f16" => KernelPrecision::F16,
        "f32" => KernelPrecision::F32,
        other => anyhow::bail!("--lora-precision is f16 or f32, not {other:?}"),
    };
    openledger_model::lora::set_default_kernel_precision(precision);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;

    let model_path = Path::new(&path);
    let t = Instant::now();
    let model = Arc::new(load::load(model_path, &Device::Cpu).map_err(|e| {
        anyhow::anyhow!("loading {path}: {e} (run ./scripts/fetch-model for the default model)")
    })?);
    let tokenizer = Arc::new(Tokenizer::for_model(model_path)?);
    let load_s = t.elapsed().as_secs_f64();

    // Size the RAM cache so every registered adapter stays cached.
    let probe = LoraAdapter::init(
        LoraConfig::new(8, 16.0, &Target::ALL),
        &|t| model.target_dims(t),
        model.config.num_layers,
        0,
        true,
        &Device::Cpu,
    )?;
    let one = adapter_bytes(&probe);
    probe.prepare();
    let packed = probe.packed_bytes();
    drop(probe);
    let serve = Serve::new(
        path.clone(),
        model,
        tokenizer,
        Device::Cpu,
        ServeConfig {
            engine: EngineConfig {
                max_batch,
                max_waiting: clients.max(64),
                ..EngineConfig::default()
            },
            adapter_cache_bytes: one * (registered + 1),
            ..ServeConfig::default()
        },
    )?;

    // Register `registered` distinct adapters from PEFT directories.
    let tmp = tempfile::tempdir()?;
    let t = Instant::now();
    let mut adapters = Vec::with_capacity(registered);
    for i in 0..registered {
        let dir = tmp.path().join(format!("lora-{i}"));
        write_adapter(&serve, 1 + i as u64, &dir)?;
        let name = format!("lora-{i}");
        let a = serve.adapters.load_blocking(&name, &dir)?;
        adapters.push((name, a));
    }
    let register_s = t.elapsed().as_secs_f64();
    let stats = serve.adapters.cache_stats();
    if stats.cached != registered {
        anyhow::bail!(
            "only {} of {registered} adapters stayed cached",
            stats.cached
        );
    }

    // Cold load: a fresh registry, a new name each time, the same rank-8 all-linear directory.
    let cold_dir = tmp.path().join("lora-0");
    let cold = AdapterRegistry::new(
        serve.engine.model().clone(),
        Device::Cpu,
        one * (cold_loads + 1),
    );
    let mut cold_ms: Vec<f64> = (0..cold_loads)
        .map(|i| {
            // Cold loads arrive apart (a request for a niche adapter), unless --cold-gap-ms 0
            // asks for a burst.
            std::thread::sleep(std::time::Duration::from_millis(cold_gap_ms));
            let t = Instant::now();
            cold.load_blocking(&format!("cold-{i}"), &cold_dir)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<anyhow::Result<_>>()?;
    cold_ms.sort_by(f64::total_cmp);
    let cold_median = percentile(&cold_ms, 0.5);

    // Warm-up (kernels, allocator), not reported.
    run_load(&serve, &adapters[..1], clients, 1, 8)?;

    let scenarios: [(&str, &[Named]); 4] = [
        ("no_adapter", &[]),
        ("adapter_1", &adapters[..1]),
        ("adapters_8", &adapters[..8]),
        ("adapters_64", &adapters[..64]),
    ];
    let mut rows = Vec::new();
    for (name, set) in scenarios {
        let o = run_load(&serve, set, clients, requests, max_tokens)?;
        let line = serde_json::json!({
            "system": "openledger-serve", "scenario": name, "model": path, "device": "cpu",
            "threads": threads, "kernels": openledger_model::quant::kernels::isa(),
            "clients": clients, "requests_per_client": requests, "max_tokens": max_tokens,
            "max_batch": max_batch, "lora_precision": format!("{precision:?}"),
            "distinct_adapters": set.len(), "registered_adapters": registered,
            "requests": o.requests, "generated_tokens": o.tokens, "wall_s": o.wall_s,
            "tok_s": o.tok_s, "ttft_mean_ms": o.ttft_mean_ms, "ttft_p50_ms": o.ttft_p50_ms,
            "ttft_p90_ms": o.ttft_p90_ms,
        });
        println!("{line}");
        rows.push((name, o));
    }
    println!(
        "{}",
        serde_json::json!({
            "system": "openledger-serve", "scenario": "adapter_cold_load", "rank": 8,
            "targets": "q,k,v,o,gate,up,down", "adapter_bytes": one, "loads": cold_loads,
            "cold_gap_ms": cold_gap_ms,
            "served_adapter_bytes": stats.used_bytes / registered,
            "lora_precision": format!("{precision:?}"), "packed_bytes": packed,
            "cold_load_median_ms": cold_median, "cold_load_min_ms": cold_ms[0],
            "cold_load_max_ms": cold_ms[cold_ms.len() - 1], "model_load_s": load_s,
            "register_all_s": register_s, "registered_adapters": registered,
        })
    );

    println!();
    println!(
        "{:<12} {:>9} {:>13} {:>13} {:>12} {:>12}",
        "scenario", "tok/s", "vs no adapter", "TTFT mean ms", "TTFT p50 ms", "TTFT p90 ms"
    );
    let base = rows[0].1.tok_s;
    for (name, o) in &rows {
        println!(
            "{:<12} {:>9.1} {:>13.3} {:>13.1} {:>12.1} {:>12.1}",
            name,
            o.tok_s,
            o.tok_s / base,
            o.ttft_mean_ms,
            o.ttft_p50_ms,
            o.ttft_p90_ms
        );
    }
    let single = rows[1].1.tok_s;
    println!();
    println!(
        "adapter / no adapter: {:.3} (target >= 0.90: {})",
        single / base,
        if single / base >= 0.9 {
            "met"
        } else {
            "not met"
        }
    );
    let r64 = rows[3].1.tok_s / single;
    println!(
        "64 distinct / 1 adapter: {:.3} (target >= 0.90: {})",
        r64,
        if r64 >= 0.9 { "met" } else { "not met" }
    );
    println!(
        "cold load, median of {cold_loads}: {cold_median:.2} ms (target < 10 ms: {})",
        if cold_median < 10.0 { "met" } else { "not met" }
    );
    Ok(())
}
