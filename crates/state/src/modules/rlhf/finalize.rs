//! Finalizing an RLHF round: the consensus of the revealed ratings (lower median score, strict
//! majority preference), rewards for the validators that agree, slashes for those that deviate
//! or never revealed, and the round's contribution to the preference dataset and to its
//! adapter's evaluation. Linear in the round's validators (at most `rlhf_max_validators`).

use super::{
    adapter_key, adapter_totals, pool, preference_key, rating, round, round_key, validators_of,
    FINALIZED, OPEN, POOL, PREFERENCES, VOID,
};
use crate::{
    codec,
    error::{ExecResult, StorageError},
    modules::staking,
    Ctx, ExecError,
};
use alloy_primitives::{Address, U256};
use openledger_types::{
    abi::IRlhf::{self, Preference, Rating},
    modules::RLHF,
    params::BPS,
};

/// The consensus of revealed ratings: (lower median score, majority preference or 0).
pub fn consensus(revealed: &[(u16, u8)]) -> (u16, u8) {
    let mut scores: Vec<u16> = revealed.iter().map(|r| r.0).collect();
    scores.sort_unstable();
    let median = scores
        .get(scores.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0);
    let a = revealed.iter().filter(|r| r.1 == 1).count();
    let b = revealed.iter().filter(|r| r.1 == 2).count();
    let preferred = match a.cmp(&b) {
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Less => 2,
        std::cmp::Ordering::Equal => 0,
    };
    (median, preferred)
}

/// `bps` basis points of `amount` (rounded down).
fn share(amount: U256, bps: u16) -> U256 {
    // amount × 10,000 overflows only for amounts beyond any supply; saturate then.
    amount.saturating_mul(U256::from(bps)) / U256::from(BPS)
}

fn slash(ctx: &mut Ctx, round: u64, v: Address, rt: &Rating, bps: u16) -> ExecResult<()> {
    let amount = share(rt.stakeAtCommit, bps);
    if amount.is_zero() {
        return Ok(());
    }
    let reason = if rt.revealed {
        format!("RLHF round {round}: rating deviates from the consensus")
    } else {
        format!("RLHF round {round}: committed and never revealed")
    };
    let slashed = staking::slash(ctx, &v, amount, &reason)?;
    if !slashed.is_zero() {
        ctx.emit(
            RLHF,
            &IRlhf::ValidatorSlashed {
                roundId: round,
                validator: v,
                amount: slashed,
                revealed: rt.revealed,
            },
        );
    }
    Ok(())
}

/// Finalizes round `id` once its reveal window has passed.
pub fn finalize(ctx: &mut Ctx, id: u64) -> ExecResult<()> {
    let mut r = round(&ctx.state, id)?;
    if r.status != OPEN {
        return Err(ExecError::Invalid(format!(
            "round {id} is already finalized"
        )));
    }
    if ctx.env.timestamp < r.revealEnd {
        return Err(ExecError::Invalid(format!(
            "round {id} can be finalized from {} (unix seconds), after its reveal window; it is now {}",
            r.revealEnd, ctx.env.timestamp
        )));
    }
    let validators = validators_of(&ctx.state, &r)?;
    let mut ratings = Vec::with_capacity(validators.len());
    for v in validators {
        let rt = rating(&ctx.state, id, &v)?
            .ok_or_else(|| StorageError(format!("corrupt RLHF round {id}: {v} has no rating")))?;
        ratings.push((v, rt));
    }
    let revealed: Vec<(u16, u8)> = ratings
        .iter()
        .filter(|(_, rt)| rt.revealed)
        .map(|(_, rt)| (rt.scoreBps, rt.preferred))
        .collect();
    let p = ctx.params.rlhf.clone();
    let counted = revealed.len() >= p.rlhf_min_reveals as usize;
    let (score, preferred) = if counted {
        consensus(&revealed)
    } else {
        (0, 0)
    };
    let mut agreeing = Vec::new();
    for (v, rt) in &ratings {
        if !rt.revealed {
            slash(ctx, id, *v, rt, p.rlhf_no_reveal_slash_bps)?;
            continue;
        }
        if !counted {
            continue;
        }
        let off = rt.scoreBps.abs_diff(score) > p.rlhf_tolerance_bps;
        let opposite = preferred != 0 && rt.preferred != 0 && rt.preferred != preferred;
        if off || opposite {
            slash(ctx, id, *v, rt, p.rlhf_slash_bps)?;
        } else if preferred == 0 || rt.preferred == preferred {
            agreeing.push(*v);
        }
    }
    if !agreeing.is_empty() {
        let left = pool(&ctx.state)?;
        let each = share(left, p.rlhf_round_reward_bps) / U256::from(agreeing.len());
        if !each.is_zero() {
            // each × n <= the round's share <= the pool.
            let paid = each * U256::from(agreeing.len());
            codec::put_u256(&mut ctx.state, POOL.to_vec(), left - paid);
            for v in agreeing {
                ctx.transfer(RLHF, v, each)?;
                ctx.emit(
                    RLHF,
                    &IRlhf::ValidatorRewarded {
                        roundId: id,
                        validator: v,
                        amount: each,
                    },
                );
            }
        }
    }
    if counted {
        let (rounds, sum) = adapter_totals(&ctx.state, r.adapterId)?;
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&rounds.saturating_add(1).to_be_bytes());
        v.extend_from_slice(&sum.saturating_add(score as u64).to_be_bytes());
        ctx.state.put(adapter_key(r.adapterId), v);
        if r.receiptB != 0 && preferred != 0 {
            record_preference(ctx, &r, preferred)?;
        }
    }
    r.status = if counted { FINALIZED } else { VOID };
    r.consensusScoreBps = score;
    r.consensusPreferred = preferred;
    codec::put_sol(&mut ctx.state, round_key(id), &r);
    ctx.emit(
        RLHF,
        &IRlhf::RoundFinalized {
            roundId: id,
            status: r.status,
            consensusScoreBps: score,
            consensusPreferred: preferred,
            reveals: r.reveals,
        },
    );
    Ok(())
}

fn record_preference(ctx: &mut Ctx, r: &IRlhf::Round, preferred: u8) -> ExecResult<()> {
    let (chosen, rejected, chosen_hash, rejected_hash) = if preferred == 1 {
        (r.receiptA, r.receiptB, r.outputHashA, r.outputHashB)
    } else {
        (r.receiptB, r.receiptA, r.outputHashB, r.outputHashA)
    };
    let index = codec::next_id(&mut ctx.state, PREFERENCES)?;
    codec::put_sol(
        &mut ctx.state,
        preference_key(index),
        &Preference {
            roundId: r.id,
            promptHash: r.promptHash,
            chosenReceipt: chosen,
            rejectedReceipt: rejected,
            chosenOutputHash: chosen_hash,
            rejectedOutputHash: rejected_hash,
        },
    );
    ctx.emit(
        RLHF,
        &IRlhf::PreferenceRecorded {
            index,
            roundId: r.id,
            chosenReceipt: chosen,
            rejectedReceipt: rejected,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::consensus;

    #[test]
    fn consensus_is_the_lower_median_and_the_strict_majority() {
        assert_eq!(consensus(&[(7000, 1), (9000, 1), (100, 2)]), (7000, 1));
        assert_eq!(consensus(&[(4000, 2), (6000, 1)]), (4000, 0));
        assert_eq!(consensus(&[(5000, 0), (5000, 0), (5000, 2)]), (5000, 2));
        assert_eq!(consensus(&[]), (0, 0));
    }
}
