//! The import: rebuilding a [`ChainStart`] in the simulated chain through real transactions
//! (the order and rules are in the [parent module](super)'s documentation).

use super::{ChainStart, StartBaseModel, StartContribution, MAX_IMPORT_DAYS};
use crate::{
    agents::{Adapter, Approved, Pending},
    sim::{agent_addr, kind, wei, Sim},
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_types::{
    abi::{IDatanet, IModel, IStaking},
    modules::{DATANET, MODEL, STAKING},
    Params,
};
use std::collections::BTreeMap;

/// Gas OPEN one call costs at most, with `calldata` bytes.
fn gas_cost(p: &Params, call: &str, calldata: u64) -> U256 {
    let gas = p.tx_base_gas
        + p.call_gas.get(call).copied().unwrap_or(100_000)
        + calldata * p.calldata_nonzero_byte_gas;
    U256::from(gas) * U256::from(p.min_gas_price_wei)
}

fn encode<C: SolCall>(c: C) -> Vec<u8> {
    c.abi_encode()
}

impl Sim {
    /// Rebuilds `start` in the simulated chain (see the module documentation), then adds the
    /// scenario's own agents up to its population sizes.
    pub(crate) fn import(&mut self, st: &ChainStart) -> Result<(), String> {
        let ex = agent_addr(kind::EXCHANGE, 0);
        let p = self.chain.params.clone();
        let k = self.sc.contributors.clone();
        // Contributor agents: one per node address, in order of first contribution.
        let mut contributor_of: BTreeMap<Address, usize> = BTreeMap::new();
        let mut firsts: Vec<(Address, usize, u64)> = Vec::new(); // (address, datanet, count)
        for (d, dn) in st.datanets.iter().enumerate() {
            for c in &dn.contributions {
                let next = firsts.len();
                let i = *contributor_of.entry(c.contributor).or_insert(next);
                if i == next {
                    firsts.push((c.contributor, d, 0));
                }
                firsts[i].2 += 1;
            }
        }
        // Datanets: the node's, then new ones up to datanets.count.
        let total = (st.datanets.len() as u32).max(self.sc.datanets.count);
        for d in 0..total {
            let owner = agent_addr(kind::OWNER, d);
            let mut wallet = wei(self.sc.datanets.owner_wallet_open);
            let name = match st.datanets.get(d as usize) {
                Some(dn) => {
                    wallet = wallet.max(st.balance(&dn.owner));
                    for c in &dn.contributions {
                        let call = if c.status == 2 { "reject" } else { "approve" };
                        wallet += gas_cost(&p, call, 256);
                        if c.status == 1 {
                            wallet +=
                                openledger_state::modules::datanet::approval_fee(&p, c.byte_size)
                                    .map_err(|e| e.to_string())?;
                        }
                    }
                    dn.name.clone()
                }
                None => format!("sim datanet {d}"),
            };
            self.pay(ex, owner, wallet)?;
            self.create_datanet(owner, name, k.prior_reward_open / k.payback_days)?;
            let b = agent_addr(kind::BUILDER, d);
            let bw = wei(self.sc.builders.wallet_open).max(
                st.adapters
                    .iter()
                    .find(|a| a.datanet_ids.first() == st.datanets.get(d as usize).map(|x| &x.id))
                    .map(|a| st.balance(&a.owner))
                    .unwrap_or_default(),
            );
            self.pay(ex, b, bw)?;
            self.builders.push(crate::agents::Builder {
                addr: b,
                adapter: None,
            });
        }
        // Base models: the node's, or the default one.
        let b0 = self.builders[0].addr;
        let mut base_of: BTreeMap<u64, u64> = BTreeMap::new();
        let defaults = [StartBaseModel {
            id: 0,
            owner: Address::ZERO,
            model_hash: alloy_primitives::keccak256("SmolLM2-135M-Instruct"),
            name: "SmolLM2-135M-Instruct".into(),
        }];
        let bases = if st.base_models.is_empty() {
            &defaults[..]
        } else {
            &st.base_models[..]
        };
        for m in bases {
            let out = self.must(
                b0,
                MODEL,
                U256::ZERO,
                encode(IModel::registerBaseModelCall {
                    modelHash: m.model_hash,
                    name: m.name.clone(),
                }),
            )?;
            let id = IModel::registerBaseModelCall::abi_decode_returns(&out.output)
                .map_err(|e| e.to_string())?;
            base_of.insert(m.id, id);
            if self.base_model == 0 {
                self.base_model = id;
            }
        }
        // Stakers: the node's, with their stake.
        for (i, s) in st.stakers.iter().enumerate() {
            let a = agent_addr(kind::STAKER, i as u32);
            let stake = if s.stake.0 >= p.min_stake {
                s.stake.0
            } else {
                U256::ZERO
            };
            self.pay(ex, a, st.balance(&s.address).max(wei(1.0)) + stake)?;
            if !stake.is_zero() {
                self.must(a, STAKING, stake, encode(IStaking::stakeCall {}))?;
            }
            self.stakers.push(crate::agents::Staker {
                addr: a,
                stake,
                ..Default::default()
            });
        }
        for i in st.stakers.len() as u32..self.sc.stakers.count {
            let a = agent_addr(kind::STAKER, i);
            self.pay(ex, a, wei(self.sc.stakers.wallet_open))?;
            self.stakers.push(crate::agents::Staker {
                addr: a,
                ..Default::default()
            });
        }
        self.council()?;
        // Contributors, then their contributions over as many days as the quotas need.
        for (addr, d, n) in &firsts {
            let wallet = st.balance(addr).max(wei(k.wallet_open))
                + gas_cost(&p, "contribute", 400) * U256::from(*n);
            self.add_contributor_as(*d, false, wallet)?;
        }
        let mut day = 0u64;
        let mut quota: BTreeMap<(usize, Address), (u32, u64)> = BTreeMap::new();
        let mut submitted: Vec<(usize, usize, &StartContribution, u64)> = Vec::new();
        let mut order: Vec<(usize, &StartContribution)> = st
            .datanets
            .iter()
            .enumerate()
            .flat_map(|(d, dn)| dn.contributions.iter().map(move |c| (d, c)))
            .collect();
        order.sort_by_key(|(_, c)| c.id);
        for (d, c) in order {
            if c.byte_size > p.max_daily_contribution_bytes || p.max_daily_contributions == 0 {
                return Err(format!(
                    "contribution {} ({} bytes) cannot be submitted under the node's daily quota ({} contributions, {} bytes)",
                    c.id, c.byte_size, p.max_daily_contributions, p.max_daily_contribution_bytes
                ));
            }
            loop {
                let q = quota.get(&(d, c.contributor)).copied().unwrap_or_default();
                if q.0 < p.max_daily_contributions
                    && q.1 + c.byte_size <= p.max_daily_contribution_bytes
                {
                    break;
                }
                day += 1;
                quota.clear();
                if day >= MAX_IMPORT_DAYS {
                    return Err(format!(
                        "importing the node's contributions needs more than {MAX_IMPORT_DAYS} days of daily quota"
                    ));
                }
            }
            let q = quota.entry((d, c.contributor)).or_default();
            q.0 += 1;
            q.1 += c.byte_size;
            self.chain.start_day(day);
            let i = contributor_of[&c.contributor];
            let out = self.must(
                self.contributors[i].addr,
                DATANET,
                U256::ZERO,
                encode(IDatanet::contributeCall {
                    datanetId: self.datanets[d].id,
                    rowsRoot: c.rows_root,
                    rowCount: c.row_count,
                    byteSize: c.byte_size,
                    score: c.score.max(p.min_contribution_score),
                    metadataUri: String::new(),
                }),
            )?;
            let cid = IDatanet::contributeCall::abi_decode_returns(&out.output)
                .map_err(|e| e.to_string())?;
            submitted.push((d, i, c, cid));
        }
        // Approvals in version order, rejections, pending ones left to the owners' rule.
        submitted.sort_by_key(|(d, _, c, _)| (*d, c.status != 1, c.version, c.id));
        for (d, i, c, cid) in submitted {
            let owner = self.datanets[d].owner;
            let quality = c.score as f64 / 10_000.0;
            match c.status {
                1 => {
                    let out = self.must(
                        owner,
                        DATANET,
                        U256::ZERO,
                        encode(IDatanet::approveCall {
                            contributionId: cid,
                        }),
                    )?;
                    let r = IDatanet::approveCall::abi_decode_returns(&out.output)
                        .map_err(|e| e.to_string())?;
                    let dn = &mut self.datanets[d];
                    dn.version = r.version;
                    dn.rows += c.row_count;
                    dn.weighted_rows += c.row_count as f64 * quality;
                    dn.approved.push(Approved {
                        cid,
                        rows_root: c.rows_root,
                        cum_weight: dn.weighted_rows,
                    });
                }
                2 => {
                    self.must(
                        owner,
                        DATANET,
                        U256::ZERO,
                        encode(IDatanet::rejectCall {
                            contributionId: cid,
                            reason: "rejected on the node".into(),
                        }),
                    )?;
                }
                _ => self.datanets[d].pending.push(Pending {
                    cid,
                    contributor: i,
                    rows: c.row_count,
                    quality,
                    rows_root: c.rows_root,
                }),
            }
        }
        // Adapters, each by the builder of its first datanet.
        for a in &st.adapters {
            let Some(d) = a
                .datanet_ids
                .first()
                .and_then(|id| st.datanets.iter().position(|x| x.id == *id))
            else {
                continue;
            };
            let ids = a
                .datanet_ids
                .iter()
                .map(|id| {
                    let j = st.datanets.iter().position(|x| x.id == *id).unwrap_or(d);
                    self.datanets[j].id
                })
                .collect();
            let base = base_of
                .get(&a.base_model_id)
                .copied()
                .unwrap_or(self.base_model);
            let out = self.must(
                self.builders[d].addr,
                MODEL,
                U256::ZERO,
                encode(IModel::registerAdapterCall {
                    baseModelId: base,
                    name: a.name.clone(),
                    datanetIds: ids,
                    datanetVersions: a.datanet_versions.clone(),
                    trainingConfigHash: a.training_config_hash,
                    adapterHash: a.adapter_hash,
                    attributionIndexRoot: a.attribution_index_root,
                }),
            )?;
            let aid = IModel::registerAdapterCall::abi_decode_returns(&out.output)
                .map_err(|e| e.to_string())?;
            let v = a.datanet_versions[0] as usize;
            if v == 0 {
                continue;
            }
            let weighted = self.datanets[d].approved[v - 1].cum_weight;
            self.builders[d].adapter = Some(Adapter {
                id: aid,
                quality: crate::quality::quality(&self.sc.quality, weighted),
                trained_on: v,
                weighted_rows: weighted,
            });
        }
        // Users: receipts' callers with their credit.
        for u in &st.users {
            let d = st
                .adapters
                .iter()
                .find(|a| a.id == u.adapter_id)
                .and_then(|a| a.datanet_ids.first())
                .and_then(|id| st.datanets.iter().position(|x| x.id == *id))
                .unwrap_or(0);
            let credit = if u.credit.0.is_zero() {
                wei(self.sc.users.deposit_open)
            } else {
                u.credit.0
            };
            self.add_user_as(d, st.balance(&u.address), credit)?;
        }
        for _ in firsts.len() as u32..k.initial {
            self.add_contributor()?;
        }
        for _ in st.users.len() as u32..self.sc.users.initial {
            self.add_user()?;
        }
        self.setup_validators()?;
        self.chain.day_offset = day + 1;
        Ok(())
    }
}
