//! The flywheel simulator: agent populations (contributors and copiers, datanet owners, model
//! builders, app users, stakers, governance voters) driving the real `openledger_state`
//! executor through simulated days, to see whether data → models → usage → rewards → more data
//! takes off or stalls, and at what initial subsidy it starts to take off.
//!
//! - [`scenario`]: the TOML scenario (every parameter documented, bad fields named);
//! - [`chain`]: the executor over in-memory state, one block per day, the transaction log and
//!   its replay;
//! - [`sim`], [`agents`], [`gov`]: the run and the populations' behaviour rules;
//! - [`quality`]: model quality from accepted rows (a fitted loss curve);
//! - [`report`]: time series, the take-off rule, the summary; [`invariants`]: supply checks;
//! - [`sweep`]: parameter sweeps over seeds in parallel and the threshold search.
//!
//! Not yet here (later parts of the issue): `sim calibrate` (fitting the quality curve with
//! ModelFactory), plots and the HTML report, `--from-chain`, governance `--evidence` and
//! `sim verify`, RLHF validators as a population.

pub mod agents;
pub mod chain;
pub mod gov;
pub mod invariants;
pub mod quality;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod sweep;

pub use report::{DayRow, Summary};
pub use scenario::{Scenario, ScenarioError};
pub use sim::Sim;

use std::path::Path;

/// Writes a finished run's outputs into `dir`: `timeseries.csv` and `summary.json`.
pub fn write_outputs(dir: &Path, sim: &Sim) -> Result<Summary, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let summary = sim.summary();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    write("timeseries.csv", report::csv(&sim.rows))?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())? + "\n",
    )?;
    Ok(summary)
}
