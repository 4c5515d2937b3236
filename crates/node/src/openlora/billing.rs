//! Billing: a request is paid from its caller's prepaid on-chain credit, within the allowance
//! the caller gave this node's operator. Before any compute, [`OpenLora::reserve`] holds the
//! most the request could cost (prompt plus maximum completion tokens at the governed prices)
//! against what the caller has available: the smaller of its credit and its allowance, minus
//! what its other requests hold (in flight, or charged and not yet recorded on chain). A caller
//! short of it gets the 402 message. [`OpenLora::charge`] journals the served inference durably
//! (see [`super::receipts`]) and turns the hold into the actual fee until the recorder has put
//! it on chain; [`OpenLora::release`] (or dropping the [`Reservation`]) frees it unpaid.
//!
//! Bounded: at most [`PaymentLimits::max_reservations_per_caller`] requests in flight per
//! caller, and at most [`PaymentLimits::max_unrecorded`] inferences waiting to be recorded
//! (in-flight ones counted), past which new requests are refused until the recorder catches up.
//!
//! Routes: `POST /v1/api-keys` (only for accounts that gave the operator an allowance),
//! `DELETE /v1/api-keys/{key_hash}`, `GET /v1/openlora`.

use super::{
    api_keys::{self, ApiKeys, KeyBinding},
    receipts::{ReceiptJournal, ServedInference, Unrecorded},
    signed_request, OpenLora,
};
use crate::{datanets::ApiError, sequencer::now};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use axum::{
    extract::{Path, Request, State},
    http::StatusCode,
    routing::{delete, get, post},
    Json, Router,
};
use openledger_state::{
    executor::simulate_call,
    modules::{agent, inference, model},
    StateRead,
};
use openledger_types::{
    abi::IInference, modules::INFERENCE, request_auth, units::format_open, Params,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

/// Bounds on what billing holds in memory and on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentLimits {
    /// Most requests of one caller in flight at once (reserved, not charged or released yet).
    pub max_reservations_per_caller: usize,
    /// Most inferences charged and not yet recorded on chain, plus reservations in flight;
    /// past it requests are refused until the recorder catches up.
    pub max_unrecorded: usize,
    /// Most records in one `recordInferences` transaction (also capped by the governed
    /// `max_settle_batch` and by the transaction size limit).
    pub max_batch: usize,
}

impl Default for PaymentLimits {
    fn default() -> Self {
        PaymentLimits {
            max_reservations_per_caller: 64,
            max_unrecorded: 100_000,
            max_batch: 256,
        }
    }
}

/// A hold on a caller's credit for one request in flight. Opaque; dropping it releases the hold
/// (as [`OpenLora::release`] does), so an abandoned request never keeps credit held.
pub struct Reservation {
    caller: Address,
    amount: U256,
    id: u64,
    holds: Holds,
}

impl Reservation {
    /// The account the request is paid by.
    pub fn caller(&self) -> Address {
        self.caller
    }

    /// The fee held: the most the request could cost.
    pub fn amount(&self) -> U256 {
        self.amount
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("caller", &self.caller)
            .field("amount", &self.amount)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.holds.release(self.caller, self.amount);
    }
}

/// What each caller holds: reservations in flight and fees journaled but not yet recorded.
#[derive(Clone, Default)]
pub(crate) struct Holds(Arc<Mutex<HashMap<Address, Hold>>>);

#[derive(Default)]
struct Hold {
    reserved: U256,
    reservations: usize,
    journaled: U256,
}

impl Hold {
    fn is_empty(&self) -> bool {
        self.reservations == 0 && self.journaled.is_zero()
    }
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<Address, Hold>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, caller: Address, amount: U256) {
        let mut t = self.lock();
        if let Some(h) = t.get_mut(&caller) {
            h.reserved = h.reserved.saturating_sub(amount);
            h.reservations = h.reservations.saturating_sub(1);
            if h.is_empty() {
                t.remove(&caller);
            }
        }
    }

    pub(crate) fn journal(&self, caller: Address, fee: U256) {
        let mut t = self.lock();
        let h = t.entry(caller).or_default();
        h.journaled = h.journaled.saturating_add(fee);
    }

    pub(crate) fn unjournal(&self, caller: Address, fee: U256) {
        let mut t = self.lock();
        if let Some(h) = t.get_mut(&caller) {
            h.journaled = h.journaled.saturating_sub(fee);
            if h.is_empty() {
                t.remove(&caller);
            }
        }
    }

    /// Reservations in flight, over every caller.
    fn in_flight(&self) -> usize {
        self.lock().values().map(|h| h.reservations).sum()
    }
}

/// The payments half of [`OpenLora`]: API keys, holds, the receipt journal.
pub struct Payments {
    operator: Option<Address>,
    /// API keys bound to accounts.
    pub keys: ApiKeys,
    /// Served inferences not yet recorded on chain.
    pub journal: ReceiptJournal,
    pub(crate) holds: Holds,
    limits: Mutex<PaymentLimits>,
    next_id: AtomicU64,
    /// Wakes the recorder early (a full batch is waiting).
    pub(crate) wake: tokio::sync::Notify,
    /// One recorder pass at a time.
    pub(crate) recording: tokio::sync::Mutex<()>,
}

impl Payments {
    /// Opens the key table and the receipt journal in `dir` (compacting the journal) and holds
    /// every unrecorded fee against its caller again.
    pub fn open(
        node: &crate::sequencer::Node,
        dir: &std::path::Path,
        operator: Option<Address>,
    ) -> Result<Payments, String> {
        let keys = ApiKeys::open(&dir.join("api_keys.json"))?;
        let params = node.chain().params().map_err(|e| e.to_string())?;
        let (journal, found) = ReceiptJournal::open(dir, |s| fee_of(&params, s))?;
        if found.torn_bytes > 0 {
            tracing::warn!(
                bytes = found.torn_bytes,
                "ignored a torn last line of the receipt journal (it was never acknowledged)"
            );
        }
        let holds = Holds::default();
        for u in journal.oldest(usize::MAX) {
            holds.journal(u.served.caller, u.fee);
        }
        if !found.unrecorded.is_empty() {
            tracing::info!(
                unrecorded = found.unrecorded.len(),
                "served inferences from the receipt journal wait to be recorded on chain"
            );
            if operator.is_none() {
                tracing::warn!(
                    "the receipt journal holds unrecorded inferences but no operator key is \
                     configured: they are recorded once the node runs with its operator key"
                );
            }
        }
        Ok(Payments {
            operator,
            keys,
            journal,
            holds,
            limits: Mutex::new(PaymentLimits::default()),
            next_id: AtomicU64::new(1),
            wake: tokio::sync::Notify::new(),
            recording: tokio::sync::Mutex::new(()),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> PaymentLimits {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the limits.
    pub fn set_limits(&self, l: PaymentLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }
}

/// The fee of a served inference at `params` (saturating: an overflowing fee cannot be
/// recorded anyway, and the chain refuses it).
fn fee_of(params: &Params, s: &ServedInference) -> U256 {
    inference::quote(params, s.prompt_tokens, s.completion_tokens).unwrap_or(U256::MAX)
}

/// Calls a view of a module on `state`.
fn view(
    state: &dyn StateRead,
    env: &openledger_state::Env,
    params: &Params,
    to: Address,
    data: Vec<u8>,
) -> Result<Vec<u8>, String> {
    simulate_call(state, env, params, Address::ZERO, to, U256::ZERO, &data)
        .map(|(out, _, _)| out)
        .map_err(|e| e.to_string())
}

/// What the chain says about a caller, read from the pending state.
struct Standing {
    params: Params,
    credit: U256,
    allowance: U256,
}

impl OpenLora {
    /// Whether this node charges for inference (an operator key is configured).
    pub fn billing_enabled(&self) -> bool {
        self.payments.operator.is_some()
    }

    /// The operator's address (who records receipts), if billing is on.
    pub fn operator(&self) -> Option<Address> {
        self.payments.operator
    }

    /// The account an API key (the bearer token as sent) acts for; `None` when unknown or
    /// revoked.
    pub fn account_for_key(&self, key: &str) -> Option<Address> {
        self.payments.keys.account_for(key)
    }

    /// The payment limits in force.
    pub fn payment_limits(&self) -> PaymentLimits {
        self.payments.limits()
    }

    /// Replaces the payment limits.
    pub fn set_payment_limits(&self, l: PaymentLimits) {
        self.payments.set_limits(l)
    }

    /// Reads the governed prices, `caller`'s credit and its allowance to the operator from the
    /// pending state, and checks that `adapter_id` is an adapter on chain.
    fn standing(&self, caller: Address, adapter_id: u64) -> Result<Standing, String> {
        let operator = self.payments.operator.ok_or_else(|| {
            "this node has no operator key, so it does not charge for inference".to_string()
        })?;
        let chain = self.node.chain();
        let params = chain.params().map_err(|e| e.to_string())?;
        let env = chain.pending_env(now()).map_err(|e| e.to_string())?;
        chain.with_pending_state(|s| {
            if adapter_id == 0 {
                return Err(
                    "inference is charged per adapter: name an adapter (the base model \
                            alone has no on-chain receipt)"
                        .to_string(),
                );
            }
            if model::adapter(s, adapter_id).is_err() {
                return Err(format!("adapter {adapter_id} is not registered on chain"));
            }
            let credit = U256::abi_decode(&view(
                s,
                &env,
                &params,
                INFERENCE,
                IInference::creditOfCall { account: caller }.abi_encode(),
            )?)
            .map_err(|e| e.to_string())?;
            let allowance = if caller == operator {
                U256::MAX
            } else {
                U256::abi_decode(&view(
                    s,
                    &env,
                    &params,
                    INFERENCE,
                    IInference::allowanceCall {
                        account: caller,
                        operator,
                    }
                    .abi_encode(),
                )?)
                .map_err(|e| e.to_string())?
            };
            Ok(Standing {
                params: params.clone(),
                credit,
                allowance,
            })
        })
    }

    /// Refuses, before any compute, a request that could take `caller` past the governed free
    /// daily token volume while it holds no agent stake: the chain would refuse to record it
    /// (see `openledger_state::modules::agent`). Counts the tokens already recorded today, not
    /// those served and not yet recorded.
    fn check_agent_volume(&self, caller: Address, tokens: u64) -> Result<(), String> {
        let chain = self.node.chain();
        let params = chain.params().map_err(|e| e.to_string())?;
        let env = chain.pending_env(now()).map_err(|e| e.to_string())?;
        chain
            .with_pending_state(|s| agent::check_volume(s, &params, env.timestamp, &caller, tokens))
            .map(drop)
            .map_err(|e| {
                format!(
                    "this request may use up to {tokens} tokens and would be refused on chain: {e}"
                )
            })
    }

    /// Holds the largest fee this request could cost (prompt + max completion tokens at the
    /// governed prices) against the caller's credit, capped by its allowance to the operator,
    /// minus what its other in-flight and journaled-unrecorded requests hold. Err: the 402
    /// message (how much is needed, what is available, how to deposit/approve).
    pub fn reserve(
        &self,
        caller: Address,
        adapter_id: u64,
        prompt_tokens: u32,
        max_completion_tokens: u32,
    ) -> Result<Reservation, String> {
        let st = self.standing(caller, adapter_id)?;
        let need = inference::quote(&st.params, prompt_tokens, max_completion_tokens)
            .map_err(|e| e.to_string())?;
        self.check_agent_volume(caller, prompt_tokens as u64 + max_completion_tokens as u64)?;
        let limits = self.payments.limits();
        let backlog = self.payments.journal.unrecorded() + self.payments.holds.in_flight();
        if backlog >= limits.max_unrecorded {
            return Err(format!(
                "this node has {backlog} inferences waiting to be recorded on chain (its limit is \
                 {}); retry in a few seconds",
                limits.max_unrecorded
            ));
        }
        let operator = self.payments.operator.unwrap_or_default();
        let mut t = self.payments.holds.lock();
        let hold = t.entry(caller).or_default();
        if hold.reservations >= limits.max_reservations_per_caller {
            let n = hold.reservations;
            if hold.is_empty() {
                t.remove(&caller);
            }
            return Err(format!(
                "{caller} already has {n} requests in flight at this node (the most it takes \
                 per account); wait for one to finish"
            ));
        }
        let held = hold.reserved.saturating_add(hold.journaled);
        let spendable = st.credit.min(st.allowance);
        let available = spendable.saturating_sub(held);
        if need > available {
            let (n, journaled) = (hold.reservations, hold.journaled);
            if hold.is_empty() {
                t.remove(&caller);
            }
            let allowance = if caller == operator {
                "unlimited (it is the operator)".to_string()
            } else {
                format!("{} OPEN", format_open(st.allowance))
            };
            return Err(format!(
                "payment required: this request may cost up to {} OPEN ({prompt_tokens} prompt + \
                 {max_completion_tokens} completion tokens at {} and {} OPEN per token), and \
                 {caller} has {} OPEN available (credit {} OPEN, allowance to operator \
                 {operator}: {allowance}; held by {n} requests in flight: {} OPEN, by served \
                 inferences not yet recorded: {} OPEN). Deposit credit with `openledger --from \
                 KEY inference deposit AMOUNT` and raise the allowance with `openledger --from \
                 KEY api-key new --allowance AMOUNT` (or `inference approve-operator {operator} \
                 AMOUNT`)",
                format_open(need),
                format_open(st.params.price_per_prompt_token),
                format_open(st.params.price_per_completion_token),
                format_open(available),
                format_open(st.credit),
                format_open(held.saturating_sub(journaled)),
                format_open(journaled),
            ));
        }
        hold.reserved = hold.reserved.saturating_add(need);
        hold.reservations += 1;
        Ok(Reservation {
            caller,
            amount: need,
            id: self.payments.next_id.fetch_add(1, Ordering::Relaxed),
            holds: self.payments.holds.clone(),
        })
    }

    /// Writes the served inference to the receipt journal and returns once it is on disk (call
    /// before the answer's last bytes go out), releases the reservation and queues the record
    /// for the recorder. No tokens at all: nothing is charged (the reservation is released).
    pub fn charge(&self, r: Reservation, record: ServedInference) -> Result<(), String> {
        if record.prompt_tokens == 0 && record.completion_tokens == 0 {
            return Ok(());
        }
        if record.caller != r.caller {
            return Err(format!(
                "the inference names caller {} but was reserved for {}",
                record.caller, r.caller
            ));
        }
        if record.request_id == B256::ZERO {
            return Err("a served inference needs a non-zero request id".into());
        }
        let limits = self.payments.limits();
        let waiting = self.payments.journal.unrecorded();
        if waiting >= limits.max_unrecorded {
            return Err(format!(
                "{waiting} served inferences are waiting to be recorded on chain (the limit is \
                 {}); this one is not charged",
                limits.max_unrecorded
            ));
        }
        let params = self.node.chain().params().map_err(|e| e.to_string())?;
        let fee = fee_of(&params, &record);
        let caller = record.caller;
        // Counted before it is journaled and before the reservation goes, so the fee is held
        // at every moment.
        self.payments.holds.journal(caller, fee);
        if let Err(e) = self.payments.journal.append(Unrecorded {
            served: record,
            fee,
        }) {
            self.payments.holds.unjournal(caller, fee);
            return Err(format!("the inference could not be charged: {e}"));
        }
        drop(r);
        let batch = limits
            .max_batch
            .min(params.max_settle_batch as usize)
            .max(1);
        if self.payments.journal.unrecorded() >= batch {
            self.payments.wake.notify_one();
        }
        Ok(())
    }

    /// Refuses an API key for an account that gives the operator no allowance on chain: such
    /// a key could pay for nothing, and requiring the approval (a transaction) keeps throwaway
    /// accounts from filling the key table.
    fn check_may_bind(&self, account: Address, operator: Address) -> Result<(), ApiError> {
        if account == operator {
            return Ok(());
        }
        let chain = self.node.chain();
        let params = chain
            .params()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let env = chain
            .pending_env(now())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let allowance = chain
            .with_pending_state(|s| {
                view(
                    s,
                    &env,
                    &params,
                    INFERENCE,
                    IInference::allowanceCall { account, operator }.abi_encode(),
                )
            })
            .and_then(|out| U256::abi_decode(&out).map_err(|e| e.to_string()))
            .map_err(ApiError::Internal)?;
        if allowance.is_zero() {
            return Err(ApiError::Forbidden(format!(
                "{account} gives this node's operator {operator} no allowance on its inference \
                 credit, so a key could pay for nothing: approve one first (`openledger --from \
                 KEY api-key new --allowance AMOUNT` does both)"
            )));
        }
        Ok(())
    }

    /// Drops a reservation without charging (rejected, failed, cancelled before any token).
    pub fn release(&self, r: Reservation) {
        drop(r);
    }

    /// `GET /v1/openlora`: the operator, whether billing is on, the governed prices (wei, as
    /// decimal strings) and the served base model's hash.
    pub fn info(&self) -> Value {
        let params = self.node.chain().params().ok();
        let price = |f: fn(&Params) -> U256| params.as_ref().map(|p| f(p).to_string());
        json!({
            "chain_id": self.node.chain_id(),
            "operator": self.payments.operator,
            "billing": self.billing_enabled(),
            "price_per_prompt_token": price(|p| p.price_per_prompt_token),
            "price_per_completion_token": price(|p| p.price_per_completion_token),
            "model_hash": self.served_model_hash,
            "unrecorded": self.payments.journal.unrecorded(),
        })
    }
}

/// The payments routes.
pub fn routes() -> Router<Arc<OpenLora>> {
    Router::new()
        .route("/v1/openlora", get(info))
        .route("/v1/api-keys", post(bind))
        .route("/v1/api-keys/{key_hash}", delete(revoke))
}

async fn info(State(o): State<Arc<OpenLora>>) -> Json<Value> {
    Json(o.info())
}

async fn bind(
    State(o): State<Arc<OpenLora>>,
    Json(b): Json<KeyBinding>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let operator = o.payments.operator.ok_or_else(|| {
        ApiError::Unavailable(
            "this node has no operator key, so it issues no API keys (billing is off)".into(),
        )
    })?;
    let chain_id = o.node.chain_id();
    let o2 = o.clone();
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || {
        let now = now();
        api_keys::verify_binding(&b2, chain_id, operator, now)?;
        o2.check_may_bind(b2.address, operator)?;
        o2.payments.keys.bind(&b2, chain_id, operator, now)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))??;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "address": b.address, "key_hash": b.key_hash, "operator": operator })),
    ))
}

async fn revoke(
    State(o): State<Arc<OpenLora>>,
    Path(key_hash): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, _) = request.into_parts();
    let signed = signed_request(&parts, &o.node, "revoking an API key")?;
    if signed.body_hash != request_auth::body_hash(b"") {
        return Err(ApiError::Unauthorized(
            "a signed DELETE covers an empty body; sign the hash of no bytes".into(),
        ));
    }
    let hash: B256 = key_hash.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{key_hash:?} is not a key hash (0x + 64 hex digits)"
        ))
    })?;
    let o2 = o.clone();
    tokio::task::spawn_blocking(move || o2.payments.keys.revoke(&hash, signed.address, now()))
        .await
        .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))??;
    Ok(Json(json!({ "revoked": hash })))
}
