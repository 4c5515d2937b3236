//! Reading and writing typed values in the key-value state: big-endian integers, and records
//! stored as their Solidity ABI encoding (so views return exactly what is stored).

use crate::{error::StorageError, kv::StateRead, ExecError, Overlay};
use alloy_primitives::U256;
use alloy_sol_types::SolValue;

/// A `u64` (0 when absent).
pub fn get_u64(state: &dyn StateRead, key: &[u8]) -> Result<u64, StorageError> {
    match state.get_ref(key)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(&*v)
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError(format!("corrupt u64 at key {}", hex(key)))),
    }
}

/// Writes a `u64`.
pub fn put_u64(state: &mut Overlay, key: Vec<u8>, v: u64) {
    state.put(key, v.to_be_bytes().to_vec());
}

/// A `U256` (0 when absent).
pub fn get_u256(state: &dyn StateRead, key: &[u8]) -> Result<U256, StorageError> {
    match state.get_ref(key)? {
        None => Ok(U256::ZERO),
        Some(v) if v.len() == 32 => Ok(U256::from_be_slice(&v)),
        Some(_) => Err(StorageError(format!("corrupt U256 at key {}", hex(key)))),
    }
}

/// Writes a `U256`; zero deletes the key so empty entries do not linger in the state tree.
pub fn put_u256(state: &mut Overlay, key: Vec<u8>, v: U256) {
    if v.is_zero() {
        state.delete(key);
    } else {
        state.put(key, v.to_be_bytes::<32>().to_vec());
    }
}

/// An ABI-encoded record.
pub fn get_sol<T: SolValue + From<<T::SolType as alloy_sol_types::SolType>::RustType>>(
    state: &dyn StateRead,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    match state.get_ref(key)? {
        None => Ok(None),
        Some(v) => T::abi_decode(&v)
            .map(Some)
            .map_err(|e| StorageError(format!("corrupt record at key {}: {e}", hex(key)))),
    }
}

/// Writes an ABI-encoded record.
pub fn put_sol<T: SolValue>(state: &mut Overlay, key: Vec<u8>, v: &T) {
    state.put(key, v.abi_encode());
}

/// Increments the counter at `key` and returns the new value (ids start at 1); refused once
/// the 64-bit id space is used up.
pub fn next_id(state: &mut Overlay, key: &[u8]) -> Result<u64, ExecError> {
    let id = get_u64(state, key)?.checked_add(1).ok_or_else(|| {
        ExecError::Invalid(format!(
            "the id counter {} is exhausted: every 64-bit id is taken",
            String::from_utf8_lossy(key)
        ))
    })?;
    put_u64(state, key.to_vec(), id);
    Ok(id)
}

/// Concatenates key parts.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
