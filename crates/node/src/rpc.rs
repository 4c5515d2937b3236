//! The Ethereum JSON-RPC server (axum) on 127.0.0.1: the eth_* subset wallets and libraries
//! need, single and batch requests, request-size and batch-size limits, and JSON-RPC errors for
//! anything malformed. Module views go through `eth_call`; module events come back as logs.

use crate::{
    chain::ChainError,
    sequencer::{error_code, now, Node},
};
use alloy_consensus::{
    transaction::Recovered, Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxEnvelope,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_rpc_types_eth::{
    Block, BlockId, BlockNumberOrTag, BlockTransactions, Filter, FilterBlockOption,
    Header as RpcHeader, Log as RpcLog, Transaction, TransactionReceipt, TransactionRequest,
};
use alloy_sol_types::{Revert, SolError};
use axum::{
    body::Bytes as Body,
    extract::{DefaultBodyLimit, State},
    routing::post,
    Json, Router,
};
use openledger_state::{executor::simulate_call, modules::bank, StateRead};
use openledger_store::{BlockRecord, TxRecord};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::Arc;

/// A JSON-RPC error object.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    fn params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }
}

impl From<ChainError> for RpcError {
    fn from(e: ChainError) -> Self {
        let code = error_code(&e);
        let message = e.to_string();
        let data =
            (code == 3).then(|| json!(Bytes::from(Revert::from(message.clone()).abi_encode())));
        RpcError {
            code,
            message: if code == 3 {
                format!("execution reverted: {message}")
            } else {
                message
            },
            data,
        }
    }
}

impl From<openledger_state::ExecError> for RpcError {
    fn from(e: openledger_state::ExecError) -> Self {
        ChainError::from(e).into()
    }
}

impl From<openledger_state::StorageError> for RpcError {
    fn from(e: openledger_state::StorageError) -> Self {
        openledger_state::ExecError::from(e).into()
    }
}

impl From<openledger_store::StoreError> for RpcError {
    fn from(e: openledger_store::StoreError) -> Self {
        ChainError::from(e).into()
    }
}

type RpcResult = Result<Value, RpcError>;

/// The HTTP router: JSON-RPC on `POST /`, the REST routes of [`crate::rest`] under `/v1`.
pub fn router(node: Arc<Node>) -> Router {
    let limit = node.config.max_request_bytes;
    Router::new()
        .route("/", post(handle).layer(DefaultBodyLimit::max(limit)))
        .merge(crate::rest::router(node.clone()))
        .with_state(node)
}

/// Serves JSON-RPC on `listener` until `stop` resolves.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(stop)
        .await
}

async fn handle(State(node): State<Arc<Node>>, body: Body) -> Json<Value> {
    let node2 = node.clone();
    let out = tokio::task::spawn_blocking(move || handle_body(&node2, &body)).await;
    Json(out.unwrap_or_else(|e| {
        error_response(
            Value::Null,
            RpcError::new(-32603, format!("internal error: {e}")),
        )
    }))
}

fn error_response(id: Value, e: RpcError) -> Value {
    let mut err = json!({ "code": e.code, "message": e.message });
    if let Some(d) = e.data {
        err["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

/// Handles one request body (single call or batch). In dev mode, seals a block after a body
/// that submitted transactions.
pub fn handle_body(node: &Node, body: &[u8]) -> Value {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                Value::Null,
                RpcError::new(-32700, format!("parse error: {e}")),
            )
        }
    };
    let mut submitted = false;
    let out = match parsed {
        Value::Array(calls) if calls.is_empty() => {
            error_response(Value::Null, RpcError::new(-32600, "empty batch"))
        }
        Value::Array(calls) if calls.len() > node.config.max_batch => error_response(
            Value::Null,
            RpcError::new(
                -32600,
                format!(
                    "batch of {} calls exceeds the limit of {}",
                    calls.len(),
                    node.config.max_batch
                ),
            ),
        ),
        Value::Array(calls) => Value::Array(
            calls
                .into_iter()
                .map(|c| handle_call(node, c, &mut submitted))
                .collect(),
        ),
        single => handle_call(node, single, &mut submitted),
    };
    if submitted && node.config.dev {
        if let Err(e) = node.seal() {
            tracing::error!("sealing failed: {e}");
        }
    }
    out
}

fn handle_call(node: &Node, call: Value, submitted: &mut bool) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = call.get("method").and_then(Value::as_str) else {
        return error_response(
            id,
            RpcError::new(-32600, "invalid request: missing \"method\""),
        );
    };
    let params = match call.get("params") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return error_response(id, RpcError::new(-32602, "params must be an array")),
    };
    if method == "eth_sendRawTransaction" {
        *submitted = true;
    }
    match dispatch(node, method, &params) {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => error_response(id, e),
    }
}

fn param<T: DeserializeOwned>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = params
        .get(i)
        .ok_or_else(|| RpcError::params(format!("missing parameter {i} ({what})")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| RpcError::params(format!("invalid parameter {i} ({what}): {e}")))
}

fn opt_param<T: DeserializeOwned>(
    params: &[Value],
    i: usize,
    what: &str,
) -> Result<Option<T>, RpcError> {
    match params.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => param(params, i, what).map(Some),
    }
}

fn hex_u64(v: u64) -> Value {
    json!(format!("{v:#x}"))
}

fn dispatch(node: &Node, method: &str, p: &[Value]) -> RpcResult {
    match method {
        "web3_clientVersion" => Ok(json!(concat!("openledger/v", env!("CARGO_PKG_VERSION")))),
        "eth_chainId" => Ok(hex_u64(node.chain_id())),
        "net_version" => Ok(json!(node.chain_id().to_string())),
        "net_listening" => Ok(json!(true)),
        "eth_syncing" => Ok(json!(false)),
        "eth_accounts" => Ok(json!([])),
        "eth_blockNumber" => Ok(hex_u64(node.chain().store().head()?.unwrap_or(0))),
        "eth_gasPrice" => Ok(hex_u64(node.chain().params()?.min_gas_price_wei)),
        "eth_maxPriorityFeePerGas" => Ok(hex_u64(0)),
        "eth_feeHistory" => fee_history(node, p),
        "eth_getBalance" => {
            let addr: Address = param(p, 0, "address")?;
            let id = block_id(p, 1)?;
            with_state(node, id, |s| Ok(json!(bank::account(s, &addr)?.balance)))
        }
        "eth_getTransactionCount" => {
            let addr: Address = param(p, 0, "address")?;
            let id = block_id(p, 1)?;
            with_state(node, id, |s| Ok(hex_u64(bank::account(s, &addr)?.nonce)))
        }
        "eth_getCode" => {
            let _: Address = param(p, 0, "address")?;
            Ok(json!("0x"))
        }
        "eth_sendRawTransaction" => {
            let raw: Bytes = param(p, 0, "signed transaction bytes")?;
            Ok(json!(node.submit_raw(&raw)?))
        }
        "eth_call" => {
            let req: TransactionRequest = param(p, 0, "call object")?;
            let id = block_id(p, 1)?;
            let (out, _) = simulate(node, &req, id)?;
            Ok(json!(Bytes::from(out)))
        }
        "eth_estimateGas" => {
            let req: TransactionRequest = param(p, 0, "call object")?;
            let id = block_id(p, 1)?;
            let (_, gas) = simulate(node, &req, id)?;
            Ok(hex_u64(gas))
        }
        "eth_getTransactionByHash" => {
            let hash: B256 = param(p, 0, "transaction hash")?;
            tx_by_hash(node, hash)
        }
        "eth_getTransactionReceipt" => {
            let hash: B256 = param(p, 0, "transaction hash")?;
            let store = node.chain().store().clone();
            match store.tx(&hash)? {
                None => Ok(Value::Null),
                Some(rec) => {
                    let block = store
                        .block(rec.block_number)?
                        .ok_or_else(|| RpcError::new(-32603, "block missing"))?;
                    Ok(serde_json::to_value(receipt_json(&rec, &block)?).map_err(internal)?)
                }
            }
        }
        "eth_getBlockByNumber" => {
            let tag: BlockNumberOrTag = param(p, 0, "block number or tag")?;
            let full: bool = opt_param(p, 1, "full transactions flag")?.unwrap_or(false);
            let store = node.chain().store().clone();
            let n = match resolve_number(node, tag)? {
                Some(n) => n,
                None => return Ok(Value::Null),
            };
            match store.block(n)? {
                None => Ok(Value::Null),
                Some(b) => block_json(&store, &b, full),
            }
        }
        "eth_getBlockByHash" => {
            let hash: B256 = param(p, 0, "block hash")?;
            let full: bool = opt_param(p, 1, "full transactions flag")?.unwrap_or(false);
            let store = node.chain().store().clone();
            match store
                .block_number(&hash)?
                .map(|n| store.block(n))
                .transpose()?
                .flatten()
            {
                None => Ok(Value::Null),
                Some(b) => block_json(&store, &b, full),
            }
        }
        "eth_getLogs" => {
            let filter: Filter = param(p, 0, "filter")?;
            get_logs(node, &filter)
        }
        other => Err(RpcError::new(
            -32601,
            format!("method {other} is not supported"),
        )),
    }
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(-32603, format!("internal error: {e}"))
}

fn block_id(p: &[Value], i: usize) -> Result<BlockId, RpcError> {
    Ok(opt_param(p, i, "block")?.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest)))
}

/// The block number a tag names; `None` for pending (not sealed) or past the head.
fn resolve_number(node: &Node, tag: BlockNumberOrTag) -> Result<Option<u64>, RpcError> {
    let head = node.chain().store().head()?.unwrap_or(0);
    Ok(match tag {
        BlockNumberOrTag::Number(n) if n <= head => Some(n),
        BlockNumberOrTag::Number(_) | BlockNumberOrTag::Pending => None,
        BlockNumberOrTag::Earliest => Some(0),
        _ => Some(head),
    })
}

fn with_state(node: &Node, id: BlockId, f: impl FnOnce(&dyn StateRead) -> RpcResult) -> RpcResult {
    let chain = node.chain();
    let store = chain.store().clone();
    let head = store.head()?.unwrap_or(0);
    let number = match id {
        BlockId::Number(BlockNumberOrTag::Pending) => return chain.with_pending_state(f),
        BlockId::Number(BlockNumberOrTag::Number(n)) => n,
        BlockId::Number(BlockNumberOrTag::Earliest) => 0,
        BlockId::Number(_) => head,
        BlockId::Hash(h) => store
            .block_number(&h.block_hash)?
            .ok_or_else(|| RpcError::new(-32001, format!("block {} not found", h.block_hash)))?,
    };
    drop(chain);
    if number > head {
        return Err(RpcError::new(
            -32001,
            format!("block {number} not found (head is {head})"),
        ));
    }
    if number == head {
        f(&*store)
    } else {
        f(&store.state_at(number))
    }
}

fn simulate(
    node: &Node,
    req: &TransactionRequest,
    id: BlockId,
) -> Result<(Vec<u8>, u64), RpcError> {
    let to = match req.to {
        Some(alloy_primitives::TxKind::Call(a)) => a,
        _ => {
            return Err(RpcError::params(
                "call object needs a \"to\" address (there is no contract creation)",
            ))
        }
    };
    let data = req.input.input().cloned().unwrap_or_default();
    let from = req.from.unwrap_or_default();
    let value = req.value.unwrap_or_default();
    let (env, params) = {
        let chain = node.chain();
        (chain.pending_env(now())?, chain.params()?)
    };
    with_state(node, id, |s| {
        let (out, gas, _) = simulate_call(s, &env, &params, from, to, value, &data)?;
        Ok(json!([Bytes::from(out), gas]))
    })
    .and_then(|v| {
        let out: Bytes = serde_json::from_value(v[0].clone()).map_err(internal)?;
        Ok((out.to_vec(), v[1].as_u64().unwrap_or_default()))
    })
}

fn fee_history(node: &Node, p: &[Value]) -> RpcResult {
    let count: alloy_primitives::U64 = param(p, 0, "block count")?;
    let count = count.to::<u64>().clamp(1, 1024);
    let head = node.chain().store().head()?.unwrap_or(0);
    let base = node.chain().params()?.min_gas_price_wei;
    let n = count.min(head + 1);
    let pct: Vec<f64> = opt_param(p, 2, "reward percentiles")?.unwrap_or_default();
    Ok(json!({
        "oldestBlock": hex_u64(head + 1 - n),
        "baseFeePerGas": vec![hex_u64(base); n as usize + 1],
        "gasUsedRatio": vec![0.0; n as usize],
        "reward": vec![vec![hex_u64(0); pct.len()]; n as usize],
    }))
}

fn decode_tx(rec: &TxRecord) -> Result<TxEnvelope, RpcError> {
    TxEnvelope::decode_2718(&mut rec.raw.as_ref()).map_err(internal)
}

fn tx_json(rec: &TxRecord, block: &BlockRecord) -> Result<Transaction, RpcError> {
    Ok(Transaction {
        inner: Recovered::new_unchecked(decode_tx(rec)?, rec.sender),
        block_hash: Some(block.hash()),
        block_number: Some(rec.block_number),
        transaction_index: Some(rec.index),
        effective_gas_price: Some(rec.gas_price),
        block_timestamp: Some(block.header.timestamp),
    })
}

fn tx_by_hash(node: &Node, hash: B256) -> RpcResult {
    let chain = node.chain();
    if let Some(t) = chain.pending_txs().find(|t| t.hash == hash) {
        let tx = Transaction {
            inner: Recovered::new_unchecked(t.envelope.clone(), t.sender),
            block_hash: None,
            block_number: None,
            transaction_index: None,
            effective_gas_price: None,
            block_timestamp: None,
        };
        return serde_json::to_value(tx).map_err(internal);
    }
    let store = chain.store().clone();
    drop(chain);
    match store.tx(&hash)? {
        None => Ok(Value::Null),
        Some(rec) => {
            let block = store
                .block(rec.block_number)?
                .ok_or_else(|| internal("block missing"))?;
            serde_json::to_value(tx_json(&rec, &block)?).map_err(internal)
        }
    }
}

fn rpc_logs(rec: &TxRecord, block: &BlockRecord) -> Vec<RpcLog> {
    rec.logs
        .iter()
        .enumerate()
        .map(|(i, l)| RpcLog {
            inner: l.clone(),
            block_hash: Some(block.hash()),
            block_number: Some(rec.block_number),
            block_timestamp: Some(block.header.timestamp),
            transaction_hash: Some(rec.hash),
            transaction_index: Some(rec.index),
            log_index: Some(rec.first_log_index + i as u64),
            removed: false,
        })
        .collect()
}

fn receipt_json(rec: &TxRecord, block: &BlockRecord) -> Result<TransactionReceipt, RpcError> {
    let tx = decode_tx(rec)?;
    let logs = rpc_logs(rec, block);
    let receipt = Receipt {
        status: Eip658Value::Eip658(true),
        cumulative_gas_used: rec.cumulative_gas_used,
        logs,
    };
    let bloom = alloy_primitives::logs_bloom(rec.logs.iter());
    let with_bloom = ReceiptWithBloom {
        receipt,
        logs_bloom: bloom,
    };
    let inner = match tx {
        TxEnvelope::Legacy(_) => ReceiptEnvelope::Legacy(with_bloom),
        TxEnvelope::Eip2930(_) => ReceiptEnvelope::Eip2930(with_bloom),
        _ => ReceiptEnvelope::Eip1559(with_bloom),
    };
    Ok(TransactionReceipt {
        inner,
        transaction_hash: rec.hash,
        transaction_index: Some(rec.index),
        block_hash: Some(block.hash()),
        block_number: Some(rec.block_number),
        gas_used: rec.gas_used,
        effective_gas_price: rec.gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: rec.sender,
        to: alloy_consensus::Transaction::to(&tx),
        contract_address: None,
    })
}

fn block_json(store: &openledger_store::Store, b: &BlockRecord, full: bool) -> RpcResult {
    let transactions = if full {
        let mut txs = Vec::with_capacity(b.tx_hashes.len());
        for h in &b.tx_hashes {
            let rec = store
                .tx(h)?
                .ok_or_else(|| internal(format!("transaction {h} missing")))?;
            txs.push(tx_json(&rec, b)?);
        }
        BlockTransactions::Full(txs)
    } else {
        BlockTransactions::Hashes(b.tx_hashes.clone())
    };
    let size = alloy_rlp::Encodable::length(&b.header);
    let block = Block {
        header: RpcHeader {
            hash: b.hash(),
            inner: b.header.clone(),
            total_difficulty: Some(U256::ZERO),
            size: Some(U256::from(size)),
        },
        uncles: vec![],
        transactions,
        withdrawals: None,
    };
    serde_json::to_value(block).map_err(internal)
}

fn get_logs(node: &Node, filter: &Filter) -> RpcResult {
    let store = node.chain().store().clone();
    let head = store.head()?.unwrap_or(0);
    let (from, to) = match &filter.block_option {
        FilterBlockOption::AtBlockHash(h) => {
            let n = store
                .block_number(h)?
                .ok_or_else(|| RpcError::new(-32001, format!("block {h} not found")))?;
            (n, n)
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let num = |t: &Option<BlockNumberOrTag>| match t {
                Some(BlockNumberOrTag::Number(n)) => (*n).min(head),
                Some(BlockNumberOrTag::Earliest) => 0,
                _ => head,
            };
            (num(from_block), num(to_block))
        }
    };
    if from > to {
        return Err(RpcError::params(format!(
            "fromBlock {from} is after toBlock {to}"
        )));
    }
    if to - from + 1 > node.config.max_log_range {
        return Err(RpcError::new(
            -32005,
            format!(
                "range of {} blocks exceeds the limit of {}; narrow fromBlock/toBlock",
                to - from + 1,
                node.config.max_log_range
            ),
        ));
    }
    let mut out = Vec::new();
    for n in from..=to {
        let Some(b) = store.block(n)? else { continue };
        if !filter.matches_bloom(b.header.logs_bloom) {
            continue;
        }
        for h in &b.tx_hashes {
            let rec = store
                .tx(h)?
                .ok_or_else(|| internal(format!("transaction {h} missing")))?;
            out.extend(
                rpc_logs(&rec, &b)
                    .into_iter()
                    .filter(|l| filter.matches(&l.inner)),
            );
        }
    }
    serde_json::to_value(out).map_err(internal)
}
