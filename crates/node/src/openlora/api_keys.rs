//! API keys bound to chain accounts. An account binds a key to itself by signing (EIP-191
//! `personal_sign`) a message naming the chain, this node's operator, the key's hash and the
//! time ([`binding_message`]); the node keeps only the key's keccak-256 hash and the account in
//! `<dir>/api_keys.json` (written atomically), so the file never holds a usable key. A request's
//! bearer token is hashed and looked up ([`ApiKeys::account_for`]). Keys look like
//! `olk_<64 hex>`.
//!
//! A binding must be signed within [`request_auth::MAX_SKEW_SECS`] of the node's clock, and a
//! revoked key's binding is remembered until it is too old to be accepted again, so a captured
//! binding cannot bring a revoked key back. Bounded: [`MAX_KEYS_PER_ACCOUNT`] keys per account,
//! [`MAX_KEYS`] in all.

use crate::datanets::ApiError;
use alloy_primitives::{keccak256, Address, Signature, B256};
use openledger_types::request_auth::MAX_SKEW_SECS;
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

/// Most keys one account may hold.
pub const MAX_KEYS_PER_ACCOUNT: usize = 100;
/// Most keys the node keeps in all.
pub const MAX_KEYS: usize = 100_000;
/// Prefix of every API key.
pub const KEY_PREFIX: &str = "olk_";

/// The hash under which a key is stored: keccak-256 of the key as sent.
pub fn key_hash(key: &str) -> B256 {
    keccak256(key.as_bytes())
}

/// The message an account signs to bind the key with hash `key_hash` to itself at this node.
pub fn binding_message(
    chain_id: u64,
    operator: Address,
    key_hash: &B256,
    issued_at: u64,
) -> String {
    format!(
        "OpenLedger API key\nchain: {chain_id}\noperator: {operator}\nkey: {key_hash}\nissued: {issued_at}"
    )
}

/// The body of `POST /v1/api-keys`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBinding {
    pub address: Address,
    pub key_hash: B256,
    pub issued_at: u64,
    /// 65-byte signature over [`binding_message`], hex.
    pub signature: String,
}

/// One stored key: its hash and the account it acts for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    key_hash: B256,
    address: Address,
    issued_at: u64,
}

/// `api_keys.json`.
#[derive(Default, Serialize, Deserialize)]
struct File {
    keys: Vec<Stored>,
    /// Revoked keys whose binding is still recent enough to be replayed.
    #[serde(default)]
    revoked: Vec<Stored>,
}

/// The key table.
pub struct ApiKeys {
    path: PathBuf,
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_hash: HashMap<B256, Stored>,
    per_account: HashMap<Address, usize>,
    revoked: HashMap<B256, Stored>,
}

impl ApiKeys {
    /// Opens (or starts) the key table at `path`.
    pub fn open(path: &Path) -> Result<ApiKeys, String> {
        let file: File = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is damaged ({e}); restore it from a backup or delete it (every API key \
                     then has to be issued again)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let mut table = Table::default();
        for k in file.keys {
            *table.per_account.entry(k.address).or_default() += 1;
            table.by_hash.insert(k.key_hash, k);
        }
        table.revoked = file.revoked.into_iter().map(|k| (k.key_hash, k)).collect();
        Ok(ApiKeys {
            path: path.to_path_buf(),
            inner: Mutex::new(table),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account the bearer token `key` acts for; `None` when unknown or revoked.
    pub fn account_for(&self, key: &str) -> Option<Address> {
        self.lock().by_hash.get(&key_hash(key)).map(|k| k.address)
    }

    /// How many keys are bound to `account`.
    pub fn count_for(&self, account: &Address) -> usize {
        self.lock().per_account.get(account).copied().unwrap_or(0)
    }

    /// Checks a binding signed for this node (`chain_id`, `operator`) at about `now` and stores
    /// it. Binding a key already bound to the same account again is a no-op.
    pub fn bind(
        &self,
        b: &KeyBinding,
        chain_id: u64,
        operator: Address,
        now: u64,
    ) -> Result<(), ApiError> {
        verify_binding(b, chain_id, operator, now)?;
        let mut t = self.lock();
        t.prune_revoked(now);
        if let Some(old) = t.revoked.get(&b.key_hash) {
            if b.issued_at <= old.issued_at {
                return Err(ApiError::Forbidden(
                    "this key was revoked; create a new one with `openledger api-key new`".into(),
                ));
            }
        }
        if let Some(existing) = t.by_hash.get(&b.key_hash) {
            return if existing.address == b.address {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "this key is bound to another account; create a new one".into(),
                ))
            };
        }
        if t.per_account.get(&b.address).copied().unwrap_or(0) >= MAX_KEYS_PER_ACCOUNT {
            return Err(ApiError::Forbidden(format!(
                "{} already holds {MAX_KEYS_PER_ACCOUNT} API keys; revoke one first \
                 (`openledger api-key revoke KEY`)",
                b.address
            )));
        }
        if t.by_hash.len() >= MAX_KEYS {
            return Err(ApiError::Busy(
                format!("this node already holds {MAX_KEYS} API keys and takes no more"),
                3600,
            ));
        }
        let stored = Stored {
            key_hash: b.key_hash,
            address: b.address,
            issued_at: b.issued_at,
        };
        t.by_hash.insert(b.key_hash, stored.clone());
        *t.per_account.entry(b.address).or_default() += 1;
        t.revoked.remove(&b.key_hash);
        if let Err(e) = self.persist(&t) {
            t.by_hash.remove(&b.key_hash);
            decrement(&mut t.per_account, &b.address);
            return Err(e);
        }
        Ok(())
    }

    /// Revokes the key with hash `hash`, on the request of `by` (the account it is bound to),
    /// at `now`.
    pub fn revoke(&self, hash: &B256, by: Address, now: u64) -> Result<(), ApiError> {
        let mut t = self.lock();
        t.prune_revoked(now);
        let Some(k) = t.by_hash.get(hash).cloned() else {
            return Err(ApiError::NotFound(format!(
                "no API key with hash {hash} on this node"
            )));
        };
        if k.address != by {
            return Err(ApiError::Forbidden(format!(
                "the key is bound to {}, and only that account may revoke it",
                k.address
            )));
        }
        t.by_hash.remove(hash);
        decrement(&mut t.per_account, &k.address);
        t.revoked.insert(*hash, k.clone());
        if let Err(e) = self.persist(&t) {
            t.revoked.remove(hash);
            t.by_hash.insert(*hash, k.clone());
            *t.per_account.entry(k.address).or_default() += 1;
            return Err(e);
        }
        Ok(())
    }

    /// Writes the table atomically.
    fn persist(&self, t: &Table) -> Result<(), ApiError> {
        let mut keys: Vec<Stored> = t.by_hash.values().cloned().collect();
        keys.sort_by_key(|k| k.key_hash);
        let mut revoked: Vec<Stored> = t.revoked.values().cloned().collect();
        revoked.sort_by_key(|k| k.key_hash);
        let json = serde_json::to_vec(&File { keys, revoked })
            .map_err(|e| ApiError::Internal(format!("encoding the API keys: {e}")))?;
        write_atomic(&self.path, &json)
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", self.path.display())))
    }
}

/// Checks that binding `b` is signed by its account for this node (`chain_id`, `operator`)
/// within [`MAX_SKEW_SECS`] of `now`.
pub fn verify_binding(
    b: &KeyBinding,
    chain_id: u64,
    operator: Address,
    now: u64,
) -> Result<(), ApiError> {
    if b.issued_at.abs_diff(now) > MAX_SKEW_SECS {
        return Err(ApiError::Unauthorized(format!(
            "the binding was signed at {}, more than {MAX_SKEW_SECS} s from the node's clock \
             ({now}); check your clock and sign it again",
            b.issued_at
        )));
    }
    let sig: Signature = b
        .signature
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("malformed signature: {e}")))?;
    let msg = binding_message(chain_id, operator, &b.key_hash, b.issued_at);
    let signer = sig
        .recover_address_from_msg(&msg)
        .map_err(|e| ApiError::Unauthorized(format!("cannot recover the signer: {e}")))?;
    if signer != b.address {
        return Err(ApiError::Unauthorized(format!(
            "the binding is signed by {signer}, not by {} (wrong key, or signed for another \
             chain, operator, key or time: this node is chain {chain_id}, operator \
             {operator})",
            b.address
        )));
    }
    Ok(())
}

impl Table {
    /// Forgets revoked keys whose binding is too old to be accepted again anyway.
    fn prune_revoked(&mut self, now: u64) {
        self.revoked
            .retain(|_, k| now <= k.issued_at.saturating_add(2 * MAX_SKEW_SECS));
    }
}

fn decrement(counts: &mut HashMap<Address, usize>, a: &Address) {
    if let Some(n) = counts.get_mut(a) {
        *n -= 1;
        if *n == 0 {
            counts.remove(a);
        }
    }
}

/// Replaces `path` with `bytes` durably: a temporary file, synced, renamed over it, and the
/// directory synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
            _ => Ok(()),
        }
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
