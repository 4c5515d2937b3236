//! Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty, seeded;
//! and, when asked, the chosen token's log-probability with the most likely alternatives.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings. The default is greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) means greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to at least p (1.0 = off).
    pub top_p: f32,
    /// Above 1 discourages tokens already in the context (CTRL-style: divide positive logits,
    /// multiply negative ones). 1.0 = off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    pub seed: u64,
    /// Also report each chosen token's log-probability and this many most likely alternatives
    /// (see [`TokenLogprobs`]); `None` (the default) computes nothing.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 42,
            logprobs: None,
        }
    }
}

/// A seeded sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token like [`Sampler::sample`], and when [`SamplingParams::logprobs`] asks, its
    /// raw log-probabilities (taken before `logits` are penalised or tempered).
    pub fn sample_with_logprobs(
        &mut self,
        logits: &mut [f32],
        context: &[u32],
    ) -> (u32, Option<TokenLogprobs>) {
        match self.params.logprobs {
            None => (self.sample(logits, context), None),
            Some(top) => {
                let raw = logits.to_vec();
                let id = self.sample(logits, context);
                (id, Some(token_logprobs(&raw, id, top)))
            }
        }
    }

    /// Picks a token from `logits` given the tokens so far (`context`, for the penalty).
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let start = context.len().saturating_sub(p.repetition_window);
            let mut seen = std::collections::HashSet::new();
            for &t in &context[start..] {
                if let Some(l) = logits.get_mut(t as usize) {
                    if seen.insert(t) {
                        *l = if *l > 0.0 {
                            *l / p.repetition_penalty
                        } else {
                            *l * p.repetition_penalty
                        };
                    }
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&x| {
                acc += x;
                acc >= p.top_p
            });
            let keep = keep.map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (i, &pr) in probs.iter().enumerate() {
            if r < pr {
                return cand[i].0;
            }
            r -= pr;
        }
        cand[probs.len() - 1].0
    }
}

/// Log-probabilities of one generated token.
///
/// These are the model's *raw* log-probabilities: `log_softmax` of the logits as the model
/// produced them, before the repetition penalty, temperature, top-k and top-p (vLLM's default
/// "raw logprobs"), so they describe the model, not the sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token and its log-probability.
    pub id: u32,
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, most likely first (first id on ties).
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `chosen` under `log_softmax(logits)` and the `top` most likely tokens.
/// Non-finite logits count as impossible tokens (log-probability `-inf`).
pub fn token_logprobs(logits: &[f32], chosen: u32, top: usize) -> TokenLogprobs {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| f64::from(l - max).exp())
        .sum();
    // `sum` >= 1 (the max contributes exp(0)), so every log-probability is <= 0.
    let lse = f64::from(max) + sum.ln();
    let lp = |l: f32| {
        if l.is_finite() {
            (f64::from(l) - lse) as f32
        } else {
            f32::NEG_INFINITY
        }
    };
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if !l.is_finite() || (best.len() == top && l <= best[top - 1].1) {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top);
        }
    }
    TokenLogprobs {
        id: chosen,
        logprob: logits
            .get(chosen as usize)
            .map_or(f32::NEG_INFINITY, |&l| lp(l)),
        top: best.into_iter().map(|(i, l)| (i, lp(l))).collect(),
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 0.9], &[]), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // Token 0 holds ~0.9 of the mass; top_p 0.5 must always pick it.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 2.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let logits = [0.3f32, 0.2, 0.25, 0.1, 0.15];
        let run = || {
            let mut s = Sampler::new(params.clone());
            (0..30)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(
            run().iter().any(|&t| t != run()[0]),
            "temperature 1 should vary"
        );
    }

    #[test]
    fn logprobs_are_the_raw_log_softmax_whatever_the_sampling() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, f32::NEG_INFINITY];
        let lse = logits[..4].iter().map(|l| l.exp()).sum::<f32>().ln();
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.3,
            repetition_penalty: 1.5,
            logprobs: Some(3),
            ..Default::default()
        });
        let (id, lp) = s.sample_with_logprobs(&mut logits.clone(), &[1]);
        let lp = lp.expect("asked for logprobs");
        assert_eq!(lp.id, id);
        assert!((lp.logprob - (logits[id as usize] - lse)).abs() < 1e-6);
        // Most likely first, the first id on ties; the penalty on token 1 does not show.
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!((lp.top[0].1 - (3.0 - lse)).abs() < 1e-6);
        let all = token_logprobs(&logits, 4, 10);
        assert_eq!(all.logprob, f32::NEG_INFINITY);
        assert_eq!(all.top.len(), 4, "impossible tokens are never offered");
        let mass: f32 = all.top.iter().map(|t| t.1.exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6);
    }

    #[test]
    fn no_logprobs_unless_asked() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample_with_logprobs(&mut [0.0, 1.0], &[]), (1, None));
        let zero = token_logprobs(&[0.0, 1.0], 0, 0);
        assert!(zero.top.is_empty() && zero.logprob < 0.0);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]), 1);
    }
}
