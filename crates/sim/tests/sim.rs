//! The simulator against the real executor: a run's final state passes the supply checks and
//! replaying its transaction log from genesis gives the same state and the same Jellyfish
//! Merkle state root as the chain computes it; the same seed gives the same results; a scenario
//! built to stall stalls and one built to take off takes off; copiers are stopped by the
//! datanet module's duplicate guard; the governance rule changes the fee split through the
//! governor; the threshold search brackets a known threshold; bad scenario files are refused
//! with the field named.

use alloy_primitives::B256;
use openledger_sim::{
    chain::{replay, state_digest},
    sim::genesis,
    sweep::{bisect, wilson},
    Scenario, Sim,
};
use openledger_state::{MemKv, WriteSet};

/// A small market that takes off: a subsidy for the first 15 of 40 days, then growing demand
/// (scaled, as in the shipped scenarios, for the measured quality curve's 0.3–0.45).
const TAKE_OFF: &str = r#"
name = "test take-off"
days = 40
seed = 3
[subsidy]
initial_open = 2000.0
days = 15
[chain]
price_per_prompt_token_open = 0.00005
price_per_completion_token_open = 0.0001
[contributors]
max = 80
initial = 10
arrival_per_day = 2.0
[users]
max = 600
initial = 5
arrival_per_day = 12.0
requests_per_day = 2.0
reference_price_open = 0.175
churn = 0.02
[stakers]
count = 6
[governance]
window_days = 7
"#;

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text, "test").expect("a valid scenario")
}

fn run(sc: &Scenario, log: bool) -> Sim {
    let mut sim = Sim::new(sc, log).expect("setup");
    sim.run().expect("run");
    sim
}

/// The chain's state root (openledger-store's Jellyfish Merkle tree) over a whole state.
fn jmt_root(kv: &MemKv) -> B256 {
    let dir = tempfile::tempdir().unwrap();
    let store = openledger_store::Store::open(&dir.path().join("db")).unwrap();
    let writes: WriteSet = kv
        .sorted()
        .map(|(k, v)| (k.to_vec(), Some(v.to_vec())))
        .collect();
    store.state_root_after(1, &writes).unwrap().0
}

#[test]
fn final_state_conserves_supply_and_replays_to_the_same_root() {
    let sc = scenario(TAKE_OFF);
    let sim = run(&sc, true);
    let s = sim.summary();
    assert!(s.supply_check.ok, "{:?}", s.supply_check.failures);
    assert!(s.totals.inferences > 0 && s.totals.contributions_approved > 0);
    let log = sim.log().unwrap();
    assert_eq!(log.len() as u64, sim.chain.accepted);
    let g = genesis(&sc).unwrap();
    let replayed = replay(&g, log).expect("every logged transaction is accepted again");
    assert_eq!(replayed, sim.chain.kv, "replay reproduces the state");
    assert_eq!(state_digest(&replayed), state_digest(&sim.chain.kv));
    let root = jmt_root(&sim.chain.kv);
    assert_eq!(jmt_root(&replayed), root, "same state root");
    // A log missing one transaction does not reproduce it.
    let mut short = log.to_vec();
    short.pop();
    let other = replay(&g, &short).unwrap();
    assert_ne!(jmt_root(&other), root);
}

#[test]
fn same_seed_same_results_other_seed_other_results() {
    let mut sc = scenario(TAKE_OFF);
    sc.days = 20;
    let (a, b) = (run(&sc, false), run(&sc, false));
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.summary(), b.summary());
    sc.seed += 1;
    let c = run(&sc, false);
    assert_ne!(a.summary().state_digest, c.summary().state_digest);
}

#[test]
fn a_subsidised_market_takes_off_and_an_unsubsidised_one_stalls() {
    let sc = scenario(TAKE_OFF);
    let up = run(&sc, false).summary();
    assert!(up.outcome.take_off, "{:#?}", up.outcome);
    assert_eq!(up.outcome.label, "take-off");
    let down = run(&sc.with_value("subsidy.initial_open", 0.0).unwrap(), false).summary();
    assert!(!down.outcome.take_off, "{:#?}", down.outcome);
    assert!(!down.outcome.reasons.is_empty());
    assert!(down.supply_check.ok, "{:?}", down.supply_check.failures);
}

#[test]
fn copiers_are_refused_by_the_duplicate_guard() {
    let mut sc = scenario(TAKE_OFF);
    sc.days = 20;
    sc.contributors.copier_share = 0.5;
    let s = run(&sc, false).summary();
    // A copied contribution that was accepted stops the run with an error, so reaching the
    // end with refusals counted means the guard refused every one.
    assert!(s.totals.duplicates_refused > 0, "{:?}", s.totals);
}

#[test]
fn governance_raises_the_contributors_share_through_the_governor_when_contributions_stall() {
    // No subsidy and little demand: contributions stall, the council proposes, stakers vote.
    let mut sc = scenario(TAKE_OFF);
    sc.subsidy.initial_open = 0.0;
    sc.governance.support = 1.0;
    sc.days = 40;
    let sim = run(&sc, false);
    let s = sim.summary();
    assert!(
        s.governance.iter().any(|e| e.what.contains("executed")),
        "{:#?}",
        s.governance
    );
    let bps = sim.chain.params.fee_split.contributors_bps;
    assert!(bps > 5000, "{bps}");
    let stored = openledger_state::modules::params::load(&sim.chain.kv).unwrap();
    assert_eq!(
        stored.fee_split.contributors_bps, bps,
        "the split lives in state"
    );
    assert_eq!(s.last_day.unwrap().contributors_bps, bps);
}

#[test]
fn threshold_search_brackets_a_monotone_threshold() {
    let truth = 37.5;
    let t = bisect("x", 0.0, 100.0, 10, |x| {
        Ok((if x >= truth { 9 } else { 2 }, 10))
    })
    .unwrap();
    assert!(
        t.threshold >= truth && t.threshold - truth <= 100.0 / 1024.0,
        "{t:?}"
    );
    assert!(t.below < truth);
    assert_eq!((t.take_offs, t.runs), (9, 10));
    let (lo, hi) = wilson(9, 10);
    assert!(lo < 0.9 && hi > 0.9 && lo > 0.5, "{lo} {hi}");
    // Every value tried at or above the threshold took off; every one below did not.
    for (x, k, _) in &t.tried {
        assert_eq!(*x >= t.threshold, *k == 9, "{x}");
    }
    let none = bisect("x", 0.0, 10.0, 5, |_| Ok((0, 10))).unwrap();
    assert!(none.note.unwrap().contains("high end"));
}

#[test]
fn bad_scenarios_are_refused_naming_the_field() {
    let err = |text: &str| Scenario::parse(text, "bad.toml").unwrap_err().to_string();
    let e = err("[contributors]\nactivty = 0.5\n");
    assert!(e.contains("activty") && e.contains("bad.toml"), "{e}");
    let e = err("[contributors]\nactivity = 1.5\n");
    assert!(e.contains("contributors.activity"), "{e}");
    let e = err("[chain]\ncontributors_bps = 9000\n");
    assert!(
        e.contains("chain.contributors_bps") && e.contains("10000"),
        "{e}"
    );
    let e = err("days = 3\n");
    assert!(e.contains("days"), "{e}");
    let e = err("[users]\nmax = \"many\"\n");
    assert!(e.contains("max"), "{e}");
    let e = err("[quality]\nbase_loss = 0.1\n");
    assert!(e.contains("quality.base_loss"), "{e}");
    let sc = Scenario::default();
    let e = sc.with_value("subsidy.nope", 1.0).unwrap_err().to_string();
    assert!(e.contains("subsidy.nope"), "{e}");
    let e = sc
        .with_value("contributors.activity", 2.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("contributors.activity"), "{e}");
    assert!(Scenario::load(std::path::Path::new("/nonexistent/s.toml"))
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/s.toml"));
}

#[test]
fn shipped_scenarios_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    for name in [
        "quick.toml",
        "year.toml",
        "takeoff.toml",
        "quality-smollm2.toml",
    ] {
        let sc = Scenario::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The shipped scenarios run on the measured curve, and the pasteable section holds it.
        assert_eq!(sc.quality, openledger_sim::quality::MEASURED, "{name}");
    }
}

#[test]
fn the_shipped_takeoff_scenario_takes_off_and_stalls_without_its_subsidy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let sc = Scenario::load(&root.join("takeoff.toml")).unwrap();
    let up = run(&sc, false).summary();
    assert!(up.outcome.take_off, "{:#?}", up.outcome);
    let down = run(&sc.with_value("subsidy.initial_open", 0.0).unwrap(), false).summary();
    assert!(!down.outcome.take_off, "{:#?}", down.outcome);
}
