//! Chain throughput: signed EIP-1559 transfers per second through the whole path — decode and
//! sender recovery (parallel, one thread per core), execution into the pending block, and
//! sealing (state tree, roots, one durable redb commit per block) — next to the ecrecover-only
//! rate, the physical limit of a chain that must recover every sender.
//!
//! Usage: `cargo run --release -p openledger-bench --bin chain-throughput -- [TXS] [BLOCK_TXS]`

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_node::Chain;
use openledger_state::verify_raw;
use openledger_types::{units::one_open, Genesis};
use rayon::prelude::*;
use std::time::Instant;

const CHAIN_ID: u64 = 6736;

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let total = args.first().copied().unwrap_or(60_000) as usize;
    let block_txs = args.get(1).copied().unwrap_or(10_000) as usize;
    let senders = 500usize;
    let threads = rayon::current_num_threads();
    println!("chain-throughput: {total} signed transfers from {senders} accounts, blocks of {block_txs}, {threads} threads");

    let keys: Vec<PrivateKeySigner> = (0..senders)
        .map(|i| PrivateKeySigner::from_bytes(&keccak256(format!("bench sender {i}"))).unwrap())
        .collect();
    let t = Instant::now();
    let raws: Vec<Vec<u8>> = (0..total)
        .into_par_iter()
        .map(|i| {
            let key = &keys[i % senders];
            let tx = TxEip1559 {
                chain_id: CHAIN_ID,
                nonce: (i / senders) as u64,
                gas_limit: 21_000,
                max_fee_per_gas: 1_000_000_000,
                max_priority_fee_per_gas: 0,
                to: TxKind::Call(Address::with_last_byte((i % 251) as u8)),
                value: U256::from(1u64 + i as u64),
                access_list: Default::default(),
                input: Default::default(),
            };
            let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
            TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
        })
        .collect();
    println!(
        "  signed in {:.2} s (not measured below)",
        t.elapsed().as_secs_f64()
    );

    // The limit: decode + recover every sender, all cores, nothing else.
    let t = Instant::now();
    let ok = raws
        .par_iter()
        .filter(|r| verify_raw(r, CHAIN_ID, 1 << 20).is_ok())
        .count();
    let ecrecover = total as f64 / t.elapsed().as_secs_f64();
    assert_eq!(ok, total);
    println!("  ecrecover only (decode + recover, {threads} threads): {ecrecover:>10.0} tx/s");

    let addrs: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let genesis = Genesis::with_accounts(CHAIN_ID, 1, &addrs, U256::from(1000u64) * one_open())
        .map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let mut chain = Chain::open(&dir.path().join("chain.redb"), &genesis, true)?;
    let t = Instant::now();
    let (mut exec_s, mut seal_s, mut recover_s) = (0f64, 0f64, 0f64);
    for (b, chunk) in raws.chunks(block_txs).enumerate() {
        let t0 = Instant::now();
        let verified: Vec<_> = chunk
            .par_iter()
            .map(|r| verify_raw(r, CHAIN_ID, 1 << 20))
            .collect::<Result<_, _>>()?;
        let t1 = Instant::now();
        for tx in verified {
            chain.submit(tx, 10 + b as u64)?;
        }
        let t2 = Instant::now();
        chain.seal()?;
        recover_s += (t1 - t0).as_secs_f64();
        exec_s += (t2 - t1).as_secs_f64();
        seal_s += t2.elapsed().as_secs_f64();
    }
    let full = total as f64 / t.elapsed().as_secs_f64();
    println!("  full path (recover + execute + seal/commit):   {full:>10.0} tx/s  = {:.0}% of the ecrecover limit", 100.0 * full / ecrecover);
    println!(
        "    time split: recover {:.0}%, execute {:.0}%, seal+commit {:.0}%",
        100.0 * recover_s / (recover_s + exec_s + seal_s),
        100.0 * exec_s / (recover_s + exec_s + seal_s),
        100.0 * seal_s / (recover_s + exec_s + seal_s)
    );
    let head = chain.head()?;
    println!(
        "  sealed {} blocks; head state root {}",
        head.header.number, head.header.state_root
    );
    Ok(())
}
