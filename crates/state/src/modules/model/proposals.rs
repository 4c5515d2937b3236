//! Model proposals with bounties: a proposer escrows OPEN to propose a specialised model, the
//! datanet it needs and a target evaluation score; governance approves it with a bounty
//! reserved from the treasury; the bounty goes to the owner of the first adapter registered
//! after the approval that lists the datanet in its provenance and whose RLHF evaluation (the
//! mean consensus score of the counted rounds on its receipts, at least a governed number of
//! them) reaches the target. Past its window a proposal expires: the bounty returns to the
//! treasury and the escrow is refunded, less a governed slash for an approved proposal nobody
//! fulfilled.
//!
//! The evaluation is the RLHF validators' consensus, not a self-reported number: nobody can
//! claim a bounty without staked validators rating the adapter's served outputs, and adapter
//! owners may not rate their own outputs.
//!
//! The model module holds exactly the escrow of every pending or approved proposal plus the
//! bounty of every approved one. Keys: `m/q` → proposal count; `m/Q`++id → `ModelProposal`.

use crate::{
    codec,
    error::ExecResult,
    kv::StateRead,
    modules::{bank, datanet, rlhf, staking},
    Ctx, ExecError,
};
use alloy_primitives::U256;
use openledger_types::{
    abi::IModel::{self, ModelProposal},
    modules::{GOVERNOR, MODEL, TREASURY},
    params::{SlashDestination, BPS},
    units::format_open,
};

/// Status: awaiting governance.
pub const PENDING: u8 = 0;
/// Status: approved, bounty reserved.
pub const APPROVED: u8 = 1;
/// Status: bounty paid.
pub const FULFILLED: u8 = 2;
/// Status: closed past its window.
pub const EXPIRED: u8 = 3;

const COUNT: &[u8] = b"m/q";

fn key(id: u64) -> Vec<u8> {
    codec::key(&[b"m/Q", &id.to_be_bytes()])
}

/// Reads a model proposal.
pub fn proposal(state: &dyn StateRead, id: u64) -> ExecResult<ModelProposal> {
    codec::get_sol::<ModelProposal>(state, &key(id))?
        .ok_or_else(|| ExecError::NotFound(format!("model proposal {id}")))
}

/// How many proposals exist (ids are 1..=count).
pub fn count(state: &dyn StateRead) -> ExecResult<u64> {
    Ok(codec::get_u64(state, COUNT)?)
}

/// What the model module owes: the escrow of every open proposal plus every reserved bounty.
pub fn owed(state: &dyn StateRead) -> ExecResult<U256> {
    let mut sum = U256::ZERO;
    for id in 1..=count(state)? {
        let p = proposal(state, id)?;
        if p.status == PENDING || p.status == APPROVED {
            sum += p.escrow + p.bounty;
        }
    }
    Ok(sum)
}

/// `proposeModel`: the OPEN sent with the call (already in the module) is the escrow.
pub fn propose(ctx: &mut Ctx, c: IModel::proposeModelCall) -> ExecResult<u64> {
    let min = ctx.params.model_proposal.model_proposal_min_escrow;
    if ctx.value < min {
        return Err(ExecError::Invalid(format!(
            "a model proposal escrows at least {} OPEN, {} OPEN was sent",
            format_open(min),
            format_open(ctx.value)
        )));
    }
    if c.name.trim().is_empty() {
        return Err(ExecError::Invalid("a model proposal needs a name".into()));
    }
    ctx.check_len("name", &c.name)?;
    ctx.check_len("description", &c.description)?;
    if c.targetScoreBps > BPS {
        return Err(ExecError::Invalid(format!(
            "the target score is in basis points, at most {BPS}; got {}",
            c.targetScoreBps
        )));
    }
    datanet::datanet(&ctx.state, c.datanetId)?;
    let id = codec::next_id(&mut ctx.state, COUNT)?;
    let p = ModelProposal {
        id,
        proposer: ctx.sender,
        name: c.name,
        description: c.description,
        datanetId: c.datanetId,
        targetScoreBps: c.targetScoreBps,
        escrow: ctx.value,
        bounty: U256::ZERO,
        status: PENDING,
        createdAt: ctx.env.timestamp,
        approvedAt: 0,
        deadline: ctx
            .env
            .timestamp
            .saturating_add(ctx.params.model_proposal.model_proposal_approval_secs),
        adapterId: 0,
    };
    codec::put_sol(&mut ctx.state, key(id), &p);
    ctx.emit(
        MODEL,
        &IModel::ModelProposed {
            proposalId: id,
            proposer: p.proposer,
            datanetId: p.datanetId,
            targetScoreBps: p.targetScoreBps,
            escrow: p.escrow,
        },
    );
    Ok(id)
}

/// `approveModelProposal`: governor only; reserves the bounty from the treasury.
pub fn approve(ctx: &mut Ctx, c: IModel::approveModelProposalCall) -> ExecResult<()> {
    if ctx.sender != GOVERNOR {
        return Err(ExecError::Unauthorized(format!(
            "only the governor ({GOVERNOR}) approves model proposals, through a passed proposal; {} called",
            ctx.sender
        )));
    }
    let mut p = proposal(&ctx.state, c.proposalId)?;
    let now = ctx.env.timestamp;
    if p.status != PENDING || now >= p.deadline {
        return Err(ExecError::Invalid(format!(
            "model proposal {} is not awaiting approval (status {}, approval window until {})",
            p.id, p.status, p.deadline
        )));
    }
    if c.bounty.is_zero() {
        return Err(ExecError::Invalid("the bounty must be positive".into()));
    }
    let treasury = bank::account(&ctx.state, &TREASURY)?.balance;
    if treasury < c.bounty {
        return Err(ExecError::Invalid(format!(
            "the treasury holds {} OPEN, less than the bounty of {} OPEN",
            format_open(treasury),
            format_open(c.bounty)
        )));
    }
    ctx.transfer(TREASURY, MODEL, c.bounty)?;
    p.status = APPROVED;
    p.bounty = c.bounty;
    p.approvedAt = now;
    p.deadline = now.saturating_add(ctx.params.model_proposal.model_proposal_duration_secs);
    codec::put_sol(&mut ctx.state, key(p.id), &p);
    ctx.emit(
        MODEL,
        &IModel::ModelProposalApproved {
            proposalId: p.id,
            bounty: p.bounty,
            deadline: p.deadline,
        },
    );
    Ok(())
}

/// `claimModelBounty`: pays the bounty for a qualifying adapter and refunds the escrow.
pub fn claim(ctx: &mut Ctx, c: IModel::claimModelBountyCall) -> ExecResult<()> {
    let mut p = proposal(&ctx.state, c.proposalId)?;
    if p.status != APPROVED || ctx.env.timestamp >= p.deadline {
        return Err(ExecError::Invalid(format!(
            "model proposal {} has no bounty to claim (status {}, deadline {})",
            p.id, p.status, p.deadline
        )));
    }
    let a = super::adapter(&ctx.state, c.adapterId)?;
    if a.registeredAt < p.approvedAt || !a.datanetIds.contains(&p.datanetId) {
        return Err(ExecError::Invalid(format!(
            "adapter {} does not qualify for model proposal {}: it must be registered after the \
             approval (at {}) and list datanet {} in its provenance",
            a.id, p.id, p.approvedAt, p.datanetId
        )));
    }
    let (rounds, mean) = rlhf::adapter_score(&ctx.state, a.id)?;
    let need = ctx.params.model_proposal.model_proposal_min_rated_rounds;
    if rounds < need || mean < p.targetScoreBps {
        return Err(ExecError::Invalid(format!(
            "adapter {} has a mean RLHF score of {mean} bps over {rounds} counted rounds; model \
             proposal {} needs at least {} bps over at least {need} rounds",
            a.id, p.id, p.targetScoreBps
        )));
    }
    let (bounty, escrow) = (p.bounty, p.escrow);
    ctx.transfer(MODEL, a.owner, bounty)?;
    ctx.transfer(MODEL, p.proposer, escrow)?;
    p.status = FULFILLED;
    p.adapterId = a.id;
    codec::put_sol(&mut ctx.state, key(p.id), &p);
    ctx.emit(
        MODEL,
        &IModel::ModelBountyPaid {
            proposalId: p.id,
            adapterId: a.id,
            owner: a.owner,
            bounty,
        },
    );
    ctx.emit(
        MODEL,
        &IModel::ModelProposalClosed {
            proposalId: p.id,
            status: FULFILLED,
            refunded: escrow,
            slashed: U256::ZERO,
            bounty: U256::ZERO,
        },
    );
    Ok(())
}

/// `expireModelProposal`: closes a proposal past its window.
pub fn expire(ctx: &mut Ctx, c: IModel::expireModelProposalCall) -> ExecResult<()> {
    let mut p = proposal(&ctx.state, c.proposalId)?;
    if (p.status != PENDING && p.status != APPROVED) || ctx.env.timestamp < p.deadline {
        return Err(ExecError::Invalid(format!(
            "model proposal {} cannot expire: status {}, its window ends at {} (unix seconds), it is now {}",
            p.id, p.status, p.deadline, ctx.env.timestamp
        )));
    }
    let (bounty, escrow) = (p.bounty, p.escrow);
    let slashed = if p.status == APPROVED {
        escrow.saturating_mul(U256::from(
            ctx.params.model_proposal.model_proposal_slash_bps,
        )) / U256::from(BPS)
    } else {
        U256::ZERO
    };
    ctx.transfer(MODEL, TREASURY, bounty)?;
    if ctx.params.slash_destination == SlashDestination::Burn {
        staking::burn(ctx, MODEL, slashed)?;
    } else {
        ctx.transfer(MODEL, TREASURY, slashed)?;
    }
    let refunded = escrow - slashed;
    ctx.transfer(MODEL, p.proposer, refunded)?;
    p.status = EXPIRED;
    codec::put_sol(&mut ctx.state, key(p.id), &p);
    ctx.emit(
        MODEL,
        &IModel::ModelProposalClosed {
            proposalId: p.id,
            status: EXPIRED,
            refunded,
            slashed,
            bounty,
        },
    );
    Ok(())
}
