//! Reading a chain's current state into a [`ChainStart`] through what any node answers: the
//! modules' view functions (`eth_call`), balances, and the addresses that ever staked (a node
//! finds them in its `Staked` logs). [`ChainSource`] is that access; the CLI implements it
//! over JSON-RPC, tests over a simulated chain.

use super::{
    ChainStart, Open, StartAccount, StartAdapter, StartBaseModel, StartContribution, StartDatanet,
    StartUser, MAX_CONTRIBUTIONS,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_types::{
    abi::{IDatanet, IInference, IModel, IParams, IStaking},
    modules::{DATANET, INFERENCE, MODEL, PARAMS, STAKING},
    Params,
};
use std::collections::BTreeMap;

/// Most recent receipts read to find inference users.
pub const MAX_RECEIPTS: u64 = 10_000;

/// Read access to a chain at its head.
pub trait ChainSource {
    /// `eth_call` of `data` on `to`: the raw return bytes.
    fn call(&mut self, to: Address, data: Vec<u8>) -> Result<Vec<u8>, String>;
    /// An account's OPEN balance, wei.
    fn balance(&mut self, who: Address) -> Result<U256, String>;
    /// Every address that ever staked, in any order (duplicates allowed).
    fn stakers(&mut self) -> Result<Vec<Address>, String>;
    /// The chain id, the head block's number and its timestamp.
    fn head(&mut self) -> Result<(u64, u64, u64), String>;
}

fn view<C: SolCall>(src: &mut dyn ChainSource, to: Address, c: C) -> Result<C::Return, String> {
    let name = std::any::type_name::<C>()
        .rsplit("::")
        .next()
        .unwrap_or("view");
    let out = src
        .call(to, c.abi_encode())
        .map_err(|e| format!("{name} on {to}: {e}"))?;
    C::abi_decode_returns(&out).map_err(|e| format!("{name} on {to}: bad answer: {e}"))
}

/// Reads the chain's state; `source` names it in the result (e.g. the RPC URL).
pub fn read(src: &mut dyn ChainSource, source: &str) -> Result<ChainStart, String> {
    let (chain_id, block, timestamp) = src.head()?;
    let json = view(src, PARAMS, IParams::paramsJsonCall {})?;
    let params: Params =
        serde_json::from_str(&json).map_err(|e| format!("the node's paramsJson: {e}"))?;
    let mut total = 0usize;
    let mut datanets = Vec::new();
    for id in 1..=view(src, DATANET, IDatanet::datanetCountCall {})? {
        let info = view(src, DATANET, IDatanet::getDatanetCall { datanetId: id })?;
        let n = view(
            src,
            DATANET,
            IDatanet::contributionCountOfCall { datanetId: id },
        )?;
        total += n as usize;
        if total > MAX_CONTRIBUTIONS {
            return Err(format!(
                "the chain holds more than {MAX_CONTRIBUTIONS} contributions, more than the simulator imports"
            ));
        }
        let mut contributions = Vec::with_capacity(n as usize);
        let mut offset = 0;
        while offset < n {
            let ids = view(
                src,
                DATANET,
                IDatanet::contributionsOfCall {
                    datanetId: id,
                    offset,
                    limit: 1000,
                },
            )?;
            if ids.is_empty() {
                break;
            }
            offset += ids.len() as u64;
            for cid in ids {
                let c = view(
                    src,
                    DATANET,
                    IDatanet::getContributionCall {
                        contributionId: cid,
                    },
                )?;
                contributions.push(StartContribution {
                    id: c.id,
                    contributor: c.contributor,
                    rows_root: c.rowsRoot,
                    row_count: c.rowCount,
                    byte_size: c.byteSize,
                    score: c.score,
                    status: c.status,
                    version: c.version,
                });
            }
        }
        contributions.sort_by_key(|c| c.id);
        datanets.push(StartDatanet {
            id,
            owner: info.owner,
            name: info.name,
            contributions,
        });
    }
    let mut base_models = Vec::new();
    for id in 1..=view(src, MODEL, IModel::baseModelCountCall {})? {
        let m = view(src, MODEL, IModel::getBaseModelCall { modelId: id })?;
        base_models.push(StartBaseModel {
            id: m.id,
            owner: m.owner,
            model_hash: m.modelHash,
            name: m.name,
        });
    }
    let mut adapters = Vec::new();
    for id in 1..=view(src, MODEL, IModel::adapterCountCall {})? {
        let a = view(src, MODEL, IModel::getAdapterCall { adapterId: id })?;
        adapters.push(StartAdapter {
            id: a.id,
            owner: a.owner,
            name: a.name,
            base_model_id: a.baseModelId,
            datanet_ids: a.datanetIds,
            datanet_versions: a.datanetVersions,
            training_config_hash: a.trainingConfigHash,
            adapter_hash: a.adapterHash,
            attribution_index_root: a.attributionIndexRoot,
        });
    }
    let mut stakers = Vec::new();
    let mut seen = src.stakers()?;
    seen.sort();
    seen.dedup();
    for address in seen {
        let stake = view(src, STAKING, IStaking::stakeOfCall { staker: address })?;
        if !stake.is_zero() {
            stakers.push(StartAccount {
                address,
                stake: Open(stake),
            });
        }
    }
    let mut latest: BTreeMap<Address, u64> = BTreeMap::new();
    let receipts = view(src, INFERENCE, IInference::receiptCountCall {})?;
    for id in receipts.saturating_sub(MAX_RECEIPTS) + 1..=receipts {
        let r = view(src, INFERENCE, IInference::getReceiptCall { receiptId: id })?;
        latest.insert(r.caller, r.adapterId);
    }
    let mut users = Vec::new();
    for (address, adapter_id) in latest {
        let credit = view(
            src,
            INFERENCE,
            IInference::creditOfCall { account: address },
        )?;
        users.push(StartUser {
            address,
            adapter_id,
            credit: Open(credit),
        });
    }
    let mut balances = BTreeMap::new();
    let addresses = datanets
        .iter()
        .flat_map(|d| std::iter::once(d.owner).chain(d.contributions.iter().map(|c| c.contributor)))
        .chain(adapters.iter().map(|a| a.owner))
        .chain(stakers.iter().map(|s| s.address))
        .chain(users.iter().map(|u| u.address))
        .collect::<Vec<_>>();
    for a in addresses {
        if let std::collections::btree_map::Entry::Vacant(e) = balances.entry(a) {
            e.insert(Open(src.balance(a)?));
        }
    }
    let start = ChainStart {
        source: source.into(),
        chain_id,
        block,
        timestamp,
        params,
        base_models,
        datanets,
        adapters,
        stakers,
        users,
        balances,
    };
    start.validate().map_err(|e| e.to_string())?;
    Ok(start)
}
