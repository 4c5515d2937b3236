//! `GET /v1/explorer/txs?address=0x…&before=C&scan=M&limit=K`: the transactions an address sent
//! or received, newest first, for the explorer's address page. The store has no index of
//! transactions by address, so this scans blocks backwards from the cursor `before` (default:
//! the head). One request's work is bounded whatever the chain's length: at most `scan` blocks
//! ([`MAX_SCAN`] at most), [`MAX_EXAMINED`] transactions looked at, `limit` transactions
//! returned ([`MAX_LIMIT`] at most, exactly, even inside one block) and about
//! `max_response_bytes` of calldata; and at most `max_concurrent_rpc` scans run at once, each
//! holding its slot until its blocking work ends (a client that hangs up frees nothing early).
//!
//! The answer says which blocks were scanned and where to continue: `next` is null at genesis,
//! a block number `N` (continue with the blocks below `N`), or `"N.I"` when the scan stopped
//! inside block `N` (continue with its transactions at indexes below `I`). Pass it back as
//! `before` unchanged.

use crate::sequencer::Node;
use alloy_consensus::Transaction as _;
use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most blocks one request scans.
pub const MAX_SCAN: u64 = 5_000;
/// Most transactions one request returns.
pub const MAX_LIMIT: usize = 100;
/// Most transactions one request looks at (blocks can be full).
pub const MAX_EXAMINED: usize = 20_000;

#[derive(Deserialize)]
pub struct TxsQuery {
    address: String,
    before: Option<String>,
    scan: Option<u64>,
    limit: Option<usize>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Where a scan starts (exclusive): below block `block`, or inside it below tx index `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    block: u64,
    index: Option<u64>,
}

impl Cursor {
    fn parse(s: &str) -> Result<Cursor, String> {
        let bad = || {
            format!(
                "before={s:?} is not a cursor: a block number N or N.I (the `next` of an earlier answer)"
            )
        };
        let (block, index) = match s.trim().split_once('.') {
            Some((b, i)) => (b, Some(i.parse::<u64>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        Ok(Cursor {
            block: block.parse().map_err(|_| bad())?,
            index,
        })
    }

    fn to_json(self) -> Value {
        match self.index {
            None => json!(self.block),
            Some(i) => json!(format!("{}.{i}", self.block)),
        }
    }
}

/// The scans that may run at once, for [`txs`] (`max_concurrent_rpc` of `node`'s config).
pub fn scan_slots(node: &Node) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(node.config.max_concurrent_rpc.max(1)))
}

/// The handler of `GET /v1/explorer/txs`; `slots` bounds the scans running at once.
pub async fn txs(node: Arc<Node>, slots: Arc<Semaphore>, q: TxsQuery) -> Response {
    let Ok(address) = q.address.trim().parse::<Address>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("address={:?} is not a 20-byte hex address", q.address),
        );
    };
    let before = match q.before.as_deref().map(Cursor::parse).transpose() {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let scan = q.scan.unwrap_or(1_000).clamp(1, MAX_SCAN);
    let limit = q.limit.unwrap_or(25).clamp(1, MAX_LIMIT);
    let Ok(slot) = slots.acquire_owned().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is shutting down".into(),
        );
    };
    // The slot moves into the blocking task: it is held until the scan ends, even if the
    // client has gone or the request timed out.
    let result = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        scan_blocks(&node, address, before, scan, limit)
    })
    .await;
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the scan task failed: {e}"),
        ),
    }
}

fn scan_blocks(
    node: &Node,
    address: Address,
    before: Option<Cursor>,
    scan: u64,
    limit: usize,
) -> Result<Value, String> {
    let store = node.chain().store().clone();
    let head = store
        .head()
        .map_err(|e| format!("reading the head: {e}"))?
        .unwrap_or(0);
    // The first block to scan and, inside it, the index to start below.
    let (top, mut first_end) = match before {
        None => (Some(head), None),
        Some(Cursor { block, index: None }) => {
            (block.min(head.saturating_add(1)).checked_sub(1), None)
        }
        Some(Cursor {
            block,
            index: Some(_),
        }) if block > head => (Some(head), None),
        Some(Cursor { block, index }) => (Some(block), index),
    };
    let max_bytes = node.config.max_response_bytes.max(1);
    let (mut examined, mut bytes) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut lowest = None;
    let mut stopped_inside = None;
    if let Some(top) = top {
        let bottom = top.saturating_sub(scan - 1);
        'blocks: for number in (bottom..=top).rev() {
            lowest = Some(number);
            let Some(block) = store
                .block(number)
                .map_err(|e| format!("reading block {number}: {e}"))?
            else {
                continue;
            };
            let len = block.tx_hashes.len() as u64;
            let end = first_end.take().map_or(len, |i| i.min(len));
            for i in (0..end).rev() {
                if out.len() >= limit || examined >= MAX_EXAMINED || bytes >= max_bytes {
                    stopped_inside = Some(Cursor {
                        block: number,
                        index: Some(i + 1),
                    });
                    break 'blocks;
                }
                examined += 1;
                let hash = &block.tx_hashes[i as usize];
                let Some(rec) = store
                    .tx(hash)
                    .map_err(|e| format!("reading transaction {hash}: {e}"))?
                else {
                    continue;
                };
                let Ok(tx) = TxEnvelope::decode_2718(&mut rec.raw.as_ref()) else {
                    continue;
                };
                let to = tx.to();
                if rec.sender == address || to == Some(address) {
                    bytes += 2 * tx.input().len() + 512;
                    out.push(json!({
                        "hash": rec.hash,
                        "blockNumber": rec.block_number,
                        "index": rec.index,
                        "timestamp": block.header.timestamp,
                        "from": rec.sender,
                        "to": to,
                        "value": tx.value().to_string(),
                        "input": tx.input(),
                        "gasUsed": rec.gas_used,
                        "logs": rec.logs.len(),
                    }));
                }
            }
            if out.len() >= limit || examined >= MAX_EXAMINED || bytes >= max_bytes {
                break;
            }
        }
    }
    let next = match stopped_inside {
        Some(c) => Some(c),
        None => lowest
            .filter(|&n| n > 0)
            .map(|block| Cursor { block, index: None }),
    };
    Ok(json!({
        "address": address,
        "head": head,
        "scannedFrom": lowest,
        "scannedTo": top,
        "next": next.map_or(Value::Null, Cursor::to_json),
        "txs": out,
    }))
}
