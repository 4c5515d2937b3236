//! Inference: prepaid caller credit, operator allowances, receipts that commit to an
//! attribution (top-k contributions with weights plus the root of the full list), and
//! settlement that splits each escrowed fee by the governed split.
//!
//! Keys: `i/c`++address → credit; `i/o`++caller++operator → allowance; `i/n` → receipt count;
//! `i/r`++id → `Receipt` in the compact layout of [`stored`] (142 + 12·k bytes; `getReceipt`
//! still returns the ABI encoding); `i/q`++operator++request id → receipt id (operators'
//! batches, for idempotency; scoped by operator, so nobody else can record an operator's
//! request id first and make its record a skipped duplicate). Credit and escrow sit in the
//! inference module's own balance, which always equals the sum of all credit plus the fees of
//! all unsettled receipts.
//!
//! Fees are computed with checked arithmetic (governed prices times caller-chosen token
//! counts): one that would overflow is refused, never wrapped.
//!
//! A call reads each adapter and attributed contribution once and pays through accounts it
//! holds until the end of the call ([`batch`]); its state and logs are those of reading and
//! paying one by one.

mod batch;
pub mod stored;

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::StateRead,
    math::mul_div,
    modules::rlhf,
    Ctx, ExecError,
};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use batch::Batch;
use openledger_types::{
    abi::IInference::{self, Receipt},
    modules::{INFERENCE, TREASURY},
    params::{Params, BPS, PPM},
};

fn credit_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"i/c", a.as_slice()])
}

fn allowance_key(caller: &Address, operator: &Address) -> Vec<u8> {
    codec::key(&[b"i/o", caller.as_slice(), operator.as_slice()])
}

/// Key of the receipt counter (the last receipt id).
const RECEIPT_COUNT: &[u8] = b"i/n";

fn receipt_key(id: u64) -> Vec<u8> {
    codec::key(&[b"i/r", &id.to_be_bytes()])
}

/// Reads a receipt; a stored value that does not decode (or names another id) is a
/// [`StorageError`] naming the key.
pub fn receipt(state: &dyn StateRead, id: u64) -> ExecResult<Receipt> {
    let key = receipt_key(id);
    let v = state
        .get_ref(&key)?
        .ok_or_else(|| ExecError::NotFound(format!("inference receipt {id}")))?;
    let corrupt = |why: String| {
        StorageError(format!(
            "corrupt inference receipt {id} at key {}: {why}",
            alloy_primitives::hex::encode(&key)
        ))
    };
    let r = stored::decode(&v).map_err(corrupt)?;
    if r.id != id {
        return Err(corrupt(format!("it records id {}", r.id)).into());
    }
    Ok(r)
}

/// Writes receipt `r` at its key.
fn put_receipt(state: &mut crate::Overlay, r: &Receipt) {
    state.put(receipt_key(r.id), stored::encode(r));
}

/// The fee for an inference of the given size; refused when it overflows 256 bits.
pub fn quote(params: &Params, prompt: u32, completion: u32) -> ExecResult<U256> {
    params
        .price_per_prompt_token
        .checked_mul(U256::from(prompt))
        .zip(
            params
                .price_per_completion_token
                .checked_mul(U256::from(completion)),
        )
        .and_then(|(p, c)| p.checked_add(c))
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "the fee for {prompt} prompt and {completion} completion tokens overflows 256 bits at the governed prices"
            ))
        })
}

/// The split of `fee`: (platform, model owner before the unattributed rest, stakers, contributors pool).
/// The parts never add up to more than `fee`.
pub fn split(params: &Params, fee: U256) -> ExecResult<(U256, U256, U256, U256)> {
    let bad = || {
        ExecError::Invalid(format!(
            "the fee split {:?} cannot split a fee of {fee} wei: its parts overflow or exceed the fee",
            params.fee_split
        ))
    };
    let part = |bps: u16| mul_div(fee, bps.into(), BPS.into()).ok_or_else(bad);
    let s = &params.fee_split;
    let (platform, stakers, contributors) = (
        part(s.platform_bps)?,
        part(s.stakers_bps)?,
        part(s.contributors_bps)?,
    );
    let owner = fee
        .checked_sub(platform)
        .and_then(|x| x.checked_sub(stakers))
        .and_then(|x| x.checked_sub(contributors))
        .ok_or_else(bad)?;
    Ok((platform, owner, stakers, contributors))
}

fn credit(state: &dyn StateRead, a: &Address) -> Result<U256, StorageError> {
    codec::get_u256(state, &credit_key(a))
}

fn request_key(operator: &Address, request: &B256) -> Vec<u8> {
    codec::key(&[b"i/q", operator.as_slice(), request.as_slice()])
}

/// The receipt `operator` recorded for its request id, if any.
pub fn receipt_of_request(
    state: &dyn StateRead,
    operator: &Address,
    request: &B256,
) -> ExecResult<Option<u64>> {
    let key = request_key(operator, request);
    let Some(v) = state.get_ref(&key)? else {
        return Ok(None);
    };
    let id = v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
        StorageError(format!(
            "corrupt request record at key {}: {} bytes, not an 8-byte receipt id",
            alloy_primitives::hex::encode(&key),
            v.len()
        ))
    })?;
    Ok(Some(id))
}

/// Records a batch; returns the first new receipt id and how many were recorded.
fn record_batch(ctx: &mut Ctx, c: IInference::recordInferencesCall) -> ExecResult<(u64, u32)> {
    let max = ctx.params.max_settle_batch as usize;
    if c.records.is_empty() || c.records.len() > max {
        return Err(ExecError::Invalid(format!(
            "recordInferences takes 1 to {max} records, got {}",
            c.records.len()
        )));
    }
    let (mut first, mut recorded) = (0u64, 0u32);
    let mut batch = Batch::default();
    // Receipts settled at once are written once, settled, by `settle_one`.
    let mut to_settle = Vec::new();
    ctx.logs
        .reserve(logs_to_reserve(&c, ctx.params.max_attributions as usize));
    for r in c.records {
        if r.requestId.is_zero() {
            return Err(ExecError::Invalid(
                "a batched inference record needs a non-zero requestId".into(),
            ));
        }
        if let Some(existing) = receipt_of_request(&ctx.state, &ctx.sender, &r.requestId)? {
            ctx.emit_words(
                INFERENCE,
                &IInference::InferenceDuplicate {
                    requestId: r.requestId,
                    receiptId: existing,
                },
            );
            continue;
        }
        let request = r.requestId;
        let receipt = record(
            ctx,
            &mut batch,
            IInference::recordInferenceCall {
                caller: r.caller,
                adapterId: r.adapterId,
                promptTokens: r.promptTokens,
                completionTokens: r.completionTokens,
                top: r.top,
                attributionRoot: r.attributionRoot,
            },
            !c.settleNow,
        )?;
        let id = receipt.id;
        if c.settleNow {
            to_settle.push(receipt);
        }
        ctx.state.put(
            request_key(&ctx.sender, &request),
            id.to_be_bytes().to_vec(),
        );
        ctx.emit_words(
            INFERENCE,
            &IInference::InferenceRequest {
                requestId: request,
                receiptId: id,
            },
        );
        if recorded == 0 {
            first = id;
        }
        recorded += 1;
    }
    for r in to_settle {
        settle_one(ctx, &mut batch, r)?;
    }
    batch.finish(ctx)?;
    Ok((first, recorded))
}

/// Logs a batch will emit, to reserve them at once instead of growing the vector: two per record,
/// and per settlement two per attribution and up to six more. Counts come from the calldata
/// before any record is checked (the ABI decoder lets every record point at one shared, long
/// `top` array), so each record counts at most `max_attributions` attributions — a record
/// listing more is refused before it logs anything.
fn logs_to_reserve(c: &IInference::recordInferencesCall, max_attributions: usize) -> usize {
    let per_record = |r: &IInference::InferenceRecord| {
        2 + if c.settleNow {
            2 * r.top.len().min(max_attributions) + 6
        } else {
            0
        }
    };
    c.records.iter().map(per_record).sum()
}

/// Records one inference; writes its receipt when `store` (a receipt about to be settled is
/// written by `settle_one`).
fn record(
    ctx: &mut Ctx,
    batch: &mut Batch,
    c: IInference::recordInferenceCall,
    store: bool,
) -> ExecResult<Receipt> {
    let adapter = batch.adapter(&ctx.state, c.adapterId)?;
    if c.promptTokens == 0 && c.completionTokens == 0 {
        return Err(ExecError::Invalid(
            "an inference needs at least one token".into(),
        ));
    }
    if c.top.len() > ctx.params.max_attributions as usize {
        return Err(ExecError::Invalid(format!(
            "{} attributions listed; a receipt commits at most {} (put the rest under the root)",
            c.top.len(),
            ctx.params.max_attributions
        )));
    }
    let mut total_weight: u64 = 0;
    for (i, a) in c.top.iter().enumerate() {
        if c.top[..i]
            .iter()
            .any(|b| b.contributionId == a.contributionId)
        {
            return Err(ExecError::Invalid(format!(
                "contribution {} is listed twice",
                a.contributionId
            )));
        }
        let contrib = batch.contribution(&ctx.state, a.contributionId)?;
        if !adapter.trained_on(&contrib) {
            return Err(ExecError::Invalid(format!(
                "contribution {} is not in the datanet versions adapter {} was trained on",
                a.contributionId, adapter.id
            )));
        }
        total_weight = total_weight.saturating_add(a.weightPpm as u64); // compared below
    }
    if total_weight > PPM as u64 {
        return Err(ExecError::Invalid(format!(
            "attribution weights sum to {total_weight} ppm, more than {PPM}"
        )));
    }
    let fee = quote(ctx.params, c.promptTokens, c.completionTokens)?;
    // Past the free daily volume only staked agents may call models.
    batch.meter(
        ctx,
        &c.caller,
        c.promptTokens as u64 + c.completionTokens as u64,
    )?;
    if ctx.sender != c.caller {
        let allowed = batch.allowance(&ctx.state, &c.caller, &ctx.sender)?;
        if *allowed < fee {
            return Err(ExecError::Unauthorized(format!(
                "operator {} may spend {allowed} wei of {}'s credit, the fee is {fee} wei",
                ctx.sender, c.caller
            )));
        }
        *allowed -= fee;
    }
    let have = batch.credit(&ctx.state, &c.caller)?;
    if *have < fee {
        return Err(ExecError::Invalid(format!(
            "{} has {have} wei of inference credit, the fee is {fee} wei; deposit first",
            c.caller
        )));
    }
    *have -= fee;
    let id = batch.next_receipt_id(&ctx.state)?;
    let r = Receipt {
        id,
        adapterId: c.adapterId,
        caller: c.caller,
        operator: ctx.sender,
        promptTokens: c.promptTokens,
        completionTokens: c.completionTokens,
        fee,
        attributionRoot: c.attributionRoot,
        top: c.top,
        settled: false,
        recordedAt: ctx.env.timestamp,
    };
    if store {
        put_receipt(&mut ctx.state, &r);
    }
    ctx.emit_words(
        INFERENCE,
        &IInference::InferenceRecorded {
            receiptId: id,
            adapterId: r.adapterId,
            caller: r.caller,
            promptTokens: r.promptTokens,
            completionTokens: r.completionTokens,
            fee,
            attributionRoot: r.attributionRoot,
        },
    );
    Ok(r)
}

/// Settles receipt `r` and writes it, settled; pays through `batch.accounts`.
fn settle_one(ctx: &mut Ctx, batch: &mut Batch, mut r: Receipt) -> ExecResult<U256> {
    let owner = batch.adapter(&ctx.state, r.adapterId)?.owner;
    let (platform, to_owner, stakers, pool) = split(ctx.params, r.fee)?;
    let mut paid = U256::ZERO;
    let overpaid = || {
        ExecError::Invalid(format!(
            "receipt {}'s attribution weights pay out more than the contributors' share",
            r.id
        ))
    };
    for a in &r.top {
        let contributor = batch
            .contribution(&ctx.state, a.contributionId)?
            .contributor;
        let amount = mul_div(pool, a.weightPpm.into(), PPM.into()).ok_or_else(overpaid)?;
        paid = paid.checked_add(amount).ok_or_else(overpaid)?;
        if paid > pool {
            return Err(overpaid());
        }
        batch
            .accounts
            .transfer(ctx, INFERENCE, contributor, amount)?;
        ctx.emit_words(
            INFERENCE,
            &IInference::ContributorPaid {
                receiptId: r.id,
                contributionId: a.contributionId,
                contributor,
                amount,
            },
        );
    }
    // The unattributed rest; `paid <= pool` was checked above, and the parts sum to the fee.
    let to_owner = to_owner + (pool - paid);
    let accounts = &mut batch.accounts;
    accounts.transfer(ctx, INFERENCE, TREASURY, platform)?;
    accounts.transfer(ctx, INFERENCE, owner, to_owner)?;
    // The RLHF validators' slice of the stakers' share, while any validator has joined.
    let stakers = stakers
        - rlhf::fee_share(ctx, r.id, stakers, |ctx, from, to, cut| {
            accounts.transfer(ctx, from, to, cut)
        })?;
    batch.reward_stakers(stakers)?;
    ctx.emit_words(
        INFERENCE,
        &IInference::FeeSettled {
            receiptId: r.id,
            platform,
            modelOwner: to_owner,
            stakers,
            contributors: paid,
        },
    );
    r.settled = true;
    let fee = r.fee;
    put_receipt(&mut ctx.state, &r);
    Ok(fee)
}

/// Executes an inference call.
pub fn call(ctx: &mut Ctx, call: IInference::IInferenceCalls) -> ExecResult<Vec<u8>> {
    use IInference::IInferenceCalls as C;
    let me = ctx.sender;
    Ok(match call {
        C::deposit(_) => {
            if ctx.value.is_zero() {
                return Err(ExecError::Invalid(
                    "deposit needs OPEN sent with the call".into(),
                ));
            }
            let c = credit(&ctx.state, &me)?
                .checked_add(ctx.value)
                .ok_or_else(|| {
                    StorageError("inference credit overflow: supply invariant broken".into())
                })?;
            codec::put_u256(&mut ctx.state, credit_key(&me), c);
            ctx.emit_words(
                INFERENCE,
                &IInference::Deposited {
                    account: me,
                    amount: ctx.value,
                },
            );
            Vec::new()
        }
        C::withdraw(c) => {
            let have = credit(&ctx.state, &me)?;
            if c.amount.is_zero() || c.amount > have {
                return Err(ExecError::Invalid(format!(
                    "cannot withdraw {} wei: your credit is {have} wei",
                    c.amount
                )));
            }
            codec::put_u256(&mut ctx.state, credit_key(&me), have - c.amount);
            ctx.transfer(INFERENCE, me, c.amount)?;
            ctx.emit_words(
                INFERENCE,
                &IInference::CreditWithdrawn {
                    account: me,
                    amount: c.amount,
                },
            );
            Vec::new()
        }
        C::approveOperator(c) => {
            codec::put_u256(&mut ctx.state, allowance_key(&me, &c.operator), c.allowance);
            ctx.emit_words(
                INFERENCE,
                &IInference::OperatorApproved {
                    account: me,
                    operator: c.operator,
                    allowance: c.allowance,
                },
            );
            Vec::new()
        }
        C::recordInference(c) => {
            let mut batch = Batch::default();
            let r = record(ctx, &mut batch, c, true)?;
            batch.finish(ctx)?;
            IInference::recordInferenceCall::abi_encode_returns(&r.id)
        }
        C::recordInferences(c) => {
            let (first, n) = record_batch(ctx, c)?;
            IInference::recordInferencesCall::abi_encode_returns(
                &IInference::recordInferencesReturn {
                    firstReceiptId: first,
                    recorded: n,
                },
            )
        }
        C::receiptOfRequest(c) => receipt_of_request(&ctx.state, &c.operator, &c.requestId)?
            .unwrap_or_default()
            .abi_encode(),
        C::settle(c) => {
            if c.receiptIds.is_empty() || c.receiptIds.len() > ctx.params.max_settle_batch as usize
            {
                return Err(ExecError::Invalid(format!(
                    "settle takes 1 to {} receipt ids, got {}",
                    ctx.params.max_settle_batch,
                    c.receiptIds.len()
                )));
            }
            let mut total = U256::ZERO;
            let mut batch = Batch::default();
            for id in c.receiptIds {
                let r = receipt(&ctx.state, id)?;
                if !r.settled {
                    let fee = settle_one(ctx, &mut batch, r)?;
                    total = total.checked_add(fee).ok_or_else(|| {
                        StorageError("settled fees overflow: supply invariant broken".into())
                    })?;
                }
            }
            batch.finish(ctx)?;
            IInference::settleCall::abi_encode_returns(&total)
        }
        C::creditOf(c) => credit(&ctx.state, &c.account)?.abi_encode(),
        C::allowance(c) => {
            codec::get_u256(&ctx.state, &allowance_key(&c.account, &c.operator))?.abi_encode()
        }
        C::getReceipt(c) => receipt(&ctx.state, c.receiptId)?.abi_encode(),
        C::receiptCount(_) => codec::get_u64(&ctx.state, RECEIPT_COUNT)?.abi_encode(),
        C::quote(c) => quote(ctx.params, c.promptTokens, c.completionTokens)?.abi_encode(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256 records sharing one 1,900-entry `top` array (as crafted calldata decodes) reserve
    /// logs for at most `max_attributions` attributions each, not 486,400 (~78 MB of logs).
    #[test]
    fn the_log_reservation_is_bounded_by_the_attribution_limit() {
        let top = vec![
            IInference::Attribution {
                contributionId: 1,
                weightPpm: 1,
            };
            1_900
        ];
        let record = IInference::InferenceRecord {
            requestId: B256::repeat_byte(1),
            caller: Address::ZERO,
            adapterId: 1,
            promptTokens: 1,
            completionTokens: 1,
            top,
            attributionRoot: B256::ZERO,
        };
        let c = IInference::recordInferencesCall {
            records: vec![record; 256],
            settleNow: true,
        };
        assert_eq!(logs_to_reserve(&c, 16), 256 * (2 + 2 * 16 + 6));
        let unsettled = IInference::recordInferencesCall {
            settleNow: false,
            ..c
        };
        assert_eq!(logs_to_reserve(&unsettled, 16), 256 * 2);
    }
}
