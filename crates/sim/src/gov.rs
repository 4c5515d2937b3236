//! The chain-side populations: stakers and governance voters.
//!
//! - **Stakers** decide every `decide_every_days` (staggered): they claim pending rewards;
//!   stake `step` of their free balance when the staking yield (the stakers pool's recent daily
//!   income × 365 / total stake) beats `outside_rate`; ask to unstake `step` of their stake when
//!   it falls below half of it; withdraw once the chain's cooldown has passed.
//! - **Governance**: every `window_days` a council (staked `council_stake_open`, enough for the
//!   proposal threshold) compares approved contributions over the last window with the window
//!   before; when they fell by more than `stall_drop` (a stall) it proposes, through the real
//!   governor at 0x…1007, `setParam("fee_split", …)` moving `step_bps` from the model owner's
//!   share to the contributors' (up to `max_contributors_bps`). Once voting opens every staker
//!   and the council vote for with chance `support`, else against; a succeeded proposal is
//!   queued and executed after the timelock, and the chain applies the new split from the next
//!   transaction.

use crate::sim::{agent_addr, kind, open, GovEvent, Proposal, Sim};
use alloy_primitives::{Bytes, U256};
use alloy_sol_types::{SolCall, SolEvent};
use openledger_types::{
    abi::{IGovernor, IParams, IStaking},
    modules::{GOVERNOR, PARAMS, STAKING},
};

use IGovernor::ProposalState as S;

impl Sim {
    /// The staking yield (annual) the stakers see.
    pub fn staking_yield(&self) -> f64 {
        let total: U256 = self
            .view(STAKING, IStaking::totalStakedCall {})
            .unwrap_or_default();
        let total = open(total);
        if total <= 0.0 {
            return f64::INFINITY;
        }
        self.staking_income_ema * 365.0 / total
    }

    pub(crate) fn stake(&mut self) -> Result<(), String> {
        let s = self.sc.stakers.clone();
        let y = self.staking_yield();
        let min = self.chain.params.min_stake;
        let now = self.chain.now();
        for i in 0..self.stakers.len() {
            if !(self.day + i as u64).is_multiple_of(s.decide_every_days) {
                continue;
            }
            let st = self.stakers[i].clone();
            if !st.unbonding.is_zero() && now >= st.release {
                self.must(
                    st.addr,
                    STAKING,
                    U256::ZERO,
                    IStaking::withdrawCall {}.abi_encode(),
                )?;
                self.stakers[i].unbonding = U256::ZERO;
            }
            let pending: U256 =
                self.view(STAKING, IStaking::pendingRewardsCall { staker: st.addr })?;
            if !pending.is_zero() {
                self.must(
                    st.addr,
                    STAKING,
                    U256::ZERO,
                    IStaking::claimRewardsCall {}.abi_encode(),
                )?;
            }
            if y > s.outside_rate {
                let free = self.chain.balance(&st.addr);
                let reserve = crate::sim::wei(1.0);
                if free > reserve {
                    let amount = (free - reserve) * U256::from((s.step * 1e6) as u64)
                        / U256::from(1_000_000u64);
                    if amount >= min {
                        self.must(
                            st.addr,
                            STAKING,
                            amount,
                            IStaking::stakeCall {}.abi_encode(),
                        )?;
                        self.stakers[i].stake += amount;
                    }
                }
            } else if y < s.outside_rate / 2.0
                && !st.stake.is_zero()
                && self.stakers[i].unbonding.is_zero()
            {
                let mut amount =
                    st.stake * U256::from((s.step * 1e6) as u64) / U256::from(1_000_000u64);
                if st.stake - amount < min {
                    amount = st.stake;
                }
                if !amount.is_zero() {
                    self.must(
                        st.addr,
                        STAKING,
                        U256::ZERO,
                        IStaking::requestUnstakeCall { amount }.abi_encode(),
                    )?;
                    let x = &mut self.stakers[i];
                    x.stake -= amount;
                    x.unbonding = amount;
                    x.release = now + self.chain.params.unstake_cooldown_secs;
                }
            }
        }
        Ok(())
    }

    fn contributions_between(&self, from: u64, to: u64) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.day >= from && r.day < to)
            .map(|r| r.approved)
            .sum()
    }

    fn voters(&self) -> Vec<alloy_primitives::Address> {
        let mut v = vec![agent_addr(kind::COUNCIL, 0)];
        v.extend(
            self.stakers
                .iter()
                .filter(|s| !s.stake.is_zero())
                .map(|s| s.addr),
        );
        v
    }

    pub(crate) fn govern(&mut self) -> Result<(), String> {
        let g = self.sc.governance.clone();
        if !g.enabled {
            return Ok(());
        }
        let council = agent_addr(kind::COUNCIL, 0);
        if let Some(p) = self.proposal.clone() {
            let state: S = self.view(GOVERNOR, IGovernor::stateCall { proposalId: p.id })?;
            match state {
                S::Pending => {}
                S::Active if !p.voted => {
                    for v in self.voters() {
                        let support = u8::from(self.uniform() < g.support);
                        let has_votes: U256 =
                            self.view(STAKING, IStaking::getVotesCall { account: v })?;
                        if has_votes.is_zero() {
                            continue;
                        }
                        // Stake added after the snapshot has no weight there: a voter
                        // with no votes at the snapshot is refused, and that is fine.
                        let _ = self.chain.send(
                            v,
                            GOVERNOR,
                            U256::ZERO,
                            IGovernor::castVoteCall {
                                proposalId: p.id,
                                support,
                            }
                            .abi_encode(),
                        );
                    }
                    if let Some(x) = &mut self.proposal {
                        x.voted = true;
                    }
                }
                S::Active => {}
                S::Succeeded => {
                    self.must(
                        council,
                        GOVERNOR,
                        U256::ZERO,
                        IGovernor::queue_1Call { proposalId: p.id }.abi_encode(),
                    )?;
                    self.gov_events.push(GovEvent {
                        day: self.day,
                        what: format!("proposal {} succeeded and was queued", short(p.id)),
                    });
                }
                S::Queued => {
                    let eta: U256 =
                        self.view(GOVERNOR, IGovernor::proposalEtaCall { proposalId: p.id })?;
                    if U256::from(self.chain.now()) >= eta {
                        self.must(
                            council,
                            GOVERNOR,
                            U256::ZERO,
                            IGovernor::execute_1Call { proposalId: p.id }.abi_encode(),
                        )?;
                        self.gov_events.push(GovEvent {
                            day: self.day,
                            what: format!(
                                "proposal {} executed: contributors' share now {} bps",
                                short(p.id),
                                self.chain.params.fee_split.contributors_bps
                            ),
                        });
                        self.proposal = None;
                    }
                }
                other => {
                    self.gov_events.push(GovEvent {
                        day: self.day,
                        what: format!("proposal {} ended {:?}", short(p.id), other),
                    });
                    self.proposal = None;
                }
            }
            return Ok(());
        }
        let w = g.window_days;
        if self.day < 2 * w || !self.day.is_multiple_of(w) {
            return Ok(());
        }
        let last = self.contributions_between(self.day - w, self.day) as f64;
        let before = self.contributions_between(self.day - 2 * w, self.day - w) as f64;
        let stalled = last < before * (1.0 - g.stall_drop) || (last == 0.0 && before == 0.0);
        let split = self.chain.params.fee_split.clone();
        if !stalled || split.contributors_bps >= g.max_contributors_bps {
            return Ok(());
        }
        let step = g
            .step_bps
            .min(g.max_contributors_bps - split.contributors_bps)
            .min(split.model_owner_bps);
        if step == 0 {
            return Ok(());
        }
        let new = serde_json::json!({
            "platform_bps": split.platform_bps,
            "model_owner_bps": split.model_owner_bps - step,
            "stakers_bps": split.stakers_bps,
            "contributors_bps": split.contributors_bps + step,
        });
        let call = IParams::setParamCall {
            key: "fee_split".into(),
            jsonValue: new.to_string(),
        };
        let description = format!(
            "Day {}: contributions fell from {before} to {last} over {w} days; raise the contributors' share to {} bps",
            self.day,
            split.contributors_bps + step
        );
        let out = self.must(
            council,
            GOVERNOR,
            U256::ZERO,
            IGovernor::proposeCall {
                targets: vec![PARAMS],
                values: vec![U256::ZERO],
                calldatas: vec![Bytes::from(call.abi_encode())],
                description: description.clone(),
            }
            .abi_encode(),
        )?;
        let id = out
            .logs
            .iter()
            .find_map(|l| IGovernor::ProposalCreated::decode_log_data(&l.data).ok())
            .map(|c| c.proposalId)
            .ok_or("propose emitted no ProposalCreated")?;
        self.gov_events.push(GovEvent {
            day: self.day,
            what: format!("proposal {} created: {description}", short(id)),
        });
        self.proposal = Some(Proposal {
            id,
            day: self.day,
            contributors_bps: split.contributors_bps + step,
            voted: false,
        });
        Ok(())
    }
}

fn short(id: U256) -> String {
    let s = format!("{id:x}");
    format!("0x{}…", &s[..s.len().min(8)])
}
