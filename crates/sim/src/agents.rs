//! The data-side agent populations and their rules.
//!
//! - **Contributors** (at most `max` active at once) arrive at `arrival_per_day` × (expected reward / mean effort cost, capped
//!   at 2) per day, each bound to one datanet and buying `wallet_open` OPEN of gas money. An
//!   active contributor expects a new contribution to earn its datanet's recent contributor
//!   income per approved contribution per day (an exponential average with weight `reaction`)
//!   times `payback_days`, plus the subsidy bounty while it lasts. When that covers its own
//!   effort cost (log-normal around `effort_cost_open`) it submits with chance `activity`
//!   (rows uniform in `rows_min..=rows_max`, data quality normal(`quality_mean`, `quality_sd`));
//!   otherwise it leaves with chance `churn`. It stakes `reinvest_share` of its income once that
//!   reaches the chain's minimum stake. **Copiers** resubmit rows already in their datanet
//!   (the same rows root); the datanet module's duplicate guard refuses them.
//! - **Datanet owners** approve pending contributions of quality ≥ `min_quality` (paying the
//!   chain's approval fee) and reject the rest. The **foundation** pays `bounty_per_row_open`
//!   per approved row from the subsidy fund while `day < subsidy.days` and the fund lasts.
//! - **Model builders** (one per datanet) register a base model once, then train and register
//!   an adapter on the datanet's latest version when it holds `min_rows` quality-weighted rows,
//!   and again each time it has grown by `retrain_growth`, paying `training_cost_open` to a
//!   compute provider. Adapter quality comes from the fitted curve ([`crate::quality`]).
//! - **RLHF validators**: see [`crate::rlhf`].
//! - **App users** (at most `max` active at once) arrive at `arrival_per_day` × demand per day and leave with chance
//!   `churn` × (1 − quality); each makes Poisson(`requests_per_day` × demand) requests a day,
//!   where demand = quality^`quality_exponent` × (`reference_price_open` / price)^
//!   `price_elasticity`, to the best adapter of its datanet. Its builder records them in
//!   `recordInferences` batches (settled at once) from the user's prepaid credit (users approve
//!   the builder as operator), attributing `coverage` of each output to `attributions`
//!   contributions drawn in proportion to their quality-weighted rows.

use crate::sim::{agent_addr, kind, open, wei, Sim};
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_types::{
    abi::{IDatanet, IInference, IModel, IStaking},
    modules::{DATANET, INFERENCE, MODEL, STAKING},
};

/// One contributor.
#[derive(Clone, Debug)]
pub struct Contributor {
    pub addr: Address,
    pub datanet: usize,
    pub cost: f64,
    pub copier: bool,
    pub active: bool,
    /// Income not yet reinvested, OPEN.
    pub to_reinvest: f64,
    pub income: f64,
}

/// One approved contribution, as the simulator remembers it.
#[derive(Clone, Debug)]
pub struct Approved {
    pub cid: u64,
    pub rows_root: B256,
    /// Cumulative quality-weighted rows up to and including this one (for sampling).
    pub cum_weight: f64,
}

/// A pending contribution.
#[derive(Clone, Debug)]
pub struct Pending {
    pub cid: u64,
    pub contributor: usize,
    pub rows: u64,
    pub quality: f64,
    pub rows_root: B256,
}

/// A datanet and its owner.
#[derive(Clone, Debug)]
pub struct Datanet {
    pub id: u64,
    pub owner: Address,
    pub approved: Vec<Approved>,
    pub pending: Vec<Pending>,
    pub rows: u64,
    pub weighted_rows: f64,
    pub version: u64,
    /// Exponential average of contributor income per approved contribution per day, OPEN.
    pub yield_ema: f64,
    /// Contributor income from this datanet's adapter today, wei.
    pub paid_today: U256,
    pub active_contributors: u32,
}

/// A served adapter.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub id: u64,
    pub quality: f64,
    /// Approved contributions it was trained on (a prefix of the datanet's list).
    pub trained_on: usize,
    pub weighted_rows: f64,
}

/// A model builder and serving operator.
#[derive(Clone, Debug)]
pub struct Builder {
    pub addr: Address,
    pub adapter: Option<Adapter>,
}

/// An app user.
#[derive(Clone, Debug)]
pub struct User {
    pub addr: Address,
    pub datanet: usize,
    pub active: bool,
    pub credit: U256,
}

/// A staker.
#[derive(Clone, Debug, Default)]
pub struct Staker {
    pub addr: Address,
    pub stake: U256,
    pub unbonding: U256,
    pub release: u64,
}

/// OPEN an agent keeps for the gas of its next transactions.
fn gas_reserve() -> U256 {
    wei(0.01)
}

fn encode<C: SolCall>(c: C) -> Vec<u8> {
    c.abi_encode()
}

impl Sim {
    /// `owner` creates a (text, public) datanet named `name` through the datanet module, and the
    /// simulator starts tracking it with contributors' reward expectation `yield_ema`.
    pub(crate) fn create_datanet(
        &mut self,
        owner: Address,
        name: String,
        yield_ema: f64,
    ) -> Result<(), String> {
        let out = self.must(
            owner,
            DATANET,
            U256::ZERO,
            encode(IDatanet::createDatanetCall {
                name,
                summary: String::new(),
                description: String::new(),
                tags: vec!["sim".into()],
                dataType: 0,
                licence: "CC-BY-4.0".into(),
                permissioned: false,
            }),
        )?;
        let id = IDatanet::createDatanetCall::abi_decode_returns(&out.output)
            .map_err(|e| e.to_string())?;
        self.datanets.push(Datanet {
            id,
            owner,
            approved: Vec::new(),
            pending: Vec::new(),
            rows: 0,
            weighted_rows: 0.0,
            version: 0,
            yield_ema,
            paid_today: U256::ZERO,
            active_contributors: 0,
        });
        Ok(())
    }

    /// Day 0: datanets with their owners, builders and the base model, the staker population,
    /// the council's stake, the initial contributors and users.
    pub(crate) fn setup(&mut self) -> Result<(), String> {
        let ex = agent_addr(kind::EXCHANGE, 0);
        for d in 0..self.sc.datanets.count {
            let owner = agent_addr(kind::OWNER, d);
            self.pay(ex, owner, wei(self.sc.datanets.owner_wallet_open))?;
            let yield_ema =
                self.sc.contributors.prior_reward_open / self.sc.contributors.payback_days;
            self.create_datanet(owner, format!("sim datanet {d}"), yield_ema)?;
            let b = agent_addr(kind::BUILDER, d);
            self.pay(ex, b, wei(self.sc.builders.wallet_open))?;
            self.builders.push(Builder {
                addr: b,
                adapter: None,
            });
        }
        let b0 = self.builders[0].addr;
        let out = self.must(
            b0,
            MODEL,
            U256::ZERO,
            encode(IModel::registerBaseModelCall {
                modelHash: keccak256("SmolLM2-135M-Instruct"),
                name: "SmolLM2-135M-Instruct".into(),
            }),
        )?;
        self.base_model = IModel::registerBaseModelCall::abi_decode_returns(&out.output)
            .map_err(|e| e.to_string())?;
        for i in 0..self.sc.stakers.count {
            let a = agent_addr(kind::STAKER, i);
            self.pay(ex, a, wei(self.sc.stakers.wallet_open))?;
            self.stakers.push(crate::agents::Staker {
                addr: a,
                ..Default::default()
            });
        }
        self.council()?;
        for _ in 0..self.sc.contributors.initial {
            self.add_contributor()?;
        }
        for _ in 0..self.sc.users.initial {
            self.add_user()?;
        }
        self.setup_validators()
    }

    /// The governance council's stake (when governance is on).
    pub(crate) fn council(&mut self) -> Result<(), String> {
        if self.sc.governance.enabled {
            let council = agent_addr(kind::COUNCIL, 0);
            let stake = wei(self.sc.governance.council_stake_open);
            self.pay(agent_addr(kind::EXCHANGE, 0), council, stake + wei(100.0))?;
            if stake >= self.chain.params.min_stake {
                self.must(council, STAKING, stake, encode(IStaking::stakeCall {}))?;
            }
        }
        Ok(())
    }

    pub(crate) fn add_contributor(&mut self) -> Result<(), String> {
        let k = self.sc.contributors.clone();
        let datanet = (self.uniform() * self.datanets.len() as f64) as usize % self.datanets.len();
        let copier = self.uniform() < k.copier_share;
        self.add_contributor_as(datanet, copier, wei(k.wallet_open))
    }

    /// A contributor of `datanet` holding `wallet`; its effort cost is drawn.
    pub(crate) fn add_contributor_as(
        &mut self,
        datanet: usize,
        copier: bool,
        wallet: U256,
    ) -> Result<(), String> {
        let idx = self.contributors.len() as u32;
        let addr = agent_addr(kind::CONTRIBUTOR, idx);
        let k = self.sc.contributors.clone();
        let cost = k.effort_cost_open
            * (k.effort_cost_sigma * self.normal() - k.effort_cost_sigma.powi(2) / 2.0).exp();
        self.pay(agent_addr(kind::EXCHANGE, 0), addr, wallet)?;
        self.contributors.push(Contributor {
            addr,
            datanet,
            cost,
            copier,
            active: true,
            to_reinvest: 0.0,
            income: 0.0,
        });
        Ok(())
    }

    pub(crate) fn add_user(&mut self) -> Result<(), String> {
        let datanet = (self.uniform() * self.datanets.len() as f64) as usize % self.datanets.len();
        self.add_user_as(datanet, U256::ZERO, wei(self.sc.users.deposit_open))
    }

    /// A user of `datanet` holding `balance` besides `deposit` of inference credit.
    pub(crate) fn add_user_as(
        &mut self,
        datanet: usize,
        balance: U256,
        deposit: U256,
    ) -> Result<(), String> {
        let idx = self.users.len() as u32;
        let addr = agent_addr(kind::USER, idx);
        self.pay(
            agent_addr(kind::EXCHANGE, 0),
            addr,
            deposit + balance.max(wei(0.1)),
        )?;
        let operator = self.builders[datanet].addr;
        self.must(
            addr,
            INFERENCE,
            U256::ZERO,
            encode(IInference::approveOperatorCall {
                operator,
                allowance: U256::from(u128::MAX),
            }),
        )?;
        self.must(addr, INFERENCE, deposit, encode(IInference::depositCall {}))?;
        self.users.push(User {
            addr,
            datanet,
            active: true,
            credit: deposit,
        });
        Ok(())
    }

    /// What an active contributor of datanet `d` expects one contribution to earn, OPEN.
    fn expected_reward(&self, d: usize) -> f64 {
        let k = &self.sc.contributors;
        let mut e = self.datanets[d].yield_ema * k.payback_days;
        if self.subsidy_active() {
            e += self.sc.subsidy.bounty_per_row_open * (k.rows_min + k.rows_max) as f64 / 2.0;
        }
        e
    }

    fn subsidy_active(&self) -> bool {
        self.day < self.sc.subsidy.days
            && self.chain.balance(&agent_addr(kind::FOUNDATION, 0)) > gas_reserve()
    }

    pub(crate) fn contributor_arrivals(&mut self) -> Result<(), String> {
        let k = self.sc.contributors.clone();
        let best = (0..self.datanets.len())
            .map(|d| self.expected_reward(d))
            .fold(0.0, f64::max);
        let rate = k.arrival_per_day * (best / k.effort_cost_open).min(2.0);
        let n = self.poisson(rate);
        let active = self.contributors.iter().filter(|c| c.active).count() as u32;
        for _ in 0..n.min(k.max.saturating_sub(active) as u64) {
            self.add_contributor()?;
        }
        Ok(())
    }

    pub(crate) fn user_arrivals(&mut self) -> Result<(), String> {
        let q = self.best_quality();
        let n = self.poisson(self.sc.users.arrival_per_day * self.demand(q));
        let active = self.users.iter().filter(|u| u.active).count() as u32;
        for _ in 0..n.min(self.sc.users.max.saturating_sub(active) as u64) {
            self.add_user()?;
        }
        Ok(())
    }

    /// The best adapter quality over all datanets.
    pub fn best_quality(&self) -> f64 {
        self.builders
            .iter()
            .filter_map(|b| b.adapter.as_ref().map(|a| a.quality))
            .fold(0.0, f64::max)
    }

    /// The price of one request at the governed prices, wei.
    fn request_fee(&self) -> U256 {
        let u = &self.sc.users;
        let p = &self.chain.params;
        p.price_per_prompt_token * U256::from(u.prompt_tokens)
            + p.price_per_completion_token * U256::from(u.completion_tokens)
    }

    /// Demand at quality `q` and the governed price, relative to quality 1 at the reference.
    fn demand(&self, q: f64) -> f64 {
        let u = &self.sc.users;
        let price = open(self.request_fee()).max(1e-12);
        q.powf(u.quality_exponent) * (u.reference_price_open / price).powf(u.price_elasticity)
    }

    pub(crate) fn contribute(&mut self) -> Result<(), String> {
        let k = self.sc.contributors.clone();
        let expected: Vec<f64> = (0..self.datanets.len())
            .map(|d| self.expected_reward(d))
            .collect();
        for d in &mut self.datanets {
            d.active_contributors = 0;
        }
        for i in 0..self.contributors.len() {
            let c = self.contributors[i].clone();
            if !c.active {
                continue;
            }
            if !c.copier && expected[c.datanet] < c.cost {
                if self.uniform() < k.churn {
                    self.contributors[i].active = false;
                }
                continue;
            }
            self.datanets[c.datanet].active_contributors += 1;
            if self.uniform() >= k.activity {
                continue;
            }
            let dn = self.datanets[c.datanet].id;
            if c.copier {
                let n = self.datanets[c.datanet].approved.len();
                if n == 0 {
                    continue;
                }
                let pick = (self.uniform() * n as f64) as usize % n;
                let root = self.datanets[c.datanet].approved[pick].rows_root;
                let data = encode(IDatanet::contributeCall {
                    datanetId: dn,
                    rowsRoot: root,
                    rowCount: k.rows_max,
                    byteSize: k.rows_max * 300,
                    score: 9000,
                    metadataUri: String::new(),
                });
                match self.chain.send(c.addr, DATANET, U256::ZERO, data) {
                    Err(e) if e.to_string().contains("already contributed") => {
                        self.today.duplicates_refused += 1;
                    }
                    Err(e) => {
                        return Err(format!(
                            "a copier's contribution was refused for another reason: {e}"
                        ))
                    }
                    Ok(_) => {
                        return Err(
                            "a copied contribution was accepted: the duplicate guard failed".into(),
                        )
                    }
                }
                continue;
            }
            let rows = self.rng_range(k.rows_min, k.rows_max);
            let quality = (k.quality_mean + k.quality_sd * self.normal()).clamp(0.0, 1.0);
            let rows_root = match &self.sc.start {
                None => keccak256(format!("rows of contributor {i} on day {}", self.day)),
                // Apart from the imported rows (a simulated chain's too).
                Some(s) => keccak256(format!(
                    "rows of contributor {i} on day {} after block {}",
                    self.day, s.block
                )),
            };
            let out = self.must(
                c.addr,
                DATANET,
                U256::ZERO,
                encode(IDatanet::contributeCall {
                    datanetId: dn,
                    rowsRoot: rows_root,
                    rowCount: rows,
                    byteSize: rows * 300,
                    score: ((quality * 10_000.0).round() as u16)
                        .max(self.chain.params.min_contribution_score),
                    metadataUri: String::new(),
                }),
            )?;
            let cid = IDatanet::contributeCall::abi_decode_returns(&out.output)
                .map_err(|e| e.to_string())?;
            self.datanets[c.datanet].pending.push(Pending {
                cid,
                contributor: i,
                rows,
                quality,
                rows_root,
            });
            self.today.submitted += 1;
        }
        Ok(())
    }

    fn rng_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.uniform() * (hi - lo + 1) as f64) as u64 % (hi - lo + 1)
    }

    pub(crate) fn approve_and_subsidise(&mut self) -> Result<(), String> {
        let foundation = agent_addr(kind::FOUNDATION, 0);
        for d in 0..self.datanets.len() {
            let pending = std::mem::take(&mut self.datanets[d].pending);
            let owner = self.datanets[d].owner;
            for p in pending {
                if p.quality < self.sc.datanets.min_quality {
                    self.must(
                        owner,
                        DATANET,
                        U256::ZERO,
                        encode(IDatanet::rejectCall {
                            contributionId: p.cid,
                            reason: "below the quality bar".into(),
                        }),
                    )?;
                    self.today.rejected += 1;
                    continue;
                }
                let out = self.must(
                    owner,
                    DATANET,
                    U256::ZERO,
                    encode(IDatanet::approveCall {
                        contributionId: p.cid,
                    }),
                )?;
                let r = IDatanet::approveCall::abi_decode_returns(&out.output)
                    .map_err(|e| e.to_string())?;
                let dn = &mut self.datanets[d];
                dn.version = r.version;
                dn.rows += p.rows;
                dn.weighted_rows += p.rows as f64 * p.quality;
                dn.approved.push(Approved {
                    cid: p.cid,
                    rows_root: p.rows_root,
                    cum_weight: dn.weighted_rows,
                });
                self.today.approved += 1;
                if self.subsidy_active() {
                    let want = wei(self.sc.subsidy.bounty_per_row_open * p.rows as f64);
                    // The fund pays its own gas: it keeps a small reserve for it.
                    let bounty = want.min(
                        self.chain
                            .balance(&foundation)
                            .saturating_sub(gas_reserve()),
                    );
                    if !bounty.is_zero() {
                        let to = self.contributors[p.contributor].addr;
                        self.pay(foundation, to, bounty)?;
                        self.today.subsidy += bounty;
                        let c = &mut self.contributors[p.contributor];
                        c.income += open(bounty);
                        c.to_reinvest += open(bounty) * self.sc.contributors.reinvest_share;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn train(&mut self) -> Result<(), String> {
        let b = self.sc.builders.clone();
        for d in 0..self.datanets.len() {
            let dn = &self.datanets[d];
            let due = match &self.builders[d].adapter {
                None => dn.weighted_rows >= b.min_rows.max(1.0),
                Some(a) => {
                    dn.weighted_rows >= a.weighted_rows * (1.0 + b.retrain_growth)
                        && dn.weighted_rows > a.weighted_rows
                }
            };
            if !due {
                continue;
            }
            let (id, version, weighted, trained_on) =
                (dn.id, dn.version, dn.weighted_rows, dn.approved.len());
            let builder = self.builders[d].addr;
            let cost = wei(b.training_cost_open);
            if self.chain.balance(&builder) < cost + wei(1.0) {
                continue;
            }
            if !cost.is_zero() {
                self.pay(builder, agent_addr(kind::COMPUTE, 0), cost)?;
            }
            let name = format!("sim-d{id}-v{version}");
            let out = self.must(
                builder,
                MODEL,
                U256::ZERO,
                encode(IModel::registerAdapterCall {
                    baseModelId: self.base_model,
                    name: name.clone(),
                    datanetIds: vec![id],
                    datanetVersions: vec![version],
                    trainingConfigHash: keccak256("lora r8"),
                    adapterHash: keccak256(&name),
                    attributionIndexRoot: keccak256(format!("index {name}")),
                }),
            )?;
            let aid = IModel::registerAdapterCall::abi_decode_returns(&out.output)
                .map_err(|e| e.to_string())?;
            self.builders[d].adapter = Some(Adapter {
                id: aid,
                quality: crate::quality::quality(&self.sc.quality, weighted),
                trained_on,
                weighted_rows: weighted,
            });
            self.today.trainings += 1;
        }
        Ok(())
    }

    /// Draws the attribution of one output: up to `attributions` distinct contributions of the
    /// first `n` approved ones, in proportion to their quality-weighted rows.
    fn attribution(&mut self, d: usize, n: usize) -> Vec<IInference::Attribution> {
        let k = self.sc.builders.attributions as usize;
        let total = self.datanets[d].approved[n - 1].cum_weight;
        let mut picked: Vec<(u64, f64)> = Vec::with_capacity(k);
        for _ in 0..k * 3 {
            if picked.len() == k.min(n) {
                break;
            }
            let x = self.uniform() * total;
            let approved = &self.datanets[d].approved[..n];
            let i = approved.partition_point(|a| a.cum_weight <= x).min(n - 1);
            let w = approved[i].cum_weight
                - if i == 0 {
                    0.0
                } else {
                    approved[i - 1].cum_weight
                };
            let cid = approved[i].cid;
            if !picked.iter().any(|p| p.0 == cid) {
                picked.push((cid, w));
            }
        }
        let sum: f64 = picked.iter().map(|p| p.1).sum::<f64>().max(1e-12);
        let ppm = self.sc.builders.coverage * 1e6;
        picked
            .into_iter()
            .map(|(cid, w)| IInference::Attribution {
                contributionId: cid,
                weightPpm: (ppm * w / sum).floor() as u32,
            })
            .collect()
    }

    pub(crate) fn serve(&mut self) -> Result<(), String> {
        let fee = self.request_fee();
        let u = self.sc.users.clone();
        let mut batches: Vec<Vec<IInference::InferenceRecord>> =
            vec![Vec::new(); self.datanets.len()];
        for i in 0..self.users.len() {
            if !self.users[i].active {
                continue;
            }
            let d = self.users[i].datanet;
            let Some(a) = self.builders[d].adapter.clone() else {
                if self.uniform() < u.churn {
                    self.users[i].active = false;
                }
                continue;
            };
            if self.uniform() < u.churn * (1.0 - a.quality) {
                self.users[i].active = false;
                continue;
            }
            let n = self.poisson(u.requests_per_day * self.demand(a.quality));
            for _ in 0..n {
                if self.users[i].credit < fee {
                    let top = wei(u.deposit_open).max(fee);
                    let addr = self.users[i].addr;
                    self.pay(agent_addr(kind::EXCHANGE, 0), addr, top + wei(0.01))?;
                    self.must(addr, INFERENCE, top, encode(IInference::depositCall {}))?;
                    self.users[i].credit += top;
                }
                self.users[i].credit -= fee;
                let top = self.attribution(d, a.trained_on);
                let request = self.next_request;
                self.next_request += 1;
                batches[d].push(IInference::InferenceRecord {
                    requestId: B256::from(U256::from(request)),
                    caller: self.users[i].addr,
                    adapterId: a.id,
                    promptTokens: u.prompt_tokens,
                    completionTokens: u.completion_tokens,
                    top,
                    attributionRoot: attribution_root(request),
                });
            }
        }
        let max = self.chain.params.max_settle_batch as usize;
        for (d, records) in batches.into_iter().enumerate() {
            let builder = self.builders[d].addr;
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                let chunk: Vec<_> = records.by_ref().take(max).collect();
                let n = chunk.len() as u64;
                let out = self.must(
                    builder,
                    INFERENCE,
                    U256::ZERO,
                    encode(IInference::recordInferencesCall {
                        records: chunk,
                        settleNow: true,
                    }),
                )?;
                self.today.inferences += n;
                self.today.fees += fee * U256::from(n);
                let q = self.builders[d].adapter.as_ref().map_or(0.0, |a| a.quality);
                self.note_receipts(&out.output, q);
                self.read_settlement(d, &out.logs);
            }
        }
        Ok(())
    }

    /// Books what a settlement paid: contributors (by their ContributorPaid logs), the model
    /// owner and the stakers pool (FeeSettled).
    fn read_settlement(&mut self, d: usize, logs: &[alloy_primitives::Log]) {
        use alloy_sol_types::SolEvent;
        for l in logs {
            let topics = l.data.topics();
            match topics.first() {
                Some(t)
                    if *t == IInference::ContributorPaid::SIGNATURE_HASH && topics.len() == 4 =>
                {
                    let amount = U256::from_be_slice(&l.data.data[..32.min(l.data.data.len())]);
                    let who = Address::from_word(topics[3]);
                    self.today.contributor_income += amount;
                    self.datanets[d].paid_today += amount;
                    if let Some((kind::CONTRIBUTOR, i)) = crate::sim::agent_of(&who) {
                        if let Some(c) = self.contributors.get_mut(i as usize) {
                            let amount = open(amount);
                            c.income += amount;
                            c.to_reinvest += amount * self.sc.contributors.reinvest_share;
                        }
                    }
                }
                Some(t)
                    if *t == IInference::FeeSettled::SIGNATURE_HASH && l.data.data.len() >= 128 =>
                {
                    let w = |i: usize| U256::from_be_slice(&l.data.data[i * 32..i * 32 + 32]);
                    self.today.owner_income += w(1);
                    self.today.staker_rewards += w(2);
                }
                _ => {}
            }
        }
    }

    pub(crate) fn reinvest(&mut self) -> Result<(), String> {
        let min = open(self.chain.params.min_stake);
        for i in 0..self.contributors.len() {
            let c = &self.contributors[i];
            if c.to_reinvest < min.max(1e-9) {
                continue;
            }
            let amount = wei(c.to_reinvest);
            let addr = c.addr;
            if self.chain.balance(&addr) < amount + wei(0.01) {
                continue;
            }
            self.must(addr, STAKING, amount, encode(IStaking::stakeCall {}))?;
            self.contributors[i].to_reinvest = 0.0;
        }
        Ok(())
    }
}

/// The attribution root a simulated inference commits to. The simulator draws only the top
/// contributions it pays (there is no longer list behind them to commit to), so the root is a
/// placeholder: distinct per request, tagged so no one mistakes it for a real commitment, and
/// free to compute (a keccak per inference was ~9% of a year's instructions).
pub fn attribution_root(request: u64) -> B256 {
    let mut root = [0u8; 32];
    root[..16].copy_from_slice(b"sim placeholder:");
    root[24..].copy_from_slice(&request.to_be_bytes());
    B256::from(root)
}
