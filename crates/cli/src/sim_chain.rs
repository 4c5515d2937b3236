//! `openledger sim run --from-chain`: reads a running node's current state over JSON-RPC (the
//! modules' views through `eth_call`, balances, `Staked` logs for the stakers) into the
//! simulator's [`ChainStart`], and runs a scenario from it. The import's rules are in
//! `openledger_sim::start`. The state is read at the head, call by call: on a node that keeps
//! sealing blocks meanwhile, a read that catches a half-made change is refused by the start's
//! checks, and reading again fixes it.

use crate::wallet::Rpc;
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolEvent;
use anyhow::{anyhow, Context, Result};
use openledger_sim::{
    start::{self, ChainSource, ChainStart},
    write_job, Computed, Job, Scenario, Summary,
};
use openledger_types::{abi::IStaking, modules::STAKING};
use serde_json::{json, Value};
use std::path::Path;

/// Blocks per `eth_getLogs` request (within the node's default `max_log_range`).
const LOG_RANGE: u64 = 5_000;

/// A node seen through its JSON-RPC.
struct RpcSource<'a>(&'a Rpc);

fn quantity(v: &Value, what: &str) -> Result<u64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what}: expected a hex quantity, got {v}"))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{what}: {s}: {e}"))
}

impl ChainSource for RpcSource<'_> {
    fn call(&mut self, to: Address, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.0
            .view(to, data)
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:#}"))
    }

    fn balance(&mut self, who: Address) -> Result<U256, String> {
        let v = self
            .0
            .call("eth_getBalance", json!([who, "latest"]))
            .map_err(|e| format!("{e:#}"))?;
        serde_json::from_value(v).map_err(|e| format!("eth_getBalance of {who}: {e}"))
    }

    fn stakers(&mut self) -> Result<Vec<Address>, String> {
        let head = self.head()?.1;
        let mut out = Vec::new();
        let mut from = 0;
        while from <= head {
            let to = (from + LOG_RANGE - 1).min(head);
            let logs = self
                .0
                .call(
                    "eth_getLogs",
                    json!([{
                        "fromBlock": format!("0x{from:x}"),
                        "toBlock": format!("0x{to:x}"),
                        "address": STAKING,
                        "topics": [IStaking::Staked::SIGNATURE_HASH],
                    }]),
                )
                .map_err(|e| format!("reading Staked logs of blocks {from}..={to}: {e:#}"))?;
            for l in logs.as_array().into_iter().flatten() {
                if let Some(t) = l["topics"].get(1).and_then(Value::as_str) {
                    let t: alloy_primitives::B256 = t
                        .parse()
                        .map_err(|e| format!("a Staked log's topic {t}: {e}"))?;
                    out.push(Address::from_word(t));
                }
            }
            from = to + 1;
        }
        Ok(out)
    }

    fn head(&mut self) -> Result<(u64, u64, u64), String> {
        let id = self
            .0
            .call("eth_chainId", json!([]))
            .map_err(|e| format!("{e:#}"))?;
        let b = self
            .0
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .map_err(|e| format!("{e:#}"))?;
        Ok((
            quantity(&id, "eth_chainId")?,
            quantity(&b["number"], "the head block's number")?,
            quantity(&b["timestamp"], "the head block's timestamp")?,
        ))
    }
}

/// Reads the current state of the node at `rpc_url`.
pub(crate) fn read_chain(rpc_url: &str) -> Result<ChainStart> {
    let rpc = Rpc {
        url: rpc_url.to_string(),
    };
    start::read(&mut RpcSource(&rpc), rpc_url)
        .map_err(|e| anyhow!("reading the chain's state from {rpc_url}: {e}"))
}

/// What [`run_from_chain`] ran and found.
pub(crate) struct ChainRun {
    /// The scenario as run: the given one, started from the chain's state.
    pub scenario: Scenario,
    pub summary: Summary,
    /// `sha256:…` of the results in `report.json`.
    pub results_sha256: String,
    /// One line: what was read from the node.
    pub imported: String,
}

/// Runs `sc` from the current state of the node at `rpc_url` (its parameters, datanets and
/// contributions, models, stakes, inference users and their balances) and writes the run's
/// outputs into `out` (timeseries.csv, summary.json, plots, report.json with the chain state
/// in its scenario, report.html), as `openledger sim run --from-chain` does. The scenario's
/// `[chain]` section is replaced by the node's parameters.
pub(crate) fn run_from_chain(rpc_url: &str, sc: &Scenario, out: &Path) -> Result<ChainRun> {
    let start = read_chain(rpc_url)?;
    let imported = start.describe();
    let scenario = sc
        .clone()
        .starting_from(start)
        .map_err(|e| anyhow!("starting scenario {} from {rpc_url}: {e}", sc.name))?;
    let computed = Job::Run
        .compute(&scenario)
        .map_err(|e| anyhow!("running {} from {imported}: {e}", sc.name))?;
    let ev = write_job(out, Job::Run, &scenario, &computed)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("writing the run's outputs into {}", out.display()))?;
    let Computed::Run { summary, .. } = computed else {
        return Err(anyhow!("internal: a run gave no summary"));
    };
    Ok(ChainRun {
        scenario,
        summary: *summary,
        results_sha256: ev.results_sha256,
        imported,
    })
}
