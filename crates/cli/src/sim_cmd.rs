//! `openledger sim run|sweep|threshold`: the flywheel simulator (crate `openledger-sim`) from
//! the terminal. Needs no node, keys or network: it drives the state machine in process.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use openledger_sim::{sweep, write_outputs, Scenario, Sim};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Run a scenario: writes timeseries.csv and summary.json into --out.
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
    },
    /// Run a parameter at several values over N seeds in parallel: writes sweep.csv and sweep.json.
    Sweep {
        #[arg(long)]
        scenario: PathBuf,
        /// PATH=VALUES: a dotted scenario field and a list `1,2,5` or a range `0..1000:250`.
        #[arg(long)]
        param: String,
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

fn load(path: &PathBuf) -> Result<Scenario> {
    Scenario::load(path).map_err(|e| anyhow!("{e}"))
}

fn write(path: PathBuf, text: String) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs an `openledger sim` subcommand.
pub fn run(command: SimCommand) -> Result<()> {
    match command {
        SimCommand::Run {
            scenario,
            out,
            seed,
        } => {
            let mut sc = load(&scenario)?;
            if let Some(s) = seed {
                sc.seed = s;
            }
            let t = std::time::Instant::now();
            let mut sim = Sim::new(&sc, false).map_err(|e| anyhow!(e))?;
            sim.run().map_err(|e| anyhow!(e))?;
            let secs = t.elapsed().as_secs_f64();
            let s = write_outputs(&out, &sim).map_err(|e| anyhow!(e))?;
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
            eprintln!(
                "{secs:.2} s wall, {:.0} transactions/s",
                s.transactions_accepted as f64 / secs.max(1e-9)
            );
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
            let (path, spec) = param.split_once('=').ok_or_else(|| {
                anyhow!("--param is PATH=VALUES, e.g. subsidy.initial_open=0..20000:5000")
            })?;
            let points = sweep::sweep(&sc, path, &values(spec)?, seeds).map_err(|e| anyhow!(e))?;
            let mut csv = format!("{path},seed,take_off,contributor_income_open,inferences\n");
            for p in &points {
                for (seed, up, income, inf) in &p.seeds {
                    csv.push_str(&format!("{},{seed},{up},{income:.6},{inf}\n", p.value));
                }
                println!(
                    "{path} = {}: {}/{} take off (95% CI {:.2}..{:.2})",
                    p.value, p.take_offs, p.runs, p.ci_low, p.ci_high
                );
            }
            write(out.join("sweep.csv"), csv)?;
            write(
                out.join("sweep.json"),
                serde_json::to_string_pretty(&points)? + "\n",
            )?;
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
            let t =
                sweep::threshold(&sc, &param, lo, hi, iterations, seeds).map_err(|e| anyhow!(e))?;
            match &t.note {
                Some(n) => println!("no threshold bracketed: {n}"),
                None => println!(
                    "{param}: least value with >= half take-offs in {}..{}: {:.4} ({}/{} take off, 95% CI {:.2}..{:.2})",
                    lo, hi, t.threshold, t.take_offs, t.runs, t.ci_low, t.ci_high
                ),
            }
            write(
                out.join("threshold.json"),
                serde_json::to_string_pretty(&t)? + "\n",
            )?;
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
