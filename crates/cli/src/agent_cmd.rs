//! `openledger agent`: AI agent staking (`contracts/IAgent.sol`). Every paying caller may use
//! the governed free volume of tokens per UTC day; beyond it, it must be a registered agent
//! with at least the governed agent stake.

use crate::commands::Session;
use alloy_primitives::U256;
use alloy_sol_types::SolCall;
use anyhow::Result;
use openledger_types::{
    abi::IAgent,
    modules::AGENT,
    units::{format_open, parse_open},
};

#[derive(clap::Subcommand, Debug)]
pub enum AgentCmd {
    /// Register the --from account as an agent (again: update its metadata).
    Register {
        /// A URI or description of the agent.
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// Stake OPEN as an agent.
    Stake {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start unbonding part of the agent stake.
    Unstake {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Withdraw unbonded agent stake after the cooldown.
    Withdraw,
    /// Show an agent's stake and today's usage (default: --from).
    Show { who: Option<String> },
}

fn view<C: SolCall>(s: &Session, c: C) -> Result<C::Return> {
    let out = s.rpc()?.view(AGENT, c.abi_encode())?;
    Ok(C::abi_decode_returns(&out)?)
}

/// Runs an `agent` subcommand.
pub fn run(s: &Session, c: AgentCmd) -> Result<()> {
    let send = |value: U256, data: Vec<u8>| s.call(AGENT, value, data);
    match c {
        AgentCmd::Register { metadata } => send(
            U256::ZERO,
            IAgent::registerAgentCall { metadata }.abi_encode(),
        ),
        AgentCmd::Stake { amount } => send(amount, IAgent::stakeAgentCall {}.abi_encode()),
        AgentCmd::Unstake { amount } => {
            send(U256::ZERO, IAgent::unstakeAgentCall { amount }.abi_encode())
        }
        AgentCmd::Withdraw => send(U256::ZERO, IAgent::withdrawAgentStakeCall {}.abi_encode()),
        AgentCmd::Show { who } => {
            let a = s.me_or(&who)?;
            let g = view(s, IAgent::getAgentCall { agent: a })?;
            let u = view(s, IAgent::usageOfCall { account: a })?;
            println!("{a}");
            if g.registered {
                println!(
                    "  agent      registered at {} ({:?})",
                    g.registeredAt, g.metadata
                );
            } else {
                println!("  agent      not registered");
            }
            println!("  staked     {} OPEN", format_open(g.stake));
            println!(
                "  unbonding  {} OPEN, released at {}",
                format_open(g.unbonding),
                g.releaseTime
            );
            println!(
                "  today      {} of {} free tokens used (UTC day {}); {}",
                u.tokensToday,
                u.freeTokensPerDay,
                u.day,
                if u.staked {
                    "staked: no limit"
                } else {
                    "not staked: calls past the free volume are refused"
                }
            );
            Ok(())
        }
    }
}
