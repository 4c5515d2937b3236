//! Logit parity of one model on two devices (model-speed `--parity N`): the same weights loaded on
//! the CPU and on the device under test, the same prompt, and how far their logits are apart.
//!
//! The prompt's logits come from one prefill pass (`Logits::All`, every position); then `DECODE_STEPS`
//! single-token steps feed both models the CPU's greedy token, so each step compares the two KV-cache
//! paths on the same input. Reported: the largest absolute logit difference, the largest absolute
//! logit (the scale), and at how many positions the argmax agrees.

use openledger_model::sampling::argmax;
use openledger_model::{Llama, Logits, SeqCache, SeqInput};
use serde_json::{json, Value};
use std::path::Path;

/// Single-token steps after the prefill.
const DECODE_STEPS: usize = 16;

/// Running comparison of rows of logits.
#[derive(Default)]
struct Tally {
    max_abs_diff: f32,
    max_abs_logit: f32,
    rows: usize,
    argmax_agree: usize,
}

impl Tally {
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            self.max_abs_diff = self.max_abs_diff.max((x - y).abs());
            self.max_abs_logit = self.max_abs_logit.max(x.abs());
        }
        self.rows += 1;
        self.argmax_agree += usize::from(argmax(a) == argmax(b));
    }

    fn json(&self) -> Value {
        json!({
            "max_abs_diff": self.max_abs_diff, "max_abs_logit": self.max_abs_logit,
            "positions": self.rows, "argmax_agree": self.argmax_agree,
        })
    }
}

/// Logits of `tokens` fed to `m` after what `cache` holds, one row per token, as f32 on the host.
fn logits(m: &Llama, tokens: &[u32], cache: &mut SeqCache) -> Result<Vec<Vec<f32>>, String> {
    let out = m
        .forward(
            &mut [SeqInput {
                tokens,
                cache,
                adapter: None,
            }],
            Logits::All,
        )
        .map_err(|e| format!("forward pass: {e}"))?;
    let t = out
        .into_iter()
        .next()
        .ok_or("forward pass returned nothing")?;
    t.to_vec2::<f32>()
        .map_err(|e| format!("reading logits back: {e}"))
}

/// Writes rows of logits as little-endian f32 (`rows × vocab`), for bench/scripts/torch_peer.py.
fn dump(path: &Path, rows: &[Vec<f32>]) -> Result<(), String> {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Compares `test` (on its device) with `cpu` on `prompt`; with `dump_dir`, writes each side's
/// prefill logits there as `logits-<device>.f32`.
pub fn compare(
    cpu: &Llama,
    test: &Llama,
    test_name: &str,
    prompt: &[u32],
    dump_dir: Option<&Path>,
) -> Result<Value, String> {
    let (mut c_cpu, mut c_test) = (cpu.new_cache(), test.new_cache());
    let a = logits(cpu, prompt, &mut c_cpu)?;
    let b = logits(test, prompt, &mut c_test)?;
    let mut prefill = Tally::default();
    for (x, y) in a.iter().zip(&b) {
        prefill.add(x, y);
    }
    if let Some(dir) = dump_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        dump(&dir.join("logits-cpu.f32"), &a)?;
        dump(&dir.join(format!("logits-{test_name}.f32")), &b)?;
    }
    let mut decode = Tally::default();
    let mut next = argmax(a.last().ok_or("empty prompt")?);
    // The tokens fed (the CPU's greedy choices) and what the tested device would have chosen.
    let (mut cpu_tokens, mut test_tokens) = (Vec::new(), Vec::new());
    let mut test_next = argmax(b.last().ok_or("empty prompt")?);
    for _ in 0..DECODE_STEPS {
        cpu_tokens.push(next);
        test_tokens.push(test_next);
        let x = logits(cpu, &[next], &mut c_cpu)?;
        let y = logits(test, &[next], &mut c_test)?;
        decode.add(&x[0], &y[0]);
        next = argmax(&x[0]);
        test_next = argmax(&y[0]);
    }
    Ok(json!({
        "against": "cpu", "prompt_tokens": prompt.len(), "prefill": prefill.json(),
        "decode_steps": decode.json(), "fed_cpu_greedy": cpu_tokens, "test_argmax": test_tokens,
    }))
}
