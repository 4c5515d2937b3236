//! Staking at scale: the time of each staking operation, of voting-power lookups and of a fee
//! settlement with 100, 10,000 and 100,000 stakers. Reward-per-share accounting and checkpointed
//! votes make every operation O(1) in the number of stakers (a lookup by timepoint is a binary
//! search over one account's checkpoints), so the times should stay flat; what grows is only
//! the in-memory key-value map under them (a B-tree: O(log entries) per read).
//!
//! Each operation runs as the executor runs a module call (`modules::dispatch` over an overlay
//! whose writes are then applied), without signature recovery and gas, on random stakers; the
//! clock moves one second per operation, so every stake change appends checkpoints.
//!
//! A size written `N:H` (e.g. `100000:100`) has N stakers but operates on the first H only: the
//! same state size with the working set of a small chain, which tells the cost of the cache
//! misses of a large working set from the cost of the operation.
//!
//! Usage: `cargo run --release -p openledger-bench --bin staking-speed -- [--stakers
//! 100,10000,100000,100000:100] [--ops 2000] [--rounds 15]`

mod flags;
mod rng;
mod state_fixture;

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_state::{
    modules::{self, staking},
    Ctx, Env, ExecError, MemKv, Overlay,
};
use openledger_types::{
    abi::{IInference, IStaking},
    modules::{INFERENCE, STAKING, TREASURY},
    units::one_open,
    Params,
};
use rng::Rng;
use state_fixture::Counted;
use std::{cell::Cell, time::Instant};

/// A chain state driven by module calls, counting the key-value reads and writes they make.
struct Chain {
    kv: MemKv,
    env: Env,
    params: Params,
    reads: Cell<u64>,
    writes: u64,
}

impl Chain {
    /// `n` accounts with 1,000 OPEN each, every one staking 10 OPEN (one per second).
    fn with_stakers(n: usize) -> (Chain, Vec<Address>) {
        let stakers = state_fixture::staker_addresses(n);
        let genesis = state_fixture::genesis(&stakers);
        let (kv, env) = state_fixture::start(&genesis);
        let mut chain = Chain {
            kv,
            env,
            params: genesis.params,
            reads: Cell::new(0),
            writes: 0,
        };
        let stake = IStaking::stakeCall {}.abi_encode();
        for a in &stakers {
            chain.tick();
            chain
                .call(*a, STAKING, U256::from(10u64) * one_open(), &stake)
                .expect("stake");
        }
        (chain, stakers)
    }

    fn tick(&mut self) {
        state_fixture::tick(&mut self.env);
    }

    /// Runs a call and applies its writes.
    fn call(
        &mut self,
        from: Address,
        to: Address,
        value: U256,
        data: &[u8],
    ) -> Result<Vec<u8>, ExecError> {
        let counted = Counted {
            kv: &self.kv,
            reads: &self.reads,
        };
        let mut ctx = Ctx {
            state: Overlay::new(&counted),
            env: &self.env,
            params: &self.params,
            sender: from,
            value,
            logs: Vec::new(),
        };
        let out = modules::dispatch(&mut ctx, to, data)?;
        let writes = ctx.state.into_writes();
        self.writes += writes.len() as u64;
        self.kv.apply(writes);
        Ok(out)
    }

    /// Runs a view (writes discarded).
    fn view(&self, to: Address, data: &[u8]) -> Result<Vec<u8>, ExecError> {
        let counted = Counted {
            kv: &self.kv,
            reads: &self.reads,
        };
        let mut ctx = Ctx {
            state: Overlay::new(&counted),
            env: &self.env,
            params: &self.params,
            sender: Address::ZERO,
            value: U256::ZERO,
            logs: Vec::new(),
        };
        modules::dispatch(&mut ctx, to, data)
    }

    /// A datanet with one approved contribution by `owner`, a base model, an adapter on it,
    /// credit for `owner`, who also operates: ready for `recordInference`.
    fn inference_setup(&mut self, owner: Address) {
        for (to, value, data) in state_fixture::inference_setup_calls() {
            self.call(owner, to, value, &data)
                .expect("inference set-up");
        }
    }
}

/// The operations measured, in the order of the table's columns.
const OPS: [&str; 8] = [
    "stake",
    "requestUnstake",
    "claimRewards",
    "delegate",
    "getPastVotes",
    "getPastTotalSupply",
    "stakers share",
    "settle 1 receipt",
];

/// One chain under test: its stakers and the receipts left to settle.
struct Case {
    n: usize,
    /// Operations pick among the first `hot` stakers.
    hot: usize,
    chain: Chain,
    stakers: Vec<Address>,
    receipts: std::vec::IntoIter<u64>,
    rng: Rng,
}

impl Case {
    /// `n` stakers, and `receipts` recorded inferences of staker 0's adapter waiting to settle.
    fn new(n: usize, hot: usize, receipts: usize) -> Case {
        let (mut chain, stakers) = Chain::with_stakers(n);
        let owner = stakers[0];
        chain.inference_setup(owner);
        let record = IInference::recordInferenceCall {
            caller: owner,
            adapterId: 1,
            promptTokens: 100,
            completionTokens: 200,
            top: vec![IInference::Attribution {
                contributionId: 1,
                weightPpm: 600_000,
            }],
            attributionRoot: B256::repeat_byte(4),
        }
        .abi_encode();
        let ids: Vec<u64> = (0..receipts)
            .map(|_| {
                let out = chain
                    .call(owner, INFERENCE, U256::ZERO, &record)
                    .expect("recordInference");
                IInference::recordInferenceCall::abi_decode_returns(&out).expect("an id")
            })
            .collect();
        Case {
            n,
            hot,
            chain,
            stakers,
            receipts: ids.into_iter(),
            rng: Rng(n as u64),
        }
    }

    /// "N" or "N:HOT".
    fn label(&self) -> String {
        if self.hot == self.n {
            self.n.to_string()
        } else {
            format!("{}:{}", self.n, self.hot)
        }
    }

    fn pick(&mut self) -> Address {
        self.stakers[self.rng.below(self.hot as u64) as usize]
    }

    /// A past timestamp since the first stake.
    fn past(&mut self) -> U256 {
        let start = 1_001;
        U256::from(start + self.rng.below(self.chain.env.timestamp - start))
    }

    /// Runs operation `op` once.
    fn run(&mut self, op: usize) {
        let one = one_open();
        match OPS[op] {
            "stake" => {
                self.chain.tick();
                let who = self.pick();
                let data = IStaking::stakeCall {}.abi_encode();
                self.chain.call(who, STAKING, one, &data).expect("stake");
            }
            "requestUnstake" => {
                self.chain.tick();
                let who = self.pick();
                let data = IStaking::requestUnstakeCall {
                    amount: one / U256::from(1000u64),
                }
                .abi_encode();
                self.chain
                    .call(who, STAKING, U256::ZERO, &data)
                    .expect("requestUnstake");
            }
            "claimRewards" => {
                self.chain.tick();
                let who = self.pick();
                let data = IStaking::claimRewardsCall {}.abi_encode();
                self.chain
                    .call(who, STAKING, U256::ZERO, &data)
                    .expect("claimRewards");
            }
            "delegate" => {
                self.chain.tick();
                let (who, delegatee) = (self.pick(), self.pick());
                let data = IStaking::delegateCall { delegatee }.abi_encode();
                self.chain
                    .call(who, STAKING, U256::ZERO, &data)
                    .expect("delegate");
            }
            "getPastVotes" => {
                let (account, timepoint) = (self.pick(), self.past());
                let data = IStaking::getPastVotesCall { account, timepoint }.abi_encode();
                self.chain.view(STAKING, &data).expect("getPastVotes");
            }
            "getPastTotalSupply" => {
                let timepoint = self.past();
                let data = IStaking::getPastTotalSupplyCall { timepoint }.abi_encode();
                self.chain.view(STAKING, &data).expect("getPastTotalSupply");
            }
            // The stakers' share of a settled fee (and every gas fee) entering the pool.
            "stakers share" => {
                let amount = U256::from(1_000_000_007u64 + self.rng.below(1000));
                let c = &mut self.chain;
                let counted = Counted {
                    kv: &c.kv,
                    reads: &c.reads,
                };
                let mut o = Overlay::new(&counted);
                staking::add_rewards(&mut o, &TREASURY, amount).expect("add rewards");
                let writes = o.into_writes();
                c.writes += writes.len() as u64;
                c.kv.apply(writes);
            }
            // A whole settlement: platform, model owner, the stakers pool and a contributor.
            _ => {
                let id = self.receipts.next().expect("a receipt per settlement");
                let data = IInference::settleCall {
                    receiptIds: vec![id],
                }
                .abi_encode();
                let owner = self.stakers[0];
                self.chain
                    .call(owner, INFERENCE, U256::ZERO, &data)
                    .expect("settle");
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<(usize, usize)> = flags::arg(
        &args,
        "--stakers",
        "100,10000,100000,100000:100".to_string(),
    )
    .split(',')
    .map(|s| {
        let count = |x: &str| -> usize {
            x.trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .expect("--stakers: comma-separated counts N or N:HOT, each above 0")
        };
        match s.split_once(':') {
            Some((n, h)) => (count(n), count(h).min(count(n))),
            None => (count(s), count(s)),
        }
    })
    .collect();
    let ops: usize = flags::arg(&args, "--ops", 2000);
    let rounds: usize = flags::arg(&args, "--rounds", 15).max(1);
    let ops = ops.max(1);
    let t = Instant::now();
    let mut cases: Vec<Case> = sizes
        .iter()
        .map(|&(n, hot)| Case::new(n, hot, ops * rounds))
        .collect();
    println!(
        "staking-speed: {rounds} rounds of {ops} operations on random stakers, every size in turn within each round (set-up {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    // times[case][op]: µs per operation in each round; io[case][op]: key-value reads and
    // writes per operation (they do not vary between rounds).
    let mut times = vec![vec![Vec::with_capacity(rounds); OPS.len()]; cases.len()];
    let mut io = vec![vec![(0.0, 0.0); OPS.len()]; cases.len()];
    for _ in 0..rounds {
        for op in 0..OPS.len() {
            for (c, case) in cases.iter_mut().enumerate() {
                let (reads, writes) = (case.chain.reads.get(), case.chain.writes);
                let t = Instant::now();
                for _ in 0..ops {
                    case.run(op);
                }
                times[c][op].push(t.elapsed().as_secs_f64() * 1e6 / ops as f64);
                io[c][op] = (
                    (case.chain.reads.get() - reads) as f64 / ops as f64,
                    (case.chain.writes - writes) as f64 / ops as f64,
                );
            }
        }
    }
    let rows: Vec<state_fixture::Row> = cases
        .iter()
        .zip(io.into_iter().zip(times))
        .map(|(case, (io, times))| state_fixture::Row {
            label: case.label(),
            kv_entries: case.chain.kv.len(),
            io,
            times,
        })
        .collect();
    state_fixture::print_tables(&OPS, &rows, 12, 20);
}
