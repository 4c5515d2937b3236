//! RLHF validators through the real RLHF module: rounds are opened on the day's receipts,
//! committed, revealed and finalised within the chain's windows; honest validators earn from
//! the reward pool and careless ones are slashed; the run still conserves supply (the module
//! holds exactly its pool) and replays from genesis; a scenario without validators opens none.

use openledger_sim::{
    chain::{replay, state_digest},
    sim::genesis,
    Scenario, Sim,
};
use openledger_types::{abi::IRlhf, modules::RLHF};

const MARKET: &str = r#"
name = "rlhf test"
days = 30
seed = 11
[subsidy]
initial_open = 2000.0
days = 15
[chain]
price_per_prompt_token_open = 0.00005
price_per_completion_token_open = 0.0001
[contributors]
max = 60
initial = 10
arrival_per_day = 2.0
[users]
max = 300
initial = 10
arrival_per_day = 10.0
requests_per_day = 2.0
reference_price_open = 0.035
[stakers]
count = 5
[validators]
count = 8
careless_share = 0.3
rounds_per_day = 4.0
"#;

fn run(sc: &Scenario, log: bool) -> Sim {
    let mut sim = Sim::new(sc, log).unwrap();
    sim.run().unwrap();
    sim
}

#[test]
fn validators_rate_through_the_module_and_careless_ones_lose() {
    let sc = Scenario::parse(MARKET, "test").unwrap();
    let sim = run(&sc, true);
    let s = sim.summary();
    assert!(s.supply_check.ok, "{:?}", s.supply_check.failures);
    let r = s.rlhf.clone().expect("an RLHF summary");
    assert_eq!(r.validators, 8);
    assert!(r.careless > 0 && r.careless < 8, "{r:?}");
    assert!(r.rounds_counted >= 10, "{r:?}");
    assert!(r.rewards_open > 0.0 && r.slashed_open > 0.0, "{r:?}");
    assert!(
        r.honest_net_open > r.careless_net_open,
        "honest validators earn more than careless ones: {r:?}"
    );
    // What the summary counts is what the module recorded.
    let rounds: u64 = sim.view(RLHF, IRlhf::roundCountCall {}).unwrap();
    assert_eq!(rounds, r.rounds_opened);
    assert!(r.rounds_opened >= r.rounds_counted + r.rounds_void);
    let csv = openledger_sim::report::csv(&sim.rows);
    assert!(csv.lines().next().unwrap().contains("rlhf_rounds_counted"));
    let replayed = replay(&genesis(&sc).unwrap(), sim.log().unwrap()).unwrap();
    assert_eq!(state_digest(&replayed), state_digest(&sim.chain.kv));
}

#[test]
fn without_validators_no_round_is_opened() {
    let mut sc = Scenario::parse(MARKET, "test").unwrap();
    sc.validators.count = 0;
    sc.days = 15;
    let sim = run(&sc, false);
    assert!(sim.summary().rlhf.is_none());
    let rounds: u64 = sim.view(RLHF, IRlhf::roundCountCall {}).unwrap();
    assert_eq!(rounds, 0);
    assert_eq!(sim.chain.balance(&RLHF), alloy_primitives::U256::ZERO);
}

#[test]
fn a_stake_below_the_chains_minimum_is_refused_naming_the_field() {
    let mut sc = Scenario::parse(MARKET, "test").unwrap();
    sc.validators.stake_open = 10.0;
    let e = Sim::new(&sc, false).err().unwrap();
    assert!(e.contains("validators.stake_open"), "{e}");
}
