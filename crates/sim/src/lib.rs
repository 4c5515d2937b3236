//! The flywheel simulator: agent populations (contributors and copiers, datanet owners, model
//! builders, app users, stakers, RLHF validators, governance voters) driving the real `openledger_state`
//! executor through simulated days, to see whether data → models → usage → rewards → more data
//! takes off or stalls, and at what initial subsidy it starts to take off.
//!
//! - [`scenario`]: the TOML scenario (every parameter documented, bad fields named);
//! - [`chain`]: the executor over in-memory state, one block per day, the transaction log and
//!   its replay;
//! - [`sim`], [`agents`], [`gov`], [`rlhf`]: the run and the populations' behaviour rules;
//! - [`start`]: starting from a node's current state (`--from-chain`);
//! - [`quality`]: model quality from accepted rows (a fitted loss curve);
//! - [`report`]: time series, the take-off rule, the summary; [`invariants`]: supply checks;
//! - [`sweep`]: parameter sweeps (one parameter or a grid of two) over seeds in parallel and the
//!   threshold search;
//! - [`plot`]: time-series plots with seed bands and the phase diagram (PNG + SVG); [`html`]: the
//!   self-contained HTML report; [`evidence`]: `report.json` (scenario, seeds, results and their
//!   hash) and its verification by re-running.
//!
//! `openledger sim calibrate` (in the CLI, as it drives ModelFactory) measures the quality curve
//! that [`quality::fit`] fits.

pub mod agents;
pub mod chain;
pub mod evidence;
pub mod gov;
pub mod html;
pub mod invariants;
pub mod pixfont;
pub mod plot;
pub mod quality;
pub mod report;
pub mod rlhf;
pub mod scenario;
pub mod sim;
pub mod start;
pub mod sweep;

pub use evidence::{Computed, Evidence, Job};
pub use report::{DayRow, Summary};
pub use scenario::{Scenario, ScenarioError};
pub use sim::Sim;

use std::path::Path;

/// Writes a finished run's outputs into `dir` (as [`write_job`] does for [`Job::Run`]).
pub fn write_outputs(dir: &Path, sim: &Sim) -> Result<Summary, String> {
    let summary = sim.summary();
    let computed = Computed::Run {
        summary: Box::new(summary.clone()),
        rows: sim.rows.clone(),
    };
    write_job(dir, Job::Run, &sim.sc, &computed)?;
    Ok(summary)
}

/// Writes a job's outputs into `dir`: `report.json` (the evidence), `report.html` (one
/// self-contained page), the plots as PNG and SVG (`timeseries`, and `phase` for a
/// two-parameter sweep), and the job's tables: `timeseries.csv` + `summary.json` for a run,
/// `sweep.csv` + `sweep.json` for a sweep, `threshold.json` for a threshold search.
pub fn write_job(
    dir: &Path,
    job: Job,
    sc: &Scenario,
    computed: &Computed,
) -> Result<Evidence, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    let json = |v: &dyn erased::Json| v.pretty();
    let mut plots = Vec::new();
    match computed {
        Computed::Run { summary, rows } => {
            write("timeseries.csv", report::csv(rows))?;
            write("summary.json", json(summary.as_ref()))?;
            let bands = [plot::Bands::from_runs(format!("seed {}", sc.seed), &[rows])];
            plots.push(("Daily series".to_string(), plot::timeseries(dir, &bands)?));
        }
        Computed::Sweep(g) => {
            write("sweep.csv", sweep_csv(&job, &g.points))?;
            write("sweep.json", json(&g.points))?;
            if let Some(p) = job.phase(computed) {
                plots.push((
                    format!("Take-off probability over {} and {}", p.x_param, p.y_param),
                    plot::phase(dir, &p)?,
                ));
            }
            let picked = pick(&g.bands, 6);
            plots.push((
                "Daily series per sweep point (median over seeds, min–max band)".to_string(),
                plot::timeseries(dir, &picked)?,
            ));
        }
        Computed::Threshold(t) => write("threshold.json", json(t))?,
    }
    let ev = Evidence::new(job, sc, computed)?;
    write("report.json", ev.to_json())?;
    write("report.html", html::page(&ev, computed, &plots))?;
    Ok(ev)
}

/// At most `n` entries spread evenly, first and last included.
fn pick(all: &[plot::Bands], n: usize) -> Vec<plot::Bands> {
    if all.len() <= n {
        return all.to_vec();
    }
    (0..n)
        .map(|i| all[i * (all.len() - 1) / (n - 1)].clone())
        .collect()
}

fn sweep_csv(job: &Job, points: &[sweep::Point]) -> String {
    let (x, y) = match job {
        Job::Sweep { x, y, .. } => (x.param.as_str(), y.as_ref().map(|y| y.param.as_str())),
        _ => ("value", None),
    };
    let mut csv = match y {
        Some(y) => format!("{x},{y},seed,take_off,contributor_income_open,inferences\n"),
        None => format!("{x},seed,take_off,contributor_income_open,inferences\n"),
    };
    for p in points {
        for (seed, up, income, inf) in &p.seeds {
            let v2 = p.value2.map(|v| format!("{v},")).unwrap_or_default();
            csv.push_str(&format!("{},{v2}{seed},{up},{income:.6},{inf}\n", p.value));
        }
    }
    csv
}

mod erased {
    //! Pretty JSON of any serialisable value behind one `dyn` type.
    pub trait Json {
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
        }
    }
}
