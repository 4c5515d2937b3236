//! One simulation run: genesis from the scenario, the agent populations, and the daily loop
//! (arrivals → contributions → approvals and subsidies → training → inference → reinvestment →
//! staking → governance → metrics). Every on-chain action is a transaction through the real
//! executor ([`crate::chain::SimChain`]); the agents decide from public chain data and their
//! own history. Randomness comes from one ChaCha stream seeded by the scenario's seed, and no
//! result depends on hash-map order, so a seed always gives the same run.

use crate::{
    agents::{Builder, Contributor, Datanet, Staker, User},
    chain::{SimChain, TxRecord},
    report::DayRow,
    scenario::Scenario,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_state::{executor::simulate_call, ExecError};
use openledger_types::{
    genesis::{total_supply, Allocation},
    modules::TREASURY,
    params::{FeeSplit, Params},
    units::one_open,
    Genesis,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Agent kinds, encoded in their addresses.
pub mod kind {
    pub const EXCHANGE: u8 = 1;
    pub const FOUNDATION: u8 = 2;
    pub const COUNCIL: u8 = 3;
    pub const COMPUTE: u8 = 4;
    pub const CONTRIBUTOR: u8 = 10;
    pub const OWNER: u8 = 11;
    pub const BUILDER: u8 = 12;
    pub const USER: u8 = 13;
    pub const STAKER: u8 = 14;
    pub const VALIDATOR: u8 = 15;
}

/// The address of agent `idx` of `kind`: `0x5a`, the kind, zeros, the index.
pub fn agent_addr(kind: u8, idx: u32) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0x5a;
    b[1] = kind;
    b[16..].copy_from_slice(&idx.to_be_bytes());
    Address::from(b)
}

/// The (kind, index) of a simulator agent's address.
pub fn agent_of(a: &Address) -> Option<(u8, u32)> {
    let b = a.as_slice();
    (b[0] == 0x5a).then(|| (b[1], u32::from_be_bytes([b[16], b[17], b[18], b[19]])))
}

/// OPEN (a float, nano-OPEN precision) as wei.
pub fn wei(open: f64) -> U256 {
    U256::from((open.max(0.0) * 1e9).round() as u128) * U256::from(1_000_000_000u64)
}

/// Wei as OPEN (a float).
pub fn open(wei: U256) -> f64 {
    const GWEI: u128 = 1_000_000_000;
    // Amounts below 2^128 wei (all but absurd ones) divide in native 128-bit arithmetic: the
    // same floor as the 256-bit division, several times cheaper (it runs per payment).
    let gwei = match u128::try_from(wei) {
        Ok(w) => w / GWEI,
        Err(_) => (wei / U256::from(GWEI)).saturating_to::<u128>(),
    };
    gwei as f64 / 1e9
}

/// The OPEN the exchange holds at genesis to sell to arriving agents.
const EXCHANGE_OPEN: u64 = 400_000_000;

/// The genesis a scenario runs from: the exchange and the subsidy fund carved out of the
/// treasury's allocation, and the chain's default parameters with the scenario's overrides.
///
/// A run from a chain's state ([`crate::start`]) starts from the node's parameter set instead
/// of the defaults; its prices are kept exactly unless the scenario changed them.
pub fn genesis(sc: &Scenario) -> Result<Genesis, String> {
    let mut params = match &sc.start {
        Some(s) => s.params.clone(),
        None => Params::default(),
    };
    let base = sc
        .start
        .as_ref()
        .map(|s| crate::scenario::ChainParams::of(&s.params));
    let c = &sc.chain;
    params.fee_split = FeeSplit {
        platform_bps: c.platform_bps,
        model_owner_bps: c.model_owner_bps,
        stakers_bps: c.stakers_bps,
        contributors_bps: c.contributors_bps,
    };
    let changed =
        |old: Option<f64>, new: f64| old.is_none_or(|o| crate::start::price_differs(o, new));
    if changed(
        base.as_ref().map(|b| b.price_per_prompt_token_open),
        c.price_per_prompt_token_open,
    ) {
        params.price_per_prompt_token = wei(c.price_per_prompt_token_open);
    }
    if changed(
        base.as_ref().map(|b| b.price_per_completion_token_open),
        c.price_per_completion_token_open,
    ) {
        params.price_per_completion_token = wei(c.price_per_completion_token_open);
    }
    params.governance.voting_delay_secs = c.voting_delay_days * 86_400;
    params.governance.voting_period_secs = c.voting_period_days * 86_400;
    params.governance.timelock_delay_secs = c.timelock_days * 86_400;
    params.governance.quorum_bps = c.quorum_bps;
    let exchange = U256::from(EXCHANGE_OPEN) * one_open();
    let fund = wei(sc.subsidy.initial_open);
    let mut allocations = vec![
        Allocation {
            address: TREASURY,
            balance: total_supply() - exchange - fund,
        },
        Allocation {
            address: agent_addr(kind::EXCHANGE, 0),
            balance: exchange,
        },
    ];
    if !fund.is_zero() {
        allocations.push(Allocation {
            address: agent_addr(kind::FOUNDATION, 0),
            balance: fund,
        });
    }
    let g = Genesis {
        chain_id: crate::chain::CHAIN_ID,
        timestamp: crate::chain::DAY0,
        allocations,
        params,
    };
    g.validate()?;
    Ok(g)
}

/// A governance proposal under way.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub id: U256,
    pub day: u64,
    pub contributors_bps: u16,
    pub voted: bool,
}

/// What governance did, for the summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GovEvent {
    pub day: u64,
    pub what: String,
}

/// Running totals of the current day.
#[derive(Clone, Debug, Default)]
pub struct Today {
    pub submitted: u64,
    pub approved: u64,
    pub rejected: u64,
    pub duplicates_refused: u64,
    pub inferences: u64,
    pub fees: U256,
    pub contributor_income: U256,
    pub subsidy: U256,
    pub owner_income: U256,
    pub staker_rewards: U256,
    pub trainings: u64,
    pub rlhf_opened: u64,
    pub rlhf_counted: u64,
    pub rlhf_void: u64,
    pub rlhf_rewards: U256,
    pub rlhf_slashed: U256,
}

/// The state of one run.
pub struct Sim {
    pub sc: Scenario,
    pub rng: ChaCha8Rng,
    pub chain: SimChain,
    pub day: u64,
    pub contributors: Vec<Contributor>,
    pub datanets: Vec<Datanet>,
    pub builders: Vec<Builder>,
    pub users: Vec<User>,
    pub stakers: Vec<Staker>,
    pub validators: Vec<crate::rlhf::Validator>,
    /// RLHF rounds under way.
    pub rounds: Vec<crate::rlhf::Round>,
    /// Receipts recorded today, with their adapter's quality (for RLHF rounds).
    pub receipts_today: Vec<(u64, f64)>,
    pub base_model: u64,
    pub proposal: Option<Proposal>,
    pub gov_events: Vec<GovEvent>,
    pub today: Today,
    pub rows: Vec<DayRow>,
    /// Exponential average of the stakers pool's daily income, OPEN.
    pub staking_income_ema: f64,
    /// Request ids: a counter unique within the run.
    pub next_request: u64,
    /// Transactions refused for reasons other than the duplicate guard (should stay 0).
    pub unexpected_refusals: Vec<String>,
}

impl Sim {
    /// Sets up the chain and the agents present at day 0. `log` keeps every transaction.
    pub fn new(sc: &Scenario, log: bool) -> Result<Sim, String> {
        sc.validate().map_err(|e| e.to_string())?;
        let chain = SimChain::new(genesis(sc)?, log)?;
        let mut s = Sim {
            sc: sc.clone(),
            rng: ChaCha8Rng::seed_from_u64(sc.seed),
            chain,
            day: 0,
            contributors: Vec::new(),
            datanets: Vec::new(),
            builders: Vec::new(),
            users: Vec::new(),
            stakers: Vec::new(),
            validators: Vec::new(),
            rounds: Vec::new(),
            receipts_today: Vec::new(),
            base_model: 0,
            proposal: None,
            gov_events: Vec::new(),
            today: Today::default(),
            rows: Vec::new(),
            staking_income_ema: 0.0,
            next_request: 1,
            unexpected_refusals: Vec::new(),
        };
        s.chain.start_day(0);
        match sc.start.clone() {
            Some(start) => s.import(&start)?,
            None => s.setup()?,
        }
        s.chain.start_day(0);
        Ok(s)
    }

    /// Runs every day of the scenario.
    pub fn run(&mut self) -> Result<(), String> {
        while self.day < self.sc.days {
            self.step()?;
        }
        Ok(())
    }

    /// Simulates one day.
    pub fn step(&mut self) -> Result<(), String> {
        let day = self.day;
        self.chain.start_day(day);
        self.today = Today::default();
        let fees_before = self.chain.gas_fees;
        self.contributor_arrivals()?;
        self.user_arrivals()?;
        self.contribute()?;
        self.approve_and_subsidise()?;
        self.train()?;
        self.serve()?;
        self.rlhf()?;
        self.reinvest()?;
        self.stake()?;
        self.govern()?;
        self.today.staker_rewards += self.chain.gas_fees - fees_before;
        self.close_day();
        self.day += 1;
        Ok(())
    }

    /// Sends a transaction; a refusal is an error unless `tolerate` accepts it.
    pub fn send(
        &mut self,
        from: Address,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<openledger_state::Outcome, ExecError> {
        let r = self.chain.send(from, to, value, data);
        if let Err(e) = &r {
            if self.unexpected_refusals.len() < 20 {
                self.unexpected_refusals
                    .push(format!("day {}: {from} → {to}: {e}", self.day));
            }
        }
        r
    }

    /// Sends a transaction the simulator expects to be accepted; a refusal stops the run with
    /// the executor's reason (a bug in an agent rule, never ignored).
    pub fn must(
        &mut self,
        from: Address,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<openledger_state::Outcome, String> {
        self.send(from, to, value, data).map_err(|e| {
            format!(
                "day {}: a transaction from {from} to {to} was refused: {e}",
                self.day
            )
        })
    }

    /// A plain OPEN transfer.
    pub fn pay(&mut self, from: Address, to: Address, amount: U256) -> Result<(), String> {
        self.must(from, to, amount, Vec::new()).map(|_| ())
    }

    /// Reads a view as `eth_call` does.
    pub fn view<C: SolCall>(&self, to: Address, c: C) -> Result<C::Return, String> {
        let (out, _, _) = simulate_call(
            &self.chain.kv,
            &self.chain.env,
            &self.chain.params,
            Address::ZERO,
            to,
            U256::ZERO,
            &c.abi_encode(),
        )
        .map_err(|e| format!("view on {to}: {e}"))?;
        C::abi_decode_returns(&out).map_err(|e| format!("view on {to}: {e}"))
    }

    /// A Poisson draw (Knuth below 30, a rounded normal above).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= self.rng.gen::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.gen::<f64>().max(1e-300);
        let u2: f64 = self.rng.gen();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Every agent address that may hold stake or inference credit.
    pub fn accounts(&self) -> Vec<Address> {
        let mut v: Vec<Address> = self.contributors.iter().map(|c| c.addr).collect();
        v.extend(self.users.iter().map(|u| u.addr));
        v.extend(self.stakers.iter().map(|s| s.addr));
        v.extend(self.builders.iter().map(|b| b.addr));
        v.extend(self.validators.iter().map(|x| x.addr));
        v.extend(self.datanets.iter().map(|d| d.owner));
        v.push(agent_addr(kind::COUNCIL, 0));
        v
    }

    /// The transaction log, when logging is on.
    pub fn log(&self) -> Option<&[TxRecord]> {
        self.chain.log.as_deref()
    }

    /// A uniform draw in 0..1.
    pub fn uniform(&mut self) -> f64 {
        self.rng.gen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 256-bit formula `open` stood for before it took the 128-bit shortcut.
    fn open_u256(wei: U256) -> f64 {
        (wei / U256::from(1_000_000_000u64)).saturating_to::<u128>() as f64 / 1e9
    }

    #[test]
    fn open_agrees_with_the_256_bit_division_on_every_edge() {
        let edges = [
            U256::ZERO,
            U256::from(1u64),
            U256::from(999_999_999u64),
            U256::from(1_000_000_000u64),
            U256::from(1_000_000_001u64),
            wei(1.0),
            wei(123_456.789),
            U256::from(u64::MAX),
            U256::from(u128::MAX - 1),
            U256::from(u128::MAX),
            U256::from(u128::MAX) + U256::from(1u64),
            U256::from(u128::MAX) * U256::from(1_000_000_000u64),
            U256::MAX,
        ];
        for w in edges {
            assert_eq!(open(w).to_bits(), open_u256(w).to_bits(), "{w}");
        }
        assert_eq!(open(wei(2.5)), 2.5);
    }
}
