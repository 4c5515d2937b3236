//! The candle path's device-resident KV cache (run here on the CPU, where the candle path is what
//! training uses): batched decode steps over sequences of different lengths give each sequence the
//! logits it gets alone from scratch and the logits of the CPU inference path, as sequences join and
//! leave the batch, and when a cache the CPU path filled continues on the candle path; and a cloned
//! cache continues independently of the one it was cloned from.

use candle_core::Tensor;
use openledger_model::{load, Device, Llama, Logits, SeqCache, SeqInput};
use std::path::PathBuf;

fn model() -> Llama {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_llama");
    load::load(&dir, &Device::Cpu).unwrap()
}

/// One batched pass on the chosen path; each sequence's last-position logits.
fn step(m: &mut Llama, candle: bool, batch: &mut [(&[u32], &mut SeqCache)]) -> Vec<Vec<f32>> {
    m.set_differentiable(candle);
    let mut inputs: Vec<SeqInput> = batch
        .iter_mut()
        .map(|(tokens, cache)| SeqInput {
            tokens,
            cache,
            adapter: None,
        })
        .collect();
    let out: Vec<Tensor> = m.forward(&mut inputs, Logits::Last).unwrap();
    m.set_differentiable(false);
    out.iter()
        .map(|t| t.squeeze(0).unwrap().to_vec1().unwrap())
        .collect()
}

/// The last position's logits of `tokens` scored alone, from an empty cache, on the candle path.
fn alone(m: &mut Llama, tokens: &[u32]) -> Vec<f32> {
    m.set_differentiable(true);
    let all: Vec<Vec<f32>> = m.score(tokens, None).unwrap().to_vec2().unwrap();
    m.set_differentiable(false);
    all.last().unwrap().clone()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batched_decode_matches_each_sequence_alone_and_the_cpu_path() {
    let mut m = model();
    let prompts: [Vec<u32>; 4] = [
        vec![5, 9, 200, 3, 77, 1, 42],
        vec![18, 2],
        vec![100, 101, 102, 103, 104],
        vec![7],
    ];
    // The full token history of each sequence, for scoring alone.
    let mut history: Vec<Vec<u32>> = prompts.to_vec();
    let mut candle: Vec<SeqCache> = prompts.iter().map(|_| m.new_cache()).collect();
    let mut cpu: Vec<SeqCache> = prompts.iter().map(|_| m.new_cache()).collect();
    // Sequence 3 joins at step 2 (its one-token prompt then runs in a decode batch from an empty
    // cache); sequence 1 leaves after step 3.
    let active = |s: usize, i: usize| match i {
        3 => s >= 2,
        1 => s <= 3,
        _ => true,
    };
    let mut started = [false; 4];
    for s in 0..6 {
        let ids: Vec<usize> = (0..4).filter(|&i| active(s, i)).collect();
        let tokens: Vec<Vec<u32>> = ids
            .iter()
            .map(|&i| {
                if started[i] {
                    vec![(37 * s as u32 + 11 * i as u32 + 3) % 250]
                } else {
                    prompts[i].clone()
                }
            })
            .collect();
        for (&i, t) in ids.iter().zip(&tokens) {
            if started[i] {
                history[i].extend_from_slice(t);
            }
            started[i] = true;
        }
        let run = |m: &mut Llama, caches: &mut [SeqCache], on_candle: bool| {
            let mut batch: Vec<(&[u32], &mut SeqCache)> = caches
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| ids.contains(i))
                .map(|(i, c)| {
                    let k = ids.iter().position(|&x| x == i).unwrap();
                    (tokens[k].as_slice(), c)
                })
                .collect();
            step(m, on_candle, &mut batch)
        };
        let got = run(&mut m, &mut candle, true);
        let fast = run(&mut m, &mut cpu, false);
        for (k, &i) in ids.iter().enumerate() {
            let want = alone(&mut m, &history[i]);
            let d = max_diff(&got[k], &want);
            assert!(
                d < 1e-4,
                "step {s}, sequence {i}: batched candle vs alone differ by {d}"
            );
            let d = max_diff(&got[k], &fast[k]);
            assert!(
                d < 1e-4,
                "step {s}, sequence {i}: candle vs CPU path differ by {d}"
            );
            assert_eq!(candle[i].len(), history[i].len());
            assert_eq!(candle[i].size_bytes(), cpu[i].size_bytes());
        }
    }
    // The CPU path's caches continue on the candle path (their rows are uploaded first).
    let next = [3u32, 4, 5, 6];
    let mut batch: Vec<(&[u32], &mut SeqCache)> = cpu
        .iter_mut()
        .zip(&next)
        .map(|(c, t)| (std::slice::from_ref(t), c))
        .collect();
    let got = step(&mut m, true, &mut batch);
    for (i, t) in next.iter().enumerate() {
        history[i].push(*t);
        let d = max_diff(&got[i], &alone(&mut m, &history[i]));
        assert!(d < 1e-4, "handed over, sequence {i}: differs by {d}");
    }
}

#[test]
fn cloned_cache_continues_independently() {
    let mut m = model();
    let prompt = [5u32, 9, 200, 3];
    let mut a = m.new_cache();
    step(&mut m, true, &mut [(&prompt[..], &mut a)]);
    let mut b = a.clone();
    // The two copies take different tokens, in one batch and then separately.
    step(
        &mut m,
        true,
        &mut [(&[17][..], &mut a), (&[240][..], &mut b)],
    );
    let got_a = step(&mut m, true, &mut [(&[8][..], &mut a)]).remove(0);
    let got_b = step(&mut m, true, &mut [(&[8][..], &mut b)]).remove(0);
    assert!(max_diff(&got_a, &alone(&mut m, &[5, 9, 200, 3, 17, 8])) < 1e-4);
    assert!(max_diff(&got_b, &alone(&mut m, &[5, 9, 200, 3, 240, 8])) < 1e-4);
}
