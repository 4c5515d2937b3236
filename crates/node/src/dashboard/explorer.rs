//! `GET /v1/explorer/txs?address=0x…&before=N&scan=M&limit=K`: the transactions an address sent
//! or received, newest first, for the explorer's address page. The store has no index of
//! transactions by address, so this scans blocks backwards from `before` (default: the head),
//! at most `scan` blocks ([`MAX_SCAN`] at most) and stops after `limit` transactions
//! ([`MAX_LIMIT`] at most): the work of one request is bounded whatever the chain's length. The
//! answer says which blocks were scanned and where to continue (`next`, null at genesis).

use crate::sequencer::Node;
use alloy_consensus::Transaction as _;
use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Most blocks one request scans.
pub const MAX_SCAN: u64 = 5_000;
/// Most transactions one request returns.
pub const MAX_LIMIT: usize = 100;

#[derive(Deserialize)]
pub struct TxsQuery {
    address: String,
    before: Option<u64>,
    scan: Option<u64>,
    limit: Option<usize>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The handler of `GET /v1/explorer/txs`.
pub async fn txs(State(node): State<Arc<Node>>, Query(q): Query<TxsQuery>) -> Response {
    let Ok(address) = q.address.trim().parse::<Address>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("address={:?} is not a 20-byte hex address", q.address),
        );
    };
    let scan = q.scan.unwrap_or(1_000).clamp(1, MAX_SCAN);
    let limit = q.limit.unwrap_or(25).clamp(1, MAX_LIMIT);
    let result =
        tokio::task::spawn_blocking(move || scan_blocks(&node, address, q.before, scan, limit))
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
    before: Option<u64>,
    scan: u64,
    limit: usize,
) -> Result<Value, String> {
    let store = node.chain().store().clone();
    let head = store
        .head()
        .map_err(|e| format!("reading the head: {e}"))?
        .unwrap_or(0);
    // `before` is exclusive; absent means "from the head down".
    let top = match before {
        Some(b) => b.min(head + 1).checked_sub(1),
        None => Some(head),
    };
    let mut out = Vec::new();
    let mut lowest = None;
    if let Some(top) = top {
        let bottom = top.saturating_sub(scan - 1);
        for number in (bottom..=top).rev() {
            lowest = Some(number);
            let Some(block) = store
                .block(number)
                .map_err(|e| format!("reading block {number}: {e}"))?
            else {
                continue;
            };
            for hash in block.tx_hashes.iter().rev() {
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
            if out.len() >= limit {
                break;
            }
        }
    }
    let next = lowest.filter(|&n| n > 0);
    Ok(json!({
        "address": address,
        "head": head,
        "scannedFrom": lowest,
        "scannedTo": top,
        "next": next,
        "txs": out,
    }))
}
