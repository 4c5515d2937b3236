//! Sweeps and the bootstrapping threshold. A sweep runs a scenario at every value of one
//! parameter (its dotted path, e.g. `subsidy.initial_open`) over N seeds (`seed`, `seed + 1`,
//! …), all runs in parallel with rayon; each run is deterministic, so a sweep is too. The
//! threshold search bisects a parameter (the initial subsidy by default) for the least value at
//! which at least half of the seeds take off, assuming take-off is monotone in it, and reports
//! the take-off share at the threshold with a 95% Wilson binomial interval.

use crate::{report::Summary, scenario::Scenario, sim::Sim};
use rayon::prelude::*;
use serde::Serialize;

/// Runs one scenario to the end and summarises it.
pub fn run_summary(sc: &Scenario) -> Result<Summary, String> {
    let mut sim = Sim::new(sc, false)?;
    sim.run()?;
    Ok(sim.summary())
}

/// One sweep point over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub value: f64,
    pub runs: u32,
    pub take_offs: u32,
    pub share: f64,
    /// 95% Wilson interval of the take-off probability.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Per seed: (seed, took off, total contributor income in OPEN, total inferences).
    pub seeds: Vec<(u64, bool, f64, u64)>,
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.96f64, n as f64, k as f64 / n as f64);
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// Runs `param` at each of `values` over `seeds` seeds, in parallel.
pub fn sweep(sc: &Scenario, param: &str, values: &[f64], seeds: u32) -> Result<Vec<Point>, String> {
    let jobs: Vec<(usize, Scenario)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let base = sc.with_value(param, *v).map_err(|e| e.to_string())?;
            Ok((0..seeds).map(move |s| {
                let mut x = base.clone();
                x.seed = base.seed.wrapping_add(s as u64);
                (i, x)
            }))
        })
        .collect::<Result<Vec<_>, String>>()?
        .into_iter()
        .flatten()
        .collect();
    let results: Vec<(usize, u64, Summary)> = jobs
        .par_iter()
        .map(|(i, x)| run_summary(x).map(|s| (*i, x.seed, s)))
        .collect::<Result<_, String>>()?;
    Ok(values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let seeds: Vec<(u64, bool, f64, u64)> = results
                .iter()
                .filter(|r| r.0 == i)
                .map(|(_, seed, s)| {
                    (
                        *seed,
                        s.outcome.take_off,
                        s.totals.contributor_income_open,
                        s.totals.inferences,
                    )
                })
                .collect();
            let runs = seeds.len() as u32;
            let take_offs = seeds.iter().filter(|s| s.1).count() as u32;
            let (ci_low, ci_high) = wilson(take_offs, runs);
            Point {
                value: *v,
                runs,
                take_offs,
                share: take_offs as f64 / runs.max(1) as f64,
                ci_low,
                ci_high,
                seeds,
            }
        })
        .collect())
}

/// The result of a threshold search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    pub param: String,
    /// The least value found at which at least half of the seeds take off (the bracket's top).
    pub threshold: f64,
    /// The last value below it at which fewer than half took off.
    pub below: f64,
    pub take_offs: u32,
    pub runs: u32,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Every value tried with its take-offs out of runs, in order.
    pub tried: Vec<(f64, u32, u32)>,
    /// Set when the search could not bracket a threshold.
    pub note: Option<String>,
}

/// Bisects `lo..hi` for the least value where `eval` reports at least half take-offs, with
/// `iterations` halvings; `eval(x)` returns (take-offs, runs). Assumes monotonicity.
pub fn bisect(
    param: &str,
    mut lo: f64,
    mut hi: f64,
    iterations: u32,
    mut eval: impl FnMut(f64) -> Result<(u32, u32), String>,
) -> Result<Threshold, String> {
    if lo.is_nan() || hi.is_nan() || lo >= hi {
        return Err(format!("the search range {lo}..{hi} is empty"));
    }
    let half = |k: u32, n: u32| 2 * k >= n && n > 0;
    let mut tried = Vec::new();
    let (kh, nh) = eval(hi)?;
    tried.push((hi, kh, nh));
    let (kl, nl) = eval(lo)?;
    tried.push((lo, kl, nl));
    let mut note = None;
    let mut best = (kh, nh);
    if half(kl, nl) {
        note = Some(format!(
            "at least half the seeds already take off at the range's low end {lo}"
        ));
        hi = lo;
        best = (kl, nl);
    } else if !half(kh, nh) {
        note = Some(format!(
            "fewer than half the seeds take off even at the range's high end {hi}"
        ));
    } else {
        for _ in 0..iterations {
            let mid = (lo + hi) / 2.0;
            let (k, n) = eval(mid)?;
            tried.push((mid, k, n));
            if half(k, n) {
                hi = mid;
                best = (k, n);
            } else {
                lo = mid;
            }
        }
    }
    let (ci_low, ci_high) = wilson(best.0, best.1);
    Ok(Threshold {
        param: param.into(),
        threshold: hi,
        below: lo,
        take_offs: best.0,
        runs: best.1,
        ci_low,
        ci_high,
        tried,
        note,
    })
}

/// The bootstrapping threshold of `param` over `seeds` seeds per value tried.
pub fn threshold(
    sc: &Scenario,
    param: &str,
    lo: f64,
    hi: f64,
    iterations: u32,
    seeds: u32,
) -> Result<Threshold, String> {
    bisect(param, lo, hi, iterations, |x| {
        let p = sweep(sc, param, &[x], seeds)?;
        Ok((p[0].take_offs, p[0].runs))
    })
}
