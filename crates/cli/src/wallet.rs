//! The CLI wallet: keys in standard Ethereum keystore v3 files (scrypt, password-encrypted),
//! a small JSON-RPC client, and signing + sending EIP-1559 transactions.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Encrypts `key` into `dir/<name>` (keystore v3). Refuses to overwrite.
pub fn store_key(dir: &Path, name: &str, key: &B256, password: &str) -> Result<Address> {
    validate_name(name)?;
    let path = dir.join(name);
    if path.exists() {
        bail!("a key named {name:?} already exists in {}", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let (signer, _) = PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rand::thread_rng(),
        key.as_slice(),
        password,
        Some(name),
    )
    .with_context(|| format!("writing keystore {}", path.display()))?;
    Ok(signer.address())
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("key name {name:?} must be non-empty letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Decrypts the key `name` from `dir`.
pub fn load_key(dir: &Path, name: &str, password: &str) -> Result<PrivateKeySigner> {
    validate_name(name)?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "no key named {name:?} in {} (see `openledger keys list`)",
            dir.display()
        );
    }
    PrivateKeySigner::decrypt_keystore(&path, password)
        .map_err(|e| anyhow!("cannot decrypt key {name:?}: {e} (wrong password? set OPENLEDGER_PASSWORD or --password-file)"))
}

/// The address stored in a keystore file (readable without the password).
pub fn key_address(path: &Path) -> Result<Address> {
    let v: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let a = v["address"]
        .as_str()
        .ok_or_else(|| anyhow!("{} has no address field", path.display()))?;
    let a = if a.starts_with("0x") {
        a.to_string()
    } else {
        format!("0x{a}")
    };
    a.parse()
        .with_context(|| format!("bad address in {}", path.display()))
}

/// Names of the keys in `dir`, sorted.
pub fn key_names(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A JSON-RPC client over HTTP.
pub struct Rpc {
    pub url: String,
}

impl Rpc {
    /// Calls `method` and returns its result, turning a JSON-RPC error into a readable one.
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let mut resp = ureq::post(&self.url).send_json(&body).map_err(|e| {
            anyhow!(
                "cannot reach the node at {}: {e} (is `openledger node` running?)",
                self.url
            )
        })?;
        let v: Value = resp
            .body_mut()
            .read_json()
            .with_context(|| format!("bad response from {}", self.url))?;
        if let Some(err) = v.get("error") {
            bail!("{}", err["message"].as_str().unwrap_or("unknown error"));
        }
        Ok(v["result"].clone())
    }

    /// `eth_call` of `data` on `to`, returning the raw return bytes.
    pub fn view(&self, to: Address, data: Vec<u8>) -> Result<Bytes> {
        let v = self.call(
            "eth_call",
            json!([{ "to": to, "data": Bytes::from(data) }, "latest"]),
        )?;
        Ok(serde_json::from_value(v)?)
    }

    fn quantity(&self, method: &str, params: Value) -> Result<u128> {
        let v = self.call(method, params)?;
        let s = v.as_str().ok_or_else(|| anyhow!("{method} returned {v}"))?;
        u128::from_str_radix(s.trim_start_matches("0x"), 16)
            .with_context(|| format!("{method} returned {s}"))
    }

    /// Signs and sends a transaction, then waits (bounded) for its receipt.
    pub fn send(
        &self,
        signer: &PrivateKeySigner,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<Value> {
        let from = signer.address();
        let chain_id = self.quantity("eth_chainId", json!([]))? as u64;
        let nonce = self.quantity("eth_getTransactionCount", json!([from, "pending"]))? as u64;
        let gas_price = self.quantity("eth_gasPrice", json!([]))?;
        let data = Bytes::from(data);
        let gas = self.quantity(
            "eth_estimateGas",
            json!([{ "from": from, "to": to, "value": value, "data": data }]),
        )? as u64;
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: gas_price,
            max_priority_fee_per_gas: 0,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input: data,
        };
        let sig = signer.sign_hash_sync(&tx.signature_hash())?;
        let envelope: TxEnvelope = tx.into_signed(sig).into();
        let raw = Bytes::from(envelope.encoded_2718());
        let hash = self.call("eth_sendRawTransaction", json!([raw]))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.call("eth_getTransactionReceipt", json!([hash]))?;
            if !r.is_null() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("transaction {hash} was accepted but no block included it within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
