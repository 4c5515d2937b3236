//! The Ethereum JSON-RPC server (axum) on 127.0.0.1: the eth_* subset wallets and libraries
//! need, single and batch requests, and JSON-RPC errors for anything malformed. Module views go
//! through `eth_call`; module events come back as logs.
//!
//! No request can make the node do unbounded work: bodies are limited (`max_request_bytes`),
//! batches too (`max_batch`), as are `eth_getLogs` ranges and results (`max_log_range`,
//! `max_log_results`), `eth_feeHistory` (at most [`MAX_FEE_HISTORY_BLOCKS`] blocks, capped as
//! geth does, [`MAX_FEE_HISTORY_PERCENTILES`] strictly increasing percentiles in 0..=100, and
//! [`MAX_FEE_HISTORY_TXS`] transactions read for rewards), and every response
//! (`max_response_bytes`, counting a batch's answers together). At most `max_concurrent_rpc`
//! bodies execute at once, each until its deadline (`rpc_timeout_secs`, waiting included), past
//! which the remaining work answers error -32002. The router adds the guards of [`crate::guard`] (Host
//! check, Origin allow-list, concurrency, time and total body size) in front of every route.
//!
//! `eth_getCode` returns [`MODULE_CODE`] for native module addresses, and
//! `eth_getBlockByNumber("pending")` the block the pending transactions would make (number
//! head + 1; hash, nonce and miner null, state root zero as it is not computed before sealing).

use crate::{
    chain::{ChainError, PendingBlock},
    guard,
    sequencer::{error_code, now, Node},
};
use alloy_consensus::{
    transaction::Recovered, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom,
    TxEnvelope,
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
    http::header,
    middleware,
    response::{IntoResponse, Response},
    routing::post,
};
use openledger_state::{executor::simulate_call, modules::bank, StateRead};
use openledger_store::{BlockRecord, TxRecord};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;

/// Most blocks one `eth_feeHistory` covers; a larger `blockCount` is capped, as geth does.
pub const MAX_FEE_HISTORY_BLOCKS: u64 = 1024;
/// Most reward percentiles one `eth_feeHistory` accepts (geth's limit).
pub const MAX_FEE_HISTORY_PERCENTILES: usize = 100;
/// Most transactions one `eth_feeHistory` reads to compute reward percentiles. When the
/// requested blocks hold more, the answer covers only the newest blocks that fit (the API lets
/// a node answer fewer blocks than asked; `oldestBlock` says where the answer starts).
pub const MAX_FEE_HISTORY_TXS: usize = 100_000;

/// The code `eth_getCode` returns at a native module address: `PUSH1 0 PUSH1 0 REVERT`, an EVM
/// contract that reverts whatever it is sent. Modules are native, not EVM code, and calls to
/// them never run this; it is a marker so that tools which check for code before calling a
/// contract (web3 libraries, wallets) treat module addresses as contracts.
pub const MODULE_CODE: [u8; 5] = [0x60, 0x00, 0x60, 0x00, 0xfd];

/// The HTTP router type, for callers that merge routes of their own ([`router_with`]).
pub use axum::Router;

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
    /// EIP-1474 "limit exceeded".
    fn limit(message: impl Into<String>) -> Self {
        Self::new(-32005, message)
    }
    fn timed_out() -> Self {
        Self::new(
            -32002,
            "request timed out: it ran past rpc_timeout_secs; ask for less (fewer blocks, a \
             narrower range, a smaller batch)",
        )
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

/// One request's context: the node and the deadline its work must finish by.
struct Ctx<'a> {
    node: &'a Node,
    deadline: Instant,
}

impl Ctx<'_> {
    /// Err once the deadline has passed.
    fn check_time(&self) -> Result<(), RpcError> {
        if Instant::now() > self.deadline {
            Err(RpcError::timed_out())
        } else {
            Ok(())
        }
    }
}

/// The HTTP router for a node listening at its configured `rpc_addr` (see [`router_at`]).
pub fn router(node: Arc<Node>) -> Router {
    let local = node.config.rpc_addr;
    router_at(node, local)
}

/// The HTTP router for a node listening at `local`: JSON-RPC on `POST /`, the REST routes of
/// [`crate::rest`] under `/v1`, behind the guards of [`crate::guard`] (the node's own origins
/// are those of `local`).
pub fn router_at(node: Arc<Node>, local: SocketAddr) -> Router {
    router_with(node, local, Router::new())
}

/// [`router_at`] with `extra` routes (OpenLoRA's OpenAI API, wired in by the CLI, which keeps
/// the model runtime out of this crate) merged in behind the same guards and limits.
pub fn router_with(node: Arc<Node>, local: SocketAddr, extra: Router) -> Router {
    let config = &node.config;
    let limit = config.max_request_bytes;
    let access = Arc::new(guard::Access::new(config, local));
    let limits = Arc::new(guard::Limits::new(config));
    let workers = Arc::new(Semaphore::new(config.max_concurrent_rpc.max(1)));
    let timeout = Duration::from_secs(config.rpc_timeout_secs.max(1));
    let total = config.total_body_limit();
    Router::new()
        .route(
            "/",
            post(move |State(node): State<Arc<Node>>, body: Body| {
                handle(node, workers.clone(), timeout, body)
            })
            .layer(DefaultBodyLimit::max(limit)),
        )
        .merge(crate::rest::router(node.clone()))
        .merge(crate::dashboard::router(node.clone()))
        .with_state(node)
        .merge(extra)
        .layer(RequestBodyLimitLayer::new(total))
        .layer(middleware::from_fn_with_state(
            limits,
            guard::limit_requests,
        ))
        .layer(middleware::from_fn_with_state(access, guard::check_access))
}

/// Serves JSON-RPC on `listener` until `stop` resolves.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(node, listener, Router::new(), stop).await
}

/// [`serve`] with `extra` routes merged in (see [`router_with`]).
pub async fn serve_with(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    extra: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    axum::serve(listener, router_with(node, local, extra))
        .with_graceful_shutdown(stop)
        .await
}

async fn handle(
    node: Arc<Node>,
    workers: Arc<Semaphore>,
    timeout: Duration,
    body: Body,
) -> Response {
    let deadline = Instant::now() + timeout;
    let answer = |e: RpcError| error_response(Value::Null, e).to_string().into_bytes();
    let work = async {
        // The worker slot moves into the blocking task, so it is held until the work ends, even
        // if the client has gone: executing bodies never exceed max_concurrent_rpc.
        let Ok(slot) = workers.acquire_owned().await else {
            return answer(RpcError::new(-32603, "the node is shutting down"));
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            respond(&node, &body, deadline)
        })
        .await
        .unwrap_or_else(|e| answer(RpcError::new(-32603, format!("internal error: {e}"))))
    };
    let bytes = tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or_else(|_| answer(RpcError::timed_out()));
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn error_response(id: Value, e: RpcError) -> Value {
    let mut err = json!({ "code": e.code, "message": e.message });
    if let Some(d) = e.data {
        err["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

/// Handles one request body (single call or batch) with `rpc_timeout_secs` to run. In dev
/// mode, seals a block after a body that submitted transactions.
pub fn handle_body(node: &Node, body: &[u8]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(node.config.rpc_timeout_secs.max(1));
    handle_body_by(node, body, deadline)
}

/// [`handle_body`] with the work due by `deadline`: calls still running or not started by then
/// answer error -32002.
pub fn handle_body_by(node: &Node, body: &[u8], deadline: Instant) -> Value {
    let out = respond(node, body, deadline);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        error_response(
            Value::Null,
            RpcError::new(-32603, format!("internal error: {e}")),
        )
    })
}

/// The serialized response to a body. Each call's answer is serialized as soon as it is ready
/// and counted against `max_response_bytes`.
fn respond(node: &Node, body: &[u8], deadline: Instant) -> Vec<u8> {
    let cx = Ctx { node, deadline };
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                Value::Null,
                RpcError::new(-32700, format!("parse error: {e}")),
            )
            .to_string()
            .into_bytes()
        }
    };
    let max = node.config.max_response_bytes;
    let too_big = |id: Value, size: usize| {
        error_response(
            id,
            RpcError::limit(format!(
                "the response would be {size} bytes or more, over the limit of {max} \
                 (max_response_bytes); ask for less or split the batch"
            )),
        )
        .to_string()
        .into_bytes()
    };
    let mut submitted = false;
    let out = match parsed {
        Value::Array(calls) if calls.is_empty() => {
            error_response(Value::Null, RpcError::new(-32600, "empty batch"))
                .to_string()
                .into_bytes()
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
        )
        .to_string()
        .into_bytes(),
        Value::Array(calls) => {
            let mut out = b"[".to_vec();
            let mut answers = 0usize;
            for (i, call) in calls.into_iter().enumerate() {
                let id = call.get("id").cloned().unwrap_or(Value::Null);
                let answer = match cx.check_time() {
                    Err(e) => error_response(id.clone(), e),
                    Ok(()) => handle_call(&cx, call, &mut submitted),
                };
                let mut bytes = answer.to_string().into_bytes();
                if answers + bytes.len() > max {
                    bytes = too_big(id, answers + bytes.len());
                }
                answers += bytes.len();
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&bytes);
            }
            out.push(b']');
            out
        }
        single => {
            let id = single.get("id").cloned().unwrap_or(Value::Null);
            let bytes = handle_call(&cx, single, &mut submitted)
                .to_string()
                .into_bytes();
            if bytes.len() > max {
                too_big(id, bytes.len())
            } else {
                bytes
            }
        }
    };
    if submitted && node.config.dev {
        node.seal_and_log();
    }
    out
}

fn handle_call(cx: &Ctx, mut call: Value, submitted: &mut bool) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = call
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return error_response(
            id,
            RpcError::new(-32600, "invalid request: missing \"method\""),
        );
    };
    let params = match call.get_mut("params").map(Value::take) {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a,
        Some(_) => return error_response(id, RpcError::new(-32602, "params must be an array")),
    };
    if method == "eth_sendRawTransaction" {
        *submitted = true;
    }
    match dispatch(cx, &method, &params) {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => error_response(id, e),
    }
}

fn param<T: DeserializeOwned>(params: &[Value], i: usize, what: &str) -> Result<T, RpcError> {
    let v = params
        .get(i)
        .ok_or_else(|| RpcError::params(format!("missing parameter {i} ({what})")))?;
    T::deserialize(v).map_err(|e| RpcError::params(format!("invalid parameter {i} ({what}): {e}")))
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

fn dispatch(cx: &Ctx, method: &str, p: &[Value]) -> RpcResult {
    let node = cx.node;
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
        "eth_feeHistory" => fee_history(cx, p),
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
            let addr: Address = param(p, 0, "address")?;
            let id = block_id(p, 1)?;
            // Modules exist from genesis on: every block that exists has them.
            with_state(node, id, |_| {
                Ok(match openledger_types::modules::name_of(&addr) {
                    Some(_) => json!(Bytes::from_static(&MODULE_CODE)),
                    None => json!("0x"),
                })
            })
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
            if tag == BlockNumberOrTag::Pending {
                let pending = node.chain().pending_block(now())?;
                return pending_block_json(&pending, full);
            }
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
            get_logs(cx, &filter)
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

/// The sealed block number a tag names; `None` for pending or past the head.
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

/// `blockCount`: a quantity, as a hex string, a decimal string or a JSON number.
fn block_count(p: &[Value]) -> Result<u64, RpcError> {
    let bad = || RpcError::params("invalid parameter 0 (block count): expected a quantity");
    match p.first() {
        None => Err(RpcError::params("missing parameter 0 (block count)")),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad),
        Some(Value::String(s)) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad()),
            None => s.parse().map_err(|_| bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// `rewardPercentiles`: at most [`MAX_FEE_HISTORY_PERCENTILES`] numbers in 0..=100, strictly
/// increasing (as geth requires). The list's length is checked before anything is built.
fn reward_percentiles(p: &[Value]) -> Result<Vec<f64>, RpcError> {
    let list = match p.get(2) {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(RpcError::params(
                "invalid parameter 2 (reward percentiles): expected an array of numbers",
            ))
        }
    };
    if list.len() > MAX_FEE_HISTORY_PERCENTILES {
        return Err(RpcError::params(format!(
            "too many reward percentiles: {} (at most {MAX_FEE_HISTORY_PERCENTILES})",
            list.len()
        )));
    }
    let mut out: Vec<f64> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let x = v
            .as_f64()
            .filter(|x| (0.0..=100.0).contains(x))
            .ok_or_else(|| {
                RpcError::params(format!(
                    "invalid reward percentile #{i} ({v}): each must be a number from 0 to 100"
                ))
            })?;
        if let Some(prev) = out.last().filter(|prev| x <= **prev) {
            return Err(RpcError::params(format!(
                "invalid reward percentile #{i} ({x}): percentiles must be strictly increasing \
                 (#{} is {prev})",
                i - 1
            )));
        }
        out.push(x);
    }
    Ok(out)
}

/// The effective priority fee (tip) of each transaction of a block, with its gas used.
type Tips = Vec<(u128, u64)>;

/// The rewards at `percentiles` of a block that used `gas_used` gas, from its transactions'
/// (tip, gas used): geth's method (sort by tip, walk the gas used up to each percentile).
fn rewards(mut tips: Tips, gas_used: u64, percentiles: &[f64]) -> Vec<Value> {
    if tips.is_empty() {
        return vec![json!("0x0"); percentiles.len()];
    }
    tips.sort_by_key(|(tip, _)| *tip);
    let mut index = 0;
    let mut sum = tips[0].1;
    percentiles
        .iter()
        .map(|p| {
            // Float to integer casts saturate; the product is at most gas_used.
            let threshold = (gas_used as f64 * p / 100.0) as u64;
            while sum < threshold && index + 1 < tips.len() {
                index += 1;
                sum = sum.saturating_add(tips[index].1);
            }
            json!(format!("{:#x}", tips[index].0))
        })
        .collect()
}

/// What eth_feeHistory needs of one block.
struct FeeBlock {
    base_fee: u64,
    gas_used: u64,
    gas_limit: u64,
    tips: Tips,
}

impl FeeBlock {
    fn new(header: &Header, records: impl Iterator<Item = (u128, u64)>) -> FeeBlock {
        let base_fee = header.base_fee_per_gas.unwrap_or_default();
        FeeBlock {
            base_fee,
            gas_used: header.gas_used,
            gas_limit: header.gas_limit,
            tips: records
                .map(|(price, gas)| (price.saturating_sub(base_fee as u128), gas))
                .collect(),
        }
    }
}

/// `eth_feeHistory(blockCount, newestBlock, rewardPercentiles)`: base fees, gas used ratios from
/// the headers, and (when percentiles are given) the rewards at those percentiles of each
/// block's transactions' effective priority fees. `newestBlock` "pending" includes the pending
/// block. Bounded as the module docs say.
fn fee_history(cx: &Ctx, p: &[Value]) -> RpcResult {
    let node = cx.node;
    let count = block_count(p)?.min(MAX_FEE_HISTORY_BLOCKS);
    let newest: BlockNumberOrTag =
        opt_param(p, 1, "newest block")?.unwrap_or(BlockNumberOrTag::Latest);
    let percentiles = reward_percentiles(p)?;
    let (head, next_base_fee) = {
        let chain = node.chain();
        (
            chain.store().head()?.unwrap_or(0),
            chain.params()?.min_gas_price_wei,
        )
    };
    let newest = match newest {
        BlockNumberOrTag::Pending => head + 1,
        BlockNumberOrTag::Earliest => 0,
        BlockNumberOrTag::Number(n) if n > head => {
            return Err(RpcError::new(
                -32001,
                format!("newest block {n} is beyond the head block {head}"),
            ))
        }
        BlockNumberOrTag::Number(n) => n,
        _ => head,
    };
    let count = count.min(newest + 1);
    let store = node.chain().store().clone();
    let mut blocks: Vec<FeeBlock> = Vec::with_capacity(count as usize);
    let mut txs_read = 0usize;
    for n in (newest + 1 - count..=newest).rev() {
        cx.check_time()?;
        let block = if n > head {
            let pending = node.chain().pending_block(now())?;
            let tips = pending.txs.iter().map(|r| (r.gas_price, r.gas_used));
            FeeBlock::new(&pending.header, tips.collect::<Vec<_>>().into_iter())
        } else {
            let b = store
                .block(n)?
                .ok_or_else(|| internal(format!("block {n} missing")))?;
            let mut tips = Vec::new();
            if !percentiles.is_empty() {
                if !blocks.is_empty() && txs_read + b.tx_hashes.len() > MAX_FEE_HISTORY_TXS {
                    break;
                }
                txs_read += b.tx_hashes.len();
                for h in &b.tx_hashes {
                    let rec = store
                        .tx(h)?
                        .ok_or_else(|| internal(format!("transaction {h} missing")))?;
                    tips.push((rec.gas_price, rec.gas_used));
                }
            }
            FeeBlock::new(&b.header, tips.into_iter())
        };
        blocks.push(block);
    }
    blocks.reverse();
    let oldest = newest + 1 - blocks.len() as u64;
    let mut base_fees: Vec<Value> = blocks.iter().map(|b| hex_u64(b.base_fee)).collect();
    if !blocks.is_empty() {
        base_fees.push(hex_u64(next_base_fee));
    }
    let ratios: Vec<f64> = blocks
        .iter()
        .map(|b| match b.gas_limit {
            0 => 0.0,
            limit => b.gas_used as f64 / limit as f64,
        })
        .collect();
    let mut out = json!({
        "oldestBlock": hex_u64(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
    });
    if !percentiles.is_empty() {
        let reward: Vec<Vec<Value>> = blocks
            .into_iter()
            .map(|b| rewards(b.tips, b.gas_used, &percentiles))
            .collect();
        out["reward"] = json!(reward);
    }
    Ok(out)
}

fn decode_tx(rec: &TxRecord) -> Result<TxEnvelope, RpcError> {
    TxEnvelope::decode_2718(&mut rec.raw.as_ref()).map_err(internal)
}

/// A transaction in a block: `block_hash` is `None` for the pending block.
fn tx_json(
    rec: &TxRecord,
    block_hash: Option<B256>,
    timestamp: u64,
) -> Result<Transaction, RpcError> {
    Ok(Transaction {
        inner: Recovered::new_unchecked(decode_tx(rec)?, rec.sender),
        block_hash,
        block_number: Some(rec.block_number),
        transaction_index: Some(rec.index),
        effective_gas_price: Some(rec.gas_price),
        block_timestamp: Some(timestamp),
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
            serde_json::to_value(tx_json(&rec, Some(block.hash()), block.header.timestamp)?)
                .map_err(internal)
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

/// A block as JSON-RPC shows it.
fn block_value(
    header: &Header,
    hash: B256,
    transactions: BlockTransactions<Transaction>,
) -> RpcResult {
    let size = alloy_rlp::Encodable::length(header);
    let block = Block {
        header: RpcHeader {
            hash,
            inner: header.clone(),
            total_difficulty: Some(U256::ZERO),
            size: Some(U256::from(size)),
        },
        uncles: vec![],
        transactions,
        withdrawals: None,
    };
    serde_json::to_value(block).map_err(internal)
}

fn block_json(store: &openledger_store::Store, b: &BlockRecord, full: bool) -> RpcResult {
    let hash = b.hash();
    let transactions = if full {
        let mut txs = Vec::with_capacity(b.tx_hashes.len());
        for h in &b.tx_hashes {
            let rec = store
                .tx(h)?
                .ok_or_else(|| internal(format!("transaction {h} missing")))?;
            txs.push(tx_json(&rec, Some(hash), b.header.timestamp)?);
        }
        BlockTransactions::Full(txs)
    } else {
        BlockTransactions::Hashes(b.tx_hashes.clone())
    };
    block_value(&b.header, hash, transactions)
}

/// The pending block as geth shows it: number head + 1, its pending transactions, and `hash`,
/// `nonce` and `miner` null (it is not sealed; its state root reads zero until it is).
fn pending_block_json(p: &PendingBlock, full: bool) -> RpcResult {
    let transactions = if full {
        let txs = p
            .txs
            .iter()
            .map(|r| tx_json(r, None, p.header.timestamp))
            .collect::<Result<_, _>>()?;
        BlockTransactions::Full(txs)
    } else {
        BlockTransactions::Hashes(p.txs.iter().map(|r| r.hash).collect())
    };
    let mut v = block_value(&p.header, B256::ZERO, transactions)?;
    for field in ["hash", "nonce", "miner"] {
        v[field] = Value::Null;
    }
    Ok(v)
}

fn get_logs(cx: &Ctx, filter: &Filter) -> RpcResult {
    let node = cx.node;
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
        return Err(RpcError::limit(format!(
            "range of {} blocks exceeds the limit of {}; narrow fromBlock/toBlock",
            to - from + 1,
            node.config.max_log_range
        )));
    }
    let max = node.config.max_log_results;
    let mut out = Vec::new();
    for n in from..=to {
        cx.check_time()?;
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
            if out.len() > max {
                return Err(RpcError::limit(format!(
                    "the query matches more than {max} logs (max_log_results); narrow the block \
                     range or the filter (the first block past the limit is {n})"
                )));
            }
        }
    }
    serde_json::to_value(out).map_err(internal)
}
