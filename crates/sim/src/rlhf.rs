//! RLHF validators (issue [8], the module at 0x…1008) as a population, off when
//! `validators.count` is 0. Every action is a real transaction to the RLHF module.
//!
//! - **Joining**: on day 0 each validator buys `wallet_open` + `stake_open` OPEN, stakes
//!   `stake_open` (at least the chain's `rlhf_min_stake`) and calls `joinValidators`. A share
//!   `careless_share` of them are careless.
//! - **Rounds**: each day the first active validator opens Poisson(`rounds_per_day`)
//!   score-only rounds (`openRound(receipt, 0, …)`) on distinct receipts recorded that day
//!   (the prompt and output hashes are stand-ins: the simulator serves no text).
//! - **Rating**: every active validator takes part in a round with chance `participation` (at
//!   most the chain's `rlhf_max_validators`). An honest validator scores the adapter's quality
//!   (from the fitted curve, [`crate::quality`]) × 10,000 plus normal noise of sd `noise_bps`;
//!   a careless one scores uniformly at random. It commits
//!   `commitmentOf(round, itself, score, 0, salt)` and reveals once the commit window has
//!   closed, except that each commit is left unrevealed with chance `no_reveal`.
//! - **Timing**: the simulator's chain makes one block a day, but rounds last the chain's
//!   `rlhf_commit_secs` + `rlhf_reveal_secs` (an hour each by default). Reveals and
//!   finalisations happen at the first instant their window allows: the day's clock moves
//!   forward to it when it falls before the next day's block, and later days pick up the rest,
//!   so a round is never missed. The opener calls `finalizeRound` once the reveal window has
//!   ended; the module pays the agreeing validators from its reward pool (`rlhf_fee_bps` of
//!   the stakers' share of every settled fee) and slashes deviating and silent ones.
//! - **Leaving**: a validator whose stake has fallen below `rlhf_min_stake` (slashes) calls
//!   `leaveValidators` and rates no more.
//!
//! The run's summary reports rounds counted and void, rewards and slashes, and the mean net
//! income of honest and careless validators.

use crate::sim::{agent_addr, kind, open, wei, Sim};
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use openledger_types::{
    abi::{IInference, IRlhf, IStaking},
    modules::{RLHF, STAKING},
};
use serde::Serialize;

/// One RLHF validator.
#[derive(Clone, Debug)]
pub struct Validator {
    pub addr: Address,
    pub careless: bool,
    pub active: bool,
    /// Rewards received and stake slashed, OPEN.
    pub rewards: f64,
    pub slashed: f64,
    /// Slashes for a revealed rating that deviated, and for a rating never revealed.
    pub deviations: u32,
    pub silences: u32,
}

/// A rating committed and not yet revealed.
#[derive(Clone, Debug)]
struct Rating {
    validator: usize,
    score: u16,
    salt: B256,
    reveal: bool,
}

/// A round under way.
#[derive(Clone, Debug)]
pub struct Round {
    id: u64,
    opener: Address,
    commit_end: u64,
    reveal_end: u64,
    ratings: Vec<Rating>,
    revealed: bool,
}

/// The RLHF part of a run's summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RlhfSummary {
    pub validators: u32,
    pub careless: u32,
    /// Validators still in the set at the end.
    pub active_at_end: u32,
    pub rounds_opened: u64,
    /// Rounds finalised with a consensus, and void ones (too few reveals).
    pub rounds_counted: u64,
    pub rounds_void: u64,
    pub rewards_open: f64,
    pub slashed_open: f64,
    /// The reward pool at the end, OPEN.
    pub pool_open: f64,
    /// Mean rewards minus slashes per honest and per careless validator, OPEN.
    pub honest_net_open: f64,
    pub careless_net_open: f64,
    /// Slashes of honest and of careless validators for deviating from the consensus, and of
    /// all for never revealing.
    pub honest_deviations: u32,
    pub careless_deviations: u32,
    pub silences: u32,
}

fn gas_money() -> U256 {
    wei(0.01)
}

impl Sim {
    /// Day 0: the validators stake and join (nothing when `validators.count` is 0).
    pub(crate) fn setup_validators(&mut self) -> Result<(), String> {
        let v = self.sc.validators.clone();
        if v.count == 0 {
            return Ok(());
        }
        let stake = wei(v.stake_open);
        let min = self.chain.params.rlhf.rlhf_min_stake;
        if stake < min || stake < self.chain.params.min_stake {
            return Err(format!(
                "validators.stake_open ({} OPEN) is below the chain's rlhf_min_stake ({} OPEN): validators could not join",
                v.stake_open,
                openledger_types::units::format_open(min)
            ));
        }
        for i in 0..v.count {
            let addr = agent_addr(kind::VALIDATOR, i);
            let careless = self.uniform() < v.careless_share;
            self.pay(
                agent_addr(kind::EXCHANGE, 0),
                addr,
                stake + wei(v.wallet_open),
            )?;
            self.must(addr, STAKING, stake, IStaking::stakeCall {}.abi_encode())?;
            self.must(
                addr,
                RLHF,
                U256::ZERO,
                IRlhf::joinValidatorsCall {}.abi_encode(),
            )?;
            self.validators.push(Validator {
                addr,
                careless,
                active: true,
                rewards: 0.0,
                slashed: 0.0,
                deviations: 0,
                silences: 0,
            });
        }
        Ok(())
    }

    /// The day's RLHF work: open rounds on today's receipts, commit, then reveal and finalise
    /// every round whose window opens before the next day's block.
    pub(crate) fn rlhf(&mut self) -> Result<(), String> {
        if self.validators.is_empty() {
            return Ok(());
        }
        let receipts = std::mem::take(&mut self.receipts_today);
        self.open_rounds(receipts)?;
        let limit = self.chain.day_timestamp(self.day + 1) - 1;
        loop {
            let next = self
                .rounds
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        if r.revealed {
                            r.reveal_end
                        } else {
                            r.commit_end
                        },
                        i,
                    )
                })
                .min();
            let Some((at, i)) = next else { break };
            if at > limit {
                break;
            }
            if at > self.chain.env.timestamp {
                self.chain.env.timestamp = at;
            }
            if self.rounds[i].revealed {
                let r = self.rounds.remove(i);
                self.finalize(r)?;
            } else {
                self.reveal(i)?;
            }
        }
        let min = self.chain.params.rlhf.rlhf_min_stake;
        for i in 0..self.validators.len() {
            let v = self.validators[i].clone();
            if !v.active {
                continue;
            }
            let stake = self.view(STAKING, IStaking::stakeOfCall { staker: v.addr })?;
            if stake < min && self.chain.balance(&v.addr) >= gas_money() {
                self.must(
                    v.addr,
                    RLHF,
                    U256::ZERO,
                    IRlhf::leaveValidatorsCall {}.abi_encode(),
                )?;
                self.validators[i].active = false;
            }
        }
        Ok(())
    }

    fn open_rounds(&mut self, mut receipts: Vec<(u64, f64)>) -> Result<(), String> {
        let v = self.sc.validators.clone();
        let Some(opener) = self.validators.iter().find(|x| x.active).map(|x| x.addr) else {
            return Ok(());
        };
        let max = self.chain.params.rlhf.rlhf_max_validators as usize;
        let n = self.poisson(v.rounds_per_day).min(receipts.len() as u64);
        for _ in 0..n {
            if self.chain.balance(&opener) < gas_money() {
                break;
            }
            let pick = (self.uniform() * receipts.len() as f64) as usize % receipts.len();
            let (receipt, quality) = receipts.swap_remove(pick);
            let out = self.must(
                opener,
                RLHF,
                U256::ZERO,
                IRlhf::openRoundCall {
                    receiptA: receipt,
                    receiptB: 0,
                    promptHash: keccak256(format!("prompt of receipt {receipt}")),
                    outputHashA: keccak256(format!("output of receipt {receipt}")),
                    outputHashB: B256::ZERO,
                }
                .abi_encode(),
            )?;
            let id =
                IRlhf::openRoundCall::abi_decode_returns(&out.output).map_err(|e| e.to_string())?;
            let r: IRlhf::Round = self.view(RLHF, IRlhf::getRoundCall { roundId: id })?;
            let mut ratings = Vec::new();
            for i in 0..self.validators.len() {
                let x = self.validators[i].clone();
                if !x.active || ratings.len() >= max || self.uniform() >= v.participation {
                    continue;
                }
                if self.chain.balance(&x.addr) < gas_money() {
                    continue;
                }
                let score = if x.careless {
                    self.uniform() * 10_000.0
                } else {
                    quality * 10_000.0 + v.noise_bps * self.normal()
                };
                let score = score.round().clamp(0.0, 10_000.0) as u16;
                let salt = keccak256(format!("salt of {} in round {id}", x.addr));
                let commitment = self.view(
                    RLHF,
                    IRlhf::commitmentOfCall {
                        roundId: id,
                        validator: x.addr,
                        scoreBps: score,
                        preferred: 0,
                        salt,
                    },
                )?;
                self.must(
                    x.addr,
                    RLHF,
                    U256::ZERO,
                    IRlhf::commitRatingCall {
                        roundId: id,
                        commitment,
                    }
                    .abi_encode(),
                )?;
                let reveal = self.uniform() >= v.no_reveal;
                ratings.push(Rating {
                    validator: i,
                    score,
                    salt,
                    reveal,
                });
            }
            self.today.rlhf_opened += 1;
            self.rounds.push(Round {
                id,
                opener,
                commit_end: r.commitEnd,
                reveal_end: r.revealEnd,
                ratings,
                revealed: false,
            });
        }
        Ok(())
    }

    fn reveal(&mut self, i: usize) -> Result<(), String> {
        let r = self.rounds[i].clone();
        for x in r.ratings.iter().filter(|x| x.reveal) {
            let addr = self.validators[x.validator].addr;
            if self.chain.balance(&addr) < gas_money() {
                continue;
            }
            self.must(
                addr,
                RLHF,
                U256::ZERO,
                IRlhf::revealRatingCall {
                    roundId: r.id,
                    scoreBps: x.score,
                    preferred: 0,
                    salt: x.salt,
                }
                .abi_encode(),
            )?;
        }
        self.rounds[i].revealed = true;
        Ok(())
    }

    fn finalize(&mut self, r: Round) -> Result<(), String> {
        let out = self.must(
            r.opener,
            RLHF,
            U256::ZERO,
            IRlhf::finalizeRoundCall { roundId: r.id }.abi_encode(),
        )?;
        for l in &out.logs {
            if let Ok(f) = IRlhf::RoundFinalized::decode_log_data(&l.data) {
                if f.status == 1 {
                    self.today.rlhf_counted += 1;
                } else {
                    self.today.rlhf_void += 1;
                }
            } else if let Ok(w) = IRlhf::ValidatorRewarded::decode_log_data(&l.data) {
                self.today.rlhf_rewards += w.amount;
                if let Some(v) = self.validators.iter_mut().find(|v| v.addr == w.validator) {
                    v.rewards += open(w.amount);
                }
            } else if let Ok(s) = IRlhf::ValidatorSlashed::decode_log_data(&l.data) {
                self.today.rlhf_slashed += s.amount;
                if let Some(v) = self.validators.iter_mut().find(|v| v.addr == s.validator) {
                    v.slashed += open(s.amount);
                    if s.revealed {
                        v.deviations += 1;
                    } else {
                        v.silences += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Notes the receipts a `recordInferences` call made, for today's rounds.
    pub(crate) fn note_receipts(&mut self, output: &[u8], quality: f64) {
        if self.validators.is_empty() {
            return;
        }
        if let Ok(r) = IInference::recordInferencesCall::abi_decode_returns(output) {
            for id in r.firstReceiptId..r.firstReceiptId + r.recorded as u64 {
                self.receipts_today.push((id, quality));
            }
        }
    }

    /// The RLHF summary (None without validators).
    pub fn rlhf_summary(&self) -> Option<RlhfSummary> {
        if self.validators.is_empty() {
            return None;
        }
        let mean = |careless: bool| {
            let v: Vec<f64> = self
                .validators
                .iter()
                .filter(|v| v.careless == careless)
                .map(|v| v.rewards - v.slashed)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let count = |careless: bool| {
            self.validators
                .iter()
                .filter(|v| v.careless == careless)
                .map(|v| v.deviations)
                .sum()
        };
        let pool: U256 = self
            .view(RLHF, IRlhf::rewardPoolCall {})
            .unwrap_or_default();
        Some(RlhfSummary {
            validators: self.validators.len() as u32,
            careless: self.validators.iter().filter(|v| v.careless).count() as u32,
            active_at_end: self.validators.iter().filter(|v| v.active).count() as u32,
            rounds_opened: self.rows.iter().map(|r| r.rlhf_rounds_opened).sum(),
            rounds_counted: self.rows.iter().map(|r| r.rlhf_rounds_counted).sum(),
            rounds_void: self.rows.iter().map(|r| r.rlhf_rounds_void).sum(),
            rewards_open: self.rows.iter().map(|r| r.rlhf_rewards_open).sum(),
            slashed_open: self.rows.iter().map(|r| r.rlhf_slashed_open).sum(),
            pool_open: open(pool),
            honest_net_open: mean(false),
            careless_net_open: mean(true),
            honest_deviations: count(false),
            careless_deviations: count(true),
            silences: self.validators.iter().map(|v| v.silences).sum(),
        })
    }
}
