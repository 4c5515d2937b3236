//! Sweeps and the bootstrapping threshold. A sweep runs a scenario at every value of one
//! parameter (its dotted path, e.g. `subsidy.initial_open`) over N seeds (`seed`, `seed + 1`,
//! …), all runs in parallel with rayon; each run is deterministic, so a sweep is too. The
//! threshold search bisects a parameter (the initial subsidy by default) for the least value at
//! which at least half of the seeds take off, assuming take-off is monotone in it, and reports
//! the take-off share at the threshold with a 95% Wilson binomial interval. A sweep can also run
//! two parameters over their grid ([`grid`]), which gives the phase diagram of take-off
//! probability; each point keeps its daily series as bands over its seeds for the plots.

use crate::{
    plot::{compact, Bands, Phase},
    report::{DayRow, Summary},
    scenario::Scenario,
    sim::Sim,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Runs one scenario to the end and summarises it.
pub fn run_summary(sc: &Scenario) -> Result<Summary, String> {
    run_full(sc).map(|(s, _)| s)
}

/// Runs one scenario to the end: its summary and its daily rows.
pub fn run_full(sc: &Scenario) -> Result<(Summary, Vec<DayRow>), String> {
    let mut sim = Sim::new(sc, false)?;
    sim.run()?;
    let summary = sim.summary();
    Ok((summary, std::mem::take(&mut sim.rows)))
}

/// One sweep point over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub value: f64,
    /// The second parameter's value in a two-parameter sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value2: Option<f64>,
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
    Ok(grid(sc, (param, values), None, seeds)?.points)
}

/// A sweep's points (x-major when there are two parameters) and each point's daily bands.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub points: Vec<Point>,
    pub bands: Vec<Bands>,
}

impl Grid {
    /// The take-off shares as a phase diagram (meaningful for a two-parameter sweep).
    pub fn phase(&self, x: (&str, &[f64]), y: (&str, &[f64])) -> Phase {
        let cells = (0..y.1.len())
            .map(|j| {
                (0..x.1.len())
                    .map(|i| {
                        let p = &self.points[i * y.1.len() + j];
                        (p.take_offs, p.runs)
                    })
                    .collect()
            })
            .collect();
        Phase {
            x_param: x.0.into(),
            y_param: y.0.into(),
            xs: x.1.to_vec(),
            ys: y.1.to_vec(),
            cells,
        }
    }
}

/// Runs every value of `x` (and, with `y`, every pair of values) over `seeds` seeds, all runs
/// in parallel. Points come x-major: `(x0, y0), (x0, y1), …`.
pub fn grid(
    sc: &Scenario,
    x: (&str, &[f64]),
    y: Option<(&str, &[f64])>,
    seeds: u32,
) -> Result<Grid, String> {
    if seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let mut cells: Vec<(f64, Option<f64>, Scenario)> = Vec::new();
    for xv in x.1 {
        let base = sc.with_value(x.0, *xv).map_err(|e| e.to_string())?;
        match y {
            None => cells.push((*xv, None, base)),
            Some((yp, yvs)) => {
                for yv in yvs {
                    let b = base.with_value(yp, *yv).map_err(|e| e.to_string())?;
                    cells.push((*xv, Some(*yv), b));
                }
            }
        }
    }
    let jobs: Vec<(usize, Scenario)> = cells
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, base))| {
            (0..seeds).map(move |s| {
                let mut x = base.clone();
                x.seed = base.seed.wrapping_add(s as u64);
                (i, x)
            })
        })
        .collect();
    let results: Vec<(usize, u64, Summary, Vec<DayRow>)> = jobs
        .par_iter()
        .map(|(i, x)| run_full(x).map(|(s, rows)| (*i, x.seed, s, rows)))
        .collect::<Result<_, String>>()?;
    let mut points = Vec::new();
    let mut bands = Vec::new();
    for (i, (xv, yv, _)) in cells.iter().enumerate() {
        let mine: Vec<&(usize, u64, Summary, Vec<DayRow>)> =
            results.iter().filter(|r| r.0 == i).collect();
        let seeds: Vec<(u64, bool, f64, u64)> = mine
            .iter()
            .map(|(_, seed, s, _)| {
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
        let mut label = format!("{} = {}", x.0, compact(*xv));
        if let (Some((yp, _)), Some(yv)) = (y, yv) {
            label.push_str(&format!(", {yp} = {}", compact(*yv)));
        }
        let rows: Vec<&[DayRow]> = mine.iter().map(|r| r.3.as_slice()).collect();
        bands.push(Bands::from_runs(label, &rows));
        points.push(Point {
            value: *xv,
            value2: *yv,
            runs,
            take_offs,
            share: take_offs as f64 / runs.max(1) as f64,
            ci_low,
            ci_high,
            seeds,
        });
    }
    Ok(Grid { points, bands })
}

/// The result of a threshold search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
