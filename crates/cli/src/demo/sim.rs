//! The simulation step: the flywheel simulator (`openledger-sim`) runs the scenario (default
//! `scenarios/quick.toml`, `--sim-days` long) starting from the demo chain's state as it is
//! after round two (`openledger sim run --from-chain`: its parameters, the datanet and its
//! contributions, the adapter, the stakes, the app and its credit), and writes its own report
//! into `<out>/sim/`.

use super::{report, Ctx};
use anyhow::{anyhow, bail, Result};
use openledger_sim::Scenario;

/// Runs the simulation and records its outcome.
pub fn run(ctx: &mut Ctx) -> Result<()> {
    let mut sc = Scenario::load(&ctx.args.scenario).map_err(|e| {
        anyhow!(
            "{e} (the demo simulates {}; pass --scenario FILE)",
            ctx.args.scenario.display()
        )
    })?;
    if let Some(days) = ctx.args.sim_days {
        sc.days = days;
    }
    let out = ctx.args.out.join("sim");
    let t = std::time::Instant::now();
    let run = crate::sim_cmd::run_from_chain(&ctx.url, &sc, &out)?;
    let s = &run.summary;
    let c = &run.scenario.chain;
    println!(
        "  scenario {} ({} days) from the chain: {}",
        sc.name, sc.days, run.imported
    );
    println!(
        "  the chain's split {}/{}/{}/{} (platform/owner/stakers/contributors bps)",
        c.platform_bps, c.model_owner_bps, c.stakers_bps, c.contributors_bps
    );
    println!(
        "  {}: {} after {} days ({} inferences; supply check {}) in {:.1} s; report in {}",
        s.scenario,
        s.outcome.label,
        s.days,
        s.totals.inferences,
        if s.supply_check.ok {
            "passed"
        } else {
            "FAILED"
        },
        t.elapsed().as_secs_f64(),
        out.display()
    );
    for r in &s.outcome.reasons {
        println!("    - {r}");
    }
    if !s.supply_check.ok {
        bail!(
            "the simulation's supply check failed: {:?}",
            s.supply_check.failures
        );
    }
    ctx.report.simulation = Some(report::SimReport {
        scenario: s.scenario.clone(),
        days: s.days,
        outcome: s.outcome.label.to_string(),
        reasons: s.outcome.reasons.clone(),
        inferences: s.totals.inferences,
        results_sha256: run.results_sha256.clone(),
        report: "sim/report.html".into(),
        from_chain: true,
    });
    Ok(())
}
