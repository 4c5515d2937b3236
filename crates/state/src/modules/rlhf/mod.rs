//! RLHF validators: staked validators rate served outputs (inference receipts) in commit-reveal
//! rounds, so nobody can copy the others' ratings; [`finalize`] takes the consensus (median
//! score, majority preference), rewards the validators that agree from the reward pool and
//! slashes those that deviate or stay silent through the staking module. Decided pairwise
//! preferences are recorded as a preference dataset; every counted round adds its consensus
//! score to the rated adapter's evaluation, which model proposals read ([`adapter_score`]).
//!
//! The reward pool is this module's whole balance: [`fee_share`] routes a governed slice of the
//! stakers' share of each settled inference fee here while any validator has joined, and
//! anyone may add to it (`fundRewards`). The semantics are spelled out in `contracts/IRlhf.sol`.
//!
//! Keys: `r/n` → round count; `r/r`++id → `Round`; `r/k`++min(A,B)++max(A,B) → round id (a
//! receipt pair is rated once); `r/v`++id++index (u32 BE) → validator, in commit order;
//! `r/c`++id++address → `Rating`; `r/V`++address → joined marker; `r/m` → validator count;
//! `r/p` → reward pool; `r/q` → preference count; `r/P`++index → `Preference`;
//! `r/a`++adapter id → counted rounds (u64 BE) ++ sum of their consensus scores (u64 BE).

mod finalize;

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::StateRead,
    modules::{inference, model, staking},
    Ctx, ExecError,
};
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_types::{
    abi::IRlhf::{self, Preference, Rating, Round},
    modules::{INFERENCE, RLHF},
    params::BPS,
    units::format_open,
};

/// Round status: committing or revealing.
pub const OPEN: u8 = 0;
/// Round status: finalized with a consensus.
pub const FINALIZED: u8 = 1;
/// Round status: finalized with too few reveals to count.
pub const VOID: u8 = 2;
/// Most preferences one `preferences` view returns.
pub const MAX_PAGE: u64 = 256;

const ROUNDS: &[u8] = b"r/n";
const VALIDATORS: &[u8] = b"r/m";
const POOL: &[u8] = b"r/p";
const PREFERENCES: &[u8] = b"r/q";

fn round_key(id: u64) -> Vec<u8> {
    codec::key(&[b"r/r", &id.to_be_bytes()])
}

fn pair_key(a: u64, b: u64) -> Vec<u8> {
    let (lo, hi) = (a.min(b), a.max(b));
    codec::key(&[b"r/k", &lo.to_be_bytes(), &hi.to_be_bytes()])
}

fn slot_key(round: u64, index: u32) -> Vec<u8> {
    codec::key(&[b"r/v", &round.to_be_bytes(), &index.to_be_bytes()])
}

fn rating_key(round: u64, v: &Address) -> Vec<u8> {
    codec::key(&[b"r/c", &round.to_be_bytes(), v.as_slice()])
}

fn member_key(v: &Address) -> Vec<u8> {
    codec::key(&[b"r/V", v.as_slice()])
}

fn preference_key(index: u64) -> Vec<u8> {
    codec::key(&[b"r/P", &index.to_be_bytes()])
}

fn adapter_key(adapter: u64) -> Vec<u8> {
    codec::key(&[b"r/a", &adapter.to_be_bytes()])
}

/// Reads a round.
pub fn round(state: &dyn StateRead, id: u64) -> ExecResult<Round> {
    codec::get_sol::<Round>(state, &round_key(id))?
        .ok_or_else(|| ExecError::NotFound(format!("RLHF round {id}")))
}

/// A validator's rating in a round, if it committed.
pub fn rating(state: &dyn StateRead, round: u64, v: &Address) -> ExecResult<Option<Rating>> {
    Ok(codec::get_sol::<Rating>(state, &rating_key(round, v))?)
}

/// The validators that committed in a round, in commit order.
pub fn validators_of(state: &dyn StateRead, r: &Round) -> ExecResult<Vec<Address>> {
    (0..r.commits)
        .map(|i| {
            let v = state.get(&slot_key(r.id, i))?.ok_or_else(|| {
                StorageError(format!(
                    "corrupt RLHF round {}: validator {i} missing",
                    r.id
                ))
            })?;
            Ok(Address::from_slice(&v))
        })
        .collect()
}

/// Whether `a` has joined the validator set.
pub fn is_validator(state: &dyn StateRead, a: &Address) -> Result<bool, StorageError> {
    Ok(state.get(&member_key(a))?.is_some())
}

/// OPEN in the reward pool (equals the module's balance).
pub fn pool(state: &dyn StateRead) -> Result<U256, StorageError> {
    codec::get_u256(state, POOL)
}

fn add_to_pool(ctx: &mut Ctx, from: Address, receipt: u64, amount: U256) -> ExecResult<()> {
    let p = pool(&ctx.state)?
        .checked_add(amount)
        .ok_or_else(|| StorageError("the RLHF reward pool overflows 256 bits".into()))?;
    codec::put_u256(&mut ctx.state, POOL.to_vec(), p);
    ctx.emit(
        RLHF,
        &IRlhf::RewardsFunded {
            receiptId: receipt,
            from,
            amount,
        },
    );
    Ok(())
}

/// The commitment a validator submits: keccak256(abi.encode(round, validator, score,
/// preferred, salt)).
pub fn commitment(round: u64, validator: Address, score: u16, preferred: u8, salt: B256) -> B256 {
    use alloy_sol_types::{sol_data as t, SolType};
    type Encoded = (
        t::Uint<64>,
        t::Address,
        t::Uint<16>,
        t::Uint<8>,
        t::FixedBytes<32>,
    );
    keccak256(Encoded::abi_encode_params(&(
        round, validator, score, preferred, salt,
    )))
}

/// Counted rounds on an adapter's receipts and the sum of their consensus scores.
pub fn adapter_totals(state: &dyn StateRead, adapter: u64) -> Result<(u64, u64), StorageError> {
    match state.get(&adapter_key(adapter))? {
        None => Ok((0, 0)),
        Some(v) if v.len() == 16 => Ok((
            u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            u64::from_be_bytes(v[8..].try_into().expect("8 bytes")),
        )),
        Some(_) => Err(StorageError(format!(
            "corrupt RLHF score record for adapter {adapter}"
        ))),
    }
}

/// Counted rounds on an adapter's receipts and the mean of their consensus scores (bps).
pub fn adapter_score(state: &dyn StateRead, adapter: u64) -> Result<(u64, u16), StorageError> {
    let (rounds, sum) = adapter_totals(state, adapter)?;
    // The mean of scores <= 10,000 fits a u16.
    let mean = sum.checked_div(rounds).unwrap_or(0).min(BPS as u64) as u16;
    Ok((rounds, mean))
}

/// Moves the RLHF slice (`rlhf_fee_bps`) of `stakers`, the stakers' share of receipt
/// `receipt`'s fee, from the inference module into the reward pool, while at least one
/// validator has joined; returns the slice (what the stakers pool does not get). `pay` moves
/// the slice from the inference module to this one, with its `Transfer` log (settlement holds
/// the inference module's account in a [`crate::modules::bank::Accounts`]).
pub fn fee_share(
    ctx: &mut Ctx,
    receipt: u64,
    stakers: U256,
    pay: impl FnOnce(&mut Ctx, Address, Address, U256) -> ExecResult<()>,
) -> ExecResult<U256> {
    let bps = ctx.params.rlhf.rlhf_fee_bps;
    if bps == 0 || stakers.is_zero() || codec::get_u64(&ctx.state, VALIDATORS)? == 0 {
        return Ok(U256::ZERO);
    }
    // stakers <= a fee that fits 256 bits times 10,000 / 10,000: checked anyway.
    let cut = crate::math::mul_div(stakers, bps.into(), BPS.into()).ok_or_else(|| {
        ExecError::Invalid(format!(
            "the RLHF share of a stakers' share of {stakers} wei overflows"
        ))
    })?;
    if cut.is_zero() {
        return Ok(U256::ZERO);
    }
    pay(ctx, INFERENCE, RLHF, cut)?;
    add_to_pool(ctx, INFERENCE, receipt, cut)?;
    Ok(cut)
}

fn open_round(ctx: &mut Ctx, c: IRlhf::openRoundCall) -> ExecResult<u64> {
    let a = inference::receipt(&ctx.state, c.receiptA)?;
    let paired = c.receiptB != 0;
    if paired {
        if c.receiptB == c.receiptA {
            return Err(ExecError::Invalid(
                "a pair round compares two different receipts".into(),
            ));
        }
        inference::receipt(&ctx.state, c.receiptB)?;
    } else if !c.outputHashB.is_zero() {
        return Err(ExecError::Invalid(
            "a score-only round (receiptB = 0) takes no outputHashB".into(),
        ));
    }
    if c.promptHash.is_zero() || c.outputHashA.is_zero() || (paired && c.outputHashB.is_zero()) {
        return Err(ExecError::Invalid(
            "a round commits to the texts it rates: promptHash and each rated output's hash \
             (keccak256 of the text) must be non-zero"
                .into(),
        ));
    }
    let pk = pair_key(c.receiptA, c.receiptB);
    if let Some(other) = ctx.state.get(&pk)? {
        let other = u64::from_be_bytes(other.as_slice().try_into().unwrap_or_default());
        return Err(ExecError::Invalid(format!(
            "receipts {} and {} are already rated in round {other}",
            c.receiptA, c.receiptB
        )));
    }
    let id = codec::next_id(&mut ctx.state, ROUNDS)?;
    ctx.state.put(pk, id.to_be_bytes().to_vec());
    let p = &ctx.params.rlhf;
    let commit_end = ctx.env.timestamp.saturating_add(p.rlhf_commit_secs);
    let r = Round {
        id,
        opener: ctx.sender,
        receiptA: c.receiptA,
        receiptB: c.receiptB,
        adapterId: a.adapterId,
        promptHash: c.promptHash,
        outputHashA: c.outputHashA,
        outputHashB: c.outputHashB,
        commitEnd: commit_end,
        revealEnd: commit_end.saturating_add(p.rlhf_reveal_secs),
        commits: 0,
        reveals: 0,
        status: OPEN,
        consensusScoreBps: 0,
        consensusPreferred: 0,
    };
    codec::put_sol(&mut ctx.state, round_key(id), &r);
    ctx.emit(
        RLHF,
        &IRlhf::RoundOpened {
            roundId: id,
            receiptA: r.receiptA,
            receiptB: r.receiptB,
            promptHash: r.promptHash,
            commitEnd: r.commitEnd,
            revealEnd: r.revealEnd,
        },
    );
    Ok(id)
}

/// Refuses `v` as a rater when its stake is below the governed minimum.
fn check_stake(ctx: &Ctx, v: &Address) -> ExecResult<U256> {
    let stake = staking::stake_of(&ctx.state, v)?;
    let min = ctx.params.rlhf.rlhf_min_stake;
    if stake < min {
        return Err(ExecError::Unauthorized(format!(
            "{v} has {} OPEN staked; RLHF validators need at least {} OPEN (`openledger stake add`)",
            format_open(stake),
            format_open(min)
        )));
    }
    Ok(stake)
}

fn commit(ctx: &mut Ctx, c: IRlhf::commitRatingCall) -> ExecResult<()> {
    let me = ctx.sender;
    let mut r = round(&ctx.state, c.roundId)?;
    if r.status != OPEN || ctx.env.timestamp >= r.commitEnd {
        return Err(ExecError::Invalid(format!(
            "round {} took commitments until {} (unix seconds); it is now {}",
            r.id, r.commitEnd, ctx.env.timestamp
        )));
    }
    if !is_validator(&ctx.state, &me)? {
        return Err(ExecError::Unauthorized(format!(
            "{me} is not an RLHF validator: join with joinValidators (`openledger rlhf join`)"
        )));
    }
    let stake = check_stake(ctx, &me)?;
    if c.commitment.is_zero() {
        return Err(ExecError::Invalid("the commitment must be non-zero".into()));
    }
    if rating(&ctx.state, r.id, &me)?.is_some() {
        return Err(ExecError::Invalid(format!(
            "{me} already committed in round {}: one rating per validator",
            r.id
        )));
    }
    for receipt in [r.receiptA, r.receiptB].into_iter().filter(|&x| x != 0) {
        let adapter = inference::receipt(&ctx.state, receipt)?.adapterId;
        if model::adapter(&ctx.state, adapter)?.owner == me {
            return Err(ExecError::Unauthorized(format!(
                "{me} owns adapter {adapter}, which served receipt {receipt}: owners do not rate their own outputs"
            )));
        }
    }
    if r.commits >= ctx.params.rlhf.rlhf_max_validators {
        return Err(ExecError::Invalid(format!(
            "round {} is full: it takes at most {} validators",
            r.id, ctx.params.rlhf.rlhf_max_validators
        )));
    }
    ctx.state
        .put(slot_key(r.id, r.commits), me.as_slice().to_vec());
    r.commits += 1;
    codec::put_sol(
        &mut ctx.state,
        rating_key(r.id, &me),
        &Rating {
            commitment: c.commitment,
            stakeAtCommit: stake,
            revealed: false,
            scoreBps: 0,
            preferred: 0,
        },
    );
    codec::put_sol(&mut ctx.state, round_key(r.id), &r);
    ctx.emit(
        RLHF,
        &IRlhf::RatingCommitted {
            roundId: r.id,
            validator: me,
            commitment: c.commitment,
        },
    );
    Ok(())
}

fn reveal(ctx: &mut Ctx, c: IRlhf::revealRatingCall) -> ExecResult<()> {
    let me = ctx.sender;
    let mut r = round(&ctx.state, c.roundId)?;
    let now = ctx.env.timestamp;
    if r.status != OPEN || now >= r.revealEnd {
        return Err(ExecError::Invalid(format!(
            "round {} took reveals until {} (unix seconds); it is now {now}",
            r.id, r.revealEnd
        )));
    }
    if now < r.commitEnd {
        return Err(ExecError::Invalid(format!(
            "round {} takes reveals from {} (unix seconds), after its commit window; it is now {now}",
            r.id, r.commitEnd
        )));
    }
    let mut rt = rating(&ctx.state, r.id, &me)?.ok_or_else(|| {
        ExecError::Unauthorized(format!(
            "{me} made no commitment in round {}: only a committed rating can be revealed",
            r.id
        ))
    })?;
    if rt.revealed {
        return Err(ExecError::Invalid(format!(
            "{me} already revealed its rating in round {}",
            r.id
        )));
    }
    if c.scoreBps > BPS || c.preferred > 2 || (r.receiptB == 0 && c.preferred != 0) {
        return Err(ExecError::Invalid(format!(
            "a rating is a score of 0..={BPS} basis points and a preference of 0 (none), 1 \
             (A over B) or 2 (B over A; pair rounds only); got {} and {}",
            c.scoreBps, c.preferred
        )));
    }
    if commitment(r.id, me, c.scoreBps, c.preferred, c.salt) != rt.commitment {
        return Err(ExecError::Unauthorized(format!(
            "this reveal does not match {me}'s commitment in round {}: reveal the exact score, \
             preference and salt that were committed",
            r.id
        )));
    }
    rt.revealed = true;
    rt.scoreBps = c.scoreBps;
    rt.preferred = c.preferred;
    r.reveals += 1;
    codec::put_sol(&mut ctx.state, rating_key(r.id, &me), &rt);
    codec::put_sol(&mut ctx.state, round_key(r.id), &r);
    ctx.emit(
        RLHF,
        &IRlhf::RatingRevealed {
            roundId: r.id,
            validator: me,
            scoreBps: c.scoreBps,
            preferred: c.preferred,
        },
    );
    Ok(())
}

/// Reads a recorded preference (1-based index).
pub fn preference(state: &dyn StateRead, index: u64) -> ExecResult<Preference> {
    codec::get_sol::<Preference>(state, &preference_key(index))?
        .ok_or_else(|| ExecError::NotFound(format!("RLHF preference {index}")))
}

/// Executes an RLHF call.
pub fn call(ctx: &mut Ctx, call: IRlhf::IRlhfCalls) -> ExecResult<Vec<u8>> {
    use IRlhf::IRlhfCalls as C;
    let me = ctx.sender;
    Ok(match call {
        C::joinValidators(_) => {
            if is_validator(&ctx.state, &me)? {
                return Err(ExecError::Invalid(format!(
                    "{me} is already an RLHF validator"
                )));
            }
            check_stake(ctx, &me)?;
            ctx.state.put(member_key(&me), vec![1]);
            let n = codec::get_u64(&ctx.state, VALIDATORS)?.saturating_add(1);
            codec::put_u64(&mut ctx.state, VALIDATORS.to_vec(), n);
            ctx.emit(RLHF, &IRlhf::ValidatorJoined { validator: me });
            Vec::new()
        }
        C::leaveValidators(_) => {
            if !is_validator(&ctx.state, &me)? {
                return Err(ExecError::Invalid(format!("{me} is not an RLHF validator")));
            }
            ctx.state.delete(member_key(&me));
            let n = codec::get_u64(&ctx.state, VALIDATORS)?.saturating_sub(1);
            codec::put_u64(&mut ctx.state, VALIDATORS.to_vec(), n);
            ctx.emit(RLHF, &IRlhf::ValidatorLeft { validator: me });
            Vec::new()
        }
        C::openRound(c) => IRlhf::openRoundCall::abi_encode_returns(&open_round(ctx, c)?),
        C::commitRating(c) => {
            commit(ctx, c)?;
            Vec::new()
        }
        C::revealRating(c) => {
            reveal(ctx, c)?;
            Vec::new()
        }
        C::finalizeRound(c) => {
            finalize::finalize(ctx, c.roundId)?;
            Vec::new()
        }
        C::fundRewards(_) => {
            if ctx.value.is_zero() {
                return Err(ExecError::Invalid(
                    "fundRewards needs OPEN sent with the call".into(),
                ));
            }
            let v = ctx.value;
            add_to_pool(ctx, me, 0, v)?;
            Vec::new()
        }
        C::commitmentOf(c) => {
            commitment(c.roundId, c.validator, c.scoreBps, c.preferred, c.salt).abi_encode()
        }
        C::getRound(c) => round(&ctx.state, c.roundId)?.abi_encode(),
        C::ratingOf(c) => rating(&ctx.state, c.roundId, &c.validator)?
            .ok_or_else(|| {
                ExecError::NotFound(format!(
                    "a rating by {} in RLHF round {}",
                    c.validator, c.roundId
                ))
            })?
            .abi_encode(),
        C::validatorsOf(c) => {
            validators_of(&ctx.state, &round(&ctx.state, c.roundId)?)?.abi_encode()
        }
        C::roundCount(_) => codec::get_u64(&ctx.state, ROUNDS)?.abi_encode(),
        C::isValidator(c) => is_validator(&ctx.state, &c.account)?.abi_encode(),
        C::validatorCount(_) => codec::get_u64(&ctx.state, VALIDATORS)?.abi_encode(),
        C::rewardPool(_) => pool(&ctx.state)?.abi_encode(),
        C::preferenceCount(_) => codec::get_u64(&ctx.state, PREFERENCES)?.abi_encode(),
        C::getPreference(c) => preference(&ctx.state, c.index)?.abi_encode(),
        C::preferences(c) => {
            let n = codec::get_u64(&ctx.state, PREFERENCES)?;
            let from = c.from.max(1);
            let to = from
                .saturating_add(c.count.min(MAX_PAGE))
                .min(n.saturating_add(1));
            (from..to)
                .map(|i| preference(&ctx.state, i))
                .collect::<ExecResult<Vec<_>>>()?
                .abi_encode()
        }
        C::adapterScore(c) => {
            let (rounds, mean) = adapter_score(&ctx.state, c.adapterId)?;
            IRlhf::adapterScoreCall::abi_encode_returns(&IRlhf::adapterScoreReturn {
                rounds,
                meanScoreBps: mean,
            })
        }
    })
}
