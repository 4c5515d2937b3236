//! `openledger sim run|sweep|threshold|calibrate|verify`: the flywheel simulator (crate `openledger-sim`)
//! from the terminal. Needs no node, keys or network: it drives the state machine in process;
//! only `run --from-chain` reads a running node's state to start from ([`sim_chain`], and [`run_from_chain`] for other commands).
//! Every command writes `report.json` (the evidence: scenario, seeds, results and their hash),
//! `report.html` and its plots into `--out`; `verify` re-runs a report and checks its hash.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use openledger_sim::{
    evidence::{self, Axis},
    write_job, Computed, Job, Scenario,
};
use std::path::PathBuf;

#[path = "sim_calibrate.rs"]
mod sim_calibrate;
#[path = "sim_chain.rs"]
mod sim_chain;
pub(crate) use sim_chain::run_from_chain;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Run a scenario: writes timeseries.csv, summary.json, timeseries.png/svg, report.json and
    /// report.html into --out.
    Run {
        /// Scenario TOML (see scenarios/quick.toml).
        #[arg(long)]
        scenario: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Start from the current state of the node at --rpc (default: the home's node): its
        /// parameters (replacing the scenario's [chain]), datanets and contributions, models,
        /// stakes, inference users and their balances. report.json records that state, so
        /// `sim verify` re-runs it without the node.
        #[arg(long)]
        from_chain: bool,
    },
    /// Run a parameter (or two: the grid) at several values over N seeds in parallel: writes
    /// sweep.csv, sweep.json, the plots (phase.png/svg for two parameters), report.json and
    /// report.html.
    Sweep {
        #[arg(long)]
        scenario: PathBuf,
        /// PATH=VALUES: a dotted scenario field and a list `1,2,5` or a range `0..1000:250`.
        /// Give it twice for a two-parameter grid and its phase diagram.
        #[arg(long, required = true)]
        param: Vec<String>,
        #[arg(long, default_value_t = 4)]
        seeds: u32,
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
    },
    /// Bisect the least value of a parameter (default: the initial subsidy) at which at least
    /// half of the seeds take off.
    Threshold {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, default_value = "subsidy.initial_open")]
        param: String,
        #[arg(long, default_value_t = 0.0)]
        lo: f64,
        #[arg(long)]
        hi: f64,
        #[arg(long, default_value_t = 6)]
        iterations: u32,
        #[arg(long, default_value_t = 4)]
        seeds: u32,
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
    },
    /// Fit the quality curve: fine-tune the base model with ModelFactory on growing subsets of
    /// a datanet's rows, evaluate each adapter on one held-out set, fit validation loss
    /// L(n) = a + b·n^(-c); writes quality.toml (a scenario [quality] section) and
    /// calibration.json into --out.
    Calibrate(sim_calibrate::CalibrateArgs),
    /// Re-run the job recorded in a report.json (its scenario and seeds) and check that it gives
    /// the recorded results (their SHA-256).
    Verify {
        /// A report.json written by sim run, sweep or threshold.
        report: PathBuf,
    },
}

/// Parses `1,2,5` or `lo..hi:step` (inclusive of hi when reached).
fn values(spec: &str) -> Result<Vec<f64>> {
    let num = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .map_err(|_| anyhow!("{s:?} is not a number (lists are 1,2,5; ranges 0..100:25)"))
    };
    if let Some((range, step)) = spec.split_once(':') {
        let (lo, hi) = range
            .split_once("..")
            .ok_or_else(|| anyhow!("a range is written lo..hi:step, got {spec:?}"))?;
        let (lo, hi, step) = (num(lo)?, num(hi)?, num(step)?);
        if step <= 0.0 || hi < lo || (hi - lo) / step > 10_000.0 {
            bail!("the range {spec:?} needs lo <= hi, step > 0 and at most 10000 points");
        }
        let n = ((hi - lo) / step + 1e-9).floor() as usize;
        return Ok((0..=n).map(|i| lo + step * i as f64).collect());
    }
    spec.split(',').map(num).collect()
}

fn load(path: &std::path::Path) -> Result<Scenario> {
    Scenario::load(path).map_err(|e| anyhow!("{e}"))
}

/// `PATH=VALUES` as an axis.
fn axis(param: &str) -> Result<Axis> {
    let (path, spec) = param.split_once('=').ok_or_else(|| {
        anyhow!("--param is PATH=VALUES, e.g. subsidy.initial_open=0..20000:5000, got {param:?}")
    })?;
    Ok(Axis {
        param: path.trim().into(),
        values: values(spec).with_context(|| format!("--param {path}"))?,
    })
}

/// Runs a job and writes its outputs.
fn job(job: Job, sc: &Scenario, out: &std::path::Path) -> Result<(Computed, String)> {
    let t = std::time::Instant::now();
    let computed = job.compute(sc).map_err(|e| anyhow!(e))?;
    let secs = t.elapsed().as_secs_f64();
    let ev = write_job(out, job, sc, &computed).map_err(|e| anyhow!(e))?;
    eprintln!(
        "{secs:.2} s wall; report.json and report.html in {} (results {})",
        out.display(),
        ev.results_sha256
    );
    Ok((computed, ev.results_sha256))
}

/// Runs an `openledger sim` subcommand (`session` gives the node's RPC URL to `run --from-chain`).
pub(crate) fn run(session: &crate::commands::Session, command: SimCommand) -> Result<()> {
    match command {
        SimCommand::Run {
            scenario,
            out,
            seed,
            from_chain,
        } => {
            let mut sc = load(&scenario)?;
            if let Some(s) = seed {
                sc.seed = s;
            }
            let s = if from_chain {
                let url = session.rpc()?.url;
                let t = std::time::Instant::now();
                let r = run_from_chain(&url, &sc, &out)?;
                eprintln!(
                    "{:.2} s wall; report.json and report.html in {} (results {})",
                    t.elapsed().as_secs_f64(),
                    out.display(),
                    r.results_sha256
                );
                let c = &r.scenario.chain;
                println!(
                    "started from {} (fee split {}/{}/{}/{} platform/owner/stakers/contributors bps)",
                    r.imported, c.platform_bps, c.model_owner_bps, c.stakers_bps, c.contributors_bps
                );
                r.summary
            } else {
                let (computed, _) = job(Job::Run, &sc, &out)?;
                let Computed::Run { summary, .. } = computed else {
                    bail!("internal: a run gave no summary");
                };
                *summary
            };
            println!(
                "{}: {} after {} days ({} transactions, {} inferences; supply check {}); {}",
                s.scenario,
                s.outcome.label,
                s.days,
                s.transactions_accepted,
                s.totals.inferences,
                if s.supply_check.ok {
                    "passed"
                } else {
                    "FAILED"
                },
                out.display()
            );
            for r in &s.outcome.reasons {
                println!("  - {r}");
            }
            if !s.supply_check.ok {
                bail!("supply check failed: {:?}", s.supply_check.failures);
            }
        }
        SimCommand::Sweep {
            scenario,
            param,
            seeds,
            out,
        } => {
            let sc = load(&scenario)?;
            if param.len() > 2 {
                bail!(
                    "give --param once (a sweep) or twice (a grid), not {} times",
                    param.len()
                );
            }
            let x = axis(&param[0])?;
            let y = param.get(1).map(|p| axis(p)).transpose()?;
            let (computed, _) = job(
                Job::Sweep {
                    x: x.clone(),
                    y: y.clone(),
                    seeds,
                },
                &sc,
                &out,
            )?;
            let Computed::Sweep(g) = computed else {
                bail!("internal: a sweep gave no points");
            };
            for p in &g.points {
                let at = match (&y, p.value2) {
                    (Some(y), Some(v)) => format!("{} = {}, {} = {v}", x.param, p.value, y.param),
                    _ => format!("{} = {}", x.param, p.value),
                };
                println!(
                    "{at}: {}/{} take off (95% CI {:.2}..{:.2})",
                    p.take_offs, p.runs, p.ci_low, p.ci_high
                );
            }
        }
        SimCommand::Threshold {
            scenario,
            param,
            lo,
            hi,
            iterations,
            seeds,
            out,
        } => {
            let sc = load(&scenario)?;
            let j = Job::Threshold {
                param: param.clone(),
                lo,
                hi,
                iterations,
                seeds,
            };
            let (computed, _) = job(j, &sc, &out)?;
            let Computed::Threshold(t) = computed else {
                bail!("internal: a threshold search gave no threshold");
            };
            match &t.note {
                Some(n) => println!("no threshold bracketed: {n}"),
                None => println!(
                    "{param}: least value with >= half take-offs in {}..{}: {:.4} ({}/{} take off, 95% CI {:.2}..{:.2})",
                    lo, hi, t.threshold, t.take_offs, t.runs, t.ci_low, t.ci_high
                ),
            }
        }
        SimCommand::Calibrate(a) => {
            let command = std::env::args()
                .map(|x| if x.contains(' ') { format!("{x:?}") } else { x })
                .collect::<Vec<_>>()
                .join(" ");
            let q = sim_calibrate::run(&a, &command)?;
            println!(
                "L(n) = {:.4} + {:.4}·n^(-{:.2}); base model {:.4}; quality.toml and calibration.json in {}",
                q.a,
                q.b,
                q.c,
                q.base_loss,
                a.out.display()
            );
        }
        SimCommand::Verify { report } => {
            let bytes =
                std::fs::read(&report).with_context(|| format!("reading {}", report.display()))?;
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| anyhow!("{} is not UTF-8 text", report.display()))?;
            let v = evidence::verify(&text).map_err(|e| anyhow!("{}: {e}", report.display()))?;
            println!(
                "{}: verified: re-running its {} run(s) gives the recorded results ({}); file {}",
                report.display(),
                v.runs,
                v.results_sha256,
                evidence::file_sha256(&bytes)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn value_lists_and_ranges() {
        assert_eq!(values("1,2.5,5").unwrap(), vec![1.0, 2.5, 5.0]);
        assert_eq!(values("0..10:5").unwrap(), vec![0.0, 5.0, 10.0]);
        assert!(values("0..10:0").is_err());
        assert!(values("a,b").unwrap_err().to_string().contains("\"a\""));
    }
}
