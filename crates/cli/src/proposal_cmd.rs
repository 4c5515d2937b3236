//! `openledger model propose|proposals|claim-bounty|expire-proposal`: model proposals with
//! bounties (`proposeModel` and friends in `contracts/IModel.sol`). Approval is a governance
//! action: a proposal whose calls include `IModel.approveModelProposal(id, bounty)`.

use crate::commands::{show, text_arg, Session};
use alloy_primitives::U256;
use alloy_sol_types::SolCall;
use anyhow::Result;
use openledger_types::{
    abi::IModel,
    modules::MODEL,
    units::{format_open, parse_open},
};

/// Most proposals `model proposals` lists.
const MAX_LISTED: u64 = 1_000;

#[derive(clap::Subcommand, Debug)]
pub enum ProposalCmd {
    /// Propose a specialised model trained on a datanet, escrowing OPEN; governance approves it
    /// with a bounty, paid to the first adapter on that datanet whose RLHF score reaches the target.
    Propose {
        name: String,
        #[arg(long)]
        datanet: u64,
        /// The RLHF evaluation to reach: mean consensus score in basis points (0..=10000).
        #[arg(long)]
        target_score: u16,
        /// OPEN escrowed (at least the governed model_proposal_min_escrow).
        #[arg(long, value_parser = parse_open)]
        escrow: U256,
        /// Text, or @FILE.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show model proposal ID, or list them all.
    Proposals { id: Option<u64> },
    /// Claim an approved proposal's bounty for a qualifying adapter (pays its owner).
    ClaimBounty { proposal: u64, adapter: u64 },
    /// Close a proposal past its window (bounty back to the treasury, escrow refunded).
    ExpireProposal { proposal: u64 },
}

const STATUS: [&str; 4] = ["pending", "approved", "fulfilled", "expired"];

/// Runs a model-proposal subcommand.
pub fn run(s: &Session, c: ProposalCmd) -> Result<()> {
    match c {
        ProposalCmd::Propose {
            name,
            datanet,
            target_score,
            escrow,
            description,
        } => s.call(
            MODEL,
            escrow,
            IModel::proposeModelCall {
                name,
                description: text_arg(&description)?,
                datanetId: datanet,
                targetScoreBps: target_score,
            }
            .abi_encode(),
        ),
        ProposalCmd::Proposals { id: Some(id) } => {
            let out = s.rpc()?.view(
                MODEL,
                IModel::getModelProposalCall { proposalId: id }.abi_encode(),
            )?;
            show(IModel::getModelProposalCall::abi_decode_returns(&out)?);
            Ok(())
        }
        ProposalCmd::Proposals { id: None } => {
            let rpc = s.rpc()?;
            let n = IModel::modelProposalCountCall::abi_decode_returns(
                &rpc.view(MODEL, IModel::modelProposalCountCall {}.abi_encode())?,
            )?;
            for id in 1..=n.min(MAX_LISTED) {
                let p = IModel::getModelProposalCall::abi_decode_returns(&rpc.view(
                    MODEL,
                    IModel::getModelProposalCall { proposalId: id }.abi_encode(),
                )?)?;
                println!(
                    "{id:>4}  {:<9}  datanet {:<4} target {:>5} bps  escrow {} OPEN  bounty {} OPEN  until {}  {:?}",
                    STATUS.get(p.status as usize).copied().unwrap_or("?"),
                    p.datanetId,
                    p.targetScoreBps,
                    format_open(p.escrow),
                    format_open(p.bounty),
                    p.deadline,
                    p.name
                );
            }
            if n > MAX_LISTED {
                println!(
                    "… {} more: show one with `model proposals ID`",
                    n - MAX_LISTED
                );
            }
            Ok(())
        }
        ProposalCmd::ClaimBounty { proposal, adapter } => s.call(
            MODEL,
            U256::ZERO,
            IModel::claimModelBountyCall {
                proposalId: proposal,
                adapterId: adapter,
            }
            .abi_encode(),
        ),
        ProposalCmd::ExpireProposal { proposal } => s.call(
            MODEL,
            U256::ZERO,
            IModel::expireModelProposalCall {
                proposalId: proposal,
            }
            .abi_encode(),
        ),
    }
}
