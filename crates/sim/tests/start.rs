//! Starting from a chain's state: a simulated chain is read through the same views a node
//! answers, a second run starts from what was read, and its chain then holds the same
//! datanets, contributions (rows roots, sizes, scores, statuses, versions), adapters and stakes;
//! it runs on, conserves supply, replays from genesis, survives the report round trip (`sim
//! verify`) and a sweep of a `chain.*` field.

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_sim::{
    chain::{replay, state_digest},
    evidence,
    sim::genesis,
    start::{read, ChainSource, ChainStart},
    write_job, Computed, Job, Scenario, Sim,
};
use openledger_state::executor::simulate_call;
use openledger_types::{
    abi::{IDatanet, IModel, IStaking},
    modules::{DATANET, MODEL, STAKING},
};

const MARKET: &str = r#"
name = "start test"
days = 30
seed = 5
[subsidy]
initial_open = 2000.0
days = 15
[chain]
price_per_prompt_token_open = 0.00005
price_per_completion_token_open = 0.0001
contributors_bps = 5500
model_owner_bps = 2500
[contributors]
max = 60
initial = 10
arrival_per_day = 2.0
[users]
max = 200
initial = 5
arrival_per_day = 8.0
requests_per_day = 2.0
reference_price_open = 0.035
[stakers]
count = 5
[governance]
window_days = 7
"#;

/// A simulated chain seen as a node sees it.
struct SimSource<'a>(&'a Sim);

impl ChainSource for SimSource<'_> {
    fn call(&mut self, to: Address, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let c = &self.0.chain;
        simulate_call(
            &c.kv,
            &c.env,
            &c.params,
            Address::ZERO,
            to,
            U256::ZERO,
            &data,
        )
        .map(|(out, _, _)| out.to_vec())
        .map_err(|e| e.to_string())
    }
    fn balance(&mut self, who: Address) -> Result<U256, String> {
        Ok(self.0.chain.balance(&who))
    }
    fn stakers(&mut self) -> Result<Vec<Address>, String> {
        Ok(self.0.accounts())
    }
    fn head(&mut self) -> Result<(u64, u64, u64), String> {
        let e = &self.0.chain.env;
        Ok((e.chain_id, e.block_number, e.timestamp))
    }
}

fn view<C: SolCall>(sim: &Sim, to: Address, c: C) -> C::Return {
    sim.view(to, c).unwrap()
}

fn source() -> (Sim, ChainStart) {
    let sc = Scenario::parse(MARKET, "test").unwrap();
    let mut sim = Sim::new(&sc, false).unwrap();
    sim.run().unwrap();
    let start = read(&mut SimSource(&sim), "sim").unwrap();
    (sim, start)
}

/// The fresh scenario the second run applies to the chain state.
fn next() -> Scenario {
    let mut sc = Scenario::parse(MARKET, "test").unwrap();
    sc.days = 20;
    sc.seed = 9;
    sc
}

#[test]
fn a_run_from_a_chain_state_rebuilds_it_and_runs_on() {
    let (a, mut start) = source();
    assert!(start.datanets.iter().any(|d| d.contributions.len() > 5));
    assert!(!start.adapters.is_empty() && !start.stakers.is_empty() && !start.users.is_empty());
    // One contribution a day per contributor: the import has to spread them over days.
    start.params.max_daily_contributions = 1;
    let sc = next().starting_from(start.clone()).unwrap();
    assert_eq!(
        sc.chain.contributors_bps,
        a.chain.params.fee_split.contributors_bps
    );
    let mut b = Sim::new(&sc, true).unwrap();
    assert!(b.chain.day_offset > 1, "{}", b.chain.day_offset);

    // The same datanets and contributions, field by field (contributors are new agents).
    let n = view(&a, DATANET, IDatanet::datanetCountCall {});
    assert_eq!(view(&b, DATANET, IDatanet::datanetCountCall {}), n);
    let count = view(&a, DATANET, IDatanet::contributionCountCall {});
    assert!(count > 10);
    for cid in 1..=count {
        let (x, y) = (
            view(
                &a,
                DATANET,
                IDatanet::getContributionCall {
                    contributionId: cid,
                },
            ),
            view(
                &b,
                DATANET,
                IDatanet::getContributionCall {
                    contributionId: cid,
                },
            ),
        );
        assert_eq!(
            (
                x.datanetId,
                x.rowsRoot,
                x.rowCount,
                x.byteSize,
                x.score,
                x.version
            ),
            (
                y.datanetId,
                y.rowsRoot,
                y.rowCount,
                y.byteSize,
                y.score,
                y.version
            ),
            "contribution {cid}"
        );
        // Pending ones are left to the owners' rule on day 0.
        assert!(
            x.status == y.status || (x.status == 0 && y.status == 0),
            "{cid}"
        );
    }
    for id in 1..=n {
        let (x, y) = (
            view(&a, DATANET, IDatanet::getDatanetCall { datanetId: id }),
            view(&b, DATANET, IDatanet::getDatanetCall { datanetId: id }),
        );
        assert_eq!(
            (x.latestRoot, x.rowCount, x.versionCount),
            (y.latestRoot, y.rowCount, y.versionCount)
        );
    }
    // Adapters on the same versions; every staked amount staked again.
    let adapters = view(&a, MODEL, IModel::adapterCountCall {});
    for id in 1..=adapters {
        let (x, y) = (
            view(&a, MODEL, IModel::getAdapterCall { adapterId: id }),
            view(&b, MODEL, IModel::getAdapterCall { adapterId: id }),
        );
        assert_eq!(
            (x.name, x.datanetVersions, x.datanetRoots),
            (y.name, y.datanetVersions, y.datanetRoots)
        );
    }
    let staked: U256 = start.stakers.iter().map(|s| s.stake.0).sum();
    let council = U256::from(20_000u64) * U256::from(10u64).pow(U256::from(18u64));
    assert_eq!(
        view(&b, STAKING, IStaking::totalStakedCall {}),
        staked + council
    );
    assert!(
        b.builders.iter().any(|x| x.adapter.is_some()),
        "an adapter serves from day 0"
    );

    b.run().unwrap();
    let s = b.summary();
    assert!(s.supply_check.ok, "{:?}", s.supply_check.failures);
    assert!(s.totals.inferences > 0, "{:?}", s.totals);
    let replayed = replay(&genesis(&sc).unwrap(), b.log().unwrap()).unwrap();
    assert_eq!(state_digest(&replayed), state_digest(&b.chain.kv));
}

#[test]
fn a_report_from_a_chain_state_verifies_and_sweeps() {
    let (_, start) = source();
    let sc = next().starting_from(start).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let computed = Job::Run.compute(&sc).unwrap();
    let ev = write_job(dir.path(), Job::Run, &sc, &computed).unwrap();
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    assert!(text.contains("\"start\""));
    let v = evidence::verify(&text).expect("the report re-runs from its recorded chain state");
    assert_eq!(v.results_sha256, ev.results_sha256);
    // A changed start is a different run.
    let mut other = sc.clone();
    if let Some(s) = &mut other.start {
        s.datanets[0].contributions.truncate(1);
        s.adapters.clear();
    }
    let Computed::Run { summary: x, .. } = computed else {
        panic!()
    };
    let Computed::Run { summary: y, .. } = Job::Run.compute(&other).unwrap() else {
        panic!()
    };
    assert_ne!(x.state_digest, y.state_digest);
    // Sweeps set fields through TOML: the chain state survives it, and the price applies.
    let cheap = sc
        .with_value("chain.price_per_completion_token_open", 0.00001)
        .unwrap();
    assert_eq!(cheap.start, sc.start);
    let g = genesis(&cheap).unwrap();
    assert_eq!(
        g.params.price_per_completion_token,
        U256::from(10_000_000_000_000u64)
    );
    let same = sc
        .with_value("chain.quorum_bps", sc.chain.quorum_bps as f64)
        .unwrap();
    assert_eq!(genesis(&same).unwrap().params, genesis(&sc).unwrap().params);
}

#[test]
fn a_start_that_contradicts_itself_is_refused() {
    let (_, mut start) = source();
    let d = start
        .datanets
        .iter()
        .position(|d| d.contributions.iter().any(|c| c.status == 1))
        .unwrap();
    let c = start.datanets[d]
        .contributions
        .iter_mut()
        .find(|c| c.status == 1)
        .unwrap();
    c.version = 999;
    let e = next().starting_from(start).unwrap_err().to_string();
    assert!(e.contains("start") && e.contains("versions"), "{e}");
}
