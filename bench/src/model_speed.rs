//! Model speed on one GGUF: prefill tokens/s, single-stream decode tokens/s and batched decode
//! (several sequences stepping together) tokens/s. bench/scripts/llama_cpp_speed.py measures the same
//! things with llama.cpp; bench/scripts/model-vs-llama-cpp runs both.
//!
//! Usage: model-speed [model.gguf] [--threads N] [--prefill N] [--decode N] [--batches 1,8,32]
//! [--device cpu|cuda] (default: cuda when built with `--features cuda` and a GPU is present)
//! [--parity N] (first compare the device's logits with the CPU path's on an N-token prompt, see
//! parity.rs; on the CPU it compares the CPU with itself) [--dump-logits DIR] (write both sides'
//! prompt logits there)

use openledger_model::device::{self, DeviceKind};
use openledger_model::sampling::argmax;
use openledger_model::{load, Llama, Logits, SeqCache, SeqInput};
use std::time::Instant;

mod flags;
mod parity;
use flags::arg;

/// Deterministic prompt tokens (ordinary vocabulary ids).
fn prompt(n: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (1000 + (i * 7919 + salt * 104729) % 40000) as u32)
        .collect()
}

fn prefill(m: &Llama, n: usize) -> f64 {
    let toks = prompt(n, 0);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut cache = m.new_cache();
        let t = Instant::now();
        m.forward(
            &mut [SeqInput {
                tokens: &toks,
                cache: &mut cache,
                adapter: None,
            }],
            Logits::Last,
        )
        .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    n as f64 / best
}

/// Feeds each sequence its new tokens in one batched pass; returns each sequence's greedy next token.
fn step(m: &Llama, new: &[Vec<u32>], caches: &mut [SeqCache]) -> Vec<u32> {
    let mut inputs: Vec<SeqInput> = new
        .iter()
        .zip(caches.iter_mut())
        .map(|(t, cache)| SeqInput {
            tokens: t,
            cache,
            adapter: None,
        })
        .collect();
    let logits = m.forward(&mut inputs, Logits::Last).unwrap();
    logits
        .iter()
        .map(|l| argmax(&l.squeeze(0).unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// `batch` sequences with 32-token prompts, then `steps` decode steps for all of them together.
fn decode(m: &Llama, batch: usize, steps: usize) -> f64 {
    let prompts: Vec<Vec<u32>> = (0..batch).map(|b| prompt(32, b + 1)).collect();
    let mut caches: Vec<_> = (0..batch).map(|_| m.new_cache()).collect();
    let mut last = step(m, &prompts, &mut caches);
    let t = Instant::now();
    for _ in 0..steps {
        let new: Vec<Vec<u32>> = last.iter().map(|&x| vec![x]).collect();
        last = step(m, &new, &mut caches);
    }
    (batch * steps) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| format!("models/{}", openledger_model::DEFAULT_MODEL_FILE));
    let threads: usize = arg(
        &args,
        "--threads",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    );
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let n_prefill: usize = arg(&args, "--prefill", 256);
    let steps: usize = arg(&args, "--decode", 128);
    let batches: String = arg(&args, "--batches", "1,8,32".to_string());
    let kind: String = arg(&args, "--device", String::new());
    let dev = (!kind.is_empty())
        .then(|| kind.parse::<DeviceKind>())
        .transpose()
        .and_then(device::open)
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        });
    let t = Instant::now();
    let m = load::load(std::path::Path::new(&path), &dev).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let load_s = t.elapsed().as_secs_f64();
    let n_parity: usize = arg(&args, "--parity", 0);
    let dump: String = arg(&args, "--dump-logits", String::new());
    let parity = (n_parity > 0).then(|| {
        let cpu = load::load(std::path::Path::new(&path), &openledger_model::Device::Cpu)
            .unwrap_or_else(|e| {
                eprintln!("error: loading the model on the CPU for --parity: {e}");
                std::process::exit(1)
            });
        let dump = (!dump.is_empty()).then(|| std::path::Path::new(&dump));
        let p = parity::compare(
            &cpu,
            &m,
            device::kind_name(&dev),
            &prompt(n_parity, 7),
            dump,
        )
        .unwrap_or_else(|e| {
            eprintln!("error: --parity: {e}");
            std::process::exit(1)
        });
        // Printed at once, so a later failure of the timed part still leaves it.
        println!("{}", serde_json::json!({ "parity": p }));
        p
    });
    decode(&m, 1, 8); // warm-up
    let mut out = serde_json::json!({
        "system": "openledger", "model": path, "device": device::kind_name(&dev), "threads": threads, "kernels": openledger_model::quant::kernels::isa(),
        "load_s": load_s, "prefill_tokens": n_prefill, "prefill_tok_s": prefill(&m, n_prefill),
    });
    for b in batches.split(',').filter_map(|b| b.parse::<usize>().ok()) {
        out[format!("decode_b{b}_tok_s")] =
            decode(&m, b, if b == 1 { steps } else { steps / 2 }).into();
    }
    if let Some(p) = parity {
        out["parity"] = p;
    }
    println!("{out}");
}
